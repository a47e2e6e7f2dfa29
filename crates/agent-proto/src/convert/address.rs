//! Addresses with prefix: `types.IPAddress` to and from an [`IpNet`].

use super::*;

/// An address as `types.IPAddress` (family from the address, mask = prefix length).
pub fn ip_net_to_proto(net: &IpNet) -> types::IPAddress {
    types::IPAddress {
        family: proto_family(Family::of(&net.addr())).into(),
        address: net.addr().to_string(),
        mask: net.prefix_len().to_string(),
        ..Default::default()
    }
}

/// A `types.IPAddress` as an address with prefix. The family is taken from the address
/// text (it cannot disagree with it); an empty or bad `mask` is an error.
pub fn ip_net_from_proto(a: &types::IPAddress) -> Result<IpNet, ConvertError> {
    let ip = parse_ip("IPAddress.address", &a.address)?;
    if a.mask.trim().is_empty() {
        return Err(ConvertError::BadPrefix {
            field: "IPAddress.mask",
            addr: ip.to_string(),
            value: String::new(),
        });
    }
    make_net("IPAddress.mask", ip, &a.mask)
}
