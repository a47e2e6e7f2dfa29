//! Interworking models: how each endpoint is connected to something a VMM can open.
//!
//! - [`Model::TcFilter`] (the default): a tap next to the link, an ingress qdisc on both and
//!   a u32 match-all filter with `mirred egress redirect` each way.
//! - [`Model::Macvtap`]: a bridge-mode macvtap on the link, which takes the link's MAC (the
//!   link gets a new locally-administered one) and its addresses (removed from the link,
//!   restored on detach, with the routes the kernel drops with them).
//! - [`Model::None`]: nothing is connected.
//!
//! Attach first writes a plan of everything it will create or change to a state file, then
//! does the work, so that [`detach`] can undo exactly that — also after a crash half-way.
//! Before deleting anything, detach checks it is sandnet's: links carry the alias
//! [`ALIAS_PREFIX`]`…`, filters the action cookie [`crate::tc::COOKIE`].

use crate::endpoint::{endpoints, Endpoint, ALIAS_PREFIX};
use crate::error::{HostError, Result};
use crate::netns::{NetNs, NetNsId};
use crate::nl::Netlink;
use crate::scan::{link_detail, scan_detail, ScanResult};
use crate::{tap, tc};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoMacVtap, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, MacVtapMode,
};
use sandnet_model::{LinkKind, MacAddr, Route};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Where attach state lives by default.
pub const DEFAULT_STATE_DIR: &str = "/run/sandnet/attach";

/// The link group sandnet puts its taps and macvtaps in (`"snet"`), so that detach can
/// delete them all with one request (one unregister instead of one per link).
pub const LINK_GROUP: u32 = 0x736e_6574;

/// Upper bound on queues per endpoint (virtio-net's own limit is far higher; this keeps a
/// typo from opening thousands of fds).
pub const MAX_QUEUES: u16 = 64;

/// The interworking model, parsed once from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Model {
    /// tap + tc ingress + u32 + mirred redirect each way.
    #[default]
    TcFilter,
    /// A bridge-mode macvtap on the link.
    Macvtap,
    /// Nothing connected.
    None,
}

impl Model {
    /// The model's configuration name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Model::TcFilter => "tcfilter",
            Model::Macvtap => "macvtap",
            Model::None => "none",
        }
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for Model {
    type Err = HostError;

    fn from_str(s: &str) -> Result<Model> {
        match s {
            "tcfilter" => Ok(Model::TcFilter),
            "macvtap" => Ok(Model::Macvtap),
            "none" => Ok(Model::None),
            other => Err(HostError::UnknownModel(other.to_string())),
        }
    }
}

/// How to attach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachOptions {
    /// The interworking model.
    pub model: Model,
    /// Queues per endpoint (one fd each).
    pub queues: u16,
    /// Where the attach state is kept.
    pub state_dir: PathBuf,
}

impl Default for AttachOptions {
    fn default() -> Self {
        AttachOptions {
            model: Model::TcFilter,
            queues: 1,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
        }
    }
}

/// One endpoint's part of the persisted plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedEndpoint {
    /// The endpoint as scanned before anything changed.
    pub endpoint: Endpoint,
    /// The tap (or macvtap) sandnet creates for it.
    pub tap_name: String,
    /// Routes through the link before attach (macvtap restores them on detach).
    pub routes: Vec<Route>,
    /// tcfilter: the link had no ingress qdisc, so sandnet adds (and later removes) it.
    pub created_qdisc: bool,
    /// macvtap: the MAC the link wears while the macvtap has its original one.
    pub link_mac_during: Option<MacAddr>,
}

/// The persisted state of one namespace's attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachState {
    /// Format version.
    pub version: u32,
    /// The namespace as named by the caller.
    pub netns: String,
    /// The namespace's identity.
    pub netns_id: NetNsId,
    /// The model used.
    pub model: Model,
    /// Queues per endpoint.
    pub queues: u16,
    /// Whether attach finished.
    pub complete: bool,
    /// One entry per endpoint.
    pub endpoints: Vec<PlannedEndpoint>,
}

/// One connected endpoint, with the fds a VMM needs.
#[derive(Debug, Serialize)]
pub struct AttachedEndpoint {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// The model it was connected with.
    pub model: Model,
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

fn state_path(dir: &Path, id: NetNsId) -> PathBuf {
    dir.join(format!("{id}.json"))
}

fn dev_dir(dir: &Path, id: NetNsId) -> PathBuf {
    dir.join("dev").join(id.to_string())
}

fn state_err(path: &Path) -> impl FnOnce(std::io::Error) -> HostError + '_ {
    move |source| HostError::State {
        path: path.to_path_buf(),
        source,
    }
}

