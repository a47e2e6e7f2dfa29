//! The network configuration on stdin: the fields every command reads, the rest kept for
//! [`crate::options`].

use crate::error::PluginError;
use sandnet_cni::GcAttachment;
use serde_json::{Map, Value};

/// The GC key listing the attachments that are still valid.
pub const VALID_ATTACHMENTS: &str = "cni.dev/valid-attachments";

/// One invocation's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    /// `cniVersion`.
    pub cni_version: String,
    /// `name` (the network).
    pub name: String,
    /// `prevResult`, as given.
    pub prev_result: Option<Value>,
    /// GC: `cni.dev/valid-attachments`.
    pub valid_attachments: Option<Vec<GcAttachment>>,
    /// The whole object (plugin options are read from it).
    pub raw: Map<String, Value>,
}

impl NetConf {
    /// Parses stdin. `cniVersion` must be a string (empty when absent: VERSION may be called
    /// without it); the other fields are checked by the commands that need them.
    pub fn parse(stdin: &[u8]) -> Result<NetConf, PluginError> {
        let v: Value = serde_json::from_slice(stdin).map_err(PluginError::Decode)?;
        let Value::Object(raw) = v else {
            return Err(PluginError::InvalidConfig(
                "the configuration is not a JSON object".into(),
            ));
        };
        let text = |k: &str| -> Result<String, PluginError> {
            match raw.get(k) {
                None | Some(Value::Null) => Ok(String::new()),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(other) => Err(PluginError::InvalidConfig(format!(
                    "{k} must be a string, not {other}"
                ))),
            }
        };
        let valid_attachments = match raw.get(VALID_ATTACHMENTS) {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                serde_json::from_value(v.clone())
                    .map_err(|e| PluginError::InvalidConfig(format!("{VALID_ATTACHMENTS}: {e}")))?,
            ),
        };
        Ok(NetConf {
            cni_version: text("cniVersion")?,
            name: text("name")?,
            prev_result: raw.get("prevResult").filter(|v| !v.is_null()).cloned(),
            valid_attachments,
            raw,
        })
    }

    /// Requires a network name (every command but VERSION).
    pub fn require_name(&self) -> Result<(), PluginError> {
        if self.name.is_empty() {
            return Err(PluginError::InvalidConfig("name is missing".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_common_fields() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.1.0","name":"n","type":"sandnet-tap",
                 "cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}"#,
        )
        .unwrap();
        assert_eq!(c.cni_version, "1.1.0");
        assert_eq!(c.valid_attachments.unwrap()[0].container_id, "a");
        assert!(c.prev_result.is_none());
        assert_eq!(NetConf::parse(b"{").unwrap_err().code(), 6);
        assert_eq!(NetConf::parse(b"[]").unwrap_err().code(), 7);
        assert_eq!(NetConf::parse(br#"{"name":3}"#).unwrap_err().code(), 7);
    }
}
