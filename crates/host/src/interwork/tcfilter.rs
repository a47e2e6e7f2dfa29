//! Model `tcfilter` (the default): a tap `sntap<ifindex>` next to the link, an ingress
//! qdisc on both and a u32 match-all filter with `mirred egress redirect` each way.
//!
//! Attach does all of it on the one trip into the namespace that creates the taps: the
//! five netlink requests of every endpoint go to the kernel in one batch, their answers are
//! read afterwards (no round trip per request, no async machinery per endpoint).

use super::{
    AttachCx, AttachedEndpoint, DetachReport, Interworking, OpenedTap, PlannedEndpoint, PreOpened,
    UndoStage, LINK_GROUP,
};
use crate::endpoint::{Endpoint, ALIAS_PREFIX};
use crate::error::{HostError, Result};
use crate::guard::{self, wire::Request};
use crate::netns::NetNs;
use crate::{tap, tc};
use futures::future::BoxFuture;
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
use sandnet_model::{InterworkingModel, TapPolicy};
use sandnet_netlink::{open_route_socket, Netlink, NetlinkError, RequestBatch};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

/// The `tcfilter` model.
pub struct TcFilter;

impl Interworking for TcFilter {
    fn model(&self) -> InterworkingModel {
        InterworkingModel::TcFilter
    }

    fn tap_name(&self, endpoint: &Endpoint) -> String {
        format!("sntap{}", endpoint.index)
    }

    /// Notes which links have no ingress qdisc yet: those sandnet adds and later removes.
    fn plan<'a>(
        &'a self,
        nl: &'a Netlink,
        plan: &'a mut [PlannedEndpoint],
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let with_ingress = tc::ingress_qdisc_indexes(nl).await?;
            for p in plan {
                p.created_qdisc = !with_ingress.contains(&p.endpoint.index);
            }
            Ok(())
        })
    }

    /// Opens and connects every tap in one trip into the namespace (see [`connect_all`]).
    fn open_in_netns(
        &self,
        ns: &NetNs,
        plan: &[PlannedEndpoint],
        queues: u16,
        policy: &TapPolicy,
    ) -> Result<Vec<PreOpened>> {
        let to = tap::TapOptions {
            queues,
            vnet_hdr: true,
        };
        ns.run(|| connect_all(plan, to, policy))?
    }

    fn attach_one<'a>(
        &'a self,
        _cx: &'a AttachCx<'a>,
        p: &'a PlannedEndpoint,
        pre: PreOpened,
    ) -> BoxFuture<'a, Result<AttachedEndpoint>> {
        Box::pin(async move {
            let t = match pre {
                Some(r) => r?,
                None => return Err(HostError::InvalidArgument("no tap fds".into())),
            };
            Ok(AttachedEndpoint {
                guest_mac: p.endpoint.mac,
                endpoint: p.endpoint.clone(),
                model: InterworkingModel::TcFilter,
                tap: Some(p.tap_name.clone()),
                tap_index: Some(t.index),
                device: None,
                fds: t.fds,
            })
        })
    }

    fn undo_one<'a>(
        &'a self,
        nl: &'a Netlink,
        p: &'a PlannedEndpoint,
        stage: UndoStage,
        report: &'a mut DetachReport,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            match stage {
                UndoStage::LinksPresent => undo_tc_on_link(nl, p, report).await,
                UndoStage::LinksDeleted => Ok(()),
            }
        })
    }
}

/// What connecting one endpoint takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The ingress qdisc on the tap.
    TapQdisc,
    /// The ingress qdisc on the pod's link (there already is fine).
    LinkQdisc,
    /// The filter tap → link.
    TapToLink,
    /// The filter link → tap.
    LinkToTap,
    /// Mark the tap (alias, group), give it the link's MTU, bring it up.
    Tap,
}

/// The guard's requests (see [`crate::guard`]) of one endpoint, in three parts sent at
/// different points of the batch: the pod link's root qdisc and classes (with the other
/// grafts on the link), its rules (with the other filters), and the tap's shaper (while
/// the tap is still down).
struct GuardParts {
    setup: Vec<Request>,
    rules: Vec<Request>,
    tap: Vec<Request>,
}

