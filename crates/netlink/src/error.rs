//! The netlink crate's error type.

use std::io;

/// A netlink request that failed: refused by the kernel, or the connection itself.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The kernel refused a netlink request.
    #[error("{what}: {}", errno_text(*.errno))]
    Kernel {
        /// What was being done, naming the object.
        what: String,
        /// The kernel's errno (positive).
        errno: i32,
    },
    /// The netlink connection itself failed (not a kernel answer).
    #[error("netlink: {0}")]
    Transport(String),
    /// A system call on a netlink socket failed.
    #[error("netlink: {what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

fn errno_text(errno: i32) -> String {
    io::Error::from_raw_os_error(errno).to_string()
}

impl NetlinkError {
    /// The kernel errno behind the error, if the kernel answered.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel { errno, .. } => Some(*errno),
            NetlinkError::Transport(_) | NetlinkError::Io { .. } => None,
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
        )
    }
}

/// Result type of the netlink crate.
pub type Result<T> = std::result::Result<T, NetlinkError>;
