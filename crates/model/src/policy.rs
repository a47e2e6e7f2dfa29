//! What the host enforces on a guest NIC: whether the guest may send from addresses that
//! are not its own, and how fast traffic may flow each way.
//!
//! Directions are the pod's, as in CNI's `bandwidth` capability and Kubernetes'
//! annotations: *ingress* is traffic into the guest, *egress* is traffic out of it.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Whether the tap lets the guest send frames that are not from its own MAC and addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestSpoofing {
    /// Only the guest NIC's own MAC and addresses pass (the default).
    #[default]
    Block,
    /// Everything the guest sends passes, as with Kata and tc-redirect-tap.
    Allow,
}

impl GuestSpoofing {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            GuestSpoofing::Block => "block",
            GuestSpoofing::Allow => "allow",
        }
    }
}

impl fmt::Display for GuestSpoofing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for GuestSpoofing {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "block" => Ok(GuestSpoofing::Block),
            "allow" => Ok(GuestSpoofing::Allow),
            other => Err(format!(
                "guest_spoofing must be \"block\" or \"allow\", not {other:?}"
            )),
        }
    }
}

/// The smallest burst a limit gets, in bytes (a few full-size frames).
pub const MIN_BURST_BYTES: u64 = 16 * 1024;

/// How long, at the limit's rate, the largest burst may last: a burst of more than
/// 100 ms of traffic is clamped to that (containerd always asks for 2^32−1 bits, 512 MiB,
/// which would let several seconds through unshaped at the usual rates).
pub const MAX_BURST_MS: u64 = 100;

/// One direction's limit: a token bucket of `rate_bps` bits per second holding at most
/// `burst_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RateLimit {
    /// The sustained rate, bits per second (at least 1).
    pub rate_bps: u64,
    /// The bucket's size, bytes.
    pub burst_bytes: u64,
}

impl RateLimit {
    /// A limit of `rate_bps` bits per second, with the burst asked for (in bits, as CNI
    /// and Kubernetes give it) clamped to `MIN_BURST_BYTES..=` 100 ms of the rate; no
    /// burst means the largest. `None` for a rate of 0 (no limit, as Kata's 0 means).
    pub fn new(rate_bps: u64, burst_bits: Option<u64>) -> Option<RateLimit> {
        if rate_bps == 0 {
            return None;
        }
        let max = Self::max_burst_bytes(rate_bps);
        let burst_bytes = burst_bits.map_or(max, |b| (b / 8).clamp(MIN_BURST_BYTES, max));
        Some(RateLimit {
            rate_bps,
            burst_bytes,
        })
    }

    /// The largest burst a limit of this rate gets, bytes.
    pub fn max_burst_bytes(rate_bps: u64) -> u64 {
        ((rate_bps / 8).saturating_mul(MAX_BURST_MS) / 1000).max(MIN_BURST_BYTES)
    }

    /// The rate in bytes per second (at least 1).
    pub fn rate_bytes(&self) -> u64 {
        (self.rate_bps / 8).max(1)
    }
}

/// The limits of both directions; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Bandwidth {
    /// Into the guest (shaped on the tap's egress).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<RateLimit>,
    /// Out of the guest (shaped on the pod link's egress).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<RateLimit>,
}

impl Bandwidth {
    /// Whether neither direction is limited.
    pub fn is_unlimited(&self) -> bool {
        self.ingress.is_none() && self.egress.is_none()
    }
}

/// What the host enforces on every NIC of a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct TapPolicy {
    /// Whether spoofed frames from the guest are dropped.
    #[serde(default)]
    pub spoofing: GuestSpoofing,
    /// Rate limits.
    #[serde(default)]
    pub bandwidth: Bandwidth,
}

impl TapPolicy {
    /// Nothing enforced: what sandnet did before policies existed (and what an attach plan
    /// written then means).
    pub fn unenforced() -> TapPolicy {
        TapPolicy {
            spoofing: GuestSpoofing::Allow,
            bandwidth: Bandwidth::default(),
        }
    }

    /// Whether the policy needs anything on the pod link's egress (the guard).
    pub fn guards_link(&self) -> bool {
        self.spoofing == GuestSpoofing::Block || self.bandwidth.egress.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_rate_is_no_limit() {
        assert_eq!(RateLimit::new(0, Some(1000)), None);
    }

    #[test]
    fn containerds_burst_is_clamped_to_100ms() {
        let l = RateLimit::new(8_000_000, Some(u32::MAX as u64)).unwrap();
        assert_eq!(l.burst_bytes, 100_000);
        let l = RateLimit::new(8_000_000, None).unwrap();
        assert_eq!(l.burst_bytes, 100_000);
    }

    #[test]
    fn tiny_bursts_are_raised() {
        let l = RateLimit::new(1_000_000, Some(800)).unwrap();
        assert_eq!(l.burst_bytes, MIN_BURST_BYTES);
        let l = RateLimit::new(1_000, None).unwrap();
        assert_eq!(l.burst_bytes, MIN_BURST_BYTES);
    }

    #[test]
    fn spoofing_spellings() {
        assert_eq!("block".parse::<GuestSpoofing>(), Ok(GuestSpoofing::Block));
        assert_eq!("allow".parse::<GuestSpoofing>(), Ok(GuestSpoofing::Allow));
        assert!("off".parse::<GuestSpoofing>().is_err());
        assert_eq!(GuestSpoofing::default(), GuestSpoofing::Block);
    }
}
