//! The ttrpc services: `grpc.AgentService` (networking subset), `grpc.Health`,
//! `sandnet.Exec`.

use crate::error::AgentError;
use crate::exec::Reaper;
use crate::net::NetApplier;
use crate::sandbox::SystemFiles;
use async_trait::async_trait;
use sandnet_agent_proto::protobuf::well_known_types::empty::Empty;
use sandnet_agent_proto::ttrpc::{self, r#async::TtrpcContext};
use sandnet_agent_proto::{
    agent, agent_ttrpc, convert, health, health_ttrpc, requests, sandnet, sandnet_ttrpc, types,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Everything the services need.
pub struct Agent {
    /// Netlink applier for the agent's namespace.
    pub net: NetApplier,
    /// Where hostname and resolv.conf go.
    pub files: SystemFiles,
    /// Child process reaper for Exec.
    pub reaper: Reaper,
}

/// All services, ready for `Server::register_service`.
pub fn services(agent: Arc<Agent>) -> HashMap<String, ttrpc::r#async::Service> {
    let mut s = agent_ttrpc::create_agent_service(agent.clone());
    s.extend(health_ttrpc::create_health(agent.clone()));
    s.extend(sandnet_ttrpc::create_exec(agent));
    s
}

fn log_result<T>(method: &str, started: Instant, r: &Result<T, AgentError>) {
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    match r {
        Ok(_) => tracing::info!(method, ms, "ok"),
        Err(e) => tracing::warn!(method, ms, code = ?e.code(), error = %e, "failed"),
    }
}

#[async_trait]
impl agent_ttrpc::AgentService for Agent {
    async fn update_interface(
        &self,
        _ctx: &TtrpcContext,
        req: agent::UpdateInterfaceRequest,
    ) -> ttrpc::Result<types::Interface> {
        let t = Instant::now();
        let r = async {
            let want = requests::update_interface(&req)?;
            let got = self.net.update_interface(&want).await?;
            Ok(convert::interface_to_proto(&got))
        }
        .await;
        log_result("UpdateInterface", t, &r);
        Ok(r?)
    }

    async fn update_routes(
        &self,
        _ctx: &TtrpcContext,
        req: agent::UpdateRoutesRequest,
    ) -> ttrpc::Result<agent::Routes> {
        let t = Instant::now();
        let r = async {
            let routes = requests::update_routes(&req)?;
            let now = self.net.update_routes(&routes).await?;
            Ok(routes_msg(&now))
        }
        .await;
        log_result("UpdateRoutes", t, &r);
        Ok(r?)
    }

    async fn list_interfaces(
        &self,
        _ctx: &TtrpcContext,
        _req: agent::ListInterfacesRequest,
    ) -> ttrpc::Result<agent::Interfaces> {
        let cfg = self.net.list().await.map_err(ttrpc::Error::from)?;
        Ok(agent::Interfaces {
            Interfaces: cfg
                .interfaces
                .iter()
                .map(convert::interface_to_proto)
                .collect(),
            ..Default::default()
        })
    }

    async fn list_routes(
        &self,
        _ctx: &TtrpcContext,
        _req: agent::ListRoutesRequest,
    ) -> ttrpc::Result<agent::Routes> {
        let cfg = self.net.list().await.map_err(ttrpc::Error::from)?;
        Ok(routes_msg(&cfg.routes))
    }

    async fn add_arp_neighbors(
        &self,
        _ctx: &TtrpcContext,
        req: agent::AddARPNeighborsRequest,
    ) -> ttrpc::Result<Empty> {
        let t = Instant::now();
        let r = async {
            let ns = requests::add_arp_neighbors(&req)?;
            self.net.add_neighbors(&ns).await?;
            Ok(Empty::new())
        }
        .await;
        log_result("AddARPNeighbors", t, &r);
        Ok(r?)
    }

    async fn create_sandbox(
        &self,
        _ctx: &TtrpcContext,
        req: agent::CreateSandboxRequest,
    ) -> ttrpc::Result<Empty> {
        let t = Instant::now();
        let r = async {
            let (hostname, dns) = requests::create_sandbox(&req)?;
            self.files.set_hostname(&hostname)?;
            self.files.write_resolv_conf(&dns)?;
            Ok(Empty::new())
        }
        .await;
        log_result("CreateSandbox", t, &r);
        Ok(r?)
    }
}

fn routes_msg(routes: &[sandnet_model::Route]) -> agent::Routes {
    agent::Routes {
        Routes: routes.iter().map(convert::route_to_proto).collect(),
        ..Default::default()
    }
}

#[async_trait]
impl health_ttrpc::Health for Agent {
    async fn check(
        &self,
        _ctx: &TtrpcContext,
        _req: health::CheckRequest,
    ) -> ttrpc::Result<health::HealthCheckResponse> {
        Ok(health::HealthCheckResponse {
            status: health::health_check_response::ServingStatus::SERVING.into(),
            ..Default::default()
        })
    }

    async fn version(
        &self,
        _ctx: &TtrpcContext,
        _req: health::CheckRequest,
    ) -> ttrpc::Result<health::VersionCheckResponse> {
        Ok(health::VersionCheckResponse {
            grpc_version: "ttrpc".into(),
            agent_version: format!("sandnet-agent {}", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        })
    }
}

#[async_trait]
impl sandnet_ttrpc::Exec for Agent {
    async fn exec(
        &self,
        _ctx: &TtrpcContext,
        req: sandnet::ExecRequest,
    ) -> ttrpc::Result<sandnet::ExecResponse> {
        let t = Instant::now();
        let timeout = (req.timeout_ms > 0).then(|| Duration::from_millis(req.timeout_ms));
        let r = self
            .reaper
            .run(&req.args, &req.env, req.stdin, timeout)
            .await
            .map(|(code, out, err)| sandnet::ExecResponse {
                exit_code: code,
                stdout: out,
                stderr: err,
                ..Default::default()
            });
        log_result("Exec", t, &r);
        Ok(r?)
    }
}
