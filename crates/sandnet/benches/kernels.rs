//! Debian's cloud kernel against sandnet's own kernel, in one run: the whole `sandnet run`
//! process until the guest network is configured (wall time), for 1 and 8 NICs (median of
//! `SANDNET_BENCH_ROUNDS`, default 3), then `SANDNET_BENCH_PARALLEL` (default 10) sandboxes
//! started at once, each way. Every run is split into:
//!
//! - `qemu`: QEMU started until it answers on QMP (`run --json` `qemu_ms`);
//! - `fw+kernel`: from then until the agent runs as PID 1 (`boot_ms` less the agent's own
//!   start-up, below); `kernel` is the part the guest's clock saw (the agent's first log
//!   line `uptime_ms`), the rest is firmware, QEMU's machine setup and the host noticing;
//! - `init`: PID 1's own set-up (mounts, console, module loading; the agent's log);
//! - `agent`: the agent from then until it serves on its virtio-serial port;
//! - `network`: attach plus the agent's configuration calls (`network_ms`);
//! - `other`: the rest of the wall time (namespace, image, process starts, reporting).
//!
//! Run: `cargo bench -p sandnet --bench kernels` (as root; needs `scripts/build-agent` and
//! both kernels: `scripts/build-kernel`, `scripts/guest-kernel.sh`, which `scripts/setup`
//! runs). `SANDNET_BENCH_SIZES=1,8`, `SANDNET_BENCH_KERNELS=debian-cloud,sandnet`.

#[path = "common/pod.rs"]
mod pod;

use pod::{accel_label, median, veths, Sandnet};
use sandnet_testkit::{unique, TestNs};
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Instant;

/// The split of one run, in ms, by column name.
type Split = BTreeMap<&'static str, u64>;

const COLUMNS: [&str; 8] = [
    "wall",
    "qemu",
    "fw+kernel",
    "kernel",
    "init",
    "agent",
    "network",
    "other",
];

/// A pod namespace with `n` veths `eth0…` (addresses, up, a default route), peers in a
/// second namespace.
fn build_pod(n: usize) -> (TestNs, TestNs) {
    let host = TestNs::new("kbench-h");
    let pod = TestNs::new("kbench-p");
    veths(&pod, &host, "eth", 100, n);
    pod.ip(&["route", "add", "default", "via", "10.100.0.1"]);
    (host, pod)
}

/// One kernel under test: its own state root and configuration (cleaned up on drop).
struct Way {
    kernel: String,
    sn: Sandnet,
}

