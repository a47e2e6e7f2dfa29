//! The VM factory against cold boots, in one run: the whole `sandnet run` process to
//! network-ready taking a factory VM (warm) and booting its own (`--no-factory`, cold),
//! 1 and 8 NICs, alternating rounds (medians); then 10 sandboxes started in parallel each
//! way (the factory keeping 10 VMs ready), until the last is ready.
//!
//! Run: `cargo bench -p sandnet --bench factory` (as root; needs `scripts/build-agent` and
//! the guest kernel). Environment: `SANDNET_BENCH_SIZES=1,8`, `SANDNET_BENCH_ROUNDS=3`,
//! `SANDNET_BENCH_PARALLEL=10`. Prints the accelerator each run reported.

#[path = "common/pod.rs"]
mod pod;

use pod::{accel_label, env_list, median, veths, Sandnet};
use sandnet_testkit::{unique, TestNs};
use std::collections::BTreeSet;
use std::time::Instant;

/// One `sandnet run` into a fresh pod of `n` NICs: wall ms.
fn one_run(sn: &Sandnet, n: usize, extra: &[&str], accels: &mut BTreeSet<String>) -> u64 {
    let host = TestNs::new("fb-h");
    let pod = TestNs::new("fb-p");
    veths(&pod, &host, "eth", 100, n);
    let id = unique("fb");
    let mut args = vec!["run", "--json", "--name", &id, "--netns", &pod.name];
    args.extend_from_slice(extra);
    let t = Instant::now();
    let out = sn.cmd(&args).expect("run");
    let ms = t.elapsed().as_millis() as u64;
    accels.insert(accel_label(&out));
    let _ = sn.cmd(&["rm", &id]);
    ms
}

/// `k` runs at once, each into its own pod of one NIC: wall ms until the last is ready.
fn parallel(sn: &Sandnet, k: usize, extra: &[&str]) -> u64 {
    let pods: Vec<(TestNs, TestNs)> = (0..k)
        .map(|_| {
            let host = TestNs::new("fbp-h");
            let pod = TestNs::new("fbp-p");
            veths(&pod, &host, "eth", 100, 1);
            (host, pod)
        })
        .collect();
    let ids: Vec<String> = (0..k).map(|_| unique("fbp")).collect();
    let t = Instant::now();
    std::thread::scope(|s| {
        for ((_, pod), id) in pods.iter().zip(&ids) {
            s.spawn(|| {
                let mut args = vec!["run", "--json", "--name", id, "--netns", &pod.name];
                args.extend_from_slice(extra);
                sn.cmd(&args).expect("run");
            });
        }
    });
    let ms = t.elapsed().as_millis() as u64;
    for id in &ids {
        let _ = sn.cmd(&["rm", id]);
    }
    ms
}

fn wait_factory(sn: &Sandnet, count: usize) {
    let t = Instant::now();
    loop {
        let st = sn.cmd(&["factory", "status", "--json"]).expect("status");
        let ready = st["vms"]
            .as_array()
            .map(|v| v.iter().filter(|x| x["status"] == "ready").count())
            .unwrap_or(0);
        if ready >= count {
            return;
        }
        assert!(t.elapsed().as_secs() < 300, "factory not ready");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let sizes = env_list("SANDNET_BENCH_SIZES", &[1, 8]);
    let rounds = env_list("SANDNET_BENCH_ROUNDS", &[3])[0].max(1);
    let par = env_list("SANDNET_BENCH_PARALLEL", &[10])[0].max(1);
    let ports = sizes.iter().copied().max().unwrap_or(1).max(4);
    let sn = Sandnet::new(&format!(
        "[netmon]\nenable = false\n[hypervisor.qemu]\nhotplug_ports = {ports}\n"
    ));
    let mut accels = BTreeSet::new();
    println!(
        "factory benchmark: {rounds} rounds, medians in ms (whole `sandnet run` to network-ready)"
    );
    sn.cmd(&["factory", "init", "--count", "1"])
        .expect("factory init");
    for &n in &sizes {
        let (mut cold, mut warm) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            cold.push(one_run(&sn, n, &["--no-factory"], &mut accels));
            wait_factory(&sn, 1);
            warm.push(one_run(&sn, n, &[], &mut accels));
        }
        let (c, w) = (median(cold.clone()), median(warm.clone()));
        println!(
            "{n} NIC(s): cold {c} ms, factory-warm {w} ms (warm/cold {:.2})  [cold {cold:?}, warm {warm:?}]",
            w as f64 / c as f64
        );
    }
    let _ = sn.cmd(&["factory", "destroy"]);
    let cold = parallel(&sn, par, &["--no-factory"]);
    sn.cmd(&["factory", "init", "--count", &par.to_string()])
        .expect("factory init");
    let warm = parallel(&sn, par, &[]);
    let _ = sn.cmd(&["factory", "destroy"]);
    println!(
        "{par} sandboxes in parallel, 1 NIC each, until the last is ready: cold {cold} ms, factory-warm {warm} ms (warm/cold {:.2})",
        warm as f64 / cold as f64
    );
    println!(
        "accelerator as run reported: {}",
        accels.into_iter().collect::<Vec<_>>().join("; ")
    );
}
