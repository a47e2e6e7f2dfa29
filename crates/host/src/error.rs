//! The host side's error type.

use sandnet_netlink::NetlinkError;
use std::io;
use std::path::PathBuf;

/// Everything that can go wrong on the host side, each naming the object it concerns.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The named network namespace (or path) does not exist.
    #[error("network namespace {0:?} does not exist")]
    NetnsNotFound(String),
    /// The path exists but is not a network namespace.
    #[error("{0:?} is not a network namespace")]
    NotANetns(PathBuf),
    /// A network namespace name that cannot be used as a file name under /run/netns.
    #[error("invalid network namespace name {0:?}")]
    InvalidNetnsName(String),
    /// A network namespace with this name already exists.
    #[error("network namespace {0:?} already exists")]
    NetnsExists(String),
    /// A system call about a network namespace failed.
    #[error("network namespace {ns}: {op}: {source}")]
    Netns {
        /// The namespace (name or path).
        ns: String,
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A netlink request failed (kernel refusal or transport).
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// A link the operation needs is not there (any more).
    #[error("link {0:?} not found (it may have been removed)")]
    LinkNotFound(String),
    /// A tap or macvtap device could not be created or opened.
    #[error("tap {name}: {op}: {source}")]
    Tap {
        /// The tap's name or device path.
        name: String,
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The namespace is the host's (init's) or the caller's own, and the caller did not
    /// say that is meant.
    #[error("refusing network namespace {ns}: it is {which}, and attaching there would take over its NICs (pass --allow-host-netns if that is really meant)")]
    HostNetns {
        /// The namespace as the caller named it.
        ns: String,
        /// Which host namespace it is.
        which: crate::hostns::HostNetns,
    },
    /// A bad argument from the caller.
    #[error("{0}")]
    InvalidArgument(String),
    /// A link that cannot become a guest NIC (loopback, a tap, a bridge, no address…).
    #[error("link {name:?} is not an endpoint: {why}")]
    NotAnEndpoint {
        /// The link.
        name: String,
        /// Why not.
        why: String,
    },
    /// The link is connected already.
    #[error("link {0:?} is attached already")]
    LinkAttached(String),
    /// The link is not among the attached endpoints.
    #[error("link {0:?} is not attached")]
    LinkNotAttached(String),
    /// The namespace is already attached.
    #[error("network namespace {ns} is already attached ({detail}); detach it first")]
    AlreadyAttached {
        /// The namespace.
        ns: String,
        /// Where the previous attachment was found.
        detail: String,
    },
    /// Reading or writing persisted state failed.
    #[error("state file {path:?}: {source}")]
    State {
        /// The state file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Several undo steps failed; each is listed.
    #[error("{} step(s) failed: {}", .0.len(), .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Multiple(Vec<HostError>),
}

impl HostError {
    /// The kernel errno behind a netlink error, if that is what this is.
    pub fn errno(&self) -> Option<i32> {
        match self {
            HostError::Netlink(e) => e.errno(),
            _ => None,
        }
    }

    /// Whether the kernel said the object already exists.
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }

    /// Whether the kernel said the object (or the device it is on) does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.errno(),
            Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::ESRCH)
        ) || matches!(self, HostError::LinkNotFound(_))
    }
}

/// Result type of the host side.
pub type Result<T> = std::result::Result<T, HostError>;
