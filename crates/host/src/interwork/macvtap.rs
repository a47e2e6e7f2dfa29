//! Model `macvtap`: a bridge-mode macvtap `snmvt<ifindex>` on the link takes the link's MAC
//! (the link gets a new locally-administered one) and its addresses move to the guest;
//! detach restores MAC, addresses and the routes the kernel dropped with them.

use super::{
    state, AttachCx, AttachedEndpoint, DetachReport, Interworking, PlannedEndpoint, PreOpened,
    UndoStage, LINK_GROUP,
};
use crate::endpoint::{Endpoint, ALIAS_PREFIX};
use crate::error::{HostError, Result};
use crate::{guard, tap};
use futures::future::BoxFuture;
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoMacVtap, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, MacVtapMode,
};
use sandnet_model::{InterworkingModel, MacAddr};
use sandnet_netlink::{link_detail, route_text, Netlink};

/// The `macvtap` model.
pub struct Macvtap;

/// A random locally-administered unicast MAC for the link while the macvtap wears its own.
pub(crate) fn random_local_mac() -> MacAddr {
    MacAddr::local_from(crate::random_bytes())
}

impl Interworking for Macvtap {
    fn model(&self) -> InterworkingModel {
        InterworkingModel::Macvtap
    }

    fn tap_name(&self, endpoint: &Endpoint) -> String {
        format!("snmvt{}", endpoint.index)
    }

    /// Picks the MAC each link wears while its macvtap has the original one.
    fn plan<'a>(
        &'a self,
        _nl: &'a Netlink,
        plan: &'a mut [PlannedEndpoint],
    ) -> BoxFuture<'a, Result<()>> {
        for p in plan {
            p.link_mac_during = Some(random_local_mac());
        }
        Box::pin(async { Ok(()) })
    }

    fn attach_one<'a>(
        &'a self,
        cx: &'a AttachCx<'a>,
        p: &'a PlannedEndpoint,
        _pre: PreOpened,
    ) -> BoxFuture<'a, Result<AttachedEndpoint>> {
        Box::pin(attach(cx, p))
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
                UndoStage::LinksPresent => Ok(()),
                UndoStage::LinksDeleted => restore_link(nl, p, report).await,
            }
        })
    }
}

async fn attach(cx: &AttachCx<'_>, p: &PlannedEndpoint) -> Result<AttachedEndpoint> {
    let nl = cx.nl;
    let e = &p.endpoint;
    let name = p.tap_name.as_str();
    let during = p
        .link_mac_during
        .ok_or_else(|| HostError::InvalidArgument("macvtap plan without a link MAC".into()))?;
    let policy = &cx.opts.policy;
    if policy.bandwidth.ingress.is_some() {
        // Frames into the guest go from the link's receive path straight into the
        // macvtap's queue: no qdisc is on their way without an IFB device.
        return Err(HostError::InvalidArgument(format!(
            "model macvtap cannot limit traffic into the guest ({}): use model tcfilter, or no ingress limit",
            e.name
        )));
    }
    // The guard goes on the link first: nothing of the guest's passes unchecked.
    guard::apply(nl, &guard::Nic::of(e), None, policy).await?;
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
    let devt = cx
        .ns
        .run(|| tap::macvtap_devt_in_current_netns(name, ti))??;
    let device = tap::macvtap_device_path(ti, devt, &state::dev_dir(&cx.opts.state_dir, cx.id))?;
    let fds = tap::open_macvtap(&device, cx.opts.queues)?;
    Ok(AttachedEndpoint {
        guest_mac: e.mac,
        endpoint: e.clone(),
        model: InterworkingModel::Macvtap,
        tap: Some(name.to_string()),
        tap_index: Some(ti),
        device: Some(device),
        fds,
    })
}

/// Gives the link back its MAC, its addresses and the routes the kernel dropped with them.
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
            Err(err) => return Err(err.into()),
        }
    }
    for r in sandnet_model::in_apply_order(&p.routes) {
        match nl.replace_route(r, e.index).await {
            Ok(()) => {
                report
                    .actions
                    .push(format!("restored route {} on {}", route_text(r), e.name))
            }
            Err(err) if err.is_exists() => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_macs_are_local_unicast() {
        let m = random_local_mac();
        assert!(m.is_local() && !m.is_multicast());
        assert_ne!(random_local_mac(), m);
    }
}
