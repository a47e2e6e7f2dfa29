//! Property tests: a CNI result converted to any spec version and parsed again keeps its
//! addresses, routes and DNS (all of them from 0.3.0 on; for 0.1.0/0.2.0 the first address
//! of each family and those families' routes, destination and gateway only, as libcni).

use ipnet::IpNet;
use proptest::prelude::*;
use sandnet_cni::{
    CniResult, ResultDns, ResultInterface, ResultIp, ResultRoute, SUPPORTED_VERSIONS,
};
use std::net::IpAddr;

fn arb_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
    ]
}

fn arb_net() -> impl Strategy<Value = IpNet> {
    (arb_ip(), any::<u8>()).prop_map(|(ip, len)| {
        let max = if ip.is_ipv4() { 33 } else { 129 };
        IpNet::new(ip, len % max).expect("prefix length in range")
    })
}

fn arb_nonzero() -> impl Strategy<Value = Option<u32>> {
    proptest::option::of(1u32..)
}

fn arb_route() -> impl Strategy<Value = ResultRoute> {
    (
        arb_net(),
        proptest::option::of(arb_ip()),
        arb_nonzero(),
        arb_nonzero(),
        arb_nonzero(),
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u32>()),
    )
        .prop_map(
            |(dst, gw, mtu, advmss, priority, table, scope)| ResultRoute {
                dst,
                gw,
                mtu,
                advmss,
                priority,
                table,
                scope,
            },
        )
}

fn arb_dns() -> impl Strategy<Value = ResultDns> {
    let words = || proptest::collection::vec("[a-z0-9.:]{0,12}", 0..3);
    (
        words(),
        proptest::option::of("[a-z.]{1,12}"),
        words(),
        words(),
    )
        .prop_map(|(nameservers, domain, search, options)| ResultDns {
            nameservers,
            domain,
            search,
            options,
        })
}

fn arb_result() -> impl Strategy<Value = CniResult> {
    let iface = (
        "[a-z0-9]{1,15}",
        proptest::option::of("[0-9a-f:]{17}"),
        proptest::option::of("/run/netns/[a-z]{1,8}"),
    )
        .prop_map(|(name, mac, sandbox)| ResultInterface {
            name,
            mac,
            sandbox,
            ..Default::default()
        });
    (
        proptest::collection::vec(iface, 0..3),
        proptest::collection::vec(
            (arb_net(), proptest::option::of(arb_ip()), any::<u8>()),
            0..4,
        ),
        proptest::collection::vec(arb_route(), 0..4),
        arb_dns(),
        0..SUPPORTED_VERSIONS.len(),
    )
        .prop_map(|(interfaces, ips, routes, dns, v)| {
            let n = interfaces.len();
            let ips = ips
                .into_iter()
                .map(|(address, gateway, i)| ResultIp {
                    address,
                    gateway,
                    interface: (n > 0).then(|| usize::from(i) % n),
                })
                .collect();
            CniResult {
                cni_version: SUPPORTED_VERSIONS[v].to_string(),
                interfaces,
                ips,
                routes,
                dns,
            }
        })
}

fn is_old(v: &str) -> bool {
    v.starts_with("0.1.") || v.starts_with("0.2.")
}

/// What a 0.1.0/0.2.0 result can carry of `r`.
fn as_old(r: &CniResult) -> (Vec<ResultIp>, Vec<ResultRoute>) {
    let mut ips = Vec::new();
    let mut routes = Vec::new();
    for v4 in [true, false] {
        let Some(ip) = r.ips.iter().find(|ip| ip.address.addr().is_ipv4() == v4) else {
            continue;
        };
        ips.push(ResultIp {
            interface: None,
            ..ip.clone()
        });
        routes.extend(
            r.routes
                .iter()
                .filter(|rt| rt.dst.addr().is_ipv4() == v4)
                .map(|rt| ResultRoute {
                    dst: rt.dst,
                    gw: rt.gw,
                    mtu: None,
                    advmss: None,
                    priority: None,
                    table: None,
                    scope: None,
                }),
        );
    }
    (ips, routes)
}

fn reparse(r: &CniResult, version: &str) -> Option<CniResult> {
    let value = r.to_value(version).ok()?;
    let bytes = serde_json::to_vec(&value).expect("JSON serializes");
    Some(CniResult::parse(&bytes, "").expect("own output parses"))
}

proptest! {
    #[test]
    fn every_version_keeps_what_it_can(r in arb_result()) {
        for v in SUPPORTED_VERSIONS {
            let Some(back) = reparse(&r, v) else {
                prop_assert!(is_old(v) && r.ips.is_empty(), "{v} refused {r:?}");
                continue;
            };
            prop_assert_eq!(&back.cni_version, v);
            prop_assert_eq!(&back.dns, &r.dns);
            if is_old(v) {
                let (ips, routes) = as_old(&r);
                prop_assert_eq!(back.ips, ips);
                prop_assert_eq!(back.routes, routes);
                prop_assert!(back.interfaces.is_empty());
            } else {
                prop_assert_eq!(&back.ips, &r.ips);
                prop_assert_eq!(&back.routes, &r.routes);
                let names: Vec<_> = r.interfaces.iter().map(|i| (&i.name, &i.mac, &i.sandbox)).collect();
                let got: Vec<_> = back.interfaces.iter().map(|i| (&i.name, &i.mac, &i.sandbox)).collect();
                prop_assert_eq!(got, names);
            }
        }
    }

    #[test]
    fn conversions_chain(r in arb_result(), a in 0..SUPPORTED_VERSIONS.len(), b in 0..SUPPORTED_VERSIONS.len()) {
        let (va, vb) = (SUPPORTED_VERSIONS[a], SUPPORTED_VERSIONS[b]);
        // Going through an intermediate version loses no more than going there directly.
        let Some(mid) = reparse(&r, va) else { return Ok(()) };
        let Some(end) = reparse(&mid, vb) else { return Ok(()) };
        prop_assert_eq!(&end.dns, &r.dns);
        if !is_old(va) && !is_old(vb) {
            prop_assert_eq!(&end.ips, &r.ips);
            prop_assert_eq!(&end.routes, &r.routes);
        } else {
            let (ips, routes) = as_old(&r);
            prop_assert_eq!(end.ips.iter().map(|i| (i.address, i.gateway)).collect::<Vec<_>>(),
                            ips.iter().map(|i| (i.address, i.gateway)).collect::<Vec<_>>());
            prop_assert_eq!(end.routes, routes);
        }
    }
}
