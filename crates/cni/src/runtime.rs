//! The per-attachment parameters of ADD, DEL and CHECK ([`Runtime`]): how they are built,
//! validated before any plugin runs, and joined into `CNI_ARGS`.

use crate::{conf, CniError};
use serde_json::{Map, Value};
use std::path::PathBuf;

/// The per-attachment parameters of ADD, DEL and CHECK (libcni's `RuntimeConf`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Runtime {
    /// `CNI_CONTAINERID`: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
    pub container_id: String,
    /// `CNI_NETNS`: the container's netns path (e.g. `/run/netns/NAME`).
    pub netns_path: PathBuf,
    /// `CNI_IFNAME`: the interface to create in the container (at most 15 bytes).
    pub ifname: String,
    /// `CNI_ARGS`, as key/value pairs (joined as `K=V;K2=V2`).
    pub args: Vec<(String, String)>,
    /// Capability arguments (`portMappings`, `bandwidth`, `ips`, `mac`, …); each is passed in
    /// `runtimeConfig` only to plugins that declare that capability.
    pub capability_args: Map<String, Value>,
}

impl Runtime {
    /// An attachment of `container_id` to the netns at `netns_path` as `ifname`.
    pub fn new(
        container_id: impl Into<String>,
        netns_path: impl Into<PathBuf>,
        ifname: impl Into<String>,
    ) -> Self {
        Runtime {
            container_id: container_id.into(),
            netns_path: netns_path.into(),
            ifname: ifname.into(),
            ..Default::default()
        }
    }

    /// Adds a `CNI_ARGS` pair.
    pub fn with_arg(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.args.push((key.into(), value.into()));
        self
    }

    /// Adds a capability argument.
    pub fn with_capability(mut self, name: impl Into<String>, value: Value) -> Self {
        self.capability_args.insert(name.into(), value);
        self
    }

    pub(crate) fn validate(&self) -> Result<(), CniError> {
        let bad = |what, value: &str, reason| CniError::InvalidParameter {
            what,
            value: value.to_string(),
            reason,
        };
        if self.container_id.is_empty() {
            return Err(bad("container ID", "", "it is empty"));
        }
        if !conf::valid_name(&self.container_id) {
            return Err(bad(
                "container ID",
                &self.container_id,
                "it must start with a letter or digit and contain only letters, digits, '_', '.', '-'",
            ));
        }
        let ifn = &self.ifname;
        if ifn.is_empty() {
            return Err(bad("interface name", ifn, "it is empty"));
        }
        if ifn.len() > 15 {
            return Err(bad("interface name", ifn, "it is longer than 15 bytes"));
        }
        if ifn == "." || ifn == ".." {
            return Err(bad("interface name", ifn, "it is . or .."));
        }
        if ifn
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
        {
            return Err(bad(
                "interface name",
                ifn,
                "it contains '/', ':' or whitespace",
            ));
        }
        for (k, v) in &self.args {
            if k.is_empty() || k.contains(['=', ';']) {
                return Err(bad("CNI_ARGS key", k, "it is empty or contains '=' or ';'"));
            }
            if v.contains(';') {
                return Err(bad("CNI_ARGS value", v, "it contains ';'"));
            }
        }
        Ok(())
    }

    pub(crate) fn cni_args(&self) -> String {
        let v: Vec<String> = self.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        v.join(";")
    }
}
