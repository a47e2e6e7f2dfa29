//! A guest NIC backed by fds sandnet opened, and the QEMU id rule: shared by the QEMU
//! command line (cold plug) and QMP hot plug, so neither depends on the other for it.

use crate::error::{Result, VmError};
use sandnet_model::MacAddr;
use std::os::fd::OwnedFd;

/// A NIC for the guest, backed by fds sandnet opened (tap or macvtap queues, vhost-net).
#[derive(Debug)]
pub struct NicSpec {
    /// Device id in QEMU (letters, digits, `-`, `_`, `.`; starts with a letter). The netdev is
    /// [`NicSpec::netdev_id`].
    pub id: String,
    /// The guest NIC's MAC (the veth's, so the agent finds it).
    pub mac: MacAddr,
    /// One tap fd per queue.
    pub tap_fds: Vec<OwnedFd>,
    /// One `/dev/vhost-net` fd per queue, or none (no vhost).
    pub vhost_fds: Vec<OwnedFd>,
    /// Number of queue pairs; must equal `tap_fds.len()`.
    pub queues: u32,
}

impl NicSpec {
    /// A single-queue NIC without vhost.
    pub fn new(id: impl Into<String>, mac: MacAddr, tap_fd: OwnedFd) -> Self {
        NicSpec {
            id: id.into(),
            mac,
            tap_fds: vec![tap_fd],
            vhost_fds: Vec::new(),
            queues: 1,
        }
    }

    /// The netdev id used for NIC `id`.
    pub fn netdev_id(id: &str) -> String {
        format!("{id}-netdev")
    }

    pub(crate) fn validate(&self) -> Result<()> {
        valid_id(&self.id)?;
        let n = self.tap_fds.len();
        if n == 0 || n > 64 {
            return Err(VmError::InvalidSpec(format!(
                "NIC {}: {n} tap fds (need 1..=64)",
                self.id
            )));
        }
        if self.queues as usize != n {
            return Err(VmError::InvalidSpec(format!(
                "NIC {}: queues={} but {n} tap fds",
                self.id, self.queues
            )));
        }
        if !self.vhost_fds.is_empty() && self.vhost_fds.len() != n {
            return Err(VmError::InvalidSpec(format!(
                "NIC {}: {} vhost fds for {n} queues",
                self.id,
                self.vhost_fds.len()
            )));
        }
        if self.mac.is_multicast() || self.mac.0 == [0; 6] {
            return Err(VmError::InvalidSpec(format!(
                "NIC {}: MAC {} is not a unicast address",
                self.id, self.mac
            )));
        }
        Ok(())
    }
}

/// A QEMU id: starts with a letter, then letters, digits, `-`, `_`, `.` (at most 64 chars).
pub(crate) fn valid_id(id: &str) -> Result<()> {
    let ok = id.len() <= 64
        && id.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(VmError::InvalidSpec(format!(
            "id {id:?} must start with a letter and hold only letters, digits, '-', '_', '.'"
        )))
    }
}
