//! The Kubernetes pod a sandbox serves, as containerd's CRI names it (the
//! `io.kubernetes.cri.sandbox-name` and `-namespace` annotations): recorded by the shim
//! that started the sandbox in `<root>/<id>/pod.json`, beside the record, so that
//! `sandnet stats --prometheus` can label the sandbox's counters with it. A file of its
//! own rather than a field of `sandbox.json`: the supervisor owns that record and rewrites
//! it from memory, and the pod's name only reaches the shim after the supervisor started.

use crate::sandbox::{write_private, SandboxError, SandboxPaths};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The file in a sandbox's directory naming its pod.
pub const POD_FILE: &str = "pod.json";

/// Longest name or namespace kept (Kubernetes allows 253 and 63).
pub const MAX_LEN: usize = 253;

/// A pod's name and Kubernetes namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRef {
    /// The pod's name.
    pub name: String,
    /// Its Kubernetes namespace.
    pub namespace: String,
}

impl PodRef {
    /// A pod from the CRI's annotations: `None` unless both are there, non-empty, at most
    /// [`MAX_LEN`] bytes and free of control characters.
    pub fn new(name: Option<&str>, namespace: Option<&str>) -> Option<PodRef> {
        let ok = |s: &&str| !s.is_empty() && s.len() <= MAX_LEN && !s.chars().any(char::is_control);
        Some(PodRef {
            name: name.filter(ok)?.to_string(),
            namespace: namespace.filter(ok)?.to_string(),
        })
    }
}

fn pod_file(root: &Path, id: &str) -> PathBuf {
    SandboxPaths::new(root, id).dir.join(POD_FILE)
}

/// Records the pod of sandbox `id` (root-only, atomically).
pub fn record(root: &Path, id: &str, pod: &PodRef) -> Result<(), SandboxError> {
    let path = pod_file(root, id);
    let body = serde_json::to_vec(pod).map_err(|e| SandboxError::Io {
        path: path.clone(),
        source: std::io::Error::other(e),
    })?;
    write_private(&path, &body)
}

/// The pod of sandbox `id`, if a shim recorded one (a missing, oversized or broken file
/// is no pod).
pub fn load(root: &Path, id: &str) -> Option<PodRef> {
    let f = std::fs::File::open(pod_file(root, id)).ok()?;
    let mut b = Vec::new();
    f.take(4096).read_to_end(&mut b).ok()?;
    let p: PodRef = serde_json::from_slice(&b).ok()?;
    PodRef::new(Some(&p.name), Some(&p.namespace))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_and_read_back() {
        let root = sandnet_testkit::TempDir::new("podref");
        std::fs::create_dir_all(root.join("sb1")).unwrap();
        assert_eq!(load(&root, "sb1"), None);
        let p = PodRef::new(Some("web-0"), Some("default")).unwrap();
        record(&root, "sb1", &p).unwrap();
        assert_eq!(load(&root, "sb1"), Some(p));
        std::fs::write(root.join("sb1").join(POD_FILE), "{").unwrap();
        assert_eq!(load(&root, "sb1"), None);
    }

    #[test]
    fn only_both_and_sane() {
        assert!(PodRef::new(Some("a"), None).is_none());
        assert!(PodRef::new(Some(""), Some("ns")).is_none());
        assert!(PodRef::new(Some("a\nb"), Some("ns")).is_none());
        assert!(PodRef::new(Some(&"a".repeat(254)), Some("ns")).is_none());
        assert!(PodRef::new(Some("a\"b\\"), Some("ns")).is_some());
    }
}
