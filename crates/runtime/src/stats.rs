//! A running sandbox's network counters, per guest NIC (`sandnet stats`, the shim's task
//! Stats): the tap's and the pod link's own counters and the guard's, read over netlink in
//! the pod namespace, and the guest's own view from its agent (through the supervisor).

use crate::control::{Request, Response};
use crate::error::{host, Result, RuntimeError};
use crate::pod::PodRef;
use crate::sandbox::{Health, NicState, SandboxState};
use sandnet_agent_proto::GuestCounters;
use sandnet_host::guard::{guard_counters, link_counters, GuardCounters, LinkCounters};
use sandnet_host::Netlink;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// How long the guest's agent may take to answer.
const GUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One guest NIC's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NicStats {
    /// The pod link's name (the guest NIC's too).
    pub interface: String,
    /// The pod link's index in the pod namespace.
    pub link_index: u32,
    /// The pod link's counters (`None`: the link is gone).
    pub link: Option<LinkCounters>,
    /// The tap's (or macvtap's) name; `None` with the `none` model.
    pub tap: Option<String>,
    /// The tap's counters (`None`: no tap, or it is gone).
    pub tap_counters: Option<LinkCounters>,
    /// What the guard counted on the pod link and the tap.
    pub guard: GuardCounters,
    /// The guest's own counters of the NIC (`None`: not asked, or not answered).
    pub guest: Option<GuestCounters>,
}

/// One sandbox's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SandboxStats {
    /// The sandbox id.
    pub id: String,
    /// The pod it serves, when a containerd shim started it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
    /// One entry per plugged guest NIC.
    pub nics: Vec<NicStats>,
    /// Why the guest's counters are missing, when they were asked for and are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_error: Option<String>,
}

/// Reads the counters of the running sandbox `id` under `root`; with `guest`, the guest's
/// own counters too (a guest that does not answer leaves them out, saying why).
pub async fn collect(root: &Path, id: &str, guest: bool) -> Result<SandboxStats> {
    let st = SandboxState::load(root, id)?;
    let health = st.health(root);
    match health {
        Health::Running => {}
        Health::Creating | Health::Stopping => {
            return Err(RuntimeError::Refused(format!(
                "sandbox {id} is {health}: only a running sandbox has counters"
            )))
        }
        _ => {
            return Err(RuntimeError::NotRunning {
                id: id.to_string(),
                health,
                why: "only a running sandbox has counters",
            })
        }
    }
    // By its path, else (a path bind-mounted where this process does not see it, e.g. in
    // containerd's own mount namespace) as QEMU's, which sits in it.
    let ns = crate::podnet::reach_netns(root, &st).ok_or_else(|| {
        RuntimeError::Refused(format!(
            "sandbox {id}: {} is no longer its network namespace",
            st.netns_path.display()
        ))
    })?;
    let ns_id = ns.id().map_err(host("open the pod network namespace"))?;
    let nl = ns
        .netlink()
        .map_err(host("open netlink in the pod namespace"))?;
    let taps = tap_names(root, ns_id)?;
    let mut nics = Vec::new();
    for nic in st.nics.iter().filter(|n| n.state == NicState::Plugged) {
        nics.push(host_side(&nl, &nic.link, nic.index, taps.get(&nic.index)).await?);
    }
    let mut out = SandboxStats {
        id: id.to_string(),
        pod: crate::pod::load(root, id),
        nics,
        guest_error: None,
    };
    if guest {
        match guest_counters(root, id).await {
            Ok(g) => {
                for n in &mut out.nics {
                    n.guest = g.iter().find(|c| c.name == n.interface).cloned();
                }
            }
            Err(e) => out.guest_error = Some(e.to_string()),
        }
    }
    Ok(out)
}

/// The tap of each endpoint of the namespace's attach plan, by pod link index.
fn tap_names(root: &Path, ns_id: sandnet_host::NetNsId) -> Result<BTreeMap<u32, String>> {
    let plan = sandnet_host::interwork::load_state(&crate::teardown::attach_dir(root), ns_id)
        .map_err(host("read the attach plan"))?;
    Ok(plan
        .into_iter()
        .flat_map(|p| p.endpoints)
        .map(|e| (e.endpoint.index, e.tap_name))
        .collect())
}

/// A NIC's host side: its pod link, its tap, its guard.
async fn host_side(nl: &Netlink, link: &str, index: u32, tap: Option<&String>) -> Result<NicStats> {
    let step = "read the counters of a guest NIC";
    let tap_link = match tap {
        Some(t) => nl.link_by_name(t).await.map_err(|e| host(step)(e.into()))?,
        None => None,
    };
    let tap_index = tap_link.as_ref().map(|l| l.header.index);
    let tap_counters = tap_link
        .as_ref()
        .and_then(sandnet_host::netlink::link_counters);
    Ok(NicStats {
        interface: link.to_string(),
        link_index: index,
        link: link_counters(nl, index).await.map_err(host(step))?,
        tap: tap.cloned(),
        tap_counters,
        guard: guard_counters(nl, index, tap_index)
            .await
            .map_err(host(step))?,
        guest: None,
    })
}

/// The guest's counters, from its agent through the supervisor.
async fn guest_counters(root: &Path, id: &str) -> Result<Vec<GuestCounters>> {
    match crate::client::ask(root, id, &Request::GuestStats, GUEST_TIMEOUT).await? {
        Response::GuestStats { interfaces } => Ok(interfaces),
        Response::Error { message } => Err(RuntimeError::Answer {
            id: id.to_string(),
            message,
        }),
        other => Err(RuntimeError::Answer {
            id: id.to_string(),
            message: format!("unexpected answer {other:?}"),
        }),
    }
}
