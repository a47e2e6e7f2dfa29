//! Scan a network namespace into the shared model: links, addresses, routes, neighbours.
//!
//! What is kept follows what a guest needs to look like the pod: every link but `lo`; its
//! addresses without IPv6 link-local ones (the guest makes its own); routes of the main table
//! that the kernel did not add by itself (not `proto kernel`, unicast only, no cached
//! clones); permanent neighbours and the default gateways' entries.

use crate::client::Netlink;
use crate::error::Result;
use ipnet::IpNet;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, LinkAttribute, LinkInfo, LinkLayerType, LinkMessage,
};
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteMetric,
    RouteProtocol, RouteType,
};
use netlink_packet_route::AddressFamily;
use sandnet_model::{
    Family, Interface, LinkKind, MacAddr, Neighbor, NeighborState, NetworkConfig, Route,
    RouteScope, RTNH_F_ONLINK,
};
use std::collections::HashMap;
use std::net::IpAddr;

/// One link as the scan found it, with what the host side needs beyond the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkDetail {
    /// Interface index in its namespace.
    pub index: u32,
    /// The model's view of the link (name, kind, MAC, MTU, addresses, flags).
    pub interface: Interface,
    /// `IFLA_LINK`: the lower device (a macvlan's or vlan's parent, a veth's peer index).
    pub parent: Option<u32>,
    /// `IFLA_MASTER`: the bridge or bond this link is enslaved to.
    pub master: Option<u32>,
    /// `IFLA_IFALIAS`, which marks links sandnet created.
    pub alias: Option<String>,
    /// `IFLA_GROUP`, the link group.
    pub group: u32,
}

/// A namespace's complete scan.
#[derive(Debug, Clone, Default)]
pub struct ScanResult {
    /// Every link, `lo` included, in index order.
    pub links: Vec<LinkDetail>,
    /// The model of the namespace's network (without `lo`).
    pub config: NetworkConfig,
}

impl ScanResult {
    /// The link with this index.
    pub fn link(&self, index: u32) -> Option<&LinkDetail> {
        self.links.iter().find(|l| l.index == index)
    }

    /// The link with this name.
    pub fn link_by_name(&self, name: &str) -> Option<&LinkDetail> {
        self.links.iter().find(|l| l.interface.name == name)
    }

    /// Routes that leave by the named device.
    pub fn routes_via(&self, device: &str) -> Vec<Route> {
        self.config
            .routes
            .iter()
            .filter(|r| r.device == device)
            .cloned()
            .collect()
    }
}

/// Scans the namespace the handle's socket is bound to into the model.
pub async fn scan(handle: &rtnetlink::Handle) -> Result<NetworkConfig> {
    Ok(scan_detail(&Netlink::from_handle(handle.clone()))
        .await?
        .config)
}

/// Scans the namespace with per-link details (indexes, parents, aliases).
pub async fn scan_detail(nl: &Netlink) -> Result<ScanResult> {
    let links = nl.links().await?;
    let addrs = nl.addresses().await?;
    let routes = nl.routes().await?;
    let neighs = nl.neighbours().await?;

    let mut details: Vec<LinkDetail> = links.iter().map(link_detail).collect();
    details.sort_by_key(|d| d.index);
    let names: HashMap<u32, String> = details
        .iter()
        .map(|d| (d.index, d.interface.name.clone()))
        .collect();

    for a in &addrs {
        if let Some(net) = address_of(a) {
            if let Some(d) = details.iter_mut().find(|d| d.index == a.header.index) {
                if !d.interface.addresses.contains(&net) {
                    d.interface.addresses.push(net);
                }
            }
        }
    }

    let lo: Vec<u32> = details
        .iter()
        .filter(|d| d.interface.kind == LinkKind::Loopback)
        .map(|d| d.index)
        .collect();
    let routes: Vec<Route> = routes
        .iter()
        .filter(|r| {
            !r.attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Oif(i) if lo.contains(i)))
        })
        .filter_map(|r| route_from_message(r, &names))
        .collect();

    let gateways: Vec<(IpAddr, &str)> = routes
        .iter()
        .filter(|r| r.is_default())
        .filter_map(|r| r.gateway.map(|g| (g, r.device.as_str())))
        .collect();
    let neighbors: Vec<Neighbor> = neighs
        .iter()
        .filter_map(|n| neighbor_from_message(n, &names))
        .filter(|n| {
            n.state == NeighborState::Permanent
                || gateways
                    .iter()
                    .any(|(g, dev)| *g == n.ip && *dev == n.device)
        })
        .filter(|n| {
            !matches!(
                n.state,
                NeighborState::Failed | NeighborState::Incomplete | NeighborState::None
            )
        })
        .collect();

    let config = NetworkConfig {
        interfaces: details
            .iter()
            .filter(|d| d.interface.kind != LinkKind::Loopback)
            .map(|d| d.interface.clone())
            .collect(),
        routes,
        neighbors,
        dns: None,
    };
    Ok(ScanResult {
        links: details,
        config,
    })
}

/// A link message's traffic counters (`IFLA_STATS64`); `None` when it carries none.
pub fn link_counters(l: &LinkMessage) -> Option<sandnet_model::LinkCounters> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::Stats64(s) => Some(sandnet_model::LinkCounters {
            rx_bytes: s.rx_bytes,
            rx_packets: s.rx_packets,
            rx_errors: s.rx_errors,
            rx_dropped: s.rx_dropped,
            tx_bytes: s.tx_bytes,
            tx_packets: s.tx_packets,
            tx_errors: s.tx_errors,
            tx_dropped: s.tx_dropped,
        }),
        _ => None,
    })
}

