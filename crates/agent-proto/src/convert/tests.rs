//! Unit and property tests of the conversions: Kata's wire forms, malformed input, and
//! round trips through the wire.

use super::*;
use proptest::prelude::*;
use protobuf::Message;

fn iface() -> Interface {
    Interface {
        name: "eth0".into(),
        kind: LinkKind::Veth,
        mac: Some("02:42:ac:13:00:05".parse().unwrap()),
        mtu: 1450,
        addresses: vec![
            "172.19.0.5/24".parse().unwrap(),
            "fd00::5/64".parse().unwrap(),
        ],
        flags: sandnet_model::IFF_NOARP,
    }
}

#[test]
fn interface_encodes_like_kata() {
    let p = interface_to_proto(&iface());
    assert_eq!(p.name, "eth0");
    assert_eq!(p.device, "eth0");
    assert_eq!(p.hwAddr, "02:42:ac:13:00:05");
    assert_eq!(p.mtu, 1450);
    assert_eq!(p.IPAddresses[0].mask, "24");
    assert_eq!(
        p.IPAddresses[0].family.enum_value(),
        Ok(types::IPFamily::v4)
    );
    assert_eq!(
        p.IPAddresses[1].family.enum_value(),
        Ok(types::IPFamily::v6)
    );
    assert_eq!(p.type_, "veth");
    assert_eq!(p.raw_flags, sandnet_model::IFF_NOARP);
    assert_eq!(interface_from_proto(&p).unwrap(), iface());
}

#[test]
fn kata_runtime_interface_decodes() {
    // What Kata's Go runtime sends for a veth endpoint: type "virtual", pciPath set.
    let p = types::Interface {
        device: "eth0".into(),
        name: "eth0".into(),
        IPAddresses: vec![types::IPAddress {
            family: types::IPFamily::v4.into(),
            address: "10.0.0.2".into(),
            mask: "16".into(),
            ..Default::default()
        }],
        mtu: 1500,
        hwAddr: "AA:BB:CC:DD:EE:01".into(),
        pciPath: "02/00".into(),
        type_: "virtual".into(),
        ..Default::default()
    };
    let i = interface_from_proto(&p).unwrap();
    assert_eq!(i.addresses, vec!["10.0.0.2/16".parse::<IpNet>().unwrap()]);
    assert_eq!(i.mac.unwrap().to_string(), "aa:bb:cc:dd:ee:01");
    assert_eq!(i.kind, LinkKind::Other("virtual".into()));
}

#[test]
fn default_route_with_empty_dest() {
    let p = types::Route {
        dest: String::new(),
        gateway: "172.19.0.1".into(),
        device: "eth0".into(),
        family: types::IPFamily::v4.into(),
        ..Default::default()
    };
    let r = route_from_proto(&p).unwrap();
    assert!(r.is_default());
    assert_eq!(r.dest.to_string(), "0.0.0.0/0");
    assert_eq!(r.family, Family::V4);
    assert_eq!(r.scope, RouteScope::Universe);

    let p6 = types::Route {
        gateway: "fd00::1".into(),
        device: "eth0".into(),
        // Family says v4 but the gateway is v6: the gateway wins.
        family: types::IPFamily::v4.into(),
        ..Default::default()
    };
    assert_eq!(route_from_proto(&p6).unwrap().dest.to_string(), "::/0");

    let p6b = types::Route {
        device: "eth0".into(),
        family: types::IPFamily::v6.into(),
        scope: 253,
        ..Default::default()
    };
    let r = route_from_proto(&p6b).unwrap();
    assert_eq!(r.dest.to_string(), "::/0");
    assert_eq!(r.scope, RouteScope::Link);
}

#[test]
fn gateway_route_keeps_dest_and_family() {
    let r = Route {
        dest: "10.10.0.0/16".parse().unwrap(),
        gateway: Some("fd00::1".parse().unwrap()),
        device: "eth0".into(),
        source: None,
        scope: RouteScope::Universe,
        family: Family::V4,
        mtu: Some(1400),
        flags: sandnet_model::RTNH_F_ONLINK,
    };
    let p = route_to_proto(&r);
    assert_eq!(p.dest, "10.10.0.0/16");
    assert_eq!(p.mtu, 1400);
    assert_eq!(p.flags, 4);
    // A v6 gateway for a v4 dest is not something the model round-trips.
    assert!(matches!(
        route_from_proto(&p),
        Err(ConvertError::FamilyMismatch { .. })
    ));
}

