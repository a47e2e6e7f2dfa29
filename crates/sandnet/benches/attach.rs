//! Attach/detach cost: the whole `sandnet attach` / `sandnet detach` process against scripts
//! doing exactly the same kernel work, in the same run, on the same namespaces, paired
//! round by round:
//!
//! - `batch`, the strongest script: one `ip -batch` plus one `tc -batch` for all endpoints
//!   (two processes in all, like sandnet's one);
//! - `shell`: one `ip`/`tc` command per step (a bash script, ~6 processes per endpoint).
//!
//! Same work means the same objects as sandnet's tcfilter model leaves: per endpoint a
//! persistent `vnet_hdr` tap with the link's MTU, sandnet's alias and link group, up; an
//! ingress qdisc on the link and on the tap; a u32 match-all filter each way whose mirred
//! action carries sandnet's cookie. The first round of each size checks that both left
//! that. Detach: sandnet's against `tc qdisc del` per link plus one `ip link del group`.
//!
//! sandnet runs twice per round: without the guard (`--guest-spoofing allow`, the same
//! work as the scripts) and with it (`block`, the default: the pod link's HTB root qdisc,
//! its classes and the anti-spoofing rules, see `sandnet_host::guard`); `g/sn` is the
//! guard's cost as the ratio of the two.
//!
//! Per round the ratio sandnet/baseline is taken (below 1 = sandnet faster); the median of
//! the rounds' ratios is printed, with the medians of the times and where sandnet's attach
//! spent its time (from `attach --json`'s `timings`).
//!
//! Run: `cargo bench -p sandnet --bench attach` (as root). Options through the
//! environment: `SANDNET_BENCH_SIZES=1,16,64`, `SANDNET_BENCH_ROUNDS=7`.

use sandnet_testkit::{run, TestNs};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// sandnet's link group (`sandnet_host::interwork::LINK_GROUP`) and marks.
const GROUP: u32 = 0x736e_6574;
const ALIAS: &str = "sandnet:tcfilter:bench";
const COOKIE_HEX: &str = "73616e646e65742f7631"; // "sandnet/v1"

fn median<T: PartialOrd + Copy>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `CLOCK_MONOTONIC` in nanoseconds, the clock `attach --json` reports its start in.
fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always there");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// A pod namespace with `n` veths (`bv0…`), each with an address and its peer in `host`.
fn build(n: usize) -> (TestNs, TestNs) {
    let host = TestNs::new("bench-h");
    let pod = TestNs::new("bench-p");
    let mut batch = String::new();
    for i in 0..n {
        batch += &format!(
            "link add bv{i} type veth peer name bh{i} netns {}\n\
             addr add 10.{}.{}.2/24 dev bv{i}\n\
             link set bv{i} up\n",
            host.name,
            100 + i / 250,
            i % 250
        );
    }
    let f = write_temp("batch", &batch);
    pod.ip(&["-batch", f.to_str().unwrap()]);
    let _ = std::fs::remove_file(f);
    (host, pod)
}

fn write_temp(tag: &str, body: &str) -> PathBuf {
    let p = std::env::temp_dir().join(sandnet_testkit::unique(tag));
    let mut f = std::fs::File::create(&p).unwrap();
    f.write_all(body.as_bytes()).unwrap();
    p
}

/// The `ip` lines of one endpoint's attach (tap `t` next to link `bv{i}`).
fn ip_attach_lines(t: &str) -> String {
    format!(
        "tuntap add dev {t} mode tap vnet_hdr\n\
         link set dev {t} mtu 1500 alias {ALIAS} group {GROUP:#x} up\n"
    )
}

/// The `tc` lines of one endpoint's attach.
fn tc_attach_lines(i: usize, t: &str) -> String {
    let redirect = |from: &str, to: &str| {
        format!(
            "filter add dev {from} parent ffff: protocol all u32 match u8 0 0 \
             action mirred egress redirect dev {to} cookie {COOKIE_HEX}\n"
        )
    };
    format!("qdisc add dev bv{i} ingress\nqdisc add dev {t} ingress\n")
        + &redirect(&format!("bv{i}"), t)
        + &redirect(t, &format!("bv{i}"))
}

