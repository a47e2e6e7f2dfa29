//! Host memory per sandbox, and what sandnet's settings do to it, in one run: the same
//! sandbox booted with QEMU's defaults (the "before": TCG's 1 GiB translation cache, no
//! balloon) and with each of sandnet's settings (`tcg_tb_size`, `reclaim_guest_freed_memory`,
//! a smaller `default_memory`), alternating the order per round.
//!
//! For each: the time to ready; QEMU's RSS, PSS and anonymous memory once the idle guest
//! settled; the same after a workload that fills 64 MiB of the guest's tmpfs and removes it
//! (what an exited container leaves); the workload's time (the cost of a smaller translation
//! cache); and the supervisor's RSS. The guest image's sizes are printed too.
//!
//! Run: `cargo bench -p sandnet --bench memory` (as root; needs `scripts/build-agent` and
//! the guest kernel). Environment: `SANDNET_BENCH_ROUNDS=3`, `SANDNET_BENCH_SETTLE_MS=4000`.
//! Prints the accelerator each sandbox reported.

#[path = "common/pod.rs"]
mod pod;

use pod::{exec_ms, median, proc_kib};
use sandnet_runtime::api::{PodNetns, SandboxRequest};
use sandnet_runtime::config::Config;
use sandnet_testkit::{PodPair, TempDir};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One configuration under test.
struct Variant {
    name: &'static str,
    tb_mib: Option<u32>,
    reclaim: Option<bool>,
    memory_mib: u32,
}

/// `tb_mib` and `reclaim` of `None` take sandnet's defaults.
const VARIANTS: &[Variant] = &[
    Variant {
        name: "before",
        tb_mib: Some(0),
        reclaim: Some(false),
        memory_mib: 256,
    },
    Variant {
        name: "tb16",
        tb_mib: Some(16),
        reclaim: Some(false),
        memory_mib: 256,
    },
    Variant {
        name: "tb64",
        tb_mib: Some(64),
        reclaim: Some(false),
        memory_mib: 256,
    },
    Variant {
        name: "reclaim",
        tb_mib: Some(0),
        reclaim: Some(true),
        memory_mib: 256,
    },
    Variant {
        name: "after",
        tb_mib: None,
        reclaim: None,
        memory_mib: 256,
    },
    Variant {
        name: "after-128M",
        tb_mib: None,
        reclaim: None,
        memory_mib: 128,
    },
];

fn memory(f: &mut BTreeMap<&'static str, u64>, tag: &'static [&'static str; 3], qemu: u32) {
    f.insert(tag[0], proc_kib(qemu, "smaps_rollup", "Rss:") / 1024);
    f.insert(tag[1], proc_kib(qemu, "smaps_rollup", "Pss:") / 1024);
    f.insert(tag[2], proc_kib(qemu, "smaps_rollup", "Anonymous:") / 1024);
}

/// What fills and frees guest memory, and runs code TCG has not translated yet.
const WORKLOAD: &str = "dd if=/dev/zero of=/tmp/fill bs=1M count=64 2>/dev/null && \
    sync && rm /tmp/fill && ls -R /proc/sys > /dev/null 2>&1; ip -s link > /dev/null; \
    i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; \
    for c in ps df mount uname dmesg; do $c > /dev/null 2>&1; done; true";

async fn round(
    v: &Variant,
    state: &TempDir,
    settle: Duration,
    accels: &mut BTreeSet<String>,
) -> BTreeMap<&'static str, u64> {
    let pair = PodPair::new("bmem");
    let rt = pod::runtime(state);
    let mut cfg = Config::default();
    if let Some(tb) = v.tb_mib {
        cfg.qemu.tcg_tb_size = tb;
    }
    if let Some(r) = v.reclaim {
        cfg.qemu.reclaim_guest_freed_memory = r;
    }
    cfg.qemu.default_memory = v.memory_mib;
    let mut req = SandboxRequest::new(cfg);
    req.netns = PodNetns::Existing(pair.pod.path());
    req.use_factory = false;
    let t = Instant::now();
    let sb = rt.run(&req, &mut |_| {}).await.expect("run");
    let mut f = BTreeMap::new();
    f.insert("ready", t.elapsed().as_millis() as u64);
    if let Some(r) = sb.ready() {
        accels.insert(format!("{} ({})", r.accel, r.accel_reason));
    }
    let st = sb.state().expect("state");
    let qemu = st.qemu_pid.expect("QEMU pid");
    tokio::time::sleep(settle).await;
    memory(&mut f, &["idle_rss", "idle_pss", "idle_anon"], qemu);
    f.insert(
        "sup_rss",
        proc_kib(st.supervisor_pid.unwrap_or(0), "status", "VmRSS:") / 1024,
    );
    f.insert("work", exec_ms(&sb, WORKLOAD).await);
    tokio::time::sleep(settle).await;
    memory(&mut f, &["work_rss", "work_pss", "work_anon"], qemu);
    sb.remove(true).await.expect("remove");
    f
}

