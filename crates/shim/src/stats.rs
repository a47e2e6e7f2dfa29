//! A container's statistics as the agent reports them (Kata's `CgroupStats`), in the
//! cgroups v2 metrics type containerd's CRI reads (`io.containerd.cgroups.v2.Metrics`);
//! the sandbox task's are its network counters: each pod link's, as the pod's network
//! namespace counts them (what a runc pod's `eth0` would show), in the cgroups v1 metrics
//! type (`io.containerd.cgroups.v1.Metrics`), whose `network` field containerd 1.6 knows
//! (the v2 type's `network` is newer than 1.6, which drops it).

use containerd_shim_protos::cgroups::metrics::{Metrics as V1Metrics, NetworkStat};
use containerd_shim_protos::cgroups_v2::metrics::{CPUStat, MemoryStat, Metrics, PidsStat};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use sandnet_agent_proto::agent::StatsContainerResponse;
use sandnet_runtime::stats::SandboxStats;

/// The Any type URL of the metrics.
pub const METRICS_TYPE: &str = "io.containerd.cgroups.v2.Metrics";
/// The Any type URL of the sandbox task's (network) metrics.
pub const V1_METRICS_TYPE: &str = "io.containerd.cgroups.v1.Metrics";

/// The agent's statistics as containerd's cgroups v2 metrics.
pub fn metrics(r: &StatsContainerResponse) -> Metrics {
    let cg = &r.cgroup_stats;
    let cpu = &cg.cpu_stats.cpu_usage;
    let mem = &cg.memory_stats;
    Metrics {
        pids: MessageField::some(PidsStat {
            current: cg.pids_stats.current,
            limit: cg.pids_stats.limit,
            ..Default::default()
        }),
        cpu: MessageField::some(CPUStat {
            usage_usec: cpu.total_usage / 1000,
            user_usec: cpu.usage_in_usermode / 1000,
            system_usec: cpu.usage_in_kernelmode / 1000,
            ..Default::default()
        }),
        memory: MessageField::some(MemoryStat {
            usage: mem.usage.usage,
            max_usage: mem.usage.max_usage,
            usage_limit: mem.usage.limit,
            file: mem.cache,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// [`metrics`] packed in an Any.
pub fn to_metrics(
    r: &StatsContainerResponse,
) -> Result<Any, containerd_shim_protos::protobuf::Error> {
    Ok(Any {
        type_url: METRICS_TYPE.into(),
        value: metrics(r).write_to_bytes()?,
        ..Default::default()
    })
}

/// A sandbox's network counters as containerd's metrics: one `NetworkStat` per pod link.
pub fn network_metrics(s: &SandboxStats) -> V1Metrics {
    V1Metrics {
        network: s
            .nics
            .iter()
            .filter_map(|n| {
                let c = n.link.as_ref()?;
                Some(NetworkStat {
                    name: n.interface.clone(),
                    rx_bytes: c.rx_bytes,
                    rx_packets: c.rx_packets,
                    rx_errors: c.rx_errors,
                    rx_dropped: c.rx_dropped,
                    tx_bytes: c.tx_bytes,
                    tx_packets: c.tx_packets,
                    tx_errors: c.tx_errors,
                    tx_dropped: c.tx_dropped,
                    ..Default::default()
                })
            })
            .collect(),
        ..Default::default()
    }
}

/// [`network_metrics`] packed in an Any.
pub fn to_network_metrics(
    s: &SandboxStats,
) -> Result<Any, containerd_shim_protos::protobuf::Error> {
    Ok(Any {
        type_url: V1_METRICS_TYPE.into(),
        value: network_metrics(s).write_to_bytes()?,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandnet_agent_proto::agent::{
        CgroupStats, CpuStats, CpuUsage, MemoryData, MemoryStats, PidsStats,
    };

    #[test]
    fn agent_stats_to_metrics() {
        let r = StatsContainerResponse {
            cgroup_stats: MessageField::some(CgroupStats {
                cpu_stats: MessageField::some(CpuStats {
                    cpu_usage: MessageField::some(CpuUsage {
                        total_usage: 5_000_000,
                        usage_in_usermode: 3_000_000,
                        usage_in_kernelmode: 2_000_000,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                memory_stats: MessageField::some(MemoryStats {
                    cache: 7,
                    usage: MessageField::some(MemoryData {
                        usage: 1 << 20,
                        max_usage: 2 << 20,
                        limit: 32 << 20,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                pids_stats: MessageField::some(PidsStats {
                    current: 3,
                    limit: 64,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let any = to_metrics(&r).unwrap();
        assert_eq!(any.type_url, METRICS_TYPE);
        let m = Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!((m.pids.current, m.pids.limit), (3, 64));
        assert_eq!(
            (m.cpu.usage_usec, m.cpu.user_usec, m.cpu.system_usec),
            (5000, 3000, 2000)
        );
        assert_eq!(m.memory.usage, 1 << 20);
        assert_eq!(m.memory.usage_limit, 32 << 20);
        assert_eq!(m.memory.max_usage, 2 << 20);
    }

    #[test]
    fn sandbox_network_to_metrics() {
        use sandnet_host::guard::{GuardCounters, LinkCounters};
        use sandnet_runtime::stats::NicStats;
        let nic = |name: &str, link| NicStats {
            interface: name.into(),
            link_index: 2,
            link,
            tap: None,
            tap_counters: None,
            guard: GuardCounters::default(),
            guest: None,
        };
        let s = SandboxStats {
            id: "sb".into(),
            pod: None,
            nics: vec![
                nic(
                    "eth0",
                    Some(LinkCounters {
                        rx_bytes: 10,
                        tx_packets: 2,
                        tx_dropped: 1,
                        ..Default::default()
                    }),
                ),
                nic("gone", None),
            ],
            guest_error: None,
        };
        let any = to_network_metrics(&s).unwrap();
        assert_eq!(any.type_url, V1_METRICS_TYPE);
        let m = V1Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!(m.network.len(), 1);
        let n = &m.network[0];
        assert_eq!(n.name, "eth0");
        assert_eq!((n.rx_bytes, n.tx_packets, n.tx_dropped), (10, 2, 1));
    }
}