fn shell_attach_script(ns: &str, n: usize) -> String {
    let mut s = String::from("set -e\n");
    for i in 0..n {
        let t = format!("shtap{i}");
        for l in ip_attach_lines(&t).lines() {
            s += &format!("ip -n {ns} {l}\n");
        }
        for l in tc_attach_lines(i, &t).lines() {
            s += &format!("tc -n {ns} {l}\n");
        }
    }
    s
}

fn shell_detach_script(ns: &str, n: usize) -> String {
    let mut s = String::from("set -e\n");
    for i in 0..n {
        s += &format!(
            "tc -n {ns} qdisc del dev bv{i} ingress\n\
             ip -n {ns} link del shtap{i}\n"
        );
    }
    s
}

/// The attach as two batch files: (`ip -batch`, `tc -batch`).
fn batch_attach(n: usize) -> (String, String) {
    let (mut ip, mut tc) = (String::new(), String::new());
    for i in 0..n {
        let t = format!("bttap{i}");
        ip += &ip_attach_lines(&t);
        tc += &tc_attach_lines(i, &t);
    }
    (ip, tc)
}

/// The detach as two batch files: (`tc -batch`, `ip -batch`), run in that order.
fn batch_detach(n: usize) -> (String, String) {
    let tc: String = (0..n)
        .map(|i| format!("qdisc del dev bv{i} ingress\n"))
        .collect();
    (tc, format!("link del group {GROUP:#x}\n"))
}

/// Runs the commands one after the other (each must succeed); their total time.
fn time_cmds(cmds: &mut [Command]) -> Duration {
    cmds.iter_mut().map(|c| time_cmd(c).0).sum()
}

