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
/// Most interfaces accepted from `ListInterfaces` (a guest has a handful).
pub const MAX_INTERFACES: usize = 256;
/// Most routes accepted from `ListRoutes` and `UpdateRoutes`.
pub const MAX_ROUTES: usize = 4096;
/// Kata's agent service, as ttrpc names it.
const AGENT_SERVICE: &str = "grpc.AgentService";
/// Longest error message from the agent kept (the rest is cut off).
pub const MAX_MESSAGE: usize = 512;

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
    /// The agent answered with more entries than sandnet accepts.
    #[error("{method}: the agent answered with {count} {what} (at most {max} accepted)")]
    TooMany {
        /// RPC method.
        method: &'static str,
        /// What was counted.
        what: &'static str,
        /// How many came.
        count: usize,
        /// The bound.
        max: usize,
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
    raw: Client,
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
            message: truncate(s.message(), MAX_MESSAGE),
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
            raw: c.clone(),
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

    /// The ttrpc connection underneath (to forward raw requests over it).
    pub fn raw(&self) -> &Client {
        &self.raw
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
            // ttrpc's own deadline (the context's timeout) fired first: the same story.
            Ok(Err(ttrpc::Error::Others(m))) if m.contains("deadline elapsed") => {
                Err(ClientError::Timeout { method, timeout })
            }
            Ok(r) => r.map_err(|e| status_or_transport(method, e)),
            Err(_) => Err(ClientError::Timeout { method, timeout }),
        }
    }

    /// A call of `service` whose answer is one repeated message field (number 1):
    /// the entries are counted in the encoded answer and refused above `limit.1` before
    /// anything is decoded (an empty entry is 2 bytes on the wire but ~170 decoded, so a
    /// 4 MiB answer could otherwise cost hundreds of MiB).
    pub(crate) async fn counted_call<Req: protobuf::Message, Resp: protobuf::Message>(
        &self,
        service: &str,
        method: &'static str,
        req: &Req,
        (what, max): (&'static str, usize),
    ) -> Result<Resp, ClientError> {
        let t = self.call_timeout;
        let garbage = |e: String| ClientError::Transport {
            method,
            source: ttrpc::Error::Others(e),
        };
        let creq = ttrpc::Request {
            service: service.into(),
            method: method.into(),
            timeout_nano: i64::try_from(t.as_nanos()).unwrap_or(i64::MAX),
            payload: req
                .write_to_bytes()
                .map_err(|e| garbage(format!("encoding the request: {e}")))?,
            ..Default::default()
        };
        let res = Self::call(method, t, self.raw.request(creq)).await?;
        if let Some(st) = res.status.as_ref().filter(|s| s.code() != ttrpc::Code::OK) {
            return Err(status_or_transport(
                method,
                ttrpc::Error::RpcStatus(st.clone()),
            ));
        }
        let count = count_field(&res.payload, 1)
            .ok_or_else(|| garbage("the answer is not protobuf".into()))?;
        check_count(method, what, count, max)?;
        Resp::parse_from_bytes(&res.payload)
            .map_err(|e| garbage(format!("decoding the answer: {e}")))
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
        let r: agent::Interfaces = self
            .counted_call(AGENT_SERVICE, M, &req, ("interfaces", MAX_INTERFACES))
            .await?;
        interfaces_reply(&r)
    }

    /// `ListRoutes`: the main-table routes the agent's network namespace really has.
    pub async fn list_routes(&self) -> Result<Vec<Route>, ClientError> {
        const M: &str = "ListRoutes";
        let req = agent::ListRoutesRequest::new();
        let r = self
            .counted_call(AGENT_SERVICE, M, &req, ("routes", MAX_ROUTES))
            .await?;
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

/// `s` cut to at most `max` bytes (on a character boundary), with `…` when cut.
fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// How many times top-level field `field` occurs in protobuf wire data; `None` if the data is
/// not well-formed at the top level. Nothing is allocated.
fn count_field(mut b: &[u8], field: u64) -> Option<usize> {
    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first()?;
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut n = 0;
    while !b.is_empty() {
        let key = varint(&mut b)?;
        let skip = match key & 7 {
            0 => {
                varint(&mut b)?;
                0
            }
            1 => 8,
            2 => usize::try_from(varint(&mut b)?).ok()?,
            5 => 4,
            _ => return None,
        };
        b = b.get(skip..)?;
        if key >> 3 == field {
            n += 1;
        }
    }
    Some(n)
}

pub(crate) fn check_count(
    method: &'static str,
    what: &'static str,
    count: usize,
    max: usize,
) -> Result<(), ClientError> {
    if count > max {
        return Err(ClientError::TooMany {
            method,
            what,
            count,
            max,
        });
    }
    Ok(())
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
    check_count(
        "ListInterfaces",
        "interfaces",
        r.Interfaces.len(),
        MAX_INTERFACES,
    )?;
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
    check_count(method, "routes", r.Routes.len(), MAX_ROUTES)?;
    r.Routes
        .iter()
        .map(convert::route_from_proto)
        .collect::<Result<_, _>>()
        .map_err(|source| ClientError::Convert { method, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types;
    use protobuf::Message;

    #[test]
    fn counts_repeated_entries_without_decoding() {
        let m = agent::Interfaces {
            Interfaces: vec![types::Interface::new(); 1000],
            ..Default::default()
        };
        let b = m.write_to_bytes().unwrap();
        assert_eq!(b.len(), 2000);
        assert_eq!(count_field(&b, 1), Some(1000));
        assert_eq!(count_field(&b, 2), Some(0));
        assert_eq!(count_field(b"\xff\xff\xff", 1), None);
        assert_eq!(count_field(&[0x0a, 0x05, 0x00], 1), None);
    }
}
