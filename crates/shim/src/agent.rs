//! The guest's agent as the shim reaches it: Kata's `grpc.AgentService` container calls
//! over ttrpc, on the unix socket where the sandbox's supervisor forwards them to the
//! guest. One connection per sandbox, made on first use and again after it broke; every
//! call bounded in time except the long polls (output, exit, OOM).

use sandnet_agent_proto::agent::{
    CloseStdinRequest, CreateContainerRequest, ExecProcessRequest, GetOOMEventRequest,
    ReadStreamRequest, RemoveContainerRequest, SignalProcessRequest, StartContainerRequest,
    StatsContainerRequest, StatsContainerResponse, TtyWinResizeRequest, WaitProcessRequest,
    WriteStreamRequest,
};
use sandnet_agent_proto::agent_ttrpc::AgentServiceClient;
use sandnet_agent_proto::oci;
use sandnet_agent_proto::ttrpc::{self, r#async::Client, Code};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Bound of CreateContainer and StartContainer (mounting the share, under TCG).
const SLOW_CALL: Duration = Duration::from_secs(120);
/// Bound of the other calls.
const CALL: Duration = Duration::from_secs(30);
/// How long a connection may take to come up (the supervisor serves its socket at once).
const CONNECT: Duration = Duration::from_secs(3);
/// Longest agent message kept.
const MAX_MESSAGE: usize = 512;

/// A failed agent call.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The supervisor's socket could not be reached.
    #[error("the sandbox's agent socket {}: {reason}", path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The agent answered with an error.
    #[error("{call}: {message}")]
    Status {
        /// The call.
        call: &'static str,
        /// Its status code.
        code: Code,
        /// The agent's message (one line, at most 512 bytes).
        message: String,
    },
    /// The connection failed during the call.
    #[error("{call}: {reason}")]
    Transport {
        /// The call.
        call: &'static str,
        /// What happened.
        reason: String,
    },
    /// No answer in time.
    #[error("{call}: no answer within {}s", limit.as_secs())]
    Timeout {
        /// The call.
        call: &'static str,
        /// The bound.
        limit: Duration,
    },
}

impl AgentError {
    /// The agent's status code, if it answered.
    pub fn code(&self) -> Option<Code> {
        match self {
            AgentError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether asking again may succeed (the connection broke or the supervisor could not
    /// reach the guest for a moment), as opposed to the agent refusing.
    pub fn is_transient(&self) -> bool {
        match self {
            AgentError::Status { code, .. } => {
                matches!(code, Code::UNAVAILABLE | Code::DEADLINE_EXCEEDED)
            }
            _ => true,
        }
    }
}

/// The agent of one sandbox.
pub struct Agent {
    path: PathBuf,
    client: Mutex<Option<AgentServiceClient>>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent").field("path", &self.path).finish()
    }
}

fn one_line(s: &str) -> String {
    let mut m = sandnet_model::one_line(s);
    if m.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !m.is_char_boundary(end) {
            end -= 1;
        }
        m.truncate(end);
        m.push('…');
    }
    m
}

impl Agent {
    /// The agent behind the supervisor's socket `path` (not connected yet).
    pub fn new(path: &Path) -> Agent {
        Agent {
            path: path.to_path_buf(),
            client: Mutex::new(None),
        }
    }

