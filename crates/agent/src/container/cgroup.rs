//! Containers' cgroups (v2): `<root>/<container id>`, limits written before the container's
//! helper joins it, statistics and OOM kills read from its files, removed with the
//! container.
//!
//! The root (`--cgroup-root`, default `/sys/fs/cgroup/sandnet`) is set up on first use:
//! when it is not on a cgroup2 file system and nothing is mounted at `/sys/fs/cgroup`,
//! cgroup2 is mounted there (the guest's PID 1 has nothing there; nor has an agent
//! started with `ip netns exec`, which remounts `/sys`); the root is created and `cpu`,
//! `memory` and `pids` are enabled in `cgroup.subtree_control` from the file system's
//! root down to it, as far as the kernel offers them. Missing controllers are logged; a
//! limit that needs one fails CreateContainer.

use super::spec::Limits;
use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC};
use sandnet_agent_proto::agent;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// Controllers enabled for containers when the kernel has them.
const WANTED: [&str; 3] = ["cpu", "memory", "pids"];

/// Where cgroup2 is mounted when nothing is.
const DEFAULT_MOUNT: &str = "/sys/fs/cgroup";

/// The containers' cgroup root.
pub struct Cgroups {
    root: PathBuf,
    /// Controllers available to containers, once the root is set up.
    ready: Mutex<Option<Vec<String>>>,
}

fn is_cgroup2(p: &Path) -> bool {
    let mut p = p;
    loop {
        if p.exists() {
            return statfs(p)
                .map(|s| s.filesystem_type() == CGROUP2_SUPER_MAGIC)
                .unwrap_or(false);
        }
        match p.parent() {
            Some(q) => p = q,
            None => return false,
        }
    }
}

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

fn words(p: &Path) -> Vec<String> {
    read(p)
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect()
}

impl Cgroups {
    /// A root that is set up on first use.
    pub fn new(root: PathBuf) -> Cgroups {
        Cgroups {
            root,
            ready: Mutex::new(None),
        }
    }

    /// Sets the root up (once); the controllers containers can use, or why there is no
    /// cgroup v2 to use.
    fn setup(&self) -> Result<Vec<String>, String> {
        let mut g = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = g.as_ref() {
            return Ok(c.clone());
        }
        if !is_cgroup2(&self.root) && self.root.starts_with(DEFAULT_MOUNT) {
            let mp = Path::new(DEFAULT_MOUNT);
            if !super::storage::is_mounted(mp).unwrap_or(true) {
                let _ = std::fs::create_dir_all(mp);
                let fl = nix::mount::MsFlags::MS_NOSUID
                    | nix::mount::MsFlags::MS_NODEV
                    | nix::mount::MsFlags::MS_NOEXEC;
                match nix::mount::mount(Some("cgroup2"), mp, Some("cgroup2"), fl, None::<&str>) {
                    Ok(()) => tracing::info!("mounted cgroup2 at {DEFAULT_MOUNT}"),
                    Err(e) => tracing::warn!("mounting cgroup2 at {DEFAULT_MOUNT}: {e}"),
                }
            }
        }
        if !is_cgroup2(&self.root) {
            return Err(format!(
                "{} is not on a cgroup2 file system",
                self.root.display()
            ));
        }
        std::fs::create_dir_all(&self.root)
            .map_err(|e| format!("creating {}: {e}", self.root.display()))?;
        // From the highest cgroup2 ancestor down to the root: enable what is offered.
        let mut chain: Vec<&Path> = self
            .root
            .ancestors()
            .take_while(|p| is_cgroup2(p))
            .collect();
        chain.reverse();
        for dir in chain {
            let offered = words(&dir.join("cgroup.controllers"));
            let enabled = words(&dir.join("cgroup.subtree_control"));
            for c in WANTED {
                if offered.iter().any(|o| o == c) && !enabled.iter().any(|o| o == c) {
                    if let Err(e) =
                        std::fs::write(dir.join("cgroup.subtree_control"), format!("+{c}"))
                    {
                        tracing::warn!(cgroup = %dir.display(), controller = c, "enabling: {e}");
                    }
                }
            }
        }
        let have = words(&self.root.join("cgroup.subtree_control"));
        let missing: Vec<&str> = WANTED
            .iter()
            .copied()
            .filter(|c| !have.iter().any(|h| h == c))
            .collect();
        if !missing.is_empty() {
            tracing::warn!(
                root = %self.root.display(),
                ?missing,
                "cgroup controllers not available: limits needing them will be refused"
            );
        }
        tracing::info!(root = %self.root.display(), controllers = ?have, "container cgroups");
        *g = Some(have.clone());
        Ok(have)
    }

