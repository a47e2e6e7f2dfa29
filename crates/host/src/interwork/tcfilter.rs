//! Model `tcfilter` (the default): a tap `sntap<ifindex>` next to the link, an ingress
//! qdisc on both and a u32 match-all filter with `mirred egress redirect` each way.

use super::{
    AttachCx, AttachedEndpoint, DetachReport, Interworking, PlannedEndpoint, PreOpened, UndoStage,
    LINK_GROUP,
};
use crate::endpoint::{Endpoint, ALIAS_PREFIX};
use crate::error::{HostError, Result};
use crate::netns::NetNs;
use crate::{tap, tc};
use futures::future::BoxFuture;
use netlink_packet_route::link::{LinkAttribute, LinkFlags};
use sandnet_model::InterworkingModel;
use sandnet_netlink::Netlink;
use std::os::fd::OwnedFd;

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

    /// Opens every tap in one trip into the namespace.
    fn open_in_netns(
        &self,
        ns: &NetNs,
        plan: &[PlannedEndpoint],
        queues: u16,
    ) -> Result<Vec<PreOpened>> {
        let to = tap::TapOptions {
            queues,
            vnet_hdr: true,
        };
        ns.run(|| {
            plan.iter()
                .map(|p| Some(tap::open_tap(&p.tap_name, to)))
                .collect()
        })
    }

    fn attach_one<'a>(
        &'a self,
        cx: &'a AttachCx<'a>,
        p: &'a PlannedEndpoint,
        pre: PreOpened,
    ) -> BoxFuture<'a, Result<AttachedEndpoint>> {
        Box::pin(async move {
            match pre {
                Some(Ok(fds)) => attach(cx.nl, p, fds).await,
                Some(Err(e)) => Err(e),
                None => Err(HostError::InvalidArgument("no tap fds".into())),
            }
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

async fn attach(nl: &Netlink, p: &PlannedEndpoint, fds: Vec<OwnedFd>) -> Result<AttachedEndpoint> {
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
        model: InterworkingModel::TcFilter,
        tap: Some(name.to_string()),
        tap_index: Some(ti),
        device: None,
        fds,
    })
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
