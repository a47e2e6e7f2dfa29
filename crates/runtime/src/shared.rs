//! The sandbox's shared directory: one host directory per sandbox (`<state>/<id>/shared`)
//! that the guest mounts at [`GUEST_DIR`]. Container root filesystems and the spec's bind
//! mounts reach the guest through it: the shim mounts them below the host directory, the
//! agent mounts the share once (Kata's `Storage`) and containers use guest paths below it.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where the guest mounts the share.
pub const GUEST_DIR: &str = "/run/sandnet/shared";
/// The share's mount tag (virtio-9p `mount_tag`, virtio-fs `tag`).
pub const MOUNT_TAG: &str = "sandnet";
/// virtio-9p's largest message: bigger than Kata's default (8 KiB) because reads of
/// container files under TCG are bound by the number of round trips.
pub const MSIZE_9P: u32 = 512 * 1024;

/// How the share reaches the guest (`[hypervisor.qemu] shared_fs`, Kata's key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SharedFs {
    /// No share: the sandbox cannot run containers.
    None,
    /// virtio-9p, served by QEMU itself.
    #[serde(rename = "virtio-9p")]
    Virtio9p,
    /// virtio-fs, served by a `virtiofsd` per sandbox; guest memory is a shared memfd.
    /// The default: file reads in the guest took 0.4-0.55x the time of virtio-9p's under
    /// TCG here (`cargo bench -p sandnet --bench share`), as in Kata 2.
    #[default]
    #[serde(rename = "virtio-fs")]
    VirtioFs,
}

impl SharedFs {
    /// Parses the configuration value.
    pub fn parse(s: &str) -> Option<SharedFs> {
        match s {
            "none" | "" => Some(SharedFs::None),
            "virtio-9p" => Some(SharedFs::Virtio9p),
            "virtio-fs" => Some(SharedFs::VirtioFs),
            _ => None,
        }
    }

    /// The configuration value.
    pub fn as_str(self) -> &'static str {
        match self {
            SharedFs::None => "none",
            SharedFs::Virtio9p => "virtio-9p",
            SharedFs::VirtioFs => "virtio-fs",
        }
    }

    /// How the guest mounts the share: the fields of Kata's `Storage` message; `None`
    /// without a share.
    pub fn guest_mount(self) -> Option<GuestMount> {
        let (driver, fstype, options) = match self {
            SharedFs::None => return None,
            SharedFs::Virtio9p => (
                "9p",
                "9p",
                vec![
                    "trans=virtio".to_string(),
                    "version=9p2000.L".to_string(),
                    format!("msize={MSIZE_9P}"),
                    "cache=mmap".to_string(),
                ],
            ),
            SharedFs::VirtioFs => ("virtio-fs", "virtiofs", vec![]),
        };
        Some(GuestMount {
            driver: driver.to_string(),
            source: MOUNT_TAG.to_string(),
            fstype: fstype.to_string(),
            options,
            mount_point: GUEST_DIR.to_string(),
        })
    }
}

/// One guest mount, as Kata's `Storage` message carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestMount {
    /// `9p` or `virtio-fs`.
    pub driver: String,
    /// The mount tag.
    pub source: String,
    /// The file system type for mount(2).
    pub fstype: String,
    /// mount(2) data options.
    pub options: Vec<String>,
    /// Where in the guest.
    pub mount_point: String,
}

/// The host side of a sandbox's share and how the guest mounts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedDir {
    /// The host directory (`<state>/<id>/shared`).
    pub host: PathBuf,
    /// How it reaches the guest.
    pub fs: SharedFs,
}

/// Mount points at or below `dir` in this process's mount namespace, deepest (and latest)
/// first: the order to unmount them in.
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mounts_below_in(&table, dir)
}

