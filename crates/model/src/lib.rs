//! The network model that sandnet's host side produces (by scanning a netns) and its guest
//! agent consumes (by applying it inside a VM): interfaces, routes, neighbours and DNS.
//!
//! Plain data with no I/O. Every type serialises to the JSON that `sandnet scan --json`
//! prints, so the same values cross every boundary of the data flow
//! (netns → scan → endpoints → interworking → hypervisor → agent).

#![warn(missing_docs)]

mod counters;
mod interworking;
mod mac;
mod policy;
mod printable;
pub mod state_version;

pub use counters::LinkCounters;
pub use interworking::InterworkingModel;
pub use ipnet::IpNet;
pub use mac::{MacAddr, ParseMacError};
pub use policy::{Bandwidth, GuestSpoofing, RateLimit, TapPolicy, MAX_BURST_MS, MIN_BURST_BYTES};
pub use printable::{one_line, printable, printable_lines};

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// `IFF_UP` from `<linux/if.h>`.
pub const IFF_UP: u32 = 0x1;
/// `IFF_RUNNING` from `<linux/if.h>`.
pub const IFF_RUNNING: u32 = 0x40;
/// `IFF_NOARP` from `<linux/if.h>`.
pub const IFF_NOARP: u32 = 0x80;
/// `IFF_MULTICAST` from `<linux/if.h>`.
pub const IFF_MULTICAST: u32 = 0x1000;
/// `RTNH_F_ONLINK` from `<linux/rtnetlink.h>`: the gateway is on-link even without a
/// matching subnet route.
pub const RTNH_F_ONLINK: u32 = 0x4;

/// What kind of link an interface is, as `IFLA_INFO_KIND` (or its absence) says.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LinkKind {
    /// One end of a veth pair (what CNI's bridge and ptp plugins create).
    Veth,
    /// A macvlan sub-interface.
    Macvlan,
    /// An ipvlan sub-interface.
    Ipvlan,
    /// An 802.1Q VLAN sub-interface.
    Vlan,
    /// A tap device (layer 2 tun/tap).
    Tap,
    /// A tun device (layer 3 tun/tap).
    Tun,
    /// A macvtap device.
    Macvtap,
    /// A Linux bridge.
    Bridge,
    /// A dummy device.
    Dummy,
    /// The loopback device.
    Loopback,
    /// A device with no `IFLA_INFO_KIND`: a physical NIC (or an unnamed virtual one).
    Physical,
    /// Any other `IFLA_INFO_KIND` (vxlan, bond, wireguard, …), kept by its kernel name.
    Other(String),
}

impl LinkKind {
    /// The kernel's name of the kind (`IFLA_INFO_KIND`), or sandnet's for `tap`, `tun`,
    /// `loopback` and `physical`.
    pub fn as_str(&self) -> &str {
        match self {
            LinkKind::Veth => "veth",
            LinkKind::Macvlan => "macvlan",
            LinkKind::Ipvlan => "ipvlan",
            LinkKind::Vlan => "vlan",
            LinkKind::Tap => "tap",
            LinkKind::Tun => "tun",
            LinkKind::Macvtap => "macvtap",
            LinkKind::Bridge => "bridge",
            LinkKind::Dummy => "dummy",
            LinkKind::Loopback => "loopback",
            LinkKind::Physical => "physical",
            LinkKind::Other(s) => s,
        }
    }
}

impl fmt::Display for LinkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl From<&str> for LinkKind {
    fn from(s: &str) -> Self {
        match s {
            "veth" => LinkKind::Veth,
            "macvlan" => LinkKind::Macvlan,
            "ipvlan" => LinkKind::Ipvlan,
            "vlan" => LinkKind::Vlan,
            "tap" => LinkKind::Tap,
            "tun" => LinkKind::Tun,
            "macvtap" => LinkKind::Macvtap,
            "bridge" => LinkKind::Bridge,
            "dummy" => LinkKind::Dummy,
            "loopback" => LinkKind::Loopback,
            "physical" => LinkKind::Physical,
            other => LinkKind::Other(other.to_string()),
        }
    }
}

impl Serialize for LinkKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for LinkKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(LinkKind::from(s.as_str()))
    }
}

