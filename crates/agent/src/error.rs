//! The agent's error type and its mapping to ttrpc status codes.

use sandnet_agent_proto::ttrpc;
use sandnet_agent_proto::ConvertError;
use sandnet_netlink::NetlinkError;

/// Why a request failed; each variant maps to one ttrpc status code.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The request does not describe something the agent can apply.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A message field did not decode into the model.
    #[error("invalid request: {0}")]
    Convert(#[from] ConvertError),
    /// Something the request names (a NIC by MAC, a device by name) is not there.
    #[error("{0}")]
    NotFound(String),
    /// The operation ran out of time (a command killed after its timeout).
    #[error("{0}")]
    Deadline(String),
    /// The kernel refused a netlink request.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// A container request failed; the message starts with `container <id>: `.
    #[error("{message}")]
    Container {
        /// The ttrpc status code to answer with.
        code: ttrpc::Code,
        /// One line naming the container and what was wrong.
        message: String,
    },
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl AgentError {
    /// Wraps an I/O error with what was being done.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> AgentError {
        AgentError::Io {
            what: what.into(),
            source,
        }
    }

    /// The ttrpc status code for this error.
    pub fn code(&self) -> ttrpc::Code {
        match self {
            AgentError::Invalid(_) | AgentError::Convert(_) => ttrpc::Code::INVALID_ARGUMENT,
            AgentError::NotFound(_) => ttrpc::Code::NOT_FOUND,
            AgentError::Deadline(_) => ttrpc::Code::DEADLINE_EXCEEDED,
            AgentError::Container { code, .. } => *code,
            AgentError::Netlink(h) => match h.errno() {
                _ if h.is_not_found() => ttrpc::Code::NOT_FOUND,
                Some(libc::EINVAL) | Some(libc::ERANGE) | Some(libc::ENETUNREACH) => {
                    ttrpc::Code::INVALID_ARGUMENT
                }
                Some(libc::EEXIST) => ttrpc::Code::ALREADY_EXISTS,
                Some(libc::EPERM) | Some(libc::EACCES) => ttrpc::Code::PERMISSION_DENIED,
                _ => ttrpc::Code::INTERNAL,
            },
            AgentError::Io { source, .. } => match source.kind() {
                std::io::ErrorKind::NotFound => ttrpc::Code::NOT_FOUND,
                std::io::ErrorKind::PermissionDenied => ttrpc::Code::PERMISSION_DENIED,
                std::io::ErrorKind::InvalidInput => ttrpc::Code::INVALID_ARGUMENT,
                _ => ttrpc::Code::INTERNAL,
            },
        }
    }
}

impl From<AgentError> for ttrpc::Error {
    fn from(e: AgentError) -> ttrpc::Error {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), e.to_string()))
    }
}

/// Result type of the agent's operations.
pub type Result<T> = std::result::Result<T, AgentError>;
