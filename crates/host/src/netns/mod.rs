//! Network namespaces: create (bind-mounted under `/run/netns`, like `ip netns add`, without
//! forking), open by name or path, delete, and run work inside one on a dedicated OS thread.
//!
//! `setns(2)` moves only the calling thread, so sandnet never moves a thread it does not own:
//! [`NetNs::run`] spawns a thread, enters the namespace there, runs the closure and lets the
//! thread die. Sockets and tap fds opened on that thread stay bound to the namespace, so
//! they can be used from anywhere afterwards (that is how [`NetNs::netlink`] works).

use crate::error::{HostError, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use sandnet_netlink::{open_route_socket, Netlink};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

mod events;
mod propagate;
mod reference;
pub use crate::endpoint::is_sandnet_alias;
pub use events::OwnLinks;
pub use reference::{HostNetns, NetNsRef};

/// Where named network namespaces are bind-mounted (as iproute2 does).
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// `NS_GET_NSTYPE` from `<linux/nsfs.h>`: `_IO(0xb7, 0x3)`.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// An open network namespace.
#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
    name: Option<String>,
}

/// A stable identity of a namespace: the device and inode of its nsfs file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct NetNsId {
    /// Device number of the nsfs.
    pub dev: u64,
    /// Inode number (what `/proc/<pid>/ns/net` shows as `net:[N]`).
    pub ino: u64,
}

impl std::fmt::Display for NetNsId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.dev, self.ino)
    }
}

pub(crate) fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.contains('\0')
        || name.len() > 255
    {
        return Err(HostError::InvalidNetnsName(name.to_string()));
    }
    Ok(())
}

