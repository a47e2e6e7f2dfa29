//! CNI results of every spec version, parsed into one type and converted back on demand.
//!
//! The three wire shapes: 0.1.0/0.2.0 (`ip4`/`ip6`, each with its routes), 0.3.0–0.4.0
//! (`interfaces`, `ips` with a `version` field, top-level `routes`) and 1.0.0/1.1.0 (as 0.4.0
//! but without `version`, with interface `mtu`/`socketPath`/`pciID`). Conversions follow
//! libcni's: down to 0.2.0 keeps the first address of each family and the routes of that
//! family (destination and gateway only), and fails when there is no address at all.

use crate::error::CniError;
use crate::version::{ResultFormat, SpecVersion};
use ipnet::IpNet;
use serde::Deserialize;
use serde_json::{json, Map, Value};
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

fn bad(msg: impl Into<String>) -> CniError {
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

    /// The result as JSON in the given spec version (for `prevResult`, or to print).
    pub fn to_value(&self, version: &str) -> Result<Value, CniError> {
        let format = SpecVersion::parse(version)
            .and_then(|v| v.result_format())
            .ok_or_else(|| bad(format!("cannot convert to unsupported version {version:?}")))?;
        let version = if version.is_empty() { "0.1.0" } else { version };
        let mut obj = Map::new();
        obj.insert("cniVersion".into(), json!(version));
        match format {
            ResultFormat::V02 => {
                let mut any = false;
                for (key, want_v4) in [("ip4", true), ("ip6", false)] {
                    let Some(ip) = self.ips.iter().find(|ip| is_v4(&ip.address) == want_v4) else {
                        continue;
                    };
                    any = true;
                    let mut ipc = Map::new();
                    ipc.insert("ip".into(), json!(ip.address.to_string()));
                    if let Some(gw) = ip.gateway {
                        ipc.insert("gateway".into(), json!(gw.to_string()));
                    }
                    let routes: Vec<Value> = self
                        .routes
                        .iter()
                        .filter(|r| is_v4(&r.dst) == want_v4)
                        .map(|r| {
                            let mut m = Map::new();
                            m.insert("dst".into(), json!(r.dst.to_string()));
                            if let Some(gw) = r.gw {
                                m.insert("gw".into(), json!(gw.to_string()));
                            }
                            Value::Object(m)
                        })
                        .collect();
                    if !routes.is_empty() {
                        ipc.insert("routes".into(), Value::Array(routes));
                    }
                    obj.insert(key.into(), Value::Object(ipc));
                }
                if !any {
                    return Err(bad(format!(
                        "cannot convert to version {version}: no IP addresses in the result"
                    )));
                }
            }
            ResultFormat::V04 | ResultFormat::V1 => {
                let v1 = format == ResultFormat::V1;
                if !self.interfaces.is_empty() {
                    let ifs: Vec<Value> = self
                        .interfaces
                        .iter()
                        .map(|i| {
                            let mut m = Map::new();
                            m.insert("name".into(), json!(i.name));
                            put_str(&mut m, "mac", &i.mac);
                            if v1 {
                                if let Some(mtu) = i.mtu {
                                    m.insert("mtu".into(), json!(mtu));
                                }
                            }
                            put_str(&mut m, "sandbox", &i.sandbox);
                            if v1 {
                                put_str(&mut m, "socketPath", &i.socket_path);
                                put_str(&mut m, "pciID", &i.pci_id);
                            }
                            Value::Object(m)
                        })
                        .collect();
                    obj.insert("interfaces".into(), Value::Array(ifs));
                }
                if !self.ips.is_empty() {
                    let ips: Vec<Value> = self
                        .ips
                        .iter()
                        .map(|ip| {
                            let mut m = Map::new();
                            if !v1 {
                                let fam = if is_v4(&ip.address) { "4" } else { "6" };
                                m.insert("version".into(), json!(fam));
                            }
                            if let Some(idx) = ip.interface {
                                m.insert("interface".into(), json!(idx));
                            }
                            m.insert("address".into(), json!(ip.address.to_string()));
                            if let Some(gw) = ip.gateway {
                                m.insert("gateway".into(), json!(gw.to_string()));
                            }
                            Value::Object(m)
                        })
                        .collect();
                    obj.insert("ips".into(), Value::Array(ips));
                }
                if !self.routes.is_empty() {
                    let routes: Vec<Value> = self.routes.iter().map(route_value).collect();
                    obj.insert("routes".into(), Value::Array(routes));
                }
            }
        }
        if !self.dns.is_empty() {
            let mut d = Map::new();
            if !self.dns.nameservers.is_empty() {
                d.insert("nameservers".into(), json!(self.dns.nameservers));
            }
            put_str(&mut d, "domain", &self.dns.domain);
            if !self.dns.search.is_empty() {
                d.insert("search".into(), json!(self.dns.search));
            }
            if !self.dns.options.is_empty() {
                d.insert("options".into(), json!(self.dns.options));
            }
            obj.insert("dns".into(), Value::Object(d));
        }
        Ok(Value::Object(obj))
    }

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

fn is_v4(n: &IpNet) -> bool {
    matches!(n, IpNet::V4(_))
}

fn put_str(m: &mut Map<String, Value>, key: &str, v: &Option<String>) {
    if let Some(s) = v {
        if !s.is_empty() {
            m.insert(key.into(), json!(s));
        }
    }
}

fn route_value(r: &ResultRoute) -> Value {
    let mut m = Map::new();
    m.insert("dst".into(), json!(r.dst.to_string()));
    if let Some(gw) = r.gw {
        m.insert("gw".into(), json!(gw.to_string()));
    }
    for (k, v) in [
        ("mtu", r.mtu),
        ("advmss", r.advmss),
        ("priority", r.priority),
    ] {
        if let Some(v) = v {
            m.insert(k.into(), json!(v));
        }
    }
    for (k, v) in [("table", r.table), ("scope", r.scope)] {
        if let Some(v) = v {
            m.insert(k.into(), json!(v));
        }
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    /// What Debian's bridge plugin prints for the seed's 0.2.0 config.
    const SEED_020: &str = r#"{
        "cniVersion": "0.2.0",
        "ip4": {"ip": "172.19.0.2/24", "gateway": "172.19.0.1", "routes": [{"dst": "0.0.0.0/0"}]},
        "dns": {}
    }"#;

    #[test]
    fn v020_seed_result() {
        let r = CniResult::parse(SEED_020.as_bytes(), "0.2.0").unwrap();
        assert_eq!(r.cni_version, "0.2.0");
        assert!(r.interfaces.is_empty());
        assert_eq!(
            r.ips,
            vec![ResultIp {
                address: net("172.19.0.2/24"),
                gateway: ip("172.19.0.1"),
                interface: None
            }]
        );
        assert_eq!(r.routes.len(), 1);
        assert_eq!(r.routes[0].dst, net("0.0.0.0/0"));
        assert_eq!(r.routes[0].gw, None);
        assert!(r.dns.is_empty());
        // Host bits are kept in the address.
        assert_eq!(r.ips[0].address.addr().to_string(), "172.19.0.2");
        // Up-conversion as libcni: 0.4.0 gets "version", 1.0.0 does not.
        assert_eq!(
            r.to_value("0.4.0").unwrap(),
            serde_json::json!({"cniVersion": "0.4.0",
                "ips": [{"version": "4", "address": "172.19.0.2/24", "gateway": "172.19.0.1"}],
                "routes": [{"dst": "0.0.0.0/0"}]})
        );
        assert_eq!(
            r.to_value("1.0.0").unwrap(),
            serde_json::json!({"cniVersion": "1.0.0",
                "ips": [{"address": "172.19.0.2/24", "gateway": "172.19.0.1"}],
                "routes": [{"dst": "0.0.0.0/0"}]})
        );
        // And back to 0.2.0 unchanged (the empty dns is dropped).
        assert_eq!(
            r.to_value("0.2.0").unwrap(),
            serde_json::json!({"cniVersion": "0.2.0",
                "ip4": {"ip": "172.19.0.2/24", "gateway": "172.19.0.1", "routes": [{"dst": "0.0.0.0/0"}]}})
        );
    }

    #[test]
    fn v010_and_missing_version() {
        let r = CniResult::parse(
            br#"{"ip4": {"ip": "10.0.0.2/8"}, "ip6": {"ip": "fd00::2/64", "gateway": "fd00::1"}}"#,
            "",
        )
        .unwrap();
        assert_eq!(r.cni_version, "0.1.0");
        assert_eq!(r.ips.len(), 2);
        assert_eq!(r.ips[1].gateway, ip("fd00::1"));
        // Without cniVersion the configuration's version applies (libcni's fixup).
        let r = CniResult::parse(br#"{"ips": [{"address": "10.0.0.2/8"}]}"#, "1.0.0").unwrap();
        assert_eq!(r.cni_version, "1.0.0");
        assert_eq!(r.ips[0].address, net("10.0.0.2/8"));
        // `null` counts as an empty result.
        let r = CniResult::parse(b"null", "1.0.0").unwrap();
        assert_eq!(
            r,
            CniResult {
                cni_version: "1.0.0".into(),
                ..Default::default()
            }
        );
    }

    #[test]
    fn v031_and_v040_results() {
        for v in ["0.3.0", "0.3.1", "0.4.0"] {
            let text = format!(
                r#"{{"cniVersion": "{v}",
                "interfaces": [{{"name": "cni0", "mac": "0a:58:ac:13:00:01"}},
                               {{"name": "veth1", "mac": "0a:58:ac:13:00:02"}},
                               {{"name": "eth0", "mac": "0a:58:ac:13:00:03", "sandbox": "/run/netns/p"}}],
                "ips": [{{"version": "4", "interface": 2, "address": "172.19.0.3/24", "gateway": "172.19.0.1"}},
                        {{"version": "6", "interface": 2, "address": "fd00::3/64"}}],
                "routes": [{{"dst": "0.0.0.0/0", "gw": "172.19.0.1"}}, {{"dst": "::/0"}}],
                "dns": {{"nameservers": ["1.1.1.1"], "domain": "example", "search": ["a", "b"], "options": ["ndots:2"]}}}}"#
            );
            let r = CniResult::parse(text.as_bytes(), "1.0.0").unwrap();
            assert_eq!(r.cni_version, v);
            assert_eq!(r.interfaces.len(), 3);
            assert_eq!(r.interfaces[2].sandbox.as_deref(), Some("/run/netns/p"));
            assert_eq!(r.interfaces[0].sandbox, None);
            assert_eq!(r.ips[0].interface, Some(2));
            assert_eq!(r.ips[1].address, net("fd00::3/64"));
            assert_eq!(r.routes[0].gw, ip("172.19.0.1"));
            assert_eq!(r.dns.nameservers, vec!["1.1.1.1"]);
            assert_eq!(r.dns.domain.as_deref(), Some("example"));
            assert_eq!(r.dns.search, vec!["a", "b"]);
            let in_pod = r.sandbox_interfaces("/run/netns/p");
            assert_eq!(in_pod.len(), 1);
            assert_eq!(in_pod[0].0, 2);
            // Round trip through its own version.
            let again = CniResult::from_value(r.to_json().unwrap(), "").unwrap();
            assert_eq!(again, r);
            // Down to 0.2.0: first address of each family, routes by family, dst/gw only.
            let old = r.to_value("0.2.0").unwrap();
            assert_eq!(old["ip4"]["ip"], "172.19.0.3/24");
            assert_eq!(
                old["ip4"]["routes"],
                serde_json::json!([{"dst": "0.0.0.0/0", "gw": "172.19.0.1"}])
            );
            assert_eq!(old["ip6"]["ip"], "fd00::3/64");
            assert_eq!(old["ip6"]["routes"], serde_json::json!([{"dst": "::/0"}]));
            assert_eq!(old["dns"]["nameservers"], serde_json::json!(["1.1.1.1"]));
            assert!(old.get("interfaces").is_none());
        }
    }

    #[test]
    fn v100_and_v110_results() {
        for v in ["1.0.0", "1.1.0"] {
            let text = format!(
                r#"{{"cniVersion": "{v}",
                "interfaces": [{{"name": "eth0", "mac": "aa:bb:cc:dd:ee:ff", "mtu": 1450, "sandbox": "/run/netns/x",
                                 "socketPath": "/run/sock", "pciID": "0000:00:01.0"}}],
                "ips": [{{"interface": 0, "address": "10.1.0.5/16", "gateway": "10.1.0.1"}}],
                "routes": [{{"dst": "10.2.0.0/16", "gw": "10.1.0.254", "mtu": 1400, "advmss": 1360,
                             "priority": 10, "table": 100, "scope": 0}}]}}"#
            );
            let r = CniResult::parse(text.as_bytes(), "0.4.0").unwrap();
            assert_eq!(r.cni_version, v);
            let i = &r.interfaces[0];
            assert_eq!(i.mtu, Some(1450));
            assert_eq!(i.socket_path.as_deref(), Some("/run/sock"));
            assert_eq!(i.pci_id.as_deref(), Some("0000:00:01.0"));
            assert_eq!(
                r.routes[0],
                ResultRoute {
                    dst: net("10.2.0.0/16"),
                    gw: ip("10.1.0.254"),
                    mtu: Some(1400),
                    advmss: Some(1360),
                    priority: Some(10),
                    table: Some(100),
                    scope: Some(0)
                }
            );
            assert_eq!(CniResult::from_value(r.to_json().unwrap(), "").unwrap(), r);
            // 1.x → 0.4.0: "version" appears, interface mtu/socketPath/pciID do not.
            let v04 = r.to_value("0.4.0").unwrap();
            assert_eq!(v04["ips"][0]["version"], "4");
            assert_eq!(
                v04["interfaces"][0],
                serde_json::json!({"name": "eth0", "mac": "aa:bb:cc:dd:ee:ff", "sandbox": "/run/netns/x"})
            );
            assert_eq!(v04["routes"][0]["table"], 100);
            let back = CniResult::from_value(v04, "").unwrap();
            assert_eq!(back.ips, r.ips);
            assert_eq!(back.interfaces[0].mtu, None);
        }
    }

    #[test]
    fn conversion_to_020_needs_an_address() {
        let r = CniResult {
            cni_version: "1.0.0".into(),
            ..Default::default()
        };
        let e = r.to_value("0.2.0").unwrap_err().to_string();
        assert!(e.contains("no IP addresses"), "{e}");
        assert!(r.to_value("0.5.0").is_err());
        assert!(r.to_value("1.0.0").is_ok());
    }

    #[test]
    fn invalid_results_are_rejected_clearly() {
        let cases: &[(&str, &str)] = &[
            (r#"{"cniVersion": "0.5.0"}"#, "unsupported result version"),
            (r#"{"cniVersion": 1}"#, "not a string"),
            (r#"[1, 2]"#, "expected a JSON object"),
            (
                r#"{"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.300/8"}]}"#,
                "not an address in CIDR",
            ),
            (
                r#"{"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.3"}]}"#,
                "not an address in CIDR",
            ),
            (
                r#"{"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.3/8", "gateway": "x"}]}"#,
                "not an IP address",
            ),
            (
                r#"{"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.3/8", "interface": 0}]}"#,
                "refers to interface 0",
            ),
            (
                r#"{"cniVersion": "0.2.0", "ip4": {"gateway": "10.0.0.1"}}"#,
                "missing field `ip`",
            ),
            (
                r#"{"cniVersion": "1.0.0", "routes": [{"gw": "10.0.0.1"}]}"#,
                "missing field `dst`",
            ),
            ("not json", "not JSON"),
        ];
        for (text, want) in cases {
            let e = CniResult::parse(text.as_bytes(), "1.0.0")
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
        // An empty gateway is accepted as "none", as Go's net.IP does.
        let r = CniResult::parse(
            br#"{"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.3/8", "gateway": ""}]}"#,
            "",
        )
        .unwrap();
        assert_eq!(r.ips[0].gateway, None);
    }
}
