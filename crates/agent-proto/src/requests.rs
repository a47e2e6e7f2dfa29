//! What the agent makes of each request before it touches the system: the request message
//! turned into validated model values. The agent's handlers call these, so the fuzz targets
//! exercise exactly the path a host frame takes before any netlink call.

use crate::convert::{self, ConvertError};
use crate::generated::agent;
use sandnet_model::{Dns, Interface, Neighbor, Route};

/// Longest hostname the agent sets (`HOST_NAME_MAX`).
pub const MAX_HOSTNAME_LEN: usize = 64;

/// `UpdateInterface`: the interface to configure.
pub fn update_interface(req: &agent::UpdateInterfaceRequest) -> Result<Interface, ConvertError> {
    let p = req
        .interface
        .as_ref()
        .ok_or(ConvertError::Missing("UpdateInterface: interface"))?;
    convert::interface_from_proto(p)
}

/// `UpdateRoutes`: the routes to install (none when the list is absent).
pub fn update_routes(req: &agent::UpdateRoutesRequest) -> Result<Vec<Route>, ConvertError> {
    req.routes
        .as_ref()
        .map(|r| r.Routes.as_slice())
        .unwrap_or_default()
        .iter()
        .map(convert::route_from_proto)
        .collect()
}

/// `AddARPNeighbors`: the neighbour entries to install.
pub fn add_arp_neighbors(
    req: &agent::AddARPNeighborsRequest,
) -> Result<Vec<Neighbor>, ConvertError> {
    req.neighbors
        .as_ref()
        .map(|n| n.ARPNeighbors.as_slice())
        .unwrap_or_default()
        .iter()
        .map(convert::neighbor_from_proto)
        .collect()
}

/// `CreateSandbox`: the hostname (empty: leave it alone) and the DNS settings.
pub fn create_sandbox(req: &agent::CreateSandboxRequest) -> Result<(String, Dns), ConvertError> {
    let dns = convert::dns_from_lines(&req.dns)?;
    check_hostname(&req.hostname)?;
    Ok((req.hostname.clone(), dns))
}

/// A hostname the agent accepts: empty, or up to 64 of `[A-Za-z0-9._-]`.
pub fn check_hostname(name: &str) -> Result<(), ConvertError> {
    let valid = name.len() <= MAX_HOSTNAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(ConvertError::BadHostname(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_interface_is_named() {
        let e = update_interface(&agent::UpdateInterfaceRequest::new()).unwrap_err();
        assert_eq!(e.to_string(), "UpdateInterface: interface is missing");
    }

    #[test]
    fn empty_lists_are_empty() {
        assert!(update_routes(&agent::UpdateRoutesRequest::new())
            .unwrap()
            .is_empty());
        assert!(add_arp_neighbors(&agent::AddARPNeighborsRequest::new())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn hostnames() {
        assert!(check_hostname("").is_ok());
        assert!(check_hostname("pod-1.example").is_ok());
        let e = check_hostname("a b").unwrap_err().to_string();
        assert_eq!(e, "bad hostname \"a b\"");
        assert!(check_hostname(&"a".repeat(65)).is_err());
        let req = agent::CreateSandboxRequest {
            hostname: "h".into(),
            dns: vec!["nameserver 10.0.0.1".into()],
            ..Default::default()
        };
        let (h, dns) = create_sandbox(&req).unwrap();
        assert_eq!(h, "h");
        assert!(!dns.is_empty());
    }
}
