//! Helpers of the network tests (`agent_*.rs`): the model values they request and a raw
//! ttrpc client for what the model cannot express.

use super::AgentNs;
use sandnet_agent_proto::agent_ttrpc;
use sandnet_model::{Family, Interface, LinkKind, Route, RouteScope};

/// The MAC of the test's first link.
pub const MAC_A: &str = "02:00:5e:10:00:01";
/// The MAC of the test's second link.
pub const MAC_B: &str = "02:00:5e:10:00:02";

/// A physical interface named `name`, found by `mac`, with `mtu` and `addrs`.
pub fn iface(name: &str, mac: &str, mtu: u32, addrs: &[&str]) -> Interface {
    Interface {
        name: name.into(),
        kind: LinkKind::Physical,
        mac: Some(mac.parse().unwrap()),
        mtu,
        addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        flags: 0,
    }
}

/// A route of the agent's model; the family follows `dest`.
pub fn route(
    dest: &str,
    gw: Option<&str>,
    dev: &str,
    scope: RouteScope,
    mtu: Option<u32>,
) -> Route {
    let dest: sandnet_model::IpNet = dest.parse().unwrap();
    Route {
        family: Family::of(&dest.addr()),
        dest,
        gateway: gw.map(|g| g.parse().unwrap()),
        device: dev.into(),
        source: None,
        scope,
        mtu,
        flags: 0,
    }
}

/// The generated ttrpc client on a fresh connection to the agent.
pub async fn raw_client(env: &AgentNs) -> agent_ttrpc::AgentServiceClient {
    let s = tokio::net::UnixStream::connect(&env.sock).await.unwrap();
    let c = sandnet_agent_proto::ttrpc::r#async::Client::new(
        sandnet_agent_proto::ttrpc::r#async::transport::Socket::new(s),
    );
    agent_ttrpc::AgentServiceClient::new(c)
}

/// A ttrpc context with a 5 s timeout.
pub fn ttrpc_ctx() -> sandnet_agent_proto::ttrpc::context::Context {
    sandnet_agent_proto::ttrpc::context::with_timeout(5_000_000_000)
}
