//! Many sandnet pods through one private containerd: `SANDNET_BENCH_PODS` (default 10)
//! RunPodSandbox calls at once (one thread each) until all are ready, the memory each
//! sandbox costs on the host (its shim, supervisor, QEMU and virtiofsd: PSS summed, RSS
//! summed beside it), how fast CRI sees a VM die (QEMU killed, until PodSandboxStatus says
//! NOTREADY, for `SANDNET_BENCH_KILLS` pods, default 3, one after the other), then Stop +
//! Remove of all at once. Root; the guest kernel and `scripts/build-agent` as for the tests.

#[path = "../tests/common/mod.rs"]
mod common;

use common::scale::{memory_kib, pod_processes, qemu_death_seen_after, run_pods, stop_remove_pods};
use common::{Containerd, Options};
use std::time::{Duration, Instant};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() {
    let n = env_usize("SANDNET_BENCH_PODS", 10);
    let kills = env_usize("SANDNET_BENCH_KILLS", 3).min(n);
    let cd = Containerd::start("scale", Options::default());
    let before = cd.snapshot();
    let names: Vec<String> = (0..n).map(|i| format!("scale{i}")).collect();
    let t = Instant::now();
    let results = run_pods(&cd, &names);
    let all_ready = t.elapsed();
    let calls: Vec<f64> = results.iter().map(|(_, d)| ms(*d)).collect();
    let ids: Vec<String> = results
        .into_iter()
        .map(|(r, _)| r.unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", cd.log())))
        .collect();
    assert!(ids.iter().all(|id| cd.ready(id)), "a pod is not READY");
    println!("{n} pods through one containerd (TCG when KVM fails):");
    println!(
        "  all RunPodSandbox calls returned, every pod READY: {:.0} ms (one call: {:.0} to \
         {:.0} ms)",
        ms(all_ready),
        calls.iter().copied().fold(f64::INFINITY, f64::min),
        calls.iter().copied().fold(0.0, f64::max)
    );

    let (mut rss, mut pss) = (vec![], vec![]);
    for id in &ids {
        let (r, p) = pod_processes(&cd, id)
            .into_iter()
            .map(memory_kib)
            .fold((0, 0), |(a, b), (r, p)| (a + r, b + p));
        rss.push(r as f64 / 1024.0);
        pss.push(p as f64 / 1024.0);
    }
    println!(
        "  host memory per sandbox (shim + supervisor + QEMU + virtiofsd, guest RAM {} MiB): \
         PSS median {:.1} MiB (min {:.1}, max {:.1}); RSS median {:.1} MiB",
        256,
        median(pss.clone()),
        pss.iter().copied().fold(f64::INFINITY, f64::min),
        pss.iter().copied().fold(0.0, f64::max),
        median(rss)
    );

    let (mut exit, mut not_ready) = (vec![], vec![]);
    for id in ids.iter().take(kills) {
        let d = qemu_death_seen_after(&cd, id, Duration::from_secs(60))
            .unwrap_or_else(|| panic!("pod {id}: its QEMU's death unseen after 60 s"));
        exit.push(ms(d.task_exit));
        not_ready.push(ms(d.not_ready));
    }
    if kills > 0 {
        let list = |v: &[f64]| v.iter().map(|s| s.round() as u64).collect::<Vec<_>>();
        println!(
            "  QEMU killed -> the pod's /tasks/exit in `ctr events`: median {:.1} ms of {kills} \
             {:?}; -> NOTREADY in CRI (after CRI's task Delete): median {:.1} ms {:?}",
            median(exit.clone()),
            list(&exit),
            median(not_ready.clone()),
            list(&not_ready)
        );
    }

    let t = Instant::now();
    for r in stop_remove_pods(&cd, &ids) {
        r.unwrap_or_else(|e| panic!("Stop/RemovePodSandbox: {e}\n{}", cd.log()));
    }
    println!("  Stop + Remove of all at once: {:.0} ms", ms(t.elapsed()));
    cd.wait_clean(&before, Duration::from_secs(120));
}
