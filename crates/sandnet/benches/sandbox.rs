//! From `sandnet run` to the guest network configured, for sandboxes with 1 and 8 NICs
//! (veths in one pod netns), split the way `run --json` reports it: `boot_ms` (QEMU start
//! until the guest agent answers), `attach_ms` (host side: scan, taps, filters),
//! `agent_ms` (the agent calls: interfaces, routes, neighbours, CreateSandbox), their sum
//! `network_ms`, and `total_ms`. Then the agent's own time to apply the same configuration,
//! measured directly: the same static agent binary serving on a unix socket in a plain
//! netns (no VM, no TCG), driven with the same calls.
//!
//! Run: `cargo bench -p sandnet --bench sandbox` (as root; needs `scripts/build-agent`
//! and the guest kernel). Options through the environment: `SANDNET_BENCH_SIZES=1,8`,
//! `SANDNET_BENCH_ROUNDS=3`. Target (issue 3): network part under 50 ms for 8 NICs.

use sandnet_agent_proto::AgentClient;
use sandnet_model::{Family, Interface, LinkKind, NetworkConfig, Route, RouteScope, IFF_UP};
use sandnet_testkit::{run, unique, TestNs};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TARGET_MS: u64 = 50;

/// Every accelerator `run --json` reported, with its reason (never a guess from /dev/kvm).
static ACCELS: std::sync::Mutex<std::collections::BTreeSet<String>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());
const KEYS: [&str; 5] = ["boot_ms", "attach_ms", "agent_ms", "network_ms", "total_ms"];

fn median<T: Ord + Copy>(mut v: Vec<T>) -> T {
    v.sort();
    v[v.len() / 2]
}

/// The pod address of NIC `i` and its host-side peer's.
fn addrs(i: usize) -> (String, String) {
    (
        format!("10.{}.0.2/24", 100 + i),
        format!("10.{}.0.1/24", 100 + i),
    )
}

/// A pod namespace with `n` veths `eth0…` (addresses, up, a default route via the first
/// peer and a route with an MTU via the last), peers in `host`.
fn build_pod(n: usize) -> (TestNs, TestNs) {
    let host = TestNs::new("sbench-h");
    let pod = TestNs::new("sbench-p");
    let mut batch = String::new();
    let mut hbatch = String::new();
    for i in 0..n {
        let (p, h) = addrs(i);
        batch += &format!(
            "link add eth{i} type veth peer name hv{i} netns {}\n\
             addr add {p} dev eth{i}\nlink set eth{i} up\n",
            host.name
        );
        hbatch += &format!("addr add {h} dev hv{i}\nlink set hv{i} up\n");
    }
    batch += "route add default via 10.100.0.1\n";
    batch += &format!(
        "route add 10.99.0.0/16 via 10.{}.0.1 mtu 1400\n",
        100 + n - 1
    );
    ip_batch(&pod, &batch);
    ip_batch(&host, &hbatch);
    (host, pod)
}

fn ip_batch(ns: &TestNs, batch: &str) {
    let f = std::env::temp_dir().join(unique("sbench-batch"));
    std::fs::File::create(&f)
        .and_then(|mut w| w.write_all(batch.as_bytes()))
        .expect("batch file");
    ns.ip(&["-batch", f.to_str().expect("path")]);
    let _ = std::fs::remove_file(f);
}

fn try_sandnet(state: &Path, config: &Path, args: &[&str]) -> Result<Value, String> {
    let o = Command::new(env!("CARGO_BIN_EXE_sandnet"))
        .args(args)
        .env("SANDNET_STATE_DIR", state)
        .env("SANDNET_CONFIG", config)
        .output()
        .expect("run sandnet");
    if !o.status.success() {
        return Err(format!(
            "sandnet {args:?}: {}",
            String::from_utf8_lossy(&o.stderr).trim_end()
        ));
    }
    Ok(serde_json::from_slice(&o.stdout).unwrap_or(Value::Null))
}

fn sandnet(state: &Path, config: &Path, args: &[&str]) -> Value {
    try_sandnet(state, config, args).unwrap_or_else(|e| panic!("{e}"))
}

