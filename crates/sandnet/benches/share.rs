//! virtio-9p against virtio-fs for the sandbox's shared directory, in one run: the time
//! until a sandbox with the share is ready, the guest's mount, a cold read of a 64 MiB file
//! and of 256 files of 4 KiB (guest page cache dropped first), each against the same read
//! on the host. Guest times are the `sandnet exec` round trip less an empty one's.
//!
//! Run: `cargo bench -p sandnet --bench share` (as root; needs `scripts/build-agent` and
//! the guest kernel). Environment: `SANDNET_BENCH_ROUNDS=3`. Prints the accelerator each
//! sandbox reported.

#[path = "common/pod.rs"]
mod pod;

use pod::{exec_ms, median, proc_kib};
use sandnet_runtime::api::{PodNetns, SandboxRequest};
use sandnet_runtime::config::Config;
use sandnet_runtime::shared::SharedFs;
use sandnet_testkit::{PodPair, TempDir};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

const BIG: usize = 64 << 20;
const SMALL_FILES: usize = 256;

fn rounds() -> usize {
    std::env::var("SANDNET_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

/// One round for `fs`: named figures in ms.
async fn round(
    fs: SharedFs,
    state: &TempDir,
    accels: &mut BTreeSet<String>,
) -> BTreeMap<&'static str, u64> {
    let pair = PodPair::new("bsh");
    let rt = pod::runtime(state);
    let mut cfg = Config::default();
    cfg.qemu.shared_fs = fs;
    let mut req = SandboxRequest::new(cfg);
    req.netns = PodNetns::Existing(pair.pod.path());
    req.shared_dir = true;
    req.use_factory = false;
    let t = Instant::now();
    let sb = rt.run(&req, &mut |_| {}).await.expect("run");
    let mut f = BTreeMap::new();
    f.insert("ready", t.elapsed().as_millis() as u64);
    if let Some(r) = sb.ready() {
        accels.insert(format!("{} ({})", r.accel, r.accel_reason));
    }
    let host = sb.shared_dir().expect("share").host;
    let big: Vec<u8> = (0..BIG).map(|i| (i % 251) as u8).collect();
    std::fs::write(host.join("big"), &big).unwrap();
    std::fs::create_dir_all(host.join("small")).unwrap();
    for i in 0..SMALL_FILES {
        std::fs::write(host.join(format!("small/{i}")), &big[..4096]).unwrap();
    }
    let t = Instant::now();
    let big_host = std::fs::read(host.join("big")).unwrap().len();
    f.insert("host_big_us", t.elapsed().as_micros() as u64);
    assert_eq!(big_host, BIG);
    let t = Instant::now();
    for i in 0..SMALL_FILES {
        let _ = std::fs::read(host.join(format!("small/{i}"))).unwrap();
    }
    f.insert("host_small_us", t.elapsed().as_micros() as u64);

    let m = fs.guest_mount().expect("a share");
    let opts = if m.options.is_empty() {
        "defaults".to_string()
    } else {
        m.options.join(",")
    };
    let empty = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(exec_ms(&sb, "true").await);
        }
        median(v)
    };
    let mount = exec_ms(
        &sb,
        &format!(
            "mkdir -p {mp} && mount -t {t} -o {opts} {src} {mp}",
            mp = m.mount_point,
            t = m.fstype,
            src = m.source
        ),
    )
    .await;
    f.insert("mount", mount.saturating_sub(empty));
    let drop = "echo 3 > /proc/sys/vm/drop_caches";
    let big_ms = exec_ms(
        &sb,
        &format!("{drop}; cat {}/big > /dev/null", m.mount_point),
    )
    .await;
    f.insert("guest_big", big_ms.saturating_sub(empty));
    let small_ms = exec_ms(
        &sb,
        &format!("{drop}; cat {}/small/* > /dev/null", m.mount_point),
    )
    .await;
    f.insert("guest_small", small_ms.saturating_sub(empty));
    // Host memory (PSS: shared pages, such as the guest memfd virtiofsd maps too, count
    // once between the processes that map them) of QEMU, and virtiofsd for virtio-fs.
    let qemu = sb.state().ok().and_then(|s| s.qemu_pid).unwrap_or(0);
    f.insert("qemu_pss_kib", proc_kib(qemu, "smaps_rollup", "Pss:"));
    let daemons: u64 = sandnet_testkit::pids_mentioning(&host.display().to_string())
        .into_iter()
        .filter(|(_, c)| c.contains("virtiofsd"))
        .map(|(p, _)| proc_kib(p, "smaps_rollup", "Pss:"))
        .sum();
    f.insert("daemon_pss_kib", daemons);
    sb.remove(true).await.expect("remove");
    f
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = rounds();
    // One state root for every round: the accelerator verdict is kept there.
    let state = TempDir::new("bsh-state");
    let mut accels = BTreeSet::new();
    let kinds = [SharedFs::Virtio9p, SharedFs::VirtioFs];
    let mut all: BTreeMap<(usize, &str), Vec<u64>> = BTreeMap::new();
    for r in 0..n {
        // Alternate the order so neither always runs on a warmer machine.
        let order: Vec<usize> = if r % 2 == 0 { vec![0, 1] } else { vec![1, 0] };
        for k in order {
            let f = round(kinds[k], &state, &mut accels).await;
            for (name, ms) in f {
                all.entry((k, name)).or_default().push(ms);
            }
        }
    }
    println!(
        "accelerator: {}",
        accels.into_iter().collect::<Vec<_>>().join(", ")
    );
    println!(
        "medians of {n} rounds (guest figures: the exec round trip less an empty one's; the \
         first round's ready includes the accelerator's choice)"
    );
    println!(
        "{:<36} {:>10} {:>10} {:>8}",
        "", "virtio-9p", "virtio-fs", "9p/fs"
    );
    let rows = [
        ("ready", "sandbox ready (run), ms"),
        ("mount", "guest mount, ms"),
        ("guest_big", "64 MiB cold read, guest, ms"),
        ("host_big_us", "64 MiB read, host, us"),
        ("guest_small", "256 x 4 KiB cold read, guest, ms"),
        ("host_small_us", "256 x 4 KiB read, host, us"),
        ("qemu_pss_kib", "QEMU PSS after the reads, KiB"),
        ("daemon_pss_kib", "virtiofsd PSS, KiB"),
    ];
    for (key, label) in rows {
        let a = median(all.get(&(0, key)).cloned().unwrap_or_default());
        let b = median(all.get(&(1, key)).cloned().unwrap_or_default());
        let ratio = if b == 0 {
            "-".to_string()
        } else {
            format!("{:.2}", a as f64 / b as f64)
        };
        println!("{label:<36} {a:>10} {b:>10} {ratio:>8}");
    }
}
