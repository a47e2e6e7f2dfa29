//! Routes: `types.Route` to and from a model [`Route`], including the forms of `dest` and
//! `source` Kata's runtime and agent write.

use super::*;

/// A model route as `types.Route`: `dest` always written out (`0.0.0.0/0` for a default
/// route, which Kata's agent also accepts), the real family, `mtu` in the sandnet
/// extension field.
pub fn route_to_proto(r: &Route) -> types::Route {
    types::Route {
        dest: r.dest.to_string(),
        gateway: r.gateway.map(|g| g.to_string()).unwrap_or_default(),
        device: r.device.clone(),
        source: r.source.map(|s| s.to_string()).unwrap_or_default(),
        scope: u32::from(r.scope.to_raw()),
        family: proto_family(r.family).into(),
        flags: r.flags,
        mtu: r.mtu.unwrap_or(0),
        ..Default::default()
    }
}

fn parse_dest(dest: &str, family: Family) -> Result<IpNet, ConvertError> {
    let dest = dest.trim();
    if dest.is_empty() || dest == "default" {
        return Ok(match family {
            Family::V4 => IpNet::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            Family::V6 => IpNet::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
        }
        .expect("prefix 0 is valid"));
    }
    let net = match dest.split_once('/') {
        Some((a, l)) => make_net("Route.dest", parse_ip("Route.dest", a)?, l)?,
        None => {
            let ip = parse_ip("Route.dest", dest)?;
            // A bare unspecified address is how Kata's own agent lists a gateway
            // route's dest; read it as a default route. Any other bare address is a host.
            let len = if ip.is_unspecified() {
                0
            } else {
                max_prefix(&ip)
            };
            IpNet::new(ip, len).expect("length within the family's range")
        }
    };
    if net.trunc() != net {
        return Err(ConvertError::HostBitsSet(
            net.to_string(),
            net.trunc().to_string(),
        ));
    }
    Ok(net)
}

/// A `types.Route` as a model route. The family comes from `dest`, else from `gateway`,
/// else from `source`, else from the `family` field (an empty `dest` is a default route of
/// that family).
/// `source` may be `addr` or `addr/len`.
pub fn route_from_proto(p: &types::Route) -> Result<Route, ConvertError> {
    if p.device.trim().is_empty() {
        return Err(ConvertError::Missing("Route.device"));
    }
    check_name(&p.device)?;
    let gateway = if p.gateway.trim().is_empty() {
        None
    } else {
        Some(parse_ip("Route.gateway", &p.gateway)?)
    };
    // `addr` or `addr/len`; its family is checked against the route's below.
    let source = if p.source.trim().is_empty() {
        None
    } else {
        let a = p.source.trim().split('/').next().unwrap_or_default();
        Some(parse_ip("Route.source", a)?)
    };
    let family = if !p.dest.trim().is_empty() && p.dest.trim() != "default" {
        let a = p.dest.trim().split('/').next().unwrap_or_default();
        Family::of(&parse_ip("Route.dest", a)?)
    } else if let Some(a) = gateway.or(source) {
        Family::of(&a)
    } else {
        model_family(&p.family)
    };
    let dest = parse_dest(&p.dest, family)?;
    for (field, a) in [("Route.gateway", gateway), ("Route.source", source)] {
        if let Some(a) = a {
            if Family::of(&a) != family {
                return Err(ConvertError::FamilyMismatch {
                    field,
                    value: a.to_string(),
                    family,
                });
            }
        }
    }
    let scope = u8::try_from(p.scope)
        .ok()
        .and_then(RouteScope::from_raw)
        .ok_or(ConvertError::BadScope(p.scope))?;
    Ok(Route {
        dest,
        gateway,
        device: p.device.trim().to_string(),
        source,
        scope,
        family,
        mtu: (p.mtu != 0).then_some(p.mtu),
        flags: p.flags,
    })
}
