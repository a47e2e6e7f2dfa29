//! The shim's errors, and how they reach containerd (a ttrpc status with one line).

use containerd_shim_protos::ttrpc;
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
}

impl ShimError {
    fn code(&self) -> ttrpc::Code {
        match self {
            ShimError::Bundle { .. } | ShimError::Config(_) => ttrpc::Code::INVALID_ARGUMENT,
            ShimError::Unsupported(_) => ttrpc::Code::UNIMPLEMENTED,
            ShimError::NotFound(_) => ttrpc::Code::NOT_FOUND,
            ShimError::State(_) => ttrpc::Code::FAILED_PRECONDITION,
            ShimError::Exists(_) => ttrpc::Code::ALREADY_EXISTS,
            ShimError::Runtime(_) => ttrpc::Code::INTERNAL,
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

/// `s` on one line (newlines become ` | `).
pub fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}
