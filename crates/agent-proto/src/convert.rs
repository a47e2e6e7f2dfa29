//! The one place that maps between the protocol's messages and sandnet's network model.
//!
//! Decoding follows what Kata's runtime sends: a default route has an empty `dest`,
//! `IPAddress.mask` is the prefix length as a decimal string, `source` is a bare address,
//! neighbours carry no mask. It also accepts what Kata's own agent lists (a `source` written
//! as `addr/len`). Encoding writes the correct family and keeps the real `dest` of gateway
//! routes (Kata's agent gets both wrong).

use crate::generated::types;
use sandnet_model::{
    Dns, Family, Interface, IpNet, LinkKind, MacAddr, ModelError, Neighbor, NeighborState,
    ParseMacError, Route, RouteScope,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Longest interface name the kernel accepts (`IFNAMSIZ - 1`).
pub const MAX_IFNAME_LEN: usize = 15;

/// A protocol message that does not describe a valid model value.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// A field that must be set is empty or absent.
    #[error("{0} is missing")]
    Missing(&'static str),
    /// An address field that does not parse as an IP address.
    #[error("{field}: {value:?} is not an IP address")]
    BadAddress {
        /// Which field.
        field: &'static str,
        /// What it held.
        value: String,
    },
    /// A prefix length that is absent, not a number, or too long for the family.
    #[error("{field}: bad prefix length {value:?} for {addr}")]
    BadPrefix {
        /// Which field.
        field: &'static str,
        /// The address the prefix belongs to.
        addr: String,
        /// What the prefix held.
        value: String,
    },
    /// A destination prefix with bits set past its length (`10.0.0.5/8`).
    #[error("route dest {0} has host bits set (expected {1})")]
    HostBitsSet(String, String),
    /// A MAC address that does not parse.
    #[error(transparent)]
    BadMac(#[from] ParseMacError),
    /// A scope value the kernel does not define.
    #[error("unknown route scope {0}")]
    BadScope(u32),
    /// A neighbour state that is not a single `NUD_*` value.
    #[error("unknown neighbour state {0:#x}")]
    BadState(i32),
    /// A number that does not fit the model's type.
    #[error("{field}: {value} is out of range")]
    OutOfRange {
        /// Which field.
        field: &'static str,
        /// What it held.
        value: i64,
    },
    /// An interface name longer than the kernel allows or containing `/` or spaces.
    #[error("bad interface name {0:?}")]
    BadName(String),
    /// Addresses of different families where one family is required.
    #[error("{field}: {value} is not an {family:?} address")]
    FamilyMismatch {
        /// Which field.
        field: &'static str,
        /// The address.
        value: String,
        /// The family required.
        family: Family,
    },
    /// A `resolv.conf` line that does not parse.
    #[error(transparent)]
    Dns(#[from] ModelError),
    /// A hostname longer than 64 bytes or with characters outside `[A-Za-z0-9._-]`.
    #[error("bad hostname {0:?}")]
    BadHostname(String),
}

fn proto_family(f: Family) -> types::IPFamily {
    match f {
        Family::V4 => types::IPFamily::v4,
        Family::V6 => types::IPFamily::v6,
    }
}

fn model_family(f: &protobuf::EnumOrUnknown<types::IPFamily>) -> Family {
    match f.enum_value() {
        Ok(types::IPFamily::v6) => Family::V6,
        _ => Family::V4,
    }
}

fn parse_ip(field: &'static str, s: &str) -> Result<IpAddr, ConvertError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(ConvertError::Missing(field));
    }
    IpAddr::from_str(s).map_err(|_| ConvertError::BadAddress {
        field,
        // A guest may send megabytes here; the error keeps enough to recognise it.
        value: s.chars().take(64).collect(),
    })
}

fn max_prefix(ip: &IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn make_net(field: &'static str, ip: IpAddr, len_str: &str) -> Result<IpNet, ConvertError> {
    let bad = || ConvertError::BadPrefix {
        field,
        addr: ip.to_string(),
        value: len_str.chars().take(64).collect(),
    };
    let len: u8 = len_str.trim().parse().map_err(|_| bad())?;
    if len > max_prefix(&ip) {
        return Err(bad());
    }
    IpNet::new(ip, len).map_err(|_| bad())
}

fn check_name(name: &str) -> Result<(), ConvertError> {
    if name.is_empty() {
        return Err(ConvertError::Missing("interface name"));
    }
    if name.len() > MAX_IFNAME_LEN
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        let shown: String = name.chars().take(2 * MAX_IFNAME_LEN).collect();
        return Err(ConvertError::BadName(shown));
    }
    Ok(())
}

/// An address as `types.IPAddress` (family from the address, mask = prefix length).
pub fn ip_net_to_proto(net: &IpNet) -> types::IPAddress {
    types::IPAddress {
        family: proto_family(Family::of(&net.addr())).into(),
        address: net.addr().to_string(),
        mask: net.prefix_len().to_string(),
        ..Default::default()
    }
}

/// A `types.IPAddress` as an address with prefix. The family is taken from the address
/// text (it cannot disagree with it); an empty or bad `mask` is an error.
pub fn ip_net_from_proto(a: &types::IPAddress) -> Result<IpNet, ConvertError> {
    let ip = parse_ip("IPAddress.address", &a.address)?;
    if a.mask.trim().is_empty() {
        return Err(ConvertError::BadPrefix {
            field: "IPAddress.mask",
            addr: ip.to_string(),
            value: String::new(),
        });
    }
    make_net("IPAddress.mask", ip, &a.mask)
}

/// A model interface as `types.Interface` (`device` = `name`, `type` = the link kind).
pub fn interface_to_proto(i: &Interface) -> types::Interface {
    types::Interface {
        device: i.name.clone(),
        name: i.name.clone(),
        IPAddresses: i.addresses.iter().map(ip_net_to_proto).collect(),
        mtu: u64::from(i.mtu),
        hwAddr: i.mac.map(|m| m.to_string()).unwrap_or_default(),
        type_: i.kind.as_str().to_string(),
        raw_flags: i.flags,
        ..Default::default()
    }
}

/// A `types.Interface` as a model interface. `name` falls back to `device`; an empty
/// `hwAddr` means no MAC; an empty `type` is a physical link.
pub fn interface_from_proto(p: &types::Interface) -> Result<Interface, ConvertError> {
    let name = if p.name.is_empty() {
        p.device.clone()
    } else {
        p.name.clone()
    };
    check_name(&name)?;
    let mac = if p.hwAddr.trim().is_empty() {
        None
    } else {
        Some(MacAddr::from_str(p.hwAddr.trim())?)
    };
    let mtu = u32::try_from(p.mtu).map_err(|_| ConvertError::OutOfRange {
        field: "Interface.mtu",
        value: i64::try_from(p.mtu).unwrap_or(i64::MAX),
    })?;
    let addresses = p
        .IPAddresses
        .iter()
        .map(ip_net_from_proto)
        .collect::<Result<Vec<_>, _>>()?;
    let kind = if p.type_.is_empty() {
        LinkKind::Physical
    } else {
        LinkKind::from(p.type_.as_str())
    };
    Ok(Interface {
        name,
        kind,
        mac,
        mtu,
        addresses,
        flags: p.raw_flags,
    })
}

/// A model route as `types.Route`: `dest` always written out (`0.0.0.0/0` for a default
/// route, which Kata's agent also accepts), the real family, `mtu` in the sandnet
/// extension field.
pub fn route_to_proto(r: &Route) -> types::Route {
    types::Route {
        dest: r.dest.to_string(),
        gateway: r.gateway.map(|g| g.to_string()).unwrap_or_default(),
        device: r.device.clone(),
        source: r.source.map(|s| s.to_string()).unwrap_or_default(),
        scope: u32::from(r.scope.to_raw()),
        family: proto_family(r.family).into(),
        flags: r.flags,
        mtu: r.mtu.unwrap_or(0),
        ..Default::default()
    }
}

fn parse_dest(dest: &str, family: Family) -> Result<IpNet, ConvertError> {
    let dest = dest.trim();
    if dest.is_empty() || dest == "default" {
        return Ok(match family {
            Family::V4 => IpNet::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            Family::V6 => IpNet::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
        }
        .expect("prefix 0 is valid"));
    }
    let net = match dest.split_once('/') {
        Some((a, l)) => make_net("Route.dest", parse_ip("Route.dest", a)?, l)?,
        None => {
            let ip = parse_ip("Route.dest", dest)?;
            // A bare unspecified address is how Kata's own agent lists a gateway
            // route's dest; read it as a default route. Any other bare address is a host.
            let len = if ip.is_unspecified() {
                0
            } else {
                max_prefix(&ip)
            };
            IpNet::new(ip, len).expect("length within the family's range")
        }
    };
    if net.trunc() != net {
        return Err(ConvertError::HostBitsSet(
            net.to_string(),
            net.trunc().to_string(),
        ));
    }
    Ok(net)
}

/// A `types.Route` as a model route. The family comes from `dest`, else from `gateway`,
/// else from the `family` field (an empty `dest` is a default route of that family).
/// `source` may be `addr` or `addr/len`.
pub fn route_from_proto(p: &types::Route) -> Result<Route, ConvertError> {
    if p.device.trim().is_empty() {
        return Err(ConvertError::Missing("Route.device"));
    }
    check_name(&p.device)?;
    let gateway = if p.gateway.trim().is_empty() {
        None
    } else {
        Some(parse_ip("Route.gateway", &p.gateway)?)
    };
    let family = if !p.dest.trim().is_empty() && p.dest.trim() != "default" {
        let a = p.dest.trim().split('/').next().unwrap_or_default();
        Family::of(&parse_ip("Route.dest", a)?)
    } else if let Some(g) = &gateway {
        Family::of(g)
    } else {
        model_family(&p.family)
    };
    let dest = parse_dest(&p.dest, family)?;
    if let Some(g) = &gateway {
        if Family::of(g) != family {
            return Err(ConvertError::FamilyMismatch {
                field: "Route.gateway",
                value: g.to_string(),
                family,
            });
        }
    }
    let source = if p.source.trim().is_empty() {
        None
    } else {
        let a = p.source.trim().split('/').next().unwrap_or_default();
        let ip = parse_ip("Route.source", a)?;
        if Family::of(&ip) != family {
            return Err(ConvertError::FamilyMismatch {
                field: "Route.source",
                value: ip.to_string(),
                family,
            });
        }
        Some(ip)
    };
    let scope = u8::try_from(p.scope)
        .ok()
        .and_then(RouteScope::from_raw)
        .ok_or(ConvertError::BadScope(p.scope))?;
    Ok(Route {
        dest,
        gateway,
        device: p.device.trim().to_string(),
        source,
        scope,
        family,
        mtu: (p.mtu != 0).then_some(p.mtu),
        flags: p.flags,
    })
}

/// A model neighbour as `types.ARPNeighbor` (the address carries no mask, as Kata's
/// runtime sends it).
pub fn neighbor_to_proto(n: &Neighbor) -> types::ARPNeighbor {
    types::ARPNeighbor {
        toIPAddress: protobuf::MessageField::some(types::IPAddress {
            family: proto_family(Family::of(&n.ip)).into(),
            address: n.ip.to_string(),
            ..Default::default()
        }),
        device: n.device.clone(),
        lladdr: n.mac.to_string(),
        state: i32::from(n.state.to_raw()),
        flags: i32::from(n.flags),
        ..Default::default()
    }
}

/// A `types.ARPNeighbor` as a model neighbour; address, device and `lladdr` are required.
pub fn neighbor_from_proto(p: &types::ARPNeighbor) -> Result<Neighbor, ConvertError> {
    let addr = p
        .toIPAddress
        .as_ref()
        .ok_or(ConvertError::Missing("ARPNeighbor.toIPAddress"))?;
    let ip = parse_ip("ARPNeighbor.toIPAddress", &addr.address)?;
    if p.device.trim().is_empty() {
        return Err(ConvertError::Missing("ARPNeighbor.device"));
    }
    if p.lladdr.trim().is_empty() {
        return Err(ConvertError::Missing("ARPNeighbor.lladdr"));
    }
    let mac = MacAddr::from_str(p.lladdr.trim())?;
    let state = u16::try_from(p.state)
        .ok()
        .and_then(NeighborState::from_raw)
        .ok_or(ConvertError::BadState(p.state))?;
    let flags = u8::try_from(p.flags).map_err(|_| ConvertError::OutOfRange {
        field: "ARPNeighbor.flags",
        value: i64::from(p.flags),
    })?;
    Ok(Neighbor {
        ip,
        mac,
        device: p.device.trim().to_string(),
        state,
        flags,
    })
}

/// DNS as the `resolv.conf` lines `CreateSandboxRequest.dns` carries.
pub fn dns_to_lines(d: &Dns) -> Vec<String> {
    d.to_lines()
}

/// `CreateSandboxRequest.dns` lines as DNS; a bad `nameserver` address is an error.
pub fn dns_from_lines(lines: &[String]) -> Result<Dns, ConvertError> {
    Ok(Dns::from_lines(lines.iter().map(String::as_str))?)
}

#[cfg(test)]
mod tests {
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
            (any::<[u8; 16]>(), 0u8..=128)
                .prop_map(|(b, l)| IpNet::new(IpAddr::from(b), l).unwrap()),
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

    fn arb_iface() -> impl Strategy<Value = Interface> {
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

    fn arb_route() -> impl Strategy<Value = Route> {
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
}
