//! `tapName`: sandnet names its taps (`sntap<ifindex>`, `snmvt<ifindex>`); a tap asked to
//! have another name is renamed after attach, and deleted by that name on DEL (sandnet's
//! own detach looks for the name it chose; the filters go by their marks either way).

use crate::error::PluginError;
use netlink_packet_route::link::{LinkAttribute, LinkFlags};
use sandnet_host::endpoint::is_sandnet_alias;
use sandnet_host::netlink::link_detail;
use sandnet_host::Netlink;

fn net(what: String) -> impl FnOnce(sandnet_host::NetlinkError) -> PluginError {
    move |e| PluginError::host(what)(e.into())
}

/// Checks a requested tap name (an interface name: 1 to 15 bytes, no '/', ':' or space).
pub fn check_name(name: &str) -> Result<(), PluginError> {
    if name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name.contains(['/', ':', '\0'])
        || name.contains(char::is_whitespace)
    {
        return Err(PluginError::InvalidConfig(format!(
            "tapName {name:?} is not a valid interface name"
        )));
    }
    Ok(())
}

/// Renames sandnet's tap `from` to `to` (down, rename, up: a link that is up cannot be
/// renamed).
pub async fn rename_tap(nl: &Netlink, from: &str, to: &str) -> Result<(), PluginError> {
    let l = nl
        .link_by_name(from)
        .await
        .map_err(net(format!("finding {from}")))?
        .ok_or_else(|| {
            PluginError::host(format!("renaming {from}"))(sandnet_host::HostError::LinkNotFound(
                from.to_string(),
            ))
        })?;
    let index = l.header.index;
    nl.set_up(index, false, from)
        .await
        .map_err(net(format!("setting {from} down")))?;
    nl.set_link(
        index,
        vec![LinkAttribute::IfName(to.to_string())],
        None::<(LinkFlags, LinkFlags)>,
        || format!("rename {from} to {to}"),
    )
    .await
    .map_err(net(format!("renaming {from} to {to}")))?;
    nl.set_up(index, true, to)
        .await
        .map_err(net(format!("setting {to} up")))
}

/// Deletes the renamed tap `name` if it is there and sandnet's (marked).
pub async fn delete_renamed(nl: &Netlink, name: &str) -> Result<(), PluginError> {
    let Some(l) = nl
        .link_by_name(name)
        .await
        .map_err(net(format!("finding {name}")))?
    else {
        return Ok(());
    };
    let d = link_detail(&l);
    if is_sandnet_alias(d.alias.as_deref()) {
        nl.del_link(d.index, name)
            .await
            .map_err(net(format!("deleting {name}")))?;
    }
    Ok(())
}
