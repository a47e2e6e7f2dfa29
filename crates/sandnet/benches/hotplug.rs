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

use sandnet_testkit::{unique, TestNs};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn median(mut v: Vec<u64>) -> u64 {
    v.sort();
    v[v.len() / 2]
}

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

fn ip_batch(ns: &TestNs, batch: &str) {
    let f = std::env::temp_dir().join(unique("hpbench-batch"));
    std::fs::File::create(&f)
        .and_then(|mut w| w.write_all(batch.as_bytes()))
        .expect("batch file");
    ns.ip(&["-batch", f.to_str().expect("path")]);
    let _ = std::fs::remove_file(f);
}

/// `n` veths `{prefix}{i}` in `pod` with peers in `host`, addressed `10.{base+i}.0.2/24`.
fn veths(pod: &TestNs, host: &TestNs, prefix: &str, base: usize, n: usize) {
    let mut b = String::new();
    let mut hb = String::new();
    for i in 0..n {
        b += &format!(
            "link add {prefix}{i} type veth peer name h{prefix}{i} netns {}\n\
             addr add 10.{}.0.2/24 dev {prefix}{i}\nlink set {prefix}{i} up\n",
            host.name,
            base + i
        );
        hb += &format!(
            "addr add 10.{}.0.1/24 dev h{prefix}{i}\nlink set h{prefix}{i} up\n",
            base + i
        );
    }
    ip_batch(pod, &b);
    ip_batch(host, &hb);
}

struct Sandnet {
    state: PathBuf,
    config: PathBuf,
}

impl Sandnet {
    fn new(config: &str) -> Sandnet {
        let state = std::env::temp_dir().join(unique("hpbench-state"));
        let config_path = std::env::temp_dir().join(format!("{}.toml", unique("hpbench")));
        std::fs::write(&config_path, config).expect("config");
        Sandnet {
            state,
            config: config_path,
        }
    }

    fn cmd(&self, args: &[&str]) -> Result<Value, String> {
        let o = Command::new(env!("CARGO_BIN_EXE_sandnet"))
            .args(args)
            .env("SANDNET_STATE_DIR", &self.state)
            .env("SANDNET_CONFIG", &self.config)
            .output()
            .map_err(|e| e.to_string())?;
        if !o.status.success() {
            return Err(String::from_utf8_lossy(&o.stderr).into_owned());
        }
        Ok(serde_json::from_slice(&o.stdout).unwrap_or(Value::Null))
    }

    fn record(&self, id: &str) -> Value {
        std::fs::read(self.state.join(id).join("sandbox.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null)
    }
}

impl Drop for Sandnet {
    fn drop(&mut self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_sandnet"))
            .args(["gc"])
            .env("SANDNET_STATE_DIR", &self.state)
            .output();
        let _ = std::fs::remove_dir_all(&self.state);
        let _ = std::fs::remove_file(&self.config);
    }
}

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
    accels.insert(format!("{} ({})", out["accel"], out["accel_reason"]));
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
    accels.insert(format!("{} ({})", out["accel"], out["accel_reason"]));
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
