//! The reference `bandwidth` plugin chained after `bridge` under a private containerd 1.6
//! and the sandnet shim (issue 17): containerd's CRI reads the pod's
//! `kubernetes.io/ingress-bandwidth` and `kubernetes.io/egress-bandwidth` annotations into
//! the `bandwidth` capability (`cniNamespaceOpts` → `toCNIBandWidth`, with a burst of
//! 2^32−1 bits), the plugin shapes the host-side veth (a tbf for ingress, an ifb with a
//! tbf for egress), the pod becomes ready and its guest answers pings. sandnet does not
//! shape again: containerd ran CNI, and sandnet's configuration sets no limit, so the pod
//! namespace has no tbf and the guard's pass class is unlimited. A second pod with the
//! annotation `io.katacontainers.config.runtime.guest_spoofing: allow` (passed on by
//! containerd's `pod_annotations`) gets no guard, and a third with Kata's
//! `io.katacontainers.config.hypervisor.{rx,tx}_rate_limiter_max_rate` is limited by
//! sandnet on the tap and the pod link.
//! Needs root, containerd, Debian's CNI plugins, the guest kernel and the static agent.

mod common;

use common::{Containerd, Options};
use serde_json::{json, Value};
use std::process::Command;

/// The limits the annotations ask for, bits/s.
const INGRESS: u64 = 8_000_000;
const EGRESS: u64 = 6_000_000;

/// `tc -j ARGS…` in containerd's network namespace.
fn tc_json(cd: &Containerd, args: &[&str]) -> Value {
    cd.ns.tc_json(args)
}

/// `tc ARGS…` in the pod's network namespace (entered through QEMU, which runs in it).
fn pod_tc(qemu: u32, args: &[&str]) -> String {
    let o = Command::new("nsenter")
        .arg(format!("--net=/proc/{qemu}/ns/net"))
        .arg("tc")
        .args(args)
        .output()
        .expect("nsenter tc");
    assert!(
        o.status.success(),
        "tc {args:?}: {}",
        common::text(&o.stderr)
    );
    common::text(&o.stdout)
}

/// The rate of a tbf qdisc in `list` (bytes/s as `tc -j` gives it), if there is one.
fn tbf_rate(list: &Value) -> Option<u64> {
    list.as_array()?
        .iter()
        .find(|q| q["kind"] == "tbf")
        .and_then(|q| q["options"]["rate"].as_u64())
}

