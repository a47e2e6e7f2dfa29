//! A dual-stack pod through a private containerd and the sandnet shim (issue 18): with a
//! conflist whose host-local has an IPv4 and an IPv6 range, PodSandboxStatus reports the
//! IPv4 address as `network.ip` and the IPv6 one in `additional_ips`, and the guest answers
//! pings at both from containerd's network namespace.
//! Needs root, containerd, the guest kernel and the static agent (`scripts/build-agent`).

mod common;

use common::{Containerd, Options};
use std::net::IpAddr;
use std::time::Duration;

/// Pings `ip` from containerd's namespace a few times (the guest's first neighbour round
/// trip under TCG can be slow).
fn pings(cd: &Containerd, ip: &str) -> bool {
    (0..5).any(|_| cd.ping(ip))
}

#[test]
fn dual_stack_pod_reports_and_answers_both_addresses() {
    let v6_net = format!("fd5f:{:x}::", std::process::id() % 0xfffe + 1);
    let cd = Containerd::start(
        "dual",
        Options {
            ipv6_subnet: Some(format!("{v6_net}/64")),
            ..Options::default()
        },
    );
    let id = cd
        .run_pod("dual", "sandnet")
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\ncontainerd log:\n{}", cd.log()));
    let (st, _) = cd.status(&id).expect("PodSandboxStatus");
    let net = st.network.expect("PodSandboxStatus has a network");
    let v4: IpAddr = net
        .ip
        .parse()
        .unwrap_or_else(|e| panic!("ip {:?}: {e}", net.ip));
    assert!(
        v4.is_ipv4() && v4.to_string().starts_with(&format!("{}.", cd.prefix)),
        "network.ip {v4} not in {}.0/24",
        cd.prefix
    );
    let extra: Vec<String> = net.additional_ips.iter().map(|a| a.ip.clone()).collect();
    let v6 = extra
        .iter()
        .find(|a| a.starts_with(&v6_net))
        .unwrap_or_else(|| panic!("no address of {v6_net}/64 in additional_ips {extra:?}"))
        .clone();

    // The guest holds both and neither is tentative.
    let h = sandnet_runtime::api::Runtime::new(cd.state(), "/bin/false", vec![]).handle(&id);
    let out = cd
        .rt
        .block_on(h.exec(
            &["cat".into(), "/proc/net/if_inet6".into()],
            Duration::from_secs(30),
        ))
        .expect("exec in the guest");
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let want: std::net::Ipv6Addr = v6.parse().unwrap();
    let hex: String = want.octets().iter().map(|b| format!("{b:02x}")).collect();
    let line = table
        .lines()
        .find(|l| l.starts_with(&hex))
        .unwrap_or_else(|| panic!("the guest has no {v6}:\n{table}"));
    let flags = line
        .split_whitespace()
        .nth(4)
        .and_then(|f| u32::from_str_radix(f, 16).ok())
        .unwrap_or_else(|| panic!("bad if_inet6 line {line:?}"));
    assert_eq!(flags & 0x40, 0, "{v6} is tentative in the guest: {line}");

    assert!(pings(&cd, &v4.to_string()), "no answer at {v4}");
    assert!(pings(&cd, &v6), "no answer at {v6}");

    cd.stop_pod(&id).expect("StopPodSandbox");
    cd.remove_pod(&id).expect("RemovePodSandbox");
}
