//! Kata 1.x `kata-network` JSON (interface and route objects) and its conversion to the
//! model, for `sandnet net` input and output.

use crate::{Family, Interface, LinkKind, MacAddr, Route, RouteScope, IFF_UP};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// One address of a Kata interface object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KataIpAddress {
    /// Address family: 0 or 2 (`AF_INET`) for IPv4, 1 or 10 (`AF_INET6`) for IPv6.
    #[serde(default)]
    pub family: i32,
    /// The address, without prefix.
    pub address: String,
    /// Prefix length, as a decimal string.
    pub mask: String,
}

/// A Kata interface object (`device`, `name`, `IPAddresses`, `mtu`, `hwAddr`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KataInterface {
    /// Device name on the host side.
    #[serde(default)]
    pub device: String,
    /// Interface name in the guest.
    pub name: String,
    /// Addresses.
    #[serde(rename = "IPAddresses", default)]
    pub ip_addresses: Vec<KataIpAddress>,
    /// MTU in bytes.
    #[serde(default)]
    pub mtu: u64,
    /// Hardware address, `aa:bb:cc:dd:ee:ff`; empty for none.
    #[serde(rename = "hwAddr", default)]
    pub hw_addr: String,
}

/// A Kata route object (`dest`, `gateway`, `device`, `source`, `scope`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KataRoute {
    /// Destination prefix; empty or `default` for a default route.
    #[serde(default)]
    pub dest: String,
    /// Next hop; empty for none.
    #[serde(default)]
    pub gateway: String,
    /// Output device name.
    pub device: String,
    /// Preferred source address; empty for none.
    #[serde(default)]
    pub source: String,
    /// Numeric scope (`rtm_scope`).
    #[serde(default)]
    pub scope: u32,
}

/// Why a Kata object does not convert; each names the field and value at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KataError {
    /// An address or prefix that does not parse.
    #[error("interface {iface}: bad address {addr:?}/{mask:?}")]
    BadAddress {
        /// Interface name.
        iface: String,
        /// Address text.
        addr: String,
        /// Mask text.
        mask: String,
    },
    /// A family number that is unknown or does not match the address.
    #[error("interface {iface}: family {family} does not match address {addr}")]
    BadFamily {
        /// Interface name.
        iface: String,
        /// Family number given.
        family: i32,
        /// Address text.
        addr: String,
    },
    /// A MAC address that does not parse.
    #[error("interface {iface}: bad hwAddr {mac:?}")]
    BadMac {
        /// Interface name.
        iface: String,
        /// MAC text.
        mac: String,
    },
    /// An MTU that is zero or too large.
    #[error("interface {iface}: bad mtu {mtu}")]
    BadMtu {
        /// Interface name.
        iface: String,
        /// MTU given.
        mtu: u64,
    },
    /// A route field that does not parse.
    #[error("route {dest:?} dev {device}: bad {field} {value:?}")]
    BadRoute {
        /// Route destination text.
        dest: String,
        /// Route device.
        device: String,
        /// Field name.
        field: &'static str,
        /// Field text.
        value: String,
    },
}

impl KataInterface {
    /// The model interface this object describes (kind `veth`, link up).
    pub fn to_model(&self) -> Result<Interface, KataError> {
        let mut addresses = Vec::with_capacity(self.ip_addresses.len());
        for a in &self.ip_addresses {
            let bad = || KataError::BadAddress {
                iface: self.name.clone(),
                addr: a.address.clone(),
                mask: a.mask.clone(),
            };
            let ip: IpAddr = a.address.parse().map_err(|_| bad())?;
            let len: u8 = a.mask.parse().map_err(|_| bad())?;
            let want = match a.family {
                0 | 2 => Some(Family::V4),
                1 | 10 => Some(Family::V6),
                _ => None,
            };
            if want != Some(Family::of(&ip)) {
                return Err(KataError::BadFamily {
                    iface: self.name.clone(),
                    family: a.family,
                    addr: a.address.clone(),
                });
            }
            addresses.push(IpNet::new(ip, len).map_err(|_| bad())?);
        }
        let mac = if self.hw_addr.is_empty() {
            None
        } else {
            Some(
                self.hw_addr
                    .parse::<MacAddr>()
                    .map_err(|_| KataError::BadMac {
                        iface: self.name.clone(),
                        mac: self.hw_addr.clone(),
                    })?,
            )
        };
        // 0 (or no `mtu` at all) leaves it unset: e.g. an object naming a link to unplug.
        let mtu = match u32::try_from(self.mtu) {
            Ok(m) if m == 0 || (68..=65535).contains(&m) => m,
            _ => {
                return Err(KataError::BadMtu {
                    iface: self.name.clone(),
                    mtu: self.mtu,
                })
            }
        };
        Ok(Interface {
            name: self.name.clone(),
            kind: LinkKind::Veth,
            mac,
            mtu,
            addresses,
            flags: IFF_UP,
        })
    }

