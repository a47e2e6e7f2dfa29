//! The host side against the real kernel, each test in namespaces of its own; results are
//! checked with `ip -j` / `tc -j` and, for the datapath, frame by frame.

use sandnet_host::interwork::{load_state, AttachOptions};
use sandnet_host::tap::VNET_HDR_LEN;
use sandnet_host::{
    attach, detach, scan_detail, HostError, InterworkingModel as Model, NetNs, NetNsRef,
};
use sandnet_testkit::{
    frame, has_tag, mac_bytes, recv_matching, write_fd, PacketSocket, PodPair, TempDir, TestNs,
};
use serde_json::Value;
use std::time::Duration;

/// A namespace reference as the command line would parse it.
fn nsref(s: &str) -> NetNsRef {
    s.parse().unwrap()
}

fn state_dir(tag: &str) -> TempDir {
    TempDir::new(tag)
}

fn opts(model: Model, dir: &std::path::Path) -> AttachOptions {
    AttachOptions {
        model,
        queues: 1,
        state_dir: dir.to_path_buf(),
        // These tests send frames of their own making through the datapath; the guard
        // has its own tests (guard.rs).
        policy: sandnet_model::TapPolicy::unenforced(),
    }
}

/// What `tc -j filter show dev DEV ingress` reports, as (kind, mirred target) pairs.
fn redirects(ns: &TestNs, dev: &str) -> Vec<String> {
    let v = ns.tc_json(&["filter", "show", "dev", dev, "ingress"]);
    let mut out = vec![];
    for f in v.as_array().into_iter().flatten() {
        for a in f["options"]["actions"].as_array().into_iter().flatten() {
            if a["kind"] == "mirred" {
                assert_eq!(a["control_action"]["type"], "stolen");
                out.push(format!(
                    "{} {} {}",
                    a["direction"].as_str().unwrap_or(""),
                    a["mirred_action"].as_str().unwrap_or(""),
                    a["to_dev"].as_str().unwrap_or("")
                ));
            }
        }
    }
    out
}

fn has_ingress(ns: &TestNs, dev: &str) -> bool {
    ns.tc_json(&["qdisc", "show", "dev", dev])
        .as_array()
        .into_iter()
        .flatten()
        .any(|q| q["kind"] == "ingress")
}

#[test]
fn netns_create_open_delete() {
    let name = sandnet_testkit::unique("create");
    let ns = NetNs::create(&name).unwrap();
    let listed = sandnet_testkit::run("ip", &["netns", "list"]);
    assert!(listed.contains(&name), "{listed}");
    let by_path = NetNs::open(&nsref(&format!("/run/netns/{name}"))).unwrap();
    let by_var = NetNs::open(&nsref(&format!("/var/run/netns/{name}"))).unwrap();
    assert_eq!(ns.id().unwrap(), by_path.id().unwrap());
    assert_eq!(ns.id().unwrap(), by_var.id().unwrap());
    assert_ne!(ns.id().unwrap(), NetNs::current().unwrap().id().unwrap());
    // It is a real, separate namespace: only lo inside.
    let links = sandnet_testkit::run("ip", &["-n", &name, "-j", "link"]);
    let v: Value = serde_json::from_str(&links).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert!(matches!(
        NetNs::create(&name),
        Err(HostError::NetnsExists(_))
    ));
    NetNs::delete(&name).unwrap();
    assert!(!sandnet_testkit::run("ip", &["netns", "list"]).contains(&name));
    NetNs::delete(&name).unwrap();
    assert!(matches!(
        NetNs::open(&nsref(&name)),
        Err(HostError::NetnsNotFound(_))
    ));
}

