//! The sandbox's shared directory on QEMU's command line: virtio-9p served by QEMU itself,
//! or virtio-fs served by a `virtiofsd` (which needs the guest's memory in a shared memfd).

use crate::error::{Result, VmError};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Debian's C virtiofsd (in `qemu-system-common`).
pub const VIRTIOFSD: &str = "/usr/lib/qemu/virtiofsd";
/// How long virtiofsd may take to listen.
const DAEMON_READY: Duration = Duration::from_secs(5);

/// How a host directory is shared with the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShareTransport {
    /// `virtio-9p-pci` with QEMU's `local` fsdev.
    Virtio9p,
    /// `vhost-user-fs-pci` talking to a virtiofsd listening on `socket`.
    VirtioFs {
        /// virtiofsd's vhost-user socket.
        socket: PathBuf,
        /// The virtiofsd binary (Debian's [`VIRTIOFSD`]).
        daemon: PathBuf,
    },
}

/// A host directory the guest can mount by `tag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareSpec {
    /// The host directory.
    pub host: PathBuf,
    /// The mount tag.
    pub tag: String,
    /// How it is shared.
    pub transport: ShareTransport,
}

/// The id of the share's devices on the command line.
const SHARE_ID: &str = "share0";

impl ShareSpec {
    /// QEMU arguments for this share with `memory_mib` of guest memory.
    pub fn qemu_args(&self, memory_mib: u32) -> Vec<String> {
        let esc = |p: &std::path::Path| p.to_string_lossy().replace(',', ",,");
        match &self.transport {
            ShareTransport::Virtio9p => vec![
                "-fsdev".into(),
                format!(
                    "local,id={SHARE_ID},path={},security_model=none",
                    esc(&self.host)
                ),
                "-device".into(),
                format!(
                    "virtio-9p-pci,id={SHARE_ID}dev,fsdev={SHARE_ID},mount_tag={},romfile=",
                    self.tag.replace(',', ",,")
                ),
            ],
            ShareTransport::VirtioFs { socket, .. } => vec![
                "-object".into(),
                format!("memory-backend-memfd,id={SHARE_ID}mem,size={memory_mib}M,share=on"),
                "-numa".into(),
                format!("node,memdev={SHARE_ID}mem"),
                "-chardev".into(),
                format!("socket,id={SHARE_ID},path={}", esc(socket)),
                "-device".into(),
                format!(
                    "vhost-user-fs-pci,id={SHARE_ID}dev,chardev={SHARE_ID},tag={},queue-size=1024,romfile=",
                    self.tag.replace(',', ",,")
                ),
            ],
        }
    }
}

/// A running virtiofsd; killed when dropped. It serves one QEMU: each boot attempt gets a
/// daemon of its own.
#[derive(Debug)]
pub struct ShareDaemon {
    child: tokio::process::Child,
}

impl ShareDaemon {
    /// Kills the daemon and reaps it.
    pub async fn stop(&mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

impl ShareSpec {
    /// Starts what serves the share before QEMU (virtiofsd for virtio-fs, nothing for
    /// virtio-9p) and returns once it listens; its log goes to `<dir>/virtiofsd.log`.
    pub async fn start_daemon(&self, dir: &Path) -> Result<Option<ShareDaemon>> {
        let ShareTransport::VirtioFs { socket, daemon } = &self.transport else {
            return Ok(None);
        };
        let log_path = dir.join("virtiofsd.log");
        match std::fs::remove_file(socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(VmError::io("removing stale", socket, e)),
        }
        let log =
            std::fs::File::create(&log_path).map_err(|e| VmError::io("creating", &log_path, e))?;
        // The chroot sandbox keeps it in this mount namespace, so it sees the mounts made
        // in the share after it started (a namespace of its own would see them only with
        // shared propagation).
        let child = tokio::process::Command::new(daemon)
            .arg(format!("--socket-path={}", socket.display()))
            .args(["-o", &format!("source={}", self.host.display())])
            .args(["-o", "sandbox=chroot", "-o", "cache=auto", "-o", "xattr"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| VmError::ShareDaemon(format!("starting {}: {e}", daemon.display())))?;
        let mut d = ShareDaemon { child };
        let deadline = Instant::now() + DAEMON_READY;
        while !listening(socket) {
            if let Ok(Some(st)) = d.child.try_wait() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(VmError::ShareDaemon(format!(
                    "{} exited ({st}) before listening: {}",
                    daemon.display(),
                    log.lines().last().unwrap_or("")
                )));
            }
            if Instant::now() > deadline {
                d.stop().await;
                return Err(VmError::ShareDaemon(format!(
                    "{} did not listen on {} within {DAEMON_READY:?}",
                    daemon.display(),
                    socket.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(Some(d))
    }
}

/// Whether a unix socket at `path` listens (`/proc/self/net/unix` flag `__SO_ACCEPTCON`):
/// the file exists from bind(2) on, a connect before listen(2) is refused.
fn listening(path: &Path) -> bool {
    let Ok(t) = std::fs::read_to_string("/proc/self/net/unix") else {
        return false;
    };
    let want = path.to_string_lossy();
    t.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() >= 8 && f[7] == want && f[3] == "00010000"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nine_p_and_virtio_fs_lines() {
        let s = ShareSpec {
            host: "/run/s,x/shared".into(),
            tag: "sandnet".into(),
            transport: ShareTransport::Virtio9p,
        };
        let a = s.qemu_args(256);
        assert_eq!(a[0], "-fsdev");
        assert!(a[1].contains("path=/run/s,,x/shared"), "{a:?}");
        assert!(a[3].contains("mount_tag=sandnet"));
        let v = ShareSpec {
            transport: ShareTransport::VirtioFs {
                socket: "/run/v.sock".into(),
                daemon: VIRTIOFSD.into(),
            },
            ..s
        };
        let a = v.qemu_args(512);
        assert!(a.iter().any(|x| x.contains("size=512M,share=on")), "{a:?}");
        assert!(a.iter().any(|x| x.starts_with("vhost-user-fs-pci")));
    }
}
