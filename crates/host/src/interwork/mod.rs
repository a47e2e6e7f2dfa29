//! Interworking: how each endpoint is connected to something a VMM can open.
//!
//! Each model lives in its own file behind the [`Interworking`] trait — what it does to
//! attach one endpoint, to undo that, and how it names its tap:
//!
//! - [`tcfilter`] (the default): a tap next to the link, an ingress qdisc on both and a u32
//!   match-all filter with `mirred egress redirect` each way.
//! - [`macvtap`]: a bridge-mode macvtap on the link, which takes the link's MAC (the link
//!   gets a new locally-administered one) and its addresses (removed from the link,
//!   restored on detach, with the routes the kernel drops with them).
//! - [`none`]: nothing is connected.
//!
//! The model itself is [`InterworkingModel`] (in `sandnet-model`, read by the configuration
//! too; its serde form is what the state file stores); [`driver`] is the one place that
//! maps it to its implementation. The trait is used as `&'static dyn Interworking`, so its
//! async methods return boxed futures ([`BoxFuture`]): `async fn` in a trait cannot be
//! called through a trait object, and one allocation per endpoint is nothing next to the
//! netlink round trips behind it.
//!
//! This module holds what every model shares: plan-then-act (attach first writes a plan of
//! everything it will create or change, see [`state`], then does the work, so that
//! [`detach`] can undo exactly that — also after a crash half-way), the concurrent attach of
//! all endpoints with rollback, and the sweep of anything carrying sandnet's marks: links
//! the alias [`ALIAS_PREFIX`]`…`, filters the action cookie [`crate::tc::COOKIE`].

pub mod macvtap;
pub mod none;
mod single;
pub mod state;
mod sweep;
pub mod tcfilter;
mod timings;

pub use single::{attach_link, attached_endpoints, detach_link};
pub use state::{forget_state, load_state, parse_state, AttachState, PlannedEndpoint};
pub use timings::AttachTimings;

use crate::endpoint::{endpoints, is_sandnet_alias, Endpoint};
use crate::error::{HostError, Result};
use crate::netns::{NetNs, NetNsId};
use futures::future::BoxFuture;
use sandnet_model::{InterworkingModel, MacAddr, TapPolicy};
use sandnet_netlink::{link_detail, scan_detail, LinkDetail, Netlink, ScanResult};
use serde::Serialize;
use state::{lock_state, remove_state, save_state, state_path};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use timings::Lap;

/// Where attach state lives by default.
pub const DEFAULT_STATE_DIR: &str = "/run/sandnet/attach";

/// The link group sandnet puts its taps and macvtaps in (`"snet"`), so that detach can
/// delete them all with one request (one unregister instead of one per link).
pub const LINK_GROUP: u32 = 0x736e_6574;

/// Upper bound on queues per endpoint (virtio-net's own limit is far higher; this keeps a
/// typo from opening thousands of fds).
pub const MAX_QUEUES: u16 = 64;

/// How to attach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachOptions {
    /// The interworking model.
    pub model: InterworkingModel,
    /// Queues per endpoint (one fd each).
    pub queues: u16,
    /// Where the attach state is kept.
    pub state_dir: PathBuf,
    /// What the host enforces on each NIC (anti-spoofing, rate limits; see [`crate::guard`]).
    pub policy: TapPolicy,
}

impl Default for AttachOptions {
    fn default() -> Self {
        AttachOptions {
            model: InterworkingModel::TcFilter,
            queues: 1,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            policy: TapPolicy::default(),
        }
    }
}

/// One connected endpoint, with the fds a VMM needs.
#[derive(Debug, Serialize)]
pub struct AttachedEndpoint {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// The model it was connected with.
    pub model: InterworkingModel,
    /// The tap's (or macvtap's) interface name; `None` for model `none`.
    pub tap: Option<String>,
    /// The tap's interface index.
    pub tap_index: Option<u32>,
    /// macvtap: the character device the fds were opened from.
    pub device: Option<PathBuf>,
    /// The MAC the guest NIC must get (the link's original one).
    pub guest_mac: MacAddr,
    /// One open fd per queue (tap fds or macvtap device fds).
    #[serde(skip)]
    pub fds: Vec<OwnedFd>,
}

/// What a detach did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct DetachReport {
    /// Whether there was anything of sandnet's in the namespace at all.
    pub nothing_attached: bool,
    /// What was removed or restored, one line each.
    pub actions: Vec<String>,
}

/// What attaching one endpoint needs besides its plan.
pub struct AttachCx<'a> {
    /// The pod namespace.
    pub ns: &'a NetNs,
    /// A netlink client in it.
    pub nl: &'a Netlink,
    /// The caller's options.
    pub opts: &'a AttachOptions,
    /// The namespace's identity.
    pub id: NetNsId,
}

