//! A link's traffic counters, as the kernel keeps them (`IFLA_STATS64`): the same shape on
//! the host (tap, pod link) and in the guest (its NIC, through the agent).

use serde::{Deserialize, Serialize};

/// A link's counters, as `ip -s link` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkCounters {
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Received packets dropped.
    pub rx_dropped: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Send errors.
    pub tx_errors: u64,
    /// Packets dropped on the way out.
    pub tx_dropped: u64,
}
