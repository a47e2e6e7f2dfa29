//! What the configuration asks the host to enforce on every NIC of a sandbox.

use super::Config;
use sandnet_model::{Bandwidth, RateLimit, TapPolicy};

impl Config {
    /// The policy of `[runtime] guest_spoofing` and Kata's `[hypervisor.qemu]`
    /// `rx_rate_limiter_max_rate` (into the guest: ingress) and `tx_rate_limiter_max_rate`
    /// (out of it: egress), each burst the largest [`RateLimit::new`] gives (100 ms of the
    /// rate).
    pub fn tap_policy(&self) -> TapPolicy {
        TapPolicy {
            spoofing: self.runtime.guest_spoofing,
            bandwidth: Bandwidth {
                ingress: RateLimit::new(self.qemu.rx_rate_limiter_max_rate, None),
                egress: RateLimit::new(self.qemu.tx_rate_limiter_max_rate, None),
            },
        }
    }
}