    /// The Kata object for a model interface (`device` is the interface name).
    pub fn from_model(i: &Interface) -> KataInterface {
        KataInterface {
            device: i.name.clone(),
            name: i.name.clone(),
            ip_addresses: i
                .addresses
                .iter()
                .map(|n| KataIpAddress {
                    family: match n {
                        IpNet::V4(_) => 0,
                        IpNet::V6(_) => 1,
                    },
                    address: n.addr().to_string(),
                    mask: n.prefix_len().to_string(),
                })
                .collect(),
            mtu: u64::from(i.mtu),
            hw_addr: i.mac.map(|m| m.to_string()).unwrap_or_default(),
        }
    }
}

impl KataRoute {
    /// The model route this object describes.
    pub fn to_model(&self) -> Result<Route, KataError> {
        let bad = |field: &'static str, value: &str| KataError::BadRoute {
            dest: self.dest.clone(),
            device: self.device.clone(),
            field,
            value: value.to_string(),
        };
        let opt_ip = |field: &'static str, s: &str| -> Result<Option<IpAddr>, KataError> {
            if s.is_empty() {
                Ok(None)
            } else {
                s.parse().map(Some).map_err(|_| bad(field, s))
            }
        };
        let gateway = opt_ip("gateway", &self.gateway)?;
        let source = opt_ip("source", &self.source)?;
        let dest: IpNet = if self.dest.is_empty() || self.dest == "default" {
            let v6 = matches!(gateway.or(source), Some(IpAddr::V6(_)));
            if v6 {
                "::/0".parse().map_err(|_| bad("dest", &self.dest))?
            } else {
                "0.0.0.0/0".parse().map_err(|_| bad("dest", &self.dest))?
            }
        } else if let Ok(n) = self.dest.parse::<IpNet>() {
            n
        } else {
            let ip: IpAddr = self.dest.parse().map_err(|_| bad("dest", &self.dest))?;
            IpNet::from(ip)
        };
        if self.device.is_empty() {
            return Err(bad("device", &self.device));
        }
        let scope = u8::try_from(self.scope)
            .ok()
            .and_then(RouteScope::from_raw)
            .ok_or_else(|| bad("scope", &self.scope.to_string()))?;
        let family = Family::of(&dest.addr());
        for ip in [gateway, source].into_iter().flatten() {
            if Family::of(&ip) != family {
                return Err(bad("family of", &ip.to_string()));
            }
        }
        Ok(Route {
            dest,
            gateway,
            device: self.device.clone(),
            source,
            scope,
            family,
            mtu: None,
            flags: 0,
        })
    }

    /// The Kata object for a model route.
    pub fn from_model(r: &Route) -> KataRoute {
        KataRoute {
            dest: if r.is_default() {
                String::new()
            } else {
                r.dest.to_string()
            },
            gateway: r.gateway.map(|g| g.to_string()).unwrap_or_default(),
            device: r.device.clone(),
            source: r.source.map(|s| s.to_string()).unwrap_or_default(),
            scope: u32::from(r.scope.to_raw()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_round_trips_through_kata_json() {
        let j = r#"{"device":"eth1","name":"eth1","mtu":1400,"hwAddr":"02:00:ca:fe:00:01",
            "IPAddresses":[{"family":0,"address":"10.9.0.2","mask":"24"},
                           {"family":1,"address":"fd00::2","mask":"64"}]}"#;
        let k: KataInterface = serde_json::from_str(j).unwrap();
        let m = k.to_model().unwrap();
        assert_eq!(m.mtu, 1400);
        assert_eq!(m.addresses.len(), 2);
        assert_eq!(m.mac.unwrap().to_string(), "02:00:ca:fe:00:01");
        assert_eq!(KataInterface::from_model(&m).to_model().unwrap(), m);
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
        b.ip_addresses[0].family = 0;
        b.ip_addresses[0].mask = "33".into();
        assert!(matches!(b.to_model(), Err(KataError::BadAddress { .. })));
        let mut b = base.clone();
        b.ip_addresses.clear();
        b.hw_addr = "zz".into();
        assert!(matches!(b.to_model(), Err(KataError::BadMac { .. })));
        b.hw_addr.clear();
        b.mtu = 40;
        assert!(matches!(b.to_model(), Err(KataError::BadMtu { .. })));
        b.mtu = 0;
        assert_eq!(b.to_model().map(|i| i.mtu), Ok(0), "0: unset");
    }

    #[test]
    fn routes_convert_both_ways() {
        let j = r#"[{"dest":"","gateway":"10.9.0.1","device":"eth1","source":"","scope":0},
                    {"dest":"10.9.0.0/24","gateway":"","device":"eth1","source":"10.9.0.2","scope":253}]"#;
        let ks: Vec<KataRoute> = serde_json::from_str(j).unwrap();
        let rs: Vec<Route> = ks.iter().map(|k| k.to_model().unwrap()).collect();
        assert!(rs[0].is_default());
        assert_eq!(rs[1].scope, RouteScope::Link);
        for (k, r) in ks.iter().zip(&rs) {
            assert_eq!(&KataRoute::from_model(r), k);
        }
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
        let e = r.to_model().unwrap_err().to_string();
        assert!(e.contains("10.1.0.0/16") && e.contains("eth1"), "{e}");
        let mut b = r.clone();
        b.gateway.clear();
        b.scope = 7;
        assert!(b.to_model().unwrap_err().to_string().contains("scope"));
        b.scope = 0;
        b.dest = "nonsense".into();
        assert!(b.to_model().unwrap_err().to_string().contains("dest"));
    }
}