/// Loads a namespace's attach state, if there is one.
pub fn load_state(dir: &Path, id: NetNsId) -> Result<Option<AttachState>> {
    let p = state_path(dir, id);
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| state_err(&p)(std::io::Error::other(e))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(state_err(&p)(e)),
    }
}

fn save_state(dir: &Path, st: &AttachState) -> Result<()> {
    let p = state_path(dir, st.netns_id);
    std::fs::create_dir_all(dir).map_err(state_err(&p))?;
    let tmp = p.with_extension("json.tmp");
    let body =
        serde_json::to_vec_pretty(st).map_err(|e| state_err(&p)(std::io::Error::other(e)))?;
    let mut f = File::create(&tmp).map_err(state_err(&p))?;
    f.write_all(&body).map_err(state_err(&p))?;
    f.sync_data().map_err(state_err(&p))?;
    std::fs::rename(&tmp, &p).map_err(state_err(&p))
}

fn remove_state(dir: &Path, id: NetNsId) -> Result<()> {
    let p = state_path(dir, id);
    match std::fs::remove_file(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(state_err(&p)(e)),
    }
}

/// Forgets a namespace's attach state (for a namespace that no longer exists, whose taps
/// and filters went with it).
pub fn forget_state(dir: &Path, id: NetNsId) -> Result<()> {
    remove_state(dir, id)?;
    let d = dev_dir(dir, id);
    match std::fs::remove_dir_all(&d) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(state_err(&d)(e)),
    }
}

/// An exclusive lock on one namespace's attach state, held while attaching or detaching.
struct StateLock(#[allow(dead_code)] File);

fn lock_state(dir: &Path, id: NetNsId) -> Result<StateLock> {
    let p = dir.join(format!("{id}.lock"));
    std::fs::create_dir_all(dir).map_err(state_err(&p))?;
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .map_err(state_err(&p))?;
    // SAFETY: flock on an fd we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(state_err(&p)(std::io::Error::last_os_error()));
    }
    Ok(StateLock(f))
}

fn random_local_mac() -> MacAddr {
    MacAddr::local_from(crate::random_bytes())
}

fn is_ours(alias: Option<&str>) -> bool {
    alias.is_some_and(|a| a.starts_with(ALIAS_PREFIX))
}

/// Attaches every endpoint of a namespace with the given model. Returns the endpoints with
/// their open fds; taps are persistent, so a VMM may also open them by name later.
pub async fn attach(ns: &NetNs, opts: &AttachOptions) -> Result<Vec<AttachedEndpoint>> {
    let nl = ns.netlink()?;
    let scan = scan_detail(&nl).await?;
    attach_scanned(ns, &nl, &scan, opts).await
}