#[test]
fn netns_bad_input() {
    assert!(matches!(
        NetNs::open(&nsref("sandnet-no-such-ns")),
        Err(HostError::NetnsNotFound(_))
    ));
    assert!(matches!(
        NetNs::open(&nsref("/proc/self/ns/uts")),
        Err(HostError::NotANetns(_))
    ));
    assert!(matches!(
        NetNs::open(&nsref("/etc/hostname")),
        Err(HostError::NotANetns(_))
    ));
    assert!(matches!(
        NetNs::create("a/b"),
        Err(HostError::InvalidNetnsName(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_matches_ip() {
    let p = PodPair::new("scan");
    let pod = &p.pod;
    pod.ip(&["link", "set", "eth0", "mtu", "1400"]);
    pod.ip(&["addr", "add", "fd00:19::5/64", "dev", "eth0", "nodad"]);
    pod.ip(&[
        "route",
        "add",
        "10.10.0.0/16",
        "via",
        "172.19.0.254",
        "dev",
        "eth0",
        "mtu",
        "1300",
    ]);
    pod.ip(&[
        "route",
        "add",
        "192.168.50.0/24",
        "dev",
        "eth0",
        "scope",
        "link",
    ]);
    pod.ip(&[
        "-6",
        "route",
        "add",
        "default",
        "via",
        "fd00:19::1",
        "dev",
        "eth0",
    ]);
    pod.ip(&[
        "neigh",
        "add",
        "172.19.0.9",
        "lladdr",
        "02:00:00:00:00:09",
        "dev",
        "eth0",
        "nud",
        "permanent",
    ]);
    pod.ip(&["link", "add", "br0", "type", "bridge"]);
    pod.ip(&["addr", "add", "10.99.0.1/32", "dev", "br0"]);

    let ns = NetNs::open(&nsref(&pod.name)).unwrap();
    let s = scan_detail(&ns.netlink().unwrap()).await.unwrap();
    let c = &s.config;
    // Interfaces: everything but lo, with what ip reports.
    let ip_links = pod.ip_json(&["link", "show"]);
    let names: Vec<&str> = c.interfaces.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(
        names.len(),
        ip_links.as_array().unwrap().len() - 1,
        "{names:?}"
    );
    let eth0 = c.interface("eth0").unwrap();
    let ip_eth0 = pod.link("eth0").unwrap();
    assert_eq!(eth0.kind.as_str(), "veth");
    assert_eq!(eth0.mtu, 1400);
    assert_eq!(
        eth0.mac.unwrap().to_string(),
        ip_eth0["address"].as_str().unwrap()
    );
    assert!(eth0.is_up());
    let mut want: Vec<String> = pod.ip_json(&["addr", "show", "dev", "eth0"])[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["scope"] != "link")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect();
    let mut got: Vec<String> = eth0.addresses.iter().map(|a| a.to_string()).collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
    assert_eq!(c.interface("br0").unwrap().kind.as_str(), "bridge");

    // Routes: main table minus proto kernel, both families.
    let find = |dest: &str| c.routes.iter().find(|r| r.dest.to_string() == dest);
    let d4 = find("0.0.0.0/0").expect("default v4");
    assert_eq!(d4.gateway.unwrap().to_string(), "172.19.0.1");
    assert_eq!(d4.device, "eth0");
    let r = find("10.10.0.0/16").unwrap();
    assert_eq!(r.mtu, Some(1300));
    assert_eq!(r.gateway.unwrap().to_string(), "172.19.0.254");
    let l = find("192.168.50.0/24").unwrap();
    assert_eq!(l.scope.to_raw(), 253);
    assert!(l.gateway.is_none());
    let d6 = find("::/0").expect("default v6");
    assert_eq!(d6.gateway.unwrap().to_string(), "fd00:19::1");
    assert!(
        find("172.19.0.0/24").is_none(),
        "proto kernel routes are not copied"
    );
    let ip_routes = pod.ip_json(&["route", "show"]);
    let non_kernel = ip_routes
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["protocol"] != "kernel")
        .count();
    assert_eq!(
        c.routes
            .iter()
            .filter(|r| r.family == sandnet_model::Family::V4)
            .count(),
        non_kernel
    );

    // Neighbours: the permanent one.
    let n = c
        .neighbors
        .iter()
        .find(|n| n.ip.to_string() == "172.19.0.9")
        .unwrap();
    assert_eq!(n.mac.to_string(), "02:00:00:00:00:09");
    assert_eq!(n.state, sandnet_model::NeighborState::Permanent);

    // Endpoints: eth0 only (a bridge is not a NIC).
    let eps = sandnet_host::endpoint::endpoints(&s);
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0].name, "eth0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcfilter_attach_detach_as_tc_sees_it() {
    let p = PodPair::new("tcf");
    p.pod.ip(&["link", "set", "eth0", "mtu", "1450"]);
    let dir = state_dir("tcf");
    let ns = NetNs::open(&nsref(&p.pod.name)).unwrap();
    let eps = attach(&ns, &opts(Model::TcFilter, &dir)).await.unwrap();
    assert_eq!(eps.len(), 1);
    let e = &eps[0];
    let tap = e.tap.clone().unwrap();
    assert_eq!(e.guest_mac.to_string(), p.pod_mac("eth0"));
    assert_eq!(e.fds.len(), 1);

    let t = p.pod.link(&tap).expect("tap exists");
    assert_eq!(t["mtu"], 1450);
    assert_eq!(t["linkinfo"]["info_kind"], "tun");
    assert_eq!(t["linkinfo"]["info_data"]["type"], "tap");
    assert_eq!(t["linkinfo"]["info_data"]["vnet_hdr"], true);
    assert!(t["ifalias"].as_str().unwrap().starts_with("sandnet:"));
    assert!(has_ingress(&p.pod, "eth0") && has_ingress(&p.pod, &tap));
    assert_eq!(
        redirects(&p.pod, "eth0"),
        vec![format!("egress redirect {tap}")]
    );
    assert_eq!(
        redirects(&p.pod, &tap),
        vec!["egress redirect eth0".to_string()]
    );
    assert!(
        load_state(&dir, ns.id().unwrap())
            .unwrap()
            .unwrap()
            .complete
    );

    drop(eps);
    // Persistent: still there without our fds.
    assert!(p.pod.link(&tap).is_some());
    let rep = detach(&ns, &dir).await.unwrap();
    assert!(!rep.nothing_attached);
    assert!(p.pod.link(&tap).is_none());
    assert!(!has_ingress(&p.pod, "eth0"));
    assert!(redirects(&p.pod, "eth0").is_empty());
    assert!(load_state(&dir, ns.id().unwrap()).unwrap().is_none());
    // The pod network is as it was.
    assert_eq!(p.pod.link_names().len(), 2);
    let again = detach(&ns, &dir).await.unwrap();
    assert!(again.nothing_attached, "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcfilter_keeps_a_qdisc_it_did_not_create() {
    let p = PodPair::new("keepq");
    p.pod.tc_json(&["qdisc", "add", "dev", "eth0", "ingress"]);
    let dir = state_dir("keepq");
    let ns = NetNs::open(&nsref(&p.pod.name)).unwrap();
    attach(&ns, &opts(Model::TcFilter, &dir)).await.unwrap();
    detach(&ns, &dir).await.unwrap();
    assert!(
        has_ingress(&p.pod, "eth0"),
        "a qdisc that was there before stays"
    );
    assert!(redirects(&p.pod, "eth0").is_empty());
}

fn datapath_roundtrip(p: &PodPair, fd: &std::os::fd::OwnedFd, guest_mac: &str) {
    let host = PacketSocket::open(&p.host, "veth0");
    let host_mac = mac_bytes(p.host.link("veth0").unwrap()["address"].as_str().unwrap());
    let gmac = mac_bytes(guest_mac);
    // Host side → veth → (redirect or macvtap) → fd.
    let tag = b"sandnet-to-guest";
    host.send(&frame(gmac, host_mac, tag));
    let got = recv_matching(fd, VNET_HDR_LEN, Duration::from_secs(3), |f| {
        has_tag(f, tag)
    })
    .expect("frame from the host side comes out of the tap fd");
    assert_eq!(&got[0..6], &gmac);
    // fd → (redirect or macvtap) → veth → host side.
    let tag = b"sandnet-from-guest";
    let mut out = vec![0u8; VNET_HDR_LEN];
    out.extend_from_slice(&frame(host_mac, gmac, tag));
    assert_eq!(write_fd(fd, &out), out.len());
    let got = host
        .recv_matching(Duration::from_secs(3), |f| has_tag(f, tag))
        .expect("frame written to the tap fd leaves by the veth");
    assert_eq!(&got[6..12], &gmac);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcfilter_datapath_both_ways() {
    let p = PodPair::new("tcdp");
    let dir = state_dir("tcdp");
    let ns = NetNs::open(&nsref(&p.pod.name)).unwrap();
    let eps = attach(&ns, &opts(Model::TcFilter, &dir)).await.unwrap();
    datapath_roundtrip(&p, &eps[0].fds[0], &eps[0].guest_mac.to_string());
    drop(eps);
    detach(&ns, &dir).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn macvtap_datapath_and_restore() {
    let p = PodPair::new("mvt");
    p.pod
        .ip(&["route", "add", "10.20.0.0/16", "via", "172.19.0.1"]);
    let before_mac = p.pod_mac("eth0");
    let before_routes = p.pod.ip_json(&["route", "show"]);
    let dir = state_dir("mvt");
    let ns = NetNs::open(&nsref(&p.pod.name)).unwrap();
    let eps = attach(&ns, &opts(Model::Macvtap, &dir)).await.unwrap();
    let e = &eps[0];
    assert_eq!(e.guest_mac.to_string(), before_mac);
    let tap = e.tap.clone().unwrap();
    let mvt = p.pod.link(&tap).expect("macvtap exists");
    assert_eq!(mvt["linkinfo"]["info_kind"], "macvtap");
    assert_eq!(mvt["linkinfo"]["info_data"]["mode"], "bridge");
    assert_eq!(mvt["address"], before_mac.as_str());
    let now_mac = p.pod_mac("eth0");
    assert_ne!(now_mac, before_mac);
    assert_eq!(
        u8::from_str_radix(&now_mac[..2], 16).unwrap() & 2,
        2,
        "locally administered"
    );
    let addrs = &p.pod.ip_json(&["addr", "show", "dev", "eth0"])[0]["addr_info"];
    assert!(
        !addrs
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["family"] == "inet"),
        "the guest takes the address: {addrs}"
    );
    assert!(e.device.as_ref().unwrap().exists());
    datapath_roundtrip(&p, &e.fds[0], &before_mac);

    drop(eps);
    detach(&ns, &dir).await.unwrap();
    assert!(p.pod.link(&tap).is_none());
    assert_eq!(p.pod_mac("eth0"), before_mac);
    assert_eq!(p.pod.ip_json(&["route", "show"]), before_routes);
    let addrs = &p.pod.ip_json(&["addr", "show", "dev", "eth0"])[0]["addr_info"];
    assert!(addrs
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["local"] == "172.19.0.5"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiqueue_taps_and_reopen_by_name() {
    let p = PodPair::new("mq");
    let dir = state_dir("mq");
    let ns = NetNs::open(&nsref(&p.pod.name)).unwrap();
    let mut o = opts(Model::TcFilter, &dir);
    o.queues = 4;
    let eps = attach(&ns, &o).await.unwrap();
    assert_eq!(eps[0].fds.len(), 4);
    let tap = eps[0].tap.clone().unwrap();
    let t = p.pod.link(&tap).unwrap();
    assert_eq!(t["linkinfo"]["info_data"]["multi_queue"], true, "{t}");
    drop(eps);
    // A VMM opens the persistent tap again by name, one fd per queue.
    let fds = ns
        .run(|| {
            sandnet_host::tap::open_tap(
                &tap,
                sandnet_host::tap::TapOptions {
                    queues: 4,
                    vnet_hdr: true,
                },
            )
        })
        .unwrap()
        .unwrap();
    assert_eq!(fds.len(), 4);
    drop(fds);
    detach(&ns, &dir).await.unwrap();
    assert!(p.pod.link(&tap).is_none());
    let mut bad = opts(Model::TcFilter, &dir);
    bad.queues = 0;
    assert!(matches!(
        attach(&ns, &bad).await,
        Err(HostError::InvalidArgument(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_twice_is_refused_and_changes_nothing() {
    let p = PodPair::new("twice");
    let dir = state_dir("twice");
    let ns = NetNs::open(&nsref(&p.pod.name)).unwrap();
    attach(&ns, &opts(Model::TcFilter, &dir)).await.unwrap();
    let links = p.pod.link_names();
    let st = load_state(&dir, ns.id().unwrap()).unwrap();
    let err = attach(&ns, &opts(Model::TcFilter, &dir)).await.unwrap_err();
    assert!(matches!(err, HostError::AlreadyAttached { .. }), "{err}");
    // Also when the state is elsewhere: the namespace itself carries the mark.
    let other = state_dir("twice2");
    let err = attach(&ns, &opts(Model::Macvtap, &other))
        .await
        .unwrap_err();
    assert!(matches!(err, HostError::AlreadyAttached { .. }), "{err}");
    assert_eq!(p.pod.link_names(), links);
    assert_eq!(load_state(&dir, ns.id().unwrap()).unwrap(), st);
    detach(&ns, &dir).await.unwrap();
    // Serialising attach and detach left no lock or temporary file behind.
    for d in [&dir, &other] {
        let left: Vec<_> = std::fs::read_dir(&**d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "{left:?} left in {}", d.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_link_rolls_back_everything() {
    let p = PodPair::new("vanish");
    p.add_veth("eth1", "veth1", "10.1.0.5/24", "10.1.0.1/24");
    let dir = state_dir("vanish");
    let ns = NetNs::open(&nsref(&p.pod.name)).unwrap();
    let nl = ns.netlink().unwrap();
    let scan = scan_detail(&nl).await.unwrap();
    let before_links = p.pod.link_names();
    // eth1 goes away between scan and attach; eth0 (attached first) must be rolled back.
    p.pod.ip(&["link", "del", "eth1"]);
    let err =
        sandnet_host::interwork::attach_scanned(&ns, &nl, &scan, &opts(Model::TcFilter, &dir))
            .await
            .unwrap_err();
    assert!(
        matches!(&err, HostError::LinkNotFound(n) if n == "eth1"),
        "{err}"
    );
    let after: Vec<String> = p.pod.link_names();
    assert_eq!(after.len(), before_links.len() - 1, "{after:?}");
    assert!(!after.iter().any(|n| n.starts_with("sntap")));
    assert!(!has_ingress(&p.pod, "eth0"));
    assert!(load_state(&dir, ns.id().unwrap()).unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detach_from_marks_when_state_is_lost_and_after_partial_damage() {
    let p = PodPair::new("lost");
    p.add_veth("eth1", "veth1", "10.1.0.5/24", "10.1.0.1/24");
    let dir = state_dir("lost");
    let ns = NetNs::open(&nsref(&p.pod.name)).unwrap();
    let eps = attach(&ns, &opts(Model::TcFilter, &dir)).await.unwrap();
    let taps: Vec<String> = eps.iter().map(|e| e.tap.clone().unwrap()).collect();
    drop(eps);
    // Someone removed one tap by hand, and the state directory was wiped.
    p.pod.ip(&["link", "del", &taps[0]]);
    std::fs::remove_dir_all(&dir).unwrap();
    let rep = detach(&ns, &dir).await.unwrap();
    assert!(!rep.nothing_attached);
    for t in &taps {
        assert!(p.pod.link(t).is_none());
    }
    assert!(redirects(&p.pod, "eth0").is_empty() && redirects(&p.pod, "eth1").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifteen_byte_names_and_skipped_kinds() {
    let p = PodPair::new("long");
    let long = "abcdefghijklmno";
    assert_eq!(long.len(), 15);
    p.add_veth(long, "vlong", "10.2.0.5/24", "10.2.0.1/24");
    p.pod.ip(&["link", "add", "br0", "type", "bridge"]);
    p.pod.ip(&["addr", "add", "10.3.0.1/24", "dev", "br0"]);
    p.pod.ip(&[
        "link", "add", "noaddr0", "type", "veth", "peer", "name", "noaddr1",
    ]);
    let dir = state_dir("long");
    let ns = NetNs::open(&nsref(&p.pod.name)).unwrap();
    let eps = attach(&ns, &opts(Model::TcFilter, &dir)).await.unwrap();
    let names: Vec<&str> = eps.iter().map(|e| e.endpoint.name.as_str()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&long) && names.contains(&"eth0"));
    let e = eps.iter().find(|e| e.endpoint.name == long).unwrap();
    assert_eq!(
        redirects(&p.pod, long),
        vec![format!("egress redirect {}", e.tap.as_ref().unwrap())]
    );
    drop(eps);
    detach(&ns, &dir).await.unwrap();
    assert!(!p.pod.link_names().iter().any(|n| n.starts_with("sntap")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_attach_reports_its_phases_and_connects_every_endpoint() {
    let p = PodPair::new("timed");
    p.add_veth("eth1", "veth1", "10.2.0.5/24", "10.2.0.1/24");
    p.add_veth("eth2", "veth2", "10.3.0.5/24", "10.3.0.1/24");
    let dir = state_dir("timed");
    let ns = NetNs::open(&nsref(&p.pod.name)).unwrap();
    let (eps, t) = sandnet_host::attach_timed(&ns, &opts(Model::TcFilter, &dir))
        .await
        .unwrap();
    assert_eq!(eps.len(), 3);
    // Every phase ran (a phase of zero microseconds is possible, all of them are not).
    assert!(t.scan_us + t.plan_write_us + t.connect_us > 0, "{t:?}");
    for e in &eps {
        let tap = e.tap.as_deref().unwrap();
        // The index the batch used is the tap's, and the tap is up, marked and persistent.
        let l = p.pod.link(tap).unwrap();
        assert_eq!(l["ifindex"].as_u64(), e.tap_index.map(u64::from), "{l}");
        assert!(l["flags"].to_string().contains("\"UP\""), "{l}");
        assert_eq!(l["mtu"], 1500);
        assert!(
            l["ifalias"].as_str().unwrap().starts_with("sandnet:"),
            "{l}"
        );
        assert_eq!(l["linkinfo"]["info_data"]["persist"], true, "{l}");
        assert_eq!(
            redirects(&p.pod, &e.endpoint.name),
            vec![format!("egress redirect {tap}")]
        );
        assert_eq!(
            redirects(&p.pod, tap),
            vec![format!("egress redirect {}", e.endpoint.name)]
        );
    }
    let st = load_state(&dir, ns.id().unwrap()).unwrap().unwrap();
    assert!(st.complete);
    drop(eps);
    detach(&ns, &dir).await.unwrap();
    assert!(!p.pod.link_names().iter().any(|n| n.starts_with("sntap")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_link_plugged_and_unplugged_leaves_the_other_alone() {
    use sandnet_host::interwork::{attach_link, detach_link};
    let p = PodPair::new("plug1");
    p.add_veth("eth1", "veth1", "10.4.0.5/24", "10.4.0.1/24");
    let dir = state_dir("plug1");
    let ns = NetNs::open(&nsref(&p.pod.name)).unwrap();
    let nl = ns.netlink().unwrap();
    let o = opts(Model::TcFilter, &dir);
    let scan = scan_detail(&nl).await.unwrap();
    let a0 = attach_link(&ns, &nl, &scan, &o, "eth0").await.unwrap();
    let a1 = attach_link(&ns, &nl, &scan, &o, "eth1").await.unwrap();
    for a in [&a0, &a1] {
        let tap = a.tap.clone().unwrap();
        assert_eq!(
            redirects(&p.pod, &a.endpoint.name),
            vec![format!("egress redirect {tap}")]
        );
        assert_eq!(p.pod.link(&tap).unwrap()["ifindex"], a.tap_index.unwrap());
    }
    detach_link(&ns, &nl, &dir, "eth0").await.unwrap();
    let tap1 = a1.tap.clone().unwrap();
    assert!(p.pod.link(a0.tap.as_deref().unwrap()).is_none());
    assert!(!has_ingress(&p.pod, "eth0"));
    assert_eq!(
        redirects(&p.pod, "eth1"),
        vec![format!("egress redirect {tap1}")]
    );
    drop((a0, a1));
    detach(&ns, &dir).await.unwrap();
    assert!(!p.pod.link_names().iter().any(|n| n.starts_with("sntap")));
}
