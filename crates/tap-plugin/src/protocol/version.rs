//! Version negotiation: which spec versions the plugin speaks, for which commands, and the
//! VERSION answer.

use super::env::Command;
use crate::error::PluginError;
use sandnet_cni::{SpecVersion, CURRENT_VERSION};
use serde_json::{json, Value};

/// The spec versions the plugin speaks: a chained plugin needs `prevResult` with
/// `interfaces`, which start at 0.3.0.
pub const SUPPORTED: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// Checks that `version` is spoken and that `cmd` exists in it (CHECK from 0.4.0, GC and
/// STATUS from 1.1.0).
pub fn check(cmd: Command, version: &str) -> Result<(), PluginError> {
    let err = |why: String| PluginError::IncompatibleVersion {
        version: version.to_string(),
        why,
    };
    if !SUPPORTED.contains(&version) {
        return Err(err(format!("sandnet-tap speaks {}", SUPPORTED.join(", "))));
    }
    let min = match cmd {
        Command::Check => Some(SpecVersion::V0_4_0),
        Command::Gc | Command::Status => Some(SpecVersion::V1_1_0),
        _ => None,
    };
    if let (Some(min), Some(v)) = (min, SpecVersion::parse(version)) {
        if v < min {
            return Err(err(format!(
                "{} needs cniVersion {min} or later",
                cmd.as_str()
            )));
        }
    }
    Ok(())
}

/// The answer to VERSION.
pub fn version_reply(asked: &str) -> Value {
    let v = if asked.is_empty() {
        CURRENT_VERSION
    } else {
        asked
    };
    json!({"cniVersion": v, "supportedVersions": SUPPORTED})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_per_command() {
        assert!(check(Command::Add, "1.1.0").is_ok());
        assert!(check(Command::Add, "0.3.1").is_ok());
        assert_eq!(check(Command::Add, "0.2.0").unwrap_err().code(), 1);
        assert_eq!(check(Command::Add, "9.9.9").unwrap_err().code(), 1);
        assert_eq!(check(Command::Check, "0.3.1").unwrap_err().code(), 1);
        assert_eq!(check(Command::Gc, "1.0.0").unwrap_err().code(), 1);
        assert!(check(Command::Status, "1.1.0").is_ok());
        assert_eq!(version_reply("")["cniVersion"], CURRENT_VERSION);
    }
}
