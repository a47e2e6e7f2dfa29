//! A sandnet pod's network counters through containerd (issue 17): the shim records the
//! pod's CRI name and namespace for the sandbox (`sandnet stats --prometheus` labels its
//! counters with them), and containerd's task metrics of the sandbox task carry each pod
//! link's counters (`io.containerd.cgroups.v2.Metrics`, `network`), the same as sandnet's
//! own. Needs what `tests/cri.rs` needs.

mod common;

use common::{Containerd, Options};
use serde_json::Value;
use std::time::Duration;

/// The first object in `v` (any depth) that has a `key` equal to `want`.
fn find<'a>(v: &'a Value, key: &str, want: &str) -> Option<&'a Value> {
    match v {
        Value::Object(m) => {
            if m.get(key).and_then(Value::as_str) == Some(want) {
                return Some(v);
            }
            m.values().find_map(|x| find(x, key, want))
        }
        Value::Array(a) => a.iter().find_map(|x| find(x, key, want)),
        _ => None,
    }
}

#[test]
fn sandbox_task_metrics_carry_the_pod_links_counters() {
    let cd = Containerd::start("stats", Options::default());
    let id = cd
        .run_pod("statspod", "sandnet")
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\ncontainerd log:\n{}", cd.log()));
    // The pod's name and namespace, as CRI's annotations gave them.
    assert_eq!(
        sandnet_runtime::pod::load(&cd.state(), &id),
        sandnet_runtime::pod::PodRef::new(Some("statspod"), Some("default"))
    );
    let ip = {
        let (st, _) = cd.status(&id).unwrap();
        st.network.map(|n| n.ip).unwrap_or_default()
    };
    assert!(cd.ping(&ip), "the guest does not answer ping at {ip}");

    let ours = |guest| {
        cd.rt
            .block_on(sandnet_runtime::stats::collect(&cd.state(), &id, guest))
            .unwrap_or_else(|e| panic!("stats of {id}: {e}"))
    };
    let before = ours(true);
    assert_eq!(
        before.pod.as_ref().map(|p| p.name.as_str()),
        Some("statspod")
    );
    assert_eq!(before.nics.len(), 1, "{before:?}");
    assert!(before.nics[0].guest.is_some(), "{before:?}");
    let o = cd.ctr(&["-n", "k8s.io", "tasks", "metrics", "--format", "json", &id]);
    assert!(
        o.status.success(),
        "ctr tasks metrics: {}",
        common::text(&o.stderr)
    );
    let after = ours(false);
    let m: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", common::text(&o.stdout)));
    let link = &before.nics[0].interface;
    let net = find(&m, "name", link).unwrap_or_else(|| panic!("no {link} in {m}"));
    eprintln!("ctr tasks metrics, {link}: {net}");
    let (b, a) = (before.nics[0].link.unwrap(), after.nics[0].link.unwrap());
    for (k, lo, hi) in [
        ("rx_bytes", b.rx_bytes, a.rx_bytes),
        ("rx_packets", b.rx_packets, a.rx_packets),
        ("tx_bytes", b.tx_bytes, a.tx_bytes),
        ("tx_packets", b.tx_packets, a.tx_packets),
    ] {
        let got = net[k].as_u64().unwrap_or_else(|| panic!("{k} in {net}"));
        assert!(
            lo <= got && got <= hi,
            "{k}: containerd {got}, sandnet {lo}..{hi}"
        );
    }
    assert!(b.rx_packets > 0, "{b:?}");

    cd.stop_pod(&id).expect("StopPodSandbox");
    cd.remove_pod(&id).expect("RemovePodSandbox");
    common::wait_until("the shim to exit", Duration::from_secs(15), || {
        cd.shim_pid(&id).is_none()
    });
}