/// One `run` of a sandbox on `pod`: run's timings and its wall time; removed afterwards.
fn one_run(state: &Path, config: &Path, pod: &TestNs) -> BTreeMap<String, u64> {
    // A failed run is reported and retried (twice at most) rather than ending the bench.
    let mut tries = 0;
    let (id, out, wall) = loop {
        let id = unique("sbench");
        let t = Instant::now();
        let args = ["run", "--json", "--name", &id, "--netns", &pod.name];
        match try_sandnet(state, config, &args) {
            Ok(out) => break (id, out, t.elapsed().as_millis() as u64),
            Err(e) if tries < 2 => {
                tries += 1;
                eprintln!("run failed, retrying: {e}");
                let _ = try_sandnet(state, config, &["rm", "--force", &id]);
            }
            Err(e) => panic!("{e}"),
        }
    };
    let why = out["accel_reason"].as_str().unwrap_or("");
    let why = why
        .trim_end_matches(" (remembered for this boot)")
        .trim_end_matches("; using TCG");
    if let Ok(mut s) = ACCELS.lock() {
        s.insert(format!("{} ({why})", out["accel"].as_str().unwrap_or("?")));
    }
    let (first, guest) = guest_apply_ms(&state.join(&id).join("console.log"));
    sandnet(state, config, &["rm", &id]);
    let mut m: BTreeMap<String, u64> = KEYS
        .iter()
        .map(|k| {
            let v = out["timings"][k]
                .as_u64()
                .unwrap_or_else(|| panic!("timings.{k} in {out}"));
            (k.to_string(), v)
        })
        .collect();
    m.insert("wall_ms".into(), wall);
    m.insert("guest_ms".into(), guest);
    m.insert("first_if_ms".into(), first);
    m
}

/// The agent's own time for the configuration calls, from its log on the guest console
/// (`ok method="UpdateInterface" ms=…`, measured inside the agent around each call):
/// (the first UpdateInterface, the sum over every configuration call), in ms.
fn guest_apply_ms(console: &Path) -> (u64, u64) {
    let log = std::fs::read_to_string(console).unwrap_or_default();
    let mut first = None;
    let mut sum = 0.0;
    for l in log.lines() {
        let Some(m) = [
            "UpdateInterface",
            "UpdateRoutes",
            "AddARPNeighbors",
            "CreateSandbox",
        ]
        .into_iter()
        .find(|m| l.contains(&format!("method=\"{m}\""))) else {
            continue;
        };
        let Some(ms) = l
            .rsplit_once(" ms=")
            .and_then(|(_, v)| v.trim().parse::<f64>().ok())
        else {
            continue;
        };
        if m == "UpdateInterface" && first.is_none() {
            first = Some(ms);
        }
        sum += ms;
    }
    assert!(sum > 0.0, "no agent call times in {}", console.display());
    (first.unwrap_or(0.0).round() as u64, sum.round() as u64)
}

/// The static agent next to the build (as sandnet finds it), or `$SANDNET_AGENT`.
fn agent_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SANDNET_AGENT") {
        return p.into();
    }
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_sandnet"));
    let target = exe.parent().and_then(Path::parent).expect("target dir");
    target.join("x86_64-unknown-linux-gnu/release/sandnet-agent")
}

/// What `run` asks the agent for on a pod from [`build_pod`]: every NIC (named `eth<i>`,
/// with the MAC of `ns`'s link `<prefix><i>`), MTU and address, the pod's routes.
fn wanted(ns: &TestNs, prefix: &str, n: usize) -> NetworkConfig {
    let interfaces = (0..n)
        .map(|i| {
            let name = format!("eth{i}");
            let mac = ns.link(&format!("{prefix}{i}")).expect("link")["address"]
                .as_str()
                .expect("mac")
                .parse()
                .expect("mac");
            Interface {
                name,
                kind: LinkKind::Veth,
                mac: Some(mac),
                mtu: 1500,
                addresses: vec![addrs(i).0.parse().expect("addr")],
                flags: IFF_UP,
            }
        })
        .collect();
    let route = |dest: &str, gw: &str, dev: String, mtu| Route {
        dest: dest.parse().expect("dest"),
        gateway: Some(gw.parse().expect("gw")),
        device: dev,
        source: None,
        scope: RouteScope::Universe,
        family: Family::V4,
        mtu,
        flags: 0,
    };
    NetworkConfig {
        interfaces,
        routes: vec![
            route("0.0.0.0/0", "10.100.0.1", "eth0".into(), None),
            route(
                "10.99.0.0/16",
                &format!("10.{}.0.1", 100 + n - 1),
                format!("eth{}", n - 1),
                Some(1400),
            ),
        ],
        neighbors: vec![],
        dns: Some(Default::default()),
    }
}

/// A directory removed on drop (also when the bench panics).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Agent {
    child: Child,
    dir: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The agent applying the configuration of `n` NICs in a plain netns, over its unix
