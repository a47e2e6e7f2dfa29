//! Kata 1.x `kata-network` JSON (interface and route objects), for `sandnet net` input and
//! output.
//!
//! These objects are the JSON form of the protocol's `types.Interface` and `types.Route`
//! (Kata's field names). They are decoded by the same code as the agent protocol's
//! messages ([`crate::convert`]): an object is copied field by field into its message and
//! converted from there, so the two entry points cannot disagree. Only what the JSON form
//! adds is checked here: `family` numbers (Kata's 0/1 or Linux's `AF_INET` 2/`AF_INET6` 10)
//! and, since the object is input to a real link, an MTU of 0 (unset) or 68…65535.

use crate::convert::{interface_from_proto, interface_to_proto, route_from_proto, route_to_proto};
use crate::{types, ConvertError};
use sandnet_model::{Family, Interface, LinkKind, Route, IFF_UP};
use serde::{Deserialize, Serialize};

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
    /// MTU in bytes; 0 for unset.
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

/// Why a Kata object does not convert; each names the object, and the field at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KataError {
    /// A field of an interface object that does not decode.
    #[error("interface {iface:?}")]
    Interface {
        /// Interface name.
        iface: String,
        /// What is wrong with it.
        #[source]
        source: ConvertError,
    },
    /// A family number that is unknown or does not match the address.
    #[error("interface {iface:?}: family {family} does not match address {addr}")]
    BadFamily {
        /// Interface name.
        iface: String,
        /// Family number given.
        family: i32,
        /// Address text.
        addr: String,
    },
    /// An MTU that is neither 0 (unset) nor 68…65535.
    #[error("interface {iface:?}: bad mtu {mtu}")]
    BadMtu {
        /// Interface name.
        iface: String,
        /// MTU given.
        mtu: u64,
    },
    /// A field of a route object that does not decode.
    #[error("route {dest:?} dev {device:?}")]
    Route {
        /// Route destination text.
        dest: String,
        /// Route device.
        device: String,
        /// What is wrong with it.
        #[source]
        source: ConvertError,
    },
}

/// The family a Kata `family` number names.
fn family_of(n: i32) -> Option<Family> {
    match n {
        0 | 2 => Some(Family::V4),
        1 | 10 => Some(Family::V6),
        _ => None,
    }
}

impl KataInterface {
    /// The model interface this object describes (kind `veth`, link up).
    pub fn to_model(&self) -> Result<Interface, KataError> {
        let bad_family = |a: &KataIpAddress| KataError::BadFamily {
            iface: self.name.clone(),
            family: a.family,
            addr: a.address.clone(),
        };
        let mut p = types::Interface {
            device: self.device.clone(),
            name: self.name.clone(),
            mtu: self.mtu,
            hwAddr: self.hw_addr.clone(),
            type_: LinkKind::Veth.as_str().to_string(),
            raw_flags: IFF_UP,
            ..Default::default()
        };
        for a in &self.ip_addresses {
            let family = family_of(a.family).ok_or_else(|| bad_family(a))?;
            p.IPAddresses.push(types::IPAddress {
                family: match family {
                    Family::V4 => types::IPFamily::v4,
                    Family::V6 => types::IPFamily::v6,
                }
                .into(),
                address: a.address.clone(),
                mask: a.mask.clone(),
                ..Default::default()
            });
        }
        let i = interface_from_proto(&p).map_err(|source| KataError::Interface {
            iface: self.name.clone(),
            source,
        })?;
        // The protocol takes the family from the address; the JSON form must agree with it.
        for (a, n) in self.ip_addresses.iter().zip(&i.addresses) {
            if family_of(a.family) != Some(Family::of(&n.addr())) {
                return Err(bad_family(a));
            }
        }
        // 0 (or no `mtu` at all) leaves it unset: e.g. an object naming a link to unplug.
        if i.mtu != 0 && !(68..=65535).contains(&i.mtu) {
            return Err(KataError::BadMtu {
                iface: self.name.clone(),
                mtu: self.mtu,
            });
        }
        Ok(i)
    }

    /// The Kata object for a model interface (`device` is the interface name).
    pub fn from_model(i: &Interface) -> KataInterface {
        let p = interface_to_proto(i);
        KataInterface {
            device: p.device,
            name: p.name,
            ip_addresses: p
                .IPAddresses
                .into_iter()
                .map(|a| KataIpAddress {
                    family: a.family.value(),
                    address: a.address,
                    mask: a.mask,
                })
                .collect(),
            mtu: p.mtu,
            hw_addr: p.hwAddr,
        }
    }
}

impl KataRoute {
    /// The model route this object describes. A default route (`dest` empty or
    /// `default`) takes its family from `gateway`, else from `source`, else IPv4.
    pub fn to_model(&self) -> Result<Route, KataError> {
        let p = types::Route {
            dest: self.dest.clone(),
            gateway: self.gateway.clone(),
            device: self.device.clone(),
            source: self.source.clone(),
            scope: self.scope,
            ..Default::default()
        };
        route_from_proto(&p).map_err(|source| KataError::Route {
            dest: self.dest.clone(),
            device: self.device.clone(),
            source,
        })
    }

    /// The Kata object for a model route (`dest` written out, `::/0` for an IPv6 default
    /// route, so the object reads back as the same route).
    pub fn from_model(r: &Route) -> KataRoute {
        let p = route_to_proto(r);
        KataRoute {
            dest: p.dest,
            gateway: p.gateway,
            device: p.device,
            source: p.source,
            scope: p.scope,
        }
    }
}

#[cfg(test)]
#[path = "kata_json_tests.rs"]
mod tests;