/// When an undo step runs: while sandnet's links still exist, or after they are deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UndoStage {
    /// Before sandnet's taps and macvtaps are deleted (tcfilter removes its filters here).
    LinksPresent,
    /// After they are deleted (macvtap gives the link back its MAC and addresses here).
    LinksDeleted,
}

/// A tap made on the trip into the namespace that precedes attaching (see
/// [`Interworking::open_in_netns`]).
#[derive(Debug)]
pub struct OpenedTap {
    /// One open fd per queue.
    pub fds: Vec<OwnedFd>,
    /// The tap's interface index.
    pub index: u32,
}

/// What [`Interworking::open_in_netns`] did for one endpoint: nothing, or a tap (or why not).
pub type PreOpened = Option<Result<OpenedTap>>;

/// What one interworking model does.
pub trait Interworking: Send + Sync {
    /// Which model this is.
    fn model(&self) -> InterworkingModel;

    /// Whether the model creates anything (and so keeps attach state); `none` does not.
    fn connects(&self) -> bool {
        true
    }

    /// The name of the tap (or macvtap) this model makes for an endpoint.
    fn tap_name(&self, endpoint: &Endpoint) -> String;

    /// Looks at the namespace once and fills this model's part of every endpoint's plan.
    fn plan<'a>(
        &'a self,
        _nl: &'a Netlink,
        _plan: &'a mut [PlannedEndpoint],
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    /// Work for all endpoints done on one thread inside the namespace before they are
    /// attached concurrently (tcfilter opens and connects its taps there); one entry per
    /// endpoint. An error here is rolled back like a failed endpoint.
    fn open_in_netns(
        &self,
        _ns: &NetNs,
        plan: &[PlannedEndpoint],
        _queues: u16,
        _policy: &TapPolicy,
    ) -> Result<Vec<PreOpened>> {
        Ok(plan.iter().map(|_| None).collect())
    }

    /// Connects one planned endpoint.
    fn attach_one<'a>(
        &'a self,
        cx: &'a AttachCx<'a>,
        p: &'a PlannedEndpoint,
        pre: PreOpened,
    ) -> BoxFuture<'a, Result<AttachedEndpoint>>;

    /// Undoes this model's own changes for one endpoint at one stage of detach (links
    /// marked as sandnet's are deleted by the shared sweep between the two stages).
    fn undo_one<'a>(
        &'a self,
        nl: &'a Netlink,
        p: &'a PlannedEndpoint,
        stage: UndoStage,
        report: &'a mut DetachReport,
    ) -> BoxFuture<'a, Result<()>>;
}

/// The implementation of a model: the one place the enum is matched.
pub fn driver(model: InterworkingModel) -> &'static dyn Interworking {
    match model {
        InterworkingModel::TcFilter => &tcfilter::TcFilter,
        InterworkingModel::Macvtap => &macvtap::Macvtap,
        InterworkingModel::None => &none::NoInterworking,
    }
}

impl AttachedEndpoint {
    /// An endpoint with nothing connected to it.
    pub fn unconnected(endpoint: Endpoint, model: InterworkingModel) -> AttachedEndpoint {
        AttachedEndpoint {
            guest_mac: endpoint.mac,
            endpoint,
            model,
            tap: None,
            tap_index: None,
            device: None,
            fds: vec![],
        }
    }
}

/// Refuses a queue count outside `1..=MAX_QUEUES`.
fn check_queues(queues: u16) -> Result<()> {
    if queues == 0 || queues > MAX_QUEUES {
        return Err(HostError::InvalidArgument(format!(
            "queues must be between 1 and {MAX_QUEUES}, not {queues}"
        )));
    }
    Ok(())
}

/// An endpoint's plan before the model fills its part: its tap's name (refused when a
/// link of that name exists) and the routes through it.
fn plan_endpoint(
    model: &dyn Interworking,
    scan: &ScanResult,
    e: Endpoint,
) -> Result<PlannedEndpoint> {
    let tap_name = model.tap_name(&e);
    if let Some(other) = scan.link_by_name(&tap_name) {
        return Err(HostError::InvalidArgument(format!(
            "cannot create {tap_name} for {}: a {} link of that name already exists",
            e.name, other.interface.kind
        )));
    }
    Ok(PlannedEndpoint {
        routes: scan.routes_via(&e.name),
        tap_name,
        created_qdisc: false,
        link_mac_during: None,
        endpoint: e,
    })
}

