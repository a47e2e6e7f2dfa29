//! The ttrpc services: `grpc.AgentService` (networking and containers), `grpc.Health`,
//! `sandnet.Exec`; `sandnet.Stats` is in [`crate::stats`].

use crate::container::{stdio::Stream, Containers};
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
    /// The containers (OOM watch running).
    pub containers: Containers,
}

/// All services, ready for `Server::register_service`.
pub fn services(agent: Arc<Agent>) -> HashMap<String, ttrpc::r#async::Service> {
    let mut s = agent_ttrpc::create_agent_service(agent.clone());
    s.extend(health_ttrpc::create_health(agent.clone()));
    s.extend(sandnet_ttrpc::create_exec(agent.clone()));
    s.extend(sandnet_ttrpc::create_stats(agent));
    s
}

pub(crate) fn log_result<T>(method: &str, started: Instant, r: &Result<T, AgentError>) {
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    match r {
        Ok(_) => tracing::info!(method, ms, "ok"),
        Err(e) => tracing::warn!(method, ms, code = ?e.code(), error = %e, "failed"),
    }
}

/// Like [`log_result`] at debug level for success (stream and wait calls are frequent).
fn log_quiet<T>(method: &str, started: Instant, r: &Result<T, AgentError>) {
    match r {
        Ok(_) => tracing::debug!(method, ms = started.elapsed().as_secs_f64() * 1000.0, "ok"),
        Err(_) => log_result(method, started, r),
    }
}

#[async_trait]
impl agent_ttrpc::AgentService for Agent {
    async fn create_container(
        &self,
        _ctx: &TtrpcContext,
        req: agent::CreateContainerRequest,
    ) -> ttrpc::Result<Empty> {
        let t = Instant::now();
        let r = self.containers.create(req).await.map(|_| Empty::new());
        log_result("CreateContainer", t, &r);
        Ok(r?)
    }

    async fn start_container(
        &self,
        _ctx: &TtrpcContext,
        req: agent::StartContainerRequest,
    ) -> ttrpc::Result<Empty> {
        let t = Instant::now();
        let r = self
            .containers
            .start(&req.container_id)
            .await
            .map(|_| Empty::new());
        log_result("StartContainer", t, &r);
        Ok(r?)
    }

    async fn remove_container(
        &self,
        _ctx: &TtrpcContext,
        req: agent::RemoveContainerRequest,
    ) -> ttrpc::Result<Empty> {
        let t = Instant::now();
        let r = self
            .containers
            .remove(&req.container_id, req.timeout)
            .await
            .map(|_| Empty::new());
        log_result("RemoveContainer", t, &r);
        Ok(r?)
    }

    async fn exec_process(
        &self,
        _ctx: &TtrpcContext,
        req: agent::ExecProcessRequest,
    ) -> ttrpc::Result<Empty> {
        let t = Instant::now();
        let r = self.containers.exec(req).await.map(|_| Empty::new());
        log_result("ExecProcess", t, &r);
        Ok(r?)
    }

    async fn signal_process(
        &self,
        _ctx: &TtrpcContext,
        req: agent::SignalProcessRequest,
    ) -> ttrpc::Result<Empty> {
        let t = Instant::now();
        let r = self
            .containers
            .signal(&req.container_id, &req.exec_id, req.signal)
            .map(|_| Empty::new());
        log_result("SignalProcess", t, &r);
        Ok(r?)
    }

    async fn wait_process(
        &self,
        _ctx: &TtrpcContext,
        req: agent::WaitProcessRequest,
    ) -> ttrpc::Result<agent::WaitProcessResponse> {
        let t = Instant::now();
        let r = self
            .containers
            .wait(&req.container_id, &req.exec_id)
            .await
            .map(|status| agent::WaitProcessResponse {
                status,
                ..Default::default()
            });
        log_quiet("WaitProcess", t, &r);
        Ok(r?)
    }

    async fn stats_container(
        &self,
        _ctx: &TtrpcContext,
        req: agent::StatsContainerRequest,
    ) -> ttrpc::Result<agent::StatsContainerResponse> {
        let t = Instant::now();
        let r = self.containers.stats(&req.container_id);
        log_quiet("StatsContainer", t, &r);
        Ok(r?)
    }

    async fn write_stdin(
        &self,
        _ctx: &TtrpcContext,
        req: agent::WriteStreamRequest,
    ) -> ttrpc::Result<agent::WriteStreamResponse> {
        let t = Instant::now();
        let r = self
            .containers
            .write(&req.container_id, &req.exec_id, &req.data)
            .await
            .map(|n| agent::WriteStreamResponse {
                len: u32::try_from(n).unwrap_or(u32::MAX),
                ..Default::default()
            });
        log_quiet("WriteStdin", t, &r);
        Ok(r?)
    }

    async fn read_stdout(
        &self,
        _ctx: &TtrpcContext,
        req: agent::ReadStreamRequest,
    ) -> ttrpc::Result<agent::ReadStreamResponse> {
        self.read_stream("ReadStdout", Stream::Stdout, req).await
    }

    async fn read_stderr(
        &self,
        _ctx: &TtrpcContext,
        req: agent::ReadStreamRequest,
    ) -> ttrpc::Result<agent::ReadStreamResponse> {
        self.read_stream("ReadStderr", Stream::Stderr, req).await
    }

    async fn close_stdin(
        &self,
        _ctx: &TtrpcContext,
        req: agent::CloseStdinRequest,
    ) -> ttrpc::Result<Empty> {
        let t = Instant::now();
        let r = self
            .containers
            .close_stdin(&req.container_id, &req.exec_id)
            .await
            .map(|_| Empty::new());
        log_result("CloseStdin", t, &r);
        Ok(r?)
    }

    async fn tty_win_resize(
        &self,
        _ctx: &TtrpcContext,
        req: agent::TtyWinResizeRequest,
    ) -> ttrpc::Result<Empty> {
        let t = Instant::now();
        let r = self
            .containers
            .resize(&req.container_id, &req.exec_id, req.row, req.column)
            .map(|_| Empty::new());
        log_quiet("TtyWinResize", t, &r);
        Ok(r?)
    }

    async fn get_oom_event(
        &self,
        _ctx: &TtrpcContext,
        _req: agent::GetOOMEventRequest,
    ) -> ttrpc::Result<agent::OOMEvent> {
        let id = self.containers.oom_event().await;
        tracing::info!(method = "GetOOMEvent", container = %id, "ok");
        Ok(agent::OOMEvent {
            container_id: id,
            ..Default::default()
        })
    }

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

impl Agent {
    async fn read_stream(
        &self,
        method: &str,
        which: Stream,
        req: agent::ReadStreamRequest,
    ) -> ttrpc::Result<agent::ReadStreamResponse> {
        let t = Instant::now();
        let r = self
            .containers
            .read(&req.container_id, &req.exec_id, which, req.len)
            .await
            .map(|data| agent::ReadStreamResponse {
                data,
                ..Default::default()
            });
        log_quiet(method, t, &r);
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
