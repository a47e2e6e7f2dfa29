//! mount(2) as containerd and runc use it: mount(8)-style options parsed into flags,
//! propagation and data; bind mounts remounted read-only when asked; unmounting with
//! `MNT_DETACH` as the fallback; the mount table (`/proc/self/mountinfo`), to find what is
//! still mounted below a directory.

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use std::path::{Path, PathBuf};

/// The longest mount data the kernel takes (one page less its NUL).
const MAX_DATA: usize = 4095;

/// What went wrong mounting or unmounting.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// mount(2) failed.
    #[error("mount {device} on {target} (type {fstype:?}): {errno}")]
    Mount {
        /// What was mounted.
        device: String,
        /// Where.
        target: PathBuf,
        /// File system type.
        fstype: String,
        /// Why.
        errno: Errno,
    },
    /// umount2(2) failed, also with `MNT_DETACH`.
    #[error("unmount {target}: {errno}")]
    Unmount {
        /// The mount point.
        target: PathBuf,
        /// Why.
        errno: Errno,
    },
    /// The mount data is longer than a page.
    #[error("mount data for {target} is {len} bytes, more than the kernel's {MAX_DATA}")]
    DataTooLong {
        /// Where.
        target: PathBuf,
        /// Its length.
        len: usize,
    },
}

/// Parsed mount(8) options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flags {
    /// mount(2) flags.
    pub flags: MsFlags,
    /// Propagation to apply afterwards (`MS_PRIVATE`, `MS_SLAVE`, … with `MS_REC`).
    pub propagation: MsFlags,
}

impl Default for Flags {
    fn default() -> Flags {
        Flags {
            flags: MsFlags::empty(),
            propagation: MsFlags::empty(),
        }
    }
}

/// mount(8) options: flags, propagation, and the rest as file system data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Options {
    /// Flags and propagation.
    pub flags: Flags,
    /// The file system's own options, in order.
    pub data: Vec<String>,
}

impl Options {
    /// Whether this is a bind mount.
    pub fn is_bind(&self) -> bool {
        self.flags.flags.contains(MsFlags::MS_BIND)
    }

    /// Whether it is read-only.
    pub fn is_readonly(&self) -> bool {
        self.flags.flags.contains(MsFlags::MS_RDONLY)
    }
}

/// Parses mount(8)-style options the way containerd's `mount.Mount` does.
pub fn parse_options(options: &[String]) -> Options {
    let mut o = Options::default();
    for opt in options {
        let (clear, flag) = match opt.as_str() {
            "defaults" => (false, MsFlags::empty()),
            "async" => (true, MsFlags::MS_SYNCHRONOUS),
            "atime" => (true, MsFlags::MS_NOATIME),
            "bind" => (false, MsFlags::MS_BIND),
            "dev" => (true, MsFlags::MS_NODEV),
            "diratime" => (true, MsFlags::MS_NODIRATIME),
            "dirsync" => (false, MsFlags::MS_DIRSYNC),
            "exec" => (true, MsFlags::MS_NOEXEC),
            "mand" => (false, MsFlags::MS_MANDLOCK),
            "noatime" => (false, MsFlags::MS_NOATIME),
            "nodev" => (false, MsFlags::MS_NODEV),
            "nodiratime" => (false, MsFlags::MS_NODIRATIME),
            "noexec" => (false, MsFlags::MS_NOEXEC),
            "nomand" => (true, MsFlags::MS_MANDLOCK),
            "norelatime" => (true, MsFlags::MS_RELATIME),
            "nostrictatime" => (true, MsFlags::MS_STRICTATIME),
            "nosuid" => (false, MsFlags::MS_NOSUID),
            "rbind" => (false, MsFlags::MS_BIND | MsFlags::MS_REC),
            "relatime" => (false, MsFlags::MS_RELATIME),
            "remount" => (false, MsFlags::MS_REMOUNT),
            "ro" => (false, MsFlags::MS_RDONLY),
            "rw" => (true, MsFlags::MS_RDONLY),
            "strictatime" => (false, MsFlags::MS_STRICTATIME),
            "suid" => (true, MsFlags::MS_NOSUID),
            "sync" => (false, MsFlags::MS_SYNCHRONOUS),
            other => {
                if let Some(p) = propagation(other) {
                    o.flags.propagation = p;
                } else {
                    o.data.push(other.to_string());
                }
                continue;
            }
        };
        if clear {
            o.flags.flags.remove(flag);
        } else {
            o.flags.flags.insert(flag);
        }
    }
    o
}

