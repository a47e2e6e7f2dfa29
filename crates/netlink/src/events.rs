//! Change notifications of a network namespace: a `NETLINK_ROUTE` socket that has joined
//! the link, address (v4 and v6), route (v4 and v6) and neighbour multicast groups, read
//! asynchronously as a stream of small plain [`NetEvent`]s.
//!
//! The socket belongs to the namespace of the thread that opened it: call
//! [`open_event_socket`] on a thread inside the namespace (the host side's `NetNs::run`)
//! and hand the fd to [`EventStream::from_fd`].
//!
//! Overruns: when a notification does not fit in the receive buffer, the kernel drops it,
//! reports `ENOBUFS` once and marks the socket congested; until the queue has been read
//! empty it drops every further notification *silently*. So on `ENOBUFS` the stream reads
//! the queue empty, throwing the (now incomplete) notifications away, and only then yields
//! [`NetEvent::Overrun`]: a rescan the consumer starts after receiving it misses nothing,
//! as every later change is delivered again (or reported by a new overrun).
//!
//! Memory is bounded: one receive buffer and the messages of one datagram at a time.

use crate::error::{NetlinkError, Result};
use futures::Stream;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::neighbour::NeighbourState;
use netlink_packet_route::route::RouteAttribute;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// The receive buffer asked for by default (bytes): room for tens of thousands of
/// notifications, so only a real storm overruns it.
pub const DEFAULT_RCVBUF: usize = 8 << 20;

/// The multicast groups joined: links, IPv4/IPv6 addresses and routes, neighbours.
pub const GROUPS: [u32; 6] = [
    libc::RTNLGRP_LINK,
    libc::RTNLGRP_IPV4_IFADDR,
    libc::RTNLGRP_IPV6_IFADDR,
    libc::RTNLGRP_IPV4_ROUTE,
    libc::RTNLGRP_IPV6_ROUTE,
    libc::RTNLGRP_NEIGH,
];

/// Size of the buffer one datagram is read into. Notifications are single messages of a
/// few KiB; a longer one is reported as an overrun (its content is lost).
const RECV_BUF: usize = 64 << 10;

/// While draining after an overrun, yield to other tasks after this many datagrams.
const DRAIN_PER_POLL: u64 = 1024;

/// What kind of object changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// A link (`RTM_NEWLINK` / `RTM_DELLINK`).
    Link,
    /// An address (`RTM_NEWADDR` / `RTM_DELADDR`).
    Address,
    /// A route (`RTM_NEWROUTE` / `RTM_DELROUTE`).
    Route,
    /// A neighbour entry (`RTM_NEWNEIGH` / `RTM_DELNEIGH`).
    Neighbor,
}

/// Whether the object appeared/changed or went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Created or changed (the kernel says "new" for both).
    New,
    /// Deleted.
    Del,
}

/// An IP family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

/// One change the kernel reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// What changed.
    pub kind: ChangeKind,
    /// Created/changed or deleted.
    pub op: Op,
    /// The link concerned: the link itself, an address's or a neighbour's link, a route's
    /// output link (0 when the route has none, e.g. a multipath or blackhole route).
    pub index: u32,
    /// The link's name (link events only).
    pub name: Option<String>,
    /// The link's alias, `ifalias` (link events only; a deleted link's message has it too).
    pub alias: Option<String>,
    /// The family of an address, route or neighbour (`None` for links and other families).
    pub family: Option<Family>,
    /// For neighbours: whether the entry is permanent (configured, not learnt). A
    /// permanent entry's deletion is reported as a change to a failed state and then a
    /// delete, neither marked permanent. Always `false` for other kinds.
    pub permanent: bool,
}

/// An event read from the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetEvent {
    /// One change.
    Change(Change),
    /// Notifications were lost (the kernel said `ENOBUFS`, or a message could not be
    /// read): the consumer must rescan the whole namespace.
    Overrun,
}

