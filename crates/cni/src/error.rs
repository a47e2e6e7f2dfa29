//! The crate's error type.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while loading CNI configuration or running plugins.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// A file or directory could not be read or written.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done ("reading", "writing", …).
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A network configuration is not valid.
    #[error("invalid CNI network configuration{}: {reason}", file_suffix(file))]
    InvalidConfig {
        /// The file it came from, when it came from a file.
        file: Option<PathBuf>,
        /// What is wrong with it.
        reason: String,
    },

    /// A conf dir holds no usable network configuration.
    #[error("no CNI network configuration in {}{}", dir.display(), skipped_suffix(skipped))]
    NoConfig {
        /// The directory searched.
        dir: PathBuf,
        /// The files that were found but rejected, each with its reason.
        skipped: Vec<(PathBuf, String)>,
    },

    /// A conf dir holds no network of the requested name.
    #[error("no CNI network named {name:?} in {}{}", dir.display(), skipped_suffix(skipped))]
    NetworkNotFound {
        /// The directory searched.
        dir: PathBuf,
        /// The network name asked for.
        name: String,
        /// The files that were found but rejected, each with its reason.
        skipped: Vec<(PathBuf, String)>,
    },

    /// A runtime parameter (container ID, interface name, …) is not valid.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidParameter {
        /// Which parameter.
        what: &'static str,
        /// Its value.
        value: String,
        /// Why it is rejected.
        reason: &'static str,
    },

    /// A plugin binary was not found in any of the bin dirs.
    #[error("CNI plugin {plugin:?} not found in {}", dirs_list(dirs))]
    PluginNotFound {
        /// The plugin's `type`.
        plugin: String,
        /// The directories searched, in order.
        dirs: Vec<PathBuf>,
    },

    /// A plugin could not be started.
    #[error("starting CNI plugin {plugin:?} ({}) for {command}: {source}", path.display())]
    Spawn {
        /// The plugin's `type`.
        plugin: String,
        /// The binary.
        path: PathBuf,
        /// The CNI command.
        command: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A plugin failed and reported a CNI error object on stdout.
    #[error(
        "CNI plugin {plugin:?} failed ({command}): code {code}: {msg}{}{}",
        if details.is_empty() { String::new() } else { format!("; {details}") },
        stderr_suffix(stderr)
    )]
    Plugin {
        /// The plugin's `type`.
        plugin: String,
        /// The CNI command.
        command: &'static str,
        /// The error code (see [`error_code`](crate::error_code)).
        code: u32,
        /// The short message.
        msg: String,
        /// The longer description (may be empty).
        details: String,
        /// The end of what the plugin wrote on stderr (may be empty).
        stderr: String,
    },

    /// A plugin failed without a CNI error object on stdout.
    #[error(
        "CNI plugin {plugin:?} failed ({command}): {status}{}{}",
        if stdout.is_empty() { String::new() } else { format!("; stdout: {stdout:?}") },
        stderr_suffix(stderr)
    )]
    PluginFailed {
        /// The plugin's `type`.
        plugin: String,
        /// The CNI command.
        command: &'static str,
        /// How it ended ("exit status 2", "signal 9", …).
        status: String,
        /// The start of its stdout, when that was not an error object.
        stdout: String,
        /// The end of its stderr.
        stderr: String,
    },

    /// A plugin did not finish in time and was killed (with its process group).
    #[error(
        "CNI plugin {plugin:?} ({command}) did not finish within {timeout:?} and was killed{}",
        stderr_suffix(stderr)
    )]
    Timeout {
        /// The plugin's `type`.
        plugin: String,
        /// The CNI command.
        command: &'static str,
        /// The time it was given.
        timeout: Duration,
        /// The end of its stderr up to the kill.
        stderr: String,
    },

    /// A plugin succeeded but its output is not a valid result.
    #[error("CNI plugin {plugin:?} ({command}) returned an invalid result: {reason}")]
    BadResult {
        /// The plugin's `type`.
        plugin: String,
        /// The CNI command.
        command: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// A result could not be parsed or converted between spec versions.
    #[error("CNI result: {0}")]
    Result(String),

    /// The cache entry of an attachment is unreadable.
    #[error("CNI cache entry {}: {reason}", path.display())]
    Cache {
        /// The cache file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// CHECK was asked for an attachment that has no cached ADD result.
    #[error("no cached ADD result for network {network:?}, container {container_id:?}, interface {ifname:?}: CHECK needs one")]
    NotAdded {
        /// The network name.
        network: String,
        /// The container ID.
        container_id: String,
        /// The interface name.
        ifname: String,
    },

    /// Several independent steps failed (GC collects every error).
    #[error("{}", multi(.0))]
    Multiple(Vec<CniError>),
}

fn file_suffix(file: &Option<PathBuf>) -> String {
    match file {
        Some(p) => format!(" in {}", p.display()),
        None => String::new(),
    }
}

fn dirs_list(dirs: &[PathBuf]) -> String {
    if dirs.is_empty() {
        return "(no bin dirs configured)".into();
    }
    let v: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    v.join(", ")
}

fn skipped_suffix(skipped: &[(PathBuf, String)]) -> String {
    let mut s = String::new();
    for (p, why) in skipped {
        s.push_str(&format!("; skipped {}: {why}", p.display()));
    }
    s
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!("; stderr: {}", stderr.trim_end())
    }
}

fn multi(errs: &[CniError]) -> String {
    let v: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    v.join("; ")
}

impl CniError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        CniError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// The CNI error code, when a plugin reported one.
    pub fn plugin_code(&self) -> Option<u32> {
        match self {
            CniError::Plugin { code, .. } => Some(*code),
            _ => None,
        }
    }
}
