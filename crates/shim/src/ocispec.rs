//! The parts of the OCI runtime spec (`config.json`, and an exec's process JSON) the shim
//! reads, as serde types. Unknown fields are ignored, `null` is read as absent (Go writes
//! both).

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;

/// Why a spec could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

/// A runtime spec.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Spec {
    /// `ociVersion`.
    pub oci_version: String,
    /// The container's process.
    pub process: Option<Process>,
    /// Its root file system.
    pub root: Option<Root>,
    /// Its host name.
    pub hostname: String,
    /// Its mounts, in order.
    pub mounts: Vec<Mount>,
    /// Its annotations.
    pub annotations: HashMap<String, String>,
    /// Linux specifics.
    pub linux: Option<Linux>,
}

/// A process (the container's, or an exec's).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Process {
    /// Whether it gets a terminal.
    pub terminal: bool,
    /// The terminal's size.
    pub console_size: Option<ConsoleSize>,
    /// Who it runs as.
    pub user: User,
    /// Its command line.
    pub args: Vec<String>,
    /// Its environment.
    pub env: Vec<String>,
    /// Its working directory.
    pub cwd: String,
    /// Its capabilities.
    pub capabilities: Option<Capabilities>,
    /// Its resource limits.
    pub rlimits: Vec<Rlimit>,
    /// `no_new_privs`.
    pub no_new_privileges: bool,
    /// `oom_score_adj`.
    pub oom_score_adj: Option<i64>,
}

/// A terminal size.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ConsoleSize {
    /// Rows.
    pub height: u32,
    /// Columns.
    pub width: u32,
}

/// A process's user.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct User {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
    /// User name (Windows; kept for the agent).
    pub username: String,
}

/// Capability sets.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Capabilities {
    /// Bounding set.
    pub bounding: Vec<String>,
    /// Effective set.
    pub effective: Vec<String>,
    /// Inheritable set.
    pub inheritable: Vec<String>,
    /// Permitted set.
    pub permitted: Vec<String>,
    /// Ambient set.
    pub ambient: Vec<String>,
}

/// One resource limit.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Rlimit {
    /// `RLIMIT_…`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Hard limit.
    pub hard: u64,
    /// Soft limit.
    pub soft: u64,
}

/// The root file system.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Root {
    /// Its path (relative to the bundle, or absolute).
    pub path: String,
    /// Read-only.
    pub readonly: bool,
}

/// One mount.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Mount {
    /// Where in the container.
    pub destination: String,
    /// File system type (may be empty for a bind mount).
    #[serde(rename = "type")]
    pub kind: String,
    /// What is mounted.
    pub source: String,
    /// mount(8) options.
    pub options: Vec<String>,
}

/// Linux specifics.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Linux {
    /// Kernel parameters.
    pub sysctl: HashMap<String, String>,
    /// cgroup limits.
    pub resources: Option<Resources>,
    /// The cgroup.
    pub cgroups_path: String,
    /// Namespaces.
    pub namespaces: Vec<Namespace>,
    /// Paths masked in the container.
    pub masked_paths: Vec<String>,
    /// Paths made read-only in the container.
    pub readonly_paths: Vec<String>,
}

/// cgroup limits.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Resources {
    /// Memory.
    pub memory: Option<Memory>,
    /// CPU.
    pub cpu: Option<Cpu>,
    /// Process count.
    pub pids: Option<Pids>,
}

/// Memory limits.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Memory {
    /// Bytes.
    pub limit: Option<i64>,
    /// Soft limit, bytes.
    pub reservation: Option<i64>,
    /// Memory + swap, bytes.
    pub swap: Option<i64>,
    /// Swappiness.
    pub swappiness: Option<u64>,
    /// No OOM killer.
    #[serde(rename = "disableOOMKiller")]
    pub disable_oom_killer: Option<bool>,
}

/// CPU limits.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Cpu {
    /// Relative weight.
    pub shares: Option<u64>,
    /// Quota per period, µs.
    pub quota: Option<i64>,
    /// Period, µs.
    pub period: Option<u64>,
    /// cpuset CPUs.
    pub cpus: String,
    /// cpuset memory nodes.
    pub mems: String,
}

/// Process count limit.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Pids {
    /// Most processes.
    pub limit: i64,
}

/// A namespace.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Namespace {
    /// `pid`, `network`, `mount`, `ipc`, `uts`, `user`, `cgroup`.
    #[serde(rename = "type")]
    pub kind: String,
    /// An existing namespace to join.
    pub path: String,
}

/// Reads a runtime spec.
pub fn parse_spec(json: &[u8]) -> Result<Spec, SpecError> {
    parse(json)
}

/// Reads a process (an exec's `spec`).
pub fn parse_process(json: &[u8]) -> Result<Process, SpecError> {
    parse(json)
}

fn parse<T: DeserializeOwned>(json: &[u8]) -> Result<T, SpecError> {
    let mut v: Value = serde_json::from_slice(json).map_err(|e| SpecError(e.to_string()))?;
    strip_nulls(&mut v);
    serde_json::from_value(v).map_err(|e| SpecError(e.to_string()))
}

/// Removes `null` members of objects (Go's nil slices and maps), so they read as absent.
fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nulls_and_unknown_fields_are_absent() {
        let s = parse_spec(
            br#"{"ociVersion":"1.0.2","process":{"args":["sh"],"env":null,"user":{"uid":1,"gid":2,"additionalGids":null},
                "apparmorProfile":"x"},"mounts":null,"hooks":{"prestart":[]},
                "linux":{"resources":{"memory":{"limit":33554432,"disableOOMKiller":false},"devices":[]}}}"#,
        )
        .unwrap();
        let p = s.process.unwrap();
        assert_eq!(p.args, ["sh"]);
        assert!(p.env.is_empty());
        assert_eq!((p.user.uid, p.user.gid), (1, 2));
        assert!(s.mounts.is_empty());
        let mem = s.linux.unwrap().resources.unwrap().memory.unwrap();
        assert_eq!(mem.limit, Some(32 << 20));
        assert_eq!(mem.disable_oom_killer, Some(false));
    }

    #[test]
    fn bad_json_is_an_error() {
        assert!(parse_spec(b"{").is_err());
        assert!(parse_spec(br#"{"mounts":{}}"#).is_err());
        assert!(parse_process(br#"{"args":"sh"}"#).is_err());
    }
}