/// One network interface: what a guest NIC must look like to match the pod's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// Interface name (at most 15 bytes).
    pub name: String,
    /// Link kind.
    pub kind: LinkKind,
    /// Hardware address; `None` for links without one (tun, some tunnels).
    pub mac: Option<MacAddr>,
    /// MTU in bytes.
    pub mtu: u32,
    /// Addresses with prefix length, e.g. `172.19.0.5/24`, `fd00::5/64`.
    #[serde(default)]
    pub addresses: Vec<IpNet>,
    /// Raw `IFF_*` flags (`IFF_UP`, `IFF_NOARP`, …).
    #[serde(default)]
    pub flags: u32,
}

impl Interface {
    /// Whether `IFF_UP` is set.
    pub fn is_up(&self) -> bool {
        self.flags & IFF_UP != 0
    }
}

/// Address family of a route or neighbour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// IPv4 (`AF_INET`).
    V4,
    /// IPv6 (`AF_INET6`).
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

/// Route scope (`rtm_scope`), by the names `ip route` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteScope {
    /// `RT_SCOPE_UNIVERSE` (0): the destination is reached through a gateway or is global.
    Universe,
    /// `RT_SCOPE_SITE` (200).
    Site,
    /// `RT_SCOPE_LINK` (253): the destination is directly on the link.
    Link,
    /// `RT_SCOPE_HOST` (254): a local address.
    Host,
    /// `RT_SCOPE_NOWHERE` (255).
    Nowhere,
}

impl RouteScope {
    /// The kernel's numeric value.
    pub fn to_raw(self) -> u8 {
        match self {
            RouteScope::Universe => 0,
            RouteScope::Site => 200,
            RouteScope::Link => 253,
            RouteScope::Host => 254,
            RouteScope::Nowhere => 255,
        }
    }

    /// From the kernel's numeric value; unknown values are `None`.
    pub fn from_raw(v: u8) -> Option<RouteScope> {
        Some(match v {
            0 => RouteScope::Universe,
            200 => RouteScope::Site,
            253 => RouteScope::Link,
            254 => RouteScope::Host,
            255 => RouteScope::Nowhere,
            _ => return None,
        })
    }
}

/// One route of the main table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Destination prefix; a default route is `0.0.0.0/0` or `::/0`.
    pub dest: IpNet,
    /// Next hop, if the route goes through a gateway.
    pub gateway: Option<IpAddr>,
    /// Output device name.
    pub device: String,
    /// Preferred source address (`src`), if any.
    #[serde(default)]
    pub source: Option<IpAddr>,
    /// Scope.
    pub scope: RouteScope,
    /// Address family (always that of `dest`).
    pub family: Family,
    /// Route MTU (`RTAX_MTU`), if set.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Raw `RTNH_F_*` flags (e.g. `RTNH_F_ONLINK`).
    #[serde(default)]
    pub flags: u32,
}

impl Route {
    /// Whether this is a default route (`0.0.0.0/0` or `::/0`).
    pub fn is_default(&self) -> bool {
        self.dest.prefix_len() == 0
    }

    /// Whether the route needs a gateway to be reachable first: such routes are applied
    /// after the link-scope ones.
    pub fn has_gateway(&self) -> bool {
        self.gateway.is_some()
    }
}

/// Neighbour (ARP / NDP) entry state (`NUD_*`), by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NeighborState {
    /// `NUD_INCOMPLETE`.
    Incomplete,
    /// `NUD_REACHABLE`.
    Reachable,
    /// `NUD_STALE`.
    Stale,
    /// `NUD_DELAY`.
    Delay,
    /// `NUD_PROBE`.
    Probe,
    /// `NUD_FAILED`.
    Failed,
    /// `NUD_NOARP`.
    Noarp,
    /// `NUD_PERMANENT`.
    Permanent,
    /// `NUD_NONE`.
    None,
}

impl NeighborState {
    /// The kernel's `NUD_*` bit.
    pub fn to_raw(self) -> u16 {
        match self {
            NeighborState::Incomplete => 0x01,
            NeighborState::Reachable => 0x02,
            NeighborState::Stale => 0x04,
            NeighborState::Delay => 0x08,
            NeighborState::Probe => 0x10,
            NeighborState::Failed => 0x20,
            NeighborState::Noarp => 0x40,
            NeighborState::Permanent => 0x80,
            NeighborState::None => 0x00,
        }
    }

