//! IPv6 end to end (issue 18): `sandnet run` with Debian's `bridge` + `host-local` and a
//! dual-stack conflist, in a throw-away host namespace per test (see `common/host.rs`).
//!
//! - the guest has both addresses, and no IPv6 address of its NIC is `tentative` right
//!   after `run` returns (DAD would hold one for a second or more); its link-local, which
//!   the kernel adds once it sees the NIC's carrier, is never tentative either; both
//!   families ping both ways;
//! - a device-only IPv6 route and gateway/device routes with MTU 1400 (both families) that
//!   a chained plugin adds to the pod namespace arrive in the guest as given, and so does
//!   a permanent IPv6 neighbour;
//! - the guest's link-local is EUI-64 from its MAC, which is the pod link's: the same
//!   address the pod link holds, neither side marks it `dadfailed`, and it answers pings;
//! - a router advertisement sent on the bridge adds no address and no route in the guest;
//! - a pod namespace with IPv6 disabled, and a guest kernel booted with `ipv6.disable=1`,
//!   still run an IPv4 sandbox.
//!
//! The guest has busybox only (no `ip -j`): addresses are read from `/proc/net/if_inet6`
//! (exact flags), routes with their MTU from `sandnet inspect --json` (the agent's netlink
//! dump of the guest) and busybox `ip -6 route`.
//!
//! Needs root, the static guest agent (`scripts/build-agent`) and the cached guest kernel
//! (`scripts/build-kernel`), as `scripts/test` provides.

#[path = "common/host.rs"]
mod host;

use host::*;
use sandnet_testkit::TestNs;
use serde_json::{json, Value};
use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

const IFA_F_NODAD: u32 = 0x02;
const IFA_F_DADFAILED: u32 = 0x08;
const IFA_F_TENTATIVE: u32 = 0x40;
const IFA_F_PERMANENT: u32 = 0x80;

/// This host's IPv6 /64, `fd5e:…::`, without the length.
fn v6_prefix(h: &Host) -> String {
    let p: Vec<&str> = h.prefix.split('.').collect();
    format!("fd5e:{}:{}:{:x}::", p[1], p[2], std::process::id() % 0xffff)
}

/// Another /64 of this host (`fd5e:TAG:…::/64`), for routes and router advertisements.
fn other_net(h: &Host, tag: u16) -> String {
    let p: Vec<&str> = h.prefix.split('.').collect();
    format!("fd5e:{tag:x}:{}:{}::/64", p[1], p[2])
}

/// The bridge with host-local on this host's IPv4 /24 and IPv6 /64, default routes of
/// both families.
fn dual_stack_bridge(h: &Host) -> Value {
    json!({"type":"bridge","bridge":h.bridge,"isGateway":true,"ipMasq":true,
           "ipam":{"type":"host-local",
                   "ranges":[[{"subnet":format!("{}.0/24", h.prefix)}],
                             [{"subnet":format!("{}/64", v6_prefix(h))}]],
                   "routes":[{"dst":"0.0.0.0/0"},{"dst":"::/0"}],
                   "dataDir":h.ipam()}})
}

/// A chained plugin that adds the routes the guest must receive as given (with `ip`, in
/// the pod namespace) and passes the previous result on.
fn write_route_plugin(h: &Host) {
    let gw6 = format!("{}1", v6_prefix(h));
    let gw4 = h.gateway();
    let (dev_only, via) = (other_net(h, 0x99), other_net(h, 0x98));
    let neigh6 = format!("{}66", v6_prefix(h));
    h.write_plugin(
        "v6routes",
        &format!(
            r#"case "$CNI_COMMAND" in
ADD) conf=$(cat)
  in_pod() {{ nsenter --net="$CNI_NETNS" "$@" >&2 || exit 1; }}
  in_pod ip -6 route add {dev_only} dev "$CNI_IFNAME"
  in_pod ip -6 route add {via} via {gw6} dev "$CNI_IFNAME" mtu 1400
  in_pod ip -4 route add 198.51.100.0/24 dev "$CNI_IFNAME" mtu 1400
  in_pod ip -4 route add 203.0.113.0/24 via {gw4} dev "$CNI_IFNAME" mtu 1400
  in_pod ip -6 neigh add {neigh6} lladdr 02:00:5e:00:53:66 dev "$CNI_IFNAME" nud permanent
  printf '%s' "$conf" | python3 -c 'import json,sys; c=json.load(sys.stdin); r=c["prevResult"]; r["cniVersion"]=c["cniVersion"]; print(json.dumps(r))';;
VERSION) echo '{{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}}';;
*) cat >/dev/null; exit 0;;
esac
"#
        ),
    );
}

