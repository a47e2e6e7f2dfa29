//! Where the bind mount of a new named namespace must be made so that it outlives the
//! caller's mount namespace.
//!
//! `ip netns exec` (like systemd's private mounts) runs its command in a mount namespace
//! of its own whose mounts are *slaves* of the host's: what the host mounts under
//! `/run/netns` shows up there, but a mount made there is seen nowhere else and goes away
//! with the last process of that mount namespace, leaving a plain file at the mount point.
//! So when `/run/netns` here is a slave, the bind mount is made in the mount namespace at
//! the top of its chain of masters, from where it propagates back here and to every other
//! namespace that shares it.

use crate::mountinfo::{self, Mount};
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The topmost mount that contains `path` in a mountinfo text: the deepest mount point,
/// and of mounts stacked there the last.
fn mount_at(text: &str, path: &Path) -> Option<Mount> {
    let depth = |m: &Mount| m.mount_point.components().count();
    let mut found: Option<Mount> = None;
    for m in mountinfo::parse(text) {
        if path.starts_with(&m.mount_point) && found.as_ref().is_none_or(|f| depth(&m) >= depth(f))
        {
            found = Some(m);
        }
    }
    found
}

/// Bind-mounts `source` on `target` in mount namespace `ns` (first making `target`'s
/// directory a shared mount there with `make_shared`), then comes back to the mount
/// namespace the calling thread was in. Only for a thread of its own: it stops sharing its
/// filesystem context with the other threads, as entering a mount namespace requires.
pub(super) fn bind_in(
    ns: &File,
    source: &Path,
    target: &Path,
    make_shared: impl FnOnce() -> io::Result<()>,
) -> io::Result<()> {
    use nix::mount::{mount, MsFlags};
    use nix::sched::{setns, unshare, CloneFlags};
    let back = File::open("/proc/thread-self/ns/mnt")?;
    unshare(CloneFlags::CLONE_FS)?;
    setns(ns, CloneFlags::CLONE_NEWNS)?;
    let made = make_shared().and_then(|()| {
        mount(
            Some(source),
            target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(io::Error::from)
    });
    setns(&back, CloneFlags::CLONE_NEWNS)?;
    made
}

/// The inode of a process's mount namespace (what `/proc/<pid>/ns/mnt` shows as `mnt:[N]`).
fn mnt_ns_ino(pid: &str) -> Option<u64> {
    std::fs::metadata(format!("/proc/{pid}/ns/mnt"))
        .ok()
        .map(|m| m.ino())
}

/// One process in each mount namespace other than ours, with that namespace's
/// propagation at `point`.
fn other_namespaces(point: &Path) -> Vec<(String, u64, Mount)> {
    let own = mnt_ns_ino("self");
    let mut seen = std::collections::BTreeSet::new();
    let mut out = vec![];
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.filter_map(|e| e.ok()) {
        let Ok(pid) = e.file_name().into_string() else {
            continue;
        };
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Some(ino) = mnt_ns_ino(&pid) else {
            continue;
        };
        if Some(ino) == own || !seen.insert(ino) {
            continue;
        }
        let Ok(mi) = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")) else {
            continue;
        };
        if let Some(p) = mount_at(&mi, point) {
            out.push((pid, ino, p));
        }
    }
    out
}

/// The mount namespace a bind mount under `dir` has to be made in to be seen by the
/// mount namespace(s) this one is a slave of: `None` when `dir` here is not a slave (a
/// mount made here is as visible as it can be); an error when it is one and no namespace
/// holding its master could be opened.
pub(super) fn master_mount_ns(dir: &Path) -> io::Result<Option<File>> {
    let own = std::fs::read_to_string("/proc/self/mountinfo")?;
    let Some(mut want) = mount_at(&own, dir).and_then(|p| p.master) else {
        return Ok(None);
    };
    let first = want;
    let others = other_namespaces(dir);
    let mut best: Option<(&str, u64)> = None;
    // Up the chain of masters (bounded: a chain is a few namespaces deep at most).
    for _ in 0..16 {
        let Some((pid, ino, p)) = others.iter().find(|(_, _, p)| p.shared == Some(want)) else {
            break;
        };
        best = Some((pid, *ino));
        match p.master {
            Some(m) if m != want => want = m,
            _ => break,
        }
    }
    let Some((pid, ino)) = best else {
        return Err(io::Error::other(format!(
            "{} here is a slave of mount peer group {first} (a private mount namespace, \
             as `ip netns exec` makes) and no mount namespace holding that group can be \
             entered: a namespace mounted here would vanish with this mount namespace",
            dir.display()
        )));
    };
    let f = File::open(format!("/proc/{pid}/ns/mnt"))?;
    if f.metadata()?.ino() != ino {
        return Err(io::Error::other(format!(
            "the mount namespace of pid {pid} changed while it was opened"
        )));
    }
    Ok(Some(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_topmost_mounts_propagation() {
        let mi = "45 27 254:0 /run/netns /run/netns rw,relatime shared:1 - ext4 /dev/vda rw\n\
                  46 45 0:4 net:[1] /run/netns/a rw shared:2 - nsfs nsfs rw\n\
                  83 56 254:0 /run/netns /run/netns rw,relatime shared:8 master:1 - ext4 /dev/vda rw\n";
        let at = |p: &str| mount_at(mi, Path::new(p)).map(|m| (m.shared, m.master));
        assert_eq!(at("/run/netns"), Some((Some(8), Some(1))));
        assert_eq!(at("/run/netns/a"), Some((Some(2), None)));
        assert_eq!(at("/run"), None);
        assert_eq!(at("/run/netnsx"), None);
        assert_eq!(at("/run/netns/b"), Some((Some(8), Some(1))));
        let private = "83 56 254:0 /run/netns /run/netns rw - ext4 /dev/vda rw\n";
        assert_eq!(
            mount_at(private, Path::new("/run/netns")).map(|m| (m.shared, m.master)),
            Some((None, None))
        );
    }
}