/// Like [`attach`], from a scan the caller already has (which may be stale: a link gone
/// since is reported as [`HostError::LinkNotFound`] and everything is rolled back).
pub async fn attach_scanned(
    ns: &NetNs,
    nl: &Netlink,
    scan: &ScanResult,
    opts: &AttachOptions,
) -> Result<Vec<AttachedEndpoint>> {
    if opts.queues == 0 || opts.queues > MAX_QUEUES {
        return Err(HostError::InvalidArgument(format!(
            "queues must be between 1 and {MAX_QUEUES}, not {}",
            opts.queues
        )));
    }
    let id = ns.id()?;
    let eps = endpoints(scan);
    if opts.model == Model::None {
        return Ok(eps
            .into_iter()
            .map(|e| AttachedEndpoint {
                guest_mac: e.mac,
                endpoint: e,
                model: Model::None,
                tap: None,
                tap_index: None,
                device: None,
                fds: vec![],
            })
            .collect());
    }
    let _lock = lock_state(&opts.state_dir, id)?;
    if load_state(&opts.state_dir, id)?.is_some() {
        return Err(HostError::AlreadyAttached {
            ns: ns.display(),
            detail: format!("state in {}", state_path(&opts.state_dir, id).display()),
        });
    }
    // The live namespace, not the caller's scan, tells whether sandnet is already there.
    for l in nl.links().await? {
        let d = link_detail(&l);
        if is_ours(d.alias.as_deref()) {
            return Err(HostError::AlreadyAttached {
                ns: ns.display(),
                detail: format!("link {} carries sandnet's mark", d.interface.name),
            });
        }
    }

    let with_ingress = match opts.model {
        Model::TcFilter => tc::ingress_qdisc_indexes(nl).await?,
        _ => Default::default(),
    };
    let mut plan = Vec::with_capacity(eps.len());
    for e in eps {
        let tap_name = match opts.model {
            Model::Macvtap => format!("snmvt{}", e.index),
            _ => format!("sntap{}", e.index),
        };
        if let Some(other) = scan.link_by_name(&tap_name) {
            return Err(HostError::InvalidArgument(format!(
                "cannot create {tap_name} for {}: a {} link of that name already exists",
                e.name, other.interface.kind
            )));
        }
        let created_qdisc = opts.model == Model::TcFilter && !with_ingress.contains(&e.index);
        plan.push(PlannedEndpoint {
            routes: scan.routes_via(&e.name),
            tap_name,
            created_qdisc,
            link_mac_during: (opts.model == Model::Macvtap).then(random_local_mac),
            endpoint: e,
        });
    }
    let mut state = AttachState {
        version: 1,
        netns: ns.display(),
        netns_id: id,
        model: opts.model,
        queues: opts.queues,
        complete: false,
        endpoints: plan,
    };
    save_state(&opts.state_dir, &state)?;

    // Taps are opened in one trip into the namespace; then every endpoint is configured
    // concurrently (the kernel serialises under RTNL, but the round trips overlap).
    let mut tap_fds: Vec<Option<Result<Vec<OwnedFd>>>> = match opts.model {
        Model::TcFilter => {
            let to = tap::TapOptions {
                queues: opts.queues,
                vnet_hdr: true,
            };
            ns.run(|| {
                state
                    .endpoints
                    .iter()
                    .map(|p| Some(tap::open_tap(&p.tap_name, to)))
                    .collect()
            })?
        }
        _ => state.endpoints.iter().map(|_| None).collect(),
    };
    let results = futures::future::join_all(state.endpoints.iter().zip(tap_fds.iter_mut()).map(
        |(p, fds)| async move {
            match opts.model {
                Model::TcFilter => match fds.take() {
                    Some(Ok(fds)) => attach_tcfilter(nl, p, fds).await,
                    Some(Err(e)) => Err(e),
                    None => Err(HostError::InvalidArgument("no tap fds".into())),
                },
                _ => attach_macvtap(ns, nl, p, opts, id).await,
            }
        },
    ))
    .await;
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
        let e = match nl.link_by_index(p.endpoint.index).await {
            Ok(None) => HostError::LinkNotFound(p.endpoint.name.clone()),
            _ => e,
        };
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
    save_state(&opts.state_dir, &state)?;
    Ok(attached)
}

async fn attach_tcfilter(
    nl: &Netlink,
    p: &PlannedEndpoint,
    fds: Vec<OwnedFd>,
) -> Result<AttachedEndpoint> {
    let e = &p.endpoint;
    let name = p.tap_name.as_str();
    let t = nl
        .link_by_name(name)
        .await?
        .ok_or_else(|| HostError::LinkNotFound(name.to_string()))?;
    let ti = t.header.index;
    // Mark it before making it persistent: until then it vanishes with our fds.
    nl.set_link(
        ti,
        vec![
            LinkAttribute::IfAlias(format!("{ALIAS_PREFIX}tcfilter:{}", e.index)),
            LinkAttribute::Mtu(e.mtu),
            LinkAttribute::Group(LINK_GROUP),
        ],
        Some((LinkFlags::Up, LinkFlags::Up)),
        || format!("configure tap {name}"),
    )
    .await?;
    tap::set_persist(&fds[0], name, true)?;
    tc::add_ingress_qdisc(nl, e.index, &e.name).await?;
    tc::add_ingress_qdisc(nl, ti, name).await?;
    tc::add_redirect(nl, e.index, ti, &e.name, name).await?;
    tc::add_redirect(nl, ti, e.index, name, &e.name).await?;
    Ok(AttachedEndpoint {
        guest_mac: e.mac,
        endpoint: e.clone(),
        model: Model::TcFilter,
        tap: Some(name.to_string()),
        tap_index: Some(ti),
        device: None,
        fds,
    })
}