impl GuardParts {
    fn new(p: &PlannedEndpoint, ti: u32, policy: &TapPolicy) -> GuardParts {
        let e = &p.endpoint;
        let guard::LinkRequests { setup, rules } = guard::link_requests(&guard::Nic::of(e), policy);
        GuardParts {
            setup,
            rules,
            tap: guard::tap_requests(ti, &p.tap_name, policy),
        }
    }
}

/// The steps in the order the batch sends them, each for every endpoint before the next.
/// The order is what makes it cheap: grafting an ingress qdisc on a device that is up
/// deactivates and reactivates the device, which waits for an RCU grace period, so the
/// taps get theirs while they are still down (only the pod's links, up already, pay);
/// and a filter waits for a grace period after its qdisc was made unless one has passed,
/// which the links' qdiscs in between provide.
const STEPS: [Step; 5] = [
    Step::TapQdisc,
    Step::LinkQdisc,
    Step::TapToLink,
    Step::LinkToTap,
    Step::Tap,
];

impl Step {
    fn push(self, b: &mut RequestBatch, p: &PlannedEndpoint, ti: u32) -> usize {
        let e = &p.endpoint;
        let name = p.tap_name.as_str();
        match self {
            Step::Tap => {
                let mut m = LinkMessage::default();
                m.header.index = ti;
                m.header.flags = LinkFlags::Up;
                m.header.change_mask = LinkFlags::Up;
                m.attributes = vec![
                    LinkAttribute::IfAlias(format!("{ALIAS_PREFIX}tcfilter:{}", e.index)),
                    LinkAttribute::Mtu(e.mtu),
                    LinkAttribute::Group(LINK_GROUP),
                ];
                b.push(
                    RouteNetlinkMessage::SetLink(m),
                    0,
                    format!("configure tap {name}"),
                )
            }
            Step::LinkQdisc => tc::push_ingress_qdisc(b, e.index, &e.name),
            Step::TapQdisc => tc::push_ingress_qdisc(b, ti, name),
            Step::LinkToTap => tc::push_redirect(b, e.index, ti, &e.name, name),
            Step::TapToLink => tc::push_redirect(b, ti, e.index, name, &e.name),
        }
    }

    fn is_qdisc(self) -> bool {
        matches!(self, Step::LinkQdisc | Step::TapQdisc)
    }

    /// Whether the kernel's answer means the step is done (an ingress qdisc that was there
    /// already is: the plan knows whether sandnet made it).
    fn done(self, r: &sandnet_netlink::Result<()>) -> bool {
        match r {
            Ok(()) => true,
            Err(e) => self.is_qdisc() && e.is_exists(),
        }
    }

    fn busy(self, r: &sandnet_netlink::Result<()>) -> bool {
        self.is_qdisc() && matches!(r, Err(e) if e.errno() == Some(libc::EBUSY))
    }
}

