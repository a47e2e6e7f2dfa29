//! sandnet's netlink layer, shared by the host side and the guest agent: a route socket
//! opener ([`socket`]), a thin request/answer client with the link, address, route and
//! neighbour operations both sides need ([`Netlink`]), change requests sent many at a time
//! ([`RequestBatch`]), the scan of a namespace into the
//! shared model ([`mod@scan`]), and a namespace's change notifications ([`events`])
//! gathered into batches ([`debounce`]). It knows nothing of taps, tc or interworking, so
//! the static guest agent does not carry them.

#![warn(missing_docs)]

pub mod batch;
pub mod client;
pub mod debounce;
pub mod error;
pub mod events;
pub mod scan;
pub mod socket;

pub use batch::RequestBatch;
pub use client::{address_message, route_message, route_text, Netlink};
pub use debounce::{Batch, DebounceConfig, Debouncer, LinkChange};
pub use error::{NetlinkError, Result};
pub use events::{Change, ChangeKind, EventStream, Family, NetEvent, Op};
pub use scan::{
    address_of, link_counters, link_detail, neighbor_from_message, route_from_message, scan,
    scan_detail, LinkDetail, ScanResult,
};
pub use socket::open_route_socket;
