//! VERSION, asking a plugin which spec versions it supports, and the network check built on
//! it (libcni's `ValidateNetworkList`).

use crate::{CniConfig, CniError, NetworkConfigList, PluginConf, CURRENT_VERSION};
use serde_json::{json, Map, Value};

/// What a plugin answered to VERSION.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginVersionInfo {
    /// The plugin's `cniVersion`.
    pub cni_version: String,
    /// The spec versions it supports.
    pub supported_versions: Vec<String>,
}

impl CniConfig {
    /// VERSION: the spec versions a plugin supports.
    pub async fn version(&self, plugin_type: &str) -> Result<PluginVersionInfo, CniError> {
        let path = self.find_plugin(plugin_type)?;
        let plugin = PluginConf {
            plugin_type: plugin_type.to_string(),
            capabilities: Default::default(),
            raw: Map::new(),
        };
        let mut config = Map::new();
        config.insert("cniVersion".into(), json!(CURRENT_VERSION));
        // Older plugin libraries insist on these even for VERSION (libcni sets them too).
        let mut env = self.env("VERSION", None);
        for (k, v) in env.iter_mut() {
            if *k == "CNI_NETNS" || *k == "CNI_IFNAME" {
                *v = "dummy".into();
            }
        }
        let out = match self
            .run_plugin(&plugin, &path, "VERSION", env, &config)
            .await
        {
            Ok(out) => out,
            Err(CniError::Plugin { msg, .. }) if msg == "unknown CNI_COMMAND: VERSION" => {
                return Ok(PluginVersionInfo {
                    cni_version: "0.1.0".into(),
                    supported_versions: vec!["0.1.0".into()],
                })
            }
            Err(e) => return Err(e),
        };
        let bad = |reason: String| CniError::BadResult {
            plugin: plugin_type.to_string(),
            command: "VERSION",
            reason,
        };
        let v: Value = serde_json::from_slice(&out).map_err(|e| bad(format!("not JSON: {e}")))?;
        let cni_version = v
            .get("cniVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let mut supported: Vec<String> = match v.get("supportedVersions") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|s| {
                    s.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| bad("supportedVersions holds a non-string".into()))
                })
                .collect::<Result<_, _>>()?,
            None | Some(Value::Null) => Vec::new(),
            Some(_) => return Err(bad("supportedVersions is not a list".into())),
        };
        if supported.is_empty() {
            // libcni's decoder: a bare 0.2.0 answer means 0.1.0 and 0.2.0.
            if cni_version == "0.2.0" {
                supported = vec!["0.1.0".into(), "0.2.0".into()];
            } else {
                return Err(bad("no supportedVersions".into()));
            }
        }
        Ok(PluginVersionInfo {
            cni_version,
            supported_versions: supported,
        })
    }

    /// Checks that every plugin of the network exists and supports its version (libcni's
    /// `ValidateNetworkList`); returns the capabilities the network declares.
    pub async fn validate(&self, list: &NetworkConfigList) -> Result<Vec<String>, CniError> {
        let mut caps = std::collections::BTreeSet::new();
        let mut errors = Vec::new();
        for plugin in &list.plugins {
            match self.version(&plugin.plugin_type).await {
                Ok(info) if info.supported_versions.contains(&list.cni_version) => {}
                Ok(info) => errors.push(CniError::InvalidConfig {
                    file: list.source.clone(),
                    reason: format!(
                        "plugin {:?} does not support version {} (it supports {})",
                        plugin.plugin_type,
                        list.cni_version,
                        info.supported_versions.join(", ")
                    ),
                }),
                Err(e) => errors.push(e),
            }
            caps.extend(
                plugin
                    .capabilities
                    .iter()
                    .filter(|(_, on)| **on)
                    .map(|(c, _)| c.clone()),
            );
        }
        match errors.len() {
            0 => Ok(caps.into_iter().collect()),
            1 => Err(errors.remove(0)),
            _ => Err(CniError::Multiple(errors)),
        }
    }
}