async fn attach_macvtap(
    ns: &NetNs,
    nl: &Netlink,
    p: &PlannedEndpoint,
    opts: &AttachOptions,
    id: NetNsId,
) -> Result<AttachedEndpoint> {
    let e = &p.endpoint;
    let name = p.tap_name.as_str();
    let during = p
        .link_mac_during
        .ok_or_else(|| HostError::InvalidArgument("macvtap plan without a link MAC".into()))?;
    // macvlan refuses an address equal to its lower device's: move the link's MAC first.
    nl.set_mac(e.index, during, &e.name).await?;
    let mut msg = LinkMessage::default();
    msg.attributes = vec![
        LinkAttribute::IfName(name.to_string()),
        LinkAttribute::Link(e.index),
        LinkAttribute::Address(e.mac.octets().to_vec()),
        LinkAttribute::Mtu(e.mtu),
        LinkAttribute::Group(LINK_GROUP),
        LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::MacVtap),
            LinkInfo::Data(InfoData::MacVtap(vec![InfoMacVtap::Mode(
                MacVtapMode::Bridge,
            )])),
        ]),
    ];
    nl.add_link(msg, || format!("create macvtap {name} on {}", e.name))
        .await?;
    let t = nl
        .link_by_name(name)
        .await?
        .ok_or_else(|| HostError::LinkNotFound(name.to_string()))?;
    let ti = t.header.index;
    nl.set_link(
        ti,
        vec![LinkAttribute::IfAlias(format!(
            "{ALIAS_PREFIX}macvtap:{}",
            e.index
        ))],
        Some((LinkFlags::Up, LinkFlags::Up)),
        || format!("configure macvtap {name}"),
    )
    .await?;
    for a in &e.addresses {
        nl.del_address(e.index, *a, &e.name).await?;
    }
    let devt = ns.run(|| tap::macvtap_devt_in_current_netns(name, ti))??;
    let device = tap::macvtap_device_path(ti, devt, &dev_dir(&opts.state_dir, id))?;
    let fds = tap::open_macvtap(&device, opts.queues)?;
    Ok(AttachedEndpoint {
        guest_mac: e.mac,
        endpoint: e.clone(),
        model: Model::Macvtap,
        tap: Some(name.to_string()),
        tap_index: Some(ti),
        device: Some(device),
        fds,
    })
}

/// Undoes an attachment from its plan, then sweeps anything else carrying sandnet's marks.
/// Every step runs even when an earlier one failed; the failures are returned.
async fn undo(
    nl: &Netlink,
    st: &AttachState,
    state_dir: &Path,
    report: &mut DetachReport,
) -> Vec<HostError> {
    let mut errors = Vec::new();
    if st.model == Model::TcFilter {
        for p in st.endpoints.iter().rev() {
            if let Err(e) = undo_tc_on_link(nl, p, report).await {
                errors.push(e);
            }
        }
    }
    if let Err(e) = delete_our_links(nl, Some(st), report).await {
        errors.push(e);
    }
    if st.model == Model::Macvtap {
        for p in st.endpoints.iter().rev() {
            if let Err(e) = restore_link(nl, p, report).await {
                errors.push(e);
            }
        }
    }
    if let Err(e) = sweep_filters(nl, report).await {
        errors.push(e);
    }
    let d = dev_dir(state_dir, st.netns_id);
    if d.exists() {
        match std::fs::remove_dir_all(&d) {
            Ok(()) => report.actions.push(format!("removed {}", d.display())),
            Err(e) => errors.push(state_err(&d)(e)),
        }
    }
    errors
}

