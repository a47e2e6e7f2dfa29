//! Gathering bursts of change events into batches: a [`Debouncer`] waits for the first
//! event, then keeps collecting until the namespace has been quiet for
//! [`DebounceConfig::quiet`] or [`DebounceConfig::max`] has passed since the first, and
//! returns a [`Batch`] that says which links, addresses, routes and neighbours changed.
//!
//! The summary ([`Batch::add`]) is pure; the timing uses tokio's clock, so both are
//! tested without a kernel (the timing with paused time).

use crate::error::{NetlinkError, Result};
use crate::events::{Change, ChangeKind, NetEvent, Op};
use futures::{Stream, StreamExt};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::time::{timeout_at, Instant};

/// How long a batch collects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DebounceConfig {
    /// A batch closes once no event came for this long.
    pub quiet: Duration,
    /// A batch closes at the latest this long after its first event, even in a storm.
    pub max: Duration,
}

impl Default for DebounceConfig {
    /// 50 ms quiet, 500 ms at most.
    fn default() -> Self {
        DebounceConfig {
            quiet: Duration::from_millis(50),
            max: Duration::from_millis(500),
        }
    }
}

/// What happened to one link within a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkChange {
    /// Its name, as last reported.
    pub name: Option<String>,
    /// Its alias, as last reported.
    pub alias: Option<String>,
    /// The last operation: `New` means the link exists now (created or changed — the
    /// kernel does not tell them apart), `Del` that it is gone.
    pub last: Op,
    /// A delete was seen: even if the link is present again (moved out and back, or
    /// another link got the index) it is not the one the consumer knew.
    pub deleted: bool,
}

/// A summary of the events of one burst. Each set holds link indexes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// Links created, changed or deleted, by index.
    pub links: BTreeMap<u32, LinkChange>,
    /// Links whose addresses changed.
    pub addresses: BTreeSet<u32>,
    /// Output links of routes that changed (0: a route without one).
    pub routes: BTreeSet<u32>,
    /// Links whose neighbour entries changed (learnt ones too; a deleted permanent entry
    /// shows only here, as its delete no longer says it was permanent).
    pub neighbors: BTreeSet<u32>,
    /// Links where a permanent (configured) neighbour entry was added or changed.
    pub permanent_neighbors: BTreeSet<u32>,
    /// Events were lost (kernel overrun) or the batch outgrew its bounds: the consumer
    /// must rescan the whole namespace.
    pub overrun: bool,
    /// How many events went into the batch.
    pub events: usize,
}

impl Batch {
    /// At most this many entries per set; past it the batch only says [`Batch::overrun`].
    pub const MAX_ENTRIES: usize = 4096;

    /// Folds one event into the summary.
    pub fn add(&mut self, e: &NetEvent) {
        self.events = self.events.saturating_add(1);
        let c = match e {
            NetEvent::Overrun => {
                self.overrun = true;
                return;
            }
            NetEvent::Change(c) => c,
        };
        match c.kind {
            ChangeKind::Link => self.add_link(c),
            ChangeKind::Address => self.overrun |= !insert(&mut self.addresses, c.index),
            ChangeKind::Route => self.overrun |= !insert(&mut self.routes, c.index),
            ChangeKind::Neighbor => {
                self.overrun |= !insert(&mut self.neighbors, c.index);
                if c.permanent {
                    self.overrun |= !insert(&mut self.permanent_neighbors, c.index);
                }
            }
        }
    }

    fn add_link(&mut self, c: &Change) {
        let full = self.links.len() >= Self::MAX_ENTRIES;
        if full && !self.links.contains_key(&c.index) {
            self.overrun = true;
            return;
        }
        let l = self.links.entry(c.index).or_insert(LinkChange {
            name: None,
            alias: None,
            last: c.op,
            deleted: false,
        });
        l.last = c.op;
        l.deleted |= c.op == Op::Del;
        if c.name.is_some() {
            l.name.clone_from(&c.name);
        }
        if c.alias.is_some() || c.op == Op::New {
            // A link message always carries the current alias; none means it was cleared.
            l.alias.clone_from(&c.alias);
        }
    }

    /// Whether nothing was collected.
    pub fn is_empty(&self) -> bool {
        self.events == 0
    }

    /// Indexes of links that exist after the batch (created or changed).
    pub fn links_present(&self) -> impl Iterator<Item = u32> + '_ {
        self.links
            .iter()
            .filter(|(_, l)| l.last == Op::New)
            .map(|(i, _)| *i)
    }

    /// Indexes of links deleted during the batch (and not back).
    pub fn links_gone(&self) -> impl Iterator<Item = u32> + '_ {
        self.links
            .iter()
            .filter(|(_, l)| l.last == Op::Del)
            .map(|(i, _)| *i)
    }
}

fn insert(set: &mut BTreeSet<u32>, i: u32) -> bool {
    if set.len() >= Batch::MAX_ENTRIES && !set.contains(&i) {
        return false;
    }
    set.insert(i);
    true
}

/// Turns a stream of events into batches (see the module doc).
#[derive(Debug)]
pub struct Debouncer<S> {
    source: S,
    config: DebounceConfig,
    open: Option<Open>,
    error: Option<NetlinkError>,
    ended: bool,
}

#[derive(Debug)]
struct Open {
    batch: Batch,
    first: Instant,
    last: Instant,
}

impl<S> Debouncer<S>
where
    S: Stream<Item = Result<NetEvent>> + Unpin,
{
    /// Batches the events of `source` with the given timing.
    pub fn new(source: S, config: DebounceConfig) -> Debouncer<S> {
        Debouncer {
            source,
            config,
            open: None,
            error: None,
            ended: false,
        }
    }

    /// The timing in use.
    pub fn config(&self) -> DebounceConfig {
        self.config
    }

    /// Waits for the next batch. `Ok(None)` once the source has ended; an error of the
    /// source is returned after the batch it interrupted. Cancel-safe: when the future
    /// is dropped, the events collected so far stay for the next call (with `S` itself
    /// cancel-safe, as [`crate::EventStream`] is).
    pub async fn next_batch(&mut self) -> Result<Option<Batch>> {
        loop {
            let Some(open) = &self.open else {
                if let Some(e) = self.error.take() {
                    return Err(e);
                }
                if self.ended {
                    return Ok(None);
                }
                let item = self.source.next().await;
                self.take(item);
                continue;
            };
            if self.ended || self.error.is_some() {
                return Ok(self.open.take().map(|o| o.batch));
            }
            let deadline = (open.last + self.config.quiet).min(open.first + self.config.max);
            match timeout_at(deadline, self.source.next()).await {
                Err(_elapsed) => return Ok(self.open.take().map(|o| o.batch)),
                Ok(item) => self.take(item),
            }
        }
    }

    fn take(&mut self, item: Option<Result<NetEvent>>) {
        match item {
            None => self.ended = true,
            Some(Err(e)) => self.error = Some(e),
            Some(Ok(ev)) => {
                let now = Instant::now();
                let open = self.open.get_or_insert_with(|| Open {
                    batch: Batch::default(),
                    first: now,
                    last: now,
                });
                open.last = now;
                open.batch.add(&ev);
            }
        }
    }

    /// The source, e.g. to reach the socket.
    pub fn get_ref(&self) -> &S {
        &self.source
    }

    /// Gives the source back; a batch being collected is dropped.
    pub fn into_inner(self) -> S {
        self.source
    }
}

#[cfg(test)]
#[path = "debounce_tests.rs"]
mod tests;
