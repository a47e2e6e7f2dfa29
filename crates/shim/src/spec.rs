//! The bundle's OCI spec as the guest's agent gets it: JSON ([`crate::ocispec`]) to Kata's
//! protobuf `oci.Spec`, then adapted to the VM: the root and the bind mounts point into the
//! sandbox's shared directory as the guest sees it, `/dev/shm` becomes a tmpfs of the
//! container's, and the namespaces that name the pod's (the VM's own) are dropped.

use crate::ocispec::{self, SpecError};
use containerd_shim_protos::protobuf::MessageField;
use sandnet_agent_proto::oci;
use std::collections::BTreeMap;

/// Options of the tmpfs that replaces a `/dev/shm` bind mount (CRI's pod shm size).
const SHM_OPTIONS: &[&str] = &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"];

/// How a spec mount reaches the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountKind {
    /// A host path, bind-mounted into the share and from there in the guest.
    Share,
    /// The pod's `/dev/shm`: a tmpfs in the guest instead (shared memory does not cross
    /// the share).
    Shm,
    /// A file system the guest mounts itself (proc, tmpfs, devpts, sysfs, cgroup, …).
    Guest,
}

/// Which kind `m` is.
pub fn mount_kind(kind: &str, destination: &str, options: &[String]) -> MountKind {
    let bind = kind == "bind" || options.iter().any(|o| o == "bind" || o == "rbind");
    match (bind, destination.trim_end_matches('/')) {
        (true, "/dev/shm") => MountKind::Shm,
        (true, _) => MountKind::Share,
        (false, _) => MountKind::Guest,
    }
}

/// Where the container's files are in the guest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestLayout {
    /// The root file system's guest path.
    pub root: String,
    /// Guest source of each [`MountKind::Share`] mount, by its index in the spec.
    pub sources: BTreeMap<usize, String>,
}

/// Checks what the agent cannot do without.
pub fn check_process(p: &ocispec::Process) -> Result<(), SpecError> {
    if p.args.is_empty() {
        return Err(SpecError(
            "the process has no command (args is empty)".into(),
        ));
    }
    Ok(())
}

/// The spec as Kata's protobuf.
pub fn to_proto(s: &ocispec::Spec) -> oci::Spec {
    oci::Spec {
        Version: s.oci_version.clone(),
        Process: MessageField::from_option(s.process.as_ref().map(process_to_proto)),
        Root: MessageField::from_option(s.root.as_ref().map(|r| oci::Root {
            Path: r.path.clone(),
            Readonly: r.readonly,
            ..Default::default()
        })),
        Hostname: s.hostname.clone(),
        Mounts: s
            .mounts
            .iter()
            .map(|m| oci::Mount {
                destination: m.destination.clone(),
                source: m.source.clone(),
                type_: m.kind.clone(),
                options: m.options.clone(),
                ..Default::default()
            })
            .collect(),
        Annotations: s.annotations.clone(),
        Linux: MessageField::from_option(s.linux.as_ref().map(linux_to_proto)),
        ..Default::default()
    }
}

/// A process as Kata's protobuf (a working directory defaults to `/`).
pub fn process_to_proto(p: &ocispec::Process) -> oci::Process {
    let caps = p.capabilities.as_ref().map(|c| oci::LinuxCapabilities {
        Bounding: c.bounding.clone(),
        Effective: c.effective.clone(),
        Inheritable: c.inheritable.clone(),
        Permitted: c.permitted.clone(),
        Ambient: c.ambient.clone(),
        ..Default::default()
    });
    oci::Process {
        Terminal: p.terminal,
        ConsoleSize: MessageField::from_option(p.console_size.as_ref().map(|c| oci::Box {
            Height: c.height,
            Width: c.width,
            ..Default::default()
        })),
        User: MessageField::some(oci::User {
            UID: p.user.uid,
            GID: p.user.gid,
            AdditionalGids: p.user.additional_gids.clone(),
            Username: p.user.username.clone(),
            ..Default::default()
        }),
        Args: p.args.clone(),
        Env: p.env.clone(),
        Cwd: if p.cwd.is_empty() {
            "/".into()
        } else {
            p.cwd.clone()
        },
        Capabilities: MessageField::from_option(caps),
        Rlimits: p
            .rlimits
            .iter()
            .map(|r| oci::POSIXRlimit {
                Type: r.kind.clone(),
                Hard: r.hard,
                Soft: r.soft,
                ..Default::default()
            })
            .collect(),
        NoNewPrivileges: p.no_new_privileges,
        OOMScoreAdj: p.oom_score_adj.unwrap_or(0),
        ..Default::default()
    }
}

