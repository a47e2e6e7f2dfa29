//! An async client for the agent, with typed methods on sandnet's model types.

use crate::convert::{self, ConvertError};
use crate::generated::{agent, agent_ttrpc, health, health_ttrpc, sandnet, sandnet_ttrpc, types};
use sandnet_model::{Dns, Interface, Neighbor, Route};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use ttrpc::r#async::transport::Socket;
use ttrpc::r#async::Client;

/// Per-call timeout used unless [`AgentClient::with_call_timeout`] says otherwise.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What can go wrong talking to the agent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be connected before the timeout.
    #[error("connecting to the agent at {path}: {source}")]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// Last connection error.
        source: std::io::Error,
    },
    /// The agent answered with an error status.
    #[error("{method}: agent returned {code:?}: {message}")]
    Status {
        /// RPC method.
        method: &'static str,
        /// ttrpc status code.
        code: ttrpc::Code,
        /// Status message.
        message: String,
    },
    /// The call did not complete in time.
    #[error("{method}: no answer within {timeout:?}")]
    Timeout {
        /// RPC method.
        method: &'static str,
        /// The timeout.
        timeout: Duration,
    },
    /// The transport failed (connection closed, encoding error, ...).
    #[error("{method}: {source}")]
    Transport {
        /// RPC method.
        method: &'static str,
        /// ttrpc's error.
        source: ttrpc::Error,
    },
    /// A model value could not be encoded or the answer decoded.
    #[error("{method}: {source}")]
    Convert {
        /// RPC method.
        method: &'static str,
        /// The conversion error.
        source: ConvertError,
    },
}

