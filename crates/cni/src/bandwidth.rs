//! The `bandwidth` capability (CNI conventions): what a runtime puts in
//! `runtimeConfig.bandwidth` for plugins that declare `capabilities: {"bandwidth": true}`,
//! and its command-line form `ingressRate=N,ingressBurst=N,egressRate=N,egressBurst=N`.
//!
//! Rates are bits per second and bursts bits, as in the conventions; *ingress* is traffic
//! into the pod, *egress* out of it. A field left out (or 0) is no limit (rates) or "the
//! runtime's choice" (bursts).

use serde::{Deserialize, Serialize};
use std::str::FromStr;

/// The capability's name, in `capabilities` and `runtimeConfig`.
pub const BANDWIDTH_CAPABILITY: &str = "bandwidth";

/// `runtimeConfig.bandwidth`: one pod's limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BandwidthEntry {
    /// Into the pod, bits per second (0: no limit).
    #[serde(default)]
    pub ingress_rate: u64,
    /// Into the pod, bits of burst (0: not given).
    #[serde(default)]
    pub ingress_burst: u64,
    /// Out of the pod, bits per second (0: no limit).
    #[serde(default)]
    pub egress_rate: u64,
    /// Out of the pod, bits of burst (0: not given).
    #[serde(default)]
    pub egress_burst: u64,
}

/// Why a `--bandwidth` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bandwidth {input:?}: {reason}")]
pub struct BandwidthParseError {
    /// The text given.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

impl BandwidthEntry {
    /// The ingress limit as `(rate, burst)`, `None` when there is none.
    pub fn ingress(&self) -> Option<(u64, Option<u64>)> {
        limit(self.ingress_rate, self.ingress_burst)
    }

    /// The egress limit as `(rate, burst)`, `None` when there is none.
    pub fn egress(&self) -> Option<(u64, Option<u64>)> {
        limit(self.egress_rate, self.egress_burst)
    }

    /// Whether neither direction is limited.
    pub fn is_unlimited(&self) -> bool {
        self.ingress_rate == 0 && self.egress_rate == 0
    }

    /// The same limits with each missing burst of a limited direction set to `burst(rate)`
    /// (the reference `bandwidth` plugin refuses a rate without a burst).
    pub fn with_bursts(mut self, burst: impl Fn(u64) -> u64) -> BandwidthEntry {
        if self.ingress_rate > 0 && self.ingress_burst == 0 {
            self.ingress_burst = burst(self.ingress_rate);
        }
        if self.egress_rate > 0 && self.egress_burst == 0 {
            self.egress_burst = burst(self.egress_rate);
        }
        self
    }

    /// The JSON value for `runtimeConfig.bandwidth`.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::json!({
            "ingressRate": self.ingress_rate,
            "ingressBurst": self.ingress_burst,
            "egressRate": self.egress_rate,
            "egressBurst": self.egress_burst,
        })
    }
}

fn limit(rate: u64, burst: u64) -> Option<(u64, Option<u64>)> {
    (rate > 0).then_some((rate, (burst > 0).then_some(burst)))
}

impl FromStr for BandwidthEntry {
    type Err = BandwidthParseError;

    /// `ingressRate=N,ingressBurst=N,egressRate=N,egressBurst=N` (any subset, any order);
    /// each number plain or a Kubernetes quantity (`10M`, `1G`, `512Ki`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| BandwidthParseError {
            input: s.to_string(),
            reason,
        };
        let mut b = BandwidthEntry::default();
        let mut seen: Vec<&str> = vec![];
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| err(format!("{item:?} is not KEY=VALUE")))?;
            let (key, value) = (key.trim(), value.trim());
            let n = quantity(value).ok_or_else(|| {
                err(format!(
                    "{key}: {value:?} is not a whole number (plain, or with k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei)"
                ))
            })?;
            let slot = match key {
                "ingressRate" => &mut b.ingress_rate,
                "ingressBurst" => &mut b.ingress_burst,
                "egressRate" => &mut b.egress_rate,
                "egressBurst" => &mut b.egress_burst,
                other => {
                    return Err(err(format!(
                        "unknown key {other:?} (ingressRate, ingressBurst, egressRate, egressBurst)"
                    )))
                }
            };
            if seen.contains(&key) {
                return Err(err(format!("{key} given twice")));
            }
            seen.push(key);
            *slot = n;
        }
        if seen.is_empty() {
            return Err(err("no limit given".into()));
        }
        for (dir, rate, burst) in [
            ("ingress", b.ingress_rate, b.ingress_burst),
            ("egress", b.egress_rate, b.egress_burst),
        ] {
            if rate == 0 && burst != 0 {
                return Err(err(format!("{dir}Burst without an {dir}Rate")));
            }
        }
        Ok(b)
    }
}

/// A whole number, plain or as a Kubernetes quantity with a decimal (`k`, `M`, `G`, `T`,
/// `P`, `E`) or binary (`Ki` … `Ei`) suffix; `None` when it is neither or overflows.
pub fn quantity(s: &str) -> Option<u64> {
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, suffix) = s.split_at(digits);
    if num.is_empty() {
        return None;
    }
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(quantity("8000000"), Some(8_000_000));
        assert_eq!(quantity("8M"), Some(8_000_000));
        assert_eq!(quantity("1G"), Some(1_000_000_000));
        assert_eq!(quantity("512Ki"), Some(512 * 1024));
        assert_eq!(quantity("10k"), Some(10_000));
        for bad in ["", "M", "1.5M", "-1", "8m", "8 M", "20E"] {
            assert_eq!(quantity(bad), None, "{bad}");
        }
    }

    #[test]
    fn command_line_form() {
        let b: BandwidthEntry = "ingressRate=8M,egressRate=4000000,egressBurst=64Ki"
            .parse()
            .unwrap();
        assert_eq!(b.ingress(), Some((8_000_000, None)));
        assert_eq!(b.egress(), Some((4_000_000, Some(65_536))));
        for bad in [
            "",
            "ingressRate",
            "ingressrate=1",
            "ingressRate=1,ingressRate=2",
            "egressBurst=100",
            "ingressRate=fast",
        ] {
            assert!(bad.parse::<BandwidthEntry>().is_err(), "{bad}");
        }
    }

    #[test]
    fn runtime_config_shape() {
        let b: BandwidthEntry = serde_json::from_value(serde_json::json!(
            {"ingressRate": 1000, "ingressBurst": 4294967295u64}
        ))
        .unwrap();
        assert_eq!(b.ingress(), Some((1000, Some(4_294_967_295))));
        assert_eq!(b.egress(), None);
        let filled = b.with_bursts(|r| r / 10);
        assert_eq!(filled.ingress_burst, 4_294_967_295);
        let e = BandwidthEntry {
            egress_rate: 8_000_000,
            ..Default::default()
        }
        .with_bursts(|r| r / 10);
        assert_eq!(e.to_value()["egressBurst"], 800_000);
    }
}
