//! What the shim reads from containerd: the bundle's OCI `config.json` (pod network
//! namespace, CRI annotations) and the runtime options (`ConfigPath`).

use crate::error::ShimError;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// CRI's annotation naming what a task is (`sandbox` or `container`).
pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// CRI's annotation naming the pod sandbox a container belongs to.
pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
/// CRI's annotation with the pod's name.
pub const SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
/// CRI's annotation with the pod's Kubernetes namespace.
pub const SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";

/// What a task's bundle asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskKind {
    /// The pod sandbox (or a task with no CRI annotation): the VM, in this namespace.
    Sandbox {
        /// Path of the pod's network namespace.
        netns: Option<PathBuf>,
    },
    /// A container of pod `sandbox`.
    Container {
        /// The pod sandbox's id.
        sandbox: String,
    },
}

/// The parts of a bundle the shim uses.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// What the task is.
    pub kind: TaskKind,
    /// The spec's annotations.
    pub annotations: HashMap<String, String>,
    /// The spec's `root.path` (empty when absent).
    pub root_path: String,
    /// The spec's `hostname` (CRI puts the pod's in the sandbox's).
    pub hostname: String,
}

#[derive(Deserialize)]
struct Spec {
    #[serde(default)]
    annotations: HashMap<String, String>,
    #[serde(default)]
    linux: Option<Linux>,
    #[serde(default)]
    root: Option<Root>,
    #[serde(default)]
    hostname: String,
}

#[derive(Deserialize)]
struct Root {
    #[serde(default)]
    path: String,
}

#[derive(Deserialize)]
struct Linux {
    #[serde(default)]
    namespaces: Vec<Namespace>,
}

#[derive(Deserialize)]
struct Namespace {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: Option<String>,
}

impl Bundle {
    /// Reads `<bundle>/config.json`.
    pub fn load(bundle: &Path) -> Result<Bundle, ShimError> {
        let path = bundle.join("config.json");
        let text = std::fs::read(&path).map_err(|e| ShimError::Bundle {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        Bundle::parse(&text).map_err(|reason| ShimError::Bundle { path, reason })
    }

    /// Parses an OCI runtime spec.
    pub fn parse(json: &[u8]) -> Result<Bundle, String> {
        let spec: Spec = serde_json::from_slice(json).map_err(|e| e.to_string())?;
        let netns = spec
            .linux
            .iter()
            .flat_map(|l| l.namespaces.iter())
            .find(|n| n.kind == "network")
            .and_then(|n| n.path.clone())
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        let kind = match spec.annotations.get(CONTAINER_TYPE).map(String::as_str) {
            Some("container") => TaskKind::Container {
                sandbox: spec
                    .annotations
                    .get(SANDBOX_ID)
                    .cloned()
                    .unwrap_or_default(),
            },
            Some("sandbox") | None => TaskKind::Sandbox { netns },
            Some(other) => return Err(format!("unknown {CONTAINER_TYPE} {other:?}")),
        };
        Ok(Bundle {
            kind,
            annotations: spec.annotations,
            root_path: spec.root.map(|r| r.path).unwrap_or_default(),
            hostname: spec.hostname,
        })
    }

    /// The id that names the shim serving task `task_id`, as runc's shim groups them: the
    /// pod sandbox's id for a container, the task's own for the sandbox. One shim (one
    /// socket) serves the whole pod.
    pub fn grouping(&self, task_id: &str) -> String {
        match &self.kind {
            TaskKind::Container { sandbox } if !sandbox.is_empty() => sandbox.clone(),
            _ => task_id.to_string(),
        }
    }
}

/// The `ConfigPath` of containerd's generic runtime options (`runtimeoptions.v1.Options`:
/// `type_url` = 1, `config_path` = 2, `config_body` = 3), as Kata reads it; `None` when
/// absent or empty.
pub fn config_path(options: &[u8]) -> Result<Option<PathBuf>, ShimError> {
    let bad = |what: &str| ShimError::Config(format!("runtime options: {what}"));
    let mut i = 0;
    let mut path = None;
    while i < options.len() {
        let (key, n) = varint(&options[i..]).ok_or_else(|| bad("truncated field key"))?;
        i += n;
        match key & 7 {
            0 => {
                let (_, n) = varint(&options[i..]).ok_or_else(|| bad("truncated varint"))?;
                i += n;
            }
            1 => i += 8,
            5 => i += 4,
            2 => {
                let (len, n) = varint(&options[i..]).ok_or_else(|| bad("truncated length"))?;
                i += n;
                let end = i
                    .checked_add(len as usize)
                    .filter(|e| *e <= options.len())
                    .ok_or_else(|| bad("field runs past the end"))?;
                if key >> 3 == 2 {
                    let s = std::str::from_utf8(&options[i..end])
                        .map_err(|_| bad("ConfigPath is not UTF-8"))?;
                    if !s.is_empty() {
                        path = Some(PathBuf::from(s));
                    }
                }
                i = end;
            }
            w => return Err(bad(&format!("unknown wire type {w}"))),
        }
    }
    Ok(path)
}

fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_with_netns() {
        let b = Bundle::parse(
            br#"{"annotations":{"io.kubernetes.cri.container-type":"sandbox"},
                "linux":{"namespaces":[{"type":"pid"},{"type":"network","path":"/var/run/netns/cni-1"}]}}"#,
        )
        .unwrap();
        assert_eq!(
            b.kind,
            TaskKind::Sandbox {
                netns: Some("/var/run/netns/cni-1".into())
            }
        );
    }