fn propagation(opt: &str) -> Option<MsFlags> {
    let rec = MsFlags::MS_REC;
    Some(match opt {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | rec,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | rec,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | rec,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | rec,
        _ => return None,
    })
}

/// Mounts `source` (type `fstype`) on `target` with `opts`, as containerd does: a bind
/// mount asked read-only (or nosuid, nodev, noexec) is remounted so, then the
/// propagation is applied. On failure nothing stays mounted.
pub fn mount_with(
    fstype: &str,
    source: &str,
    target: &Path,
    opts: &Options,
) -> Result<(), MountError> {
    let data = opts.data.join(",");
    if data.len() > MAX_DATA {
        return Err(MountError::DataTooLong {
            target: target.to_path_buf(),
            len: data.len(),
        });
    }
    let err = |errno| MountError::Mount {
        device: source.to_string(),
        target: target.to_path_buf(),
        fstype: fstype.to_string(),
        errno,
    };
    let flags = opts.flags.flags;
    let fs = (!fstype.is_empty() && !opts.is_bind()).then_some(fstype);
    let data = (!data.is_empty()).then_some(data.as_str());
    mount(Some(source), target, fs, flags, data).map_err(err)?;
    let remount = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let after = |f: MsFlags| {
        mount(None::<&str>, target, None::<&str>, f, None::<&str>).map_err(|e| {
            let _ = unmount(target);
            err(e)
        })
    };
    if opts.is_bind() && flags.intersects(remount) {
        after(MsFlags::MS_BIND | MsFlags::MS_REMOUNT | (flags & remount))?;
    }
    if !opts.flags.propagation.is_empty() {
        after(opts.flags.propagation)?;
    }
    Ok(())
}

/// Bind-mounts `source` on `target` (recursively with `recursive`), read-only with
/// `readonly`.
pub fn bind(
    source: &Path,
    target: &Path,
    recursive: bool,
    readonly: bool,
) -> Result<(), MountError> {
    let mut flags = MsFlags::MS_BIND;
    if recursive {
        flags |= MsFlags::MS_REC;
    }
    if readonly {
        flags |= MsFlags::MS_RDONLY;
    }
    let opts = Options {
        flags: Flags {
            flags,
            propagation: MsFlags::MS_PRIVATE,
        },
        data: vec![],
    };
    mount_with("", &source.to_string_lossy(), target, &opts)
}

/// Unmounts `target`; when it is busy, detaches it (`MNT_DETACH`). Not mounted is fine.
pub fn unmount(target: &Path) -> Result<(), MountError> {
    sandnet_runtime::shared::unmount(target).map_err(unmount_error)
}

/// Unmounts everything at or below `dir` (deepest first); the first error, after trying
/// them all.
pub fn unmount_under(dir: &Path) -> Result<(), MountError> {
    sandnet_runtime::shared::unmount_below(dir).map_err(unmount_error)
}

fn unmount_error(e: sandnet_runtime::shared::UnmountError) -> MountError {
    MountError::Unmount {
        target: e.target,
        errno: e.errno,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(v: &[&str]) -> Options {
        parse_options(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn native_snapshotter_bind() {
        let o = opts(&["rbind", "rw"]);
        assert_eq!(o.flags.flags, MsFlags::MS_BIND | MsFlags::MS_REC);
        assert!(o.is_bind() && !o.is_readonly());
        assert!(o.data.is_empty());
    }

    #[test]
    fn overlay_options_are_data() {
        let o = opts(&[
            "index=off",
            "workdir=/w",
            "upperdir=/u",
            "lowerdir=/a:/b",
            "ro",
        ]);
        assert_eq!(o.flags.flags, MsFlags::MS_RDONLY);
        assert_eq!(
            o.data,
            ["index=off", "workdir=/w", "upperdir=/u", "lowerdir=/a:/b"]
        );
    }

    #[test]
    fn flags_set_and_cleared_in_order() {
        let o = opts(&["ro", "nosuid", "nodev", "noexec", "rw", "exec", "rprivate"]);
        assert_eq!(o.flags.flags, MsFlags::MS_NOSUID | MsFlags::MS_NODEV);
        assert_eq!(o.flags.propagation, MsFlags::MS_PRIVATE | MsFlags::MS_REC);
        let o = opts(&["bind", "slave", "defaults", "mode=755"]);
        assert_eq!(o.flags.flags, MsFlags::MS_BIND);
        assert_eq!(o.flags.propagation, MsFlags::MS_SLAVE);
        assert_eq!(o.data, ["mode=755"]);
    }
}
