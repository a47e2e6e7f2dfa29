//! The container's root file system, built by its init (PID 1 of the new pid namespace, in
//! the new mount namespace) before it waits for Start: everything made private, the root
//! moved onto a mount with a parent (the guest's root is the initramfs, where
//! `pivot_root(2)` fails), the container's root bind-mounted onto itself, the spec's mounts
//! inside it, `/dev` filled when it is a tmpfs, masked and read-only paths, then
//! `pivot_root(".", ".")` and the old root lazily unmounted.

use super::spec::{CreatePlan, MountKind, MountPlan};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::statvfs::{statvfs, FsFlags};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};

type Result<T> = std::result::Result<T, String>;

fn ms(bits: u64) -> MsFlags {
    MsFlags::from_bits_retain(bits as libc::c_ulong)
}

fn do_mount(
    src: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
    what: impl FnOnce() -> String,
) -> Result<()> {
    mount(src, target, fstype, flags, data).map_err(|e| format!("{}: {e}", what()))
}

/// `path` (absolute, inside the container) resolved under `root` the way the container
/// will see it: symlinks are followed, but an absolute link or `..` never leaves `root`.
/// Components that do not exist are kept as they are.
pub fn secure_join(root: &Path, path: &str) -> PathBuf {
    let mut todo: VecDeque<String> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(String::from)
        .collect();
    let mut cur = PathBuf::new();
    let mut links = 0;
    while let Some(c) = todo.pop_front() {
        if c == ".." {
            cur.pop();
            continue;
        }
        let next = cur.join(&c);
        let full = root.join(&next);
        let link = std::fs::symlink_metadata(&full)
            .ok()
            .filter(|m| m.file_type().is_symlink())
            .and_then(|_| std::fs::read_link(&full).ok());
        match link {
            Some(target) if links < 255 => {
                links += 1;
                let t = target.to_string_lossy().into_owned();
                if t.starts_with('/') {
                    cur = PathBuf::new();
                }
                for x in t.split('/').rev().filter(|x| !x.is_empty() && *x != ".") {
                    todo.push_front(x.to_string());
                }
            }
            _ => cur = next,
        }
    }
    root.join(cur)
}

/// Creates a mount point: a directory, or (for a bind mount of a file) an empty file.
fn mount_point(target: &Path, dir: bool) -> Result<()> {
    let err = |e: std::io::Error| format!("creating mount point {}: {e}", target.display());
    if dir {
        return std::fs::create_dir_all(target).map_err(err);
    }
    if let Some(p) = target.parent() {
        std::fs::create_dir_all(p).map_err(err)?;
    }
    if std::fs::symlink_metadata(target).is_err() {
        std::fs::File::create(target).map_err(err)?;
    }
    Ok(())
}

/// The `MS_*` flags a bind remount has to keep from the mount at `p`.
fn kept_flags(p: &Path) -> MsFlags {
    let mut f = MsFlags::empty();
    if let Ok(s) = statvfs(p) {
        let fl = s.flags();
        for (st, m) in [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if fl.contains(st) {
                f |= m;
            }
        }
    }
    f
}

fn bind_remount(target: &Path, flags: MsFlags, what: &str) -> Result<()> {
    do_mount(
        None,
        target,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags,
        None,
        || format!("remounting {what} ({flags:?})"),
    )
}

/// Bind-mounts `src` on `target` (with its submounts when `recursive`), then, when `flags`
/// asks for anything, remounts it with those plus the flags its source's mount already has
/// (a bind remount clears every flag it is not given: a `ro` bind of a nosuid, nodev
/// mount would come back suid and dev).
fn bind(src: &Path, target: &Path, recursive: bool, flags: MsFlags, what: &str) -> Result<()> {
    let rec = if recursive {
        MsFlags::MS_REC
    } else {
        MsFlags::empty()
    };
    do_mount(
        Some(src),
        target,
        None,
        MsFlags::MS_BIND | rec,
        None,
        || what.to_string(),
    )?;
    if !flags.is_empty() {
        bind_remount(target, flags | kept_flags(target), what)?;
    }
    Ok(())
}

/// Builds the root file system and switches to it. Errors are one line without the
/// container prefix.
pub fn setup_rootfs(plan: &CreatePlan) -> Result<()> {
    let root = Path::new(&plan.root);
    do_mount(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
        || "making the mounts private".into(),
    )?;
    move_root(root)?;
    do_mount(
        Some(root),
        root,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
        || format!("bind-mounting the root {}", root.display()),
    )?;
    let mut dev_tmpfs = false;
    for m in &plan.mounts {
        mount_one(root, m, plan.cgroup.as_deref())?;
        if m.kind == MountKind::Fs && m.fstype == "tmpfs" && m.dest.trim_end_matches('/') == "/dev"
        {
            dev_tmpfs = true;
        }
    }
    if dev_tmpfs {
        setup_dev(root)?;
    }
    for p in &plan.masked {
        mask(root, p)?;
    }
    for p in &plan.readonly_paths {
        let t = secure_join(root, p);
        if std::fs::symlink_metadata(&t).is_err() {
            continue;
        }
        bind(
            &t,
            &t,
            true,
            MsFlags::MS_RDONLY,
            &format!("read-only path {p}"),
        )?;
    }
    pivot(root)?;
    if plan.readonly_root {
        bind_remount(
            Path::new("/"),
            MsFlags::MS_RDONLY | kept_flags(Path::new("/")),
            "the root read-only",
        )?;
    }
    Ok(())
}

