//! The guest's network, applied through its agent.

use crate::error::{agent, Result};
use sandnet_agent_proto::AgentClient;
use sandnet_model::NetworkConfig;

/// Applies a network to a guest through its agent, in Kata's order: every interface, then
/// the routes, then the neighbours, then `CreateSandbox` with hostname and DNS.
pub async fn apply_network(
    client: &AgentClient,
    hostname: &str,
    net: &NetworkConfig,
) -> Result<()> {
    for i in &net.interfaces {
        client
            .update_interface(i)
            .await
            .map_err(agent("configure guest interface"))?;
    }
    if !net.routes.is_empty() {
        client
            .update_routes(&net.routes)
            .await
            .map_err(agent("configure guest routes"))?;
    }
    if !net.neighbors.is_empty() {
        client
            .add_arp_neighbors(&net.neighbors)
            .await
            .map_err(agent("configure guest neighbours"))?;
    }
    client
        .create_sandbox(hostname, &net.dns.clone().unwrap_or_default())
        .await
        .map_err(agent("create sandbox (hostname, DNS)"))?;
    Ok(())
}
