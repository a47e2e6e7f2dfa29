//! Hot plug, measured two ways in one run:
//!
//! 1. **Monitor latency**: in a running sandbox (monitor on), N veths with addresses are
//!    added to the pod namespace at once (`ip -batch`); the time from just before that
//!    until the sandbox record shows every one of them `plugged` (which the supervisor
//!    writes only after the agent configured the guest interface, its routes and
//!    neighbours). Also what the supervisor itself reports for that reconciliation
//!    (`netmon_last_ms`: from the end of the debounced burst to guest configured).
//! 2. **Boot first vs cold plug**: the whole `sandnet run` process to network-ready with
//!    `--hotplug` (QEMU boots while CNI/attach run, then every NIC is hot-plugged) and
//!    without (NICs on QEMU's command line), N NICs each, alternating rounds.
//!
//! Run: `cargo bench -p sandnet --bench hotplug` (as root; needs `scripts/build-agent`
//! and the guest kernel). Environment: `SANDNET_BENCH_SIZES=1,8`, `SANDNET_BENCH_ROUNDS=3`.
//! Prints the accelerator each `run` reported.

#[path = "common/pod.rs"]
mod pod;

use pod::{accel_label, env_list, ip_batch, median, veths, Sandnet};
use sandnet_testkit::{unique, TestNs};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

fn plugged(rec: &Value, prefix: &str) -> usize {
    rec["nics"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| {
            n["state"] == "plugged" && n["link"].as_str().is_some_and(|l| l.starts_with(prefix))
        })
        .count()
}

/// Monitor latency for `n` links added at once; returns (wall ms, supervisor ms) per round.
fn monitor_latency(n: usize, rounds: usize, accels: &mut BTreeSet<String>) -> Vec<(u64, u64)> {
    let host = TestNs::new("hpb-h");
    let pod = TestNs::new("hpb-p");
    veths(&pod, &host, "eth", 100, 1);
    let sn = Sandnet::new(&format!(
        "[hypervisor.qemu]\nhotplug_ports = {}\n",
        n.max(4)
    ));
    let id = unique("hpb");
    let out = sn
        .cmd(&["run", "--json", "--name", &id, "--netns", &pod.name])
        .expect("run");
    accels.insert(accel_label(&out));
    let mut res = Vec::new();
    for r in 0..rounds {
        let prefix = format!("r{r}n");
        let t = Instant::now();
        veths(&pod, &host, &prefix, 120 + r * 10, n);
        while plugged(&sn.record(&id), &prefix) < n {
            if t.elapsed() > Duration::from_secs(120) {
                panic!("round {r}: {n} links did not all arrive");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let wall = t.elapsed().as_millis() as u64;
        let sup = sn.record(&id)["timings"]["netmon_last_ms"]
            .as_u64()
            .unwrap_or_default();
        res.push((wall, sup));
        // Gone again before the next round (unplugged by the monitor).
        let mut b = String::new();
        for i in 0..n {
            b += &format!("link del {prefix}{i}\n");
        }
        ip_batch(&pod, &b);
        let t = Instant::now();
        while plugged(&sn.record(&id), &prefix) > 0 && t.elapsed() < Duration::from_secs(120) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = sn.cmd(&["rm", &id]);
    res
}

/// `sandnet run` wall time to network-ready with `extra` arguments, `n` NICs.
fn run_time(n: usize, extra: &[&str], accels: &mut BTreeSet<String>) -> u64 {
    let host = TestNs::new("hpr-h");
    let pod = TestNs::new("hpr-p");
    veths(&pod, &host, "eth", 100, n);
    let sn = Sandnet::new(&format!(
        "[netmon]\nenable = false\n[hypervisor.qemu]\nhotplug_ports = {}\n",
        n.max(4)
    ));
    let id = unique("hpr");
    let mut args = vec!["run", "--json", "--name", &id, "--netns", &pod.name];
    args.extend_from_slice(extra);
    let t = Instant::now();
    let out = sn.cmd(&args).expect("run");
    let ms = t.elapsed().as_millis() as u64;
    accels.insert(accel_label(&out));
    let _ = sn.cmd(&["rm", &id]);
    ms
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let sizes = env_list("SANDNET_BENCH_SIZES", &[1, 8]);
    let rounds = env_list("SANDNET_BENCH_ROUNDS", &[3])[0].max(1);
    let mut accels = BTreeSet::new();
    println!("hot plug benchmark: {rounds} rounds, medians in ms");
    for &n in &sizes {
        let r = monitor_latency(n, rounds, &mut accels);
        println!(
            "monitor, {n} link(s) added at once: netlink change → guest configured {} ms (wall, polled), supervisor's reconciliation {} ms  [rounds: {:?}]",
            median(r.iter().map(|x| x.0).collect()),
            median(r.iter().map(|x| x.1).collect()),
            r
        );
    }
    for &n in &sizes {
        let mut cold = Vec::new();
        let mut hot = Vec::new();
        for _ in 0..rounds {
            cold.push(run_time(n, &[], &mut accels));
            hot.push(run_time(n, &["--hotplug"], &mut accels));
        }
        let (c, h) = (median(cold.clone()), median(hot.clone()));
        println!(
            "run → ready, {n} NIC(s): cold plug {c} ms, boot first + hot plug {h} ms (ratio cold/hot {:.2})  [cold {cold:?}, hot {hot:?}]",
            c as f64 / h as f64
        );
    }
    println!(
        "accelerator as run reported: {}",
        accels.into_iter().collect::<Vec<_>>().join("; ")
    );
}