fn time_cmd(cmd: &mut Command) -> (Duration, Vec<u8>) {
    let t = Instant::now();
    let o = cmd.output().unwrap();
    let d = t.elapsed();
    assert!(
        o.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    (d, o.stdout)
}

fn sandnet(state: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sandnet"));
    c.args(args).env("SANDNET_STATE_DIR", state);
    c
}

/// The phases of sandnet's attach, in the order they happen (ms): `start` is exec until
/// the attach command runs (loading, argument parsing, tokio), `exit` the rest of the wall
/// time after it (output, exit, the parent's wait).
const PHASES: [&str; 10] = [
    "start",
    "open",
    "netlink",
    "scan",
    "checks",
    "plan",
    "plan_write",
    "connect",
    "finish",
    "exit",
];

/// Times one `sandnet attach --json` with the guard (`block`) or without (`allow`) and
/// splits it into [`PHASES`].
fn sandnet_attach(state: &Path, ns: &str, spoofing: &str) -> (Duration, Vec<f64>) {
    let spawned = monotonic_ns();
    let (d, out) = time_cmd(&mut sandnet(
        state,
        &[
            "attach",
            "--netns",
            ns,
            "--json",
            "--guest-spoofing",
            spoofing,
        ],
    ));
    let v: serde_json::Value = serde_json::from_slice(&out).expect("attach --json");
    let t = &v["timings"];
    let us = |k: &str| t[k].as_u64().unwrap_or(0) as f64 / 1e3;
    let start = (t["start_monotonic_ns"].as_u64().unwrap_or(spawned) - spawned) as f64 / 1e6;
    let mut split = vec![start];
    split.extend(PHASES[1..9].iter().map(|p| us(&format!("{p}_us"))));
    let inside = start + us("total_us");
    split.push(ms(d) - inside);
    (d, split)
}

/// What the attach left, for checking that sandnet and a script did the same: per tap its
/// kind, flags and marks, then the ingress qdiscs and the marked redirect filters.
fn snapshot(ns: &TestNs, n: usize) -> Vec<String> {
    let mut out = vec![];
    for l in ns
        .ip_json(&["link", "show", "group", &GROUP.to_string()])
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        // `ip -j` prints an empty object for each link the group filter drops.
        if l["ifname"].is_null() {
            continue;
        }
        let flags: Vec<String> = l["flags"]
            .as_array()
            .map(|f| {
                f.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let tun = &l["linkinfo"]["info_data"];
        out.push(format!(
            "{} pi {} vnet_hdr {} multi_queue {} persist {} mtu {} up {} alias-sandnet {}",
            tun["type"],
            tun["pi"],
            tun["vnet_hdr"],
            tun["multi_queue"],
            tun["persist"],
            l["mtu"],
            flags.iter().any(|f| f == "UP"),
            l["ifalias"].as_str().unwrap_or("").starts_with("sandnet:")
        ));
    }
    let qdiscs = run("tc", &["-n", &ns.name, "qdisc", "show"]);
    out.push(format!(
        "ingress qdiscs {}",
        qdiscs.lines().filter(|l| l.contains("ingress")).count()
    ));
    let shows: String = (0..n)
        .map(|i| format!("filter show dev bv{i} ingress\n"))
        .collect::<String>()
        + &ns
            .link_names()
            .iter()
            .filter(|l| !l.starts_with("bv") && *l != "lo")
            .map(|l| format!("filter show dev {l} ingress\n"))
            .collect::<String>();
    let f = write_temp("tc-show", &shows);
    let filters = run("tc", &["-n", &ns.name, "-batch", f.to_str().unwrap()]);
    let _ = std::fs::remove_file(f);
    out.push(format!(
        "redirects with sandnet's cookie {}",
        filters
            .lines()
            .filter(|l| l.trim() == format!("cookie {COOKIE_HEX}"))
            .count()
    ));
    out.sort();
    out
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list; there is nothing to list.
    }
    let sizes: Vec<usize> = std::env::var("SANDNET_BENCH_SIZES")
        .unwrap_or_else(|_| "1,16,64".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let rounds: usize = std::env::var("SANDNET_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7)
        .max(1);
    let state = std::env::temp_dir().join(sandnet_testkit::unique("bench-state"));
    println!(
        "attach/detach of N veths in one netns: whole processes, {rounds} rounds, medians (ms)"
    );
    println!("  batch = one `ip -batch` + one `tc -batch`; shell = one ip/tc command per step");
    println!(
        "  ratio = median over rounds of sandnet/baseline in that round (below 1 = sandnet faster)"
    );
    println!("  sn = sandnet without the guard; sn+g = with it (the default); g/sn = their ratio");
    println!(
        "{:>4} | {:>8} {:>8} {:>7} {:>8} {:>8} {:>7} {:>7} | {:>8} {:>8} {:>8} {:>7} {:>7}",
        "N",
        "sn att",
        "sn+g",
        "g/sn",
        "batch",
        "shell",
        "sn/bt",
        "sn/sh",
        "sn det",
        "batch",
        "shell",
        "sn/bt",
        "sn/sh"
    );
    let mut splits = vec![];
    for &n in &sizes {
        let (_host, pod) = build(n);
        let ns = pod.name.clone();
        let att_sh = write_temp("sh-att", &shell_attach_script(&ns, n));
        let det_sh = write_temp("sh-det", &shell_detach_script(&ns, n));
        let (ip_att, tc_att) = batch_attach(n);
        let (tc_det, ip_det) = batch_detach(n);
        let files = [
            write_temp("bt-ip-att", &ip_att),
            write_temp("bt-tc-att", &tc_att),
            write_temp("bt-tc-det", &tc_det),
            write_temp("bt-ip-det", &ip_det),
        ];
        let batch = |tool: &str, f: &Path| {
            let mut c = Command::new(tool);
            c.args(["-n", &ns, "-batch"]).arg(f);
            c
        };
        // sandnet, batch, shell, sandnet with the guard (ms)
        let mut att: [Vec<f64>; 4] = Default::default();
        let mut det: [Vec<f64>; 4] = Default::default();
        let mut split_rounds: Vec<Vec<f64>> = vec![];
        for round in 0..rounds {
            // Alternate who goes first, so that neither always runs on a warmer kernel.
            let order: [usize; 4] = if round % 2 == 0 {
                [0, 3, 1, 2]
            } else {
                [3, 1, 0, 2]
            };
            for who in order {
                let (a, d) = match who {
                    3 => {
                        let (a, _) = sandnet_attach(&state, &ns, "block");
                        if round == 0 {
                            guard_check(&pod, n);
                        }
                        let d = time_cmd(&mut sandnet(&state, &["detach", "--netns", &ns])).0;
                        (a, d)
                    }
                    0 => {
                        let (a, split) = sandnet_attach(&state, &ns, "allow");
                        if round == 0 {
                            snapshot_check(&pod, n, "sandnet");
                        }
                        split_rounds.push(split);
                        let d = time_cmd(&mut sandnet(&state, &["detach", "--netns", &ns])).0;
                        (a, d)
                    }
                    1 => {
                        let a = time_cmds(&mut [batch("ip", &files[0]), batch("tc", &files[1])]);
                        if round == 0 {
                            snapshot_check(&pod, n, "batch");
                        }
                        let d = time_cmds(&mut [batch("tc", &files[2]), batch("ip", &files[3])]);
                        (a, d)
                    }
                    _ => {
                        let a = time_cmd(Command::new("bash").arg(&att_sh)).0;
                        let d = time_cmd(Command::new("bash").arg(&det_sh)).0;
                        (a, d)
                    }
                };
                att[who].push(ms(a));
                det[who].push(ms(d));
            }
        }
        let links_left = run("ip", &["-n", &ns, "-o", "link", "show"])
            .lines()
            .count();
        assert_eq!(links_left, 1 + n, "everything removed after the rounds");
        let ratio = |v: &[Vec<f64>; 4], b: usize| {
            median(
                v[0].iter()
                    .zip(&v[b])
                    .map(|(s, x)| s / x)
                    .collect::<Vec<_>>(),
            )
        };
        let med = |v: &Vec<f64>| median(v.clone());
        let guard_ratio = median(
            att[3]
                .iter()
                .zip(&att[0])
                .map(|(g, s)| g / s)
                .collect::<Vec<_>>(),
        );
        println!(
            "{:>4} | {:>8.2} {:>8.2} {:>6.2}x {:>8.2} {:>8.1} {:>6.2}x {:>6.3}x | {:>8.2} {:>8.2} {:>8.1} {:>6.2}x {:>6.3}x",
            n,
            med(&att[0]),
            med(&att[3]),
            guard_ratio,
            med(&att[1]),
            med(&att[2]),
            ratio(&att, 1),
            ratio(&att, 2),
            med(&det[0]),
            med(&det[1]),
            med(&det[2]),
            ratio(&det, 1),
            ratio(&det, 2),
        );
        let split: Vec<f64> = (0..PHASES.len())
            .map(|k| median(split_rounds.iter().map(|s| s[k]).collect()))
            .collect();
        splits.push((n, split));
        for f in [att_sh, det_sh].into_iter().chain(files) {
            let _ = std::fs::remove_file(f);
        }
    }
    println!("where sandnet attach's time goes (medians, ms):");
    println!(
        "{:>4} | {}",
        "N",
        PHASES.map(|p| format!("{p:>10}")).join(" ")
    );
    for (n, s) in splits {
        let cols: Vec<String> = s.iter().map(|x| format!("{x:>10.2}")).collect();
        println!("{n:>4} | {}", cols.join(" "));
    }
    let _ = std::fs::remove_dir_all(&state);
}

/// Checks, on the first round, that the guarded attach put sandnet's HTB on every link.
fn guard_check(pod: &TestNs, n: usize) {
    let qdiscs = run("tc", &["-n", &pod.name, "qdisc", "show"]);
    let htb = qdiscs
        .lines()
        .filter(|l| l.starts_with("qdisc htb 5a4e: ") && l.contains(" root "))
        .count();
    assert_eq!(htb, n, "the guard on every link:\n{qdiscs}");
}

/// Checks, on the first round, that sandnet and the batch script left the same objects.
fn snapshot_check(pod: &TestNs, n: usize, who: &str) {
    let got = snapshot(pod, n);
    let want = expected(n);
    assert_eq!(got, want, "{who} left other objects than expected");
}

/// What an attach of `n` endpoints leaves (see [`snapshot`]).
fn expected(n: usize) -> Vec<String> {
    let tap = r#""tap" pi false vnet_hdr true multi_queue false persist true mtu 1500 up true alias-sandnet true"#;
    let mut v: Vec<String> = (0..n).map(|_| tap.to_string()).collect();
    v.push(format!("ingress qdiscs {}", 2 * n));
    v.push(format!("redirects with sandnet's cookie {}", 2 * n));
    v.sort();
    v
}
