//! What the guard costs on the datapath, in one run: a sandbox with the guard (sandnet's
//! default, `guest_spoofing = "block"`: the HTB qdisc and u32 rules on the pod link's
//! egress) and one with `--guest-spoofing allow` (nothing on the link), each on a pod of
//! one veth, measured in interleaved rounds (the order alternating):
//!
//! - ping RTT, host side → guest (the median of `SANDNET_BENCH_PINGS` pings, 50 ms apart);
//! - a TCP bulk transfer through the tap each way, busybox `nc` in the guest: host → guest
//!   timed in the guest from the first byte to the end (`/proc/uptime`, 10 ms steps),
//!   guest → host timed on the host the same way.
//!
//! Prints each variant's medians, guard/allow ratios, the guard's own counters afterwards
//! (nothing legitimate dropped) and the accelerator the VMs ran with.
//!
//! Run: `cargo bench -p sandnet --bench datapath` (as root; needs `scripts/build-agent` and
//! the guest kernel). Environment: `SANDNET_BENCH_ROUNDS=5`, `SANDNET_BENCH_PINGS=20`,
//! `SANDNET_BENCH_MIB=32` (per transfer).

#[path = "common/pod.rs"]
mod pod;

use pod::{accel_label, env_list, median, Sandnet};
use sandnet_testkit::{unique, PodPair, TestNs};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const GUEST: &str = "172.19.0.5";
const HOST: &str = "172.19.0.1";

/// One sandbox under test and its measurements.
struct Variant {
    name: &'static str,
    pod: PodPair,
    id: String,
    rtt_us: Vec<u64>,
    to_guest_mbps: Vec<f64>,
    from_guest_mbps: Vec<f64>,
}

fn sandnet(sn: &Sandnet, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sandnet"));
    c.args(args)
        .env("SANDNET_STATE_DIR", &sn.state)
        .env("SANDNET_CONFIG", &sn.config)
        .stdin(Stdio::null());
    c
}

fn ok(o: Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `sh -c script` in the guest, which must succeed; its stdout.
fn guest_sh(sn: &Sandnet, id: &str, script: &str) -> String {
    let o = sandnet(sn, &["exec", id, "--", "sh", "-c", script])
        .output()
        .expect("spawn sandnet exec");
    ok(o, script)
}

/// The RTT of each of `n` pings from the host side to the guest, in µs.
fn pings(host: &TestNs, n: usize) -> Vec<u64> {
    let count = n.to_string();
    let o = Command::new("ip")
        .args([
            "netns", "exec", &host.name, "ping", "-n", "-i", "0.05", "-W", "2",
        ])
        .args(["-c", &count, GUEST])
        .output()
        .expect("ping");
    let text = ok(o, "ping the guest");
    text.lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse::<f64>().ok())
        .map(|ms| (ms * 1000.0).round() as u64)
        .collect()
}

/// Connects from the host side to the guest's `port`, retrying while its `nc` starts.
fn connect(host: &TestNs, port: u16) -> TcpStream {
    let t = Instant::now();
    loop {
        match host.enter(|| TcpStream::connect((GUEST, port))) {
            Ok(s) => return s,
            Err(_) if t.elapsed() < Duration::from_secs(30) => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("connect to the guest's {port}: {e}"),
        }
    }
}

