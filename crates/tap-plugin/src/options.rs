//! The plugin's options, from the plugin configuration, its `args.cni` object, `CNI_ARGS`
//! and `runtimeConfig` (later sources win): `model`, `queues`, `uid`, `gid`, `tapName`;
//! `stateDir` from the configuration only (a runtime must not move the plugin's state).
//! tc-redirect-tap's names are understood too (`TC_REDIRECT_TAP_NAME`/`_UID`/`_GID` in
//! `CNI_ARGS`, `tap_name` in the configuration).

use crate::error::PluginError;
use crate::protocol::config::NetConf;
use crate::protocol::env::Env;
use sandnet_host::interwork::MAX_QUEUES;
use sandnet_model::InterworkingModel;
use serde_json::Value;
use std::path::PathBuf;

/// Where the plugin keeps its records and sandnet's attach plans by default.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/cni/sandnet-tap";

/// The options of one ADD (or CHECK).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The interworking model (`tcfilter`, the default, or `macvtap`).
    pub model: InterworkingModel,
    /// Queues of the tap (1 to [`MAX_QUEUES`]); more than one makes a multiqueue tap.
    pub queues: u16,
    /// The tap's owner (tcfilter: `TUNSETOWNER`; macvtap: the device node's owner).
    pub uid: Option<u32>,
    /// The tap's group.
    pub gid: Option<u32>,
    /// A name for the tap other than sandnet's (`sntap<ifindex>`, `snmvt<ifindex>`).
    pub tap_name: Option<String>,
    /// The state directory (records and attach plans).
    pub state_dir: PathBuf,
    /// What the host enforces on the NIC (`antiSpoofing`, the `bandwidth` capability);
    /// nothing unless asked, as tc-redirect-tap.
    pub policy: sandnet_model::TapPolicy,
}

/// Reads the state directory alone (DEL and GC need nothing else, and must work even when
/// the rest of the options has become invalid).
pub fn state_dir(conf: &NetConf) -> Result<PathBuf, PluginError> {
    match conf.raw.get("stateDir") {
        None | Some(Value::Null) => Ok(PathBuf::from(DEFAULT_STATE_DIR)),
        Some(Value::String(s)) if s.starts_with('/') => Ok(PathBuf::from(s)),
        Some(v) => Err(PluginError::InvalidConfig(format!(
            "stateDir must be an absolute path, not {v}"
        ))),
    }
}

impl Options {
    /// Resolves and checks every option.
    pub fn resolve(conf: &NetConf, env: &Env) -> Result<Options, PluginError> {
        let lookup = |key: &str| -> Option<Value> {
            let rc = conf.raw.get("runtimeConfig").and_then(|r| r.get(key));
            let (compat_arg, compat_conf) = tc_redirect_tap_names(key);
            let cni_args = env
                .args
                .get(key)
                .or_else(|| compat_arg.and_then(|k| env.args.get(k)))
                .map(|s| Value::String(s.clone()));
            let args = conf
                .raw
                .get("args")
                .and_then(|a| a.get("cni"))
                .and_then(|a| a.get(key));
            rc.cloned()
                .or(cni_args)
                .or_else(|| args.cloned())
                .or_else(|| conf.raw.get(key).cloned())
                .or_else(|| compat_conf.and_then(|k| conf.raw.get(k)).cloned())
                .filter(|v| !v.is_null())
        };
        refuse_unimplemented(&lookup)?;
        let model = match lookup("model") {
            None => InterworkingModel::TcFilter,
            Some(Value::String(s)) => match s.parse::<InterworkingModel>() {
                Ok(InterworkingModel::None) | Err(_) => {
                    return Err(PluginError::InvalidConfig(format!(
                        "model {s:?} is not one of tcfilter, macvtap"
                    )))
                }
                Ok(m) => m,
            },
            Some(v) => {
                return Err(PluginError::InvalidConfig(format!(
                    "model must be a string, not {v}"
                )))
            }
        };
        let queues = match number(lookup("queues"), "queues")? {
            None => 1,
            Some(q) if (1..=u64::from(MAX_QUEUES)).contains(&q) => q as u16,
            Some(q) => {
                return Err(PluginError::InvalidConfig(format!(
                    "queues must be between 1 and {MAX_QUEUES}, not {q}"
                )))
            }
        };
        let id = |k: &'static str| -> Result<Option<u32>, PluginError> {
            number(lookup(k), k)?
                .map(|n| {
                    u32::try_from(n)
                        .map_err(|_| PluginError::InvalidConfig(format!("{k} {n} is out of range")))
                })
                .transpose()
        };
        let tap_name = match lookup("tapName") {
            None => None,
            Some(Value::String(s)) => {
                crate::rename::check_name(&s)?;
                Some(s)
            }
            Some(v) => {
                return Err(PluginError::InvalidConfig(format!(
                    "tapName must be a string, not {v}"
                )))
            }
        };
        Ok(Options {
            tap_name,
            model,
            queues,
            uid: id("uid")?,
            gid: id("gid")?,
            state_dir: state_dir(conf)?,
            policy: sandnet_model::TapPolicy::unenforced(),
        })
    }
}

