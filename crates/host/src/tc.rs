//! Traffic control over netlink: the ingress qdisc and the u32 match-all filter with a
//! `mirred egress redirect` action that the `tcfilter` model puts on each side of a pair.
//!
//! This kernel has no `matchall` or `flower` classifier, so the filter is u32 with one
//! zero-mask key (`match u8 0 0`), protocol `ETH_P_ALL`. Every action sandnet adds carries
//! [`COOKIE`] (`TCA_ACT_COOKIE`), so sandnet's filters are recognisable from the namespace
//! itself, without guessing at names or priorities.

use crate::error::Result;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionGeneric, TcActionMirrorOption, TcActionOption,
    TcActionType, TcAttribute, TcFilterU32Option, TcHandle, TcMessage, TcMirror,
    TcMirrorActionType, TcOption, TcU32Key, TcU32Selector, TcU32SelectorFlags,
};
use netlink_packet_route::RouteNetlinkMessage;
use sandnet_netlink::{Netlink, RequestBatch};

/// The cookie on every action sandnet adds.
pub const COOKIE: &[u8] = b"sandnet/v1";

/// `ETH_P_ALL` in network byte order, as `tcm_info`'s protocol half wants it.
const ETH_P_ALL_BE: u32 = 0x0003u16.to_be() as u32;

/// The ingress qdisc's handle `ffff:` (also the parent of filters attached to it).
const INGRESS_HANDLE: u32 = 0xffff_0000;

/// One filter sandnet added, as found in a dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OurFilter {
    /// Device the filter is on.
    pub index: u32,
    /// Priority (`pref`).
    pub prio: u16,
    /// The u32 node handle (e.g. `800::800`).
    pub handle: u32,
    /// Where its mirred action redirects to.
    pub redirect_to: u32,
}

fn tc_message(index: u32) -> TcMessage {
    let mut m = TcMessage::default();
    m.header.index = index as i32;
    m
}

/// Queues the creation of an ingress qdisc on a device in a batch (the kernel's `EEXIST`
/// means one was already there, and `EBUSY` is worth asking again, as Kata does); returns
/// its place in the batch.
pub fn push_ingress_qdisc(b: &mut RequestBatch, index: u32, name: &str) -> usize {
    b.push(
        ingress_qdisc_message(index),
        NLM_F_CREATE | NLM_F_EXCL,
        qdisc_what(name),
    )
}

fn qdisc_what(name: &str) -> String {
    format!("add ingress qdisc on {name}")
}

fn ingress_qdisc_message(index: u32) -> RouteNetlinkMessage {
    let mut m = tc_message(index);
    m.header.parent = TcHandle::INGRESS;
    m.header.handle = TcHandle::from(INGRESS_HANDLE);
    m.attributes.push(TcAttribute::Kind("ingress".into()));
    RouteNetlinkMessage::NewQueueDiscipline(m)
}

/// Every qdisc of the namespace (one dump).
pub async fn qdiscs(nl: &Netlink) -> Result<Vec<TcMessage>> {
    let msgs = nl
        .dump(
            RouteNetlinkMessage::GetQueueDiscipline(TcMessage::default()),
            || "list qdiscs".to_string(),
        )
        .await?;
    Ok(msgs
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewQueueDiscipline(q) => Some(q),
            _ => None,
        })
        .collect())
}

/// The indexes of the devices among `qdiscs` that have an ingress qdisc.
pub fn ingress_indexes(qdiscs: &[TcMessage]) -> std::collections::HashSet<u32> {
    qdiscs
        .iter()
        .filter(|q| {
            q.attributes
                .iter()
                .any(|a| matches!(a, TcAttribute::Kind(k) if k == "ingress"))
        })
        .map(|q| q.header.index as u32)
        .collect()
}

/// The indexes of every device that has an ingress qdisc (one dump for the namespace).
pub async fn ingress_qdisc_indexes(nl: &Netlink) -> Result<std::collections::HashSet<u32>> {
    Ok(ingress_indexes(&qdiscs(nl).await?))
}

/// Removes a device's ingress qdisc (and so every filter on it); absent is not an error.
pub async fn del_ingress_qdisc(nl: &Netlink, index: u32, name: &str) -> Result<()> {
    let mut m = tc_message(index);
    m.header.parent = TcHandle::INGRESS;
    m.header.handle = TcHandle::from(INGRESS_HANDLE);
    match nl
        .ack(RouteNetlinkMessage::DelQueueDiscipline(m), 0, || {
            format!("delete ingress qdisc on {name}")
        })
        .await
    {
        Err(e) if e.is_not_found() || e.errno() == Some(libc::EINVAL) => Ok(()),
        r => Ok(r?),
    }
}

/// Queues `tc filter add dev FROM parent ffff: protocol all u32 match u8 0 0 action mirred
/// egress redirect dev TO`, with sandnet's cookie on the action, in a batch; returns its
/// place in the batch.
pub fn push_redirect(
    b: &mut RequestBatch,
    from: u32,
    to: u32,
    from_name: &str,
    to_name: &str,
) -> usize {
    b.push(
        redirect_message(from, to),
        NLM_F_CREATE | NLM_F_EXCL,
        redirect_what(from_name, to_name),
    )
}

fn redirect_what(from_name: &str, to_name: &str) -> String {
    format!("add redirect filter {from_name} -> {to_name}")
}

