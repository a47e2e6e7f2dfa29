//! The guard against the real kernel: frames written into the tap (or macvtap) fd, as a
//! guest would send them, and what arrives on the host side of the pod's veth, frame by
//! frame; the drop counter against the number of frames that should have been dropped.

use sandnet_host::guard::{self, guard_counters};
use sandnet_host::interwork::AttachOptions;
use sandnet_host::tap::VNET_HDR_LEN;
use sandnet_host::{attach, detach, InterworkingModel as Model, NetNs};
use sandnet_model::{GuestSpoofing, MacAddr, TapPolicy};
use sandnet_testkit::{mac_bytes, write_fd, PacketSocket, PodPair, TempDir};
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

fn opts(model: Model, dir: &std::path::Path, spoofing: GuestSpoofing) -> AttachOptions {
    AttachOptions {
        model,
        queues: 1,
        state_dir: dir.to_path_buf(),
        policy: TapPolicy {
            spoofing,
            ..Default::default()
        },
    }
}

/// Frames as a guest with MAC `mac` would write them; each ends with its tag.
struct Frames {
    mac: [u8; 6],
    gw_mac: [u8; 6],
}

const PROTO_TEST: u8 = 253;

impl Frames {
    fn eth(&self, src: [u8; 6], dst: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = dst.to_vec();
        f.extend(src);
        f.extend(ethertype.to_be_bytes());
        f.extend(payload);
        while f.len() < 60 {
            f.push(0);
        }
        f
    }

    fn ipv4(&self, src_mac: [u8; 6], src: Ipv4Addr, tag: &str) -> Vec<u8> {
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, PROTO_TEST, 0, 0];
        ip.extend(src.octets());
        ip.extend(Ipv4Addr::new(172, 19, 0, 1).octets());
        ip.extend(tag.as_bytes());
        let len = ip.len() as u16;
        ip[2..4].copy_from_slice(&len.to_be_bytes());
        self.eth(src_mac, self.gw_mac, 0x0800, &ip)
    }

    fn arp(&self, sha: [u8; 6], spa: Ipv4Addr, tag: &str) -> Vec<u8> {
        let mut a = vec![0, 1, 8, 0, 6, 4, 0, 2];
        a.extend(sha);
        a.extend(spa.octets());
        a.extend(self.gw_mac);
        a.extend(Ipv4Addr::new(172, 19, 0, 1).octets());
        a.extend(tag.as_bytes());
        self.eth(self.mac, self.gw_mac, 0x0806, &a)
    }

    /// IPv6 with next header `nh` and `body` after the fixed header.
    fn ipv6(&self, src_mac: [u8; 6], src: Ipv6Addr, nh: u8, body: &[u8], tag: &str) -> Vec<u8> {
        let mut b = body.to_vec();
        b.extend(tag.as_bytes());
        let mut ip = vec![0x60, 0, 0, 0];
        ip.extend((b.len() as u16).to_be_bytes());
        ip.push(nh);
        ip.push(255);
        ip.extend(src.octets());
        ip.extend("ff02::1".parse::<Ipv6Addr>().unwrap().octets());
        ip.extend(b);
        self.eth(src_mac, [0x33, 0x33, 0, 0, 0, 1], 0x86dd, &ip)
    }

    /// An ICMPv6 message of `t` with a 16-byte target (NA, NS) after 4 reserved bytes.
    fn icmp6(&self, src: Ipv6Addr, t: u8, target: Ipv6Addr, tag: &str) -> Vec<u8> {
        let mut m = vec![t, 0, 0, 0, 0, 0, 0, 0];
        m.extend(target.octets());
        self.ipv6(self.mac, src, 58, &m, tag)
    }

    fn vlan_ipv4(&self, tag: &str) -> Vec<u8> {
        let inner = self.ipv4(self.mac, Ipv4Addr::new(172, 19, 0, 5), tag);
        let mut f = inner[..12].to_vec();
        f.extend([0x81, 0x00, 0x00, 0x05]);
        f.extend(&inner[12..]);
        f
    }
}

