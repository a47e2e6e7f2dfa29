//! What a pod could leave on the host, compared before and after.

use super::{pids_mentioning, text, Containerd};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

impl Containerd {
    /// What the host has that a pod could leave behind.
    pub fn snapshot(&self) -> HostSnapshot {
        let mut links: BTreeSet<String> = BTreeSet::new();
        for l in self.ns.link_names() {
            links.insert(l);
        }
        let iptables = ["nat", "filter"]
            .iter()
            .map(|t| {
                let o = Command::new("ip")
                    .args(["netns", "exec", &self.ns.name, "iptables-save", "-t", t])
                    .output()
                    .unwrap();
                text(&o.stdout)
                    .lines()
                    .filter(|l| !l.starts_with('#') && !l.starts_with(':'))
                    .map(str::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .collect();
        let ipam = list(&self.dir.join("ipam").join(&self.net))
            .into_iter()
            .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
            .collect();
        let cni_cache = list(Path::new("/var/lib/cni/results"))
            .into_iter()
            .filter(|n| n.contains(&self.net))
            .collect();
        let d = self.dir.display().to_string();
        let mut procs: BTreeSet<String> = pids_mentioning(&d)
            .into_iter()
            .map(|(_, c)| c)
            .filter(|c| !c.starts_with("containerd --config"))
            .collect();
        procs.retain(|c| !c.contains("iptables-save"));
        // Pod namespaces are bind mounts in containerd's (private) mount namespace; the
        // host's /run/netns also has other tests' namespaces, so it is not compared.
        let cpid = self.containerd_pid();
        let mounts = std::fs::read_to_string(format!("/proc/{cpid}/mountinfo"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with("/run/netns/cni-") || m.contains(&d))
            .map(str::to_string)
            .collect();
        HostSnapshot {
            links,
            iptables,
            ipam,
            cni_cache,
            procs,
            mounts,
            shim_sockets: list(&self.dir.join("s")),
            // The accelerator verdict is a per-boot cache the first sandbox leaves on purpose.
            sandnet_state: files_under(&self.state())
                .into_iter()
                .filter(|f| !Path::new(f).starts_with(self.state().join("accel")))
                .collect(),
        }
    }

    /// Waits until the host is back to `before` (what containerd cleans up after a failure
    /// it may do in the background), failing with the difference.
    pub fn wait_clean(&self, before: &HostSnapshot, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let now = self.snapshot();
            if &now == before {
                return;
            }
            if Instant::now() > deadline {
                panic!("host not back to before:\nbefore {before:?}\nnow    {now:?}\ncontainerd log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// What the host has that a pod could leave behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSnapshot {
    pub links: BTreeSet<String>,
    pub iptables: Vec<String>,
    pub ipam: BTreeSet<String>,
    pub cni_cache: BTreeSet<String>,
    pub procs: BTreeSet<String>,
    pub mounts: BTreeSet<String>,
    pub shim_sockets: BTreeSet<String>,
    pub sandnet_state: BTreeSet<String>,
}

/// Every non-directory under `dir` (empty directories are layout, not leftovers).
fn files_under(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.insert(p.display().to_string());
        }
    }
    out
}

fn list(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}
