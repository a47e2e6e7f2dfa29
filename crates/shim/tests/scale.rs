//! A busy node: ten sandnet pods started at once through one containerd are all READY,
//! have distinct IPs in the pod network and answer ping from it; stopped and removed at
//! once, they leave nothing (no shim, supervisor, QEMU or virtiofsd, no sandnet state, no
//! mounts, no links). Needs what `tests/cri.rs` needs; under TCG on 2 cores ten VMs take
//! a while, hence the generous limits.

mod common;

use common::scale::{pod_processes, run_pods, stop_remove_pods};
use common::{wait_until, Containerd, Options};
use std::collections::BTreeSet;
use std::time::Duration;

const PODS: usize = 10;

#[test]
fn ten_pods_at_once_are_ready_distinct_ping_and_leave_nothing() {
    let cd = Containerd::start("scale", Options::default());
    let before = cd.snapshot();
    let names: Vec<String> = (0..PODS).map(|i| format!("busy{i}")).collect();
    let ids: Vec<String> = run_pods(&cd, &names)
        .into_iter()
        .map(|(r, _)| r.unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", cd.log())))
        .collect();
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), PODS, "{ids:?}");
    for id in &ids {
        assert!(cd.ready(id), "pod {id} is not READY");
    }
    let ips: BTreeSet<String> = ids.iter().map(|id| cd.pod_ip(id)).collect();
    assert_eq!(ips.len(), PODS, "pod IPs are not distinct: {ips:?}");
    for ip in &ips {
        assert!(
            ip.starts_with(&format!("{}.", cd.prefix)),
            "pod IP {ip} not in {}.0/24",
            cd.prefix
        );
        assert!(cd.ping(ip), "no answer from the pod at {ip}");
    }
    // One shim per pod, and each pod's processes are its own.
    let shims: BTreeSet<u32> = ids.iter().filter_map(|id| cd.shim_pid(id)).collect();
    assert_eq!(shims.len(), PODS, "one shim per pod");
    let mut procs = BTreeSet::new();
    for id in &ids {
        let p = pod_processes(&cd, id);
        assert!(p.len() >= 3, "pod {id}: shim, supervisor, QEMU: {p:?}");
        for pid in p {
            assert!(procs.insert(pid), "pid {pid} counted for two pods");
        }
    }
    for r in stop_remove_pods(&cd, &ids) {
        r.unwrap_or_else(|e| panic!("Stop/RemovePodSandbox: {e}\n{}", cd.log()));
    }
    wait_until("every shim to exit", Duration::from_secs(60), || {
        cd.shim_pids().is_empty()
    });
    // Processes, sandnet state, mounts, links, IPAM and iptables as before.
    cd.wait_clean(&before, Duration::from_secs(120));
    assert!(cd.sandnet_ids().is_empty(), "sandnet still lists sandboxes");
    let left: Vec<_> = std::fs::read_dir(cd.state())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.len() == 64)
        .collect();
    assert!(left.is_empty(), "sandbox directories left: {left:?}");
}
