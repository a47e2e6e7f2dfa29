//! The real `sandnet-agent --listen` in a throwaway netns, driven with `AgentClient`,
//! checked with `ip -j`. Needs root.

mod common;

use common::AgentNs;
use sandnet_agent_proto::ttrpc::Code;
use sandnet_agent_proto::{agent, agent_ttrpc, types};
use sandnet_model::{Dns, Family, Interface, LinkKind, Neighbor, NeighborState, Route, RouteScope};
use std::time::Duration;

const MAC_A: &str = "02:00:5e:10:00:01";
const MAC_B: &str = "02:00:5e:10:00:02";

fn iface(name: &str, mac: &str, mtu: u32, addrs: &[&str]) -> Interface {
    Interface {
        name: name.into(),
        kind: LinkKind::Physical,
        mac: Some(mac.parse().unwrap()),
        mtu,
        addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        flags: 0,
    }
}

fn route(dest: &str, gw: Option<&str>, dev: &str, scope: RouteScope, mtu: Option<u32>) -> Route {
    let dest: sandnet_model::IpNet = dest.parse().unwrap();
    Route {
        family: Family::of(&dest.addr()),
        dest,
        gateway: gw.map(|g| g.parse().unwrap()),
        device: dev.into(),
        source: None,
        scope,
        mtu,
        flags: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_version() {
    let env = AgentNs::new("health", &[]);
    let c = env.client().await;
    assert!(c.version().await.unwrap().starts_with("sandnet-agent"));
    // A client over an already-connected stream.
    let s = tokio::net::UnixStream::connect(&env.sock).await.unwrap();
    let c2 = sandnet_agent_proto::AgentClient::from_stream(s);
    c2.health_check().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_interface_applies_and_keeps_foreign_addresses() {
    let env = AgentNs::new(
        "updif",
        &[
            &[
                "link", "add", "d0", "address", MAC_A, "type", "veth", "peer", "name", "d0p",
            ],
            &["link", "set", "d0p", "up"],
            &["addr", "add", "192.168.99.1/24", "dev", "d0"],
        ],
    );
    let c = env.client().await;
    let want = iface("eth0", MAC_A, 1400, &["10.1.0.2/24", "fd00:1::2/64"]);
    for _ in 0..2 {
        let got = c.update_interface(&want).await.unwrap();
        assert_eq!(got.name, "eth0");
        assert_eq!(got.mtu, 1400);
        assert!(got.is_up());
        assert_eq!(got.mac, want.mac);
        let l = env.link("eth0");
        assert_eq!(l["mtu"], 1400);
        assert_eq!(l["address"], MAC_A);
        assert!(l["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
        let a = env.addrs("eth0");
        for x in ["10.1.0.2/24", "fd00:1::2/64", "192.168.99.1/24"] {
            assert!(a.contains(&x.to_string()), "{x} missing from {a:?}");
        }
        // Each address once, however often the request is repeated.
        assert_eq!(a.iter().filter(|x| *x == "10.1.0.2/24").count(), 1);
    }
    // A new request replaces what the agent added, never what it did not.
    let got = c
        .update_interface(&iface("eth0", MAC_A, 1500, &["10.1.0.3/24"]))
        .await
        .unwrap();
    assert_eq!(got.mtu, 1500);
    let a = env.addrs("eth0");
    assert!(a.contains(&"10.1.0.3/24".to_string()), "{a:?}");
    assert!(a.contains(&"192.168.99.1/24".to_string()), "{a:?}");
    assert!(!a.contains(&"10.1.0.2/24".to_string()), "{a:?}");
    assert!(!a.contains(&"fd00:1::2/64".to_string()), "{a:?}");
    // ListInterfaces reports the same.
    let list = c.list_interfaces().await.unwrap();
    let e = list.iter().find(|i| i.name == "eth0").unwrap();
    assert!(e.addresses.contains(&"10.1.0.3/24".parse().unwrap()));
    assert_eq!(e.kind, LinkKind::Veth);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_swaps_with_a_clashing_link() {
    let env = AgentNs::new(
        "rename",
        &[
            &[
                "link", "add", "d0", "address", MAC_A, "type", "veth", "peer", "name", "d0p",
            ],
            &["link", "set", "d0p", "up"],
            &[
                "link", "add", "eth0", "address", MAC_B, "type", "veth", "peer", "name", "e0p",
            ],
            &["link", "set", "eth0", "up"],
        ],
    );
    let c = env.client().await;
    c.update_interface(&iface("eth0", MAC_A, 0, &["10.9.0.2/24"]))
        .await
        .unwrap();
    assert_eq!(env.link("eth0")["address"], MAC_A);
    let other = env.link("d0");
    assert_eq!(other["address"], MAC_B);
    // The link moved aside keeps its state.
    assert!(other["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_routes_orders_replaces_and_prunes() {
    let env = AgentNs::new(
        "routes",
        &[
            &[
                "link", "add", "d0", "address", MAC_A, "type", "veth", "peer", "name", "d0p",
            ],
            &["link", "set", "d0p", "up"],
        ],
    );
    let c = env.client().await;
    c.update_interface(&iface(
        "eth0",
        MAC_A,
        1500,
        &["10.1.0.2/24", "fd00:1::2/64"],
    ))
    .await
    .unwrap();
    // Given gateway-first: the 10.4/16 route's gateway is only reachable through the
    // link route 10.2/16, so the agent must install link routes first.
    let routes = vec![
        route(
            "10.4.0.0/16",
            Some("10.2.0.1"),
            "eth0",
            RouteScope::Universe,
            None,
        ),
        route(
            "0.0.0.0/0",
            Some("10.1.0.1"),
            "eth0",
            RouteScope::Universe,
            None,
        ),
        route(
            "10.3.0.0/16",
            Some("10.1.0.1"),
            "eth0",
            RouteScope::Universe,
            Some(1300),
        ),
        route("10.2.0.0/16", None, "eth0", RouteScope::Link, None),
        route(
            "::/0",
            Some("fd00:1::1"),
            "eth0",
            RouteScope::Universe,
            None,
        ),
    ];
    let mut first = None;
    for _ in 0..2 {
        let got = c.update_routes(&routes).await.unwrap();
        for r in &routes {
            assert!(
                got.iter()
                    .any(|g| g.dest == r.dest && g.gateway == r.gateway),
                "{r:?} not in {got:?}"
            );
        }
        if let Some(f) = &first {
            assert_eq!(f, &got, "repeated UpdateRoutes changed the result");
        }
        first = Some(got);
    }
    let v4 = env.ip_json(&["route", "show"]);
    let find = |dst: &str| {
        v4.as_array()
            .unwrap()
            .iter()
            .find(|r| r["dst"] == dst)
            .cloned()
            .unwrap_or_else(|| panic!("{dst} not in {v4}"))
    };
    assert_eq!(find("default")["gateway"], "10.1.0.1");
    assert_eq!(find("10.4.0.0/16")["gateway"], "10.2.0.1");
    assert_eq!(find("10.2.0.0/16")["scope"], "link");
    assert_eq!(find("10.3.0.0/16")["metrics"][0]["mtu"], 1300);
    let v6 = env.ip_json(&["-6", "route", "show"]);
    assert!(
        v6.as_array()
            .unwrap()
            .iter()
            .any(|r| r["dst"] == "default" && r["gateway"] == "fd00:1::1"),
        "{v6}"
    );
    // ListRoutes: correct family and the gateway routes' real dest (Kata gets both wrong).
    let listed = c.list_routes().await.unwrap();
    let r = listed
        .iter()
        .find(|r| r.dest.to_string() == "10.3.0.0/16")
        .unwrap();
    assert_eq!(r.gateway, Some("10.1.0.1".parse().unwrap()));
    assert_eq!(r.mtu, Some(1300));
    let d6 = listed
        .iter()
        .find(|r| r.dest.to_string() == "::/0")
        .unwrap();
    assert_eq!(d6.family, Family::V6);

    // The request is the whole set for eth0: what is left out goes.
    let fewer = vec![route(
        "0.0.0.0/0",
        Some("10.1.0.1"),
        "eth0",
        RouteScope::Universe,
        Some(1400),
    )];
    c.update_routes(&fewer).await.unwrap();
    let v4 = env.ip_json(&["route", "show"]);
    let dsts: Vec<&str> = v4
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["dst"].as_str().unwrap())
        .collect();
    assert!(dsts.contains(&"default"), "{dsts:?}");
    assert!(!dsts.contains(&"10.3.0.0/16"), "{dsts:?}");
    assert!(!dsts.contains(&"10.4.0.0/16"), "{dsts:?}");
    // The kernel's own prefix route stays.
    assert!(dsts.contains(&"10.1.0.0/24"), "{dsts:?}");
    let def = v4
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["dst"] == "default")
        .unwrap();
    assert_eq!(def["metrics"][0]["mtu"], 1400, "replace semantics: {def}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kata_encoded_default_route_with_empty_dest() {
    let env = AgentNs::new(
        "katart",
        &[
            &[
                "link", "add", "d0", "address", MAC_A, "type", "veth", "peer", "name", "d0p",
            ],
            &["link", "set", "d0p", "up"],
        ],
    );
    let c = env.client().await;
    c.update_interface(&iface("eth0", MAC_A, 1500, &["10.1.0.2/24"]))
        .await
        .unwrap();
    // Exactly what Kata's Go runtime sends: no dest, family v4, scope 0.
    let raw = raw_client(&env).await;
    let req = agent::UpdateRoutesRequest {
        routes: Some(agent::Routes {
            Routes: vec![types::Route {
                gateway: "10.1.0.1".into(),
                device: "eth0".into(),
                family: types::IPFamily::v4.into(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    let got = raw
        .update_routes(ttrpc_ctx(), &req)
        .await
        .expect("update routes");
    assert!(got
        .Routes
        .iter()
        .any(|r| r.dest == "0.0.0.0/0" && r.gateway == "10.1.0.1"));
    let v4 = env.ip_json(&["route", "show", "default"]);
    assert_eq!(v4[0]["gateway"], "10.1.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arp_neighbors_are_permanent_and_replaced() {
    let env = AgentNs::new(
        "neigh",
        &[
            &[
                "link", "add", "d0", "address", MAC_A, "type", "veth", "peer", "name", "d0p",
            ],
            &["link", "set", "d0p", "up"],
        ],
    );
    let c = env.client().await;
    c.update_interface(&iface("eth0", MAC_A, 1500, &["10.1.0.2/24"]))
        .await
        .unwrap();
    let mut n = Neighbor {
        ip: "10.1.0.1".parse().unwrap(),
        mac: "aa:bb:cc:dd:ee:01".parse().unwrap(),
        device: "eth0".into(),
        state: NeighborState::Permanent,
        flags: 0,
    };
    for _ in 0..2 {
        c.add_arp_neighbors(std::slice::from_ref(&n)).await.unwrap();
    }
    let v = env.ip_json(&["neigh", "show", "dev", "eth0"]);
    let e = v
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["dst"] == "10.1.0.1")
        .unwrap();
    assert_eq!(e["lladdr"], "aa:bb:cc:dd:ee:01");
    assert!(e["state"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s == "PERMANENT"));
    assert_eq!(v.as_array().unwrap().len(), 1);
    n.mac = "aa:bb:cc:dd:ee:02".parse().unwrap();
    c.add_arp_neighbors(&[n]).await.unwrap();
    let v = env.ip_json(&["neigh", "show", "dev", "eth0"]);
    assert_eq!(v[0]["lladdr"], "aa:bb:cc:dd:ee:02");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_sandbox_writes_resolv_conf_and_hostname_under_root() {
    let env = AgentNs::new("sandbox", &[]);
    let c = env.client().await;
    let dns = Dns {
        nameservers: vec!["10.96.0.10".parse().unwrap(), "fd00::10".parse().unwrap()],
        search: vec!["default.svc.cluster.local".into()],
        options: vec!["ndots:5".into()],
    };
    for _ in 0..2 {
        c.create_sandbox("pod-a", &dns).await.unwrap();
    }
    let rc = std::fs::read_to_string(env.root().join("etc/resolv.conf")).unwrap();
    assert_eq!(
        Dns::from_lines(rc.lines()).unwrap(),
        dns,
        "resolv.conf was:\n{rc}"
    );
    assert_eq!(
        std::fs::read_to_string(env.root().join("etc/hostname")).unwrap(),
        "pod-a\n"
    );
    let e = c.create_sandbox("bad host name", &dns).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::INVALID_ARGUMENT), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_passes_output_and_exit_code_and_times_out() {
    let env = AgentNs::new("exec", &[]);
    let c = env.client().await;
    let args: Vec<String> = ["sh", "-c", "cat; echo out; echo err >&2; exit 3"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let o = c
        .exec_with(&args, &["X=1".into()], b"in\n", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(o.exit_code, 3);
    assert_eq!(o.stdout, b"in\nout\n");
    assert_eq!(o.stderr, b"err\n");
    // It runs inside the agent's netns.
    let o = c
        .exec(
            &["ip".into(), "-o".into(), "link".into()],
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(o.exit_code, 0);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).lines().count(),
        1,
        "only lo"
    );
    let t = std::time::Instant::now();
    let e = c
        .exec(&["sleep".into(), "30".into()], Duration::from_millis(300))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::DEADLINE_EXCEEDED), "{e}");
    assert!(t.elapsed() < Duration::from_secs(5));
    let e = c
        .exec(&["no-such-command-sandnet".into()], Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::NOT_FOUND), "{e}");
    c.health_check().await.unwrap();
}

async fn raw_client(env: &AgentNs) -> agent_ttrpc::AgentServiceClient {
    let s = tokio::net::UnixStream::connect(&env.sock).await.unwrap();
    let c = sandnet_agent_proto::ttrpc::r#async::Client::new(
        sandnet_agent_proto::ttrpc::r#async::transport::Socket::new(s),
    );
    agent_ttrpc::AgentServiceClient::new(c)
}

fn ttrpc_ctx() -> sandnet_agent_proto::ttrpc::context::Context {
    sandnet_agent_proto::ttrpc::context::with_timeout(5_000_000_000)
}

fn code_of(e: &sandnet_agent_proto::ttrpc::Error) -> Code {
    match e {
        sandnet_agent_proto::ttrpc::Error::RpcStatus(s) => s.code(),
        other => panic!("expected a status, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_error_statuses_and_the_agent_keeps_serving() {
    let env = AgentNs::new(
        "bad",
        &[
            &[
                "link", "add", "d0", "address", MAC_A, "type", "veth", "peer", "name", "d0p",
            ],
            &["link", "set", "d0p", "up"],
        ],
    );
    let c = env.client().await;

    // Unknown MAC, after the wait.
    let t = std::time::Instant::now();
    let e = c
        .update_interface(&iface("eth9", "02:99:99:99:99:99", 1500, &[]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::NOT_FOUND), "{e}");
    assert!(t.elapsed() >= Duration::from_millis(500), "it waited");
    c.health_check().await.unwrap();

    // An address without a prefix (what the model cannot even express: raw message).
    let raw = raw_client(&env).await;
    let req = agent::UpdateInterfaceRequest {
        interface: Some(types::Interface {
            name: "eth0".into(),
            hwAddr: MAC_A.into(),
            mtu: 1500,
            IPAddresses: vec![types::IPAddress {
                address: "10.1.0.2".into(),
                mask: String::new(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    let e = raw.update_interface(ttrpc_ctx(), &req).await.unwrap_err();
    assert_eq!(code_of(&e), Code::INVALID_ARGUMENT, "{e:?}");
    // No interface at all.
    let e = raw
        .update_interface(ttrpc_ctx(), &agent::UpdateInterfaceRequest::new())
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), Code::INVALID_ARGUMENT, "{e:?}");
    c.health_check().await.unwrap();

    // A route to an unknown device; nothing of the request is applied.
    let e = c
        .update_routes(&[
            route("10.7.0.0/16", None, "d0", RouteScope::Link, None),
            route("10.8.0.0/16", None, "nosuchdev", RouteScope::Link, None),
        ])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::NOT_FOUND), "{e}");
    assert!(!env.ip(&["route"]).contains("10.7.0.0"));
    // A neighbour on an unknown device.
    let e = c
        .add_arp_neighbors(&[Neighbor {
            ip: "10.1.0.1".parse().unwrap(),
            mac: "aa:bb:cc:dd:ee:01".parse().unwrap(),
            device: "nosuchdev".into(),
            state: NeighborState::Permanent,
            flags: 0,
        }])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::NOT_FOUND), "{e}");
    c.health_check().await.unwrap();

    // A malformed frame: a request whose payload is not an UpdateInterfaceRequest.
    let resp = raw_frame(
        &env,
        b"/grpc.AgentService",
        b"UpdateInterface",
        &[0xff; 7],
        None,
    )
    .await;
    assert_ne!(resp, Code::OK);
    // An oversized message (over ttrpc's 4 MiB limit).
    let big = vec![0u8; (4 << 20) + 1];
    let resp = raw_frame(&env, b"grpc.AgentService", b"UpdateInterface", &big, None).await;
    assert_eq!(resp, Code::INVALID_ARGUMENT);
    // A frame whose header says it is a response: the server must not die.
    let _ = raw_frame(&env, b"grpc.Health", b"Check", &[], Some(0x2)).await;
    // An unknown method.
    let resp = raw_frame(&env, b"grpc.AgentService", b"DestroySandbox", &[], None).await;
    assert_ne!(resp, Code::OK);

    c.health_check().await.unwrap();
    let fresh = env.client().await;
    fresh.health_check().await.unwrap();
}

/// Sends one hand-made ttrpc frame on a fresh connection and returns the status code
/// of the answer (`UNAVAILABLE` if the server closed the connection without one).
async fn raw_frame(
    env: &AgentNs,
    service: &[u8],
    method: &[u8],
    payload: &[u8],
    msg_type: Option<u8>,
) -> Code {
    use sandnet_agent_proto::protobuf::Message;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::UnixStream::connect(&env.sock).await.unwrap();
    let body = if payload.len() > 4 << 20 {
        payload.to_vec()
    } else {
        let mut r = sandnet_agent_proto::ttrpc::Request::new();
        r.service = String::from_utf8_lossy(service)
            .trim_start_matches('/')
            .to_string();
        r.method = String::from_utf8_lossy(method).into_owned();
        r.payload = payload.to_vec();
        r.write_to_bytes().unwrap()
    };
    let mut frame = Vec::with_capacity(10 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&1u32.to_be_bytes());
    frame.push(msg_type.unwrap_or(0x1));
    frame.push(0);
    frame.extend_from_slice(&body);
    s.write_all(&frame).await.unwrap();
    let mut hdr = [0u8; 10];
    match tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut hdr)).await {
        Ok(Ok(_)) => {}
        _ => return Code::UNAVAILABLE,
    }
    let len = u32::from_be_bytes(hdr[0..4].try_into().unwrap()) as usize;
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf).await.unwrap();
    let r = sandnet_agent_proto::ttrpc::Response::parse_from_bytes(&buf).unwrap();
    r.status.code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_is_skipped_cleanly_where_disabled() {
    let env = AgentNs::new(
        "noipv6",
        &[
            &[
                "link", "add", "d0", "address", MAC_A, "type", "veth", "peer", "name", "d0p",
            ],
            &["link", "set", "d0p", "up"],
        ],
    );
    // Per-namespace sysctl: only this test's netns loses IPv6.
    common::run(
        "ip",
        &[
            "netns",
            "exec",
            &env.ns,
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
        ],
    );
    common::run(
        "ip",
        &[
            "netns",
            "exec",
            &env.ns,
            "sysctl",
            "-qw",
            "net.ipv6.conf.d0.disable_ipv6=1",
        ],
    );
    let c = env.client().await;
    let got = c
        .update_interface(&iface(
            "eth0",
            MAC_A,
            1500,
            &["10.1.0.2/24", "fd00:1::2/64"],
        ))
        .await
        .unwrap();
    assert_eq!(got.addresses, vec!["10.1.0.2/24".parse().unwrap()]);
    let routes = c
        .update_routes(&[
            route(
                "0.0.0.0/0",
                Some("10.1.0.1"),
                "eth0",
                RouteScope::Universe,
                None,
            ),
            route(
                "::/0",
                Some("fd00:1::1"),
                "eth0",
                RouteScope::Universe,
                None,
            ),
        ])
        .await
        .unwrap();
    assert!(routes.iter().all(|r| r.family == Family::V4), "{routes:?}");
    assert!(routes.iter().any(|r| r.is_default()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_routes_covers_every_configured_nic_and_leaves_others_alone() {
    let env = AgentNs::new(
        "routesall",
        &[
            &[
                "link", "add", "d0", "address", MAC_A, "type", "veth", "peer", "name", "d0p",
            ],
            &[
                "link", "add", "d1", "address", MAC_B, "type", "veth", "peer", "name", "d1p",
            ],
            &["link", "set", "d0p", "up"],
            &["link", "set", "d1p", "up"],
            // Not configured by the agent: its routes are not the agent's business.
            &["link", "add", "x0", "type", "veth", "peer", "name", "x0p"],
            &["link", "set", "x0p", "up"],
            &["link", "set", "x0", "up"],
            &["addr", "add", "10.9.0.2/24", "dev", "x0"],
            &["route", "add", "10.90.0.0/16", "via", "10.9.0.1"],
        ],
    );
    let c = env.client().await;
    c.update_interface(&iface("eth0", MAC_A, 1500, &["10.1.0.2/24"]))
        .await
        .unwrap();
    c.update_interface(&iface("eth1", MAC_B, 1500, &["10.2.0.2/24"]))
        .await
        .unwrap();
    let both = vec![
        route(
            "0.0.0.0/0",
            Some("10.1.0.1"),
            "eth0",
            RouteScope::Universe,
            None,
        ),
        route(
            "10.20.0.0/16",
            Some("10.2.0.1"),
            "eth1",
            RouteScope::Universe,
            None,
        ),
    ];
    c.update_routes(&both).await.unwrap();
    let dsts = |env: &AgentNs| -> Vec<String> {
        env.ip_json(&["route", "show"])
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["dst"].as_str().unwrap().to_string())
            .collect()
    };
    let d = dsts(&env);
    assert!(d.contains(&"10.20.0.0/16".to_string()), "{d:?}");
    // eth1 is not named, but the agent configured it: its route goes.
    c.update_routes(&both[..1]).await.unwrap();
    let d = dsts(&env);
    assert!(!d.contains(&"10.20.0.0/16".to_string()), "{d:?}");
    assert!(d.contains(&"default".to_string()), "{d:?}");
    // An empty set clears every configured NIC's routes, and nothing else.
    c.update_routes(&[]).await.unwrap();
    let d = dsts(&env);
    assert!(!d.contains(&"default".to_string()), "{d:?}");
    assert!(d.contains(&"10.90.0.0/16".to_string()), "{d:?}");
    assert!(
        d.contains(&"10.1.0.0/24".to_string()),
        "kernel prefix route stays: {d:?}"
    );
}