#[test]
fn route_source_forms() {
    let mut p = types::Route {
        dest: "10.0.0.0/8".into(),
        device: "eth0".into(),
        source: "10.0.0.2".into(),
        scope: 253,
        ..Default::default()
    };
    assert_eq!(
        route_from_proto(&p).unwrap().source,
        Some("10.0.0.2".parse().unwrap())
    );
    p.source = "10.0.0.2/32".into();
    assert_eq!(
        route_from_proto(&p).unwrap().source,
        Some("10.0.0.2".parse().unwrap())
    );
    // Kata's own agent lists a gateway route's dest as a bare "0.0.0.0".
    p.dest = "0.0.0.0".into();
    assert!(route_from_proto(&p).unwrap().is_default());
    p.dest = "10.0.0.9".into();
    assert_eq!(
        route_from_proto(&p).unwrap().dest.to_string(),
        "10.0.0.9/32"
    );
}

#[test]
fn malformed_input_is_a_typed_error() {
    let addr = |a: &str, m: &str| types::IPAddress {
        address: a.into(),
        mask: m.into(),
        ..Default::default()
    };
    assert!(matches!(
        ip_net_from_proto(&addr("10.0.0.1", "")),
        Err(ConvertError::BadPrefix { .. })
    ));
    assert!(matches!(
        ip_net_from_proto(&addr("10.0.0.1", "33")),
        Err(ConvertError::BadPrefix { .. })
    ));
    assert!(matches!(
        ip_net_from_proto(&addr("10.0.0.1", "255.255.255.0")),
        Err(ConvertError::BadPrefix { .. })
    ));
    assert!(matches!(
        ip_net_from_proto(&addr("10.0.0.x", "24")),
        Err(ConvertError::BadAddress { .. })
    ));
    assert_eq!(
        ip_net_from_proto(&addr("", "24")),
        Err(ConvertError::Missing("IPAddress.address"))
    );
    let mut i = interface_to_proto(&iface());
    i.hwAddr = "zz:zz".into();
    assert!(matches!(
        interface_from_proto(&i),
        Err(ConvertError::BadMac(_))
    ));
    i.hwAddr = String::new();
    i.name = "a-name-far-too-long".into();
    assert!(matches!(
        interface_from_proto(&i),
        Err(ConvertError::BadName(_))
    ));
    i.name = String::new();
    i.device = String::new();
    assert_eq!(
        interface_from_proto(&i),
        Err(ConvertError::Missing("interface name"))
    );
    i.name = "eth0".into();
    i.mtu = u64::from(u32::MAX) + 1;
    assert!(matches!(
        interface_from_proto(&i),
        Err(ConvertError::OutOfRange { .. })
    ));
    let r = types::Route {
        dest: "10.0.0.5/8".into(),
        device: "eth0".into(),
        ..Default::default()
    };
    assert!(matches!(
        route_from_proto(&r),
        Err(ConvertError::HostBitsSet(..))
    ));
    let r = types::Route {
        dest: "10.0.0.0/8".into(),
        device: "eth0".into(),
        scope: 7,
        ..Default::default()
    };
    assert_eq!(route_from_proto(&r), Err(ConvertError::BadScope(7)));
    let r = types::Route {
        dest: "10.0.0.0/8".into(),
        ..Default::default()
    };
    assert_eq!(
        route_from_proto(&r),
        Err(ConvertError::Missing("Route.device"))
    );
    let n = types::ARPNeighbor {
        device: "eth0".into(),
        lladdr: "aa:bb:cc:dd:ee:ff".into(),
        state: 0x80,
        ..Default::default()
    };
    assert_eq!(
        neighbor_from_proto(&n),
        Err(ConvertError::Missing("ARPNeighbor.toIPAddress"))
    );
    let mut n2 = neighbor_to_proto(&Neighbor {
        ip: "10.0.0.1".parse().unwrap(),
        mac: "aa:bb:cc:dd:ee:ff".parse().unwrap(),
        device: "eth0".into(),
        state: NeighborState::Permanent,
        flags: 0,
    });
    n2.state = 3;
    assert_eq!(neighbor_from_proto(&n2), Err(ConvertError::BadState(3)));
    assert!(matches!(
        dns_from_lines(&["nameserver x".to_string()]),
        Err(ConvertError::Dns(_))
    ));
}

fn arb_net() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        (any::<[u8; 4]>(), 0u8..=32).prop_map(|(b, l)| IpNet::new(IpAddr::from(b), l).unwrap()),
        (any::<[u8; 16]>(), 0u8..=128).prop_map(|(b, l)| IpNet::new(IpAddr::from(b), l).unwrap()),
    ]
}

