//! The shim's errors, and how they reach containerd (a ttrpc status with one line).

use crate::agent::AgentError;
use crate::io::IoError;
use crate::rootfs::RootfsError;
use containerd_shim_protos::ttrpc;
use sandnet_model::one_line;
use sandnet_runtime::error::RuntimeError;
use std::path::PathBuf;

/// What went wrong in the shim.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// The bundle's `config.json` could not be read or understood.
    #[error("bundle {path}: {reason}")]
    Bundle {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A request sandnet does not serve (yet).
    #[error("{0}")]
    Unsupported(String),
    /// The runtime options or configuration file were wrong.
    #[error("configuration: {0}")]
    Config(String),
    /// No such task or process.
    #[error("{0}")]
    NotFound(String),
    /// The task is in the wrong state for the request.
    #[error("{0}")]
    State(String),
    /// The task exists already.
    #[error("task {0} already exists")]
    Exists(String),
    /// The sandnet runtime failed (its errors name the sandbox).
    #[error("{0}")]
    Runtime(#[source] Box<RuntimeError>),
    /// The guest's agent refused or failed a container call.
    #[error("{}", agent_line(id, source))]
    Agent {
        /// The container.
        id: String,
        /// The failed call.
        #[source]
        source: AgentError,
    },
    /// The container's spec cannot run.
    #[error("container {id}: {reason}")]
    Spec {
        /// The container.
        id: String,
        /// Why.
        reason: String,
    },
    /// The container's files could not be laid out in the share (or removed from it).
    #[error("{0}")]
    Rootfs(#[from] RootfsError),
    /// A stdio path could not be used.
    #[error("container {id}: {source}")]
    Io {
        /// The container.
        id: String,
        /// What failed.
        #[source]
        source: IoError,
    },
    /// Something the shim itself failed at.
    #[error("{0}")]
    Internal(String),
}

impl ShimError {
    /// An agent error for container `id`.
    pub fn agent(id: &str) -> impl FnOnce(AgentError) -> ShimError {
        let id = id.to_string();
        move |source| ShimError::Agent { id, source }
    }

    fn code(&self) -> ttrpc::Code {
        match self {
            ShimError::Bundle { .. } | ShimError::Config(_) => ttrpc::Code::INVALID_ARGUMENT,
            ShimError::Unsupported(_) => ttrpc::Code::UNIMPLEMENTED,
            ShimError::NotFound(_) => ttrpc::Code::NOT_FOUND,
            ShimError::State(_) => ttrpc::Code::FAILED_PRECONDITION,
            ShimError::Exists(_) => ttrpc::Code::ALREADY_EXISTS,
            ShimError::Spec { .. } | ShimError::Io { .. } => ttrpc::Code::INVALID_ARGUMENT,
            ShimError::Rootfs(RootfsError::MissingSource { .. }) => ttrpc::Code::INVALID_ARGUMENT,
            ShimError::Runtime(_)
            | ShimError::Agent { .. }
            | ShimError::Rootfs(_)
            | ShimError::Internal(_) => ttrpc::Code::INTERNAL,
        }
    }
}

impl From<RuntimeError> for ShimError {
    fn from(e: RuntimeError) -> Self {
        ShimError::Runtime(Box::new(e))
    }
}

impl From<ShimError> for ttrpc::Error {
    fn from(e: ShimError) -> Self {
        let msg = one_line(&e.to_string());
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), msg))
    }
}

/// An agent error about container `id` as one line naming it once: the agent's own
/// message when it names the container, else `container <id>: <call>: <message>`.
fn agent_line(id: &str, e: &AgentError) -> String {
    match e {
        AgentError::Status { message, .. } if message.starts_with(&format!("container {id}")) => {
            message.clone()
        }
        e => format!("container {id}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandnet_agent_proto::ttrpc::Code;

    #[test]
    fn agent_errors_name_the_container_once() {
        let st = |m: &str| ShimError::Agent {
            id: "c1".into(),
            source: AgentError::Status {
                call: "StartContainer",
                code: Code::NOT_FOUND,
                message: m.into(),
            },
        };
        assert_eq!(
            st("container c1: exec /x: no such file").to_string(),
            "container c1: exec /x: no such file"
        );
        assert_eq!(st("boom").to_string(), "container c1: StartContainer: boom");
    }
}
