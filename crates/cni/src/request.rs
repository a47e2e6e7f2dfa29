//! What a plugin is given and what its answer becomes: the stdin configuration (network
//! name and version, `prevResult`, `runtimeConfig`), a cached result as `prevResult`, and
//! the parsed ADD output.

use crate::{CniError, CniResult, NetworkConfigList, PluginConf, Runtime};
use serde_json::{json, Map, Value};

/// A cached or previous result as the `prevResult` of a network of version `version`:
/// unchanged when already in that version (unknown fields kept), converted otherwise.
pub(crate) fn prev_result(raw: &Value, version: &str) -> Result<Value, CniError> {
    let result = CniResult::from_value(raw.clone(), version)?;
    if result.cni_version == version {
        Ok(raw.clone())
    } else {
        result.to_value(version)
    }
}

/// A plugin's ADD output: the raw JSON with `cniVersion` filled in (libcni's fixup), and
/// the parsed result.
pub(crate) fn parse_add_output(
    out: &[u8],
    conf_version: &str,
) -> Result<(Value, CniResult), String> {
    let mut raw: Value = serde_json::from_slice(out).map_err(|e| {
        let head = String::from_utf8_lossy(&out[..out.len().min(256)]).into_owned();
        format!("stdout is not JSON ({e}): {head:?}")
    })?;
    if raw.is_null() {
        raw = Value::Object(Map::new());
    }
    let Value::Object(m) = &mut raw else {
        return Err(format!("stdout is not a JSON object: {raw}"));
    };
    let missing = !matches!(m.get("cniVersion"), Some(Value::String(s)) if !s.is_empty());
    if missing {
        m.insert("cniVersion".into(), json!(conf_version));
    }
    let result = CniResult::from_value(raw.clone(), conf_version).map_err(|e| e.to_string())?;
    Ok((raw, result))
}

/// The configuration a plugin gets on stdin: its own object with `name` and `cniVersion`
/// of the network, `prevResult`, and `runtimeConfig` for its declared capabilities.
pub(crate) fn request_config(
    list: &NetworkConfigList,
    plugin: &PluginConf,
    prev: Option<&Value>,
    rt: Option<&Runtime>,
) -> Map<String, Value> {
    let mut m = plugin.raw.clone();
    m.insert("name".into(), json!(list.name));
    m.insert("cniVersion".into(), json!(list.cni_version));
    if let Some(p) = prev {
        m.insert("prevResult".into(), p.clone());
    }
    if let Some(rt) = rt {
        let rc: Map<String, Value> = rt
            .capability_args
            .iter()
            .filter(|(k, _)| plugin.has_capability(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !rc.is_empty() {
            m.insert("runtimeConfig".into(), Value::Object(rc));
        }
    }
    m
}
