//! The `CNI_*` environment variables of one invocation.

use crate::error::PluginError;
use std::collections::BTreeMap;

/// The CNI command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Connect an attachment.
    Add,
    /// Undo it.
    Del,
    /// Verify it.
    Check,
    /// Remove attachments that are not valid any more.
    Gc,
    /// Say whether ADD can work now.
    Status,
    /// Say which spec versions the plugin speaks.
    Version,
}

impl Command {
    /// The command's name in `CNI_COMMAND`.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Gc => "GC",
            Command::Status => "STATUS",
            Command::Version => "VERSION",
        }
    }
}

/// What the runtime passed in the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    /// `CNI_COMMAND`, parsed (`None` before [`Env::from_vars`] succeeds).
    pub command: Option<Command>,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS` (may be empty for DEL).
    pub netns: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS`, split into `K=V` pairs.
    pub args: BTreeMap<String, String>,
}

impl Env {
    /// Reads the variables from a lookup function (the process environment, or a map in
    /// tests). Only `CNI_COMMAND` is checked here; each command checks what it needs.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Env, PluginError> {
        let cmd = get("CNI_COMMAND").unwrap_or_default();
        let command = match cmd.as_str() {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            "VERSION" => Command::Version,
            other => {
                return Err(PluginError::InvalidEnv(format!(
                    "unknown CNI_COMMAND {other:?}"
                )))
            }
        };
        let mut args = BTreeMap::new();
        for kv in get("CNI_ARGS").unwrap_or_default().split(';') {
            if kv.is_empty() {
                continue;
            }
            let (k, v) = kv.split_once('=').ok_or_else(|| {
                PluginError::InvalidEnv(format!("CNI_ARGS entry {kv:?} is not K=V"))
            })?;
            args.insert(k.to_string(), v.to_string());
        }
        Ok(Env {
            command: Some(command),
            container_id: get("CNI_CONTAINERID").unwrap_or_default(),
            netns: get("CNI_NETNS").unwrap_or_default(),
            ifname: get("CNI_IFNAME").unwrap_or_default(),
            args,
        })
    }

    /// Requires `CNI_CONTAINERID` and `CNI_IFNAME` (and `CNI_NETNS` when `netns`), checked
    /// to be safe as parts of a file name and an interface name.
    pub fn require(&self, netns: bool) -> Result<(), PluginError> {
        let bad = |m: String| Err(PluginError::InvalidEnv(m));
        let cid = &self.container_id;
        if cid.is_empty()
            || !cid
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
            || cid.starts_with('.')
        {
            return bad(format!(
                "CNI_CONTAINERID {cid:?} is empty or not [A-Za-z0-9_.-]"
            ));
        }
        let ifname = &self.ifname;
        if ifname.is_empty()
            || ifname.len() > 15
            || ifname.contains(['/', ' ', '\0', ':'])
            || ifname == "."
            || ifname == ".."
        {
            return bad(format!(
                "CNI_IFNAME {ifname:?} is not a valid interface name"
            ));
        }
        if netns && self.netns.is_empty() {
            return bad("CNI_NETNS is not set".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Result<Env, PluginError> {
        let m: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::from_vars(|k| m.get(k).cloned())
    }

    #[test]
    fn commands_and_args() {
        let e = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_ARGS", "IgnoreUnknown=1;queues=2"),
        ])
        .unwrap();
        assert_eq!(e.command, Some(Command::Add));
        assert_eq!(e.args["queues"], "2");
        assert_eq!(env(&[("CNI_COMMAND", "FOO")]).unwrap_err().code(), 4);
        assert_eq!(
            env(&[("CNI_COMMAND", "ADD"), ("CNI_ARGS", "x")])
                .unwrap_err()
                .code(),
            4
        );
    }

    #[test]
    fn names_are_checked() {
        let mut e = env(&[("CNI_COMMAND", "DEL")]).unwrap();
        assert!(e.require(false).is_err());
        e.container_id = "c1".into();
        e.ifname = "eth0".into();
        assert!(e.require(false).is_ok());
        assert!(e.require(true).is_err());
        e.container_id = "../x".into();
        assert!(e.require(false).is_err());
    }
}
