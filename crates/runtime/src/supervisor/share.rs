//! The sandbox's shared directory on the host: created before QEMU boots, then served by
//! QEMU itself (virtio-9p) or by a virtiofsd that QEMU's process starts and stops with it
//! (virtio-fs, see `sandnet_vm::ShareSpec`).

use super::Supervisor;
use crate::error::RuntimeError;
use crate::shared::{SharedFs, MOUNT_TAG};
use crate::spec::RunSpec;
use sandnet_vm::{ShareSpec, ShareTransport, VIRTIOFSD};
use std::os::unix::fs::PermissionsExt;

impl Supervisor {
    /// Creates the shared directory (mode 0700); what QEMU gets for it.
    pub(super) fn prepare_share(&self, spec: &RunSpec) -> Result<Option<ShareSpec>, RuntimeError> {
        let io = |step: &str| {
            let step = step.to_string();
            move |source| RuntimeError::Io { step, source }
        };
        let transport = match spec.shared_fs {
            SharedFs::None => return Ok(None),
            SharedFs::Virtio9p => ShareTransport::Virtio9p,
            SharedFs::VirtioFs => ShareTransport::VirtioFs {
                // Short like the other sockets of the directory: a unix socket path has
                // 107 bytes, and a CRI id alone is 64.
                socket: self.paths.dir.join("vfs.sock"),
                daemon: VIRTIOFSD.into(),
            },
        };
        let host = self.paths.shared.clone();
        std::fs::create_dir_all(&host).map_err(io("create the shared directory"))?;
        std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o700))
            .map_err(io("chmod the shared directory"))?;
        Ok(Some(ShareSpec {
            host,
            tag: MOUNT_TAG.to_string(),
            transport,
        }))
    }
}