/// One line of `/proc/net/if_inet6`.
#[derive(Debug)]
struct Addr6 {
    ip: Ipv6Addr,
    scope: u32,
    flags: u32,
    dev: String,
}

fn if_inet6(text: &str) -> Vec<Addr6> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let hex = f.first()?;
            let n = u128::from_str_radix(hex, 16).ok()?;
            Some(Addr6 {
                ip: Ipv6Addr::from(n),
                scope: u32::from_str_radix(f.get(3)?, 16).ok()?,
                flags: u32::from_str_radix(f.get(4)?, 16).ok()?,
                dev: f.get(5)?.to_string(),
            })
        })
        .collect()
}

/// The EUI-64 link-local address of `mac` (`aa:bb:cc:dd:ee:ff`).
fn eui64_link_local(mac: &str) -> Ipv6Addr {
    let b: Vec<u16> = mac
        .split(':')
        .map(|x| u16::from_str_radix(x, 16).unwrap())
        .collect();
    Ipv6Addr::new(
        0xfe80,
        0,
        0,
        0,
        ((b[0] ^ 0x02) << 8) | b[1],
        (b[2] << 8) | 0xff,
        0xfe00 | b[3],
        (b[4] << 8) | b[5],
    )
}

/// `sandnet exec ID -- CMD…`, which must succeed; its stdout.
fn guest(h: &Host, id: &str, cmd: &[&str]) -> String {
    let mut args = vec!["exec", id, "--"];
    args.extend_from_slice(cmd);
    let o = h.sandnet(&args);
    assert!(
        o.status.success(),
        "in the guest, {cmd:?} failed ({}): {}{}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

/// Pings `addr` from the guest (a few tries: the first neighbour round trip through a TCG
/// guest can be slow).
fn guest_pings(h: &Host, id: &str, addr: &str) {
    let ping = if addr.contains(':') { "ping6" } else { "ping" };
    let mut last = String::new();
    for _ in 0..5 {
        let o = h.sandnet(&["exec", id, "--", ping, "-c1", "-W3", addr]);
        if o.status.success() {
            return;
        }
        last = format!("{}{}", text(&o.stdout), text(&o.stderr));
    }
    panic!("the guest cannot ping {addr}: {last}");
}

/// Sends router advertisements for `prefix`/64 (on-link, autonomous, router lifetime
/// 1800 s) to all nodes on `dev` of the host namespace, from the bridge's link-local.
fn send_router_advertisement(h: &Host, dev: &str, prefix: &str) {
    let script = r#"
import socket, struct, sys, time
dev, prefix = sys.argv[1], socket.inet_pton(socket.AF_INET6, sys.argv[2])
idx = socket.if_nametoindex(dev)
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, idx)
ra = struct.pack('!BBHBBHII', 134, 0, 0, 64, 0, 1800, 0, 0)
pio = struct.pack('!BBBBIII', 3, 4, 64, 0xc0, 86400, 14400, 0) + prefix
for _ in range(3):
    s.sendto(ra + pio, ('ff02::1', 0, 0, idx))
    time.sleep(0.3)
"#;
    h.exec(&["python3", "-c", script, dev, prefix]);
}

fn guest_v6(v: &Value) -> String {
    guest_ips(v)
        .into_iter()
        .find(|a| a.contains(':'))
        .unwrap_or_else(|| panic!("no IPv6 address in {v}"))
}

/// The route to `dest` in `sandnet inspect --json`'s routes.
fn inspected_route(h: &Host, id: &str, dest: &str) -> Value {
    let o = h.sandnet(&["inspect", id, "--json"]);
    assert!(o.status.success(), "inspect: {}", text(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).expect("inspect --json");
    v["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["dest"] == dest)
        .cloned()
        .unwrap_or_else(|| panic!("no route to {dest} in the guest: {v}"))
}

#[test]
fn dual_stack_through_cni_whole_flow() {
    let h = Host::new("v6");
    let p6 = v6_prefix(&h);
    write_route_plugin(&h);
    let list = json!({"cniVersion":"1.0.0","name":h.net,
                      "plugins":[dual_stack_bridge(&h), {"type":"v6routes"}]});
    h.write_conf_file(&format!("10-{}.conflist", h.net), &list.to_string());
    let id = h.new_id("v6");
    let bin = h.bin();
    let v = h.run_ok(
        &id,
        &[
            "--cni-bin-dir",
            bin.to_str().unwrap(),
            "--cni-bin-dir",
            DEBIAN_BIN,
        ],
    );
    // Right after ready: every IPv6 address of eth0 usable (DAD would hold a new address
    // `tentative` for a second or more).
    let ready = Instant::now();
    let addrs = guest(&h, &id, &["cat", "/proc/net/if_inet6"]);
    let read_after = ready.elapsed();
    eprintln!("if_inet6 read {read_after:?} after run returned:\n{addrs}");
    let addrs = if_inet6(&addrs);
    let eth0: Vec<&Addr6> = addrs.iter().filter(|a| a.dev == "eth0").collect();
    let v4 = h.guest_ip(&v);
    let v6: Ipv6Addr = guest_v6(&v).parse().unwrap();
    assert!(v6.to_string().starts_with(&p6), "{v6} not in {p6}/64");
    let global = eth0
        .iter()
        .find(|a| a.ip == v6)
        .unwrap_or_else(|| panic!("{v6} not on the guest's eth0: {eth0:?}"));
    for a in &eth0 {
        assert_eq!(a.flags & IFA_F_TENTATIVE, 0, "{a:?} is tentative");
        assert_eq!(a.flags & IFA_F_DADFAILED, 0, "{a:?} failed DAD");
    }
    assert_ne!(
        global.flags & IFA_F_NODAD,
        0,
        "{global:?} was added with DAD"
    );

    // The link-local is EUI-64 from the MAC, the pod link's MAC and so its address too.
    let pod_ns = format!("sandnet-{id}");
    let pod = |args: &[&str]| -> Value {
        let mut a = vec!["-j", "-n", pod_ns.as_str()];
        a.extend_from_slice(args);
        serde_json::from_str(&sh_ok("ip", &a)).unwrap()
    };
    let mac = pod(&["link", "show", "eth0"])[0]["address"]
        .as_str()
        .unwrap()
        .to_string();
    let ll = eui64_link_local(&mac);
    // The kernel adds it once the NIC's carrier is seen (link watch, up to a second after
    // the agent brought it up); without DAD it is never tentative.
    let mut seen = vec![];
    wait_until("the guest's link-local", Duration::from_secs(10), || {
        seen = if_inet6(&guest(&h, &id, &["cat", "/proc/net/if_inet6"]));
        seen.iter().any(|a| a.dev == "eth0" && a.scope == 0x20)
    });
    let guest_ll: Vec<&Addr6> = seen
        .iter()
        .filter(|a| a.dev == "eth0" && a.scope == 0x20)
        .collect();
    assert!(
        guest_ll.len() == 1 && guest_ll[0].ip == ll,
        "the guest's link-local is not EUI-64 {ll} of {mac}: {guest_ll:?}"
    );
    assert_eq!(guest_ll[0].flags & IFA_F_TENTATIVE, 0, "{guest_ll:?}");
    let pod_ll: Vec<Value> = pod(&["-6", "addr", "show", "dev", "eth0", "scope", "link"])[0]
        ["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["local"].is_string())
        .cloned()
        .collect();
    assert!(!pod_ll.is_empty(), "the pod link has no link-local");
    for a in &pod_ll {
        assert_eq!(a["local"], ll.to_string(), "pod link-local: {pod_ll:?}");
        assert!(a["dadfailed"].is_null(), "pod link-local: {pod_ll:?}");
    }

    // Both families, both ways; the link-local answers from the guest.
    let gw6 = format!("{p6}1");
    assert!(h.ping(&v4), "host side cannot ping the guest's {v4}");
    assert!(
        h.ping(&v6.to_string()),
        "host side cannot ping the guest's {v6}"
    );
    assert!(
        h.ping(&format!("{ll}%{}", h.bridge)),
        "host side cannot ping the guest's link-local {ll}"
    );
    guest_pings(&h, &id, &h.gateway());
    guest_pings(&h, &id, &gw6);

    // Routes as the pod namespace had them: device-only v6, and MTU 1400 on both families'
    // device and gateway routes.
    let r = inspected_route(&h, &id, &other_net(&h, 0x99));
    assert!(
        r["gateway"].is_null(),
        "device-only route got a gateway: {r}"
    );
    assert_eq!(r["device"], "eth0", "{r}");
    let r = inspected_route(&h, &id, &other_net(&h, 0x98));
    assert_eq!(r["gateway"], gw6, "{r}");
    assert_eq!(r["mtu"], 1400, "{r}");
    let r = inspected_route(&h, &id, "198.51.100.0/24");
    assert!(r["gateway"].is_null(), "{r}");
    assert_eq!(r["mtu"], 1400, "{r}");
    let r = inspected_route(&h, &id, "203.0.113.0/24");
    assert_eq!(r["gateway"], h.gateway(), "{r}");
    assert_eq!(r["mtu"], 1400, "{r}");
    let r = inspected_route(&h, &id, "::/0");
    assert_eq!(r["gateway"], gw6, "{r}");
    // A permanent IPv6 neighbour of the pod link, like an IPv4 one.
    let neigh = guest(&h, &id, &["ip", "-6", "neigh", "show", "dev", "eth0"]);
    let want = format!("{}66 lladdr 02:00:5e:00:53:66", v6_prefix(&h));
    assert!(
        neigh
            .lines()
            .any(|l| l.contains(&want) && l.contains("PERMANENT")),
        "{want} PERMANENT not in the guest's neighbours:\n{neigh}"
    );

    // A router advertisement on the bridge: no autoconf address, no RA route.
    let ra_net = other_net(&h, 0x77);
    let ra_prefix = ra_net.trim_end_matches("::/64");
    send_router_advertisement(&h, &h.bridge, &format!("{ra_prefix}::"));
    std::thread::sleep(Duration::from_secs(2));
    let after = if_inet6(&guest(&h, &id, &["cat", "/proc/net/if_inet6"]));
    for a in after.iter().filter(|a| a.dev == "eth0") {
        assert!(
            !a.ip.to_string().starts_with(&format!("{ra_prefix}:")),
            "autoconf address from the RA: {a:?}"
        );
        assert_ne!(a.flags & IFA_F_PERMANENT, 0, "dynamic address: {a:?}");
    }
    let routes = guest(&h, &id, &["ip", "-6", "route"]);
    assert!(!routes.contains(ra_prefix), "RA prefix route:\n{routes}");
    assert!(
        !routes.lines().any(|l| l.contains("via fe80:")),
        "RA default route:\n{routes}"
    );

    h.rm(&id);
    h.assert_clean("a dual-stack sandbox");
}

#[test]
fn pod_netns_with_ipv6_disabled_runs_ipv4() {
    // Dropped after the host, whose guard removes the sandbox first.
    let pod = TestNs::new("nov6pod");
    let h = Host::new("nov6");
    h.write_conflist(&[]);
    for key in ["all", "default", "lo"] {
        pod_sysctl(&pod, &format!("net.ipv6.conf.{key}.disable_ipv6=1"));
    }
    let id = h.new_id("nov6");
    let v = h.run_ok(&id, &["--netns", &pod.path(), "--cni"]);
    let v4 = h.guest_ip(&v);
    assert!(h.ping(&v4), "host side cannot ping the guest's {v4}");
    guest_pings(&h, &id, &h.gateway());
    h.rm(&id);
    h.assert_clean("a sandbox in a pod namespace without IPv6");
}

fn pod_sysctl(ns: &TestNs, setting: &str) {
    sh_ok("ip", &["netns", "exec", &ns.name, "sysctl", "-qw", setting]);
}

#[test]
fn guest_kernel_without_ipv6_runs_ipv4_of_a_dual_stack_pod() {
    let h = Host::new("kv6");
    h.write_config(&["kernel_params = \"ipv6.disable=1\""]);
    let list = json!({"cniVersion":"1.0.0","name":h.net,"plugins":[dual_stack_bridge(&h)]});
    h.write_conf_file(&format!("10-{}.conflist", h.net), &list.to_string());
    let id = h.new_id("kv6");
    let v = h.run_ok(&id, &[]);
    let v4 = h.guest_ip(&v);
    assert!(h.ping(&v4), "host side cannot ping the guest's {v4}");
    guest_pings(&h, &id, &h.gateway());
    let o = h.sandnet(&["exec", &id, "--", "cat", "/proc/net/if_inet6"]);
    assert!(
        !o.status.success(),
        "the guest has IPv6: {}",
        text(&o.stdout)
    );
    h.rm(&id);
    h.assert_clean("a sandbox without IPv6 in the guest");
}