/// The error to report for an endpoint whose attach failed: that its link is gone, when
/// it is (the caller's scan was stale), else the failure itself.
async fn attach_error(nl: &Netlink, p: &PlannedEndpoint, e: HostError) -> HostError {
    match nl.link_by_index(p.endpoint.index).await {
        Ok(None) => HostError::LinkNotFound(p.endpoint.name.clone()),
        _ => e,
    }
}

/// Whether a link is sandnet's: marked with its alias, or (given its plan) the planned
/// macvtap on its link wearing the link's original MAC — unmarked only if attach died
/// between creating and marking it.
fn is_sandnet_link(d: &LinkDetail, p: Option<&PlannedEndpoint>) -> bool {
    is_sandnet_alias(d.alias.as_deref())
        || p.is_some_and(|p| {
            d.interface.name == p.tap_name
                && d.interface.kind == sandnet_model::LinkKind::Macvtap
                && d.parent == Some(p.endpoint.index)
                && d.interface.mac == Some(p.endpoint.mac)
        })
}

/// Attaches every endpoint of a namespace with the given model. Returns the endpoints with
/// their open fds; taps are persistent, so a VMM may also open them by name later.
pub async fn attach(ns: &NetNs, opts: &AttachOptions) -> Result<Vec<AttachedEndpoint>> {
    Ok(attach_timed(ns, opts).await?.0)
}

/// [`attach`], also saying where the time went.
pub async fn attach_timed(
    ns: &NetNs,
    opts: &AttachOptions,
) -> Result<(Vec<AttachedEndpoint>, AttachTimings)> {
    let mut t = AttachTimings::default();
    let mut lap = Lap::start();
    let nl = ns.netlink()?;
    t.netlink_us = lap.lap();
    let scan = scan_detail(&nl).await?;
    t.scan_us = lap.lap();
    // The scan was just made: its links are the live namespace's.
    let eps = attach_inner(ns, &nl, &scan, true, opts, &mut t, lap).await?;
    Ok((eps, t))
}

/// Like [`attach`], from a scan the caller already has (which may be stale: a link gone
/// since is reported as [`HostError::LinkNotFound`] and everything is rolled back).
pub async fn attach_scanned(
    ns: &NetNs,
    nl: &Netlink,
    scan: &ScanResult,
    opts: &AttachOptions,
) -> Result<Vec<AttachedEndpoint>> {
    let mut t = AttachTimings::default();
    attach_inner(ns, nl, scan, false, opts, &mut t, Lap::start()).await
}

/// The attach itself. `fresh`: the scan was made just now, so it tells whether sandnet's
/// links are there; otherwise the live namespace is asked.
async fn attach_inner(
    ns: &NetNs,
    nl: &Netlink,
    scan: &ScanResult,
    fresh: bool,
    opts: &AttachOptions,
    t: &mut AttachTimings,
    mut lap: Lap,
) -> Result<Vec<AttachedEndpoint>> {
    check_queues(opts.queues)?;
    let id = ns.id()?;
    let eps = endpoints(scan);
    let model = driver(opts.model);
    if !model.connects() {
        return Ok(eps
            .into_iter()
            .map(|e| AttachedEndpoint::unconnected(e, opts.model))
            .collect());
    }
    let _lock = lock_state(&opts.state_dir)?;
    if load_state(&opts.state_dir, id)?.is_some() {
        return Err(HostError::AlreadyAttached {
            ns: ns.display(),
            detail: format!("state in {}", state_path(&opts.state_dir, id).display()),
        });
    }
    let live;
    let links: &[LinkDetail] = if fresh {
        &scan.links
    } else {
        live = nl
            .links()
            .await?
            .iter()
            .map(link_detail)
            .collect::<Vec<_>>();
        &live
    };
    if let Some(d) = links.iter().find(|d| is_sandnet_link(d, None)) {
        return Err(HostError::AlreadyAttached {
            ns: ns.display(),
            detail: format!("link {} carries sandnet's mark", d.interface.name),
        });
    }
    t.checks_us = lap.lap();

    let mut plan = eps
        .into_iter()
        .map(|e| plan_endpoint(model, scan, e))
        .collect::<Result<Vec<_>>>()?;
    model.plan(nl, &mut plan).await?;
    t.plan_us = lap.lap();
    let mut state = AttachState::new(ns, id, opts, plan);
    save_state(&opts.state_dir, &state, true)?;
    t.plan_write_us = lap.lap();

    // Whatever must happen inside the namespace happens in one trip (tcfilter connects its
    // taps there); then every endpoint is finished concurrently (the kernel serialises
    // under RTNL, but the round trips overlap).
    let pre = model.open_in_netns(ns, &state.endpoints, opts.queues, &opts.policy);
    t.connect_us = lap.lap();
    let results = match pre {
        Ok(pre) => {
            let cx = AttachCx { ns, nl, opts, id };
            futures::future::join_all(
                state
                    .endpoints
                    .iter()
                    .zip(pre)
                    .map(|(p, pre)| model.attach_one(&cx, p, pre)),
            )
            .await
        }
        // Nothing is known of any endpoint: the first one reports it, all are undone.
        Err(e) => std::iter::once(Err(e)).collect(),
    };
    let mut attached = Vec::with_capacity(results.len());
    let mut failure = None;
    for (p, r) in state.endpoints.iter().zip(results) {
        match r {
            Ok(a) => attached.push(a),
            Err(e) if failure.is_none() => failure = Some((p, e)),
            Err(_) => {}
        }
    }
    if let Some((p, e)) = failure {
        drop(attached);
        let e = attach_error(nl, p, e).await;
        let mut report = DetachReport::default();
        let undo_errors = undo(nl, &state, &opts.state_dir, &mut report).await;
        if undo_errors.is_empty() {
            remove_state(&opts.state_dir, id)?;
        } else {
            tracing::error!(
                "rollback after a failed attach left work undone (state kept for detach): {}",
                HostError::Multiple(undo_errors)
            );
        }
        return Err(e);
    }
    state.complete = true;
    save_state(&opts.state_dir, &state, false)?;
    t.finish_us = lap.lap();
    Ok(attached)
}

