//! Kata JSON objects: their fields, their errors, and that they decode exactly as the
//! protocol's messages do.

use super::*;
use crate::convert::tests::{arb_iface, arb_route};
use proptest::prelude::*;
use protobuf::Message;
use sandnet_model::RouteScope;

/// An error with its sources, as `{:#}` prints it at the command line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s = format!("{s}: {c}");
        cur = c.source();
    }
    s
}

#[test]
fn interface_round_trips_through_kata_json() {
    let j = r#"{"device":"eth1","name":"eth1","mtu":1400,"hwAddr":"02:00:ca:fe:00:01",
        "IPAddresses":[{"family":0,"address":"10.9.0.2","mask":"24"},
                       {"family":10,"address":"fd00::2","mask":"64"}]}"#;
    let k: KataInterface = serde_json::from_str(j).unwrap();
    let m = k.to_model().unwrap();
    assert_eq!(m.mtu, 1400);
    assert_eq!(m.addresses.len(), 2);
    assert_eq!(m.mac.unwrap().to_string(), "02:00:ca:fe:00:01");
    assert_eq!((m.kind.clone(), m.flags), (LinkKind::Veth, IFF_UP));
    let back = KataInterface::from_model(&m);
    assert_eq!(back.ip_addresses[1].family, 1, "written as Kata's number");
    assert_eq!(back.to_model().unwrap(), m);
}

#[test]
fn bad_interface_fields_are_named() {
    let base = KataInterface {
        device: "eth1".into(),
        name: "eth1".into(),
        ip_addresses: vec![KataIpAddress {
            family: 1,
            address: "10.0.0.1".into(),
            mask: "24".into(),
        }],
        mtu: 1500,
        hw_addr: String::new(),
    };
    let e = base.to_model().unwrap_err().to_string();
    assert!(e.contains("eth1") && e.contains("family"), "{e}");
    let mut b = base.clone();
    b.ip_addresses[0].family = 7;
    assert!(matches!(b.to_model(), Err(KataError::BadFamily { .. })));
    b.ip_addresses[0].family = 0;
    b.ip_addresses[0].mask = "33".into();
    let e = b.to_model().unwrap_err();
    assert!(matches!(
        e,
        KataError::Interface {
            source: ConvertError::BadPrefix { .. },
            ..
        }
    ));
    let e = chain(&e);
    assert!(e.contains("eth1") && e.contains("\"33\""), "{e}");
    let mut b = base.clone();
    b.ip_addresses.clear();
    b.hw_addr = "zz".into();
    assert!(matches!(
        b.to_model(),
        Err(KataError::Interface {
            source: ConvertError::BadMac(_),
            ..
        })
    ));
    b.hw_addr.clear();
    b.mtu = 40;
    assert!(matches!(b.to_model(), Err(KataError::BadMtu { .. })));
    b.mtu = 1 << 40;
    assert!(matches!(b.to_model(), Err(KataError::Interface { .. })));
    b.mtu = 0;
    assert_eq!(b.to_model().map(|i| i.mtu), Ok(0), "0: unset");
    b.name = "a/b".into();
    assert!(chain(&b.to_model().unwrap_err()).contains("bad interface name"));
}

#[test]
fn routes_convert_both_ways() {
    let j = r#"[{"dest":"","gateway":"10.9.0.1","device":"eth1","source":"","scope":0},
                {"dest":"10.9.0.0/24","gateway":"","device":"eth1","source":"10.9.0.2","scope":253},
                {"dest":"default","device":"eth1","source":"fd00::2"}]"#;
    let ks: Vec<KataRoute> = serde_json::from_str(j).unwrap();
    let rs: Vec<Route> = ks.iter().map(|k| k.to_model().unwrap()).collect();
    assert!(rs[0].is_default());
    assert_eq!(rs[0].dest.to_string(), "0.0.0.0/0");
    assert_eq!(rs[1].scope, RouteScope::Link);
    assert_eq!(rs[2].dest.to_string(), "::/0", "family from the source");
    for r in &rs {
        assert_eq!(&KataRoute::from_model(r).to_model().unwrap(), r);
    }
    assert_eq!(KataRoute::from_model(&rs[1]), ks[1]);
}

#[test]
fn bad_routes_are_named() {
    let r = KataRoute {
        dest: "10.1.0.0/16".into(),
        gateway: "fd00::1".into(),
        device: "eth1".into(),
        source: String::new(),
        scope: 0,
    };
    let e = chain(&r.to_model().unwrap_err());
    assert!(e.contains("10.1.0.0/16") && e.contains("eth1"), "{e}");
    let mut b = r.clone();
    b.gateway.clear();
    b.scope = 7;
    assert!(chain(&b.to_model().unwrap_err()).contains("scope"));
    b.scope = 0;
    b.dest = "nonsense".into();
    assert!(chain(&b.to_model().unwrap_err()).contains("dest"));
    b.dest = "10.1.0.5/16".into();
    assert!(chain(&b.to_model().unwrap_err()).contains("host bits"));
}

proptest! {
    /// A model interface written as a Kata JSON object and read back is the interface the
    /// protocol's message carries through the wire (the JSON fixes kind and flags).
    #[test]
    fn json_and_protocol_interfaces_agree(mut i in arb_iface(), mtu in 68u32..=65535) {
        i.mtu = mtu;
        let text = serde_json::to_string(&KataInterface::from_model(&i)).unwrap();
        let k: KataInterface = serde_json::from_str(&text).unwrap();
        let from_json = k.to_model().unwrap();
        let bytes = interface_to_proto(&i).write_to_bytes().unwrap();
        let mut from_wire =
            interface_from_proto(&types::Interface::parse_from_bytes(&bytes).unwrap()).unwrap();
        from_wire.kind = LinkKind::Veth;
        from_wire.flags = IFF_UP;
        prop_assert_eq!(from_json, from_wire);
    }

    /// The same for routes (the JSON form has no `mtu` and `flags`).
    #[test]
    fn json_and_protocol_routes_agree(r in arb_route()) {
        let text = serde_json::to_string(&KataRoute::from_model(&r)).unwrap();
        let k: KataRoute = serde_json::from_str(&text).unwrap();
        let from_json = k.to_model().unwrap();
        let bytes = route_to_proto(&r).write_to_bytes().unwrap();
        let mut from_wire =
            route_from_proto(&types::Route::parse_from_bytes(&bytes).unwrap()).unwrap();
        from_wire.mtu = None;
        from_wire.flags = 0;
        prop_assert_eq!(from_json, from_wire);
    }

    /// Any route fields: the JSON object is accepted exactly when the message is.
    #[test]
    fn json_and_protocol_accept_the_same_routes(
        dest in "(default|[0-9a-f:./]{0,20})",
        gw in "[0-9a-f:./]{0,16}",
        src in "[0-9a-f:./]{0,16}",
        scope in 0u32..300,
    ) {
        let k = KataRoute { dest, gateway: gw, device: "eth0".into(), source: src, scope };
        let p = types::Route {
            dest: k.dest.clone(),
            gateway: k.gateway.clone(),
            device: k.device.clone(),
            source: k.source.clone(),
            scope: k.scope,
            ..Default::default()
        };
        prop_assert_eq!(k.to_model().ok(), route_from_proto(&p).ok());
    }
}
