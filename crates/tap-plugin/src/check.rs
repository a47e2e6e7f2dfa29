//! CHECK: the attachment is still as ADD left it — the tap (marked as sandnet's, with the
//! link's MTU), and under tcfilter both ingress qdiscs and both redirect filters, under
//! macvtap the macvtap on the link with the guest's MAC.

use crate::error::PluginError;
use crate::options;
use crate::protocol::config::NetConf;
use crate::protocol::env::Env;
use crate::record::{self, attach_dir};
use crate::result::parse_prev;
use crate::target;
use sandnet_host::endpoint::is_sandnet_alias;
use sandnet_host::interwork::attached_endpoints;
use sandnet_host::netlink::link_detail;
use sandnet_host::{tc, InterworkingModel, Netlink};
use sandnet_model::LinkKind;

/// Runs CHECK.
pub async fn check(conf: &NetConf, env: &Env) -> Result<(), PluginError> {
    env.require(true)?;
    conf.require_name()?;
    let state_dir = options::state_dir(conf)?;
    let fail = |m: String| Err(PluginError::CheckFailed(m));
    let prev = conf.prev_result.as_ref().ok_or_else(|| {
        PluginError::InvalidConfig("prevResult is missing: CHECK needs ADD's result".into())
    })?;
    let prev = parse_prev(prev, &conf.cni_version)?;
    let _lock = record::lock(&state_dir)?;
    let Some(rec) = record::load(&state_dir, &env.container_id, &env.ifname)? else {
        return fail(format!("no record of {}/{}", env.container_id, env.ifname));
    };
    let Some(tap) = rec.tap.clone().filter(|_| rec.complete) else {
        return fail("ADD did not finish".into());
    };
    if !prev
        .sandbox_interfaces(&env.netns)
        .iter()
        .any(|(_, i)| i.name == tap)
    {
        return fail(format!(
            "prevResult has no interface {tap} in {}",
            env.netns
        ));
    }
    let ns = target::open(&env.netns)?;
    if ns.id().ok() != Some(rec.netns_id) {
        return fail(format!("{} is not the namespace ADD attached", env.netns));
    }
    let plan = attached_endpoints(&ns, &attach_dir(&state_dir))
        .map_err(PluginError::host("reading the attach plan"))?;
    let Some(p) = plan.iter().find(|p| p.endpoint.name == env.ifname) else {
        return fail(format!("{} is not in sandnet's attach plan", env.ifname));
    };
    let nl = ns
        .netlink()
        .map_err(PluginError::host("netlink in the namespace"))?;
    let link = match nl.link_by_index(p.endpoint.index).await.map_err(net)? {
        Some(l) => link_detail(&l),
        None => return fail(format!("link {} is gone", env.ifname)),
    };
    if link.interface.name != env.ifname {
        return fail(format!("link {} is gone", env.ifname));
    }
    let t = match nl.link_by_name(&tap).await.map_err(net)? {
        Some(t) => link_detail(&t),
        None => return fail(format!("tap {tap} is gone")),
    };
    if !is_sandnet_alias(t.alias.as_deref()) {
        return fail(format!("{tap} is not sandnet's"));
    }
    if t.interface.mtu != link.interface.mtu {
        return fail(format!(
            "{tap} has MTU {}, {} has {}",
            t.interface.mtu, env.ifname, link.interface.mtu
        ));
    }
    match rec.model {
        InterworkingModel::Macvtap => {
            if t.interface.kind != LinkKind::Macvtap || t.parent != Some(link.index) {
                return fail(format!("{tap} is not a macvtap on {}", env.ifname));
            }
            if t.interface.mac != rec.mac {
                return fail(format!("{tap} does not have the guest's MAC"));
            }
            Ok(())
        }
        _ => check_filters(&nl, link.index, t.index, &env.ifname, &tap).await,
    }
}

/// Both ingress qdiscs, and a sandnet redirect filter each way.
async fn check_filters(
    nl: &Netlink,
    link: u32,
    tap: u32,
    link_name: &str,
    tap_name: &str,
) -> Result<(), PluginError> {
    let qdiscs = tc::ingress_qdisc_indexes(nl).await.map_err(hosterr)?;
    for (from, to, from_name, to_name) in [
        (link, tap, link_name, tap_name),
        (tap, link, tap_name, link_name),
    ] {
        if !qdiscs.contains(&from) {
            return Err(PluginError::CheckFailed(format!(
                "{from_name} has no ingress qdisc"
            )));
        }
        let f = tc::ingress_summary(nl, from).await.map_err(hosterr)?;
        if !f.ours.iter().any(|f| f.redirect_to == to) {
            return Err(PluginError::CheckFailed(format!(
                "{from_name} has no redirect filter to {to_name}"
            )));
        }
    }
    Ok(())
}

fn net(e: sandnet_host::NetlinkError) -> PluginError {
    PluginError::host("asking the kernel")(e.into())
}

fn hosterr(e: sandnet_host::HostError) -> PluginError {
    PluginError::host("reading tc")(e)
}
