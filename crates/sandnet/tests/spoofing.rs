//! Anti-spoofing with real guests (issue 17): the real `sandnet` binary boots a guest (TCG
//! here) on a dual-stack pod, and the guest, through `sandnet exec`, behaves as a hostile
//! one would: it adds a foreign IPv4 address and pings from it, claims the gateway's
//! address with ARP replies (busybox `arping -A`), changes its MAC and sends traffic, and
//! sends IPv6 router advertisements (the test-only agent's raw-frame sender,
//! `/init __send-frame`). For each, three `AF_PACKET` captures show the frames entering
//! the pod namespace on the tap (so the guest really sent them) and reaching neither the
//! pod link nor the host side of the pod's veth; the guard's drop counter (its sink class
//! `5a4e:2`, `tc -s class show` in the pod namespace) rises by exactly the number of
//! frames the guest's `eth0` sent for the action. The guest's own traffic still flows both
//! ways in both families. With `--guest-spoofing allow` the same frames reach the host
//! side. An address added in the pod namespace is usable by the guest once the monitor
//! applied it; the address it replaced is then dropped.
//!
//! Needs root, the guest kernel and the test-only static agent with the `hostile` feature
//! (`scripts/build-agent` builds it as `sandnet-agent-hostile`), which these guests run as
//! their agent — without a hostile mode, so it serves as the real one does.

#[path = "common/guest.rs"]
mod guest;

use guest::{guest_ping, ping_from, use_hostile_agent, Env, Sandbox};
use sandnet_testkit::{htb_class_drops, mac_bytes, PacketSocket, PodPair, TestNs};
use std::net::Ipv6Addr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const GUEST4: &str = "172.19.0.5";
const GW4: &str = "172.19.0.1";
const GUEST6: &str = "fd00:5a::5";
const GW6: &str = "fd00:5a::1";
const FOREIGN4: &str = "172.19.0.99";
const NEW_MAC: &str = "02:00:00:5a:4e:99";
/// How many frames each hostile action sends.
const FRAMES: u64 = 3;
/// How long a change may take to reach a TCG guest on a loaded 2-core machine.
const FOLLOW: Duration = Duration::from_secs(30);

/// A `sandnet` whose guests run the hostile build of the agent, in its ordinary mode.
fn env(tag: &str) -> Env {
    use_hostile_agent();
    Env::new(tag)
}

/// A pod of one veth with both families: `172.19.0.5/24` and `fd00:5a::5/64` in the pod,
/// `.1`/`::1` on the host side, default routes of both families via them.
fn dual_stack_pod(tag: &str) -> PodPair {
    let p = PodPair::new(tag);
    p.pod
        .ip(&["-6", "addr", "add", "fd00:5a::5/64", "dev", "eth0", "nodad"]);
    p.host.ip(&[
        "-6",
        "addr",
        "add",
        "fd00:5a::1/64",
        "dev",
        "veth0",
        "nodad",
    ]);
    p.pod.ip(&["-6", "route", "add", "default", "via", GW6]);
    p
}

/// The drops of the guard's sink class on the pod link, `None` when there is no guard.
fn sink_drops(pod: &TestNs) -> Option<u64> {
    htb_class_drops(
        &pod.tc_text(&["-s", "class", "show", "dev", "eth0"]),
        "5a4e:2",
    )
}

/// Whether the pod link carries the guard's root qdisc.
fn guarded(pod: &TestNs) -> bool {
    pod.tc_json(&["qdisc", "show", "dev", "eth0"])
        .as_array()
        .is_some_and(|a| {
            a.iter()
                .any(|q| q["handle"] == "5a4e:" && q["kind"] == "htb")
        })
}

/// The guest in `sh -c`, which must succeed; its stdout.
fn sh(sb: &Sandbox<'_>, script: &str) -> String {
    sb.exec_ok(&["sh", "-c", script])
}

/// Pings an IPv6 address from the guest (a few tries: the first neighbour round trip
/// through a TCG guest can be slow).
fn guest_ping6(sb: &Sandbox<'_>, addr: &str) {
    let ok = (0..5).any(|_| sb.exec(&["ping6", "-c1", "-W3", addr]).status.success());
    assert!(ok, "the guest cannot ping {addr}");
}

