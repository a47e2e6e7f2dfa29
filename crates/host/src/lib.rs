//! Host side of sandnet: network namespaces, the netlink scan of a pod namespace into the
//! shared model, endpoints, and the interworking models (`tcfilter`, `macvtap`, `none`) that
//! connect each endpoint to a tap a VMM can open.
//!
//! Everything talks to the kernel over netlink or ioctls; nothing runs `ip` or `tc`.

pub mod endpoint;
pub mod error;
pub mod interwork;
pub mod netns;
pub mod nl;
pub mod scan;
pub mod tap;
pub mod tc;

pub use endpoint::{Endpoint, SkipReason};
pub use error::{HostError, Result};
pub use interwork::{attach, detach, AttachOptions, AttachedEndpoint, DetachReport, Model};
pub use netns::{NetNs, NetNsId};
pub use nl::Netlink;
pub use scan::{scan, scan_detail, ScanResult};