/// Makes the current root a mount that has a parent: the whole tree is bound onto `dir`
/// (any directory), that mount is moved onto `/` and entered with `chroot`.
fn move_root(dir: &Path) -> Result<()> {
    do_mount(
        Some(Path::new("/")),
        dir,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
        || "binding the root".into(),
    )?;
    nix::unistd::chdir(dir).map_err(|e| format!("chdir {}: {e}", dir.display()))?;
    do_mount(
        Some(Path::new(".")),
        Path::new("/"),
        None,
        MsFlags::MS_MOVE,
        None,
        || "moving the root".into(),
    )?;
    nix::unistd::chroot(".").map_err(|e| format!("chroot: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    Ok(())
}

fn mount_one(root: &Path, m: &MountPlan, cgroup: Option<&str>) -> Result<()> {
    let target = secure_join(root, &m.dest);
    match m.kind {
        MountKind::Bind { recursive } => {
            let src = Path::new(&m.source);
            let meta = std::fs::metadata(src).map_err(|_| {
                format!("bind mount {}: source {} does not exist", m.dest, m.source)
            })?;
            mount_point(&target, meta.is_dir())?;
            let what = format!("bind mount {} on {}", m.source, m.dest);
            bind(src, &target, recursive, ms(m.flags), &what)?;
        }
        MountKind::Cgroup => {
            // The container's own cgroup directory (no cgroup namespace: the guest's
            // hierarchy stays hidden).
            let Some(cg) = cgroup else {
                tracing::debug!(dest = %m.dest, "no cgroup to mount");
                return Ok(());
            };
            mount_point(&target, true)?;
            let what = format!("binding the cgroup on {}", m.dest);
            bind(Path::new(cg), &target, false, ms(m.flags), &what)?;
        }
        MountKind::Fs => {
            mount_point(&target, true)?;
            let src = if m.source.is_empty() {
                &m.fstype
            } else {
                &m.source
            };
            do_mount(
                Some(Path::new(src)),
                &target,
                Some(&m.fstype),
                ms(m.flags),
                Some(m.data.as_str()).filter(|d| !d.is_empty()),
                || format!("mount {} on {}", m.fstype, m.dest),
            )?;
        }
    }
    if m.propagation != 0 {
        do_mount(None, &target, None, ms(m.propagation), None, || {
            format!("propagation of {}", m.dest)
        })?;
    }
    Ok(())
}

/// The standard devices (bound from the guest's `/dev`) and links in a tmpfs `/dev`.
fn setup_dev(root: &Path) -> Result<()> {
    let dev = secure_join(root, "/dev");
    for name in ["null", "zero", "full", "random", "urandom", "tty"] {
        let t = dev.join(name);
        mount_point(&t, false)?;
        let src = Path::new("/dev").join(name);
        do_mount(Some(&src), &t, None, MsFlags::MS_BIND, None, || {
            format!("binding /dev/{name}")
        })?;
    }
    let mut links = vec![
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ];
    if dev.join("pts").is_dir() {
        links.push(("ptmx", "pts/ptmx"));
    }
    for (name, to) in links {
        let l = dev.join(name);
        if std::fs::symlink_metadata(&l).is_ok() {
            continue;
        }
        std::os::unix::fs::symlink(to, &l).map_err(|e| format!("linking /dev/{name}: {e}"))?;
    }
    Ok(())
}

/// Hides `p`: the guest's `/dev/null` over a file, an empty read-only tmpfs over a
/// directory; a path that does not exist is skipped.
fn mask(root: &Path, p: &str) -> Result<()> {
    let t = secure_join(root, p);
    let Ok(meta) = std::fs::symlink_metadata(&t) else {
        return Ok(());
    };
    if meta.is_dir() {
        do_mount(
            Some(Path::new("tmpfs")),
            &t,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None,
            || format!("masking {p}"),
        )
    } else {
        do_mount(
            Some(Path::new("/dev/null")),
            &t,
            None,
            MsFlags::MS_BIND,
            None,
            || format!("masking {p}"),
        )
    }
}

/// `pivot_root(".", ".")` in the new root, then the old root (now on top) is detached.
fn pivot(root: &Path) -> Result<()> {
    nix::unistd::chdir(root).map_err(|e| format!("chdir {}: {e}", root.display()))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detaching the old root: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_join_stays_inside_the_root() {
        let d = std::env::temp_dir().join(format!("sj-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("a/b")).unwrap();
        std::os::unix::fs::symlink("/a", d.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../..", d.join("a/up")).unwrap();
        assert_eq!(secure_join(&d, "/abs/b"), d.join("a/b"));
        assert_eq!(secure_join(&d, "/a/up/etc"), d.join("etc"));
        assert_eq!(secure_join(&d, "/../../x/./y"), d.join("x/y"));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
