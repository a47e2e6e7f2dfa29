//! Neighbours: `types.ARPNeighbor` to and from a model [`Neighbor`].

use super::*;

/// A model neighbour as `types.ARPNeighbor` (the address carries no mask, as Kata's
/// runtime sends it).
pub fn neighbor_to_proto(n: &Neighbor) -> types::ARPNeighbor {
    types::ARPNeighbor {
        toIPAddress: protobuf::MessageField::some(types::IPAddress {
            family: proto_family(Family::of(&n.ip)).into(),
            address: n.ip.to_string(),
            ..Default::default()
        }),
        device: n.device.clone(),
        lladdr: n.mac.to_string(),
        state: i32::from(n.state.to_raw()),
        flags: i32::from(n.flags),
        ..Default::default()
    }
}

/// A `types.ARPNeighbor` as a model neighbour; address, device and `lladdr` are required.
pub fn neighbor_from_proto(p: &types::ARPNeighbor) -> Result<Neighbor, ConvertError> {
    let addr = p
        .toIPAddress
        .as_ref()
        .ok_or(ConvertError::Missing("ARPNeighbor.toIPAddress"))?;
    let ip = parse_ip("ARPNeighbor.toIPAddress", &addr.address)?;
    if p.device.trim().is_empty() {
        return Err(ConvertError::Missing("ARPNeighbor.device"));
    }
    if p.lladdr.trim().is_empty() {
        return Err(ConvertError::Missing("ARPNeighbor.lladdr"));
    }
    let mac = MacAddr::from_str(p.lladdr.trim())?;
    let state = u16::try_from(p.state)
        .ok()
        .and_then(NeighborState::from_raw)
        .ok_or(ConvertError::BadState(p.state))?;
    let flags = u8::try_from(p.flags).map_err(|_| ConvertError::OutOfRange {
        field: "ARPNeighbor.flags",
        value: i64::from(p.flags),
    })?;
    Ok(Neighbor {
        ip,
        mac,
        device: p.device.trim().to_string(),
        state,
        flags,
    })
}