    fn cached(&self) -> Option<AgentServiceClient> {
        self.client
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn client(&self) -> Result<AgentServiceClient, AgentError> {
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let addr = format!("unix://{}", self.path.display());
        let deadline = Instant::now() + CONNECT;
        let raw = loop {
            match Client::connect(&addr).await {
                Ok(c) => break c,
                Err(e) if Instant::now() >= deadline => {
                    return Err(AgentError::Connect {
                        path: self.path.clone(),
                        reason: one_line(&e.to_string()),
                    })
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        let c = AgentServiceClient::new(raw);
        *self.client.lock().unwrap_or_else(|p| p.into_inner()) = Some(c.clone());
        Ok(c)
    }

    /// Runs one call, bounded by `limit` (none: a long poll); a broken connection is
    /// dropped so the next call makes a new one.
    async fn call<T, F, Fut>(
        &self,
        call: &'static str,
        limit: Option<Duration>,
        f: F,
    ) -> Result<T, AgentError>
    where
        F: FnOnce(AgentServiceClient, ttrpc::context::Context) -> Fut,
        Fut: Future<Output = ttrpc::Result<T>>,
    {
        let client = self.client().await?;
        let nanos = limit.map_or(0, |l| i64::try_from(l.as_nanos()).unwrap_or(i64::MAX));
        let fut = f(client, ttrpc::context::with_timeout(nanos));
        let r = match limit {
            Some(l) => match tokio::time::timeout(l + Duration::from_secs(1), fut).await {
                Ok(r) => r,
                Err(_) => return Err(AgentError::Timeout { call, limit: l }),
            },
            None => fut.await,
        };
        match r {
            Ok(v) => Ok(v),
            Err(ttrpc::Error::RpcStatus(s)) => Err(AgentError::Status {
                call,
                code: s.code(),
                message: one_line(s.message()),
            }),
            Err(e) => {
                *self.client.lock().unwrap_or_else(|p| p.into_inner()) = None;
                let reason = one_line(&e.to_string());
                if reason.contains("deadline") {
                    if let Some(limit) = limit {
                        return Err(AgentError::Timeout { call, limit });
                    }
                }
                Err(AgentError::Transport { call, reason })
            }
        }
    }

    /// `CreateContainer`: sets the container up; its process waits for `start_container`.
    pub async fn create_container(&self, req: CreateContainerRequest) -> Result<(), AgentError> {
        self.call("CreateContainer", Some(SLOW_CALL), |c, ctx| async move {
            c.create_container(ctx, &req).await
        })
        .await
        .map(drop)
    }

    /// `StartContainer`: execs the container's process.
    pub async fn start_container(&self, id: &str) -> Result<(), AgentError> {
        let req = StartContainerRequest {
            container_id: id.into(),
            ..Default::default()
        };
        self.call("StartContainer", Some(SLOW_CALL), |c, ctx| async move {
            c.start_container(ctx, &req).await
        })
        .await
        .map(drop)
    }

    /// `RemoveContainer`: kills everything of the container and forgets it (idempotent);
    /// the agent waits up to `timeout` for its processes to end.
    pub async fn remove_container(&self, id: &str, timeout: Duration) -> Result<(), AgentError> {
        let req = RemoveContainerRequest {
            container_id: id.into(),
            timeout: u32::try_from(timeout.as_secs()).unwrap_or(u32::MAX),
            ..Default::default()
        };
        self.call(
            "RemoveContainer",
            Some(timeout + CALL),
            |c, ctx| async move { c.remove_container(ctx, &req).await },
        )
        .await
        .map(drop)
    }

    /// `ExecProcess`: starts `process` in the container at once.
    pub async fn exec_process(
        &self,
        id: &str,
        exec_id: &str,
        process: oci::Process,
    ) -> Result<(), AgentError> {
        let req = ExecProcessRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
            process: Some(process).into(),
            ..Default::default()
        };
        self.call("ExecProcess", Some(SLOW_CALL), |c, ctx| async move {
            c.exec_process(ctx, &req).await
        })
        .await
        .map(drop)
    }

    /// `SignalProcess` (exec id `""`: the container's process).
    pub async fn signal_process(
        &self,
        id: &str,
        exec_id: &str,
        signal: u32,
    ) -> Result<(), AgentError> {
        let req = SignalProcessRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
            signal,
            ..Default::default()
        };
        self.call("SignalProcess", Some(CALL), |c, ctx| async move {
            c.signal_process(ctx, &req).await
        })
        .await
        .map(drop)
    }

    /// `WaitProcess` (long poll): the exit status, or 128 + the signal.
    pub async fn wait_process(&self, id: &str, exec_id: &str) -> Result<i32, AgentError> {
        let req = WaitProcessRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        self.call("WaitProcess", None, |c, ctx| async move {
            c.wait_process(ctx, &req).await
        })
        .await
        .map(|r| r.status)
    }

    /// `ReadStdout` or `ReadStderr` (long poll): up to `len` bytes; empty at the end.
    pub async fn read(
        &self,
        stderr: bool,
        id: &str,
        exec_id: &str,
        len: u32,
    ) -> Result<Vec<u8>, AgentError> {
        let req = ReadStreamRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
            len,
            ..Default::default()
        };
        let r = if stderr {
            self.call("ReadStderr", None, |c, ctx| async move {
                c.read_stderr(ctx, &req).await
            })
            .await?
        } else {
            self.call("ReadStdout", None, |c, ctx| async move {
                c.read_stdout(ctx, &req).await
            })
            .await?
        };
        Ok(r.data)
    }

    /// `WriteStdin`: how many bytes the process's stdin took.
    pub async fn write_stdin(
        &self,
        id: &str,
        exec_id: &str,
        data: &[u8],
    ) -> Result<usize, AgentError> {
        let req = WriteStreamRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
            data: data.to_vec(),
            ..Default::default()
        };
        self.call("WriteStdin", Some(CALL), |c, ctx| async move {
            c.write_stdin(ctx, &req).await
        })
        .await
        .map(|r| r.len as usize)
    }

