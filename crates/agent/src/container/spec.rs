//! From a request's OCI spec to the plan a container helper carries out, every value
//! checked on the way: what is unknown or malformed fails the request here, before anything
//! is created, with one line saying which value.

use super::caps::CapSets;
use sandnet_agent_proto::{agent, oci};
use serde::{Deserialize, Serialize};

/// What a helper process does: set up a new container, or run a process in one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Plan {
    /// CreateContainer: new namespaces, the root file system, then wait for Start.
    Create(CreatePlan),
    /// ExecProcess: join a running container and run a process at once.
    Exec(ExecPlan),
}

/// A new container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatePlan {
    /// The container id (for messages).
    pub id: String,
    /// The root file system directory (a guest path).
    pub root: String,
    /// Remount the root read-only.
    pub readonly_root: bool,
    /// The container's hostname; empty keeps the guest's.
    pub hostname: String,
    /// The spec's mounts, in order.
    pub mounts: Vec<MountPlan>,
    /// Paths hidden from the container (`/dev/null` over files, an empty tmpfs over dirs).
    pub masked: Vec<String>,
    /// Paths made read-only.
    pub readonly_paths: Vec<String>,
    /// The container's init process.
    pub process: ProcessPlan,
    /// The cgroup the helper joins before forking, if any.
    pub cgroup: Option<String>,
}

/// A process started in a running container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecPlan {
    /// The container id (for messages).
    pub id: String,
    /// The process.
    pub process: ProcessPlan,
    /// The container's cgroup, if any.
    pub cgroup: Option<String>,
}

/// How a mount is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountKind {
    /// A bind mount of a guest path (`bind`, or `rbind` when recursive).
    Bind {
        /// `rbind`: submounts come along.
        recursive: bool,
    },
    /// `cgroup`/`cgroup2`: the container's own cgroup directory.
    Cgroup,
    /// A new file system instance (`proc`, `tmpfs`, `devpts`, `mqueue`, `sysfs`, ...).
    Fs,
}

/// One mount of the spec.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MountPlan {
    /// Where, inside the container.
    pub dest: String,
    /// What: a guest path for bind mounts, a name otherwise.
    pub source: String,
    /// The file system type (for [`MountKind::Fs`]).
    pub fstype: String,
    /// How.
    pub kind: MountKind,
    /// `MS_*` flags from the options (`ro`, `nosuid`, ...).
    pub flags: u64,
    /// Propagation flags from the options (`rprivate`, `slave`, ...), applied after.
    pub propagation: u64,
    /// The other options, joined with commas: the file system's data.
    pub data: String,
}

/// One resource limit.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Rlimit {
    /// The `RLIMIT_*` number.
    pub resource: u32,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// The process a helper starts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessPlan {
    /// argv; `args[0]` is looked up in `PATH` inside the container.
    pub args: Vec<String>,
    /// The whole environment.
    pub env: Vec<String>,
    /// Working directory inside the container.
    pub cwd: String,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// stdin/stdout/stderr on a new pty.
    pub terminal: bool,
    /// Initial pty size: rows, columns.
    pub console: Option<(u16, u16)>,
    /// Capabilities; `None` leaves them to `setuid(2)` (all for root, none otherwise).
    pub caps: Option<CapSets>,
    /// Resource limits.
    pub rlimits: Vec<Rlimit>,
    /// `PR_SET_NO_NEW_PRIVS`.
    pub no_new_privs: bool,
    /// `/proc/self/oom_score_adj`, when set.
    pub oom_score_adj: Option<i32>,
}

/// Resource limits for the container's cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// `memory.max` in bytes.
    pub memory: Option<i64>,
    /// `memory.swap.max`: bytes, or `max`.
    pub swap: Option<String>,
    /// `cpu.max`: `"<quota> <period>"`.
    pub cpu_max: Option<String>,
    /// `cpu.weight`.
    pub cpu_weight: Option<u64>,
    /// `pids.max`.
    pub pids: Option<i64>,
}

impl Limits {
    /// The controllers these limits need.
    pub fn controllers(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.memory.is_some() || self.swap.is_some() {
            v.push("memory");
        }
        if self.cpu_max.is_some() || self.cpu_weight.is_some() {
            v.push("cpu");
        }
        if self.pids.is_some() {
            v.push("pids");
        }
        v
    }
}

/// `PATH` when the spec's environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Whether `id` may name a container or process: 1 to 128 of `[A-Za-z0-9_.+-]`, not `.`
/// or `..` (it becomes a cgroup directory name).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.+-".contains(&b))
}

