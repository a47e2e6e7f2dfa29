//! One teardown at a time per sandbox: an exclusive `flock` on the sandbox's own directory.
//!
//! `run` takes the lock when it creates the directory and hands it to the supervisor, which
//! holds it for its whole life; `rm` and `gc` take it before they touch a sandbox from its
//! persisted state. The kernel drops the lock when its last holder dies, so a crashed
//! supervisor never leaves a sandbox locked, and no lock file is ever left behind: the lock
//! lives on the directory itself.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// An exclusive lock on a sandbox directory, released on drop (or when the process dies).
#[derive(Debug)]
pub struct SandboxLock {
    fd: OwnedFd,
    dir: PathBuf,
}

/// Errors taking a sandbox lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The directory could not be opened or locked.
    #[error("lock {path}: {source}")]
    Io {
        /// The sandbox directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

fn open_dir(dir: &Path) -> Result<OwnedFd, LockError> {
    std::fs::File::open(dir)
        .map(OwnedFd::from)
        .map_err(|source| LockError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

fn flock(fd: RawFd, op: libc::c_int) -> std::io::Result<()> {
    // SAFETY: flock on a descriptor this process owns.
    if unsafe { libc::flock(fd, op) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl SandboxLock {
    /// Takes the lock if nobody holds it; `Ok(None)` when someone does.
    pub fn try_acquire(dir: &Path) -> Result<Option<SandboxLock>, LockError> {
        let fd = open_dir(dir)?;
        match flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) {
            Ok(()) => Ok(Some(SandboxLock {
                fd,
                dir: dir.to_path_buf(),
            })),
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(None),
            Err(source) => Err(LockError::Io {
                path: dir.to_path_buf(),
                source,
            }),
        }
    }

    /// Waits up to `timeout` for the lock; `Ok(None)` if it stayed held.
    pub async fn acquire_within(
        dir: &Path,
        timeout: Duration,
    ) -> Result<Option<SandboxLock>, LockError> {
        Self::open(dir)?.lock_within(timeout).await
    }

    /// Opens the directory without locking it yet. Waiting on this handle later waits for
    /// the holder to let go even if the directory is removed meanwhile (a supervisor
    /// removes its sandbox's directory, then exits).
    pub fn open(dir: &Path) -> Result<LockHandle, LockError> {
        Ok(LockHandle {
            fd: open_dir(dir)?,
            dir: dir.to_path_buf(),
        })
    }

    /// Takes over a lock inherited as descriptor `fd` from the process that started this
    /// one (the supervisor gets its sandbox's lock from `run` this way), and marks it
    /// close-on-exec so that QEMU and CNI plugins do not hold it too.
    pub fn inherit(fd: RawFd, dir: &Path) -> Result<SandboxLock, LockError> {
        let io = |source| LockError::Io {
            path: dir.to_path_buf(),
            source,
        };
        // SAFETY: F_GETFD on a plain integer; fails cleanly with EBADF if it is not open.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(io(std::io::Error::last_os_error()));
        }
        // SAFETY: the descriptor is open (checked above) and was handed to this process to
        // own; nothing else in this process refers to it.
        let owned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        // SAFETY: setting FD_CLOEXEC on a descriptor we own.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
            return Err(io(std::io::Error::last_os_error()));
        }
        // Already held through the shared open file description; taking it again is a no-op
        // that also proves it really is this directory's lock.
        flock(fd, libc::LOCK_EX | libc::LOCK_NB).map_err(io)?;
        Ok(SandboxLock {
            fd: owned,
            dir: dir.to_path_buf(),
        })
    }

    /// Keeps the lock until this process exits (the kernel releases it then), so nobody
    /// sees a sandbox free while its holder is still winding down.
    pub fn hold_until_exit(self) {
        std::mem::forget(self);
    }

    /// The descriptor, to be passed to a child that takes the lock over.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The locked directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// A sandbox directory opened to be locked (see [`SandboxLock::open`]).
#[derive(Debug)]
pub struct LockHandle {
    fd: OwnedFd,
    dir: PathBuf,
}

impl LockHandle {
    /// Takes the lock if nobody holds it; gives the handle back when someone does.
    pub fn try_lock(self) -> Result<Result<SandboxLock, LockHandle>, LockError> {
        match flock(self.fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) {
            Ok(()) => Ok(Ok(SandboxLock {
                fd: self.fd,
                dir: self.dir,
            })),
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(Err(self)),
            Err(source) => Err(LockError::Io {
                path: self.dir,
                source,
            }),
        }
    }

    /// Waits up to `timeout` for the lock; `Ok(None)` if it stayed held.
    pub async fn lock_within(self, timeout: Duration) -> Result<Option<SandboxLock>, LockError> {
        let deadline = Instant::now() + timeout;
        loop {
            match flock(self.fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) {
                Ok(()) => {
                    return Ok(Some(SandboxLock {
                        fd: self.fd,
                        dir: self.dir,
                    }))
                }
                Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {}
                Err(source) => {
                    return Err(LockError::Io {
                        path: self.dir,
                        source,
                    })
                }
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_and_released_on_drop() {
        let d = std::env::temp_dir().join(format!("sandnet-lock-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let a = SandboxLock::try_acquire(&d).unwrap().expect("free");
        assert!(SandboxLock::try_acquire(&d).unwrap().is_none());
        drop(a);
        assert!(SandboxLock::try_acquire(&d).unwrap().is_some());
        std::fs::remove_dir_all(&d).unwrap();
        assert!(SandboxLock::try_acquire(&d).is_err());
    }
}