impl NetNs {
    /// Opens the namespace a reference resolves to (see [`NetNsRef::resolve`]).
    pub fn open(r: &NetNsRef) -> Result<NetNs> {
        let path = r.resolve();
        let spec = r.to_string();
        let file = File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => HostError::NetnsNotFound(spec.clone()),
            _ => HostError::Netns {
                ns: spec.clone(),
                op: "open",
                source: e,
            },
        })?;
        // SAFETY: NS_GET_NSTYPE takes no argument and only reads the fd.
        let t = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
        if t != libc::CLONE_NEWNET {
            return Err(HostError::NotANetns(path));
        }
        Ok(NetNs {
            file,
            path,
            name: r.as_name().map(str::to_string),
        })
    }

    /// A namespace handed over as an open descriptor (another process opened `path`, which
    /// may not resolve in this mount namespace); checked to be a network namespace.
    pub fn from_fd(fd: std::os::fd::OwnedFd, path: PathBuf) -> Result<NetNs> {
        let file = File::from(fd);
        // SAFETY: NS_GET_NSTYPE takes no argument and only reads the fd.
        let t = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
        if t != libc::CLONE_NEWNET {
            return Err(HostError::NotANetns(path));
        }
        Ok(NetNs {
            file,
            path,
            name: None,
        })
    }

    /// The namespace of the calling thread.
    pub fn current() -> Result<NetNs> {
        NetNs::open(&NetNsRef::path("/proc/thread-self/ns/net"))
    }

    /// Creates a named namespace bind-mounted at `/run/netns/<name>`, as `ip netns add` does,
    /// on a short-lived thread (no process is forked). Fails if the name exists.
    pub fn create(name: &str) -> Result<NetNs> {
        check_name(name)?;
        let err = |op, source| HostError::Netns {
            ns: name.to_string(),
            op,
            source,
        };
        // Under a private mount namespace whose /run/netns is a slave (`ip netns exec`), a
        // mount made here alone would die with it: the mount is made where it propagates.
        let master = propagate::master_mount_ns(Path::new(NETNS_RUN_DIR))
            .map_err(|e| err("find the mount namespace /run/netns belongs to", e))?;
        std::fs::create_dir_all(NETNS_RUN_DIR).map_err(|e| err("create /run/netns", e))?;
        make_run_dir_shared().map_err(|e| err("make /run/netns a shared mount", e))?;
        let path = Path::new(NETNS_RUN_DIR).join(name);
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => HostError::NetnsExists(name.to_string()),
                _ => err("create mount point", e),
            })?;
        let target = path.clone();
        let made = std::thread::spawn(move || -> io::Result<()> {
            unshare(CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            let source = Path::new("/proc/thread-self/ns/net");
            if let Some(ns) = &master {
                propagate::bind_in(ns, source, &target, make_run_dir_shared)?;
                if is_netns_file(&target) {
                    return Ok(()); // it propagated back here
                }
            }
            mount(
                Some(source),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(io::Error::from)
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")));
        if let Err(e) = made {
            let _ = umount2(&path, MntFlags::MNT_DETACH);
            let _ = std::fs::remove_file(&path);
            return Err(err("unshare and bind-mount", e));
        }
        NetNs::open(&NetNsRef::name(name)?)
    }

    /// Deletes a named namespace: unmounts and removes `/run/netns/<name>`. Deleting one
    /// that does not exist is not an error. The namespace itself lives on while a process
    /// or an open fd still holds it.
    pub fn delete(name: &str) -> Result<()> {
        check_name(name)?;
        let path = Path::new(NETNS_RUN_DIR).join(name);
        match umount2(&path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
            Err(e) => {
                return Err(HostError::Netns {
                    ns: name.to_string(),
                    op: "unmount",
                    source: e.into(),
                })
            }
        }
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(HostError::Netns {
                ns: name.to_string(),
                op: "remove mount point",
                source: e,
            }),
        }
    }

    /// The path the namespace was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The name under `/run/netns`, when opened by name.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// How to name this namespace in messages: its name, or its path.
    pub fn display(&self) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => self.path.display().to_string(),
        }
    }

    /// The namespace's identity (device and inode), stable for its lifetime.
    pub fn id(&self) -> Result<NetNsId> {
        let m = self.file.metadata().map_err(|e| HostError::Netns {
            ns: self.display(),
            op: "stat",
            source: e,
        })?;
        Ok(NetNsId {
            dev: m.dev(),
            ino: m.ino(),
        })
    }

    /// A new handle to the same namespace (a dup of the fd).
    pub fn try_clone(&self) -> Result<NetNs> {
        Ok(NetNs {
            file: self.file.try_clone().map_err(|e| HostError::Netns {
                ns: self.display(),
                op: "dup",
                source: e,
            })?,
            path: self.path.clone(),
            name: self.name.clone(),
        })
    }

    /// Runs `f` on a fresh OS thread that has entered this namespace, and returns its
    /// result. The calling thread never changes namespace.
    pub fn run<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let fd = self.file.as_fd();
        std::thread::scope(|s| {
            s.spawn(move || -> Result<T> {
                setns(fd, CloneFlags::CLONE_NEWNET).map_err(|e| HostError::Netns {
                    ns: self.display(),
                    op: "setns",
                    source: e.into(),
                })?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|_| {
                Err(HostError::Netns {
                    ns: self.display(),
                    op: "run",
                    source: io::Error::other("thread panicked"),
                })
            })
        })
    }

    /// Opens a netlink route socket inside this namespace and returns a client for it.
    /// Must be called within a tokio runtime (the connection task is spawned on it).
    pub fn netlink(&self) -> Result<Netlink> {
        let fd = self.run(open_route_socket)?.map_err(|e| HostError::Netns {
            ns: self.display(),
            op: "open netlink socket",
            source: e,
        })?;
        Ok(Netlink::from_fd(fd)?)
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// Whether `path` opens as a network namespace.
fn is_netns_file(path: &Path) -> bool {
    File::open(path).is_ok_and(|f| {
        // SAFETY: NS_GET_NSTYPE takes no argument and only reads the fd.
        unsafe { libc::ioctl(f.as_raw_fd(), NS_GET_NSTYPE as _) == libc::CLONE_NEWNET }
    })
}

/// Makes `/run/netns` a shared mount, as iproute2 does, so that namespaces bind-mounted
/// there are seen by other mount namespaces too.
fn make_run_dir_shared() -> io::Result<()> {
    let flags = MsFlags::MS_SHARED | MsFlags::MS_REC;
    match mount(
        None::<&str>,
        NETNS_RUN_DIR,
        Some("none"),
        flags,
        None::<&str>,
    ) {
        Ok(()) => Ok(()),
        Err(nix::Error::EINVAL) => {
            mount(
                Some(NETNS_RUN_DIR),
                NETNS_RUN_DIR,
                Some("none"),
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )?;
            mount(
                None::<&str>,
                NETNS_RUN_DIR,
                Some("none"),
                flags,
                None::<&str>,
            )?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for bad in ["", ".", "..", "a/b", "x\0y"] {
            assert!(matches!(
                check_name(bad),
                Err(HostError::InvalidNetnsName(_))
            ));
        }
        check_name("pod-1").unwrap();
    }
}