/// Where frames are watched: the tap in the pod namespace (what the guest sent), the pod
/// link (what left through the guard) and the host side of the pod's veth.
struct Watch {
    tap: PacketSocket,
    pod_link: PacketSocket,
    host: PacketSocket,
}

impl Watch {
    fn open(p: &PodPair) -> Watch {
        let tap = format!("sntap{}", p.pod.link("eth0").expect("eth0")["ifindex"]);
        Watch {
            tap: PacketSocket::open(&p.pod, &tap),
            pod_link: PacketSocket::open(&p.pod, "eth0"),
            host: PacketSocket::open(&p.host, "veth0"),
        }
    }
}

/// Every frame `s` sees within `window`, each with whether it was going out of the
/// device it is bound to (`PACKET_OUTGOING`: on the tap, a frame into the guest).
fn capture(s: &PacketSocket, window: Duration) -> Vec<(bool, Vec<u8>)> {
    let deadline = Instant::now() + window;
    let mut out = vec![];
    let mut buf = vec![0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return out;
        }
        let mut pfd = libc::pollfd {
            fd: s.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: polling one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as i32) } <= 0 {
            continue;
        }
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid start.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: receiving into buffers we own, with their sizes.
        let n = unsafe {
            libc::recvfrom(
                s.0.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
                (&mut sa as *mut libc::sockaddr_ll).cast(),
                &mut len,
            )
        };
        if n > 0 {
            out.push((
                sa.sll_pkttype == libc::PACKET_OUTGOING,
                buf[..n as usize].to_vec(),
            ));
        }
    }
}

/// Reads everything queued on a socket so a later capture sees only new frames.
fn drain(s: &PacketSocket) {
    capture(s, Duration::from_millis(20));
}

fn ethertype(f: &[u8]) -> u16 {
    f.get(12..14)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
}

fn ipv4(s: &str) -> [u8; 4] {
    s.parse::<std::net::Ipv4Addr>().expect("IPv4").octets()
}

/// IPv4 from `src`, or ARP with `src` as sender address.
fn from_ipv4(f: &[u8], src: [u8; 4]) -> bool {
    match ethertype(f) {
        0x0800 => f.get(26..30) == Some(&src[..]),
        0x0806 => f.get(28..32) == Some(&src[..]),
        _ => false,
    }
}

/// ARP from `mac` claiming `ip` as its sender address.
fn arp_claiming(f: &[u8], mac: [u8; 6], ip: [u8; 4]) -> bool {
    ethertype(f) == 0x0806 && f.get(22..28) == Some(&mac[..]) && f.get(28..32) == Some(&ip[..])
}

/// An ICMPv6 router advertisement from `mac` (no extension headers).
fn router_advert(f: &[u8], mac: [u8; 6]) -> bool {
    ethertype(f) == 0x86dd
        && f.get(6..12) == Some(&mac[..])
        && f.get(20) == Some(&58)
        && f.get(54) == Some(&134)
}

/// The EUI-64 link-local address of `mac`.
fn link_local(mac: [u8; 6]) -> Ipv6Addr {
    let mut b = [0u8; 16];
    b[0] = 0xfe;
    b[1] = 0x80;
    b[8] = mac[0] ^ 0x02;
    b[9] = mac[1];
    b[10] = mac[2];
    b[11] = 0xff;
    b[12] = 0xfe;
    b[13..16].copy_from_slice(&mac[3..6]);
    Ipv6Addr::from(b)
}

