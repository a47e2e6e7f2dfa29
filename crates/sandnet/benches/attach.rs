//! Attach/detach cost per endpoint: the `sandnet` process against the same work done the
//! way shell-based tools do it (`ip tuntap` + `tc qdisc` + `tc filter` per endpoint, as a
//! bash script), measured in the same run on the same namespaces.
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
        "{:>4} | {:>18} {:>18} | {:>18} {:>18} | {:>8} {:>8}",
        "N", "sandnet attach", "shell attach", "sandnet detach", "shell detach", "att x", "det x"
    );
    let mut per_ep = vec![];
    for &n in &sizes {
        let (_host, pod) = build(n);
        let ns = pod.name.clone();
        let att_sh = write_temp("sh-att", &shell_attach_script(&ns, n));
        let det_sh = write_temp("sh-det", &shell_detach_script(&ns, n));
        let (mut sa, mut sd, mut ha, mut hd) = (vec![], vec![], vec![], vec![]);
        for _ in 0..rounds {
            sa.push(time_cmd(&mut sandnet(&state, &["attach", "--netns", &ns])));
            sd.push(time_cmd(&mut sandnet(&state, &["detach", "--netns", &ns])));
            ha.push(time_cmd(Command::new("bash").arg(&att_sh)));
            hd.push(time_cmd(Command::new("bash").arg(&det_sh)));
        }
        let links_left = run("ip", &["-n", &ns, "-o", "link", "show"])
            .lines()
            .count();
        assert_eq!(links_left, 1 + n, "everything removed after the rounds");
        let (sa, sd, ha, hd) = (median(sa), median(sd), median(ha), median(hd));
        let per = |d: Duration| ms(d) / n as f64;
        println!(
            "{:>4} | {:>8.1} [{:>6.2}] {:>8.1} [{:>6.2}] | {:>8.1} [{:>6.2}] {:>8.1} [{:>6.2}] | {:>7.1}x {:>7.1}x",
            n,
            ms(sa), per(sa), ms(ha), per(ha), ms(sd), per(sd), ms(hd), per(hd),
            ms(ha) / ms(sa),
            ms(hd) / ms(sd)
        );
        per_ep.push((n, per(sa), per(sd)));
        let _ = std::fs::remove_file(att_sh);
        let _ = std::fs::remove_file(det_sh);
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
