//! The format version sandnet's state files carry, checked before any other field is read
//! (a later version may have changed what the fields mean). A file without a `version` is
//! version 1: state written before files carried one stays readable.

use serde::Deserialize;

/// A state file of a format version this build does not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("state format version {found}, this sandnet reads {}", list(reads))]
pub struct UnknownVersion {
    /// The version the file carries.
    pub found: u64,
    /// The versions this build reads.
    pub reads: &'static [u32],
}

fn list(reads: &[u32]) -> String {
    let v: Vec<String> = reads.iter().map(u32::to_string).collect();
    v.join(", ")
}

/// The version of a file that has none: 1 (for serde's `default`).
pub fn version_1() -> u32 {
    1
}

/// Checks the `version` of the JSON document `b` against `reads`. A document without one,
/// or whose version is not a number, or that is not JSON at all, passes: the full parse
/// says what is wrong with it.
pub fn check(b: &[u8], reads: &'static [u32]) -> Result<(), UnknownVersion> {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(default)]
        version: Option<serde_json::Value>,
    }
    let found = serde_json::from_slice::<Probe>(b)
        .ok()
        .and_then(|p| p.version)
        .and_then(|v| v.as_u64());
    match found {
        Some(v) if !reads.iter().any(|&r| u64::from(r) == v) => {
            Err(UnknownVersion { found: v, reads })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_missing_and_odd_versions_pass_unknown_ones_are_named() {
        assert_eq!(check(br#"{"version":1,"x":2}"#, &[1]), Ok(()));
        assert_eq!(check(br#"{"x":2}"#, &[1]), Ok(()));
        assert_eq!(check(br#"{"version":"one"}"#, &[1]), Ok(()));
        assert_eq!(check(b"not json", &[1]), Ok(()));
        let e = check(br#"{"version":7}"#, &[1, 2]).unwrap_err();
        assert_eq!(e.found, 7);
        assert_eq!(
            e.to_string(),
            "state format version 7, this sandnet reads 1, 2"
        );
    }
}