/// Opens a nonblocking `NETLINK_ROUTE` socket in the calling thread's namespace that has
/// joined [`GROUPS`], with a receive buffer of `rcvbuf` bytes (forced past
/// `net.core.rmem_max` when the caller may, else capped by it).
pub fn open_event_socket(rcvbuf: usize) -> io::Result<OwnedFd> {
    let mut s = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE)?;
    set_rcvbuf(&s, rcvbuf)?;
    s.bind_auto()?;
    for g in GROUPS {
        s.add_membership(g)?;
    }
    s.set_non_blocking(true)?;
    let fd = s.as_raw_fd();
    std::mem::forget(s);
    // SAFETY: the socket was just created and its ownership is handed over here.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_rcvbuf(s: &netlink_sys::Socket, size: usize) -> io::Result<()> {
    let v = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    let set = |opt| {
        // SAFETY: setsockopt reads one c_int from a valid pointer of the given length.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    if set(libc::SO_RCVBUFFORCE) == 0 || set(libc::SO_RCVBUF) == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The change events of one namespace, as a [`Stream`] that never ends by itself; an
/// item is an error only when reading the socket failed for another reason than an
/// overrun (after which the stream ends).
#[derive(Debug)]
pub struct EventStream {
    fd: AsyncFd<OwnedFd>,
    buf: Vec<u8>,
    pending: VecDeque<NetEvent>,
    /// After `ENOBUFS`: reading the queue empty before reporting the overrun.
    draining: bool,
    failed: bool,
}

impl EventStream {
    /// Subscribes in the calling thread's namespace with [`DEFAULT_RCVBUF`].
    /// Must be called within a tokio runtime.
    pub fn subscribe_current() -> Result<EventStream> {
        let fd = open_event_socket(DEFAULT_RCVBUF).map_err(|source| NetlinkError::Io {
            what: "open event socket".into(),
            source,
        })?;
        EventStream::from_fd(fd)
    }

    /// Reads events from a socket made by [`open_event_socket`] (possibly in another
    /// namespace). Must be called within a tokio runtime (the fd is registered with it).
    pub fn from_fd(fd: OwnedFd) -> Result<EventStream> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(NetlinkError::Transport(
                "a netlink event stream needs a tokio runtime".into(),
            ));
        }
        // SAFETY: the AsyncFd owns the fd, which is neither closed nor replaced while it
        // is registered.
        let fd =
            unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(|e| {
                NetlinkError::Io {
                    what: "register event socket".into(),
                    source: e.into(),
                }
            })?;
        Ok(EventStream {
            fd,
            buf: vec![0; RECV_BUF],
            pending: VecDeque::new(),
            draining: false,
            failed: false,
        })
    }

    /// The receive buffer the kernel granted (bytes, including its bookkeeping share).
    pub fn rcvbuf(&self) -> io::Result<usize> {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes one c_int into a valid pointer of the given length.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.get_ref().as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(usize::try_from(v).unwrap_or(0))
    }

    /// Gives the socket back (e.g. to hand it to a blocking reader).
    pub fn into_fd(self) -> OwnedFd {
        self.fd.into_inner()
    }
}

impl Stream for EventStream {
    type Item = Result<NetEvent>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let mut drained = 0;
        loop {
            if let Some(e) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(e)));
            }
            if this.failed {
                return Poll::Ready(None);
            }
            let mut guard = match ready!(this.fd.poll_read_ready(cx)) {
                Ok(g) => g,
                Err(source) => return Poll::Ready(Some(Err(this.fail("poll", source)))),
            };
            let buf = &mut this.buf;
            match guard.try_io(|fd| recv(fd.get_ref(), buf)) {
                Err(_would_block) => {
                    if std::mem::take(&mut this.draining) {
                        // Empty now: the kernel delivers (or reports) every later change.
                        this.pending.push_back(NetEvent::Overrun);
                    }
                }
                Ok(Ok(_)) if this.draining => {
                    drained += 1;
                    if drained == DRAIN_PER_POLL {
                        // Let other tasks run during a long storm.
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                }
                Ok(Ok(n)) if n > this.buf.len() => this.pending.push_back(NetEvent::Overrun),
                Ok(Ok(n)) => parse_datagram(&this.buf[..n], &mut this.pending),
                Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => this.draining = true,
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(source)) => return Poll::Ready(Some(Err(this.fail("recv", source)))),
            }
        }
    }
}

impl EventStream {
    fn fail(&mut self, what: &str, source: io::Error) -> NetlinkError {
        self.failed = true;
        NetlinkError::Io {
            what: format!("event socket: {what}"),
            source,
        }
    }
}

/// One `recv(2)` with `MSG_TRUNC`, so a datagram longer than `buf` shows as a length
/// past its end.
fn recv(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: recv writes at most buf.len() bytes into buf.
    let n = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_TRUNC,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Splits a datagram into its netlink messages and appends what each means to `out`.
/// A message that cannot be read at all, or the kernel's overrun message, becomes
/// [`NetEvent::Overrun`]; messages of other kinds (`NLMSG_DONE`, noop) are skipped.
pub fn parse_datagram(mut buf: &[u8], out: &mut VecDeque<NetEvent>) {
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < 16 || len > buf.len() {
            out.push_back(NetEvent::Overrun);
            return;
        }
        let msg = &buf[..len];
        if let Some(e) = parse_message(msg) {
            out.push_back(e);
        }
        // Messages are 4-byte aligned; the last one's padding may be missing.
        buf = buf.get((len + 3) & !3usize..).unwrap_or(&[]);
    }
}

/// What one netlink message means (see [`parse_datagram`]).
pub fn parse_message(msg: &[u8]) -> Option<NetEvent> {
    match NetlinkMessage::<RouteNetlinkMessage>::deserialize(msg) {
        Ok(m) => match m.payload {
            NetlinkPayload::InnerMessage(inner) => change_of(&inner).map(NetEvent::Change),
            NetlinkPayload::Overrun(_) => Some(NetEvent::Overrun),
            _ => None,
        },
        Err(_) => raw_change(msg),
    }
}

