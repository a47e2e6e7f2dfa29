//! The attachment's network namespace: opened, or known to be gone.

use crate::error::PluginError;
use sandnet_host::{HostError, NetNs, NetNsRef};

/// Opens the namespace at `path`; `None` when it no longer exists (no file there, or a
/// file that is not a network namespace any more, as after `ip netns del`).
pub fn open_if_present(path: &str) -> Result<Option<NetNs>, PluginError> {
    if path.is_empty() {
        return Ok(None);
    }
    match NetNs::open(&NetNsRef::path(path)) {
        Ok(ns) => Ok(Some(ns)),
        Err(HostError::NetnsNotFound(_) | HostError::NotANetns(_)) => Ok(None),
        Err(e) => Err(PluginError::host(format!(
            "opening network namespace {path}"
        ))(e)),
    }
}

/// Opens the namespace at `path`, which must exist (ADD, CHECK).
pub fn open(path: &str) -> Result<NetNs, PluginError> {
    open_if_present(path)?.ok_or_else(|| {
        PluginError::UnknownContainer(format!("network namespace {path} does not exist"))
    })
}
