//! The supervisor's control protocol: one JSON request line, one JSON response line, over
//! the sandbox's `ctl.sock`.

use sandnet_model::{Interface, Route};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// A request to a supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// The guest's interfaces and routes, as its agent lists them.
    Inspect,
    /// Runs a command in the guest.
    Exec {
        /// Program and arguments.
        args: Vec<String>,
        /// How long the command may run.
        timeout_ms: u64,
    },
    /// Stops the VM only; the sandbox's network stays until [`Request::Stop`].
    Halt {
        /// Kill QEMU at once instead of asking it to quit.
        force: bool,
    },
    /// Stops the VM, detaches the network and exits.
    Stop {
        /// Kill QEMU at once instead of asking it to quit.
        force: bool,
    },
    /// The guest's interfaces.
    ListIfaces,
    /// The guest's routes.
    ListRoutes,
    /// Hot-plugs a link of the pod namespace into the guest.
    AddIface {
        /// The pod link.
        link: String,
        /// What the guest interface should have instead of the link's addresses and MTU.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        want: Option<Interface>,
    },
    /// Unplugs the guest NIC of a pod link.
    DelIface {
        /// The pod link.
        link: String,
    },
    /// Replaces the routes of the guest's NICs with the set.
    UpdateRoutes {
        /// The routes.
        routes: Vec<Route>,
    },
    /// The guest's own counters of its interfaces.
    GuestStats,
}

/// The guest's network as its agent reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestNetwork {
    /// Interfaces.
    pub interfaces: Vec<Interface>,
    /// Routes.
    pub routes: Vec<Route>,
}

/// What a command run in the guest produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecResult {
    /// Exit status (128 + signal when killed).
    pub exit_code: i32,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
}

/// A supervisor's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    /// Answer to [`Request::Inspect`].
    Network(GuestNetwork),
    /// Answer to [`Request::Exec`].
    Exec(ExecResult),
    /// Answer to [`Request::Stop`]: what was undone.
    Stopped {
        /// One line per action.
        actions: Vec<String>,
        /// Step timings in milliseconds (`qemu_stop_ms`, `detach_ms`, `cni_del_ms`,
        /// `netns_ms`).
        #[serde(default)]
        timings: std::collections::BTreeMap<String, u64>,
        /// Set when a teardown step failed (the record is kept for a retry).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// Answer to [`Request::Halt`]: the VM is stopped.
    Halted,
    /// Answer to [`Request::ListIfaces`].
    Interfaces {
        /// The guest's interfaces.
        interfaces: Vec<Interface>,
    },
    /// Answer to [`Request::ListRoutes`] and [`Request::UpdateRoutes`].
    Routes {
        /// The guest's routes.
        routes: Vec<Route>,
    },
    /// Answer to [`Request::AddIface`]: the interface as the guest has it.
    Interface {
        /// The interface.
        interface: Interface,
    },
    /// Answer to [`Request::DelIface`].
    Removed {
        /// The pod link whose NIC is gone.
        link: String,
    },
    /// Answer to [`Request::GuestStats`].
    GuestStats {
        /// Every guest interface but loopback, as the agent counts it.
        interfaces: Vec<sandnet_agent_proto::GuestCounters>,
    },
    /// The request failed.
    Error {
        /// Why.
        message: String,
    },
}

/// Errors talking to a supervisor.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The control socket is not there or refuses connections.
    #[error("supervisor of sandbox {id} is not reachable at {path}: {source}")]
    Unreachable {
        /// Sandbox id.
        id: String,
        /// The socket.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The supervisor did not answer in time.
    #[error("supervisor of sandbox {0} did not answer in time")]
    Timeout(String),
    /// The answer could not be read.
    #[error("supervisor of sandbox {id}: bad answer: {message}")]
    Protocol {
        /// Sandbox id.
        id: String,
        /// What was wrong.
        message: String,
    },
}

/// Sends one request to the supervisor listening on `ctl` and returns its answer.
pub async fn call(
    id: &str,
    ctl: &Path,
    req: &Request,
    timeout: Duration,
) -> Result<Response, ControlError> {
    let unreachable = |source| ControlError::Unreachable {
        id: id.to_string(),
        path: ctl.display().to_string(),
        source,
    };
    let fut = async {
        let mut s = tokio::net::UnixStream::connect(ctl)
            .await
            .map_err(unreachable)?;
        let mut line = serde_json::to_vec(req).map_err(|e| ControlError::Protocol {
            id: id.to_string(),
            message: e.to_string(),
        })?;
        line.push(b'\n');
        s.write_all(&line).await.map_err(unreachable)?;
        let mut r = BufReader::new(s);
        let mut answer = String::new();
        r.read_line(&mut answer).await.map_err(unreachable)?;
        serde_json::from_str(&answer).map_err(|e| ControlError::Protocol {
            id: id.to_string(),
            message: if answer.is_empty() {
                "connection closed".to_string()
            } else {
                e.to_string()
            },
        })
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| ControlError::Timeout(id.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format() {
        let r = Request::Exec {
            args: vec!["ip".into(), "a".into()],
            timeout_ms: 5,
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"op":"exec","args":["ip","a"],"timeout_ms":5}"#
        );
        let s: Response = serde_json::from_str(r#"{"result":"error","message":"x"}"#).unwrap();
        assert_eq!(
            s,
            Response::Error {
                message: "x".into()
            }
        );
    }
}
