//! The counters of a guest NIC's host side: the guard's, read from the kernel's qdisc and
//! class statistics, and a link's own (`IFLA_STATS64`).

use super::{GUARD_HANDLE, PASS_CLASS, SINK_CLASS};
use crate::error::Result;
use netlink_packet_route::tc::{TcAttribute, TcHandle, TcMessage, TcStats};
use netlink_packet_route::RouteNetlinkMessage;
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

async fn dump(nl: &Netlink, msg: RouteNetlinkMessage, index: u32) -> Result<Vec<TcMessage>> {
    let class = matches!(msg, RouteNetlinkMessage::GetTrafficClass(_));
    match nl
        .dump(msg, || format!("read tc statistics of link {index}"))
        .await
    {
        Ok(v) => Ok(v
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewQueueDiscipline(q) if !class => Some(q),
                RouteNetlinkMessage::NewTrafficClass(c) if class => Some(c),
                _ => None,
            })
            .filter(|q| q.header.index as u32 == index)
            .collect()),
        Err(e) if e.is_not_found() || e.errno() == Some(libc::EINVAL) => Ok(vec![]),
        Err(e) => Err(e.into()),
    }
}

fn on(index: u32) -> TcMessage {
    let mut m = TcMessage::default();
    m.header.index = index as i32;
    m
}

/// Reads the counters of a NIC's guard on its pod link and shaper on its tap.
pub async fn guard_counters(nl: &Netlink, link: u32, tap: Option<u32>) -> Result<GuardCounters> {
    let mut c = GuardCounters::default();
    let qdiscs = dump(nl, RouteNetlinkMessage::GetQueueDiscipline(on(link)), link).await?;
    c.link_guarded = qdiscs
        .iter()
        .any(|q| u32::from(q.header.handle) == GUARD_HANDLE && q.header.parent == TcHandle::ROOT);
    if c.link_guarded {
        for cl in dump(nl, RouteNetlinkMessage::GetTrafficClass(on(link)), link).await? {
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
    if let Some(tap) = tap {
        for q in dump(nl, RouteNetlinkMessage::GetQueueDiscipline(on(tap)), tap).await? {
            if u32::from(q.header.handle) == GUARD_HANDLE && q.header.parent == TcHandle::ROOT {
                c.tap_shaped = true;
                if let Some(s) = stats(&q) {
                    c.ingress_limit_dropped = u64::from(s.drops);
                    c.ingress_limit_delayed = u64::from(s.overlimits);
                }
            }
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
