//! The plugin's options, from the plugin configuration, its `args.cni` object, `CNI_ARGS`
//! and `runtimeConfig` (later sources win): `model`, `queues`, `uid`, `gid`, `tapName`,
//! `antiSpoofing`; `stateDir` from the configuration only (a runtime must not move the
//! plugin's state); rate limits from `runtimeConfig.bandwidth` only (the `bandwidth`
//! capability, which a runtime passes when the plugin's configuration declares it).
//! tc-redirect-tap's names are understood too (`TC_REDIRECT_TAP_NAME`/`_UID`/`_GID` in
//! `CNI_ARGS`, `tap_name` in the configuration).

use crate::error::PluginError;
use crate::protocol::config::NetConf;
use crate::protocol::env::Env;
use sandnet_cni::{BandwidthEntry, BANDWIDTH_CAPABILITY};
use sandnet_host::interwork::MAX_QUEUES;
use sandnet_model::{Bandwidth, GuestSpoofing, InterworkingModel, RateLimit};
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
            policy: sandnet_model::TapPolicy {
                spoofing: anti_spoofing(lookup("antiSpoofing"))?,
                bandwidth: bandwidth(conf)?,
            },
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

/// `antiSpoofing` (a boolean, or `true`/`false` in `CNI_ARGS`): blocked when true; allowed
/// when false or absent, as tc-redirect-tap does.
fn anti_spoofing(v: Option<Value>) -> Result<GuestSpoofing, PluginError> {
    match v {
        None | Some(Value::Bool(false)) => Ok(GuestSpoofing::Allow),
        Some(Value::Bool(true)) => Ok(GuestSpoofing::Block),
        Some(Value::String(s)) if s == "false" => Ok(GuestSpoofing::Allow),
        Some(Value::String(s)) if s == "true" => Ok(GuestSpoofing::Block),
        Some(v) => Err(PluginError::InvalidConfig(format!(
            "antiSpoofing must be true or false, not {v}"
        ))),
    }
}

/// `runtimeConfig.bandwidth` (rates in bits/s, bursts in bits): ingress is shaped on the
/// tap, egress on the link; bursts are clamped as [`RateLimit::new`] says.
fn bandwidth(conf: &NetConf) -> Result<Bandwidth, PluginError> {
    let Some(v) = conf
        .raw
        .get("runtimeConfig")
        .and_then(|r| r.get(BANDWIDTH_CAPABILITY))
        .filter(|v| !v.is_null())
    else {
        return Ok(Bandwidth::default());
    };
    let b: BandwidthEntry = serde_json::from_value(v.clone())
        .map_err(|e| PluginError::InvalidConfig(format!("runtimeConfig.bandwidth {v}: {e}")))?;
    let limit = |l: Option<(u64, Option<u64>)>| l.and_then(|(r, b)| RateLimit::new(r, b));
    Ok(Bandwidth {
        ingress: limit(b.ingress()),
        egress: limit(b.egress()),
    })
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
    fn anti_spoofing_and_bandwidth() {
        let o = resolve(json!({}), &[]).unwrap();
        assert_eq!(o.policy, sandnet_model::TapPolicy::unenforced());
        let o = resolve(json!({"antiSpoofing": true}), &[]).unwrap();
        assert_eq!(o.policy.spoofing, GuestSpoofing::Block);
        let o = resolve(json!({"antiSpoofing": true}), &[("antiSpoofing", "false")]).unwrap();
        assert_eq!(o.policy.spoofing, GuestSpoofing::Allow);
        // containerd's burst (2^32-1 bits) is clamped to 100 ms of the rate.
        let o = resolve(
            json!({"capabilities": {"bandwidth": true},
                   "runtimeConfig": {"bandwidth": {"ingressRate": 8_000_000u64,
                       "ingressBurst": 4_294_967_295u64, "egressRate": 4_000_000u64,
                       "egressBurst": 200_000u64}}}),
            &[],
        )
        .unwrap();
        let (i, e) = (o.policy.bandwidth.ingress, o.policy.bandwidth.egress);
        assert_eq!(i, RateLimit::new(8_000_000, None));
        assert_eq!(i.map(|l| l.burst_bytes), Some(100_000));
        assert_eq!(
            e.map(|l| (l.rate_bps, l.burst_bytes)),
            Some((4_000_000, 25_000))
        );
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
            resolve(json!({"antiSpoofing": "yes"}), &[])
                .unwrap_err()
                .code(),
            7
        );
        assert_eq!(
            resolve(
                json!({"runtimeConfig": {"bandwidth": {"ingressRate": "fast"}}}),
                &[]
            )
            .unwrap_err()
            .code(),
            7
        );
        assert_eq!(
            resolve(json!({"tapName": "a/b"}), &[]).unwrap_err().code(),
            7
        );
        let o = resolve(json!({"tapName": "vmtap0"}), &[]).unwrap();
        assert_eq!(o.tap_name.as_deref(), Some("vmtap0"));
    }
}