/// tc-redirect-tap's names for an option (its `CNI_ARGS` key, its configuration key),
/// accepted so that its configurations and the runtimes that pass them work unchanged.
fn tc_redirect_tap_names(key: &str) -> (Option<&'static str>, Option<&'static str>) {
    match key {
        "tapName" => (Some("TC_REDIRECT_TAP_NAME"), Some("tap_name")),
        "uid" => (Some("TC_REDIRECT_TAP_UID"), None),
        "gid" => (Some("TC_REDIRECT_TAP_GID"), None),
        _ => (None, None),
    }
}

/// Fields the plugin knows but cannot honour yet: refused with code 2, so a configuration
/// that asks for them never silently runs without them.
fn refuse_unimplemented(lookup: &impl Fn(&str) -> Option<Value>) -> Result<(), PluginError> {
    if lookup("antiSpoofing").is_some_and(|v| v != Value::Bool(false)) {
        return Err(PluginError::UnsupportedField {
            field: "antiSpoofing",
            why: "anti-spoofing filters are not implemented in sandnet yet".into(),
        });
    }
    Ok(())
}

/// A non-negative integer given as a JSON number or a decimal string (`CNI_ARGS`).
fn number(v: Option<Value>, key: &str) -> Result<Option<u64>, PluginError> {
    let bad = |v: &Value| PluginError::InvalidConfig(format!("{key} must be a number, not {v}"));
    match v {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| bad(&Value::Number(n))),
        Some(Value::String(s)) => s
            .parse::<u64>()
            .map(Some)
            .map_err(|_| bad(&Value::String(s))),
        Some(v) => Err(bad(&v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn resolve(conf: Value, args: &[(&str, &str)]) -> Result<Options, PluginError> {
        let conf = NetConf::parse(conf.to_string().as_bytes()).unwrap();
        let env = Env {
            args: args
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Env::default()
        };
        Options::resolve(&conf, &env)
    }

    #[test]
    fn defaults_and_precedence() {
        let o = resolve(json!({"name": "n"}), &[]).unwrap();
        assert_eq!(o.model, InterworkingModel::TcFilter);
        assert_eq!(o.queues, 1);
        assert_eq!(o.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        let o = resolve(
            json!({"queues": 2, "args": {"cni": {"queues": 3}}, "model": "macvtap",
                   "runtimeConfig": {"uid": 1000}, "stateDir": "/tmp/x"}),
            &[("queues", "4"), ("gid", "7")],
        )
        .unwrap();
        assert_eq!(o.queues, 4);
        assert_eq!(o.model, InterworkingModel::Macvtap);
        assert_eq!((o.uid, o.gid), (Some(1000), Some(7)));
        assert_eq!(o.state_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn tc_redirect_tap_names_are_understood() {
        let o = resolve(
            json!({"tap_name": "fc0"}),
            &[
                ("TC_REDIRECT_TAP_UID", "123"),
                ("TC_REDIRECT_TAP_GID", "456"),
            ],
        )
        .unwrap();
        assert_eq!(o.tap_name.as_deref(), Some("fc0"));
        assert_eq!((o.uid, o.gid), (Some(123), Some(456)));
        let o = resolve(json!({}), &[("TC_REDIRECT_TAP_NAME", "fc1")]).unwrap();
        assert_eq!(o.tap_name.as_deref(), Some("fc1"));
    }

    #[test]
    fn bad_options_are_config_errors() {
        for c in [
            json!({"model": "bogus"}),
            json!({"model": "none"}),
            json!({"queues": 0}),
            json!({"queues": 65}),
            json!({"uid": -1}),
            json!({"stateDir": "rel"}),
        ] {
            assert_eq!(resolve(c.clone(), &[]).unwrap_err().code(), 7, "{c}");
        }
        assert_eq!(
            resolve(json!({"antiSpoofing": true}), &[])
                .unwrap_err()
                .code(),
            2
        );
        assert_eq!(
            resolve(json!({"tapName": "a/b"}), &[]).unwrap_err().code(),
            7
        );
        let o = resolve(json!({"tapName": "vmtap0"}), &[]).unwrap();
        assert_eq!(o.tap_name.as_deref(), Some("vmtap0"));
    }
}
