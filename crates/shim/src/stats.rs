//! A container's statistics as the agent reports them (Kata's `CgroupStats`), in the
//! cgroups v2 metrics type containerd's CRI reads (`io.containerd.cgroups.v2.Metrics`).

use containerd_shim_protos::cgroups_v2::metrics::{CPUStat, MemoryStat, Metrics, PidsStat};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use sandnet_agent_proto::agent::StatsContainerResponse;

/// The Any type URL of the metrics.
pub const METRICS_TYPE: &str = "io.containerd.cgroups.v2.Metrics";

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
}
