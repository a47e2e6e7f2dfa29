//! The part of detach that every model shares: deleting sandnet's links and filters,
//! found by their marks (and, for links, by the plan when there is one).

use super::{is_sandnet_link, AttachState, DetachReport, LINK_GROUP};
use crate::error::Result;
use crate::tc;
use sandnet_netlink::{link_detail, Netlink};

/// Deletes every link that is sandnet's: marked with the alias, or (with a plan) the
/// planned macvtap on its link wearing the link's original MAC — unmarked only if attach
/// died between creating and marking it. When sandnet's links are all of their group,
/// they go in one request.
pub(super) async fn delete_our_links(
    nl: &Netlink,
    plan: Option<&AttachState>,
    report: &mut DetachReport,
) -> Result<()> {
    let links: Vec<_> = nl.links().await?.iter().map(link_detail).collect();
    let ours: Vec<_> = links
        .iter()
        .filter(|d| {
            is_sandnet_link(d, None)
                || plan.is_some_and(|st| st.endpoints.iter().any(|p| is_sandnet_link(d, Some(p))))
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

/// Removes sandnet's tc objects wherever they still are, from one dump of the qdiscs:
/// its redirect filters (only devices with an ingress qdisc can have any) and its root
/// qdiscs (the guard, the ingress shaper).
pub(super) async fn sweep_tc(nl: &Netlink, report: &mut DetachReport) -> Result<()> {
    let qdiscs = tc::qdiscs(nl).await?;
    for index in tc::ingress_indexes(&qdiscs) {
        for f in tc::ingress_summary(nl, index).await?.ours {
            tc::del_filter(nl, &f).await?;
            report
                .actions
                .push(format!("removed redirect filter on link {index}"));
        }
    }
    for index in crate::guard::guarded_devices(&qdiscs) {
        if crate::guard::remove(nl, index, &format!("link {index}")).await? {
            report
                .actions
                .push(format!("removed sandnet's root qdisc on link {index}"));
        }
    }
    Ok(())
}
