//! CNI results of every spec version, parsed into one type and converted back on demand.
//!
//! The three wire shapes: 0.1.0/0.2.0 (`ip4`/`ip6`, each with its routes), 0.3.0–0.4.0
//! (`interfaces`, `ips` with a `version` field, top-level `routes`) and 1.0.0/1.1.0 (as 0.4.0
//! but without `version`, with interface `mtu`/`socketPath`/`pciID`). Conversions follow
//! libcni's: down to 0.2.0 keeps the first address of each family and the routes of that
//! family (destination and gateway only), and fails when there is no address at all.

mod emit;
mod parse;
#[cfg(test)]
mod tests;

use crate::error::CniError;
use ipnet::IpNet;
use serde_json::Value;
use std::net::IpAddr;

/// The result of an ADD, whatever spec version it came in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CniResult {
    /// The spec version the result was written in (the plugin's `cniVersion`, or the
    /// configuration's when the plugin left it out).
    pub cni_version: String,
    /// Interfaces created by the attachment, host side included. Empty for 0.2.0 results.
    pub interfaces: Vec<ResultInterface>,
    /// Addresses assigned by the attachment.
    pub ips: Vec<ResultIp>,
    /// Routes created by the attachment.
    pub routes: Vec<ResultRoute>,
    /// DNS settings.
    pub dns: ResultDns,
}

/// One entry of `interfaces`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResultInterface {
    /// Interface name.
    pub name: String,
    /// Hardware address, as the plugin wrote it.
    pub mac: Option<String>,
    /// MTU (1.x only).
    pub mtu: Option<u32>,
    /// The netns path for interfaces inside the container; `None` on the host.
    pub sandbox: Option<String>,
    /// Socket path (1.x only).
    pub socket_path: Option<String>,
    /// PCI ID (1.x only).
    pub pci_id: Option<String>,
}

/// One entry of `ips`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultIp {
    /// Address with prefix length (host bits kept: `172.19.0.2/24`).
    pub address: IpNet,
    /// Gateway of the subnet, if any.
    pub gateway: Option<IpAddr>,
    /// Index into [`CniResult::interfaces`].
    pub interface: Option<usize>,
}

/// One entry of `routes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultRoute {
    /// Destination.
    pub dst: IpNet,
    /// Next hop; when absent the `gateway` of the matching address may be used.
    pub gw: Option<IpAddr>,
    /// Path MTU.
    pub mtu: Option<u32>,
    /// Advertised MSS.
    pub advmss: Option<u32>,
    /// Route priority (metric).
    pub priority: Option<u32>,
    /// Routing table.
    pub table: Option<u32>,
    /// Route scope (0 global, 253 link, 254 host).
    pub scope: Option<u32>,
}

/// The `dns` object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResultDns {
    /// Name servers, in priority order.
    pub nameservers: Vec<String>,
    /// Local domain.
    pub domain: Option<String>,
    /// Search domains.
    pub search: Vec<String>,
    /// Resolver options.
    pub options: Vec<String>,
}

impl ResultDns {
    /// True when nothing is set.
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.as_deref().unwrap_or("").is_empty()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

impl CniResult {
    /// The result as JSON in its own version ([`cni_version`](Self::cni_version)).
    pub fn to_json(&self) -> Result<Value, CniError> {
        self.to_value(&self.cni_version)
    }

    /// The interfaces placed in the given sandbox (netns path), with their index.
    pub fn sandbox_interfaces(&self, sandbox: &str) -> Vec<(usize, &ResultInterface)> {
        self.interfaces
            .iter()
            .enumerate()
            .filter(|(_, i)| i.sandbox.as_deref() == Some(sandbox))
            .collect()
    }
}