    /// From the kernel's `NUD_*` value; an unknown value is `None`.
    pub fn from_raw(v: u16) -> Option<NeighborState> {
        Some(match v {
            0x01 => NeighborState::Incomplete,
            0x02 => NeighborState::Reachable,
            0x04 => NeighborState::Stale,
            0x08 => NeighborState::Delay,
            0x10 => NeighborState::Probe,
            0x20 => NeighborState::Failed,
            0x40 => NeighborState::Noarp,
            0x80 => NeighborState::Permanent,
            0x00 => NeighborState::None,
            _ => return None,
        })
    }
}

/// One neighbour entry the guest needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Neighbor {
    /// Protocol address.
    pub ip: IpAddr,
    /// Link-layer address.
    pub mac: MacAddr,
    /// Device name.
    pub device: String,
    /// Entry state.
    pub state: NeighborState,
    /// Raw `NTF_*` flags.
    #[serde(default)]
    pub flags: u8,
}

/// DNS configuration, as `resolv.conf` carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    /// `nameserver` addresses.
    #[serde(default)]
    pub nameservers: Vec<IpAddr>,
    /// `search` domains.
    #[serde(default)]
    pub search: Vec<String>,
    /// `options` values (`ndots:5`, …).
    #[serde(default)]
    pub options: Vec<String>,
}

impl Dns {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty() && self.search.is_empty() && self.options.is_empty()
    }

    /// The `resolv.conf` lines, one per entry (the form Kata's `CreateSandbox.dns` carries).
    pub fn to_lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .nameservers
            .iter()
            .map(|ns| format!("nameserver {ns}"))
            .collect();
        if !self.search.is_empty() {
            lines.push(format!("search {}", self.search.join(" ")));
        }
        if !self.options.is_empty() {
            lines.push(format!("options {}", self.options.join(" ")));
        }
        lines
    }

    /// Parses `resolv.conf` lines; comments and unknown keywords are ignored, a bad
    /// nameserver address is an error.
    pub fn from_lines<'a, I: IntoIterator<Item = &'a str>>(lines: I) -> Result<Dns, ModelError> {
        let mut dns = Dns::default();
        for line in lines {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    let w = words.next().unwrap_or_default();
                    let ip = IpAddr::from_str(w)
                        .map_err(|_| ModelError::BadNameserver(w.to_string()))?;
                    dns.nameservers.push(ip);
                }
                Some("search") | Some("domain") => dns.search.extend(words.map(str::to_string)),
                Some("options") => dns.options.extend(words.map(str::to_string)),
                _ => {}
            }
        }
        Ok(dns)
    }
}

/// The whole network of a pod: what a scan finds and what the agent applies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkConfig {
    /// Interfaces (the scan leaves out `lo`).
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    /// Routes of the main table, without `proto kernel` ones.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Neighbours the guest needs (permanent ones and the default gateways').
    #[serde(default)]
    pub neighbors: Vec<Neighbor>,
    /// DNS, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
}

impl NetworkConfig {
    /// The interface with this name.
    pub fn interface(&self, name: &str) -> Option<&Interface> {
        self.interfaces.iter().find(|i| i.name == name)
    }

    /// Routes in the order a guest must install them: routes without a gateway (link
    /// scope) first, then those through a gateway; otherwise in their original order.
    pub fn routes_in_apply_order(&self) -> Vec<&Route> {
        in_apply_order(&self.routes)
    }
}

/// Routes in the order they can be installed: those without a gateway (link scope) first,
/// then those through a gateway; otherwise in their original order.
pub fn in_apply_order(routes: &[Route]) -> Vec<&Route> {
    let mut v: Vec<&Route> = routes.iter().collect();
    v.sort_by_key(|r| r.has_gateway());
    v
}