fn arb_kind() -> impl Strategy<Value = LinkKind> {
    prop_oneof![
        Just(LinkKind::Veth),
        Just(LinkKind::Physical),
        Just(LinkKind::Macvlan),
        Just(LinkKind::Tap),
        "[a-z]{3,8}".prop_map(|s| LinkKind::from(s.as_str())),
    ]
}

pub(crate) fn arb_iface() -> impl Strategy<Value = Interface> {
    (
        "[a-z][a-z0-9]{0,14}",
        arb_kind(),
        proptest::option::of(any::<[u8; 6]>()),
        any::<u32>(),
        proptest::collection::vec(arb_net(), 0..4),
        any::<u32>(),
    )
        .prop_map(|(name, kind, mac, mtu, addresses, flags)| Interface {
            name,
            kind,
            mac: mac.map(MacAddr),
            mtu,
            addresses,
            flags,
        })
}

fn arb_scope() -> impl Strategy<Value = RouteScope> {
    prop_oneof![
        Just(RouteScope::Universe),
        Just(RouteScope::Site),
        Just(RouteScope::Link),
        Just(RouteScope::Host),
        Just(RouteScope::Nowhere),
    ]
}

pub(crate) fn arb_route() -> impl Strategy<Value = Route> {
    (
        arb_net(),
        any::<bool>(),
        any::<bool>(),
        any::<[u8; 16]>(),
        "[a-z][a-z0-9]{0,14}",
        arb_scope(),
        proptest::option::of(1u32..),
        any::<u32>(),
    )
        .prop_map(|(dest, gw, src, bytes, device, scope, mtu, flags)| {
            let dest = dest.trunc();
            let addr = |b: &[u8; 16]| match dest.addr() {
                IpAddr::V4(_) => IpAddr::from([b[0], b[1], b[2], b[3]]),
                IpAddr::V6(_) => IpAddr::from(*b),
            };
            Route {
                family: Family::of(&dest.addr()),
                dest,
                gateway: gw.then(|| addr(&bytes)),
                device,
                source: src.then(|| addr(&bytes)),
                scope,
                mtu,
                flags,
            }
        })
}

fn arb_state() -> impl Strategy<Value = NeighborState> {
    prop_oneof![
        Just(NeighborState::Permanent),
        Just(NeighborState::Reachable),
        Just(NeighborState::Stale),
        Just(NeighborState::Noarp),
        Just(NeighborState::None),
    ]
}

fn arb_neighbor() -> impl Strategy<Value = Neighbor> {
    (
        arb_net(),
        any::<[u8; 6]>(),
        "[a-z][a-z0-9]{0,14}",
        arb_state(),
        any::<u8>(),
    )
        .prop_map(|(net, mac, device, state, flags)| Neighbor {
            ip: net.addr(),
            mac: MacAddr(mac),
            device,
            state,
            flags,
        })
}

proptest! {
    #[test]
    fn interface_round_trips_through_the_wire(i in arb_iface()) {
        let bytes = interface_to_proto(&i).write_to_bytes().unwrap();
        let p = types::Interface::parse_from_bytes(&bytes).unwrap();
        prop_assert_eq!(interface_from_proto(&p).unwrap(), i);
    }

    #[test]
    fn route_round_trips_through_the_wire(r in arb_route()) {
        let bytes = route_to_proto(&r).write_to_bytes().unwrap();
        let p = types::Route::parse_from_bytes(&bytes).unwrap();
        prop_assert_eq!(route_from_proto(&p).unwrap(), r);
    }

    #[test]
    fn neighbor_round_trips_through_the_wire(n in arb_neighbor()) {
        let bytes = neighbor_to_proto(&n).write_to_bytes().unwrap();
        let p = types::ARPNeighbor::parse_from_bytes(&bytes).unwrap();
        prop_assert_eq!(neighbor_from_proto(&p).unwrap(), n);
    }

    #[test]
    fn garbage_never_panics(s in ".{0,40}", m in ".{0,6}", scope in any::<u32>(), st in any::<i32>()) {
        let a = types::IPAddress { address: s.clone(), mask: m.clone(), ..Default::default() };
        let _ = ip_net_from_proto(&a);
        let r = types::Route { dest: s.clone(), gateway: m.clone(), device: "x".into(), source: s.clone(), scope, ..Default::default() };
        let _ = route_from_proto(&r);
        let n = types::ARPNeighbor { toIPAddress: protobuf::MessageField::some(a), device: s.clone(), lladdr: m, state: st, ..Default::default() };
        let _ = neighbor_from_proto(&n);
    }
}
