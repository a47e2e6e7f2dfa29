//! `sandnet.Stats`: the guest's own counters of its interfaces (`IFLA_STATS64` of every
//! link but loopback), for `sandnet stats`.

use crate::error::AgentError;
use crate::service::{log_result, Agent};
use async_trait::async_trait;
use netlink_packet_route::link::{LinkFlags, LinkMessage};
use sandnet_agent_proto::sandnet::{
    InterfaceCounters, InterfaceStatsRequest, InterfaceStatsResponse,
};
use sandnet_agent_proto::ttrpc::{self, r#async::TtrpcContext};
use sandnet_agent_proto::{client::MAX_INTERFACES, interface_counters, sandnet_ttrpc};
use std::time::Instant;

/// One link's entry; `None` for loopback.
fn counters(l: &LinkMessage) -> Option<InterfaceCounters> {
    if l.header.flags.contains(LinkFlags::Loopback) {
        return None;
    }
    let d = sandnet_netlink::link_detail(l);
    let mac = d.interface.mac.map(|m| m.to_string()).unwrap_or_default();
    let c = sandnet_netlink::link_counters(l).unwrap_or_default();
    Some(interface_counters(d.interface.name, mac, &c))
}

#[async_trait]
impl sandnet_ttrpc::Stats for Agent {
    async fn interface_stats(
        &self,
        _ctx: &TtrpcContext,
        _req: InterfaceStatsRequest,
    ) -> ttrpc::Result<InterfaceStatsResponse> {
        let t = Instant::now();
        let r: Result<_, AgentError> = async {
            let links = self.net.netlink().links().await?;
            Ok(InterfaceStatsResponse {
                // The host accepts this many; a guest with more sends the first ones.
                interfaces: links
                    .iter()
                    .filter_map(counters)
                    .take(MAX_INTERFACES)
                    .collect(),
                ..Default::default()
            })
        }
        .await;
        if r.is_err() {
            log_result("InterfaceStats", t, &r);
        }
        Ok(r?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::link::LinkAttribute;
    use netlink_packet_route::link::Stats64;

    #[test]
    fn a_link_message_becomes_its_counters() {
        let mut l = LinkMessage::default();
        l.attributes.push(LinkAttribute::IfName("eth0".into()));
        l.attributes
            .push(LinkAttribute::Address(vec![2, 0, 0, 0, 0, 0xab]));
        let mut st = Stats64::default();
        st.rx_bytes = 100;
        st.tx_packets = 3;
        st.rx_dropped = 1;
        l.attributes.push(LinkAttribute::Stats64(st));
        let c = counters(&l).unwrap();
        assert_eq!(c.name, "eth0");
        assert_eq!(c.hw_addr, "02:00:00:00:00:ab");
        assert_eq!((c.rx_bytes, c.tx_packets, c.rx_dropped), (100, 3, 1));
        l.header.flags = LinkFlags::Loopback;
        assert!(counters(&l).is_none());
    }
}