/// Sizes of the guest image the sandboxes booted (what the guest reads into its memory).
fn image_sizes() -> String {
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len() >> 20).unwrap_or(0);
    // The agent as `sandnet` finds it: beside its target directory.
    let target = std::path::Path::new(env!("CARGO_BIN_EXE_sandnet"))
        .ancestors()
        .nth(2);
    if let (None, Some(t)) = (std::env::var_os("SANDNET_AGENT"), target) {
        let agent = t.join("x86_64-unknown-linux-gnu/release/sandnet-agent");
        std::env::set_var("SANDNET_AGENT", agent);
    }
    let q = Config::default().qemu;
    match sandnet_runtime::image::resolve(q.kernel.as_deref(), q.initrd.as_deref()) {
        Ok(img) => format!(
            "guest image: kernel {} MiB ({}), initramfs {} MiB ({})",
            size(&img.kernel),
            img.kernel.display(),
            size(&img.initrd),
            img.initrd.display()
        ),
        Err(e) => format!("guest image: {e}"),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = env_u64("SANDNET_BENCH_ROUNDS", 3) as usize;
    let settle = Duration::from_millis(env_u64("SANDNET_BENCH_SETTLE_MS", 4000));
    let state = TempDir::new("bmem-state");
    let mut accels = BTreeSet::new();
    let mut all: BTreeMap<(usize, &str), Vec<u64>> = BTreeMap::new();
    for r in 0..n {
        let mut order: Vec<usize> = (0..VARIANTS.len()).collect();
        if r % 2 == 1 {
            order.reverse();
        }
        for k in order {
            let f = round(&VARIANTS[k], &state, settle, &mut accels).await;
            eprintln!("round {}/{n} {}: {f:?}", r + 1, VARIANTS[k].name);
            for (name, x) in f {
                all.entry((k, name)).or_default().push(x);
            }
        }
    }
    println!(
        "accelerator: {}",
        accels.into_iter().collect::<Vec<_>>().join(", ")
    );
    println!("{}", image_sizes());
    println!(
        "medians of {n} rounds; memory in MiB of the QEMU process, {} ms after ready and \
         after the workload (64 MiB written to the guest's tmpfs and removed, a few commands)",
        settle.as_millis()
    );
    let rows = [
        ("ready", "ready, ms"),
        ("idle_rss", "idle RSS"),
        ("idle_pss", "idle PSS"),
        ("idle_anon", "idle anonymous"),
        ("work", "workload, ms"),
        ("work_rss", "after work RSS"),
        ("work_pss", "after work PSS"),
        ("work_anon", "after work anonymous"),
        ("sup_rss", "supervisor RSS"),
    ];
    print!("{:<22}", "");
    for v in VARIANTS {
        print!(" {:>11}", v.name);
    }
    println!();
    for (key, label) in rows {
        print!("{label:<22}");
        let base = median(all.get(&(0, key)).cloned().unwrap_or_default());
        for k in 0..VARIANTS.len() {
            let m = median(all.get(&(k, key)).cloned().unwrap_or_default());
            if k == 0 || base == 0 {
                print!(" {m:>11}");
            } else {
                print!(" {:>5} {:>4.2}x", m, m as f64 / base as f64);
            }
        }
        println!();
    }
    println!(
        "tb16/tb64: tcg_tb_size; reclaim: reclaim_guest_freed_memory; after: sandnet's defaults \
         (tcg_tb_size {}, reclaim_guest_freed_memory {}); ratios against before",
        Config::default().qemu.tcg_tb_size,
        Config::default().qemu.reclaim_guest_freed_memory
    );
}