/// Runs inside the namespace: creates every tap (`TUNSETIFF`), then sends every netlink
/// request of every endpoint in one batch (see [`RequestBatch`] and [`STEPS`]), then makes
/// the taps that are fully connected persistent — a tap is marked before it is made
/// persistent, since until then it vanishes with its fds. One result per endpoint; the
/// outer error is the netlink socket's own failure.
fn connect_all(
    plan: &[PlannedEndpoint],
    to: tap::TapOptions,
    policy: &TapPolicy,
) -> Result<Vec<PreOpened>> {
    let sock = open_route_socket().map_err(|source| NetlinkError::Io {
        what: "open socket".into(),
        source,
    })?;
    let taps: Vec<Result<(Vec<OwnedFd>, u32)>> = plan
        .iter()
        .map(|p| {
            let fds = tap::open_tap(&p.tap_name, to)?;
            let ti = tap::ifindex(sock.as_fd(), &p.tap_name)?;
            Ok((fds, ti))
        })
        .collect();
    let mut batch = RequestBatch::new();
    let mut slots: Vec<Vec<usize>> = vec![Vec::with_capacity(STEPS.len()); plan.len()];
    let mut guards: Vec<Option<GuardParts>> = plan
        .iter()
        .zip(&taps)
        .map(|(p, t)| {
            t.as_ref()
                .ok()
                .map(|(_, ti)| GuardParts::new(p, *ti, policy))
        })
        .collect();
    let mut guard_slots: Vec<Vec<usize>> = vec![vec![]; plan.len()];
    let mut push_guard = |batch: &mut RequestBatch, part: fn(&mut GuardParts) -> Vec<Request>| {
        for (g, slot) in guards.iter_mut().zip(&mut guard_slots) {
            if let Some(g) = g {
                for (msg, flags, what) in part(g) {
                    slot.push(batch.push(msg, flags, what));
                }
            }
        }
    };
    for s in STEPS {
        if s == Step::Tap {
            push_guard(&mut batch, |g| std::mem::take(&mut g.tap));
        }
        for ((p, t), slot) in plan.iter().zip(&taps).zip(&mut slots) {
            if let Ok((_, ti)) = t {
                slot.push(s.push(&mut batch, p, *ti));
            }
        }
        match s {
            Step::LinkQdisc => push_guard(&mut batch, |g| std::mem::take(&mut g.setup)),
            Step::LinkToTap => push_guard(&mut batch, |g| std::mem::take(&mut g.rules)),
            _ => {}
        }
    }
    let mut answers: Vec<Option<sandnet_netlink::Result<()>>> =
        batch.send(sock.as_fd())?.into_iter().map(Some).collect();
    let out = plan
        .iter()
        .zip(taps)
        .zip(slots)
        .zip(guard_slots)
        .map(|(((p, t), slots), guard_slots)| {
            let (fds, ti) = t?;
            let rs = slots
                .iter()
                .map(|&i| answers.get_mut(i).and_then(Option::take))
                .map(|r| r.unwrap_or(Ok(())))
                .collect();
            finish_steps(sock.as_fd(), p, ti, rs)?;
            // The guard's requests have no retries: a refusal is the endpoint's failure.
            for i in guard_slots {
                answers
                    .get_mut(i)
                    .and_then(Option::take)
                    .unwrap_or(Ok(()))?;
            }
            tap::set_persist(&fds[0], &p.tap_name, true)?;
            Ok(OpenedTap { fds, index: ti })
        })
        .map(Some)
        .collect();
    Ok(out)
}

/// Checks one endpoint's answers. An ingress qdisc the kernel was too busy to add (`EBUSY`,
/// retried as Kata does) is asked again, and so is each later step that failed, one at a
/// time (a filter fails without its qdisc); any other failure is the endpoint's error.
fn finish_steps(
    sock: BorrowedFd<'_>,
    p: &PlannedEndpoint,
    ti: u32,
    rs: Vec<sandnet_netlink::Result<()>>,
) -> Result<()> {
    let Some(k) = STEPS.iter().zip(&rs).position(|(s, r)| !s.done(r)) else {
        return Ok(());
    };
    let mut rs = rs;
    if !STEPS[k].busy(&rs[k]) {
        return rs.swap_remove(k).map_err(Into::into);
    }
    for (step, r) in STEPS.iter().zip(rs).skip(k) {
        if step.done(&r) {
            continue;
        }
        let mut tries = 0;
        loop {
            let mut b = RequestBatch::new();
            step.push(&mut b, p, ti);
            let r = b.send(sock)?.pop().unwrap_or(Ok(()));
            if step.done(&r) {
                break;
            }
            if step.busy(&r) && tries < 5 {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            return r.map_err(Into::into);
        }
    }
    Ok(())
}

/// Pod side: the ingress qdisc if sandnet made it and nobody else uses it, otherwise just
/// sandnet's filters.
async fn undo_tc_on_link(
    nl: &Netlink,
    p: &PlannedEndpoint,
    report: &mut DetachReport,
) -> Result<()> {
    let e = &p.endpoint;
    let f = tc::ingress_summary(nl, e.index).await?;
    if p.created_qdisc && f.others == 0 {
        // Even without our filter: attach may have died between the qdisc and the filter.
        tc::del_ingress_qdisc(nl, e.index, &e.name).await?;
        if !f.ours.is_empty() {
            report
                .actions
                .push(format!("removed ingress qdisc and redirect on {}", e.name));
        }
        return Ok(());
    }
    for x in &f.ours {
        tc::del_filter(nl, x).await?;
        report
            .actions
            .push(format!("removed redirect filter on {}", e.name));
    }
    Ok(())
}