/// A router advertisement (router lifetime 0, no options) from the guest's link-local to
/// all nodes, with a correct checksum.
fn router_advert_frame(mac: [u8; 6]) -> Vec<u8> {
    let src = link_local(mac).octets();
    let dst: Ipv6Addr = "ff02::1".parse().expect("ff02::1");
    let dst = dst.octets();
    let mut icmp = vec![134u8, 0, 0, 0, 64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for w in b.chunks(2) {
            sum += u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
        }
    };
    add(&src);
    add(&dst);
    add(&(icmp.len() as u32).to_be_bytes());
    add(&[0, 0, 0, 58]);
    add(&icmp);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    icmp[2..4].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    let mut f = vec![0x33, 0x33, 0, 0, 0, 1];
    f.extend(mac);
    f.extend([0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend((icmp.len() as u16).to_be_bytes());
    f.extend([58, 255]);
    f.extend(src);
    f.extend(dst);
    f.extend(icmp);
    f
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Picks the frames of one action out of a capture.
type Pick = Box<dyn Fn(&[u8]) -> bool>;

/// One thing a hostile guest does: `setup`, then `action` (the frames counted), then
/// `cleanup`, all in one guest shell; `spoofed` picks its frames out of a capture.
struct Hostile {
    what: &'static str,
    setup: String,
    action: String,
    cleanup: String,
    spoofed: Pick,
}

/// The four: a foreign IPv4 address pinged from, ARP replies claiming the
/// gateway, traffic from a changed MAC, router advertisements.
fn hostile_actions(mac: [u8; 6]) -> Vec<Hostile> {
    let old_mac = mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    let new_mac = mac_bytes(NEW_MAC);
    vec![
        Hostile {
            what: "a foreign IPv4 address pinged from",
            setup: format!("ip addr add {FOREIGN4}/24 dev eth0"),
            action: format!("ping -c {FRAMES} -W 1 -I {FOREIGN4} {GW4}"),
            cleanup: format!("ip addr del {FOREIGN4}/24 dev eth0"),
            spoofed: Box::new(|f| from_ipv4(f, ipv4(FOREIGN4))),
        },
        Hostile {
            what: "ARP replies claiming the gateway",
            // busybox arping binds its probe socket to the claimed address first.
            setup: "echo 1 > /proc/sys/net/ipv4/ip_nonlocal_bind".into(),
            action: format!("arping -A -c {FRAMES} -I eth0 -s {GW4} {GW4}"),
            cleanup: "echo 0 > /proc/sys/net/ipv4/ip_nonlocal_bind".into(),
            spoofed: Box::new(move |f| arp_claiming(f, mac, ipv4(GW4))),
        },
        Hostile {
            what: "traffic from a changed MAC",
            setup: format!("ip link set dev eth0 address {NEW_MAC}"),
            action: format!("ping -c {FRAMES} -W 1 {GW4}"),
            cleanup: format!("ip link set dev eth0 address {old_mac}"),
            spoofed: Box::new(move |f| f.get(6..12) == Some(&new_mac[..])),
        },
        Hostile {
            what: "router advertisements",
            setup: String::new(),
            action: format!(
                "/init __send-frame eth0 {} {FRAMES}",
                hex(&router_advert_frame(mac))
            ),
            cleanup: String::new(),
            spoofed: Box::new(move |f| router_advert(f, mac)),
        },
    ]
}

/// What one action did.
#[derive(Debug)]
struct Seen {
    /// Frames the guest's `eth0` sent during the action (its `tx_packets`).
    sent: u64,
    /// Spoofed frames from the guest that entered the pod namespace on the tap.
    on_tap: u64,
    /// Other frames from the guest on the tap meanwhile (its own chatter: MLD, neighbour
    /// discovery), in a window around the action's.
    others_on_tap: u64,
    /// Spoofed frames that left through the pod link.
    on_pod_link: u64,
    /// Spoofed frames that reached the host side of the veth.
    on_host: u64,
    /// How much the guard's drop counter rose (0 without a guard).
    dropped: u64,
}

impl Seen {
    /// The guest's own count of what it sent agrees with what was seen: every spoofed
    /// frame, and no more than those and its chatter.
    fn assert_sent_is_seen(&self, what: &str) {
        assert!(
            self.on_tap <= self.sent && self.sent <= self.on_tap + self.others_on_tap,
            "{what}: the guest's tx_packets against the frames seen on the tap: {self:?}"
        );
    }
}

/// Runs one hostile action in the guest and watches it.
fn watch_action(sb: &Sandbox<'_>, p: &PodPair, w: &Watch, h: &Hostile) -> Seen {
    for s in [&w.tap, &w.pod_link, &w.host] {
        drain(s);
    }
    let before = sink_drops(&p.pod).unwrap_or(0);
    let tx = "/sys/class/net/eth0/statistics/tx_packets";
    let script = format!(
        "{setup}\na=$(cat {tx}); {action} >/dev/null 2>&1; b=$(cat {tx})\n{cleanup}\n\
         echo sent $((b - a))",
        setup = h.setup,
        action = h.action,
        cleanup = h.cleanup,
    );
    let out = sh(sb, &script);
    let sent = out
        .lines()
        .find_map(|l| l.strip_prefix("sent "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{}: no count from the guest: {out}", h.what));
    let want = &*h.spoofed;
    let from_guest: Vec<Vec<u8>> = capture(&w.tap, Duration::from_millis(1500))
        .into_iter()
        .filter(|(out, _)| !out)
        .map(|(_, f)| f)
        .collect();
    let on_tap = from_guest.iter().filter(|f| want(f)).count() as u64;
    let others_on_tap = from_guest.len() as u64 - on_tap;
    let spoofed = |s: &PacketSocket| {
        capture(s, Duration::from_millis(300))
            .iter()
            .filter(|(_, f)| want(f))
            .count() as u64
    };
    let on_pod_link = spoofed(&w.pod_link);
    let on_host = spoofed(&w.host);
    // The counter moves as QEMU hands the frames over; let it catch up.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut dropped = sink_drops(&p.pod).unwrap_or(0) - before;
    while dropped < on_tap && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        dropped = sink_drops(&p.pod).unwrap_or(0) - before;
    }
    let seen = Seen {
        sent,
        on_tap,
        others_on_tap,
        on_pod_link,
        on_host,
        dropped,
    };
    eprintln!("{}: {seen:?}", h.what);
    seen
}

/// Makes the guest's neighbour of the gateway permanent, so every action sends exactly
/// its own frames (no ARP of its own in between).
fn pin_gateway(sb: &Sandbox<'_>, p: &PodPair) {
    let gw_mac = p.host.link("veth0").expect("veth0")["address"]
        .as_str()
        .expect("MAC")
        .to_string();
    sh(
        sb,
        &format!("arp -i eth0 -s {GW4} {gw_mac} && ip neigh show dev eth0"),
    );
}

/// Legitimate traffic in both families, both ways.
fn legitimate_traffic_flows(sb: &Sandbox<'_>, p: &PodPair) {
    ping_from(&p.host, GUEST4);
    ping_from(&p.host, GUEST6);
    guest_ping(sb, GW4);
    guest_ping6(sb, GW6);
}

#[test]
fn a_hostile_guests_spoofed_frames_are_dropped_and_counted() {
    let p = dual_stack_pod("spblk");
    let env = env("spblk");
    let (sb, _) = Sandbox::run(&env, "spblk", &p.pod.name, &[]);
    assert!(
        guarded(&p.pod),
        "sandnet run puts the guard on the pod link"
    );
    let mac = mac_bytes(&p.pod_mac("eth0"));
    pin_gateway(&sb, &p);
    legitimate_traffic_flows(&sb, &p);

    let w = Watch::open(&p);
    for h in hostile_actions(mac) {
        let s = watch_action(&sb, &p, &w, &h);
        assert_eq!(
            s.on_tap, FRAMES,
            "{}: the guest's frames entering the pod namespace: {s:?}",
            h.what
        );
        assert_eq!(
            s.on_pod_link, 0,
            "{}: left through the pod link: {s:?}",
            h.what
        );
        assert_eq!(s.on_host, 0, "{}: reached the host side: {s:?}", h.what);
        s.assert_sent_is_seen(h.what);
        assert_eq!(
            s.dropped, FRAMES,
            "{}: drops against frames sent: {s:?}",
            h.what
        );
    }

    // The guest's own traffic still flows, and none of it is dropped.
    let before = sink_drops(&p.pod).expect("the guard's sink class");
    legitimate_traffic_flows(&sb, &p);
    assert_eq!(
        sink_drops(&p.pod),
        Some(before),
        "legitimate traffic was dropped"
    );
    env.ok(&["rm", &sb.id]);
    assert!(!guarded(&p.pod), "the guard left on the pod link after rm");
}

#[test]
fn with_guest_spoofing_allow_the_same_frames_pass() {
    let p = dual_stack_pod("spalw");
    let env = env("spalw");
    let (sb, _) = Sandbox::run(&env, "spalw", &p.pod.name, &["--guest-spoofing", "allow"]);
    assert!(!guarded(&p.pod), "allow puts no guard on the pod link");
    let mac = mac_bytes(&p.pod_mac("eth0"));
    pin_gateway(&sb, &p);
    legitimate_traffic_flows(&sb, &p);

    let w = Watch::open(&p);
    for h in hostile_actions(mac) {
        let s = watch_action(&sb, &p, &w, &h);
        assert!(
            s.on_tap >= FRAMES,
            "{}: the guest sent too few: {s:?}",
            h.what
        );
        s.assert_sent_is_seen(h.what);
        assert_eq!(s.on_pod_link, s.on_tap, "{}: not all left: {s:?}", h.what);
        assert_eq!(s.on_host, s.on_tap, "{}: not all arrived: {s:?}", h.what);
        assert_eq!(s.dropped, 0, "{}: {s:?}", h.what);
    }
    assert_eq!(sink_drops(&p.pod), None);
}

/// Whether the guard's rules on the pod link match an IPv4 address (u32 prints it in hex).
fn guard_matches(pod: &TestNs, ip: &str) -> bool {
    let h = hex(&ipv4(ip));
    pod.tc_text(&["filter", "show", "dev", "eth0"])
        .contains(&format!("match {h}/ffffffff"))
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_address_added_in_the_pod_is_usable_once_the_monitor_applied_it() {
    let p = dual_stack_pod("spmon");
    let env = env("spmon");
    let (sb, _) = Sandbox::run(&env, "spmon", &p.pod.name, &[]);
    pin_gateway(&sb, &p);
    let new4 = "172.19.0.77";
    assert!(!guard_matches(&p.pod, new4));

    // Added in the pod namespace: the monitor allows it on the guard, then the guest has
    // it, and the host side reaches the guest there.
    p.pod
        .ip(&["addr", "add", &format!("{new4}/24"), "dev", "eth0"]);
    let t = Instant::now();
    wait_for("the new address to answer", FOLLOW, || {
        std::process::Command::new("ip")
            .args(["netns", "exec", &p.host.name, "ping", "-c1", "-W1", new4])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    eprintln!("{new4} answered {:?} after it was added", t.elapsed());
    assert!(guard_matches(&p.pod, new4));
    // A ping from the guest sourced from it passes the guard.
    let before = sink_drops(&p.pod).expect("the guard's sink class");
    let ok = (0..5).any(|_| {
        sb.exec(&["ping", "-c1", "-W3", "-I", new4, GW4])
            .status
            .success()
    });
    assert!(ok, "the guest cannot ping from {new4}");
    assert_eq!(sink_drops(&p.pod), Some(before), "its traffic was dropped");

    // The old address removed (the new one, secondary in the pod, stays): gone from the
    // guest, then from the guard, and a guest that takes it back anyway is dropped.
    std::process::Command::new("ip")
        .args(["netns", "exec", &p.pod.name, "sysctl", "-qw"])
        .arg("net.ipv4.conf.eth0.promote_secondaries=1")
        .status()
        .is_ok_and(|s| s.success())
        .then_some(())
        .expect("sysctl promote_secondaries in the pod");
    p.pod
        .ip(&["addr", "del", &format!("{GUEST4}/24"), "dev", "eth0"]);
    wait_for("the old address gone from the guest", FOLLOW, || {
        !sh(&sb, "ip -4 addr show dev eth0").contains(&format!("{GUEST4}/"))
    });
    wait_for("the old address gone from the guard", FOLLOW, || {
        !guard_matches(&p.pod, GUEST4)
    });
    let w = Watch::open(&p);
    let old = Hostile {
        what: "the removed address taken back",
        setup: format!("ip addr add {GUEST4}/24 dev eth0"),
        action: format!("ping -c {FRAMES} -W 1 -I {GUEST4} {GW4}"),
        cleanup: format!("ip addr del {GUEST4}/24 dev eth0"),
        spoofed: Box::new(|f| from_ipv4(f, ipv4(GUEST4))),
    };
    let s = watch_action(&sb, &p, &w, &old);
    assert_eq!(s.on_tap, FRAMES, "{s:?}");
    assert_eq!((s.on_pod_link, s.on_host), (0, 0), "{s:?}");
    s.assert_sent_is_seen(old.what);
    assert_eq!(s.dropped, FRAMES, "{s:?}");
    ping_from(&p.host, new4);
}
