//! Hypervisor side of sandnet: the guest kernel and initramfs, the KVM probe, the QEMU command
//! line and child process, and a QMP client for hot plug.
//!
//! Typical use: [`GuestKernel::locate`] the kernel in the cache (sandnet's own from
//! `scripts/build-kernel`, or Debian's cloud kernel with its modules), build
//! the image with [`Initramfs::build_cached`], choose the accelerator with [`accel::choose`], fill a [`VmSpec`] with
//! [`NicSpec`]s and [`Qemu::spawn`] it inside the pod netns; the returned process holds a
//! negotiated [`QmpClient`] ([`QemuProcess::qmp`]) for hot plug.

#![warn(missing_docs)]

pub mod accel;
pub mod console;
pub mod cpio;
mod error;
pub mod initramfs;
pub mod kernel;
pub mod kvm;
pub mod nic;
pub mod qemu;
pub mod qmp;
pub mod qmp_wire;
pub mod share;

pub use accel::{AccelMode, Choice, KvmTrial};
pub use console::{rotated_path, DEFAULT_CONSOLE_CAP};
pub use error::{Result, VmError};
pub use initramfs::{
    Initramfs, InitramfsSpec, DEFAULT_BUSYBOX, DEFAULT_INITRAMFS_CACHE, MODULE_LIST_PATH,
};
pub use kernel::{
    GuestKernel, KernelModule, CURRENT_KERNEL, DEBIAN_CLOUD_KERNEL, DEFAULT_KERNEL_DIR,
    SANDNET_KERNEL,
};
pub use kvm::Accel;
pub use nic::NicSpec;
pub use qemu::{
    ChildNicFds, Qemu, QemuProcess, StatePaths, VmSpec, AGENT_PORT_NAME, DEFAULT_KERNEL_ARGS,
    DEFAULT_QEMU, QBOOT_ROM,
};
pub use qmp::{QmpClient, QmpEvent, VmStatus};
pub use share::{ShareDaemon, ShareSpec, ShareTransport, VIRTIOFSD};
