//! Host-side cost of `sandnet run` and `sandnet rm`, step by step, for one sandbox and for
//! ten started in parallel; and the cost of each CNI plugin of a chain.
//!
//! Everything runs inside a "host" network namespace the benchmark makes (the bridge and
//! iptables rules land there), with its own state, CNI conf, cache and host-local dirs.
//! The step figures come from `run --json` / `rm --json` (`timings`, measured by the
//! supervisor); end-to-end figures are the wall time of the `sandnet` process. Per-plugin CNI
//! costs are measured with sandnet's CNI executor on the same real plugins: ADD/DEL of the
//! chain `bridge`(+`host-local`) → `tuning` → `portmap` cut after each plugin; a plugin's cost
//! is the difference to the chain without it (median of max(3×rounds, 9)).
//!
//! Run: `cargo bench -p sandnet --bench lifecycle` (as root, after `scripts/build-agent`).
//! Options: `SANDNET_BENCH_ROUNDS=3` (rounds; medians are reported), `SANDNET_BENCH_PARALLEL=10`.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn sh(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd).args(args).output().expect(cmd)
}

/// The host namespace and dirs; removed on drop (sandboxes first).
/// Every accelerator `run --json` reported, with its reason (never a guess from /dev/kvm).
static ACCELS: std::sync::Mutex<std::collections::BTreeSet<String>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

fn note_accel(run_json: &Value) {
    let a = run_json["accel"].as_str().unwrap_or("?");
    let why = run_json["accel_reason"].as_str().unwrap_or("");
    let why = why
        .trim_end_matches(" (remembered for this boot)")
        .trim_end_matches("; using TCG");
    if let Ok(mut s) = ACCELS.lock() {
        s.insert(format!("{a} ({why})"));
    }
}

fn accels() -> String {
    ACCELS
        .lock()
        .map(|s| s.iter().cloned().collect::<Vec<_>>().join("; "))
        .unwrap_or_default()
}

struct Bench {
    ns: String,
    dir: PathBuf,
    ids: Vec<String>,
    n: usize,
}

