//! The guard: what the host enforces on a guest NIC (see [`sandnet_model::TapPolicy`]).
//!
//! - **Anti-spoofing and the egress limit** live on the pod link's egress, which every
//!   frame of the guest crosses on its way out: tcfilter redirects the tap's ingress there,
//!   and a macvtap transmits through its lower device. An HTB root qdisc
//!   [`GUARD_HANDLE`] has a sink class ([`SINK_CLASS`]) whose `pfifo limit 0` drops
//!   everything, counted, and with an egress limit a pass class ([`PASS_CLASS`]) at its
//!   rate; without one, passing frames take HTB's direct queue (classid `5a4e:0`), which
//!   sends at once and costs no class. u32 filters ([`rules`]) put the guest's own frames in the pass class and
//!   router advertisements, redirects and foreign neighbour advertisements in the sink;
//!   anything else lands in the default class, the sink when spoofing is blocked.
//! - **The ingress limit** is a TBF root qdisc on the tap (traffic into the guest is
//!   redirected to the tap's egress); a macvtap has no qdisc on the way in.
//!
//! Why not `gact drop` and `police` on the tap's ingress filter: this project's kernels
//! have u32 and mirred but neither of those actions (`tc` answers "Failed to load TC
//! action module"), while HTB, TBF and pfifo are there. The classes do the same job and
//! shape rather than police, which TCP takes better.
//!
//! sandnet's root qdiscs carry the handle [`GUARD_HANDLE`] (`5a4e:`, "SN"), which marks
//! them — and every filter and class under them — as sandnet's: detach and the crash
//! sweep delete them by it.

pub mod rules;
mod stats;
pub mod wire;

pub use stats::{guard_counters, link_counters, GuardCounters, LinkCounters};

use crate::error::{HostError, Result};
use netlink_packet_route::tc::{TcAttribute, TcFilterU32Option, TcHandle, TcMessage, TcOption};
use rules::{address_of, address_rules, node_range, Key, Rule, Verdict};
use sandnet_model::{GuestSpoofing, IpNet, MacAddr, TapPolicy};
use sandnet_netlink::Netlink;
use std::collections::BTreeSet;
use std::net::IpAddr;
use wire::Request;

/// The handle of sandnet's root qdiscs (`5a4e:`).
pub const GUARD_HANDLE: u32 = 0x5a4e_0000;
/// The minor of the class frames pass through.
pub const PASS_CLASS: u32 = 1;
/// The minor of the class that drops.
pub const SINK_CLASS: u32 = 2;
/// The handle of the sink class's `pfifo` (`5a4f:`).
pub const SINK_LEAF_HANDLE: u32 = 0x5a4f_0000;

/// One guest NIC as the guard sees it.
#[derive(Debug, Clone, Copy)]
pub struct Nic<'a> {
    /// The pod link's index.
    pub link: u32,
    /// The pod link's name.
    pub link_name: &'a str,
    /// The guest NIC's MAC.
    pub mac: MacAddr,
    /// The guest NIC's addresses.
    pub addresses: &'a [IpNet],
}