impl ClientError {
    /// The ttrpc status code if the agent answered with an error status.
    pub fn code(&self) -> Option<ttrpc::Code> {
        match self {
            ClientError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// What a command run with [`AgentClient::exec`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit status (128+N when killed by signal N).
    pub exit_code: i32,
    /// Everything it wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr.
    pub stderr: Vec<u8>,
}

/// A connection to a sandnet (or Kata) agent over ttrpc.
#[derive(Clone)]
pub struct AgentClient {
    agent: agent_ttrpc::AgentServiceClient,
    health: health_ttrpc::HealthClient,
    exec: sandnet_ttrpc::ExecClient,
    call_timeout: Duration,
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient")
            .field("call_timeout", &self.call_timeout)
            .finish_non_exhaustive()
    }
}

/// How a failed call is reported: the agent's error status, or the transport's failure.
pub fn status_or_transport(method: &'static str, e: ttrpc::Error) -> ClientError {
    match e {
        ttrpc::Error::RpcStatus(s) => ClientError::Status {
            method,
            code: s.code(),
            message: s.message().to_string(),
        },
        source => ClientError::Transport { method, source },
    }
}

impl AgentClient {
    /// Connects to a unix socket, retrying while it does not exist or refuses, until
    /// `timeout` has passed.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<AgentClient, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let err = match tokio::time::timeout(left, tokio::net::UnixStream::connect(path)).await
            {
                Ok(Ok(s)) => return Ok(AgentClient::from_stream(s)),
                Ok(Err(e)) => e,
                Err(_) => std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
            };
            if Instant::now() >= deadline {
                return Err(ClientError::Connect {
                    path: path.to_path_buf(),
                    source: err,
                });
            }
            tokio::time::sleep(Duration::from_millis(20).min(left)).await;
        }
    }

    /// Wraps an already-connected stream (a unix socket, a vsock stream, one end of a
    /// socketpair, a pty, ...). Must be called inside a tokio runtime.
    pub fn from_stream<S>(stream: S) -> AgentClient
    where
        S: AsyncRead + AsyncWrite + Send + Sync + 'static,
    {
        let c = Client::new(Socket::new(stream));
        AgentClient {
            agent: agent_ttrpc::AgentServiceClient::new(c.clone()),
            health: health_ttrpc::HealthClient::new(c.clone()),
            exec: sandnet_ttrpc::ExecClient::new(c),
            call_timeout: DEFAULT_CALL_TIMEOUT,
        }
    }

    /// Wraps an already-connected unix socket file descriptor (e.g. inherited from a
    /// parent). Must be called inside a tokio runtime.
    pub fn from_std_unix(stream: std::os::unix::net::UnixStream) -> std::io::Result<AgentClient> {
        stream.set_nonblocking(true)?;
        Ok(AgentClient::from_stream(tokio::net::UnixStream::from_std(
            stream,
        )?))
    }

    /// Sets the per-call timeout.
    pub fn with_call_timeout(mut self, timeout: Duration) -> AgentClient {
        self.call_timeout = timeout;
        self
    }

    /// The per-call timeout.
    pub fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    fn ctx(timeout: Duration) -> ttrpc::context::Context {
        ttrpc::context::with_timeout(i64::try_from(timeout.as_nanos()).unwrap_or(i64::MAX))
    }

    async fn call<T, F>(method: &'static str, timeout: Duration, fut: F) -> Result<T, ClientError>
    where
        F: Future<Output = ttrpc::Result<T>>,
    {
        // The server enforces `timeout` too; the local bound is a little longer so the
        // server's DEADLINE_EXCEEDED status arrives when the agent is alive.
        let local = timeout + Duration::from_millis(200);
        match tokio::time::timeout(local, fut).await {
            Ok(r) => r.map_err(|e| status_or_transport(method, e)),
            Err(_) => Err(ClientError::Timeout { method, timeout }),
        }
    }

    /// `grpc.Health/Check`: succeeds when the agent answers SERVING.
    pub async fn health_check(&self) -> Result<(), ClientError> {
        let req = health::CheckRequest::new();
        let t = self.call_timeout;
        let r = Self::call("Check", t, self.health.check(Self::ctx(t), &req)).await?;
        match r.status.enum_value() {
            Ok(health::health_check_response::ServingStatus::SERVING) => Ok(()),
            other => Err(ClientError::Status {
                method: "Check",
                code: ttrpc::Code::UNAVAILABLE,
                message: format!("agent is not serving ({other:?})"),
            }),
        }
    }

    /// `grpc.Health/Version`: the agent's version string.
    pub async fn version(&self) -> Result<String, ClientError> {
        let req = health::CheckRequest::new();
        let t = self.call_timeout;
        let r = Self::call("Version", t, self.health.version(Self::ctx(t), &req)).await?;
        Ok(r.agent_version)
    }

    /// `UpdateInterface`: configures the NIC whose MAC is `iface.mac`; returns it as the
    /// agent now sees it.
    pub async fn update_interface(&self, iface: &Interface) -> Result<Interface, ClientError> {
        const M: &str = "UpdateInterface";
        let req = agent::UpdateInterfaceRequest {
            interface: protobuf::MessageField::some(convert::interface_to_proto(iface)),
            ..Default::default()
        };
        let t = self.call_timeout;
        let r = Self::call(M, t, self.agent.update_interface(Self::ctx(t), &req)).await?;
        interface_reply(&r)
    }

    /// `UpdateRoutes`: makes `routes` the routes of the devices they name; returns the
    /// resulting route list.
    pub async fn update_routes(&self, routes: &[Route]) -> Result<Vec<Route>, ClientError> {
        const M: &str = "UpdateRoutes";
        let req = agent::UpdateRoutesRequest {
            routes: protobuf::MessageField::some(agent::Routes {
                Routes: routes.iter().map(convert::route_to_proto).collect(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let t = self.call_timeout;
        let r = Self::call(M, t, self.agent.update_routes(Self::ctx(t), &req)).await?;
        routes_reply(M, &r)
    }

    /// `AddARPNeighbors`: installs the neighbour entries.
    pub async fn add_arp_neighbors(&self, neighbors: &[Neighbor]) -> Result<(), ClientError> {
        const M: &str = "AddARPNeighbors";
        let req = agent::AddARPNeighborsRequest {
            neighbors: protobuf::MessageField::some(agent::ARPNeighbors {
                ARPNeighbors: neighbors.iter().map(convert::neighbor_to_proto).collect(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let t = self.call_timeout;
        Self::call(M, t, self.agent.add_arp_neighbors(Self::ctx(t), &req)).await?;
        Ok(())
    }

    /// `CreateSandbox`: sets the hostname (if not empty) and writes `resolv.conf`.
    pub async fn create_sandbox(&self, hostname: &str, dns: &Dns) -> Result<(), ClientError> {
        const M: &str = "CreateSandbox";
        let req = agent::CreateSandboxRequest {
            hostname: hostname.to_string(),
            dns: convert::dns_to_lines(dns),
            ..Default::default()
        };
        let t = self.call_timeout;
        Self::call(M, t, self.agent.create_sandbox(Self::ctx(t), &req)).await?;
        Ok(())
    }

    /// `ListInterfaces`: the interfaces the agent's network namespace really has.
    pub async fn list_interfaces(&self) -> Result<Vec<Interface>, ClientError> {
        const M: &str = "ListInterfaces";
        let req = agent::ListInterfacesRequest::new();
        let t = self.call_timeout;
        let r = Self::call(M, t, self.agent.list_interfaces(Self::ctx(t), &req)).await?;
        interfaces_reply(&r)
    }

    /// `ListRoutes`: the main-table routes the agent's network namespace really has.
    pub async fn list_routes(&self) -> Result<Vec<Route>, ClientError> {
        const M: &str = "ListRoutes";
        let req = agent::ListRoutesRequest::new();
        let t = self.call_timeout;
        let r = Self::call(M, t, self.agent.list_routes(Self::ctx(t), &req)).await?;
        routes_reply(M, &r)
    }

    /// `sandnet.Exec/Exec`: runs `args` to completion; the agent kills it after `timeout`
    /// and answers DEADLINE_EXCEEDED.
    pub async fn exec(
        &self,
        args: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, ClientError> {
        self.exec_with(args, &[], &[], timeout).await
    }

    /// Like [`AgentClient::exec`] with extra environment (`KEY=VALUE`) and stdin bytes.
    pub async fn exec_with(
        &self,
        args: &[String],
        env: &[String],
        stdin: &[u8],
        timeout: Duration,
    ) -> Result<ExecOutput, ClientError> {
        const M: &str = "Exec";
        let req = sandnet::ExecRequest {
            args: args.to_vec(),
            env: env.to_vec(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            stdin: stdin.to_vec(),
            ..Default::default()
        };
        // The command's own timeout is enforced by the agent; the call's covers it plus
        // the round trip.
        let t = timeout + self.call_timeout;
        let r = Self::call(M, t, self.exec.exec(Self::ctx(t), &req)).await?;
        Ok(ExecOutput {
            exit_code: r.exit_code,
            stdout: r.stdout,
            stderr: r.stderr,
        })
    }
}

/// The `UpdateInterface` reply as [`AgentClient::update_interface`] returns it.
pub fn interface_reply(r: &types::Interface) -> Result<Interface, ClientError> {
    convert::interface_from_proto(r).map_err(|source| ClientError::Convert {
        method: "UpdateInterface",
        source,
    })
}

/// The `ListInterfaces` reply as [`AgentClient::list_interfaces`] returns it.
pub fn interfaces_reply(r: &agent::Interfaces) -> Result<Vec<Interface>, ClientError> {
    r.Interfaces
        .iter()
        .map(convert::interface_from_proto)
        .collect::<Result<_, _>>()
        .map_err(|source| ClientError::Convert {
            method: "ListInterfaces",
            source,
        })
}

/// An `UpdateRoutes` or `ListRoutes` reply as the client returns it.
pub fn routes_reply(method: &'static str, r: &agent::Routes) -> Result<Vec<Route>, ClientError> {
    r.Routes
        .iter()
        .map(convert::route_from_proto)
        .collect::<Result<_, _>>()
        .map_err(|source| ClientError::Convert { method, source })
}