/// Host → guest: `mib` MiB into the guest's `nc -l`; MB/s as the guest timed it.
fn to_guest(sn: &Sandnet, v: &Variant, mib: usize) -> f64 {
    let port = 5001;
    // The first byte is read alone (dd bs=1), so the clock starts when data flows.
    let script = format!(
        "nc -l -p {port} </dev/null | {{ dd bs=1 count=1 of=/dev/null 2>/dev/null; \
         a=$(cut -d' ' -f1 /proc/uptime); n=$(wc -c); b=$(cut -d' ' -f1 /proc/uptime); \
         echo $a $b $n; }}"
    );
    let child = sandnet(sn, &["exec", &v.id, "--", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sandnet exec");
    let mut s = connect(&v.pod.host, port);
    let chunk = vec![0x5au8; 1 << 20];
    for _ in 0..mib {
        s.write_all(&chunk).expect("send to the guest");
    }
    s.shutdown(Shutdown::Write).expect("shutdown");
    let out = ok(
        child.wait_with_output().expect("exec"),
        "nc -l in the guest",
    );
    let f: Vec<f64> = out
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let [a, b, n] = f[..] else {
        panic!("guest's nc: {out:?}")
    };
    assert_eq!(n as usize + 1, mib << 20, "bytes the guest received");
    (n + 1.0) / (b - a).max(0.01) / 1e6
}

/// Guest → host: `mib` MiB from the guest's `nc` to a listener on the host side; MB/s
/// timed on the host from the first byte to the end.
fn from_guest(sn: &Sandnet, v: &Variant, mib: usize) -> f64 {
    let l = v
        .pod
        .host
        .enter(|| TcpListener::bind((HOST, 0)))
        .expect("listen on the host side");
    let port = l.local_addr().expect("port").port();
    let rx = std::thread::spawn(move || {
        let (mut c, _) = l.accept().expect("accept");
        let mut buf = vec![0u8; 1 << 20];
        let mut n = c.read(&mut buf).expect("read");
        let t = Instant::now();
        loop {
            match c.read(&mut buf).expect("read") {
                0 => break,
                k => n += k,
            }
        }
        (n, t.elapsed())
    });
    guest_sh(
        sn,
        &v.id,
        &format!(
            "dd if=/dev/zero bs=65536 count={} 2>/dev/null | nc {HOST} {port}",
            mib * 16
        ),
    );
    let (n, t) = rx.join().expect("receiver");
    assert_eq!(n, mib << 20, "bytes the host received");
    n as f64 / t.as_secs_f64() / 1e6
}

fn medf(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// `tc -s class show` of the pod link (HTB classes print as text only).
fn guard_classes(pod: &TestNs) -> String {
    pod.tc_text(&["-s", "class", "show", "dev", "eth0"])
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rounds = env_list("SANDNET_BENCH_ROUNDS", &[5])[0].max(1);
    let n_pings = env_list("SANDNET_BENCH_PINGS", &[20])[0].max(1);
    let mib = env_list("SANDNET_BENCH_MIB", &[32])[0].max(1);
    let sn = Sandnet::new("");
    let mut accels = BTreeSet::new();
    let mut variants: Vec<Variant> = [("guard", "block"), ("allow", "allow")]
        .into_iter()
        .map(|(name, spoofing)| {
            let pod = PodPair::new(&format!("bdp{name}"));
            let id = unique("bdp");
            let o = sandnet(
                &sn,
                &[
                    "run",
                    "--json",
                    "--name",
                    &id,
                    "--netns",
                    &pod.pod.name,
                    "--guest-spoofing",
                    spoofing,
                ],
            )
            .output()
            .expect("spawn sandnet run");
            let out: serde_json::Value =
                serde_json::from_str(&ok(o, "sandnet run")).expect("run --json");
            accels.insert(accel_label(&out));
            Variant {
                name,
                pod,
                id,
                rtt_us: vec![],
                to_guest_mbps: vec![],
                from_guest_mbps: vec![],
            }
        })
        .collect();
    assert!(
        guard_classes(&variants[0].pod.pod).contains("5a4e:2"),
        "the guarded sandbox has no guard"
    );
    assert!(
        guard_classes(&variants[1].pod.pod).trim().is_empty(),
        "the allowing sandbox has a guard"
    );
    println!(
        "datapath benchmark: {rounds} rounds, {n_pings} pings and {mib} MiB each way per round \
         and sandbox, medians"
    );
    // Warm up: neighbours resolved, TCG's translations of the paths made.
    for v in &variants {
        pings(&v.pod.host, 3);
        to_guest(&sn, v, 1);
        from_guest(&sn, v, 1);
    }
    for r in 0..rounds {
        let order: Vec<usize> = if r % 2 == 0 { vec![0, 1] } else { vec![1, 0] };
        for i in order {
            let v = &variants[i];
            let rtt = pings(&v.pod.host, n_pings);
            let tg = to_guest(&sn, v, mib);
            let fg = from_guest(&sn, v, mib);
            eprintln!(
                "round {r} {}: ping median {} µs, to guest {tg:.1} MB/s, from guest {fg:.1} MB/s",
                v.name,
                median(rtt.clone())
            );
            let v = &mut variants[i];
            v.rtt_us.extend(rtt);
            v.to_guest_mbps.push(tg);
            v.from_guest_mbps.push(fg);
        }
    }
    let stats: Vec<(u64, f64, f64)> = variants
        .iter()
        .map(|v| {
            (
                median(v.rtt_us.clone()),
                medf(v.to_guest_mbps.clone()),
                medf(v.from_guest_mbps.clone()),
            )
        })
        .collect();
    println!("| sandbox | ping RTT µs | host → guest MB/s | guest → host MB/s |");
    println!("| --- | --- | --- | --- |");
    for (v, (rtt, tg, fg)) in variants.iter().zip(&stats) {
        println!("| {} | {rtt} | {tg:.1} | {fg:.1} |", v.name);
    }
    let (g, a) = (stats[0], stats[1]);
    println!(
        "| guard/allow | {:.2} | {:.2} | {:.2} |",
        g.0 as f64 / a.0.max(1) as f64,
        g.1 / a.1,
        g.2 / a.2
    );
    println!(
        "the guard's classes on the guarded pod link afterwards:\n{}",
        guard_classes(&variants[0].pod.pod).trim_end()
    );
    for v in &variants {
        let _ = sandnet(&sn, &["rm", &v.id]).output();
    }
    println!(
        "accelerator as run reported: {}",
        accels.into_iter().collect::<Vec<_>>().join("; ")
    );
}
