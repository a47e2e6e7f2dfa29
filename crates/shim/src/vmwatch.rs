//! Learning that a sandbox's VM has ended from the kernel, not from a poll: a pidfd
//! (`pidfd_open`, which works on any process, not only children) of its QEMU and one of its
//! supervisor, both watched by tokio; the first to become readable ends the wait.

use sandnet_runtime::api::Sandbox;
use sandnet_runtime::sandbox::Health;
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// How often a kernel without `pidfd_open` (before 5.3) has the VM checked instead.
const FALLBACK_POLL: Duration = Duration::from_millis(100);

/// Why a process could not be watched.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// `pidfd_open` or the registration with tokio failed.
    #[error("watch pid {pid}: {source}")]
    Pidfd {
        /// The process.
        pid: u32,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
}

/// A pidfd of `pid` (`None`: the process is gone).
fn pidfd_open(pid: u32) -> Result<Option<OwnedFd>, WatchError> {
    let raw = libc::pid_t::try_from(pid).map_err(|_| WatchError::Pidfd {
        pid,
        source: std::io::Error::from_raw_os_error(libc::EINVAL),
    })?;
    // SAFETY: plain syscall; on success the kernel hands over a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw, libc::PIDFD_NONBLOCK) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ESRCH) => Ok(None),
            _ => Err(WatchError::Pidfd { pid, source: e }),
        };
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
}

/// `fd` registered with tokio for readability.
fn watchable(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the OwnedFd is open and keeps the same descriptor until the AsyncFd drops it.
    unsafe { Ok(AsyncFd::register_with_interest(fd, Interest::READABLE)?) }
}

/// Whether the sandbox's VM still runs as far as its record and /proc tell.
fn running(sandbox: &Sandbox) -> bool {
    matches!(sandbox.health(), Health::Running | Health::Creating)
}

/// Returns once the VM of `sandbox` no longer runs: its QEMU or its supervisor exited (or
/// was never there).
pub async fn wait_vm_end(sandbox: &Sandbox) {
    match watch(sandbox).await {
        Ok(()) => {}
        Err(e) => {
            log::warn!(
                "sandbox {}: {e}; checking it every {FALLBACK_POLL:?} instead",
                sandbox.id()
            );
            let _ = sandbox.wait_exit(FALLBACK_POLL).await;
        }
    }
}

async fn watch(sandbox: &Sandbox) -> Result<(), WatchError> {
    let Ok(st) = sandbox.state() else {
        return Ok(());
    };
    let mut fds = vec![];
    for pid in [st.qemu_pid, st.supervisor_pid].into_iter().flatten() {
        match pidfd_open(pid)? {
            Some(fd) => {
                let fd = watchable(fd).map_err(|source| WatchError::Pidfd { pid, source })?;
                fds.push(fd);
            }
            None => return Ok(()),
        }
    }
    // Checked after the descriptors exist: if both processes are still this sandbox's now,
    // the descriptors are theirs (a pid is not reused while its process lives).
    if fds.len() < 2 || !running(sandbox) {
        return Ok(());
    }
    let (qemu, supervisor) = (&fds[0], &fds[1]);
    tokio::select! {
        r = qemu.readable() => drop(r),
        r = supervisor.readable() => drop(r),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pidfd_becomes_readable_when_its_process_exits() {
        let mut child = std::process::Command::new("sleep")
            .arg("0.2")
            .spawn()
            .unwrap();
        let fd = pidfd_open(child.id()).unwrap().expect("a live child");
        let fd = watchable(fd).unwrap();
        let t = std::time::Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(10), fd.readable()).await;
        assert!(r.is_ok(), "no event for the exit");
        assert!(
            t.elapsed() >= Duration::from_millis(150),
            "{:?}",
            t.elapsed()
        );
        child.wait().unwrap();
    }

    #[test]
    fn a_gone_process_has_no_pidfd() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(pidfd_open(pid).unwrap().is_none());
    }
}