/// The model's view of one link message.
pub fn link_detail(l: &LinkMessage) -> LinkDetail {
    let mut name = String::new();
    let mut mac = None;
    let mut mtu = 0;
    let mut parent = None;
    let mut master = None;
    let mut alias = None;
    let mut group = 0;
    let mut info_kind: Option<&InfoKind> = None;
    let mut macvtap = false;
    for a in &l.attributes {
        match a {
            LinkAttribute::IfName(n) => name = n.clone(),
            LinkAttribute::Address(b) => mac = MacAddr::from_slice(b),
            LinkAttribute::Mtu(m) => mtu = *m,
            LinkAttribute::Link(p) if *p != 0 => parent = Some(*p),
            LinkAttribute::Controller(m) if *m != 0 => master = Some(*m),
            LinkAttribute::IfAlias(s) if !s.is_empty() => alias = Some(s.clone()),
            LinkAttribute::Group(g) => group = *g,
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        LinkInfo::Kind(k) => info_kind = Some(k),
                        LinkInfo::Data(InfoData::MacVtap(_)) => macvtap = true,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let ether = l.header.link_layer_type == LinkLayerType::Ether;
    let kind = match info_kind {
        Some(InfoKind::Veth) => LinkKind::Veth,
        Some(InfoKind::MacVlan) => LinkKind::Macvlan,
        Some(InfoKind::MacVtap) => LinkKind::Macvtap,
        Some(_) if macvtap => LinkKind::Macvtap,
        Some(InfoKind::IpVlan) => LinkKind::Ipvlan,
        Some(InfoKind::Vlan) => LinkKind::Vlan,
        Some(InfoKind::Tun) if ether => LinkKind::Tap,
        Some(InfoKind::Tun) => LinkKind::Tun,
        Some(InfoKind::Bridge) => LinkKind::Bridge,
        Some(InfoKind::Dummy) => LinkKind::Dummy,
        Some(InfoKind::Other(s)) => LinkKind::from(s.as_str()),
        Some(k) => LinkKind::from(format!("{k:?}").to_lowercase().as_str()),
        None if l.header.link_layer_type == LinkLayerType::Loopback => LinkKind::Loopback,
        None => LinkKind::Physical,
    };
    // Links without a hardware address (tun, ipip, …) report none; an all-zero one is none.
    if mac == Some(MacAddr([0; 6])) && !ether {
        mac = None;
    }
    LinkDetail {
        index: l.header.index,
        interface: Interface {
            name,
            kind,
            mac,
            mtu,
            addresses: Vec::new(),
            flags: l.header.flags.bits(),
        },
        parent,
        master,
        alias,
        group,
    }
}

/// The address of an address message, without IPv6 link-local ones.
pub fn address_of(a: &AddressMessage) -> Option<IpNet> {
    let mut local = None;
    let mut address = None;
    for attr in &a.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    let ip = local.or(address)?;
    if let IpAddr::V6(v6) = ip {
        if v6.segments()[0] & 0xffc0 == 0xfe80 {
            return None;
        }
    }
    IpNet::new(ip, a.header.prefix_len).ok()
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// The model's view of a route message, or `None` for routes a guest must not copy (other
/// tables, `proto kernel`, non-unicast, cached clones, unknown devices, IPv6 multicast).
pub fn route_from_message(r: &RouteMessage, names: &HashMap<u32, String>) -> Option<Route> {
    let h = &r.header;
    let mut table = h.table as u32;
    let mut dest = None;
    let mut gateway = None;
    let mut source = None;
    let mut oif = None;
    let mut mtu = None;
    for a in &r.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(d) => dest = route_ip(d),
            RouteAttribute::Gateway(g) => gateway = route_ip(g),
            RouteAttribute::PrefSource(s) => source = route_ip(s),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Metrics(ms) => {
                for m in ms {
                    if let RouteMetric::Mtu(v) = m {
                        mtu = Some(*v);
                    }
                }
            }
            _ => {}
        }
    }
    if table != RouteHeader::RT_TABLE_MAIN as u32
        || h.protocol == RouteProtocol::Kernel
        || h.kind != RouteType::Unicast
        || h.flags.contains(RouteFlags::Cloned)
    {
        return None;
    }
    let family = match h.address_family {
        AddressFamily::Inet => Family::V4,
        AddressFamily::Inet6 => Family::V6,
        _ => return None,
    };
    let dest_ip = dest.unwrap_or(match family {
        Family::V4 => IpAddr::from([0u8; 4]),
        Family::V6 => IpAddr::from([0u16; 8]),
    });
    if let IpAddr::V6(v6) = dest_ip {
        if v6.segments()[0] & 0xff00 == 0xff00 {
            return None;
        }
    }
    let dest = IpNet::new(dest_ip, h.destination_prefix_length).ok()?;
    let device = names.get(&oif?)?.clone();
    Some(Route {
        dest,
        gateway,
        device,
        source,
        scope: RouteScope::from_raw(u8::from(h.scope))?,
        family,
        mtu,
        flags: h.flags.bits() & RTNH_F_ONLINK,
    })
}

/// The model's view of a neighbour message, or `None` if it lacks an IP or MAC.
pub fn neighbor_from_message(
    n: &NeighbourMessage,
    names: &HashMap<u32, String>,
) -> Option<Neighbor> {
    let mut ip = None;
    let mut mac = None;
    for a in &n.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                ip = Some(IpAddr::V4(*v4))
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                ip = Some(IpAddr::V6(*v6))
            }
            NeighbourAttribute::LinkLayerAddress(b) => mac = MacAddr::from_slice(b),
            _ => {}
        }
    }
    Some(Neighbor {
        ip: ip?,
        mac: mac?,
        device: names.get(&n.header.ifindex)?.clone(),
        state: NeighborState::from_raw(u16::from(n.header.state))?,
        flags: n.header.flags.bits(),
    })
}