impl Bench {
    fn new() -> Bench {
        let ns = format!("snbench-lc-{}", std::process::id());
        let dir = std::env::temp_dir().join(&ns);
        for d in ["state", "conf", "cache", "ipam"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let _ = sh("ip", &["netns", "del", &ns]);
        assert!(sh("ip", &["netns", "add", &ns]).status.success());
        let _ = sh("ip", &["-n", &ns, "link", "set", "lo", "up"]);
        let b = Bench {
            ns,
            dir,
            ids: vec![],
            n: 0,
        };
        let list = json!({"cniVersion":"1.0.0","name":"benchnet","plugins":[b.bridge()]});
        std::fs::write(b.dir.join("conf/10-benchnet.conflist"), list.to_string()).unwrap();
        std::fs::write(
            b.dir.join("sandnet.toml"),
            "[hypervisor.qemu]\ndefault_memory = 128\n",
        )
        .unwrap();
        b
    }

    fn bridge(&self) -> Value {
        json!({"type":"bridge","bridge":"snbench0","isGateway":true,"ipMasq":true,
               "ipam":{"type":"host-local","subnet":"10.231.0.0/24",
                       "routes":[{"dst":"0.0.0.0/0"}],"dataDir":self.dir.join("ipam")}})
    }

    fn sandnet(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, env!("CARGO_BIN_EXE_sandnet")])
            .args(args)
            .env("SANDNET_STATE_DIR", self.dir.join("state"))
            .env_remove("SANDNET_CONFIG");
        c
    }

    fn next_id(&mut self) -> String {
        self.n += 1;
        let id = format!("bench-{}-{}", std::process::id(), self.n);
        self.ids.push(id.clone());
        id
    }

    /// `run --json`: (wall ms, step timings).
    fn run(&self, id: &str) -> (f64, BTreeMap<String, f64>) {
        let conf = self.dir.join("conf");
        let cache = self.dir.join("cache");
        let config = self.dir.join("sandnet.toml");
        let t = Instant::now();
        let o = self
            .sandnet(&[
                "run",
                "--name",
                id,
                "--json",
                "--cni-conf-dir",
                conf.to_str().unwrap(),
                "--cni-cache-dir",
                cache.to_str().unwrap(),
                "--config",
                config.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        let wall = t.elapsed().as_secs_f64() * 1e3;
        assert!(
            o.status.success(),
            "run {id}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        note_accel(&v);
        (wall, timings(&v["timings"]))
    }

    /// `rm --json`: (wall ms, step timings).
    fn rm(&self, id: &str) -> (f64, BTreeMap<String, f64>) {
        let t = Instant::now();
        let o = self.sandnet(&["rm", "--json", id]).output().unwrap();
        let wall = t.elapsed().as_secs_f64() * 1e3;
        assert!(
            o.status.success(),
            "rm {id}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        (wall, timings(&v[0]["timings"]))
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        for id in &self.ids {
            let _ = self.sandnet(&["rm", "--force", id]).output();
        }
        let _ = sh("ip", &["netns", "del", &self.ns]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn timings(v: &Value) -> BTreeMap<String, f64> {
    v.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| v.as_f64().map(|x| (k.clone(), x)))
        .collect()
}

/// Samples per step name.
#[derive(Default)]
struct Samples(BTreeMap<String, Vec<f64>>);

impl Samples {
    fn add(&mut self, wall_key: &str, wall: f64, t: &BTreeMap<String, f64>) {
        self.0.entry(wall_key.into()).or_default().push(wall);
        for (k, v) in t {
            self.0.entry(k.clone()).or_default().push(*v);
        }
    }
    fn med(&self, k: &str) -> f64 {
        median(self.0.get(k).cloned().unwrap_or_default())
    }
}

/// One round of `n` sandboxes started at once then removed at once; returns the wall times
/// of the whole batch (run, rm).
fn round(b: &mut Bench, n: usize, runs: &mut Samples, rms: &mut Samples) -> (f64, f64) {
    let ids: Vec<String> = (0..n).map(|_| b.next_id()).collect();
    let b = &*b;
    let t = Instant::now();
    let res: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = ids.iter().map(|id| s.spawn(move || b.run(id))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let run_wall = t.elapsed().as_secs_f64() * 1e3;
    for (w, t) in &res {
        runs.add("wall_ms", *w, t);
    }
    let t = Instant::now();
    let res: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = ids.iter().map(|id| s.spawn(move || b.rm(id))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let rm_wall = t.elapsed().as_secs_f64() * 1e3;
    for (w, t) in &res {
        rms.add("wall_ms", *w, t);
    }
    (run_wall, rm_wall)
}

/// Per-plugin CNI cost: ADD and DEL of the chain cut after each plugin, in the host netns.
fn cni_per_plugin(b: &Bench, rounds: usize) -> Vec<(String, f64, f64)> {
    let chain = [
        ("bridge (+host-local)", b.bridge()),
        (
            "tuning",
            json!({"type":"tuning","sysctl":{"net.ipv4.conf.eth0.rp_filter":"0"}}),
        ),
        (
            "portmap",
            json!({"type":"portmap","capabilities":{"portMappings":true}}),
        ),
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let host = PathBuf::from(format!("/run/netns/{}", b.ns));
    let cache = b.dir.join("cni-bench-cache");
    let cfg = sandnet_cni::CniConfig::new(vec![PathBuf::from("/usr/lib/cni")], &cache)
        .with_timeout(Duration::from_secs(30))
        .with_plugin_netns_path(&host)
        .unwrap();
    let mut per_len: Vec<(Vec<f64>, Vec<f64>)> = vec![(vec![], vec![]); chain.len()];
    for r in 0..rounds {
        for len in 1..=chain.len() {
            let plugins: Vec<Value> = chain[..len].iter().map(|(_, p)| p.clone()).collect();
            let list = json!({"cniVersion":"1.0.0","name":"benchcni","plugins":plugins});
            let list =
                sandnet_cni::NetworkConfigList::from_bytes(list.to_string().as_bytes()).unwrap();
            let pod = format!("snbench-pod-{}-{r}-{len}", std::process::id());
            assert!(sh("ip", &["netns", "add", &pod]).status.success());
            let rtm = sandnet_cni::Runtime::new(
                format!("benchcni-{r}-{len}"),
                PathBuf::from(format!("/run/netns/{pod}")),
                "eth0".to_string(),
            )
            .with_arg("IgnoreUnknown", "1");
            let t = Instant::now();
            let add = rt.block_on(cfg.add(&list, &rtm));
            let add_ms = t.elapsed().as_secs_f64() * 1e3;
            let t = Instant::now();
            let del = rt.block_on(cfg.del(&list, &rtm));
            let del_ms = t.elapsed().as_secs_f64() * 1e3;
            let _ = sh("ip", &["netns", "del", &pod]);
            add.expect("CNI ADD");
            del.expect("CNI DEL");
            per_len[len - 1].0.push(add_ms);
            per_len[len - 1].1.push(del_ms);
        }
    }
    let meds: Vec<(f64, f64)> = per_len
        .into_iter()
        .map(|(a, d)| (median(a), median(d)))
        .collect();
    chain
        .iter()
        .enumerate()
        .map(|(i, (name, _))| {
            let (pa, pd) = if i == 0 { (0.0, 0.0) } else { meds[i - 1] };
            (name.to_string(), meds[i].0 - pa, meds[i].1 - pd)
        })
        .collect()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list; there is nothing to list.
    }
    let rounds: usize = std::env::var("SANDNET_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .max(1);
    let parallel: usize = std::env::var("SANDNET_BENCH_PARALLEL")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
        .max(1);
    let mut b = Bench::new();
    // A warm-up run builds (or checks) the cached initramfs, and settles the accelerator,
    // outside the figures.
    round(&mut b, 1, &mut Samples::default(), &mut Samples::default());
    println!(
        "sandnet run/rm, host side by step; median of {rounds} rounds; ms; \
         the parallel column is the median over all sandboxes of all rounds"
    );
    println!("accelerator (as run reported): {}", accels());

    let (mut run1, mut rm1) = (Samples::default(), Samples::default());
    for _ in 0..rounds {
        round(&mut b, 1, &mut run1, &mut rm1);
    }
    let (mut runp, mut rmp) = (Samples::default(), Samples::default());
    let (mut wall_run, mut wall_rm) = (vec![], vec![]);
    for _ in 0..rounds {
        let (r, m) = round(&mut b, parallel, &mut runp, &mut rmp);
        wall_run.push(r);
        wall_rm.push(m);
    }

    let one = "1 sandbox".to_string();
    let many = format!("{parallel} in parallel");
    println!("{:<32} {:>12} {:>16}", "step", one, many);
    let rows = [
        ("run: netns create", "netns_ms"),
        ("run: CNI ADD (whole chain)", "cni_add_ms"),
        ("run: attach (scan+tap+tc)", "attach_ms"),
        ("run: guest image", "image_ms"),
        ("run: QEMU start (to QMP)", "qemu_ms"),
        ("run: guest boot (to agent)", "boot_ms"),
        ("run: agent (configure net)", "agent_ms"),
        ("run: supervisor total", "total_ms"),
        ("run: end to end (process)", "wall_ms"),
    ];
    for (name, k) in rows {
        println!("{:<32} {:>12.0} {:>16.0}", name, run1.med(k), runp.med(k));
    }
    let rows = [
        ("rm: stop QEMU", "qemu_stop_ms"),
        ("rm: detach", "detach_ms"),
        ("rm: CNI DEL (whole chain)", "cni_del_ms"),
        ("rm: netns delete", "netns_ms"),
        ("rm: total", "total_ms"),
        ("rm: end to end (process)", "wall_ms"),
    ];
    for (name, k) in rows {
        println!("{:<32} {:>12.0} {:>16.0}", name, rm1.med(k), rmp.med(k));
    }
    println!(
        "{:<32} {:>12} {:>16.0}",
        "batch wall: all runs",
        "",
        median(wall_run)
    );
    println!(
        "{:<32} {:>12} {:>16.0}",
        "batch wall: all rms",
        "",
        median(wall_rm)
    );

    // Cheap (no VM): more rounds, so the differences are not noise.
    let cni_rounds = (rounds * 3).max(9);
    println!();
    println!("CNI per plugin (chain cut after each; median of {cni_rounds} rounds; ms)");
    println!("{:<24} {:>8} {:>8}", "plugin", "ADD", "DEL");
    for (name, add, del) in cni_per_plugin(&b, cni_rounds) {
        println!("{name:<24} {add:>8.1} {del:>8.1}");
    }
    println!("accelerator of every run (as run reported): {}", accels());
}