impl Way {
    fn new(kernel: &str) -> Way {
        Way {
            kernel: kernel.into(),
            sn: Sandnet::new(&format!("[hypervisor.qemu]\nkernel = \"{kernel}\"\n")),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sandnet"));
        c.args(args)
            .env("SANDNET_STATE_DIR", &self.sn.state)
            .env("SANDNET_CONFIG", &self.sn.config);
        c
    }

    fn rm(&self, id: &str) {
        let _ = self.sn.cmd(&["rm", "--force", id]);
    }
}

/// The `uptime_ms=` of the first console line containing `what`.
fn uptime_at(log: &str, what: &str) -> Option<u64> {
    log.lines()
        .find(|l| l.contains(what))
        .and_then(|l| l.split_once("uptime_ms="))
        .and_then(|(_, v)| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Splits a finished run (its JSON and wall time) with the agent's console lines.
fn split(out: &Value, wall: u64, console: &str) -> Result<Split, String> {
    let t = |k: &str| {
        out["timings"][k]
            .as_u64()
            .ok_or_else(|| format!("no timings.{k} in {out}"))
    };
    let up = uptime_at(console, "up as PID 1").ok_or("no 'up as PID 1' line on the console")?;
    let mods = uptime_at(console, "kernel modules").unwrap_or(up);
    let serve = uptime_at(console, "serving on virtio-serial").ok_or("no 'serving' line")?;
    let (qemu, boot, network) = (t("qemu_ms")?, t("boot_ms")?, t("network_ms")?);
    let agent_up = serve.saturating_sub(up);
    let mut s = Split::new();
    s.insert("wall", wall);
    s.insert("qemu", qemu);
    s.insert("fw+kernel", boot.saturating_sub(agent_up));
    s.insert("kernel", up);
    s.insert("init", mods.saturating_sub(up));
    s.insert("agent", serve.saturating_sub(mods));
    s.insert("network", network);
    s.insert("other", wall.saturating_sub(qemu + boot + network));
    Ok(s)
}

/// Starts `sandnet run` for each pod at once and waits for all; returns each run's split
/// and the time until the last one was ready. Sandboxes are removed afterwards.
fn run_many(way: &Way, pods: &[&TestNs], accels: &mut Vec<String>) -> (Vec<Split>, u64) {
    let t0 = Instant::now();
    let children: Vec<(String, Instant, std::process::Child)> = pods
        .iter()
        .map(|pod| {
            let id = unique("kbench");
            let child = way
                .command(&["run", "--json", "--name", &id, "--netns", &pod.name])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("start sandnet run");
            (id, Instant::now(), child)
        })
        .collect();
    let mut splits = vec![];
    let mut ids = vec![];
    // Each run is waited for on its own thread, so its wall time ends when it ends (not
    // when the runs started before it have).
    let waiters: Vec<_> = children
        .into_iter()
        .map(|(id, started, child)| {
            std::thread::spawn(move || {
                let o = child.wait_with_output().expect("wait for sandnet run");
                (id, o, started.elapsed().as_millis() as u64)
            })
        })
        .collect();
    for w in waiters {
        let (id, o, wall) = w.join().expect("waiter thread");
        ids.push(id.clone());
        if !o.status.success() {
            eprintln!(
                "[{}] run {id} failed: {}",
                way.kernel,
                String::from_utf8_lossy(&o.stderr).trim_end()
            );
            continue;
        }
        let out: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
        let a = accel_label(&out);
        if !accels.contains(&a) {
            accels.push(a);
        }
        let console =
            std::fs::read_to_string(way.sn.state.join(&id).join("console.log")).unwrap_or_default();
        match split(&out, wall, &console) {
            Ok(s) => splits.push(s),
            Err(e) => eprintln!("[{}] run {id}: {e}", way.kernel),
        }
    }
    let makespan = t0.elapsed().as_millis() as u64;
    for id in ids {
        way.rm(&id);
    }
    (splits, makespan)
}

fn print_row(label: &str, splits: &[Split], extra: &str) {
    let mut line = format!("{label:<24}");
    for c in COLUMNS {
        line += &format!(" {:>9}", median(splits.iter().map(|s| s[c]).collect()));
    }
    println!("{line}  {extra}");
}

fn env_list(key: &str, default: &str) -> Vec<String> {
    std::env::var(key)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn env_num(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list; there is nothing to list.
    }
    let sizes: Vec<usize> = env_list("SANDNET_BENCH_SIZES", "1,8")
        .iter()
        .filter_map(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .collect();
    let kernels = env_list("SANDNET_BENCH_KERNELS", "debian-cloud,sandnet");
    let rounds = env_num("SANDNET_BENCH_ROUNDS", 3);
    let parallel = env_num("SANDNET_BENCH_PARALLEL", 10);
    let ways: Vec<Way> = kernels.iter().map(|k| Way::new(k)).collect();
    let mut accels = vec![];

    println!("sandnet run → guest network configured, by guest kernel (ms; medians)");
    println!(
        "{:<24}{}",
        "",
        COLUMNS
            .iter()
            .map(|c| format!(" {c:>9}"))
            .collect::<String>()
    );
    for &n in &sizes {
        let (_host, pod) = build_pod(n);
        // Rounds alternate between the kernels so machine noise hits both alike.
        let mut by_way: Vec<Vec<Split>> = ways.iter().map(|_| vec![]).collect();
        for _ in 0..rounds {
            for (w, way) in ways.iter().enumerate() {
                let (s, _) = run_many(way, &[&pod], &mut accels);
                by_way[w].extend(s);
            }
        }
        for (way, splits) in ways.iter().zip(&by_way) {
            let label = format!("{} {n} NIC{}", way.kernel, if n == 1 { "" } else { "s" });
            print_row(
                &label,
                splits,
                &format!("({} of {rounds} runs)", splits.len()),
            );
        }
    }
    let pods: Vec<(TestNs, TestNs)> = (0..parallel).map(|_| build_pod(1)).collect();
    let refs: Vec<&TestNs> = pods.iter().map(|(_, p)| p).collect();
    for way in &ways {
        let (splits, makespan) = run_many(way, &refs, &mut accels);
        let max = splits.iter().map(|s| s["wall"]).max().unwrap_or(0);
        print_row(
            &format!("{} {parallel} parallel", way.kernel),
            &splits,
            &format!(
                "({} ok; slowest {max} ms, all ready after {makespan} ms)",
                splits.len()
            ),
        );
    }
    println!("kernel = the guest clock at PID 1 (part of fw+kernel); other = wall - qemu - boot - network");
    println!("accelerator (as run reported): {}", accels.join("; "));
}