#[test]
fn reference_bandwidth_plugin_shapes_the_host_veth_and_sandnet_does_not() {
    let cd = Containerd::start(
        "bw",
        Options {
            extra_plugins: vec![json!({"type": "bandwidth", "capabilities": {"bandwidth": true}})],
            ..Options::default()
        },
    );
    let mut config = cd.pod_config("bw");
    config.annotations.insert(
        "kubernetes.io/ingress-bandwidth".into(),
        format!("{}M", INGRESS / 1_000_000),
    );
    config.annotations.insert(
        "kubernetes.io/egress-bandwidth".into(),
        format!("{}M", EGRESS / 1_000_000),
    );
    let id = cd
        .run_pod_with(config, "sandnet")
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\ncontainerd log:\n{}", cd.log()));
    assert!(cd.ready(&id), "the pod is not ready");
    let (st, _) = cd.status(&id).expect("PodSandboxStatus");
    let ip = st.network.map(|n| n.ip).unwrap_or_default();
    assert!(
        (0..5).any(|_| cd.ping(&ip)),
        "the guest does not answer ping at {ip}"
    );

    // The plugin's shaping on the host side: the bridge port (the pod's veth peer) has a
    // tbf at the ingress rate, and an ifb of the plugin's has one at the egress rate.
    let ports = cd.ns.ip_json(&["link", "show", "master", &cd.bridge]);
    let veth = ports
        .as_array()
        .and_then(|a| a.first())
        .and_then(|l| l["ifname"].as_str())
        .unwrap_or_else(|| panic!("no port on {}: {ports}", cd.bridge))
        .to_string();
    let q = tc_json(&cd, &["qdisc", "show", "dev", &veth]);
    assert_eq!(
        tbf_rate(&q),
        Some(INGRESS / 8),
        "no tbf at the ingress rate on {veth}: {q}"
    );
    let all = tc_json(&cd, &["qdisc", "show"]);
    let egress_tbf = all.as_array().into_iter().flatten().any(|q| {
        q["kind"] == "tbf" && q["dev"] != veth.as_str() && q["options"]["rate"] == EGRESS / 8
    });
    assert!(egress_tbf, "no tbf at the egress rate on an ifb: {all}");

    // sandnet left the shaping to the plugin: no tbf in the pod namespace, and the
    // guard's pass class (anti-spoofing is on by default) is not limited to either rate.
    let qemu = cd.qemu_pid(&id).expect("QEMU's pid");
    let pod_q: Value = serde_json::from_str(&pod_tc(qemu, &["-j", "qdisc", "show"]))
        .expect("tc -j qdisc show in the pod");
    assert_eq!(tbf_rate(&pod_q), None, "sandnet shaped too: {pod_q}");
    // This iproute2 prints classes as text only, with `-j` too.
    let classes = pod_tc(qemu, &["class", "show", "dev", "eth0"]);
    for limit in [INGRESS, EGRESS] {
        assert!(
            !classes.contains(&format!("rate {}Mbit ", limit / 1_000_000)),
            "sandnet limited eth0 too: {classes}"
        );
    }

    // The guard is there (anti-spoofing on by default) ...
    let eth0 = pod_tc(qemu, &["-j", "qdisc", "show", "dev", "eth0"]);
    assert!(eth0.contains(r#""kind":"htb","handle":"5a4e:""#), "{eth0}");
    // ... and a pod annotation turns it off for that pod alone.
    let mut config = cd.pod_config("bwallow");
    config.annotations.insert(
        "io.katacontainers.config.runtime.guest_spoofing".into(),
        "allow".into(),
    );
    let allow = cd
        .run_pod_with(config, "sandnet")
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\ncontainerd log:\n{}", cd.log()));
    let qemu2 = cd.qemu_pid(&allow).expect("QEMU's pid");
    let eth0 = pod_tc(qemu2, &["-j", "qdisc", "show", "dev", "eth0"]);
    assert!(
        !eth0.contains(r#""kind":"htb""#),
        "guard despite allow: {eth0}"
    );
    cd.stop_pod(&allow).expect("StopPodSandbox");
    cd.remove_pod(&allow).expect("RemovePodSandbox");

    // Kata's rate-limiter annotations limit that pod's NICs on sandnet's side: a tbf at
    // the rx rate on the tap, the guard's pass class at the tx rate on the pod link.
    let mut config = cd.pod_config("bwkata");
    config.annotations.insert(
        "io.katacontainers.config.hypervisor.rx_rate_limiter_max_rate".into(),
        INGRESS.to_string(),
    );
    config.annotations.insert(
        "io.katacontainers.config.hypervisor.tx_rate_limiter_max_rate".into(),
        EGRESS.to_string(),
    );
    let kata = cd
        .run_pod_with(config, "sandnet")
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\ncontainerd log:\n{}", cd.log()));
    let qemu3 = cd.qemu_pid(&kata).expect("QEMU's pid");
    let all: Value = serde_json::from_str(&pod_tc(qemu3, &["-j", "qdisc", "show"]))
        .expect("tc -j qdisc show in the pod");
    let tap_tbf = all.as_array().into_iter().flatten().any(|q| {
        q["kind"] == "tbf"
            && q["dev"].as_str().is_some_and(|d| d.starts_with("sntap"))
            && q["options"]["rate"] == INGRESS / 8
    });
    assert!(tap_tbf, "no tbf at the rx rate on the tap: {all}");
    let classes = pod_tc(qemu3, &["class", "show", "dev", "eth0"]);
    let pass = classes.lines().find(|l| l.contains("htb 5a4e:1 root"));
    assert!(
        pass.is_some_and(|l| l.contains(&format!(" rate {}Mbit ", EGRESS / 1_000_000))),
        "no pass class at the tx rate: {classes}"
    );
    cd.stop_pod(&kata).expect("StopPodSandbox");
    cd.remove_pod(&kata).expect("RemovePodSandbox");

    cd.stop_pod(&id).expect("StopPodSandbox");
    cd.remove_pod(&id).expect("RemovePodSandbox");
    // The plugin's DEL removed its ifb.
    let left = tc_json(&cd, &["qdisc", "show"]);
    assert!(
        !left
            .as_array()
            .into_iter()
            .flatten()
            .any(|q| q["kind"] == "tbf"),
        "shaping left after the pod: {left}"
    );
}