/// Writes the frames into the guest's fd and returns the tags that arrived on the host
/// side of the veth.
fn send_and_collect(p: &PodPair, fd: &OwnedFd, frames: &[(String, Vec<u8>)]) -> BTreeSet<String> {
    let host = PacketSocket::open(&p.host, "veth0");
    for (_, f) in frames {
        let mut out = vec![0u8; VNET_HDR_LEN];
        out.extend(f);
        assert_eq!(write_fd(fd, &out), out.len());
    }
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        let got = host.recv_matching(left, |f| {
            frames
                .iter()
                .any(|(t, _)| f.windows(t.len()).any(|w| w == t.as_bytes()))
        });
        let Some(f) = got else { break };
        for (t, _) in frames {
            if f.windows(t.len()).any(|w| w == t.as_bytes()) {
                seen.insert(t.clone());
            }
        }
    }
    seen
}

/// The frames of the issue and more: `(tag, frame, passes when blocking)`.
fn cases(mac: [u8; 6], gw_mac: [u8; 6]) -> Vec<(String, Vec<u8>, bool)> {
    let f = Frames { mac, gw_mac };
    let own4 = Ipv4Addr::new(172, 19, 0, 5);
    let ll = guard::rules::link_local(MacAddr(mac));
    let other_mac = [0x02, 0, 0, 0, 0, 0x99];
    let mut hbh_mld = vec![58, 0, 5, 2, 0, 0, 1, 0];
    hbh_mld.extend([143, 0, 0, 0, 0, 0, 0, 0]);
    let v = vec![
        ("pass-ipv4-own", f.ipv4(mac, own4, "pass-ipv4-own"), true),
        ("pass-arp-own", f.arp(mac, own4, "pass-arp-own"), true),
        (
            "pass-ipv6-linklocal",
            f.ipv6(mac, ll, PROTO_TEST, &[], "pass-ipv6-linklocal"),
            true,
        ),
        ("pass-na-own", f.icmp6(ll, 136, ll, "pass-na-own"), true),
        (
            "pass-dad",
            f.icmp6(Ipv6Addr::UNSPECIFIED, 135, ll, "pass-dad"),
            true,
        ),
        ("pass-mld", f.ipv6(mac, ll, 0, &hbh_mld, "pass-mld"), true),
        (
            "drop-ipv4-foreign",
            f.ipv4(mac, Ipv4Addr::new(172, 19, 0, 99), "drop-ipv4-foreign"),
            false,
        ),
        (
            "drop-ipv4-other-mac",
            f.ipv4(other_mac, own4, "drop-ipv4-other-mac"),
            false,
        ),
        (
            "drop-arp-gateway",
            f.arp(mac, Ipv4Addr::new(172, 19, 0, 1), "drop-arp-gateway"),
            false,
        ),
        (
            "drop-arp-other-sha",
            f.arp(other_mac, own4, "drop-arp-other-sha"),
            false,
        ),
        ("drop-ra", f.icmp6(ll, 134, ll, "drop-ra"), false),
        (
            "drop-redirect",
            f.icmp6(ll, 137, ll, "drop-redirect"),
            false,
        ),
        (
            "drop-na-foreign",
            f.icmp6(ll, 136, "fd00::1".parse().unwrap(), "drop-na-foreign"),
            false,
        ),
        ("drop-vlan", f.vlan_ipv4("drop-vlan"), false),
        (
            "drop-ethertype",
            f.eth(mac, gw_mac, 0x88b5, b"drop-ethertype"),
            false,
        ),
        (
            "drop-destopts",
            f.ipv6(
                mac,
                ll,
                60,
                &[PROTO_TEST, 0, 1, 4, 0, 0, 0, 0],
                "drop-destopts",
            ),
            false,
        ),
        (
            "drop-ipv6-foreign",
            f.ipv6(
                mac,
                "fd00::99".parse().unwrap(),
                PROTO_TEST,
                &[],
                "drop-ipv6-foreign",
            ),
            false,
        ),
        (
            "drop-ipv4-foreignmac-foreignsrc",
            f.ipv4(
                other_mac,
                Ipv4Addr::new(10, 9, 9, 9),
                "drop-ipv4-foreignmac-foreignsrc",
            ),
            false,
        ),
    ];
    v.into_iter()
        .map(|(t, f, pass)| (t.to_string(), f, pass))
        .collect()
}

