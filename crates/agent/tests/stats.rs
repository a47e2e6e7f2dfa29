//! `sandnet.Stats/InterfaceStats` from the real `sandnet-agent --listen` in a throwaway
//! netns: every link but loopback, with the counters `ip -s -j link` shows (read before
//! and after the call, the agent's figures lie between). Needs root.

mod common;

use common::AgentNs;
use serde_json::Value;

const MAC: &str = "02:00:5e:10:00:07";

fn stats64(env: &AgentNs, dev: &str) -> Value {
    env.ip_json(&["-s", "link", "show", "dev", dev])[0]["stats64"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interface_stats_are_the_kernels() {
    let env = AgentNs::new(
        "stats",
        &[
            &[
                "link", "add", "d0", "address", MAC, "type", "veth", "peer", "name", "d0p",
            ],
            &["link", "set", "d0", "up"],
            &["link", "set", "d0p", "up"],
            &["addr", "add", "10.77.0.1/24", "dev", "d0"],
        ],
    );
    let c = env.client().await;
    // Traffic out of d0 into d0p: ARP requests for an address nobody has.
    let _ = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &env.ns,
            "ping",
            "-c",
            "2",
            "-W",
            "1",
            "10.77.0.9",
        ])
        .output();
    let (d0, d0p) = (stats64(&env, "d0"), stats64(&env, "d0p"));
    let got = c.interface_stats().await.expect("InterfaceStats");
    let (d0_after, d0p_after) = (stats64(&env, "d0"), stats64(&env, "d0p"));
    let mut names: Vec<&str> = got.iter().map(|i| i.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["d0", "d0p"], "no loopback: {got:?}");
    let a = got.iter().find(|i| i.name == "d0").unwrap();
    assert_eq!(a.mac.map(|m| m.to_string()).as_deref(), Some(MAC));
    assert!(a.counters.tx_packets > 0, "{a:?}");
    for (i, before, after) in [
        (a, &d0, &d0_after),
        (
            got.iter().find(|i| i.name == "d0p").unwrap(),
            &d0p,
            &d0p_after,
        ),
    ] {
        let pairs = [
            (i.counters.rx_bytes, "rx", "bytes"),
            (i.counters.rx_packets, "rx", "packets"),
            (i.counters.rx_errors, "rx", "errors"),
            (i.counters.rx_dropped, "rx", "dropped"),
            (i.counters.tx_bytes, "tx", "bytes"),
            (i.counters.tx_packets, "tx", "packets"),
            (i.counters.tx_errors, "tx", "errors"),
            (i.counters.tx_dropped, "tx", "dropped"),
        ];
        for (v, dir, k) in pairs {
            let (b, a) = (
                before[dir][k].as_u64().unwrap(),
                after[dir][k].as_u64().unwrap(),
            );
            assert!(
                b <= v && v <= a,
                "{} {dir} {k}: {v}, ip says {b}..{a}",
                i.name
            );
        }
    }
}
