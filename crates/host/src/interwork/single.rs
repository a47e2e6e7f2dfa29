//! One endpoint at a time, for hot plug: connect one more link of a namespace that may be
//! attached already, or undo one endpoint and leave the others alone.
//!
//! The endpoint joins the namespace's persisted plan (see [`super::state`]) *before* anything
//! is created, so a whole-namespace [`super::detach`] — also after a crash half-way — undoes
//! it with the rest.

use super::state::{lock_state, remove_state, save_state};
use super::{
    attach_error, check_queues, driver, is_sandnet_link, load_state, plan_endpoint, undo_guard,
    AttachCx, AttachOptions, AttachState, AttachedEndpoint, DetachReport, PlannedEndpoint,
    UndoStage,
};
use crate::endpoint::classify;
use crate::error::{HostError, Result};
use crate::netns::NetNs;
use sandnet_netlink::{link_detail, Netlink, ScanResult};
use std::path::Path;

/// Connects the link `name` of `ns` with `opts.model`, adding it to the namespace's plan
/// (which is created when the namespace has none). `nl` is a netlink client in `ns` and
/// `scan` the caller's scan of it (a link gone since is reported as
/// [`HostError::LinkNotFound`]). The link must be an endpoint (see
/// [`crate::endpoint::classify`]) and not attached yet; a namespace attached with another
/// model is refused. On failure what was done for this endpoint is undone and the plan is
/// as before.
pub async fn attach_link(
    ns: &NetNs,
    nl: &Netlink,
    scan: &ScanResult,
    opts: &AttachOptions,
    name: &str,
) -> Result<AttachedEndpoint> {
    check_queues(opts.queues)?;
    let model = driver(opts.model);
    if !model.connects() {
        return Err(HostError::InvalidArgument(format!(
            "model {} connects nothing: link {name:?} cannot be plugged",
            opts.model
        )));
    }
    let id = ns.id()?;
    let _lock = lock_state(&opts.state_dir)?;
    let d = scan
        .link_by_name(name)
        .ok_or_else(|| HostError::LinkNotFound(name.to_string()))?;
    let e = classify(d).map_err(|why| HostError::NotAnEndpoint {
        name: name.to_string(),
        why: why.to_string(),
    })?;
    let mut state = match load_state(&opts.state_dir, id)? {
        Some(st) => {
            if st.model != opts.model {
                return Err(HostError::InvalidArgument(format!(
                    "network namespace {} is attached with model {}, not {}",
                    ns.display(),
                    st.model,
                    opts.model
                )));
            }
            st
        }
        None => AttachState {
            // Each plug completes on its own: the plan is whole between plugs.
            complete: true,
            ..AttachState::new(ns, id, opts, vec![])
        },
    };
    if state
        .endpoints
        .iter()
        .any(|p| p.endpoint.index == e.index || p.endpoint.name == e.name)
    {
        return Err(HostError::LinkAttached(name.to_string()));
    }
    let mut planned = [plan_endpoint(model, scan, e)?];
    model.plan(nl, &mut planned).await?;
    let [p] = planned;
    state.endpoints.push(p.clone());
    save_state(&opts.state_dir, &state, true)?;

    // A namespace attached before keeps the policy it was attached with.
    let opts = &AttachOptions {
        policy: state.policy,
        ..opts.clone()
    };
    let pre = model
        .open_in_netns(ns, std::slice::from_ref(&p), opts.queues, &opts.policy)?
        .pop()
        .flatten();
    let cx = AttachCx { ns, nl, opts, id };
    match model.attach_one(&cx, &p, pre).await {
        Ok(a) => Ok(a),
        Err(e) => {
            let e = attach_error(nl, &p, e).await;
            let mut report = DetachReport::default();
            match undo_endpoint(nl, opts.model, &p, &mut report).await {
                Ok(()) => {
                    state
                        .endpoints
                        .retain(|q| q.endpoint.index != p.endpoint.index);
                    save_or_remove(&opts.state_dir, &state)?;
                }
                Err(u) => tracing::error!(
                    "rollback of {} after a failed plug left work undone (kept in the plan): {u}",
                    p.endpoint.name
                ),
            }
            Err(e)
        }
    }
}

/// Undoes the endpoint of link `name` (matched by the name it had when attached) and drops
/// it from the plan; the other endpoints stay. The link itself may be gone already (its
/// filters or macvtap went with it; the tap is still deleted). On failure the endpoint stays
/// in the plan, so a retry or a whole detach finishes the job.
pub async fn detach_link(
    ns: &NetNs,
    nl: &Netlink,
    state_dir: &Path,
    name: &str,
) -> Result<DetachReport> {
    let id = ns.id()?;
    let _lock = lock_state(state_dir)?;
    let mut state =
        load_state(state_dir, id)?.ok_or_else(|| HostError::LinkNotAttached(name.to_string()))?;
    let p = state
        .endpoints
        .iter()
        .find(|p| p.endpoint.name == name)
        .cloned()
        .ok_or_else(|| HostError::LinkNotAttached(name.to_string()))?;
    let mut report = DetachReport::default();
    undo_endpoint(nl, state.model, &p, &mut report).await?;
    state
        .endpoints
        .retain(|q| q.endpoint.index != p.endpoint.index);
    save_or_remove(state_dir, &state)?;
    Ok(report)
}

/// The plans of a namespace's attached endpoints (empty when nothing is attached).
pub fn attached_endpoints(ns: &NetNs, state_dir: &Path) -> Result<Vec<PlannedEndpoint>> {
    Ok(load_state(state_dir, ns.id()?)?
        .map(|s| s.endpoints)
        .unwrap_or_default())
}

/// Whether the endpoint's link is still the one attached (same index and name): a link
/// deleted since took its filters, qdisc or macvtap with it, and nothing is to be undone
/// on it.
pub(super) async fn link_still_there(nl: &Netlink, p: &PlannedEndpoint) -> Result<bool> {
    Ok(match nl.link_by_index(p.endpoint.index).await? {
        Some(l) => link_detail(&l).interface.name == p.endpoint.name,
        None => false,
    })
}

/// Keeps a plan with endpoints; removes one without any (nothing is left to undo).
fn save_or_remove(dir: &Path, st: &AttachState) -> Result<()> {
    if st.endpoints.is_empty() {
        remove_state(dir, st.netns_id)
    } else {
        save_state(dir, st, true)
    }
}

/// One endpoint's undo: the model's own changes on the link (while it is still the same
/// link), its tap or macvtap, then what the model restores afterwards.
async fn undo_endpoint(
    nl: &Netlink,
    model: sandnet_model::InterworkingModel,
    p: &PlannedEndpoint,
    report: &mut DetachReport,
) -> Result<()> {
    let model = driver(model);
    let link_there = link_still_there(nl, p).await?;
    if link_there {
        undo_guard(nl, p, report).await?;
        model
            .undo_one(nl, p, UndoStage::LinksPresent, report)
            .await?;
    }
    if let Some(t) = nl.link_by_name(&p.tap_name).await? {
        let d = link_detail(&t);
        if is_sandnet_link(&d, Some(p)) {
            nl.del_link(d.index, &d.interface.name).await?;
            report
                .actions
                .push(format!("deleted {} {}", d.interface.kind, d.interface.name));
        }
    }
    if link_there {
        model
            .undo_one(nl, p, UndoStage::LinksDeleted, report)
            .await?;
    }
    Ok(())
}
