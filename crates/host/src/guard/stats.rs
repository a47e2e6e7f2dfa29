//! The counters of a guest NIC's host side: the guard's, read from the kernel's qdisc and
//! class statistics, and a link's own (`IFLA_STATS64`).

use super::{is_guard_root, GUARD_HANDLE, PASS_CLASS, SINK_CLASS};
use crate::error::Result;
use netlink_packet_route::tc::{TcAttribute, TcMessage, TcStats};
pub use sandnet_model::LinkCounters;
use sandnet_netlink::Netlink;
use serde::Serialize;

/// What the guard of one NIC counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GuardCounters {
    /// Whether the pod link carries sandnet's guard.
    pub link_guarded: bool,
    /// Frames from the guest dropped as spoofed (the sink class).
    pub spoofed_dropped: u64,
    /// Frames out of the guest dropped by the egress limit.
    pub egress_limit_dropped: u64,
    /// Times the egress limit held frames back (HTB's overlimits).
    pub egress_limit_delayed: u64,
    /// Whether the tap carries sandnet's ingress shaper.
    pub tap_shaped: bool,
    /// Frames into the guest dropped by the ingress limit.
    pub ingress_limit_dropped: u64,
    /// Times the ingress limit held frames back (TBF's overlimits).
    pub ingress_limit_delayed: u64,
}

fn stats(m: &TcMessage) -> Option<&TcStats> {
    m.attributes.iter().find_map(|a| match a {
        TcAttribute::Stats(s) => Some(s),
        _ => None,
    })
}

/// Reads the counters of a NIC's guard on its pod link and shaper on its tap (one dump of
/// the namespace's qdiscs, and one of the link's classes when it is guarded).
pub async fn guard_counters(nl: &Netlink, link: u32, tap: Option<u32>) -> Result<GuardCounters> {
    let mut c = GuardCounters::default();
    let qdiscs = crate::tc::qdiscs(nl).await?;
    let ours = |index: u32| {
        qdiscs
            .iter()
            .find(|q| q.header.index as u32 == index && is_guard_root(q))
    };
    c.link_guarded = ours(link).is_some();
    if c.link_guarded {
        for cl in crate::tc::classes(nl, link).await? {
            let Some(s) = stats(&cl) else { continue };
            let h = u32::from(cl.header.handle);
            if h == GUARD_HANDLE | SINK_CLASS {
                c.spoofed_dropped = u64::from(s.drops);
            } else if h == GUARD_HANDLE | PASS_CLASS {
                c.egress_limit_dropped = u64::from(s.drops);
                c.egress_limit_delayed = u64::from(s.overlimits);
            }
        }
    }
    if let Some(q) = tap.and_then(ours) {
        c.tap_shaped = true;
        if let Some(s) = stats(q) {
            c.ingress_limit_dropped = u64::from(s.drops);
            c.ingress_limit_delayed = u64::from(s.overlimits);
        }
    }
    Ok(c)
}

/// Reads a link's counters; `None` when there is no such link (or it reports none).
pub async fn link_counters(nl: &Netlink, index: u32) -> Result<Option<LinkCounters>> {
    let Some(l) = nl.link_by_index(index).await? else {
        return Ok(None);
    };
    Ok(sandnet_netlink::link_counters(&l))
}