fn linux_to_proto(l: &ocispec::Linux) -> oci::Linux {
    oci::Linux {
        Sysctl: l.sysctl.clone(),
        Resources: MessageField::from_option(l.resources.as_ref().map(resources_to_proto)),
        CgroupsPath: l.cgroups_path.clone(),
        Namespaces: l
            .namespaces
            .iter()
            .map(|n| oci::LinuxNamespace {
                Type: n.kind.clone(),
                Path: n.path.clone(),
                ..Default::default()
            })
            .collect(),
        MaskedPaths: l.masked_paths.clone(),
        ReadonlyPaths: l.readonly_paths.clone(),
        ..Default::default()
    }
}

fn resources_to_proto(r: &ocispec::Resources) -> oci::LinuxResources {
    oci::LinuxResources {
        Memory: MessageField::from_option(r.memory.as_ref().map(|m| oci::LinuxMemory {
            Limit: m.limit.unwrap_or(0),
            Reservation: m.reservation.unwrap_or(0),
            Swap: m.swap.unwrap_or(0),
            Swappiness: m.swappiness.unwrap_or(0),
            DisableOOMKiller: m.disable_oom_killer.unwrap_or(false),
            ..Default::default()
        })),
        CPU: MessageField::from_option(r.cpu.as_ref().map(|c| oci::LinuxCPU {
            Shares: c.shares.unwrap_or(0),
            Quota: c.quota.unwrap_or(0),
            Period: c.period.unwrap_or(0),
            Cpus: c.cpus.clone(),
            Mems: c.mems.clone(),
            ..Default::default()
        })),
        Pids: MessageField::from_option(r.pids.as_ref().map(|p| oci::LinuxPids {
            Limit: p.limit,
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// Adapts a converted spec to the VM: root and shared bind mounts at their guest paths,
/// `/dev/shm` a tmpfs, no network namespace (the guest's network is the pod's), no IPC or
/// UTS namespace that names an existing one (those are the pod's, i.e. the guest's own),
/// no namespace paths at all (they are host paths), no host name without a UTS
/// namespace of the container's own (the guest already has the pod's), and no swap limit
/// (the VM has no swap device; CRI asks for memory+swap = memory, i.e. none).
pub fn adapt_for_guest(spec: &mut oci::Spec, layout: &GuestLayout) {
    let root = spec.Root.mut_or_insert_default();
    root.Path = layout.root.clone();
    for (i, m) in spec.Mounts.iter_mut().enumerate() {
        match mount_kind(&m.type_, &m.destination, &m.options) {
            MountKind::Share => {
                if let Some(src) = layout.sources.get(&i) {
                    m.source = src.clone();
                }
            }
            MountKind::Shm => {
                m.type_ = "tmpfs".into();
                m.source = "shm".into();
                m.options = SHM_OPTIONS.iter().map(|s| s.to_string()).collect();
            }
            MountKind::Guest => {}
        }
    }
    if let Some(linux) = spec.Linux.as_mut() {
        if let Some(mem) = linux.Resources.as_mut().and_then(|r| r.Memory.as_mut()) {
            mem.Swap = 0;
        }
        linux.Namespaces.retain(|n| match n.Type.as_str() {
            "network" => false,
            "ipc" | "uts" => n.Path.is_empty(),
            _ => true,
        });
        for n in &mut linux.Namespaces {
            n.Path.clear();
        }
    }
    // Every container gets a UTS namespace of its own in the guest; the spec's host name
    // (CRI puts the pod's there) is what it shows, as in the pod's shared one with runc.
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ocispec::parse_spec;

    const CRI_SPEC: &[u8] = br#"{
      "ociVersion": "1.0.2-dev",
      "process": {
        "user": {"uid": 1000, "gid": 1000, "additionalGids": [10, 20]},
        "args": ["/bin/busybox", "sh", "-c", "echo hi"],
        "env": ["PATH=/bin", "HOSTNAME=pod"],
        "cwd": "",
        "terminal": true,
        "consoleSize": {"height": 24, "width": 80},
        "capabilities": {"bounding": ["CAP_CHOWN"], "effective": ["CAP_CHOWN"],
                         "permitted": ["CAP_CHOWN"]},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 512}],
        "noNewPrivileges": true,
        "oomScoreAdj": 500
      },
      "root": {"path": "rootfs", "readonly": true},
      "hostname": "pod",
      "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/etc/hosts", "type": "bind", "source": "/var/lib/cd/sandboxes/p/hosts",
         "options": ["rbind", "rprivate", "rw"]},
        {"destination": "/data", "source": "/srv/data", "options": ["bind", "ro"]},
        {"destination": "/dev/shm", "type": "bind", "source": "/run/cd/sandboxes/p/shm",
         "options": ["rbind", "ro"]}
      ],
      "annotations": {"io.kubernetes.cri.container-type": "container"},
      "linux": {
        "sysctl": {"net.ipv4.ip_forward": "1"},
        "resources": {"memory": {"limit": 33554432, "swap": 33554432},
                      "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0"},
                      "pids": {"limit": 64}},
        "cgroupsPath": "/k8s.io/c1",
        "namespaces": [{"type": "pid"}, {"type": "ipc", "path": "/proc/42/ns/ipc"},
                       {"type": "uts", "path": "/proc/42/ns/uts"}, {"type": "mount"},
                       {"type": "network", "path": "/proc/42/ns/net"}],
        "maskedPaths": ["/proc/kcore"],
        "readonlyPaths": ["/proc/sys"]
      }
    }"#;

    #[test]
    fn converts_every_field() {
        let s = to_proto(&parse_spec(CRI_SPEC).unwrap());
        assert_eq!(s.Version, "1.0.2-dev");
        let p = s.Process.as_ref().unwrap();
        assert_eq!(p.Args, ["/bin/busybox", "sh", "-c", "echo hi"]);
        assert_eq!(p.Env, ["PATH=/bin", "HOSTNAME=pod"]);
        assert_eq!(p.Cwd, "/");
        assert!(p.Terminal && p.NoNewPrivileges);
        assert_eq!((p.ConsoleSize.Height, p.ConsoleSize.Width), (24, 80));
        assert_eq!((p.User.UID, p.User.GID), (1000, 1000));
        assert_eq!(p.User.AdditionalGids, [10, 20]);
        assert_eq!(p.Capabilities.Bounding, ["CAP_CHOWN"]);
        assert!(p.Capabilities.Ambient.is_empty());
        assert_eq!(p.Rlimits[0].Type, "RLIMIT_NOFILE");
        assert_eq!((p.Rlimits[0].Hard, p.Rlimits[0].Soft), (1024, 512));
        assert_eq!(p.OOMScoreAdj, 500);
        assert_eq!(s.Root.Path, "rootfs");
        assert!(s.Root.Readonly);
        assert_eq!(s.Hostname, "pod");
        assert_eq!(s.Mounts.len(), 4);
        assert_eq!(s.Mounts[0].type_, "proc");
        assert_eq!(s.Mounts[2].type_, "");
        assert_eq!(s.Mounts[2].options, ["bind", "ro"]);
        assert_eq!(
            s.Annotations["io.kubernetes.cri.container-type"],
            "container"
        );
        let l = s.Linux.as_ref().unwrap();
        assert_eq!(l.Sysctl["net.ipv4.ip_forward"], "1");
        assert_eq!(l.Resources.Memory.Limit, 32 << 20);
        assert_eq!(l.Resources.Memory.Swap, 32 << 20);
        assert_eq!(l.Resources.CPU.Shares, 512);
        assert_eq!(l.Resources.CPU.Quota, 50000);
        assert_eq!(l.Resources.CPU.Period, 100000);
        assert_eq!(l.Resources.CPU.Cpus, "0");
        assert_eq!(l.Resources.Pids.Limit, 64);
        assert_eq!(l.CgroupsPath, "/k8s.io/c1");
        assert_eq!(l.Namespaces.len(), 5);
        assert_eq!(l.MaskedPaths, ["/proc/kcore"]);
        assert_eq!(l.ReadonlyPaths, ["/proc/sys"]);
    }

    #[test]
    fn proto_round_trips_through_the_wire() {
        use containerd_shim_protos::protobuf::Message;
        let s = to_proto(&parse_spec(CRI_SPEC).unwrap());
        let bytes = s.write_to_bytes().unwrap();
        assert_eq!(oci::Spec::parse_from_bytes(&bytes).unwrap(), s);
    }

    #[test]
    fn mount_kinds() {
        let o = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(mount_kind("bind", "/etc/hosts", &o(&[])), MountKind::Share);
        assert_eq!(mount_kind("", "/data", &o(&["rbind"])), MountKind::Share);
        assert_eq!(mount_kind("none", "/data", &o(&["bind"])), MountKind::Share);
        assert_eq!(mount_kind("bind", "/dev/shm/", &o(&[])), MountKind::Shm);
        assert_eq!(mount_kind("tmpfs", "/dev/shm", &o(&[])), MountKind::Guest);
        assert_eq!(
            mount_kind("proc", "/proc", &o(&["nosuid"])),
            MountKind::Guest
        );
    }

    #[test]
    fn adapted_for_the_guest() {
        let mut s = to_proto(&parse_spec(CRI_SPEC).unwrap());
        let layout = GuestLayout {
            root: "/run/sandnet/shared/c1/rootfs".into(),
            sources: [
                (1, "/run/sandnet/shared/c1/mounts/1-hosts".to_string()),
                (2, "/run/sandnet/shared/c1/mounts/2-data".to_string()),
            ]
            .into(),
        };
        adapt_for_guest(&mut s, &layout);
        assert_eq!(s.Root.Path, "/run/sandnet/shared/c1/rootfs");
        assert!(s.Root.Readonly, "root's read-only flag kept");
        assert_eq!(s.Mounts[0].source, "proc");
        assert_eq!(s.Mounts[1].source, "/run/sandnet/shared/c1/mounts/1-hosts");
        assert_eq!(s.Mounts[1].options, ["rbind", "rprivate", "rw"]);
        assert_eq!(s.Mounts[2].source, "/run/sandnet/shared/c1/mounts/2-data");
        assert_eq!(s.Mounts[3].type_, "tmpfs");
        assert_eq!(s.Mounts[3].source, "shm");
        assert!(s.Mounts[3].options.contains(&"mode=1777".to_string()));
        let ns: Vec<(&str, &str)> = s
            .Linux
            .Namespaces
            .iter()
            .map(|n| (n.Type.as_str(), n.Path.as_str()))
            .collect();
        assert_eq!(ns, [("pid", ""), ("mount", "")]);
        assert_eq!(s.Hostname, "pod", "the pod's host name is kept");
        let mem = &s.Linux.Resources.Memory;
        assert_eq!((mem.Limit, mem.Swap), (32 << 20, 0), "no swap in the VM");
    }

    #[test]
    fn own_uts_keeps_the_hostname_and_paths_go() {
        let mut s = to_proto(
            &parse_spec(
                br#"{"hostname":"h","linux":{"namespaces":[{"type":"uts"},
                    {"type":"pid","path":"/proc/42/ns/pid"}]}}"#,
            )
            .unwrap(),
        );
        adapt_for_guest(&mut s, &GuestLayout::default());
        assert_eq!(s.Hostname, "h");
        assert_eq!(s.Linux.Namespaces.len(), 2);
        assert!(s.Linux.Namespaces.iter().all(|n| n.Path.is_empty()));
    }

    #[test]
    fn process_needs_args() {
        let p = crate::ocispec::parse_process(br#"{"args":[],"cwd":"/"}"#).unwrap();
        assert!(check_process(&p).unwrap_err().0.contains("no command"));
        let p = crate::ocispec::parse_process(br#"{"args":["ls"],"cwd":"/tmp"}"#).unwrap();
        check_process(&p).unwrap();
        assert_eq!(process_to_proto(&p).Cwd, "/tmp");
    }
}