/// The plan and cgroup limits of a CreateContainer request (`cgroup` still unset). The
/// error is one line without the `container <id>: ` prefix.
pub fn create_plan(req: &agent::CreateContainerRequest) -> Result<(CreatePlan, Limits), String> {
    let spec = req.OCI.as_ref().ok_or("the request has no OCI spec")?;
    let root = spec.Root.as_ref().ok_or("the spec has no root")?;
    if !root.Path.starts_with('/') {
        return Err(format!(
            "root path {:?} is not an absolute guest path",
            root.Path
        ));
    }
    let process = spec.Process.as_ref().ok_or("the spec has no process")?;
    let process = process_plan(process, req.string_user.as_ref())?;
    if spec.Hostname.len() > 64 || spec.Hostname.contains('\0') {
        return Err(format!("hostname {:?} is not valid", spec.Hostname));
    }
    let mut mounts = Vec::new();
    for m in &spec.Mounts {
        mounts.push(mount_plan(m)?);
    }
    let (mut masked, mut readonly_paths, mut limits) = (Vec::new(), Vec::new(), Limits::default());
    if let Some(linux) = spec.Linux.as_ref() {
        for ns in &linux.Namespaces {
            match ns.Type.as_str() {
                "mount" | "uts" | "ipc" | "pid" => {}
                other => tracing::debug!(
                    container = %req.container_id,
                    namespace = other,
                    "namespace ignored (the container shares the agent's)"
                ),
            }
        }
        if !linux.Sysctl.is_empty() {
            tracing::debug!(container = %req.container_id, "sysctls ignored");
        }
        for p in linux.MaskedPaths.iter().chain(&linux.ReadonlyPaths) {
            if !p.starts_with('/') || p.contains('\0') {
                return Err(format!("masked or read-only path {p:?} is not absolute"));
            }
        }
        masked.clone_from(&linux.MaskedPaths);
        readonly_paths.clone_from(&linux.ReadonlyPaths);
        if let Some(r) = linux.Resources.as_ref() {
            limits = limits_of(r)?;
        }
    }
    Ok((
        CreatePlan {
            id: req.container_id.clone(),
            root: root.Path.clone(),
            readonly_root: root.Readonly,
            hostname: spec.Hostname.clone(),
            mounts,
            masked,
            readonly_paths,
            process,
            cgroup: None,
        },
        limits,
    ))
}

/// The process of an ExecProcess request.
pub fn exec_process(req: &agent::ExecProcessRequest) -> Result<ProcessPlan, String> {
    let p = req.process.as_ref().ok_or("the request has no process")?;
    process_plan(p, req.string_user.as_ref())
}

fn no_nul(what: &str, s: &str) -> Result<(), String> {
    if s.contains('\0') {
        return Err(format!("{what} {s:?} contains a NUL byte"));
    }
    Ok(())
}

fn process_plan(
    p: &oci::Process,
    string_user: Option<&agent::StringUser>,
) -> Result<ProcessPlan, String> {
    if p.Args.is_empty() || p.Args[0].is_empty() {
        return Err("the process has no args".into());
    }
    for a in &p.Args {
        no_nul("argument", a)?;
    }
    for e in &p.Env {
        no_nul("environment entry", e)?;
        match e.split_once('=') {
            Some((k, _)) if !k.is_empty() => {}
            _ => return Err(format!("environment entry {e:?} is not KEY=VALUE")),
        }
    }
    let cwd = if p.Cwd.is_empty() { "/" } else { &p.Cwd };
    if !cwd.starts_with('/') {
        return Err(format!("cwd {cwd:?} is not absolute"));
    }
    no_nul("cwd", cwd)?;
    let (uid, gid, groups) = match (p.User.as_ref(), string_user) {
        (Some(u), _) => (u.UID, u.GID, u.AdditionalGids.clone()),
        (None, Some(s)) => {
            let num = |what: &str, v: &str| -> Result<u32, String> {
                if v.is_empty() {
                    return Ok(0);
                }
                v.parse()
                    .map_err(|_| format!("{what} {v:?} is not a number (names are not looked up)"))
            };
            let mut groups = Vec::new();
            for g in &s.additionalGids {
                groups.push(num("additional gid", g)?);
            }
            (num("uid", &s.uid)?, num("gid", &s.gid)?, groups)
        }
        (None, None) => (0, 0, Vec::new()),
    };
    let mut rlimits = Vec::new();
    for r in &p.Rlimits {
        let resource =
            rlimit_number(&r.Type).ok_or_else(|| format!("unknown rlimit {:?}", r.Type))?;
        if r.Soft > r.Hard {
            return Err(format!(
                "rlimit {}: soft limit {} is above the hard limit {}",
                r.Type, r.Soft, r.Hard
            ));
        }
        rlimits.push(Rlimit {
            resource,
            soft: r.Soft,
            hard: r.Hard,
        });
    }
    let caps = match p.Capabilities.as_ref() {
        None => None,
        Some(c) => Some(CapSets {
            bounding: super::caps::mask(&c.Bounding)?,
            effective: super::caps::mask(&c.Effective)?,
            permitted: super::caps::mask(&c.Permitted)?,
            inheritable: super::caps::mask(&c.Inheritable)?,
            ambient: super::caps::mask(&c.Ambient)?,
        }),
    };
    if !(-1000..=1000).contains(&p.OOMScoreAdj) {
        return Err(format!(
            "oom_score_adj {} is outside -1000..1000",
            p.OOMScoreAdj
        ));
    }
    let console = p.ConsoleSize.as_ref().and_then(|b| {
        let rows = u16::try_from(b.Height).ok()?;
        let cols = u16::try_from(b.Width).ok()?;
        (rows > 0 && cols > 0).then_some((rows, cols))
    });
    Ok(ProcessPlan {
        args: p.Args.clone(),
        env: p.Env.clone(),
        cwd: cwd.to_string(),
        uid,
        gid,
        groups,
        terminal: p.Terminal,
        console,
        caps,
        rlimits,
        no_new_privs: p.NoNewPrivileges,
        oom_score_adj: (p.OOMScoreAdj != 0).then_some(p.OOMScoreAdj as i32),
    })
}