/// The change a route-netlink message reports, or `None` for other message kinds.
pub fn change_of(msg: &RouteNetlinkMessage) -> Option<Change> {
    use RouteNetlinkMessage as M;
    let base = |kind, op, index, family: AddressFamily| Change {
        kind,
        op,
        index,
        name: None,
        alias: None,
        family: family_of(family),
        permanent: false,
    };
    Some(match msg {
        M::NewLink(l) | M::DelLink(l) => {
            let op = if matches!(msg, M::NewLink(_)) {
                Op::New
            } else {
                Op::Del
            };
            let mut c = base(ChangeKind::Link, op, l.header.index, AddressFamily::Unspec);
            for a in &l.attributes {
                match a {
                    LinkAttribute::IfName(n) => c.name = Some(n.clone()),
                    LinkAttribute::IfAlias(s) if !s.is_empty() => c.alias = Some(s.clone()),
                    _ => {}
                }
            }
            c
        }
        M::NewAddress(a) | M::DelAddress(a) => {
            let op = if matches!(msg, M::NewAddress(_)) {
                Op::New
            } else {
                Op::Del
            };
            base(ChangeKind::Address, op, a.header.index, a.header.family)
        }
        M::NewRoute(r) | M::DelRoute(r) => {
            let op = if matches!(msg, M::NewRoute(_)) {
                Op::New
            } else {
                Op::Del
            };
            let oif = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(*i),
                _ => None,
            });
            let family = r.header.address_family;
            base(ChangeKind::Route, op, oif.unwrap_or(0), family)
        }
        M::NewNeighbour(n) | M::DelNeighbour(n) => {
            let op = if matches!(msg, M::NewNeighbour(_)) {
                Op::New
            } else {
                Op::Del
            };
            let mut c = base(ChangeKind::Neighbor, op, n.header.ifindex, n.header.family);
            c.permanent = n.header.state == NeighbourState::Permanent;
            c
        }
        _ => return None,
    })
}

fn family_of(f: AddressFamily) -> Option<Family> {
    match f {
        AddressFamily::Inet => Some(Family::V4),
        AddressFamily::Inet6 => Some(Family::V6),
        _ => None,
    }
}

/// Reads kind, operation, index and family from the fixed headers alone, for a message
/// netlink-packet-route could not parse (an attribute it does not know how to read):
/// the consumer still learns which link changed. Routes carry their output link in an
/// attribute, so an unreadable route message reports index 0. Anything shorter than
/// its fixed header is an overrun (its content is lost).
fn raw_change(msg: &[u8]) -> Option<NetEvent> {
    let ty = u16::from_ne_bytes([msg[4], msg[5]]);
    let body = &msg[16..];
    let (kind, op) = match ty {
        libc::RTM_NEWLINK => (ChangeKind::Link, Op::New),
        libc::RTM_DELLINK => (ChangeKind::Link, Op::Del),
        libc::RTM_NEWADDR => (ChangeKind::Address, Op::New),
        libc::RTM_DELADDR => (ChangeKind::Address, Op::Del),
        libc::RTM_NEWROUTE => (ChangeKind::Route, Op::New),
        libc::RTM_DELROUTE => (ChangeKind::Route, Op::Del),
        libc::RTM_NEWNEIGH => (ChangeKind::Neighbor, Op::New),
        libc::RTM_DELNEIGH => (ChangeKind::Neighbor, Op::Del),
        _ => return None,
    };
    // ifinfomsg, ifaddrmsg, rtmsg and ndmsg all start with the family byte; the index
    // sits at offset 4 in all but rtmsg. Their fixed parts are 16, 8, 12 and 12 bytes.
    let fixed = match kind {
        ChangeKind::Link => 16,
        ChangeKind::Address => 8,
        ChangeKind::Route | ChangeKind::Neighbor => 12,
    };
    if body.len() < fixed {
        return Some(NetEvent::Overrun);
    }
    let index = match kind {
        ChangeKind::Route => 0,
        _ => u32::from_ne_bytes([body[4], body[5], body[6], body[7]]),
    };
    let family = match kind {
        ChangeKind::Link => None,
        _ => family_of(AddressFamily::from(body[0])),
    };
    let permanent =
        kind == ChangeKind::Neighbor && u16::from_ne_bytes([body[8], body[9]]) & NUD_PERMANENT != 0;
    Some(NetEvent::Change(Change {
        kind,
        op,
        index,
        name: None,
        alias: None,
        family,
        permanent,
    }))
}

/// `NUD_PERMANENT` from `<linux/neighbour.h>`.
const NUD_PERMANENT: u16 = 0x80;

#[cfg(test)]
#[path = "events_tests.rs"]
mod tests;
