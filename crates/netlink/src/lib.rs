//! sandnet's netlink layer, shared by the host side and the guest agent: a route socket
//! opener ([`socket`]), a thin request/answer client with the link, address, route and
//! neighbour operations both sides need ([`Netlink`]), and the scan of a namespace into
//! the shared model ([`mod@scan`]). It knows nothing of taps, tc or interworking, so the static
//! guest agent does not carry them.

#![warn(missing_docs)]

pub mod client;
pub mod error;
pub mod scan;
pub mod socket;

pub use client::{address_message, route_message, route_text, Netlink};
pub use error::{NetlinkError, Result};
pub use scan::{
    address_of, link_detail, neighbor_from_message, route_from_message, scan, scan_detail,
    LinkDetail, ScanResult,
};
pub use socket::open_route_socket;
