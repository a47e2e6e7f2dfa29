//! The one place that maps between the protocol's messages and sandnet's network model.
//!
//! Decoding follows what Kata's runtime sends: a default route has an empty `dest`,
//! `IPAddress.mask` is the prefix length as a decimal string, `source` is a bare address,
//! neighbours carry no mask. It also accepts what Kata's own agent lists (a `source` written
//! as `addr/len`). Encoding writes the correct family and keeps the real `dest` of gateway
//! routes (Kata's agent gets both wrong).

mod address;
mod interface;
mod neighbor;
mod route;
#[cfg(test)]
pub(crate) mod tests;

pub use address::{ip_net_from_proto, ip_net_to_proto};
pub use interface::{interface_from_proto, interface_to_proto};
pub use neighbor::{neighbor_from_proto, neighbor_to_proto};
pub use route::{route_from_proto, route_to_proto};

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

pub(crate) fn check_name(name: &str) -> Result<(), ConvertError> {
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

/// DNS as the `resolv.conf` lines `CreateSandboxRequest.dns` carries.
pub fn dns_to_lines(d: &Dns) -> Vec<String> {
    d.to_lines()
}

/// `CreateSandboxRequest.dns` lines as DNS; a bad `nameserver` address is an error.
pub fn dns_from_lines(lines: &[String]) -> Result<Dns, ConvertError> {
    Ok(Dns::from_lines(lines.iter().map(String::as_str))?)
}
