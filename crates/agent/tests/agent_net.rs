//! The agent's network requests on the real kernel: the real `sandnet-agent --listen` in a
//! throwaway netns, driven with `AgentClient` (and the raw ttrpc client for what Kata sends),
//! checked with `ip -j`. Interfaces, routes, neighbours and a netns without IPv6. Needs root.

mod common;

use common::net::{iface, raw_client, route, ttrpc_ctx, MAC_A, MAC_B};
use common::AgentNs;
use sandnet_agent_proto::{agent, types};
use sandnet_model::{Family, LinkKind, Neighbor, NeighborState, RouteScope};

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