/// Removes the guard (see [`crate::guard`]) from an endpoint's pod link, if it has one.
async fn undo_guard(nl: &Netlink, p: &PlannedEndpoint, report: &mut DetachReport) -> Result<()> {
    let e = &p.endpoint;
    if crate::guard::remove(nl, e.index, &e.name).await? {
        report
            .actions
            .push(format!("removed the guard (root qdisc) on {}", e.name));
    }
    Ok(())
}

/// Undoes an attachment from its plan, then sweeps anything else carrying sandnet's marks.
/// Every step runs even when an earlier one failed; the failures are returned.
async fn undo(
    nl: &Netlink,
    st: &AttachState,
    state_dir: &Path,
    report: &mut DetachReport,
) -> Vec<HostError> {
    let model = driver(st.model);
    let mut errors = Vec::new();
    // Endpoints whose link was deleted meanwhile have nothing left on the link to undo.
    let mut present = Vec::with_capacity(st.endpoints.len());
    for p in &st.endpoints {
        present.push(single::link_still_there(nl, p).await.unwrap_or(true));
    }
    for (p, _) in st.endpoints.iter().zip(&present).rev().filter(|(_, &t)| t) {
        if let Err(e) = undo_guard(nl, p, report).await {
            errors.push(e);
        }
        if let Err(e) = model.undo_one(nl, p, UndoStage::LinksPresent, report).await {
            errors.push(e);
        }
    }
    if let Err(e) = sweep::delete_our_links(nl, Some(st), report).await {
        errors.push(e);
    }
    for (p, _) in st.endpoints.iter().zip(&present).rev().filter(|(_, &t)| t) {
        if let Err(e) = model.undo_one(nl, p, UndoStage::LinksDeleted, report).await {
            errors.push(e);
        }
    }
    if let Err(e) = sweep::sweep_tc(nl, report).await {
        errors.push(e);
    }
    let d = state::dev_dir(state_dir, st.netns_id);
    if d.exists() {
        match std::fs::remove_dir_all(&d) {
            Ok(()) => report.actions.push(format!("removed {}", d.display())),
            Err(e) => errors.push(state::state_err(&d)(e)),
        }
    }
    errors
}

/// Undoes what attach did in a namespace: from the persisted plan when there is one, and in
/// any case everything carrying sandnet's marks. Idempotent; when nothing was attached the
/// report says so. On failure the state is kept, so detach can be run again.
pub async fn detach(ns: &NetNs, state_dir: &Path) -> Result<DetachReport> {
    let nl = ns.netlink()?;
    let id = ns.id()?;
    let _lock = lock_state(state_dir)?;
    let st = load_state(state_dir, id)?;
    let mut report = DetachReport::default();
    let errors = match &st {
        Some(st) => undo(&nl, st, state_dir, &mut report).await,
        None => {
            let mut errors = vec![];
            if let Err(e) = sweep::delete_our_links(&nl, None, &mut report).await {
                errors.push(e);
            }
            if let Err(e) = sweep::sweep_tc(&nl, &mut report).await {
                errors.push(e);
            }
            errors
        }
    };
    if !errors.is_empty() {
        return Err(HostError::Multiple(errors));
    }
    remove_state(state_dir, id)?;
    state::remove_stale_tmp(state_dir);
    report.nothing_attached = st.is_none() && report.actions.is_empty();
    Ok(report)
}
