//! Parsing a CNI result of any spec version: the serde shapes of each version's wire format
//! and their conversion into the one [`CniResult`] type.

use super::{CniResult, ResultDns, ResultInterface, ResultIp, ResultRoute};
use crate::error::CniError;
use crate::version::{ResultFormat, SpecVersion};
use ipnet::IpNet;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::net::IpAddr;

// ---- wire shapes ----

#[derive(Deserialize, Default)]
struct WireDns {
    #[serde(default)]
    nameservers: Option<Vec<String>>,
    #[serde(default)]
    domain: Option<String>,
    #[serde(default)]
    search: Option<Vec<String>>,
    #[serde(default)]
    options: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct WireRoute {
    dst: String,
    #[serde(default)]
    gw: Option<String>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    advmss: Option<u32>,
    #[serde(default)]
    priority: Option<u32>,
    #[serde(default)]
    table: Option<u32>,
    #[serde(default)]
    scope: Option<u32>,
}

#[derive(Deserialize)]
struct WireIpConfig02 {
    ip: String,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    routes: Option<Vec<WireRoute>>,
}

#[derive(Deserialize)]
struct Wire02 {
    #[serde(default)]
    ip4: Option<WireIpConfig02>,
    #[serde(default)]
    ip6: Option<WireIpConfig02>,
    #[serde(default)]
    dns: Option<WireDns>,
}

#[derive(Deserialize)]
struct WireInterface {
    #[serde(default)]
    name: String,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    sandbox: Option<String>,
    #[serde(default, rename = "socketPath")]
    socket_path: Option<String>,
    #[serde(default, rename = "pciID")]
    pci_id: Option<String>,
}

#[derive(Deserialize)]
struct WireIp {
    #[serde(default)]
    #[allow(dead_code)]
    version: Option<String>,
    #[serde(default)]
    interface: Option<usize>,
    address: String,
    #[serde(default)]
    gateway: Option<String>,
}

#[derive(Deserialize)]
struct WireCurrent {
    #[serde(default)]
    interfaces: Option<Vec<WireInterface>>,
    #[serde(default)]
    ips: Option<Vec<WireIp>>,
    #[serde(default)]
    routes: Option<Vec<WireRoute>>,
    #[serde(default)]
    dns: Option<WireDns>,
}

pub(super) fn bad(msg: impl Into<String>) -> CniError {
    CniError::Result(msg.into())
}

fn parse_net(what: &str, s: &str) -> Result<IpNet, CniError> {
    s.parse::<IpNet>()
        .map_err(|_| bad(format!("{what} {s:?} is not an address in CIDR notation")))
}

fn parse_ip(what: &str, s: Option<&str>) -> Result<Option<IpAddr>, CniError> {
    match s {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| bad(format!("{what} {s:?} is not an IP address"))),
    }
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

fn zero_none(v: Option<u32>) -> Option<u32> {
    v.filter(|v| *v != 0)
}

impl WireRoute {
    fn into_route(self) -> Result<ResultRoute, CniError> {
        Ok(ResultRoute {
            dst: parse_net("route dst", &self.dst)?,
            gw: parse_ip("route gw", self.gw.as_deref())?,
            mtu: zero_none(self.mtu),
            advmss: zero_none(self.advmss),
            priority: zero_none(self.priority),
            table: self.table,
            scope: self.scope,
        })
    }
}

impl From<WireDns> for ResultDns {
    fn from(d: WireDns) -> Self {
        ResultDns {
            nameservers: d.nameservers.unwrap_or_default(),
            domain: non_empty(d.domain),
            search: d.search.unwrap_or_default(),
            options: d.options.unwrap_or_default(),
        }
    }
}

impl CniResult {
    /// Parses a plugin's stdout. `default_version` is the configuration's version, used when
    /// the result has no (or an empty) `cniVersion`, as libcni does.
    pub fn parse(bytes: &[u8], default_version: &str) -> Result<CniResult, CniError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
        CniResult::from_value(value, default_version)
    }

    /// As [`parse`](Self::parse), from an already decoded JSON value (`null` counts as `{}`).
    pub fn from_value(value: Value, default_version: &str) -> Result<CniResult, CniError> {
        let value = match value {
            Value::Null => Value::Object(Map::new()),
            v @ Value::Object(_) => v,
            other => return Err(bad(format!("expected a JSON object, got {other}"))),
        };
        let version = match value.get("cniVersion") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::String(_)) | Some(Value::Null) | None => default_version.to_string(),
            Some(other) => return Err(bad(format!("cniVersion {other} is not a string"))),
        };
        let format = SpecVersion::parse(&version)
            .and_then(|v| v.result_format())
            .ok_or_else(|| bad(format!("unsupported result version {version:?}")))?;
        let version = if version.is_empty() {
            "0.1.0".to_string()
        } else {
            version
        };
        match format {
            ResultFormat::V02 => {
                let w: Wire02 = serde_json::from_value(value)
                    .map_err(|e| bad(format!("version {version} result: {e}")))?;
                let mut r = CniResult {
                    cni_version: version,
                    dns: w.dns.map(Into::into).unwrap_or_default(),
                    ..Default::default()
                };
                for (fam, ipc) in [("ip4", w.ip4), ("ip6", w.ip6)] {
                    let Some(ipc) = ipc else { continue };
                    r.ips.push(ResultIp {
                        address: parse_net(&format!("{fam}.ip"), &ipc.ip)?,
                        gateway: parse_ip(&format!("{fam}.gateway"), ipc.gateway.as_deref())?,
                        interface: None,
                    });
                    for rt in ipc.routes.unwrap_or_default() {
                        r.routes.push(rt.into_route()?);
                    }
                }
                Ok(r)
            }
            ResultFormat::V04 | ResultFormat::V1 => {
                let w: WireCurrent = serde_json::from_value(value)
                    .map_err(|e| bad(format!("version {version} result: {e}")))?;
                let interfaces: Vec<ResultInterface> = w
                    .interfaces
                    .unwrap_or_default()
                    .into_iter()
                    .map(|i| ResultInterface {
                        name: i.name,
                        mac: non_empty(i.mac),
                        mtu: zero_none(i.mtu),
                        sandbox: non_empty(i.sandbox),
                        socket_path: non_empty(i.socket_path),
                        pci_id: non_empty(i.pci_id),
                    })
                    .collect();
                let mut ips = Vec::new();
                for ip in w.ips.unwrap_or_default() {
                    if let Some(idx) = ip.interface {
                        if idx >= interfaces.len() {
                            return Err(bad(format!(
                                "ips entry {} refers to interface {idx}, but there are {} interfaces",
                                ip.address,
                                interfaces.len()
                            )));
                        }
                    }
                    ips.push(ResultIp {
                        address: parse_net("ips.address", &ip.address)?,
                        gateway: parse_ip("ips.gateway", ip.gateway.as_deref())?,
                        interface: ip.interface,
                    });
                }
                let mut routes = Vec::new();
                for rt in w.routes.unwrap_or_default() {
                    routes.push(rt.into_route()?);
                }
                Ok(CniResult {
                    cni_version: version,
                    interfaces,
                    ips,
                    routes,
                    dns: w.dns.map(Into::into).unwrap_or_default(),
                })
            }
        }
    }
}
