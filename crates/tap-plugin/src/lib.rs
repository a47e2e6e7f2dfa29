//! `sandnet-tap`, a chained CNI plugin (spec 1.1: ADD, DEL, CHECK, GC, STATUS, VERSION)
//! that connects the pod interface an earlier plugin made (`CNI_IFNAME` in `CNI_NETNS`) to a
//! tap — or a macvtap — that any VMM can open, with sandnet's datapath (`sandnet-host`'s
//! interworking: tc redirect or macvtap, marks, crash-safe plans).
//!
//! One job per module: the CNI protocol in [`protocol`], the options in [`options`], the
//! plugin's own state in [`record`], the result in [`result`], one command per module.

#![warn(missing_docs)]

pub mod add;
pub mod check;
pub mod del;
pub mod error;
pub mod gc;
pub mod options;
pub mod owner;
pub mod protocol;
pub mod record;
pub mod rename;
pub mod result;
pub mod status;
pub mod target;

use error::PluginError;
use protocol::config::NetConf;
use protocol::env::{Command, Env};
use protocol::version;
use serde_json::Value;

/// Runs one invocation: the command in `env` with the configuration `stdin`. Returns what
/// goes to stdout on success (ADD's result, VERSION's answer, nothing for the others).
pub async fn run(env: &Env, stdin: &[u8]) -> Result<Option<Value>, PluginError> {
    let cmd = env
        .command
        .ok_or_else(|| PluginError::InvalidEnv("CNI_COMMAND is not set".into()))?;
    if cmd == Command::Version {
        let asked = NetConf::parse(stdin)
            .map(|c| c.cni_version)
            .unwrap_or_default();
        return Ok(Some(version::version_reply(&asked)));
    }
    let conf = NetConf::parse(stdin)?;
    version::check(cmd, &conf.cni_version)?;
    match cmd {
        Command::Add => add::add(&conf, env).await.map(Some),
        Command::Del => del::del(&conf, env).await.map(|()| None),
        Command::Check => check::check(&conf, env).await.map(|()| None),
        Command::Gc => gc::gc(&conf).await.map(|()| None),
        Command::Status => status::status(&conf).map(|()| None),
        Command::Version => unreachable!("answered above"),
    }
}

/// The spec version to write an error in: the configuration's when the plugin speaks it,
/// else the newest.
pub fn error_version(stdin: &[u8]) -> String {
    NetConf::parse(stdin)
        .ok()
        .map(|c| c.cni_version)
        .filter(|v| version::SUPPORTED.contains(&v.as_str()))
        .unwrap_or_else(|| sandnet_cni::CURRENT_VERSION.to_string())
}