/// Errors of the model's own parsing and checks.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelError {
    /// A `nameserver` line whose address does not parse.
    #[error("bad nameserver address {0:?}")]
    BadNameserver(String),
    /// An interworking model name that sandnet does not know.
    #[error("unknown interworking model {0:?} (expected tcfilter, macvtap or none)")]
    UnknownInterworkingModel(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NetworkConfig {
        NetworkConfig {
            interfaces: vec![Interface {
                name: "eth0".into(),
                kind: LinkKind::Veth,
                mac: Some("02:42:ac:13:00:05".parse().unwrap()),
                mtu: 1500,
                addresses: vec![
                    "172.19.0.5/24".parse().unwrap(),
                    "fd00::5/64".parse().unwrap(),
                ],
                flags: IFF_UP | IFF_MULTICAST,
            }],
            routes: vec![
                Route {
                    dest: "0.0.0.0/0".parse().unwrap(),
                    gateway: Some("172.19.0.1".parse().unwrap()),
                    device: "eth0".into(),
                    source: None,
                    scope: RouteScope::Universe,
                    family: Family::V4,
                    mtu: Some(1400),
                    flags: 0,
                },
                Route {
                    dest: "10.0.0.0/8".parse().unwrap(),
                    gateway: None,
                    device: "eth0".into(),
                    source: None,
                    scope: RouteScope::Link,
                    family: Family::V4,
                    mtu: None,
                    flags: 0,
                },
            ],
            neighbors: vec![Neighbor {
                ip: "172.19.0.1".parse().unwrap(),
                mac: "aa:bb:cc:dd:ee:ff".parse().unwrap(),
                device: "eth0".into(),
                state: NeighborState::Permanent,
                flags: 0,
            }],
            dns: None,
        }
    }

    #[test]
    fn json_shape_is_the_cli_contract() {
        let v = serde_json::to_value(sample()).unwrap();
        assert_eq!(v["interfaces"][0]["name"], "eth0");
        assert_eq!(v["interfaces"][0]["kind"], "veth");
        assert_eq!(v["interfaces"][0]["mac"], "02:42:ac:13:00:05");
        assert_eq!(v["interfaces"][0]["addresses"][0], "172.19.0.5/24");
        assert_eq!(v["routes"][0]["dest"], "0.0.0.0/0");
        assert_eq!(v["routes"][0]["gateway"], "172.19.0.1");
        assert_eq!(v["routes"][1]["gateway"], serde_json::Value::Null);
        assert_eq!(v["routes"][0]["scope"], "universe");
        assert_eq!(v["neighbors"][0]["state"], "permanent");
        assert!(v.get("dns").is_none());
    }

    #[test]
    fn json_round_trip() {
        let c = sample();
        let s = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<NetworkConfig>(&s).unwrap(), c);
    }

    #[test]
    fn link_routes_come_before_gateway_routes() {
        let c = sample();
        let order: Vec<_> = c
            .routes_in_apply_order()
            .iter()
            .map(|r| r.dest.to_string())
            .collect();
        assert_eq!(order, vec!["10.0.0.0/8", "0.0.0.0/0"]);
    }

    #[test]
    fn unknown_kind_is_kept_by_name() {
        let k: LinkKind = serde_json::from_str("\"vxlan\"").unwrap();
        assert_eq!(k, LinkKind::Other("vxlan".into()));
        assert_eq!(serde_json::to_string(&k).unwrap(), "\"vxlan\"");
    }

    #[test]
    fn dns_lines_round_trip() {
        let d = Dns {
            nameservers: vec![
                "8.8.8.8".parse().unwrap(),
                "2001:4860:4860::8888".parse().unwrap(),
            ],
            search: vec!["svc.cluster.local".into(), "cluster.local".into()],
            options: vec!["ndots:5".into()],
        };
        let lines = d.to_lines();
        assert_eq!(lines[0], "nameserver 8.8.8.8");
        let back = Dns::from_lines(lines.iter().map(String::as_str)).unwrap();
        assert_eq!(back, d);
        assert_eq!(
            Dns::from_lines(["nameserver nope"]),
            Err(ModelError::BadNameserver("nope".into()))
        );
    }

    #[test]
    fn scope_and_state_raw_values() {
        for s in [
            RouteScope::Universe,
            RouteScope::Site,
            RouteScope::Link,
            RouteScope::Host,
            RouteScope::Nowhere,
        ] {
            assert_eq!(RouteScope::from_raw(s.to_raw()), Some(s));
        }
        assert_eq!(
            NeighborState::from_raw(0x80),
            Some(NeighborState::Permanent)
        );
        assert_eq!(NeighborState::from_raw(0x3), None);
    }
}