/// The number of an rlimit name like `RLIMIT_NOFILE`.
pub fn rlimit_number(name: &str) -> Option<u32> {
    let r = match name {
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        _ => return None,
    };
    #[allow(clippy::unnecessary_cast)]
    Some(r as u32)
}

/// `(name, set, flag)`: what a mount option word does to the `MS_*` flags.
const FLAG_WORDS: &[(&str, bool, u64)] = &[
    ("ro", true, libc::MS_RDONLY),
    ("rw", false, libc::MS_RDONLY),
    ("nosuid", true, libc::MS_NOSUID),
    ("suid", false, libc::MS_NOSUID),
    ("nodev", true, libc::MS_NODEV),
    ("dev", false, libc::MS_NODEV),
    ("noexec", true, libc::MS_NOEXEC),
    ("exec", false, libc::MS_NOEXEC),
    ("sync", true, libc::MS_SYNCHRONOUS),
    ("async", false, libc::MS_SYNCHRONOUS),
    ("dirsync", true, libc::MS_DIRSYNC),
    ("mand", true, libc::MS_MANDLOCK),
    ("nomand", false, libc::MS_MANDLOCK),
    ("noatime", true, libc::MS_NOATIME),
    ("atime", false, libc::MS_NOATIME),
    ("nodiratime", true, libc::MS_NODIRATIME),
    ("diratime", false, libc::MS_NODIRATIME),
    ("relatime", true, libc::MS_RELATIME),
    ("norelatime", false, libc::MS_RELATIME),
    ("strictatime", true, libc::MS_STRICTATIME),
    ("nostrictatime", false, libc::MS_STRICTATIME),
    ("silent", true, libc::MS_SILENT),
    ("loud", false, libc::MS_SILENT),
    ("nosymfollow", true, 256),
];

const PROPAGATION_WORDS: &[(&str, u64)] = &[
    ("private", libc::MS_PRIVATE),
    ("rprivate", libc::MS_PRIVATE | libc::MS_REC),
    ("shared", libc::MS_SHARED),
    ("rshared", libc::MS_SHARED | libc::MS_REC),
    ("slave", libc::MS_SLAVE),
    ("rslave", libc::MS_SLAVE | libc::MS_REC),
    ("unbindable", libc::MS_UNBINDABLE),
    ("runbindable", libc::MS_UNBINDABLE | libc::MS_REC),
];

/// Mount option words split into `MS_*` flags, propagation flags, whether they ask for a
/// bind mount (`Some(recursive)`), and the rest (file system data).
pub fn parse_options(opts: &[String]) -> (u64, u64, Option<bool>, Vec<String>) {
    let (mut flags, mut prop, mut bind, mut data) = (0u64, 0u64, None, Vec::new());
    for o in opts
        .iter()
        .flat_map(|o| o.split(','))
        .filter(|o| !o.is_empty())
    {
        if let Some((_, set, f)) = FLAG_WORDS.iter().find(|(n, _, _)| *n == o) {
            if *set {
                flags |= f;
            } else {
                flags &= !f;
            }
        } else if let Some((_, p)) = PROPAGATION_WORDS.iter().find(|(n, _)| *n == o) {
            prop = *p;
        } else if o == "bind" {
            bind = Some(bind.unwrap_or(false));
        } else if o == "rbind" {
            bind = Some(true);
        } else if o == "remount" || o == "defaults" || o == "tmpcopyup" {
        } else {
            data.push(o.to_string());
        }
    }
    (flags, prop, bind, data)
}

