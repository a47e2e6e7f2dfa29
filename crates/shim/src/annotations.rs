//! The pod annotations that change what sandnet enforces for one pod, in Kata's names
//! (containerd passes them to the shim when the runtime's `pod_annotations` lists them,
//! e.g. `["io.katacontainers.*"]`): `guest_spoofing`, and the rate limiters of Kata's
//! `[hypervisor.qemu]` section, bits per second for every NIC of the pod (`rx`: into the
//! guest, `tx`: out of it; 0 = no limit).

use crate::error::ShimError;
use sandnet_model::GuestSpoofing;
use sandnet_runtime::api::SandboxRequest;
use std::collections::HashMap;

/// Overrides `[runtime] guest_spoofing` (`block` or `allow`).
pub const GUEST_SPOOFING: &str = "io.katacontainers.config.runtime.guest_spoofing";
/// Overrides `[hypervisor.qemu] rx_rate_limiter_max_rate` (into the guest).
pub const RX_RATE: &str = "io.katacontainers.config.hypervisor.rx_rate_limiter_max_rate";
/// Overrides `[hypervisor.qemu] tx_rate_limiter_max_rate` (out of the guest).
pub const TX_RATE: &str = "io.katacontainers.config.hypervisor.tx_rate_limiter_max_rate";

fn bad(key: &str, why: impl std::fmt::Display) -> ShimError {
    ShimError::Config(format!("annotation {key}: {why}"))
}

fn rate(a: &HashMap<String, String>, key: &str) -> Result<Option<u64>, ShimError> {
    a.get(key)
        .map(|v| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| bad(key, format!("{v:?} is not a rate in bits/s")))
        })
        .transpose()
}

/// Applies the pod's annotations to its sandbox request: each replaces the configuration
/// key it is named after, so they mean what the keys mean (a rate of 0 is no limit). A
/// malformed one is an error naming it (the pod is refused, as Kata refuses a bad
/// annotation).
pub fn apply(a: &HashMap<String, String>, req: &mut SandboxRequest) -> Result<(), ShimError> {
    if let Some(v) = a.get(GUEST_SPOOFING) {
        req.config.runtime.guest_spoofing = v
            .parse::<GuestSpoofing>()
            .map_err(|e| bad(GUEST_SPOOFING, e))?;
    }
    if let Some(r) = rate(a, RX_RATE)? {
        req.config.qemu.rx_rate_limiter_max_rate = r;
    }
    if let Some(r) = rate(a, TX_RATE)? {
        req.config.qemu.tx_rate_limiter_max_rate = r;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandnet_runtime::config::Config;

    fn req() -> SandboxRequest {
        SandboxRequest::new(Config::default())
    }

    fn ann(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn nothing_annotated_changes_nothing() {
        let mut r = req();
        apply(&ann(&[("other", "x")]), &mut r).unwrap();
        assert_eq!(r.config.tap_policy(), req().config.tap_policy());
    }

    #[test]
    fn kata_rate_limiters_become_the_pods_limits() {
        let mut r = req();
        apply(&ann(&[(RX_RATE, "8000000"), (TX_RATE, "6000000")]), &mut r).unwrap();
        let b = r.config.tap_policy().bandwidth;
        assert_eq!(b.ingress.map(|l| l.rate_bps), Some(8_000_000));
        assert_eq!(b.egress.map(|l| l.rate_bps), Some(6_000_000));
        // 0 lifts a limit the configuration set, as the key's 0 means.
        r.config.qemu.rx_rate_limiter_max_rate = 1_000_000;
        apply(&ann(&[(RX_RATE, "0")]), &mut r).unwrap();
        assert_eq!(r.config.tap_policy().bandwidth.ingress, None);
        let mut r = req();
        apply(&ann(&[(GUEST_SPOOFING, "allow")]), &mut r).unwrap();
        assert_eq!(r.config.tap_policy().spoofing, GuestSpoofing::Allow);
    }

    #[test]
    fn malformed_annotations_are_refused_naming_them() {
        for (k, v) in [(RX_RATE, "8M"), (TX_RATE, "-1"), (GUEST_SPOOFING, "off")] {
            let e = apply(&ann(&[(k, v)]), &mut req()).unwrap_err().to_string();
            assert!(e.contains(k), "{e}");
        }
    }
}
