//! Endpoints: the links of a scanned namespace that become guest NICs.
//!
//! As in Kata's `createEndpointsFromScan`: `lo` is skipped, and so are links without an
//! address (base tunnel devices such as `sit0`, unconfigured links). Kinds that can stand
//! in for a guest NIC are veth, macvlan, ipvlan, vlan and physical NICs; taps, macvtaps,
//! bridges and dummies are not (they are someone's backend, a switch, or a sink), and
//! neither is anything sandnet itself created.

use ipnet::IpNet;
use sandnet_model::{LinkKind, MacAddr};
use sandnet_netlink::{LinkDetail, ScanResult};
use serde::{Deserialize, Serialize};

/// The alias prefix that marks links sandnet created.
pub const ALIAS_PREFIX: &str = "sandnet:";

/// One pod link that becomes a guest NIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Interface index in the pod namespace.
    pub index: u32,
    /// Interface name (the guest NIC gets the same name).
    pub name: String,
    /// Link kind.
    pub kind: LinkKind,
    /// The link's hardware address (the guest NIC's, in both models).
    pub mac: MacAddr,
    /// MTU.
    pub mtu: u32,
    /// Addresses with prefix.
    pub addresses: Vec<IpNet>,
}

/// Why a link did not become an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "reason", content = "detail")]
pub enum SkipReason {
    /// The loopback device.
    Loopback,
    /// sandnet created it (its alias says so).
    Sandnet,
    /// The link has no hardware address.
    NoMac,
    /// The link has no address (Kata skips those too).
    NoAddresses,
    /// A kind that cannot stand in for a guest NIC.
    UnsupportedKind(String),
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::Loopback => f.write_str("it is the loopback device"),
            SkipReason::Sandnet => f.write_str("sandnet created it"),
            SkipReason::NoMac => f.write_str("it has no hardware address"),
            SkipReason::NoAddresses => f.write_str("it has no IP address"),
            SkipReason::UnsupportedKind(k) => {
                write!(f, "a {k} link cannot stand in for a guest NIC")
            }
        }
    }
}

/// Whether a link alias marks a link sandnet created.
pub fn is_sandnet_alias(alias: Option<&str>) -> bool {
    alias.is_some_and(|a| a.starts_with(ALIAS_PREFIX))
}

/// Whether a link is usable as an endpoint, and why not.
pub fn classify(d: &LinkDetail) -> Result<Endpoint, SkipReason> {
    let i = &d.interface;
    if i.kind == LinkKind::Loopback {
        return Err(SkipReason::Loopback);
    }
    if is_sandnet_alias(d.alias.as_deref()) {
        return Err(SkipReason::Sandnet);
    }
    match i.kind {
        LinkKind::Veth
        | LinkKind::Macvlan
        | LinkKind::Ipvlan
        | LinkKind::Vlan
        | LinkKind::Physical => {}
        ref k => return Err(SkipReason::UnsupportedKind(k.to_string())),
    }
    let mac = i.mac.ok_or(SkipReason::NoMac)?;
    if i.addresses.is_empty() {
        return Err(SkipReason::NoAddresses);
    }
    Ok(Endpoint {
        index: d.index,
        name: i.name.clone(),
        kind: i.kind.clone(),
        mac,
        mtu: i.mtu,
        addresses: i.addresses.clone(),
    })
}

/// The endpoints of a scan, in interface-index order.
pub fn endpoints(scan: &ScanResult) -> Vec<Endpoint> {
    scan.links.iter().filter_map(|d| classify(d).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandnet_model::Interface;

    fn link(kind: LinkKind, addrs: &[&str], alias: Option<&str>) -> LinkDetail {
        LinkDetail {
            index: 7,
            interface: Interface {
                name: "eth0".into(),
                kind,
                mac: Some(MacAddr([2, 0, 0, 0, 0, 1])),
                mtu: 1500,
                addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
                flags: 1,
            },
            parent: None,
            master: None,
            alias: alias.map(str::to_string),
            group: 0,
        }
    }

    #[test]
    fn usable_kinds_with_addresses_become_endpoints() {
        for k in [
            LinkKind::Veth,
            LinkKind::Macvlan,
            LinkKind::Ipvlan,
            LinkKind::Vlan,
            LinkKind::Physical,
        ] {
            let e = classify(&link(k.clone(), &["10.0.0.2/24"], None)).unwrap();
            assert_eq!(e.kind, k);
            assert_eq!(e.index, 7);
        }
    }

    #[test]
    fn others_are_skipped_with_a_reason() {
        assert_eq!(
            classify(&link(LinkKind::Veth, &[], None)),
            Err(SkipReason::NoAddresses)
        );
        assert_eq!(
            classify(&link(LinkKind::Tap, &["10.0.0.2/24"], None)),
            Err(SkipReason::UnsupportedKind("tap".into()))
        );
        assert_eq!(
            classify(&link(LinkKind::Loopback, &["127.0.0.1/8"], None)),
            Err(SkipReason::Loopback)
        );
        assert_eq!(
            classify(&link(
                LinkKind::Veth,
                &["10.0.0.2/24"],
                Some("sandnet:tcfilter:3")
            )),
            Err(SkipReason::Sandnet)
        );
        let mut nomac = link(LinkKind::Veth, &["10.0.0.2/24"], None);
        nomac.interface.mac = None;
        assert_eq!(classify(&nomac), Err(SkipReason::NoMac));
    }
}