fn redirect_message(from: u32, to: u32) -> RouteNetlinkMessage {
    let mut m = tc_message(from);
    m.header.parent = TcHandle::from(INGRESS_HANDLE);
    m.header.info = ETH_P_ALL_BE;
    m.attributes.push(TcAttribute::Kind("u32".into()));
    let mut sel = TcU32Selector::default();
    sel.flags = TcU32SelectorFlags::Terminal;
    sel.nkeys = 1;
    sel.keys = vec![TcU32Key::default()];
    let mut mirror = TcMirror::default();
    mirror.generic = TcActionGeneric::default();
    mirror.generic.action = TcActionType::Stolen;
    mirror.eaction = TcMirrorActionType::EgressRedir;
    mirror.ifindex = to;
    let mut action = TcAction::default();
    action.tab = 1;
    action.attributes = vec![
        TcActionAttribute::Kind("mirred".into()),
        TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(
            mirror,
        ))]),
        TcActionAttribute::Cookie(COOKIE.to_vec()),
    ];
    m.attributes.push(TcAttribute::Options(vec![
        TcOption::U32(TcFilterU32Option::Selector(sel)),
        TcOption::U32(TcFilterU32Option::Action(vec![action])),
    ]));
    RouteNetlinkMessage::NewTrafficFilter(m)
}

/// A dump of one device's filters or classes; none when the device, or the parent asked
/// for, is not there.
async fn dump_of(nl: &Netlink, req: RouteNetlinkMessage, what: String) -> Result<Vec<TcMessage>> {
    let msgs = match nl.dump(req, || what).await {
        Ok(v) => v,
        Err(e) if e.is_not_found() || e.errno() == Some(libc::EINVAL) => return Ok(vec![]),
        Err(e) => return Err(e.into()),
    };
    Ok(msgs
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewTrafficFilter(f) | RouteNetlinkMessage::NewTrafficClass(f) => {
                Some(f)
            }
            _ => None,
        })
        .collect())
}

/// The filters under qdisc (or class) `parent` of a device; none when there is no such
/// parent or device.
pub(crate) async fn filters(nl: &Netlink, index: u32, parent: u32) -> Result<Vec<TcMessage>> {
    let mut m = tc_message(index);
    m.header.parent = TcHandle::from(parent);
    let what = format!("list filters of link {index} under {parent:#x}");
    dump_of(nl, RouteNetlinkMessage::GetTrafficFilter(m), what).await
}

/// The classes of a device; none when it has no classful qdisc or is gone.
pub(crate) async fn classes(nl: &Netlink, index: u32) -> Result<Vec<TcMessage>> {
    let what = format!("list classes of link {index}");
    let all = dump_of(
        nl,
        RouteNetlinkMessage::GetTrafficClass(tc_message(index)),
        what,
    )
    .await?;
    Ok(all
        .into_iter()
        .filter(|c| c.header.index as u32 == index)
        .collect())
}

/// Every filter on a device's ingress, with whether it is one of sandnet's.
async fn ingress_filters(nl: &Netlink, index: u32) -> Result<Vec<(TcMessage, Option<u32>)>> {
    Ok(filters(nl, index, INGRESS_HANDLE)
        .await?
        .into_iter()
        .map(|f| {
            let ours = our_redirect_target(&f);
            (f, ours)
        })
        .collect())
}

/// If the filter message carries a mirred action with sandnet's cookie, its target.
fn our_redirect_target(f: &TcMessage) -> Option<u32> {
    for a in &f.attributes {
        let TcAttribute::Options(opts) = a else {
            continue;
        };
        for o in opts {
            let TcOption::U32(TcFilterU32Option::Action(actions)) = o else {
                continue;
            };
            for act in actions {
                let ours = act
                    .attributes
                    .iter()
                    .any(|x| matches!(x, TcActionAttribute::Cookie(c) if c == COOKIE));
                if !ours {
                    continue;
                }
                for x in &act.attributes {
                    if let TcActionAttribute::Options(aopts) = x {
                        for ao in aopts {
                            if let TcActionOption::Mirror(TcActionMirrorOption::Parms(p)) = ao {
                                return Some(p.ifindex);
                            }
                        }
                    }
                }
                return Some(0);
            }
        }
    }
    None
}

/// A device's ingress filters: sandnet's, and how many others there are (u32's own
/// hash-table entries are not counted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngressFilters {
    /// sandnet's filters.
    pub ours: Vec<OurFilter>,
    /// How many filters belong to someone else.
    pub others: usize,
}

/// Lists a device's ingress filters.
pub async fn ingress_summary(nl: &Netlink, index: u32) -> Result<IngressFilters> {
    let mut out = IngressFilters::default();
    for (f, ours) in ingress_filters(nl, index).await? {
        match ours {
            Some(to) => out.ours.push(OurFilter {
                index,
                prio: (f.header.info >> 16) as u16,
                handle: u32::from(f.header.handle),
                redirect_to: to,
            }),
            // u32 reports its hash table (handle 800:) as well as the nodes in it.
            None if is_u32(&f) && u32::from(f.header.handle) & 0xfff == 0 => {}
            None => out.others += 1,
        }
    }
    Ok(out)
}

fn is_u32(f: &TcMessage) -> bool {
    f.attributes
        .iter()
        .any(|a| matches!(a, TcAttribute::Kind(k) if k == "u32"))
}

/// Deletes one of sandnet's filters; one already gone is not an error.
pub async fn del_filter(nl: &Netlink, f: &OurFilter) -> Result<()> {
    let mut m = tc_message(f.index);
    m.header.parent = TcHandle::from(INGRESS_HANDLE);
    m.header.handle = TcHandle::from(f.handle);
    m.header.info = ((f.prio as u32) << 16) | ETH_P_ALL_BE;
    m.attributes.push(TcAttribute::Kind("u32".into()));
    match nl
        .ack(RouteNetlinkMessage::DelTrafficFilter(m), 0, || {
            format!("delete filter on link {} (pref {})", f.index, f.prio)
        })
        .await
    {
        Err(e) if e.is_not_found() || e.errno() == Some(libc::EINVAL) => Ok(()),
        r => Ok(r?),
    }
}
