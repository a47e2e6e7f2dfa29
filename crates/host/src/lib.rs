//! Host side of sandnet: network namespaces, endpoints, tc and taps, and the interworking
//! models (`tcfilter`, `macvtap`, `none`) that connect each endpoint to a tap a VMM can
//! open. The netlink client and the scan are `sandnet-netlink`'s (shared with the guest
//! agent), re-exported here as [`netlink`].
//!
//! Everything talks to the kernel over netlink or ioctls; nothing runs `ip` or `tc`.

#![warn(missing_docs)]

pub mod endpoint;
pub mod error;
pub mod guard;
pub mod hostns;
pub mod interwork;
pub mod mountinfo;
pub mod netns;
pub mod tap;
pub mod tc;

pub use endpoint::{Endpoint, SkipReason};
pub use error::{HostError, Result};
pub use hostns::HostNetns;
pub use interwork::{
    attach, attach_timed, detach, AttachOptions, AttachTimings, AttachedEndpoint, DetachReport,
};
pub use netns::{NetNs, NetNsId, NetNsRef, OwnLinks};
pub use sandnet_model::InterworkingModel;
pub use sandnet_netlink::{self as netlink, scan, scan_detail, Netlink, NetlinkError, ScanResult};

/// Random bytes from the kernel (`getrandom`), falling back to the clock and pid where
/// that fails; for names and addresses, not for secrets.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // SAFETY: getrandom writes at most b.len() bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
            ^ ((std::process::id() as u128) << 64);
        for (i, x) in b.iter_mut().enumerate() {
            *x = (t >> ((i % 16) * 8)) as u8;
        }
    }
    b
}
