//! `CreateSandbox`: hostname and `resolv.conf`.

use crate::error::{AgentError, Result};
use sandnet_model::Dns;
use std::path::{Path, PathBuf};

/// Where the agent writes `etc/hostname` and `etc/resolv.conf`, and whether it may call
/// `sethostname(2)` (only when it owns the system: root `/`).
#[derive(Debug, Clone)]
pub struct SystemFiles {
    root: PathBuf,
}

impl SystemFiles {
    /// Files under `root` (`/` in a guest, a scratch directory in tests).
    pub fn new(root: impl Into<PathBuf>) -> SystemFiles {
        SystemFiles { root: root.into() }
    }

    fn owns_system(&self) -> bool {
        self.root == Path::new("/")
    }

    fn write_atomic(&self, rel: &str, text: &str) -> Result<()> {
        let path = self.root.join(rel);
        let dir = path
            .parent()
            .ok_or_else(|| AgentError::Invalid(format!("bad path {rel}")))?;
        std::fs::create_dir_all(dir)
            .map_err(|e| AgentError::io(format!("create {}", dir.display()), e))?;
        let tmp = dir.join(format!(
            ".{}.sandnet-tmp",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("f")
        ));
        std::fs::write(&tmp, text)
            .map_err(|e| AgentError::io(format!("write {}", tmp.display()), e))?;
        std::fs::rename(&tmp, &path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            AgentError::io(format!("rename to {}", path.display()), e)
        })
    }

    /// Sets the hostname: `etc/hostname`, and `sethostname(2)` when the root is `/`.
    /// An empty hostname leaves it unchanged.
    pub fn set_hostname(&self, name: &str) -> Result<()> {
        if name.is_empty() {
            return Ok(());
        }
        sandnet_agent_proto::requests::check_hostname(name)?;
        if self.owns_system() {
            nix::unistd::sethostname(name)
                .map_err(|e| AgentError::io("sethostname", std::io::Error::from(e)))?;
        }
        self.write_atomic("etc/hostname", &format!("{name}\n"))
    }

    /// Writes `etc/resolv.conf` from `dns` (nothing is written when it is empty).
    pub fn write_resolv_conf(&self, dns: &Dns) -> Result<()> {
        if dns.is_empty() {
            return Ok(());
        }
        let mut text = String::from("# written by sandnet-agent\n");
        for l in dns.to_lines() {
            text.push_str(&l);
            text.push('\n');
        }
        self.write_atomic("etc/resolv.conf", &text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_files_under_root_only() {
        let dir = std::env::temp_dir().join(format!("sandnet-agent-sbx-{}", std::process::id()));
        let f = SystemFiles::new(&dir);
        f.set_hostname("pod-1").unwrap();
        let dns = Dns {
            nameservers: vec!["10.96.0.10".parse().unwrap()],
            search: vec!["svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        };
        f.write_resolv_conf(&dns).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("etc/hostname")).unwrap(),
            "pod-1\n"
        );
        let rc = std::fs::read_to_string(dir.join("etc/resolv.conf")).unwrap();
        assert!(rc.contains("nameserver 10.96.0.10\n"));
        assert!(rc.contains("search svc.cluster.local\n"));
        assert!(f.set_hostname("bad name").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