    #[test]
    fn container_names_its_sandbox() {
        let b = Bundle::parse(
            br#"{"annotations":{"io.kubernetes.cri.container-type":"container",
                "io.kubernetes.cri.sandbox-id":"abc"}}"#,
        )
        .unwrap();
        assert_eq!(
            b.kind,
            TaskKind::Container {
                sandbox: "abc".into()
            }
        );
    }

    #[test]
    fn containers_group_under_their_pod() {
        let c = Bundle::parse(
            br#"{"annotations":{"io.kubernetes.cri.container-type":"container",
                "io.kubernetes.cri.sandbox-id":"pod1"},"root":{"path":"rootfs"}}"#,
        )
        .unwrap();
        assert_eq!(c.grouping("c1"), "pod1");
        assert_eq!(c.root_path, "rootfs");
        let s = Bundle::parse(
            br#"{"annotations":{"io.kubernetes.cri.container-type":"sandbox",
                "io.kubernetes.cri.sandbox-id":"pod1"}}"#,
        )
        .unwrap();
        assert_eq!(s.grouping("pod1"), "pod1");
        // ctr run: no annotations, a shim of its own.
        assert_eq!(Bundle::parse(b"{}").unwrap().grouping("t"), "t");
        // A container naming no pod cannot join one.
        let lone =
            Bundle::parse(br#"{"annotations":{"io.kubernetes.cri.container-type":"container"}}"#)
                .unwrap();
        assert_eq!(lone.grouping("c2"), "c2");
    }

    #[test]
    fn bad_json_and_type() {
        assert!(Bundle::parse(b"{").is_err());
        assert!(
            Bundle::parse(br#"{"annotations":{"io.kubernetes.cri.container-type":"x"}}"#).is_err()
        );
    }

    #[test]
    fn options_config_path() {
        // type_url "t", config_path "/etc/x.toml"
        let mut m = vec![0x0a, 1, b't', 0x12, 11];
        m.extend_from_slice(b"/etc/x.toml");
        assert_eq!(config_path(&m).unwrap(), Some(PathBuf::from("/etc/x.toml")));
        assert_eq!(config_path(&[]).unwrap(), None);
        assert!(config_path(&[0x12, 50, b'a']).is_err());
    }
}