    /// Creates the container's cgroup with `limits`; `None` (logged) when there is no
    /// cgroup v2 and no limit was asked for. The error is one line without the container
    /// prefix.
    pub fn create(&self, id: &str, limits: &Limits) -> Result<Option<PathBuf>, String> {
        let need = limits.controllers();
        let have = match self.setup() {
            Ok(h) => h,
            Err(e) if need.is_empty() => {
                tracing::warn!(container = id, "no cgroup: {e}");
                return Ok(None);
            }
            Err(e) => return Err(format!("resource limits requested but {e}")),
        };
        if let Some(c) = need.iter().find(|c| !have.iter().any(|h| h == *c)) {
            return Err(format!(
                "a {c} limit was requested but the {c} controller is not available under {}",
                self.root.display()
            ));
        }
        let dir = self.root.join(id);
        if dir.exists() && std::fs::remove_dir(&dir).is_err() {
            return Err(format!("cgroup {} exists and is in use", dir.display()));
        }
        std::fs::create_dir(&dir).map_err(|e| format!("creating cgroup {}: {e}", dir.display()))?;
        let mut writes: Vec<(&str, String)> = Vec::new();
        if let Some(m) = limits.memory {
            writes.push(("memory.max", m.to_string()));
        }
        // A kernel without swap has no memory.swap.max: there is nothing to limit.
        if let Some(s) = limits
            .swap
            .as_ref()
            .filter(|_| dir.join("memory.swap.max").exists())
        {
            writes.push(("memory.swap.max", s.clone()));
        }
        if let Some(c) = &limits.cpu_max {
            writes.push(("cpu.max", c.clone()));
        }
        if let Some(w) = limits.cpu_weight {
            writes.push(("cpu.weight", w.to_string()));
        }
        if let Some(p) = limits.pids {
            writes.push(("pids.max", p.to_string()));
        }
        for (file, value) in writes {
            if let Err(e) = std::fs::write(dir.join(file), &value) {
                let _ = std::fs::remove_dir(&dir);
                return Err(format!(
                    "writing {value:?} to {file} of {}: {e}",
                    dir.display()
                ));
            }
        }
        Ok(Some(dir))
    }
}

/// SIGKILLs everything in the cgroup with `cgroup.kill` (Linux 5.14+; a no-op before).
pub fn kill_all(dir: &Path) {
    let f = dir.join("cgroup.kill");
    if f.exists() {
        let _ = std::fs::write(f, "1");
    }
}

/// Removes the cgroup, retrying while the kernel still counts exiting tasks (up to 2 s).
pub async fn remove(dir: &Path) -> std::io::Result<()> {
    let mut tries = 0;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 100 => {
                tries += 1;
                if tries == 1 {
                    kill_all(dir);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The value of `key` in a flat-keyed file (`memory.events`, `cpu.stat`, ...).
fn keyed(dir: &Path, file: &str, key: &str) -> Option<u64> {
    read(&dir.join(file))?.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// A single-value file; `max` is `u64::MAX`.
fn single(dir: &Path, file: &str) -> Option<u64> {
    let s = read(&dir.join(file))?;
    match s.trim() {
        "max" => Some(u64::MAX),
        v => v.parse().ok(),
    }
}

/// How many processes of the cgroup the OOM killer has killed (`memory.events`
/// `oom_kill`).
pub fn oom_kills(dir: &Path) -> Option<u64> {
    keyed(dir, "memory.events", "oom_kill")
}

/// Statistics from the cgroup's files; what is missing stays 0 (`max` limits are
/// `u64::MAX`).
pub fn stats(dir: &Path) -> agent::CgroupStats {
    let cpu = agent::CpuUsage {
        total_usage: keyed(dir, "cpu.stat", "usage_usec").unwrap_or(0) * 1000,
        usage_in_usermode: keyed(dir, "cpu.stat", "user_usec").unwrap_or(0) * 1000,
        usage_in_kernelmode: keyed(dir, "cpu.stat", "system_usec").unwrap_or(0) * 1000,
        ..Default::default()
    };
    let mem = agent::MemoryData {
        usage: single(dir, "memory.current").unwrap_or(0),
        max_usage: single(dir, "memory.peak").unwrap_or(0),
        failcnt: keyed(dir, "memory.events", "max").unwrap_or(0),
        limit: single(dir, "memory.max").unwrap_or(0),
        ..Default::default()
    };
    agent::CgroupStats {
        cpu_stats: Some(agent::CpuStats {
            cpu_usage: Some(cpu).into(),
            ..Default::default()
        })
        .into(),
        memory_stats: Some(agent::MemoryStats {
            cache: keyed(dir, "memory.stat", "file").unwrap_or(0),
            usage: Some(mem).into(),
            ..Default::default()
        })
        .into(),
        pids_stats: Some(agent::PidsStats {
            current: single(dir, "pids.current").unwrap_or(0),
            limit: single(dir, "pids.max").unwrap_or(0),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    }
}
