//! Change events of a namespace, for the network monitor: [`NetNs::subscribe`] opens the
//! event socket inside the namespace, and [`OwnLinks`] tells sandnet's own links (taps,
//! macvtaps) apart so the monitor never reacts to what sandnet itself did.

use super::NetNs;
use crate::endpoint::is_sandnet_alias;
use crate::error::{HostError, Result};
use futures::{future, Stream, StreamExt};
use sandnet_netlink::events::{open_event_socket, DEFAULT_RCVBUF};
use sandnet_netlink::{ChangeKind, EventStream, NetEvent, NetlinkError};
use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};

impl NetNs {
    /// Subscribes to this namespace's link, address, route and neighbour changes (both
    /// families), with a large receive buffer ([`DEFAULT_RCVBUF`]). Must be called within
    /// a tokio runtime.
    pub fn subscribe(&self) -> Result<EventStream> {
        self.subscribe_with(DEFAULT_RCVBUF)
    }

    /// As [`NetNs::subscribe`], with a receive buffer of `rcvbuf` bytes (the kernel
    /// doubles it and has a floor of a few KiB).
    pub fn subscribe_with(&self, rcvbuf: usize) -> Result<EventStream> {
        let fd = self
            .run(move || open_event_socket(rcvbuf))?
            .map_err(|e| HostError::Netns {
                ns: self.display(),
                op: "open netlink event socket",
                source: e,
            })?;
        Ok(EventStream::from_fd(fd)?)
    }
}

/// sandnet's own links in one namespace, to drop their events: links whose alias starts
/// with [`ALIAS_PREFIX`], links the monitor names before creating them (a tap's first
/// event comes before sandnet sets its alias), and indexes it adds. Once a link is seen
/// to be sandnet's, its index is remembered, so the events of its addresses, routes and
/// neighbours are dropped too — also after it is deleted (link indexes are handed out
/// cyclically, not reused at once); [`OwnLinks::remove_index`] forgets one.
///
/// Clones share their state: the monitor keeps one to register its taps while another
/// filters the event stream ([`OwnLinks::filter`]). tc objects need no filtering: the
/// event socket does not join the tc group.
#[derive(Debug, Clone, Default)]
pub struct OwnLinks {
    inner: Arc<Mutex<Known>>,
}

#[derive(Debug, Default)]
struct Known {
    indexes: HashSet<u32>,
    names: HashSet<String>,
}

impl OwnLinks {
    /// An empty set (only the alias marks links as sandnet's).
    pub fn new() -> OwnLinks {
        OwnLinks::default()
    }

    fn known(&self) -> MutexGuard<'_, Known> {
        // The state stays consistent whatever panicked while holding the lock.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks a link index as sandnet's.
    pub fn add_index(&self, index: u32) {
        self.known().indexes.insert(index);
    }

    /// Forgets a link index.
    pub fn remove_index(&self, index: u32) {
        self.known().indexes.remove(&index);
    }

    /// Marks a link name as sandnet's (e.g. a tap's, before it is created).
    pub fn add_name(&self, name: &str) {
        self.known().names.insert(name.to_string());
    }

    /// Forgets a link name.
    pub fn remove_name(&self, name: &str) {
        self.known().names.remove(name);
    }

    /// Whether the index is known to be sandnet's.
    pub fn contains_index(&self, index: u32) -> bool {
        self.known().indexes.contains(&index)
    }

    /// Whether an event concerns one of sandnet's links (learning the index of a link
    /// whose event shows it is). An overrun is never sandnet's.
    pub fn is_ours(&self, e: &NetEvent) -> bool {
        let NetEvent::Change(c) = e else {
            return false;
        };
        let mut k = self.known();
        if c.kind == ChangeKind::Link {
            let named = c.name.as_ref().is_some_and(|n| k.names.contains(n));
            if named || is_sandnet_alias(c.alias.as_deref()) {
                k.indexes.insert(c.index);
                return true;
            }
        }
        c.index != 0 && k.indexes.contains(&c.index)
    }

    /// The events of `source` that are not sandnet's (errors pass through).
    pub fn filter<S>(
        &self,
        source: S,
    ) -> impl Stream<Item = std::result::Result<NetEvent, NetlinkError>> + Unpin + Send
    where
        S: Stream<Item = std::result::Result<NetEvent, NetlinkError>> + Unpin + Send,
    {
        let own = self.clone();
        source.filter(move |r| future::ready(!matches!(r, Ok(e) if own.is_ours(e))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandnet_netlink::{Change, Family, Op};

    fn ev(kind: ChangeKind, index: u32, name: Option<&str>, alias: Option<&str>) -> NetEvent {
        NetEvent::Change(Change {
            kind,
            op: Op::New,
            index,
            name: name.map(str::to_string),
            alias: alias.map(str::to_string),
            family: (kind != ChangeKind::Link).then_some(Family::V6),
            permanent: false,
        })
    }

    #[test]
    fn alias_name_and_index_mark_links_and_their_objects() {
        let own = OwnLinks::new();
        let watcher = own.clone();
        own.add_name("sntap4");
        own.add_index(30);
        // Alias learnt from a link event, then that link's address is dropped too.
        assert!(watcher.is_ours(&ev(ChangeKind::Link, 10, Some("x"), Some("sandnet:tc:3"))));
        assert!(watcher.is_ours(&ev(ChangeKind::Address, 10, None, None)));
        // Name known in advance: the first event, without alias, is already ours.
        assert!(watcher.is_ours(&ev(ChangeKind::Link, 11, Some("sntap4"), None)));
        assert!(watcher.is_ours(&ev(ChangeKind::Neighbor, 11, None, None)));
        assert!(watcher.is_ours(&ev(ChangeKind::Route, 30, None, None)));
        // Others pass: other aliases, other links, routes without an output link.
        assert!(!watcher.is_ours(&ev(ChangeKind::Link, 12, Some("eth1"), Some("mine"))));
        assert!(!watcher.is_ours(&ev(ChangeKind::Address, 12, None, None)));
        assert!(!watcher.is_ours(&ev(ChangeKind::Route, 0, None, None)));
        assert!(!watcher.is_ours(&NetEvent::Overrun));
        own.remove_index(30);
        assert!(!watcher.is_ours(&ev(ChangeKind::Route, 30, None, None)));
        assert!(watcher.contains_index(10) && watcher.contains_index(11));
    }
}