async fn guarded_datapath(model: Model, spoofing: GuestSpoofing, tag: &str) {
    guarded_datapath_with(model, spoofing, false, tag).await
}

/// With `limited`, passing frames go through the egress limit's class instead of HTB's
/// direct queue.
async fn guarded_datapath_with(model: Model, spoofing: GuestSpoofing, limited: bool, tag: &str) {
    let p = PodPair::new(tag);
    let mac = mac_bytes(&p.pod_mac("eth0"));
    let gw_mac = mac_bytes(p.host.link("veth0").unwrap()["address"].as_str().unwrap());
    let dir = TempDir::new(tag);
    let ns = NetNs::open(&p.pod.name.parse().unwrap()).unwrap();
    let mut o = opts(model, &dir, spoofing);
    if limited {
        o.policy.bandwidth.egress = sandnet_model::RateLimit::new(100_000_000, None);
    }
    let eps = attach(&ns, &o).await.unwrap();
    let e = &eps[0];
    let cases = cases(mac, gw_mac);
    let frames: Vec<(String, Vec<u8>)> = cases
        .iter()
        .map(|(t, f, _)| (t.clone(), f.clone()))
        .collect();
    let seen = send_and_collect(&p, &e.fds[0], &frames);
    let nl = ns.netlink().unwrap();
    let c = guard_counters(&nl, e.endpoint.index, e.tap_index)
        .await
        .unwrap();
    let want: BTreeSet<String> = cases
        .iter()
        .filter(|(_, _, pass)| *pass || spoofing == GuestSpoofing::Allow)
        .map(|(t, _, _)| t.clone())
        .collect();
    assert_eq!(seen, want, "frames that reached the host side");
    match spoofing {
        GuestSpoofing::Block => {
            assert!(c.link_guarded);
            let dropped = cases.iter().filter(|(_, _, pass)| !pass).count() as u64;
            if model == Model::Macvtap {
                // The link itself wears a new MAC while the macvtap has the guest's, and
                // its own IPv6 chatter after the change (DAD, MLD) is not the guest's.
                assert!(c.spoofed_dropped >= dropped, "{c:?}");
            } else {
                assert_eq!(c.spoofed_dropped, dropped, "{c:?}");
            }
        }
        GuestSpoofing::Allow if limited => assert!(c.link_guarded),
        GuestSpoofing::Allow => {
            assert!(
                !c.link_guarded,
                "allow without limits puts nothing on the link"
            );
            assert_eq!(c.spoofed_dropped, 0);
        }
    }
    drop(eps);
    let rep = detach(&ns, &dir).await.unwrap();
    assert!(
        p.pod
            .tc_json(&["qdisc", "show", "dev", "eth0"])
            .as_array()
            .unwrap()
            .iter()
            .all(|q| q["handle"] != "5a4e:" && q["kind"] != "htb"),
        "{rep:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcfilter_blocks_spoofed_frames_and_counts_them() {
    guarded_datapath(Model::TcFilter, GuestSpoofing::Block, "gblk").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcfilter_blocks_the_same_with_an_egress_limit() {
    guarded_datapath_with(Model::TcFilter, GuestSpoofing::Block, true, "glim").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_with_an_egress_limit_passes_everything_through_its_class() {
    guarded_datapath_with(Model::TcFilter, GuestSpoofing::Allow, true, "galim").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcfilter_allow_lets_everything_through() {
    guarded_datapath(Model::TcFilter, GuestSpoofing::Allow, "galw").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn macvtap_blocks_spoofed_frames_too() {
    guarded_datapath(Model::Macvtap, GuestSpoofing::Block, "gmvt").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_address_is_allowed_once_synced_and_an_old_one_not() {
    let p = PodPair::new("gsync");
    let mac = mac_bytes(&p.pod_mac("eth0"));
    let gw_mac = mac_bytes(p.host.link("veth0").unwrap()["address"].as_str().unwrap());
    let dir = TempDir::new("gsync");
    let ns = NetNs::open(&p.pod.name.parse().unwrap()).unwrap();
    let eps = attach(&ns, &opts(Model::TcFilter, &dir, GuestSpoofing::Block))
        .await
        .unwrap();
    let e = &eps[0];
    let nl = ns.netlink().unwrap();
    let f = Frames { mac, gw_mac };
    let new4 = Ipv4Addr::new(172, 19, 0, 77);
    let one = |t: &str| vec![(t.to_string(), f.ipv4(mac, new4, t))];
    assert!(send_and_collect(&p, &e.fds[0], &one("before")).is_empty());
    // The pod's address changes: 172.19.0.5 → 172.19.0.77, and fd00::5 arrives.
    let both: Vec<sandnet_model::IpNet> = vec![
        "172.19.0.5/24".parse().unwrap(),
        "172.19.0.77/24".parse().unwrap(),
        "fd00::5/64".parse().unwrap(),
    ];
    let m = MacAddr(mac);
    let added = guard::sync_addresses(&nl, e.endpoint.index, "eth0", m, &both)
        .await
        .unwrap();
    assert_eq!(added, 4, "IPv4 + ARP for .77, NA + source for fd00::5");
    assert_eq!(
        send_and_collect(&p, &e.fds[0], &one("after")),
        BTreeSet::from(["after".to_string()])
    );
    let now: Vec<sandnet_model::IpNet> = both[1..].to_vec();
    let removed = guard::sync_addresses(&nl, e.endpoint.index, "eth0", m, &now)
        .await
        .unwrap();
    assert_eq!(removed, 2, "IPv4 + ARP of .5 go");
    let old = vec![(
        "old".to_string(),
        f.ipv4(mac, Ipv4Addr::new(172, 19, 0, 5), "old"),
    )];
    assert!(send_and_collect(&p, &e.fds[0], &old).is_empty());
    // Idempotent.
    assert_eq!(
        guard::sync_addresses(&nl, e.endpoint.index, "eth0", m, &now)
            .await
            .unwrap(),
        0
    );
    drop(eps);
    detach(&ns, &dir).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detach_without_a_plan_sweeps_the_guard() {
    let p = PodPair::new("gswp");
    let dir = TempDir::new("gswp");
    let ns = NetNs::open(&p.pod.name.parse().unwrap()).unwrap();
    let mut o = opts(Model::TcFilter, &dir, GuestSpoofing::Block);
    o.policy.bandwidth.ingress = sandnet_model::RateLimit::new(8_000_000, None);
    o.policy.bandwidth.egress = sandnet_model::RateLimit::new(8_000_000, None);
    let eps = attach(&ns, &o).await.unwrap();
    let tap = eps[0].tap.clone().unwrap();
    let kinds = |dev: &str| -> Vec<String> {
        p.pod
            .tc_json(&["qdisc", "show", "dev", dev])
            .as_array()
            .unwrap()
            .iter()
            .map(|q| q["kind"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert!(kinds("eth0").contains(&"htb".to_string()));
    assert!(kinds(&tap).contains(&"tbf".to_string()));
    drop(eps);
    // A crash lost the plan: the marks are enough.
    for f in std::fs::read_dir(&*dir).unwrap() {
        let f = f.unwrap().path();
        if f.extension().is_some_and(|x| x == "json") {
            std::fs::remove_file(f).unwrap();
        }
    }
    let rep = detach(&ns, &dir).await.unwrap();
    assert!(!kinds("eth0").contains(&"htb".to_string()), "{rep:?}");
    assert!(p.pod.link(&tap).is_none());
    let filters = p.pod.tc_json(&["filter", "show", "dev", "eth0"]);
    assert_eq!(filters.as_array().map_or(0, |a| a.len()), 0, "{filters}");
}