    /// `CloseStdin`.
    pub async fn close_stdin(&self, id: &str, exec_id: &str) -> Result<(), AgentError> {
        let req = CloseStdinRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        self.call("CloseStdin", Some(CALL), |c, ctx| async move {
            c.close_stdin(ctx, &req).await
        })
        .await
        .map(drop)
    }

    /// `TtyWinResize`.
    pub async fn resize(
        &self,
        id: &str,
        exec_id: &str,
        rows: u32,
        columns: u32,
    ) -> Result<(), AgentError> {
        let req = TtyWinResizeRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
            row: rows,
            column: columns,
            ..Default::default()
        };
        self.call("TtyWinResize", Some(CALL), |c, ctx| async move {
            c.tty_win_resize(ctx, &req).await
        })
        .await
        .map(drop)
    }

    /// `StatsContainer`.
    pub async fn stats(&self, id: &str) -> Result<StatsContainerResponse, AgentError> {
        let req = StatsContainerRequest {
            container_id: id.into(),
            ..Default::default()
        };
        self.call("StatsContainer", Some(CALL), |c, ctx| async move {
            c.stats_container(ctx, &req).await
        })
        .await
    }

    /// `GetOOMEvent` (long poll): the container whose process the OOM killer ended.
    pub async fn oom_event(&self) -> Result<String, AgentError> {
        let req = GetOOMEventRequest::default();
        self.call("GetOOMEvent", None, |c, ctx| async move {
            c.get_oom_event(ctx, &req).await
        })
        .await
        .map(|r| r.container_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_or_final() {
        let st = |code| AgentError::Status {
            call: "X",
            code,
            message: "m".into(),
        };
        assert!(st(Code::UNAVAILABLE).is_transient());
        assert!(!st(Code::NOT_FOUND).is_transient());
        assert!(AgentError::Transport {
            call: "X",
            reason: "closed".into()
        }
        .is_transient());
        assert_eq!(st(Code::INTERNAL).to_string(), "X: m");
    }

    #[test]
    fn messages_are_one_short_line() {
        assert_eq!(one_line("a\nb"), "a | b");
        let long = "é".repeat(600);
        let m = one_line(&long);
        assert!(m.len() <= MAX_MESSAGE + '…'.len_utf8());
    }

    #[tokio::test]
    async fn missing_socket_is_a_connect_error() {
        let a = Agent::new(Path::new("/nonexistent/agent.sock"));
        let t = Instant::now();
        let e = a.start_container("c").await.unwrap_err();
        assert!(matches!(e, AgentError::Connect { .. }), "{e}");
        assert!(e.to_string().contains("/nonexistent/agent.sock"), "{e}");
        assert!(t.elapsed() < CONNECT + Duration::from_secs(2));
    }
}