impl<'a> Nic<'a> {
    /// The NIC of an endpoint: its link, and the MAC and addresses the guest gets from it.
    pub fn of(e: &'a crate::Endpoint) -> Nic<'a> {
        Nic {
            link: e.index,
            link_name: &e.name,
            mac: e.mac,
            addresses: &e.addresses,
        }
    }
}

/// The requests that put a policy on a pod link's egress, in two parts sent in order: the
/// qdisc and its classes, then the rules.
#[derive(Debug, Default)]
pub struct LinkRequests {
    /// The HTB root qdisc, its classes and the sink's leaf.
    pub setup: Vec<Request>,
    /// The u32 rules.
    pub rules: Vec<Request>,
}

/// Where a policy's passing frames go: the pass class when the egress is limited, else
/// HTB's direct queue.
fn pass_target(policy: &TapPolicy) -> u32 {
    if policy.bandwidth.egress.is_some() {
        GUARD_HANDLE | PASS_CLASS
    } else {
        GUARD_HANDLE
    }
}

/// The requests that put a policy on the pod link's egress (none when it needs nothing
/// there).
pub fn link_requests(nic: &Nic<'_>, policy: &TapPolicy) -> LinkRequests {
    let mut out = LinkRequests::default();
    if !policy.guards_link() {
        return out;
    }
    let block = policy.spoofing == GuestSpoofing::Block;
    let (l, n) = (nic.link, nic.link_name);
    out.setup.push(wire::htb_qdisc(l, n, block));
    if let Some(r) = &policy.bandwidth.egress {
        out.setup.push(wire::htb_class(l, n, PASS_CLASS, Some(r)));
    }
    if block {
        out.setup.push(wire::htb_class(l, n, SINK_CLASS, None));
        out.setup.push(wire::sink_leaf(l, n));
        let pass = pass_target(policy);
        out.rules = rules::all_rules(nic.mac, nic.addresses)
            .iter()
            .map(|r| wire::rule_filter(l, n, r, pass))
            .collect();
    }
    out
}

/// The request that shapes traffic into the guest on its tap, if the policy limits it.
pub fn tap_requests(tap: u32, tap_name: &str, policy: &TapPolicy) -> Vec<Request> {
    policy
        .bandwidth
        .ingress
        .iter()
        .map(|r| wire::tbf_qdisc(tap, tap_name, r))
        .collect()
}

/// Sends requests one at a time, stopping at the first refusal.
pub async fn send(nl: &Netlink, reqs: Vec<Request>) -> Result<()> {
    for (msg, flags, what) in reqs {
        nl.ack(msg, flags, || what).await?;
    }
    Ok(())
}

/// Puts a policy on a NIC's pod link (and its tap's ingress limit) one request at a time
/// (the macvtap model and later updates; tcfilter batches the same requests).
pub async fn apply(
    nl: &Netlink,
    nic: &Nic<'_>,
    tap: Option<(u32, &str)>,
    policy: &TapPolicy,
) -> Result<()> {
    let r = link_requests(nic, policy);
    send(nl, r.setup).await?;
    send(nl, r.rules).await?;
    if let Some((ti, tn)) = tap {
        send(nl, tap_requests(ti, tn, policy)).await?;
    }
    Ok(())
}

/// Whether a qdisc message is one of sandnet's root qdiscs.
pub(crate) fn is_guard_root(q: &TcMessage) -> bool {
    u32::from(q.header.handle) == GUARD_HANDLE && q.header.parent == TcHandle::ROOT
}

/// The indexes of the devices among `qdiscs` (see [`crate::tc::qdiscs`]) that carry
/// sandnet's root qdisc.
pub fn guarded_devices(qdiscs: &[TcMessage]) -> BTreeSet<u32> {
    qdiscs
        .iter()
        .filter(|q| is_guard_root(q))
        .map(|q| q.header.index as u32)
        .collect()
}

/// Removes sandnet's root qdisc of a device; absent (or the device gone) is not an error.
/// Returns whether there was one.
pub async fn remove(nl: &Netlink, index: u32, name: &str) -> Result<bool> {
    let (msg, flags, what) = wire::del_root(index, name);
    match nl.ack(msg, flags, || what).await {
        Ok(()) => Ok(true),
        Err(e) if e.is_not_found() || e.errno() == Some(libc::EINVAL) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// One u32 node of the guard as dumped.
#[derive(Debug, Clone)]
struct Dumped {
    proto: u16,
    handle: u32,
    keys: Vec<Key>,
    class: Option<u32>,
}

/// The guard's u32 nodes on a link (none without a guard).
async fn dump_rules(nl: &Netlink, link: u32) -> Result<Vec<Dumped>> {
    let mut out = vec![];
    for f in crate::tc::filters(nl, link, GUARD_HANDLE).await? {
        let proto = u16::from_be((f.header.info & 0xffff) as u16);
        for a in &f.attributes {
            let TcAttribute::Options(opts) = a else {
                continue;
            };
            let class = opts.iter().find_map(|o| match o {
                TcOption::U32(TcFilterU32Option::ClassId(c)) => Some(u32::from(*c)),
                _ => None,
            });
            for o in opts {
                if let TcOption::U32(TcFilterU32Option::Selector(sel)) = o {
                    out.push(Dumped {
                        proto,
                        class,
                        handle: u32::from(f.header.handle),
                        keys: sel
                            .keys
                            .iter()
                            .map(|k| Key {
                                off: k.off,
                                val: k.val,
                                mask: k.mask,
                            })
                            .collect(),
                    });
                }
            }
        }
    }
    Ok(out)
}

/// Makes the allowed addresses of a guarded link exactly `addrs` (plus the EUI-64
/// link-local): rules for new addresses are added, rules for others removed. Nothing
/// happens on a link without a spoofing guard. Returns how many rules changed.
///
/// The monitor calls it twice around a change of the guest's addresses: with old ∪ new
/// before the guest gets the new ones, with the new ones after it dropped the old.
pub async fn sync_addresses(
    nl: &Netlink,
    link: u32,
    link_name: &str,
    mac: MacAddr,
    addrs: &[IpNet],
) -> Result<usize> {
    let dumped = dump_rules(nl, link).await?;
    if !dumped.iter().any(|d| d.handle & 0xfff != 0) {
        return Ok(0);
    }
    let want: BTreeSet<IpAddr> = rules::allowed_addresses(mac, addrs).into_iter().collect();
    // New rules pass frames where the existing passing rules do (the first fixed rule
    // passes MLD reports).
    let pass = dumped
        .iter()
        .find(|d| d.handle & 0xfff == u32::from(rules::FIRST_FIXED_NODE))
        .and_then(|d| d.class)
        .unwrap_or(GUARD_HANDLE);
    let mut reqs = vec![];
    // Existing address rules: (proto, advert?, address) → handle.
    let mut have = vec![];
    for d in &dumped {
        let node = (d.handle & 0xfff) as u16;
        if let Some(a) = address_of(d.proto, node, &d.keys) {
            let advert = node < rules::FIRST_ADDRESS_NODE;
            have.push((d.proto, advert, a, node, d.handle));
        }
    }
    for a in &want {
        for r in address_rules(mac, *a) {
            if have
                .iter()
                .any(|h| h.0 == r.proto && h.1 == r.advert && h.2 == *a)
            {
                continue;
            }
            let taken: BTreeSet<u16> =
                dumped
                    .iter()
                    .filter(|d| d.proto == r.proto)
                    .map(|d| (d.handle & 0xfff) as u16)
                    .chain(reqs.iter().filter_map(|(p, n, _): &(u16, u16, Request)| {
                        (*p == r.proto).then_some(*n)
                    }))
                    .collect();
            let Some(node) = node_range(&r).find(|n| !taken.contains(n)) else {
                return Err(HostError::InvalidArgument(format!(
                    "too many addresses on {link_name} for the guard's rules"
                )));
            };
            let rule = Rule {
                proto: r.proto,
                node,
                keys: r.keys,
                verdict: Verdict::Pass,
            };
            reqs.push((
                r.proto,
                node,
                wire::rule_filter(link, link_name, &rule, pass),
            ));
        }
    }
    let mut n = reqs.len();
    send(nl, reqs.into_iter().map(|(_, _, r)| r).collect()).await?;
    for (proto, _, a, _, handle) in have {
        if !want.contains(&a) {
            let (msg, flags, what) = wire::del_rule(link, link_name, proto, handle);
            match nl.ack(msg, flags, || what).await {
                Err(e) if !e.is_not_found() => return Err(e.into()),
                _ => n += 1,
            }
        }
    }
    Ok(n)
}