fn mount_plan(m: &oci::Mount) -> Result<MountPlan, String> {
    if !m.destination.starts_with('/') {
        return Err(format!(
            "mount destination {:?} is not absolute",
            m.destination
        ));
    }
    no_nul("mount destination", &m.destination)?;
    no_nul("mount source", &m.source)?;
    for o in &m.options {
        no_nul("mount option", o)?;
    }
    let (flags, propagation, bind, data) = parse_options(&m.options);
    let kind = match (m.type_.as_str(), bind) {
        (_, Some(recursive)) => MountKind::Bind { recursive },
        ("bind", None) => MountKind::Bind { recursive: false },
        ("rbind", None) => MountKind::Bind { recursive: true },
        ("cgroup" | "cgroup2", None) => MountKind::Cgroup,
        ("", None) => {
            return Err(format!(
                "mount {}: no type and not a bind mount",
                m.destination
            ))
        }
        (_, None) => MountKind::Fs,
    };
    if let MountKind::Bind { .. } = kind {
        if !m.source.starts_with('/') {
            return Err(format!(
                "bind mount {}: source {:?} is not an absolute guest path",
                m.destination, m.source
            ));
        }
    }
    Ok(MountPlan {
        dest: m.destination.clone(),
        source: m.source.clone(),
        fstype: m.type_.clone(),
        kind,
        flags,
        propagation,
        data: data.join(","),
    })
}

/// cgroup v2 values for the spec's resources (unset or non-positive values set nothing).
fn limits_of(r: &oci::LinuxResources) -> Result<Limits, String> {
    let mut l = Limits::default();
    if let Some(m) = r.Memory.as_ref() {
        if m.Limit > 0 {
            l.memory = Some(m.Limit);
            if m.Swap > 0 {
                if m.Swap < m.Limit {
                    return Err(format!(
                        "memory+swap limit {} is below the memory limit {}",
                        m.Swap, m.Limit
                    ));
                }
                l.swap = Some((m.Swap - m.Limit).to_string());
            } else if m.Swap == -1 {
                l.swap = Some("max".into());
            }
        }
    }
    if let Some(c) = r.CPU.as_ref() {
        if c.Quota > 0 {
            let period = if c.Period > 0 { c.Period } else { 100_000 };
            l.cpu_max = Some(format!("{} {period}", c.Quota));
        }
        if c.Shares > 0 {
            let s = c.Shares.clamp(2, 262_144);
            l.cpu_weight = Some(1 + ((s - 2) * 9999) / 262_142);
        }
    }
    if let Some(p) = r.Pids.as_ref() {
        if p.Limit > 0 {
            l.pids = Some(p.Limit);
        }
    }
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_propagation_bind_and_data() {
        let o: Vec<String> = ["rbind", "ro", "nosuid", "rprivate", "mode=755,size=1k"]
            .map(String::from)
            .to_vec();
        let (f, p, b, d) = parse_options(&o);
        assert_eq!(f, libc::MS_RDONLY | libc::MS_NOSUID);
        assert_eq!(p, libc::MS_PRIVATE | libc::MS_REC);
        assert_eq!(b, Some(true));
        assert_eq!(d, vec!["mode=755", "size=1k"]);
        let (f, _, b, _) = parse_options(&["ro".into(), "rw".into(), "bind".into()]);
        assert_eq!(f, 0);
        assert_eq!(b, Some(false));
    }

    #[test]
    fn ids_are_checked() {
        assert!(valid_id("web-1_a.b"));
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(129)] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn cpu_shares_convert_to_weight() {
        let r = oci::LinuxResources {
            CPU: Some(oci::LinuxCPU {
                Shares: 1024,
                Quota: 50_000,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        let l = limits_of(&r).unwrap();
        assert_eq!(l.cpu_weight, Some(39));
        assert_eq!(l.cpu_max.as_deref(), Some("50000 100000"));
        assert_eq!(rlimit_number("RLIMIT_NOFILE"), Some(7));
        assert_eq!(rlimit_number("RLIMIT_BOGUS"), None);
    }
}
