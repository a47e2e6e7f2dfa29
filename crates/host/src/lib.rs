//! Host side of sandnet: network namespaces, the netlink scan of a pod namespace into the
//! shared model, endpoints, and the interworking models (`tcfilter`, `macvtap`, `none`) that
//! connect each endpoint to a tap a VMM can open.
//!
//! Everything talks to the kernel over netlink or ioctls; nothing runs `ip` or `tc`.

pub mod error;
pub mod netns;
pub mod nl;
pub mod scan;

pub use error::{HostError, Result};
pub use netns::{NetNs, NetNsId};
pub use nl::Netlink;
