//! Attach/detach cost per endpoint: the `sandnet` process against the same work done the
//! way shell-based tools do it, measured in the same run on the same namespaces, two ways:
//! one command per step (`ip tuntap` + `tc qdisc` + `tc filter` per endpoint, a bash script:
//! ~6 processes per endpoint), and the stronger baseline of one `ip -batch` and one
//! `tc -batch` for all endpoints (two processes in all, like sandnet's one).
//!
//! Run: `cargo bench -p sandnet --bench attach` (as root). Options through the
//! environment: `SANDNET_BENCH_SIZES=1,16,64`, `SANDNET_BENCH_ROUNDS=7`.

use sandnet_testkit::{run, TestNs};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
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

fn shell_attach_script(ns: &str, n: usize) -> String {
    let mut s = String::from("set -e\n");
    for i in 0..n {
        s += &format!(
            "ip -n {ns} tuntap add dev shtap{i} mode tap vnet_hdr\n\
             ip -n {ns} link set dev shtap{i} mtu 1500 up\n\
             tc -n {ns} qdisc add dev bv{i} ingress\n\
             tc -n {ns} qdisc add dev shtap{i} ingress\n\
             tc -n {ns} filter add dev bv{i} parent ffff: protocol all u32 match u8 0 0 action mirred egress redirect dev shtap{i}\n\
             tc -n {ns} filter add dev shtap{i} parent ffff: protocol all u32 match u8 0 0 action mirred egress redirect dev bv{i}\n"
        );
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

/// The same attach as [`shell_attach_script`] as two batch files: (`ip -batch`, `tc -batch`).
fn batch_attach(n: usize) -> (String, String) {
    let (mut ip, mut tc) = (String::new(), String::new());
    for i in 0..n {
        ip += &format!(
            "tuntap add dev bttap{i} mode tap vnet_hdr\n\
             link set dev bttap{i} mtu 1500 up\n"
        );
        tc += &format!(
            "qdisc add dev bv{i} ingress\n\
             qdisc add dev bttap{i} ingress\n\
             filter add dev bv{i} parent ffff: protocol all u32 match u8 0 0 action mirred egress redirect dev bttap{i}\n\
             filter add dev bttap{i} parent ffff: protocol all u32 match u8 0 0 action mirred egress redirect dev bv{i}\n"
        );
    }
    (ip, tc)
}

/// The detach as two batch files: (`tc -batch`, `ip -batch`), run in that order.
fn batch_detach(n: usize) -> (String, String) {
    let (mut tc, mut ip) = (String::new(), String::new());
    for i in 0..n {
        tc += &format!("qdisc del dev bv{i} ingress\n");
        ip += &format!("link del bttap{i}\n");
    }
    (tc, ip)
}

/// Runs the commands one after the other (each must succeed); their total time.
fn time_cmds(cmds: &mut [Command]) -> Duration {
    cmds.iter_mut().map(time_cmd).sum()
}

fn time_cmd(cmd: &mut Command) -> Duration {
    let t = Instant::now();
    let o = cmd.output().unwrap();
    let d = t.elapsed();
    assert!(
        o.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    d
}

fn sandnet(state: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sandnet"));
    c.args(args).env("SANDNET_STATE_DIR", state);
    c
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
        .unwrap_or(7);
    let state = std::env::temp_dir().join(sandnet_testkit::unique("bench-state"));
    println!(
        "attach/detach of N veths in one netns, median of {rounds} rounds (ms; per endpoint in brackets)"
    );
    println!(
        "  shell = one ip/tc command per step (bash script); batch = one `ip -batch` + one `tc -batch`"
    );
    println!("  ratio columns: baseline time / sandnet time (above 1 = sandnet faster)");
    println!(
        "{:>4} | {:>16} {:>16} {:>16} | {:>16} {:>16} {:>16} | {:>6} {:>6} {:>6} {:>6}",
        "N",
        "sandnet attach",
        "shell attach",
        "batch attach",
        "sandnet detach",
        "shell detach",
        "batch detach",
        "att/sh",
        "att/bt",
        "det/sh",
        "det/bt"
    );
    let mut per_ep = vec![];
    for &n in &sizes {
        let (_host, pod) = build(n);
        let ns = pod.name.clone();
        let att_sh = write_temp("sh-att", &shell_attach_script(&ns, n));
        let det_sh = write_temp("sh-det", &shell_detach_script(&ns, n));
        let (ip_att, tc_att) = batch_attach(n);
        let (tc_det, ip_det) = batch_detach(n);
        let batch_files = [
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
        let (mut sa, mut sd, mut ha, mut hd) = (vec![], vec![], vec![], vec![]);
        let (mut ba, mut bd) = (vec![], vec![]);
        for _ in 0..rounds {
            sa.push(time_cmd(&mut sandnet(&state, &["attach", "--netns", &ns])));
            sd.push(time_cmd(&mut sandnet(&state, &["detach", "--netns", &ns])));
            ha.push(time_cmd(Command::new("bash").arg(&att_sh)));
            hd.push(time_cmd(Command::new("bash").arg(&det_sh)));
            ba.push(time_cmds(&mut [
                batch("ip", &batch_files[0]),
                batch("tc", &batch_files[1]),
            ]));
            bd.push(time_cmds(&mut [
                batch("tc", &batch_files[2]),
                batch("ip", &batch_files[3]),
            ]));
        }
        let links_left = run("ip", &["-n", &ns, "-o", "link", "show"])
            .lines()
            .count();
        assert_eq!(links_left, 1 + n, "everything removed after the rounds");
        let (sa, sd, ha, hd) = (median(sa), median(sd), median(ha), median(hd));
        let (ba, bd) = (median(ba), median(bd));
        let per = |d: Duration| ms(d) / n as f64;
        println!(
            "{:>4} | {:>7.1} [{:>6.2}] {:>7.1} [{:>6.2}] {:>7.1} [{:>6.2}] | {:>7.1} [{:>6.2}] {:>7.1} [{:>6.2}] {:>7.1} [{:>6.2}] | {:>5.1}x {:>5.1}x {:>5.1}x {:>5.1}x",
            n,
            ms(sa), per(sa), ms(ha), per(ha), ms(ba), per(ba),
            ms(sd), per(sd), ms(hd), per(hd), ms(bd), per(bd),
            ms(ha) / ms(sa),
            ms(ba) / ms(sa),
            ms(hd) / ms(sd),
            ms(bd) / ms(sd)
        );
        per_ep.push((n, per(sa), per(sd)));
        let _ = std::fs::remove_file(att_sh);
        let _ = std::fs::remove_file(det_sh);
        for f in batch_files {
            let _ = std::fs::remove_file(f);
        }
    }
    if let (Some(a), Some(b)) = (
        per_ep.iter().find(|x| x.0 == 16),
        per_ep.iter().find(|x| x.0 == 64),
    ) {
        println!(
            "per-endpoint cost 64 vs 16: attach {:.2}x, detach {:.2}x (1.0 = flat)",
            b.1 / a.1,
            b.2 / a.2
        );
    }
    let _ = std::fs::remove_dir_all(&state);
}
