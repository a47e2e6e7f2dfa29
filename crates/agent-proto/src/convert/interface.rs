//! Interfaces: `types.Interface` to and from a model [`Interface`].

use super::*;

/// A model interface as `types.Interface` (`device` = `name`, `type` = the link kind).
pub fn interface_to_proto(i: &Interface) -> types::Interface {
    types::Interface {
        device: i.name.clone(),
        name: i.name.clone(),
        IPAddresses: i.addresses.iter().map(ip_net_to_proto).collect(),
        mtu: u64::from(i.mtu),
        hwAddr: i.mac.map(|m| m.to_string()).unwrap_or_default(),
        type_: i.kind.as_str().to_string(),
        raw_flags: i.flags,
        ..Default::default()
    }
}

/// A `types.Interface` as a model interface. `name` falls back to `device`; an empty
/// `hwAddr` means no MAC; an empty `type` is a physical link.
pub fn interface_from_proto(p: &types::Interface) -> Result<Interface, ConvertError> {
    let name = if p.name.is_empty() {
        p.device.clone()
    } else {
        p.name.clone()
    };
    check_name(&name)?;
    let mac = if p.hwAddr.trim().is_empty() {
        None
    } else {
        Some(MacAddr::from_str(p.hwAddr.trim())?)
    };
    let mtu = u32::try_from(p.mtu).map_err(|_| ConvertError::OutOfRange {
        field: "Interface.mtu",
        value: i64::try_from(p.mtu).unwrap_or(i64::MAX),
    })?;
    let addresses = p
        .IPAddresses
        .iter()
        .map(ip_net_from_proto)
        .collect::<Result<Vec<_>, _>>()?;
    let kind = if p.type_.is_empty() {
        LinkKind::Physical
    } else {
        LinkKind::from(p.type_.as_str())
    };
    Ok(Interface {
        name,
        kind,
        mac,
        mtu,
        addresses,
        flags: p.raw_flags,
    })
}
