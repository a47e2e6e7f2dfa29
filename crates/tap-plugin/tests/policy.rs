//! What `sandnet-tap` enforces (issue 17): `antiSpoofing: true` puts sandnet's guard
//! (HTB `5a4e:`) on the pod link; the `bandwidth` capability's `runtimeConfig` puts a tbf
//! on the tap (into the guest) and limits the guard's pass class (out of it), with
//! containerd's 2^32−1 bit bursts clamped; without either the plugin enforces nothing, as
//! tc-redirect-tap. Root; every test has its own namespaces.

mod common;

use common::*;
use serde_json::{json, Value};

/// The qdisc of `kind` in a `tc -j qdisc show` list.
fn qdisc<'a>(list: &'a Value, kind: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|q| q["kind"] == kind)
}

fn tap_of(w: &World) -> String {
    w.pod
        .link_names()
        .into_iter()
        .find(|n| n.starts_with("sntap"))
        .expect("a tap in the pod")
}

/// `tc class show dev DEV` in the pod (this iproute2 has no JSON for classes).
fn classes(w: &World, dev: &str) -> String {
    w.pod.tc_text(&["class", "show", "dev", dev])
}

#[tokio::test]
async fn anti_spoofing_and_bandwidth_capability_are_enforced() {
    let w = World::new("tappol");
    let list = w.conflist(
        "tappol",
        json!({"antiSpoofing": true, "capabilities": {"bandwidth": true}}),
    );
    let cni = w.cni();
    let rt = w.rt("ctr1").with_capability(
        "bandwidth",
        json!({"ingressRate": 8_000_000u64, "ingressBurst": 4_294_967_295u64,
               "egressRate": 6_000_000u64, "egressBurst": 4_294_967_295u64}),
    );
    cni.add(&list, &rt).await.unwrap();
    let tap = tap_of(&w);
    let q = w.pod.tc_json(&["qdisc", "show", "dev", &tap]);
    let tbf = qdisc(&q, "tbf").unwrap_or_else(|| panic!("no tbf on {tap}: {q}"));
    assert_eq!(tbf["handle"], "5a4e:", "{q}");
    assert_eq!(
        tbf["options"]["rate"], 1_000_000,
        "8 Mbit/s into the guest: {q}"
    );
    // 100 ms of the rate, not containerd's 512 MiB (tc rounds through ticks).
    let burst = tbf["options"]["burst"].as_u64().unwrap_or(0);
    assert!((95_000..=105_000).contains(&burst), "burst {burst}: {q}");
    let q = w.pod.tc_json(&["qdisc", "show", "dev", "eth0"]);
    assert!(
        qdisc(&q, "htb").is_some_and(|h| h["handle"] == "5a4e:"),
        "no guard on eth0: {q}"
    );
    let c = classes(&w, "eth0");
    assert!(c.contains("5a4e:1") && c.contains("rate 6Mbit"), "{c}");
    assert!(c.contains("5a4e:2"), "no sink class with antiSpoofing: {c}");

    // CHECK still passes with the guard and the tbf in place.
    assert_eq!(
        cni.check(&list, &rt).await.unwrap(),
        sandnet_cni::CheckOutcome::Checked
    );

    // DEL (bridge's removes eth0, and with it the guard; ours the tap and its tbf).
    cni.del(&list, &rt).await.unwrap();
    assert!(w.pod.link(&tap).is_none(), "{tap} left");
}

#[tokio::test]
async fn nothing_is_enforced_unless_asked() {
    let w = World::new("tapnopol");
    let list = w.conflist("tapnopol", json!({"antiSpoofing": false}));
    let cni = w.cni();
    let rt = w.rt("ctr1");
    cni.add(&list, &rt).await.unwrap();
    let tap = tap_of(&w);
    for dev in [tap.as_str(), "eth0"] {
        let q = w.pod.tc_json(&["qdisc", "show", "dev", dev]);
        assert!(
            qdisc(&q, "tbf").is_none() && qdisc(&q, "htb").is_none(),
            "{dev}: {q}"
        );
    }
    cni.del(&list, &rt).await.unwrap();
}
