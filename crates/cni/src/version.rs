//! CNI specification versions.

use std::cmp::Ordering;
use std::fmt;

/// The spec version this executor implements.
pub const CURRENT_VERSION: &str = "1.1.0";

/// Every spec version this executor can speak (configs, results, conversions).
pub const SUPPORTED_VERSIONS: &[&str] = &[
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

/// A parsed `major.minor.patch` spec version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpecVersion(pub u32, pub u32, pub u32);

impl SpecVersion {
    /// 0.4.0: CHECK and cached `prevResult` on DEL start here.
    pub const V0_4_0: SpecVersion = SpecVersion(0, 4, 0);
    /// 1.1.0: STATUS and GC start here.
    pub const V1_1_0: SpecVersion = SpecVersion(1, 1, 0);

    /// Parses `"a.b.c"`; the empty string means 0.1.0, as the spec says for results.
    pub fn parse(s: &str) -> Option<SpecVersion> {
        if s.is_empty() {
            return Some(SpecVersion(0, 1, 0));
        }
        let mut it = s.split('.');
        let a = it.next()?.parse().ok()?;
        let b = it.next()?.parse().ok()?;
        let c = it.next()?.parse().ok()?;
        if it.next().is_some() {
            return None;
        }
        Some(SpecVersion(a, b, c))
    }

    /// The family of result formats this version uses.
    pub(crate) fn result_format(self) -> Option<ResultFormat> {
        match (self.0, self.1, self.2) {
            (0, 1, 0) | (0, 2, 0) => Some(ResultFormat::V02),
            (0, 3, 0) | (0, 3, 1) | (0, 4, 0) => Some(ResultFormat::V04),
            (1, 0, 0) | (1, 1, 0) => Some(ResultFormat::V1),
            _ => None,
        }
    }
}

impl fmt::Display for SpecVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// Compares two version strings; unparsable ones sort first.
pub(crate) fn cmp_versions(a: &str, b: &str) -> Ordering {
    SpecVersion::parse(a).cmp(&SpecVersion::parse(b))
}

/// `v >= min`, false when `v` does not parse.
pub(crate) fn at_least(v: &str, min: SpecVersion) -> bool {
    SpecVersion::parse(v).is_some_and(|v| v >= min)
}

/// The three shapes of CNI results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResultFormat {
    /// 0.1.0 / 0.2.0: `ip4` / `ip6`.
    V02,
    /// 0.3.0 / 0.3.1 / 0.4.0: `interfaces`, `ips` with `version`.
    V04,
    /// 1.0.0 / 1.1.0: `ips` without `version`.
    V1,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_order() {
        assert_eq!(SpecVersion::parse("0.3.1"), Some(SpecVersion(0, 3, 1)));
        assert_eq!(SpecVersion::parse(""), Some(SpecVersion(0, 1, 0)));
        assert_eq!(SpecVersion::parse("1.0"), None);
        assert_eq!(SpecVersion::parse("1.0.0.0"), None);
        assert_eq!(SpecVersion::parse("x.0.0"), None);
        assert!(SpecVersion::parse("0.10.0") > SpecVersion::parse("0.4.0"));
        assert_eq!(cmp_versions("1.0.0", "0.4.0"), Ordering::Greater);
        assert!(at_least("0.4.0", SpecVersion::V0_4_0));
        assert!(!at_least("0.3.1", SpecVersion::V0_4_0));
        for v in SUPPORTED_VERSIONS {
            assert!(SpecVersion::parse(v)
                .and_then(|v| v.result_format())
                .is_some());
        }
    }
}
