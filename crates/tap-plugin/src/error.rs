//! The plugin's error type and its CNI error code.

use sandnet_cni::error_code;
use serde_json::{json, Value};
use std::path::PathBuf;

/// Plugin-specific code: CHECK found the attachment not as ADD left it.
pub const CODE_CHECK_FAILED: u32 = 100;
/// Plugin-specific code: the kernel work (attach, detach, owner) failed.
pub const CODE_HOST: u32 = 101;
/// Plugin-specific code: ADD for an attachment that is already added.
pub const CODE_ALREADY_ADDED: u32 = 102;

/// Everything that can make a command of the plugin fail.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The configuration's `cniVersion` is not one the plugin speaks (for this command).
    #[error("incompatible CNI version {version:?}: {why}")]
    IncompatibleVersion {
        /// The version asked for.
        version: String,
        /// Which versions are supported.
        why: String,
    },
    /// A field the plugin knows but does not implement yet.
    #[error("unsupported field {field:?}: {why}")]
    UnsupportedField {
        /// The field.
        field: &'static str,
        /// Why.
        why: String,
    },
    /// The container (its network namespace) does not exist.
    #[error("unknown container: {0}")]
    UnknownContainer(String),
    /// A `CNI_*` environment variable is missing or wrong.
    #[error("invalid environment: {0}")]
    InvalidEnv(String),
    /// Reading stdin, or a state file, failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration on stdin is not JSON of the expected shape.
    #[error("decoding the network configuration: {0}")]
    Decode(#[source] serde_json::Error),
    /// `prevResult` could not be read or written back.
    #[error("prevResult: {0}")]
    PrevResult(#[source] sandnet_cni::CniError),
    /// The configuration is valid JSON but not a valid configuration.
    #[error("invalid network configuration: {0}")]
    InvalidConfig(String),
    /// Another operation holds what is needed; retrying may succeed.
    #[error("try again later: {0}")]
    TryAgain(String),
    /// STATUS: the plugin cannot serve ADD now.
    #[error("plugin not available: {0}")]
    NotAvailable(String),
    /// CHECK found a difference.
    #[error("CHECK failed: {0}")]
    CheckFailed(String),
    /// ADD of an attachment that exists.
    #[error("attachment {container_id}/{ifname} is already added (DEL it first)")]
    AlreadyAdded {
        /// `CNI_CONTAINERID`.
        container_id: String,
        /// `CNI_IFNAME`.
        ifname: String,
    },
    /// The kernel side (sandnet-host) failed.
    #[error("{what}: {source}")]
    Host {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: sandnet_host::HostError,
    },
    /// Several independent steps failed (GC collects every error).
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Multiple(Vec<PluginError>),
}

impl PluginError {
    /// Wraps a host error with what was being done.
    pub fn host(what: impl Into<String>) -> impl FnOnce(sandnet_host::HostError) -> PluginError {
        let what = what.into();
        move |source| PluginError::Host { what, source }
    }

    /// Wraps an I/O error with the file concerned.
    pub fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> PluginError {
        let path = path.into();
        move |source| PluginError::Io {
            action,
            path,
            source,
        }
    }

    /// The CNI error code (spec section 6; 100 and above are this plugin's own).
    pub fn code(&self) -> u32 {
        match self {
            PluginError::IncompatibleVersion { .. } => error_code::INCOMPATIBLE_VERSION,
            PluginError::UnsupportedField { .. } => error_code::UNSUPPORTED_FIELD,
            PluginError::UnknownContainer(_) => error_code::UNKNOWN_CONTAINER,
            PluginError::InvalidEnv(_) => error_code::INVALID_ENVIRONMENT,
            PluginError::Io { .. } => error_code::IO_FAILURE,
            PluginError::Decode(_) | PluginError::PrevResult(_) => error_code::DECODING_FAILURE,
            PluginError::InvalidConfig(_) => error_code::INVALID_NETWORK_CONFIG,
            PluginError::TryAgain(_) => error_code::TRY_AGAIN_LATER,
            PluginError::NotAvailable(_) => error_code::PLUGIN_NOT_AVAILABLE,
            PluginError::CheckFailed(_) => CODE_CHECK_FAILED,
            PluginError::AlreadyAdded { .. } => CODE_ALREADY_ADDED,
            PluginError::Host { source, .. } => host_code(source),
            PluginError::Multiple(v) => v.first().map(PluginError::code).unwrap_or(CODE_HOST),
        }
    }

    /// The CNI error object (`code`, `msg`, `details`) in the given spec version.
    pub fn to_json(&self, cni_version: &str) -> Value {
        let msg = match self {
            PluginError::IncompatibleVersion { .. } => "incompatible CNI version",
            PluginError::UnsupportedField { .. } => "unsupported field",
            PluginError::UnknownContainer(_) => "unknown container",
            PluginError::InvalidEnv(_) => "invalid environment variables",
            PluginError::Io { .. } => "I/O failure",
            PluginError::Decode(_) | PluginError::PrevResult(_) => "failed to decode content",
            PluginError::InvalidConfig(_) => "invalid network config",
            PluginError::TryAgain(_) => "try again later",
            PluginError::NotAvailable(_) => "plugin not available",
            PluginError::CheckFailed(_) => "check failed",
            PluginError::AlreadyAdded { .. } => "already added",
            PluginError::Host { .. } | PluginError::Multiple(_) => "sandnet-tap failed",
        };
        json!({"cniVersion": cni_version, "code": self.code(), "msg": msg,
               "details": self.to_string()})
    }
}

/// The code of a host error: caller mistakes are configuration errors, a link that is not
/// there is the environment's, the rest the plugin's own.
fn host_code(e: &sandnet_host::HostError) -> u32 {
    use sandnet_host::HostError as H;
    match e {
        H::InvalidArgument(_) | H::NotAnEndpoint { .. } => error_code::INVALID_NETWORK_CONFIG,
        H::LinkNotFound(_) => error_code::INVALID_ENVIRONMENT,
        H::NetnsNotFound(_) | H::NotANetns(_) => error_code::UNKNOWN_CONTAINER,
        H::State { .. } => error_code::IO_FAILURE,
        _ => CODE_HOST,
    }
}
