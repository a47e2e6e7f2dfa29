//! A typed reference to a network namespace, parsed once where it enters (command line,
//! state file), with one rule for resolving it, and the guard against the host's own
//! namespaces.
//!
//! The rule: a string containing `/` is a path (`/proc/<pid>/ns/net`, `/var/run/netns/x`);
//! anything else is a name under [`NETNS_RUN_DIR`], checked like a file name.

use super::{check_name, NetNs, NETNS_RUN_DIR};
use crate::error::{HostError, Result};
pub use crate::hostns::HostNetns;
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A network namespace as a caller names it: a name under `/run/netns`, or a path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NetNsRef(Kind);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Kind {
    Name(String),
    Path(PathBuf),
}

impl NetNsRef {
    /// A name under `/run/netns`; refused if it cannot be a file name there.
    pub fn name(name: &str) -> Result<NetNsRef> {
        check_name(name)?;
        Ok(NetNsRef(Kind::Name(name.to_string())))
    }

    /// A path to an nsfs file (or a bind mount of one).
    pub fn path(path: impl Into<PathBuf>) -> NetNsRef {
        NetNsRef(Kind::Path(path.into()))
    }

    /// The name under `/run/netns`, when the reference is one.
    pub fn as_name(&self) -> Option<&str> {
        match &self.0 {
            Kind::Name(n) => Some(n),
            Kind::Path(_) => None,
        }
    }

    /// The file the reference resolves to.
    pub fn resolve(&self) -> PathBuf {
        match &self.0 {
            Kind::Name(n) => Path::new(NETNS_RUN_DIR).join(n),
            Kind::Path(p) => p.clone(),
        }
    }

    /// Opens the namespace, refusing the host's own ones (see [`NetNs::host_netns`]) unless
    /// `allow_host` says they are meant.
    pub fn open_guarded(&self, allow_host: bool) -> Result<NetNs> {
        if !allow_host && names_init(&self.resolve()) {
            return Err(HostError::HostNetns {
                ns: self.to_string(),
                which: HostNetns::Init,
            });
        }
        let ns = NetNs::open(self)?;
        if !allow_host {
            if let Some(which) = ns.host_netns()? {
                return Err(HostError::HostNetns {
                    ns: self.to_string(),
                    which,
                });
            }
        }
        Ok(ns)
    }
}

impl FromStr for NetNsRef {
    type Err = HostError;

    /// Parses a command-line or state-file namespace: a path if it contains `/`, else a name.
    fn from_str(s: &str) -> Result<NetNsRef> {
        if s.contains('/') {
            Ok(NetNsRef::path(s))
        } else {
            NetNsRef::name(s)
        }
    }
}

impl fmt::Display for NetNsRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::Name(n) => f.write_str(n),
            Kind::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

/// The inode the kernel gives the initial network namespace on kernels with fixed inodes
/// for init namespaces (`PROC_NET_INIT_INO`); older kernels allocate it like any other.
const PROC_NET_INIT_INO: u64 = 0xEFFF_FFF9;

/// Paths that name PID 1's namespace directly: refused before opening, since where PID 1
/// cannot be inspected (a container without `CAP_SYS_PTRACE`) opening them fails anyway
/// with a less helpful error.
fn names_init(path: &Path) -> bool {
    let p = path.to_string_lossy();
    let p = p.trim_end_matches('/');
    ["/proc/1/ns/net", "/proc/1/task/1/ns/net"]
        .iter()
        .any(|i| p == *i || p == format!("/{i}"))
}

impl NetNs {
    /// Whether this namespace is init's or the calling process's own (by nsfs identity, so
    /// any path or name that leads there is caught). Init's is reported when it is both.
    ///
    /// Init's identity is that of `/proc/1/ns/net`; where PID 1 cannot be inspected, the
    /// kernel's fixed inode of the initial namespace is used instead (when it has one).
    pub fn host_netns(&self) -> Result<Option<HostNetns>> {
        let id = self.id()?;
        let same = |p: &str| -> Result<Option<bool>> {
            match std::fs::metadata(p) {
                Ok(m) => Ok(Some(m.dev() == id.dev && m.ino() == id.ino)),
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Ok(None),
                Err(e) => Err(HostError::Netns {
                    ns: p.to_string(),
                    op: "stat",
                    source: e,
                }),
            }
        };
        let init = match same("/proc/1/ns/net")? {
            Some(b) => b,
            None => id.ino == PROC_NET_INIT_INO,
        };
        if init {
            return Ok(Some(HostNetns::Init));
        }
        if same("/proc/self/ns/net")? == Some(true) {
            return Ok(Some(HostNetns::Caller));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_for_names_and_paths() {
        let n: NetNsRef = "pod-1".parse().unwrap();
        assert_eq!(n.as_name(), Some("pod-1"));
        assert_eq!(n.resolve(), Path::new("/run/netns/pod-1"));
        assert_eq!(n.to_string(), "pod-1");
        let p: NetNsRef = "/proc/1/ns/net".parse().unwrap();
        assert_eq!(p.as_name(), None);
        assert_eq!(p.resolve(), Path::new("/proc/1/ns/net"));
        assert_eq!(p.to_string(), "/proc/1/ns/net");
        let rel: NetNsRef = "a/b".parse().unwrap();
        assert_eq!(rel.resolve(), Path::new("a/b"));
        for bad in ["", ".", ".."] {
            assert!(matches!(
                bad.parse::<NetNsRef>(),
                Err(HostError::InvalidNetnsName(_))
            ));
        }
    }

    #[test]
    fn the_callers_own_namespace_is_recognised() {
        let ns = NetNs::open(&NetNsRef::path("/proc/self/ns/net")).unwrap();
        assert!(ns.host_netns().unwrap().is_some());
        let e = NetNsRef::path("/proc/self/ns/net")
            .open_guarded(false)
            .unwrap_err();
        assert!(matches!(e, HostError::HostNetns { .. }), "{e}");
        assert!(e.to_string().contains("--allow-host-netns"));
        NetNsRef::path("/proc/self/ns/net")
            .open_guarded(true)
            .unwrap();
        // PID 1's is refused by its path too, before any attempt to open it.
        for p in [
            "/proc/1/ns/net",
            "/proc/1/task/1/ns/net/",
            "//proc/1/ns/net",
        ] {
            let e = NetNsRef::path(p).open_guarded(false).unwrap_err();
            assert!(
                matches!(
                    e,
                    HostError::HostNetns {
                        which: HostNetns::Init,
                        ..
                    }
                ),
                "{p}: {e}"
            );
        }
        assert!(!names_init(Path::new("/proc/10/ns/net")));
    }
}
