//! Opening a `NETLINK_ROUTE` socket. A socket belongs to the network namespace of the
//! thread that opened it, for its whole life: to talk to another namespace, call
//! [`open_route_socket`] on a thread that has entered it (the host side's `NetNs::run`) and
//! hand the fd to [`crate::Netlink::from_fd`].

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Opens a `NETLINK_ROUTE` socket in the calling thread's network namespace.
pub fn open_route_socket() -> io::Result<OwnedFd> {
    let s = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE)?;
    let fd = s.as_raw_fd();
    std::mem::forget(s);
    // SAFETY: the socket was just created and its ownership is handed over here.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
