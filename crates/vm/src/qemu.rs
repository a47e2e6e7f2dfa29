//! QEMU: the command line for a sandbox VM with cold-plugged NICs, and the child process.
//!
//! The command line ([`VmSpec`], in `args`) and the running child ([`Qemu`] /
//! [`QemuProcess`], in `process`) live in submodules; the constants and the state-dir paths
//! both use are here.

mod args;
mod process;

pub use args::VmSpec;
pub use process::{Qemu, QemuProcess};

use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// QEMU binary used unless the spec names another.
pub const DEFAULT_QEMU: &str = "/usr/bin/qemu-system-x86_64";
/// The minimal firmware shipped in Debian's QEMU package (boots in ~50 ms instead of ~120 ms).
pub const QBOOT_ROM: &str = "/usr/share/qemu/qboot.rom";
/// Name of the guest's virtio-serial port for the agent (Kata's name).
pub const AGENT_PORT_NAME: &str = "agent.channel.0";
/// Kernel arguments for a fast, quiet boot with a serial console.
pub const DEFAULT_KERNEL_ARGS: &str = "console=ttyS0 quiet loglevel=0 panic=1 \
cryptomgr.notests no_timer_check tsc=reliable pci=lastbus=0 \
i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd random.trust_cpu=on";
/// How long [`Qemu::spawn`] waits for the QMP socket.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The files QEMU uses in a sandbox's state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatePaths {
    /// The state directory itself.
    pub dir: PathBuf,
    /// QMP socket (`qmp.sock`).
    pub qmp: PathBuf,
    /// Agent channel socket (`agent.sock`), the host end of the virtio-serial port.
    pub agent: PathBuf,
    /// Guest serial console (`console.log`, capped; older output in `console.log.1`).
    pub console: PathBuf,
    /// The socket QEMU sends the console to (`console.sock`); sandnet listens on it.
    pub console_sock: PathBuf,
    /// QEMU's stdout and stderr (`qemu.log`).
    pub log: PathBuf,
    /// QEMU's pid file (`qemu.pid`).
    pub pid: PathBuf,
}

impl StatePaths {
    /// The paths inside `dir`.
    pub fn new(dir: &Path) -> Self {
        StatePaths {
            dir: dir.to_path_buf(),
            qmp: dir.join("qmp.sock"),
            agent: dir.join("agent.sock"),
            console: dir.join("console.log"),
            console_sock: dir.join("console.sock"),
            log: dir.join("qemu.log"),
            pid: dir.join("qemu.pid"),
        }
    }
}

/// The fd numbers a NIC's queues have in the QEMU child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildNicFds {
    /// NIC id.
    pub id: String,
    /// Tap fds as numbered in the child.
    pub tap_fds: Vec<RawFd>,
    /// vhost fds as numbered in the child.
    pub vhost_fds: Vec<RawFd>,
}