/// socket, timed per call kind: (interfaces, routes, CreateSandbox, whole).
fn agent_direct(n: usize, rt: &tokio::runtime::Runtime) -> [Duration; 4] {
    // Veths named like a fresh guest's NICs, without addresses; the agent finds them by
    // MAC, renames them and configures them as in the guest.
    let ns = TestNs::new("sbench-a");
    let peer = TestNs::new("sbench-ap");
    let mut batch = String::new();
    for i in 0..n {
        batch += &format!(
            "link add ens{i} type veth peer name p{i} netns {}\n",
            peer.name
        );
    }
    ip_batch(&ns, &batch);
    let want = wanted(&ns, "ens", n);
    let dir = std::env::temp_dir().join(unique("sbench-agent"));
    std::fs::create_dir_all(dir.join("etc")).expect("agent root");
    let sock = dir.join("agent.sock");
    let child = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(agent_binary())
        .arg("--listen")
        .arg(format!("unix:{}", sock.display()))
        .arg("--root")
        .arg(&dir)
        .arg("--log")
        .arg("warn")
        .stdin(Stdio::null())
        .spawn()
        .expect("start the agent");
    let agent = Agent { child, dir };
    let r = rt.block_on(async {
        let c = AgentClient::connect(&sock, Duration::from_secs(10))
            .await
            .expect("connect to the agent");
        c.health_check().await.expect("health");
        let t0 = Instant::now();
        for i in &want.interfaces {
            c.update_interface(i).await.expect("UpdateInterface");
        }
        let ti = t0.elapsed();
        let t = Instant::now();
        c.update_routes(&want.routes).await.expect("UpdateRoutes");
        let tr = t.elapsed();
        let t = Instant::now();
        c.create_sandbox("sbench", &want.dns.clone().unwrap_or_default())
            .await
            .expect("CreateSandbox");
        [ti, tr, t.elapsed(), t0.elapsed()]
    });
    // Really applied.
    let routes = run("ip", &["-n", &ns.name, "route", "show"]);
    assert!(routes.contains("10.99.0.0/16"), "routes: {routes}");
    drop(agent);
    r
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list; there is nothing to list.
    }
    let sizes: Vec<usize> = std::env::var("SANDNET_BENCH_SIZES")
        .unwrap_or_else(|_| "1,8".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .filter(|&n| n > 0)
        .collect();
    let rounds: usize = std::env::var("SANDNET_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&r| r > 0)
        .unwrap_or(3);
    let state_dir = TempDir(std::env::temp_dir().join(unique("sbench-state")));
    let state = state_dir.0.clone();
    std::fs::create_dir_all(&state).expect("state dir");
    let config = state.join("empty.toml");
    std::fs::write(&config, "").expect("config");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    println!("sandnet run → guest network configured, median of {rounds} rounds (ms)");
    println!("  run's timings: boot, total (in the supervisor), wall (the `sandnet run` command),");
    println!("  attach (host side), agent (the calls as the host waits), network = attach + agent");
    println!("  in guest: the agent's own time for those calls (its log), 1st = the first UpdateInterface");
    println!("  native: the same agent and calls in a plain netns (no VM): interfaces, routes, CreateSandbox, all");
    println!(
        "{:>4} | {:>6} {:>6} {:>6} | {:>6} {:>6} {:>7} {:>6} | {:>8} {:>5} | {:>6} {:>6} {:>6} {:>6}",
        "NICs", "boot", "total", "wall", "attach", "agent", "network", "target",
        "in guest", "1st", "ifaces", "routes", "sbox", "all"
    );
    let mut verdicts = vec![];
    for &n in &sizes {
        let (_host, pod) = build_pod(n);
        let runs: Vec<BTreeMap<String, u64>> = (0..rounds)
            .map(|_| one_run(&state, &config, &pod))
            .collect();
        let med = |k: &str| median(runs.iter().map(|m| m[k]).collect());
        let direct: Vec<[Duration; 4]> = (0..rounds).map(|_| agent_direct(n, &rt)).collect();
        let dmed = |j: usize| median(direct.iter().map(|d| d[j]).collect()).as_secs_f64() * 1e3;
        let ok = med("network_ms") < TARGET_MS;
        println!(
            "{:>4} | {:>6} {:>6} {:>6} | {:>6} {:>6} {:>7} {:>6} | {:>8} {:>5} | {:>6.1} {:>6.1} {:>6.1} {:>6.1}",
            n,
            med("boot_ms"),
            med("total_ms"),
            med("wall_ms"),
            med("attach_ms"),
            med("agent_ms"),
            med("network_ms"),
            if ok { "met" } else { "MISSED" },
            med("guest_ms"),
            med("first_if_ms"),
            dmed(0),
            dmed(1),
            dmed(2),
            dmed(3),
        );
        if n == 8 {
            verdicts.push(format!(
                "8 NICs: network {} ms (attach {} + agent {}) vs target {TARGET_MS} ms: {}; \
                 the agent's own work is {} ms in the guest, {:.1} ms natively",
                med("network_ms"),
                med("attach_ms"),
                med("agent_ms"),
                if ok { "met" } else { "missed" },
                med("guest_ms"),
                dmed(3),
            ));
        }
    }
    for v in verdicts {
        println!("{v}");
    }
    if let Ok(a) = ACCELS.lock() {
        let a: Vec<String> = a.iter().cloned().collect();
        println!("accelerator (as run reported): {}", a.join("; "));
    }
    drop(state_dir);
}