/// [`mounts_below`] of a mountinfo text.
pub fn mounts_below_in(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = sandnet_host::mountinfo::parse(mountinfo)
        .map(|m| m.mount_point)
        .filter(|m| m.starts_with(dir))
        .collect();
    // Later mounts stack on earlier ones: the last first, deeper paths first (the sort is
    // stable, so stacked mounts at one path keep that order).
    out.reverse();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

/// A mount that could not be undone.
#[derive(Debug, thiserror::Error)]
#[error("unmount {}: {errno}", target.display())]
pub struct UnmountError {
    /// The mount point.
    pub target: PathBuf,
    /// Why (`EBUSY` for one still there after every pass).
    pub errno: nix::errno::Errno,
}

/// Unmounts `target`: plainly, else detached (`MNT_DETACH`); not mounted is fine.
pub fn unmount(target: &Path) -> Result<(), UnmountError> {
    use nix::errno::Errno;
    use nix::mount::{umount2, MntFlags};
    let gone = |r: nix::Result<()>| matches!(r, Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT));
    if gone(umount2(target, MntFlags::empty())) {
        return Ok(());
    }
    match umount2(target, MntFlags::MNT_DETACH) {
        r if gone(r) => Ok(()),
        r => Err(UnmountError {
            target: target.to_path_buf(),
            errno: r.err().unwrap_or(Errno::EBUSY),
        }),
    }
}

/// Unmounts everything at or below `dir` (what a dead shim left in the share, deepest
/// first, in passes while stacked mounts go away), so that removing the directory can never
/// reach into a container's rootfs or volume. The first failure, after trying them all.
pub fn unmount_below(dir: &Path) -> Result<(), UnmountError> {
    let mut first = None;
    let mut left = mounts_below(dir);
    while !left.is_empty() {
        for m in &left {
            if let Err(e) = unmount(m) {
                first.get_or_insert(e);
            }
        }
        let now = mounts_below(dir);
        if now.len() >= left.len() {
            return Err(first.unwrap_or(UnmountError {
                target: now.into_iter().next().unwrap_or_else(|| dir.to_path_buf()),
                errno: nix::errno::Errno::EBUSY,
            }));
        }
        left = now;
    }
    Ok(())
}

/// Removes `dir` and everything below it that is on the same file system: a directory on
/// another file system (a mount this namespace cannot see as such, or one that could not
/// be detached) is left alone, and so is its parent chain. Missing is fine.
pub fn remove_tree_same_fs(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let top = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    fn walk(p: &Path, dev: u64) -> std::io::Result<()> {
        let m = std::fs::symlink_metadata(p)?;
        if !m.is_dir() {
            return std::fs::remove_file(p);
        }
        if m.dev() != dev {
            return Err(std::io::Error::other(format!(
                "{} is on another file system (a mount): left in place",
                p.display()
            )));
        }
        for e in std::fs::read_dir(p)? {
            walk(&e?.path(), dev)?;
        }
        std::fs::remove_dir(p)
    }
    walk(dir, top.dev())
}

/// Removes a sandbox's state directory: first whatever is still mounted in its share
/// (detached), then the tree, never crossing into another file system.
pub fn remove_sandbox_dir(paths: &crate::sandbox::SandboxPaths) -> std::io::Result<()> {
    unmount_below(&paths.shared).map_err(std::io::Error::other)?;
    remove_tree_same_fs(&paths.dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for f in [SharedFs::None, SharedFs::Virtio9p, SharedFs::VirtioFs] {
            assert_eq!(SharedFs::parse(f.as_str()), Some(f));
        }
        assert_eq!(SharedFs::parse("nfs"), None);
        let m = SharedFs::Virtio9p.guest_mount().unwrap();
        assert_eq!(m.fstype, "9p");
        assert!(m.options.iter().any(|o| o == "trans=virtio"));
        assert!(SharedFs::None.guest_mount().is_none());
    }

    #[test]
    fn mountinfo_below_a_directory_deepest_first() {
        let table = "\
22 1 0:21 / /run rw shared:5 - tmpfs tmpfs rw
30 22 0:40 / /run/sn/a/shared/c1/rootfs rw - ext4 /dev/sda rw
31 22 0:40 / /run/sn/a/shared/c1/mounts/0-my\\040dir rw - ext4 /dev/sda rw
32 30 0:41 / /run/sn/a/shared/c1/rootfs/proc rw - proc proc rw
33 22 0:40 / /run/sn/a/shared/c10/rootfs rw - ext4 /dev/sda rw
";
        let m = mounts_below_in(table, Path::new("/run/sn/a/shared/c1"));
        assert_eq!(
            m,
            [
                PathBuf::from("/run/sn/a/shared/c1/rootfs/proc"),
                PathBuf::from("/run/sn/a/shared/c1/mounts/0-my dir"),
                PathBuf::from("/run/sn/a/shared/c1/rootfs"),
            ]
        );
    }
}