/// tcfilter, pod side: the ingress qdisc if sandnet made it and nobody else uses it,
/// otherwise just sandnet's filters.
async fn undo_tc_on_link(
    nl: &Netlink,
    p: &PlannedEndpoint,
    report: &mut DetachReport,
) -> Result<()> {
    let e = &p.endpoint;
    let f = tc::ingress_summary(nl, e.index).await?;
    if p.created_qdisc && f.others == 0 {
        if !f.ours.is_empty() {
            tc::del_ingress_qdisc(nl, e.index, &e.name).await?;
            report
                .actions
                .push(format!("removed ingress qdisc and redirect on {}", e.name));
        } else {
            // Attach may have died between adding the qdisc and the filter.
            tc::del_ingress_qdisc(nl, e.index, &e.name).await?;
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

/// Deletes every link that is sandnet's: marked with the alias, or (with a plan) the
/// planned macvtap on its link wearing the link's original MAC — unmarked only if attach
/// died between creating and marking it. When sandnet's links are all of their group,
/// they go in one request.
async fn delete_our_links(
    nl: &Netlink,
    plan: Option<&AttachState>,
    report: &mut DetachReport,
) -> Result<()> {
    let links: Vec<_> = nl.links().await?.iter().map(link_detail).collect();
    let ours: Vec<_> = links
        .iter()
        .filter(|d| {
            is_ours(d.alias.as_deref())
                || plan.is_some_and(|st| {
                    st.endpoints.iter().any(|p| {
                        d.interface.name == p.tap_name
                            && d.interface.kind == LinkKind::Macvtap
                            && d.parent == Some(p.endpoint.index)
                            && d.interface.mac == Some(p.endpoint.mac)
                    })
                })
        })
        .collect();
    let group_all_ours = links
        .iter()
        .filter(|d| d.group == LINK_GROUP)
        .all(|d| ours.iter().any(|o| o.index == d.index));
    if group_all_ours && ours.iter().any(|d| d.group == LINK_GROUP) {
        nl.del_link_group(LINK_GROUP).await?;
    }
    for d in &ours {
        if !(group_all_ours && d.group == LINK_GROUP) {
            nl.del_link(d.index, &d.interface.name).await?;
        }
        report
            .actions
            .push(format!("deleted {} {}", d.interface.kind, d.interface.name));
    }
    Ok(())
}

/// macvtap: gives the link back its MAC, its addresses and the routes the kernel dropped
/// with them.
async fn restore_link(nl: &Netlink, p: &PlannedEndpoint, report: &mut DetachReport) -> Result<()> {
    let e = &p.endpoint;
    let Some(l) = nl.link_by_index(e.index).await? else {
        return Ok(());
    };
    let d = link_detail(&l);
    if d.interface.name != e.name {
        return Ok(());
    }
    if d.interface.mac.is_some() && d.interface.mac == p.link_mac_during {
        nl.set_mac(e.index, e.mac, &e.name).await?;
        report
            .actions
            .push(format!("restored MAC {} on {}", e.mac, e.name));
    }
    for a in &e.addresses {
        match nl.add_address(e.index, *a, false, &e.name).await {
            Ok(()) => report
                .actions
                .push(format!("restored address {a} on {}", e.name)),
            Err(err) if err.is_exists() => {}
            Err(err) => return Err(err),
        }
    }
    for r in sandnet_model::in_apply_order(&p.routes) {
        match nl.replace_route(r, e.index).await {
            Ok(()) => report.actions.push(format!(
                "restored route {} on {}",
                crate::nl::route_text(r),
                e.name
            )),
            Err(err) if err.is_exists() => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// Removes sandnet's filters wherever they still are (only devices with an ingress qdisc
/// can have any).
async fn sweep_filters(nl: &Netlink, report: &mut DetachReport) -> Result<()> {
    for index in tc::ingress_qdisc_indexes(nl).await? {
        for f in tc::ingress_summary(nl, index).await?.ours {
            tc::del_filter(nl, &f).await?;
            report
                .actions
                .push(format!("removed redirect filter on link {index}"));
        }
    }
    Ok(())
}

/// Undoes what attach did in a namespace: from the persisted plan when there is one, and in
/// any case everything carrying sandnet's marks. Idempotent; when nothing was attached the
/// report says so. On failure the state is kept, so detach can be run again.
pub async fn detach(ns: &NetNs, state_dir: &Path) -> Result<DetachReport> {
    let nl = ns.netlink()?;
    let id = ns.id()?;
    let _lock = lock_state(state_dir, id)?;
    let st = load_state(state_dir, id)?;
    let mut report = DetachReport::default();
    let errors = match &st {
        Some(st) => undo(&nl, st, state_dir, &mut report).await,
        None => {
            let mut errors = vec![];
            if let Err(e) = delete_our_links(&nl, None, &mut report).await {
                errors.push(e);
            }
            if let Err(e) = sweep_filters(&nl, &mut report).await {
                errors.push(e);
            }
            errors
        }
    };
    if !errors.is_empty() {
        return Err(HostError::Multiple(errors));
    }
    remove_state(state_dir, id)?;
    report.nothing_attached = st.is_none() && report.actions.is_empty();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names() {
        assert_eq!("tcfilter".parse::<Model>().unwrap(), Model::TcFilter);
        assert_eq!("macvtap".parse::<Model>().unwrap(), Model::Macvtap);
        assert_eq!("none".parse::<Model>().unwrap(), Model::None);
        let e = "bridged".parse::<Model>().unwrap_err();
        assert!(e
            .to_string()
            .contains("unknown interworking model \"bridged\""));
        assert_eq!(Model::default(), Model::TcFilter);
        assert_eq!(
            serde_json::to_string(&Model::TcFilter).unwrap(),
            "\"tcfilter\""
        );
    }

    #[test]
    fn random_macs_are_local_unicast() {
        let m = random_local_mac();
        assert!(m.is_local() && !m.is_multicast());
        assert_ne!(random_local_mac(), m);
    }
}
