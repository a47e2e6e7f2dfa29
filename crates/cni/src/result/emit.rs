//! Converting a [`CniResult`] back to JSON in a given spec version (libcni's conversion
//! rules, for `prevResult` or to print).

use super::parse::bad;
use super::{CniResult, ResultRoute};
use crate::error::CniError;
use crate::version::{ResultFormat, SpecVersion};
use ipnet::IpNet;
use serde_json::{json, Map, Value};

impl CniResult {
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
