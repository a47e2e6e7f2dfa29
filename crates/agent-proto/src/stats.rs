//! `sandnet.Stats/InterfaceStats`: the guest's own counters of its interfaces, checked as
//! hostile input (at most [`MAX_INTERFACES`] entries, counted before decoding; names short
//! and printable; MACs that parse).

use crate::client::{check_count, AgentClient, ClientError, MAX_INTERFACES};
use crate::convert::{ConvertError, MAX_IFNAME_LEN};
use crate::generated::sandnet;
use sandnet_model::{LinkCounters, MacAddr};
use serde::{Deserialize, Serialize};
use std::str::FromStr;

/// The ttrpc name of sandnet's statistics service.
const STATS_SERVICE: &str = "sandnet.Stats";
/// The method.
const METHOD: &str = "InterfaceStats";

/// One guest interface's counters, as the guest kernel keeps them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestCounters {
    /// The interface's name in the guest (checked: 1-15 printable ASCII characters).
    pub name: String,
    /// Its MAC, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    /// Its counters.
    #[serde(flatten)]
    pub counters: LinkCounters,
}

/// The wire entry of one guest interface (what the agent sends).
pub fn interface_counters(
    name: String,
    hw_addr: String,
    c: &LinkCounters,
) -> sandnet::InterfaceCounters {
    sandnet::InterfaceCounters {
        name,
        hw_addr,
        rx_bytes: c.rx_bytes,
        rx_packets: c.rx_packets,
        rx_errors: c.rx_errors,
        rx_dropped: c.rx_dropped,
        tx_bytes: c.tx_bytes,
        tx_packets: c.tx_packets,
        tx_errors: c.tx_errors,
        tx_dropped: c.tx_dropped,
        ..Default::default()
    }
}

impl AgentClient {
    /// `sandnet.Stats/InterfaceStats`: every guest interface but loopback with its
    /// counters.
    pub async fn interface_stats(&self) -> Result<Vec<GuestCounters>, ClientError> {
        let req = sandnet::InterfaceStatsRequest::new();
        let r: sandnet::InterfaceStatsResponse = self
            .counted_call(STATS_SERVICE, METHOD, &req, ("interfaces", MAX_INTERFACES))
            .await?;
        stats_reply(&r)
    }
}

/// An interface name as the other calls check it ([`crate::convert`]), and printable
/// ASCII besides: these names end up in text output and Prometheus labels.
fn check_name(name: &str) -> Result<(), ConvertError> {
    crate::convert::check_name(name)?;
    if name.chars().all(|c| c.is_ascii_graphic()) {
        Ok(())
    } else {
        let shown: String = name.chars().take(2 * MAX_IFNAME_LEN).collect();
        Err(ConvertError::BadName(shown))
    }
}

/// The `InterfaceStats` reply as [`AgentClient::interface_stats`] returns it; a bad name or
/// MAC fails the whole answer.
pub fn stats_reply(r: &sandnet::InterfaceStatsResponse) -> Result<Vec<GuestCounters>, ClientError> {
    check_count(METHOD, "interfaces", r.interfaces.len(), MAX_INTERFACES)?;
    let convert = |source| ClientError::Convert {
        method: METHOD,
        source,
    };
    r.interfaces
        .iter()
        .map(|i| {
            check_name(&i.name).map_err(convert)?;
            let mac = match i.hw_addr.as_str() {
                "" => None,
                m if m.len() > 17 => {
                    return Err(convert(ConvertError::BadName(format!(
                        "{}: MAC too long",
                        i.name
                    ))))
                }
                m => Some(
                    MacAddr::from_str(m)
                        .map_err(ConvertError::from)
                        .map_err(convert)?,
                ),
            };
            Ok(GuestCounters {
                name: i.name.clone(),
                mac,
                counters: LinkCounters {
                    rx_bytes: i.rx_bytes,
                    rx_packets: i.rx_packets,
                    rx_errors: i.rx_errors,
                    rx_dropped: i.rx_dropped,
                    tx_bytes: i.tx_bytes,
                    tx_packets: i.tx_packets,
                    tx_errors: i.tx_errors,
                    tx_dropped: i.tx_dropped,
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, mac: &str) -> sandnet::InterfaceCounters {
        sandnet::InterfaceCounters {
            name: name.into(),
            hw_addr: mac.into(),
            rx_bytes: 10,
            tx_packets: 2,
            ..Default::default()
        }
    }

    fn reply(v: Vec<sandnet::InterfaceCounters>) -> sandnet::InterfaceStatsResponse {
        sandnet::InterfaceStatsResponse {
            interfaces: v,
            ..Default::default()
        }
    }

    #[test]
    fn good_answers_decode() {
        let r = stats_reply(&reply(vec![
            entry("eth0", "02:00:00:00:00:01"),
            entry("dummy-1", ""),
        ]))
        .unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].name, "eth0");
        assert_eq!(r[0].mac.unwrap().to_string(), "02:00:00:00:00:01");
        assert_eq!((r[0].counters.rx_bytes, r[0].counters.tx_packets), (10, 2));
        assert_eq!(r[1].mac, None);
    }

    #[test]
    fn hostile_answers_are_refused() {
        for bad in ["", "\x1b[2Jeth0", "eth 0", "a/b", "sixteen-chars-xx", "é"] {
            let e = stats_reply(&reply(vec![entry(bad, "")])).unwrap_err();
            assert!(matches!(e, ClientError::Convert { .. }), "{bad:?}: {e:?}");
        }
        let long = "x".repeat(1 << 20);
        let e = stats_reply(&reply(vec![entry(&long, "")]))
            .unwrap_err()
            .to_string();
        assert!(e.len() < 200, "{}", e.len());
        assert!(stats_reply(&reply(vec![entry("eth0", "zz")])).is_err());
        assert!(stats_reply(&reply(vec![entry("eth0", &"1".repeat(100))])).is_err());
        let e = stats_reply(&reply(vec![entry("eth0", ""); MAX_INTERFACES + 1])).unwrap_err();
        assert!(matches!(e, ClientError::TooMany { .. }), "{e:?}");
    }
}
