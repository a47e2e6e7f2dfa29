//! ADD+DEL cost of `sandnet-tap` (the binary, exec'd as a CNI runtime does, with the
//! configuration on stdin) against tc-redirect-tap's approach done as an `ip`/`tc` script
//! (one command per step, as tc-redirect-tap's kernel work): same run, same namespaces,
//! rounds alternating.
//!
//! The script's ADD: `ip tuntap add` (tap), MTU of the link, up, an ingress qdisc on the
//! link and on the tap, a u32 match-all filter with `mirred egress redirect` each way; its
//! DEL: the link's ingress qdisc, then the tap. sandnet-tap does the same objects plus its
//! marks, its record and sandnet's plan (both synced to disk), and the result.
//!
//! Run: `cargo bench -p sandnet-tap --bench addel` (as root); `SANDNET_BENCH_ROUNDS=N`
//! (default 21).

use sandnet_testkit::{run, TempDir, TestNs};
use serde_json::json;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PLUGIN: &str = env!("CARGO_BIN_EXE_sandnet-tap");

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs the plugin once; panics with its output when it fails.
fn plugin(cmd: &str, conf: &str, pod: &TestNs) {
    let mut c = Command::new(PLUGIN)
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", "bench")
        .env("CNI_NETNS", pod.path())
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sandnet-tap");
    c.stdin.take().unwrap().write_all(conf.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "sandnet-tap {cmd}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// tc-redirect-tap's work as a script, one `ip`/`tc` process per step.
fn script(body: &str) {
    run("sh", &["-euc", body]);
}

fn main() {
    let rounds: usize = std::env::var("SANDNET_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(21);
    let host = TestNs::new("tapb-h");
    let pod = TestNs::new("tapb-p");
    let dir = TempDir::new("tapbench");
    pod.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "vh0", "netns", &host.name,
    ]);
    pod.ip(&["addr", "add", "10.99.0.2/24", "dev", "eth0"]);
    pod.ip(&["link", "set", "eth0", "up"]);
    host.ip(&["link", "set", "vh0", "up"]);
    let mac = pod.link("eth0").unwrap()["address"]
        .as_str()
        .unwrap()
        .to_string();
    let conf = json!({"cniVersion": "1.0.0", "name": "bench", "type": "sandnet-tap",
        "stateDir": dir.join("state"),
        "prevResult": {"cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "mac": mac, "sandbox": pod.path()}],
            "ips": [{"address": "10.99.0.2/24", "gateway": "10.99.0.1", "interface": 0}],
            "routes": [{"dst": "0.0.0.0/0"}]}})
    .to_string();
    let ns = &pod.name;
    let add = format!(
        "ip -n {ns} tuntap add dev tap0 mode tap vnet_hdr
         ip -n {ns} link set tap0 mtu 1500
         ip -n {ns} link set tap0 up
         tc -n {ns} qdisc add dev eth0 ingress
         tc -n {ns} qdisc add dev tap0 ingress
         tc -n {ns} filter add dev eth0 parent ffff: protocol all u32 match u8 0 0 \
            action mirred egress redirect dev tap0
         tc -n {ns} filter add dev tap0 parent ffff: protocol all u32 match u8 0 0 \
            action mirred egress redirect dev eth0"
    );
    let del = format!(
        "tc -n {ns} qdisc del dev eth0 ingress
         ip -n {ns} link del tap0"
    );

    // One warm-up of each, checking both leave the same kind of datapath and clean up.
    plugin("ADD", &conf, &pod);
    let tap = pod
        .link_names()
        .into_iter()
        .find(|n| n.starts_with("sntap"))
        .expect("sandnet-tap made a tap");
    assert!(!pod
        .tc_json(&["filter", "show", "dev", &tap, "ingress"])
        .as_array()
        .unwrap()
        .is_empty());
    plugin("DEL", &conf, &pod);
    script(&add);
    assert!(!pod
        .tc_json(&["filter", "show", "dev", "tap0", "ingress"])
        .as_array()
        .unwrap()
        .is_empty());
    script(&del);
    assert_eq!(pod.link_names().len(), 2, "{:?}", pod.link_names());

    let (mut ta, mut td, mut sa, mut sd, mut ratio) = (vec![], vec![], vec![], vec![], vec![]);
    for i in 0..rounds {
        let tap_round = || {
            let t0 = Instant::now();
            plugin("ADD", &conf, &pod);
            let t1 = Instant::now();
            plugin("DEL", &conf, &pod);
            (ms(t1 - t0), ms(t1.elapsed()))
        };
        let script_round = || {
            let t0 = Instant::now();
            script(&add);
            let t1 = Instant::now();
            script(&del);
            (ms(t1 - t0), ms(t1.elapsed()))
        };
        let ((a, d), (b, e)) = if i % 2 == 0 {
            let x = tap_round();
            (x, script_round())
        } else {
            let y = script_round();
            (tap_round(), y)
        };
        ta.push(a);
        td.push(d);
        sa.push(b);
        sd.push(e);
        ratio.push((a + d) / (b + e));
    }
    let (ta, td, sa, sd) = (median(ta), median(td), median(sa), median(sd));
    println!("sandnet-tap vs tc-redirect-tap's work as an ip/tc script, median of {rounds} rounds");
    println!(
        "  sandnet-tap  ADD {ta:7.2} ms  DEL {td:7.2} ms  ADD+DEL {:7.2} ms",
        ta + td
    );
    println!(
        "  ip/tc script ADD {sa:7.2} ms  DEL {sd:7.2} ms  ADD+DEL {:7.2} ms",
        sa + sd
    );
    println!(
        "  ratio sandnet-tap / script (ADD+DEL, median of per-round ratios): {:.2}x",
        median(ratio)
    );
}
