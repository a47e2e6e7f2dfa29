//! Property test for the one model ↔ proto mapping the unit tests' round trips left out:
//! DNS as the `resolv.conf` lines of `CreateSandboxRequest.dns`, through the wire and back.

use proptest::prelude::*;
use sandnet_agent_proto::protobuf::Message;
use sandnet_agent_proto::{agent, convert, requests};
use sandnet_model::Dns;
use std::net::IpAddr;

fn arb_dns() -> impl Strategy<Value = Dns> {
    let ip = prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
    ];
    let words = || proptest::collection::vec("[A-Za-z0-9._:-]{1,20}", 0..4);
    (proptest::collection::vec(ip, 0..4), words(), words()).prop_map(
        |(nameservers, search, options)| Dns {
            nameservers,
            search,
            options,
        },
    )
}

proptest! {
    #[test]
    fn dns_round_trips_through_create_sandbox(dns in arb_dns(), host in "[a-z0-9-]{0,20}") {
        let req = agent::CreateSandboxRequest {
            hostname: host.clone(),
            dns: convert::dns_to_lines(&dns),
            ..Default::default()
        };
        let bytes = req.write_to_bytes().unwrap();
        let back = agent::CreateSandboxRequest::parse_from_bytes(&bytes).unwrap();
        let (h, d) = requests::create_sandbox(&back).unwrap();
        prop_assert_eq!(h, host);
        prop_assert_eq!(d, dns);
    }
}
