//! Errors of the hypervisor side.

use std::path::PathBuf;

/// Everything that can go wrong in `sandnet-vm`.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// A file or directory could not be read, written or created.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done ("reading", "creating", …).
        what: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The guest kernel cache is missing or incomplete.
    #[error("guest kernel in {dir}: {reason} (run scripts/setup, or scripts/build-kernel for sandnet's kernel and scripts/guest-kernel.sh for Debian's cloud kernel)")]
    GuestKernel {
        /// The cache directory looked at.
        dir: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A kernel module file could not be understood or its dependencies resolved.
    #[error("kernel module {path}: {reason}")]
    Module {
        /// The `.ko` file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The initramfs could not be built from the given inputs.
    #[error("initramfs: {0}")]
    Initramfs(String),
    /// A VM specification that cannot be turned into a QEMU command line.
    /// The shared directory's daemon (virtiofsd) did not start.
    #[error("shared directory daemon: {0}")]
    ShareDaemon(String),
    /// The VM spec is not usable.
    #[error("invalid VM spec: {0}")]
    InvalidSpec(String),
    /// QEMU could not be started.
    #[error("starting {qemu}: {source}")]
    Spawn {
        /// The QEMU binary.
        qemu: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// QEMU exited before it was ready (or while being waited for).
    #[error(
        "QEMU exited ({status}) before it was ready; last lines of {}: {}",
        .log.display(),
        .tail.lines().filter(|l| !l.trim().is_empty()).collect::<Vec<_>>().join(" | ")
    )]
    QemuExited {
        /// The exit status as text.
        status: String,
        /// The log file holding QEMU's stdout/stderr.
        log: PathBuf,
        /// The last lines of that log.
        tail: String,
    },
    /// Waiting for something QEMU should produce took too long.
    #[error("timed out after {ms} ms waiting for {what}")]
    Timeout {
        /// What was being waited for.
        what: String,
        /// How long we waited.
        ms: u128,
    },
    /// The accelerator could not be chosen (bad `SANDNET_ACCEL`, unusable verdict cache).
    #[error("accelerator: {0}")]
    Accel(String),
    /// QMP transport failure (socket, framing, JSON).
    #[error("QMP: {0}")]
    QmpProtocol(String),
    /// QEMU answered a QMP command with an error.
    #[error("QMP command {command} failed: {class}: {desc}")]
    Qmp {
        /// The command that failed.
        command: String,
        /// QMP error class (`GenericError`, `DeviceNotFound`, …).
        class: String,
        /// QEMU's description.
        desc: String,
    },
}

impl VmError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        VmError::Io {
            what,
            path: path.into(),
            source,
        }
    }
}

/// Result with [`VmError`].
pub type Result<T, E = VmError> = std::result::Result<T, E>;
