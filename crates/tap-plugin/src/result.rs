//! The ADD result: `prevResult` with everything kept (every IP of both families, routes with
//! their MTU, DNS) and two interfaces added, in the shape `tc-redirect-tap` made common (so
//! firecracker-go-sdk and other readers of it work unchanged):
//!
//! - the tap, `sandbox` = the netns path (where a VMM opens it), `mac` = the guest's MAC;
//! - the VM's NIC, a pseudo-interface of the same name whose `sandbox` is the container ID
//!   (the spec's "ID unique to the virtualized sandbox" for interfaces of a VM), with the
//!   guest's MAC.
//!
//! The IPs that were on `CNI_IFNAME` are pointed at the VM's entry rather than copied: the
//! guest is where those addresses are used (under tcfilter the veth keeps them in the
//! namespace, where they do nothing, since its traffic is redirected before the stack sees
//! it; under macvtap they moved off the veth). Each address is listed once, so a reader
//! counting addresses per interface is not misled.

use crate::error::PluginError;
use sandnet_cni::{CniResult, ResultInterface};
use serde_json::Value;

/// What ADD made, as the result shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapEntry {
    /// The tap's (or macvtap's) name.
    pub name: String,
    /// The guest's MAC.
    pub mac: String,
    /// The link's MTU (the tap has the same).
    pub mtu: u32,
}

/// `prevResult` plus the tap and the VM's NIC (`sandbox` = `container_id`), in `version`.
pub fn with_tap(
    prev: &Value,
    version: &str,
    (netns, container_id): (&str, &str),
    ifname: &str,
    tap: &TapEntry,
) -> Result<Value, PluginError> {
    let mut r = CniResult::from_value(prev.clone(), version).map_err(PluginError::PrevResult)?;
    let pod_if = r
        .interfaces
        .iter()
        .position(|i| i.name == ifname && i.sandbox.as_deref().is_none_or(|s| s == netns));
    r.interfaces.push(ResultInterface {
        name: tap.name.clone(),
        mac: Some(tap.mac.clone()),
        mtu: Some(tap.mtu),
        sandbox: Some(netns.to_string()),
        ..ResultInterface::default()
    });
    r.interfaces.push(ResultInterface {
        name: tap.name.clone(),
        mac: Some(tap.mac.clone()),
        mtu: Some(tap.mtu),
        sandbox: Some(container_id.to_string()),
        ..ResultInterface::default()
    });
    let vm_index = r.interfaces.len() - 1;
    for ip in &mut r.ips {
        if ip.interface.is_some() && ip.interface == pod_if {
            ip.interface = Some(vm_index);
        }
    }
    r.cni_version = version.to_string();
    r.to_value(version).map_err(PluginError::PrevResult)
}

/// Parses `prevResult` (CHECK, and ADD before touching anything).
pub fn parse_prev(prev: &Value, version: &str) -> Result<CniResult, PluginError> {
    CniResult::from_value(prev.clone(), version).map_err(PluginError::PrevResult)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tap_is_added_and_ips_follow_it() {
        let prev = json!({"cniVersion":"1.1.0",
            "interfaces":[{"name":"cni0","mac":"aa:aa:aa:aa:aa:01"},
                          {"name":"veth1","mac":"aa:aa:aa:aa:aa:02"},
                          {"name":"eth0","mac":"aa:aa:aa:aa:aa:03","sandbox":"/run/netns/p"}],
            "ips":[{"address":"10.1.0.2/24","gateway":"10.1.0.1","interface":2},
                   {"address":"fd00::2/64","gateway":"fd00::1","interface":2}],
            "routes":[{"dst":"0.0.0.0/0","mtu":1400},{"dst":"::/0"}],
            "dns":{"nameservers":["10.1.0.1"]}});
        let tap = TapEntry {
            name: "sntap2".into(),
            mac: "aa:aa:aa:aa:aa:03".into(),
            mtu: 1500,
        };
        let v = with_tap(&prev, "1.1.0", ("/run/netns/p", "c1"), "eth0", &tap).unwrap();
        assert_eq!(v["interfaces"][3]["name"], "sntap2");
        assert_eq!(v["interfaces"][3]["sandbox"], "/run/netns/p");
        assert_eq!(v["interfaces"][3]["mtu"], 1500);
        assert_eq!(v["interfaces"][4]["name"], "sntap2");
        assert_eq!(v["interfaces"][4]["sandbox"], "c1");
        assert_eq!(v["interfaces"][4]["mac"], "aa:aa:aa:aa:aa:03");
        assert_eq!(v["ips"].as_array().unwrap().len(), 2);
        assert_eq!(v["ips"][0]["interface"], 4);
        assert_eq!(v["ips"][1]["interface"], 4);
        assert_eq!(v["routes"][0]["mtu"], 1400);
        assert_eq!(v["dns"]["nameservers"][0], "10.1.0.1");
        assert!(parse_prev(&json!({"ips": 3}), "1.1.0").is_err());
    }
}
