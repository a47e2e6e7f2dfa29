//! A container's files in the sandbox's shared directory. The root file system containerd
//! prepared (its `rootfs` mounts) is mounted on `<bundle>/rootfs` as runc does, then bound
//! to `<share>/<id>/rootfs`; each host path the spec bind-mounts is bound to
//! `<share>/<id>/mounts/<n>-<name>`. The guest sees them below
//! [`GUEST_DIR`](sandnet_runtime::shared::GUEST_DIR). Everything is undone in reverse
//! order ([`Prepared::release`]), also after a failure half-way, and [`sweep`] removes what a
//! dead shim left, from the mount table.

use crate::mounts::{self, MountError};
use crate::ocispec;
use crate::spec::{mount_kind, GuestLayout, MountKind};
use sandnet_runtime::shared::GUEST_DIR;
use std::path::{Path, PathBuf};

/// What went wrong laying out a container's files.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// A bind mount's host path is missing.
    #[error("container {id}: mount {dest}: source {src} does not exist")]
    MissingSource {
        /// The container.
        id: String,
        /// The mount's destination in the container.
        dest: String,
        /// The missing host path.
        src: String,
    },
    /// The container id cannot name a directory.
    #[error("container {id:?}: the id cannot name a directory in the share")]
    BadId {
        /// The container.
        id: String,
    },
    /// A mount or unmount failed.
    #[error("container {id}: {source}")]
    Mount {
        /// The container.
        id: String,
        /// What failed.
        #[source]
        source: MountError,
    },
    /// A file or directory could not be made, read or removed.
    #[error("container {id}: {what} {}: {source}", path.display())]
    Io {
        /// The container.
        id: String,
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// One of containerd's rootfs mounts (`CreateTaskRequest.rootfs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsMount {
    /// File system type (`bind`, `overlay`, …).
    pub kind: String,
    /// What is mounted.
    pub source: String,
    /// mount(8) options.
    pub options: Vec<String>,
}

/// What to lay out.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The container id.
    pub id: &'a str,
    /// Its bundle directory.
    pub bundle: &'a Path,
    /// The spec's `root.path` (relative to the bundle, or absolute).
    pub root_path: &'a str,
    /// containerd's rootfs mounts (none: the bundle's root is ready).
    pub rootfs: &'a [RootfsMount],
    /// The spec's mounts.
    pub mounts: &'a [ocispec::Mount],
    /// The host side of the sandbox's share.
    pub share: &'a Path,
}

/// A container's files, laid out; release them with [`Prepared::release`].
#[derive(Debug)]
pub struct Prepared {
    id: String,
    share: PathBuf,
    dir: PathBuf,
    bundle_root: PathBuf,
    /// Mount points in the order they were mounted.
    stack: Vec<PathBuf>,
    /// Where the guest finds them.
    pub layout: GuestLayout,
}

/// The container's directory in the share.
pub fn share_dir(share: &Path, id: &str) -> Result<PathBuf, RootfsError> {
    let ok = !id.is_empty()
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !ok {
        return Err(RootfsError::BadId { id: id.to_string() });
    }
    Ok(share.join(id))
}

/// The bundle's root file system directory for `root_path`.
pub fn bundle_root(bundle: &Path, root_path: &str) -> PathBuf {
    let p = if root_path.is_empty() {
        "rootfs"
    } else {
        root_path
    };
    bundle.join(p)
}

/// Lays out the container's files (see the module). On failure nothing is left.
pub fn prepare(req: &Request<'_>) -> Result<Prepared, RootfsError> {
    let dir = share_dir(req.share, req.id)?;
    let sources = check_sources(req)?;
    // Whatever an earlier attempt with this id left.
    sweep(req.id, None, req.share)?;
    let mut p = Prepared {
        id: req.id.to_string(),
        share: req.share.to_path_buf(),
        dir,
        bundle_root: bundle_root(req.bundle, req.root_path),
        stack: vec![],
        layout: GuestLayout {
            root: format!("{GUEST_DIR}/{}/rootfs", req.id),
            sources: Default::default(),
        },
    };
    match p.mount_all(req, &sources) {
        Ok(()) => Ok(p),
        Err(e) => {
            if let Err(u) = p.release() {
                log::error!("{u}");
            }
            Err(e)
        }
    }
}

/// Host sources of the spec's shared bind mounts, by index; a missing one fails.
fn check_sources(req: &Request<'_>) -> Result<Vec<(usize, PathBuf)>, RootfsError> {
    let mut out = vec![];
    for (i, m) in req.mounts.iter().enumerate() {
        if mount_kind(&m.kind, &m.destination, &m.options) != MountKind::Share {
            continue;
        }
        let src = req.bundle.join(&m.source);
        match std::fs::metadata(&src) {
            Ok(_) => out.push((i, src)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound || m.source.is_empty() => {
                return Err(RootfsError::MissingSource {
                    id: req.id.to_string(),
                    dest: m.destination.clone(),
                    src: m.source.clone(),
                })
            }
            Err(source) => {
                return Err(RootfsError::Io {
                    id: req.id.to_string(),
                    what: "read mount source",
                    path: src,
                    source,
                })
            }
        }
    }
    Ok(out)
}

impl Prepared {
    fn io(&self, what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RootfsError {
        let (id, path) = (self.id.clone(), path.to_path_buf());
        move |source| RootfsError::Io {
            id,
            what,
            path,
            source,
        }
    }

    fn mnt(&self) -> impl FnOnce(MountError) -> RootfsError {
        let id = self.id.clone();
        move |source| RootfsError::Mount { id, source }
    }

    fn mount_all(
        &mut self,
        req: &Request<'_>,
        sources: &[(usize, PathBuf)],
    ) -> Result<(), RootfsError> {
        let root = self.bundle_root.clone();
        for m in req.rootfs {
            let opts = mounts::parse_options(&m.options);
            mounts::mount_with(&m.kind, &m.source, &root, &opts).map_err(self.mnt())?;
            self.stack.push(root.clone());
        }
        if !root.is_dir() {
            return Err(self.io("root file system", &root)(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "not a directory",
            )));
        }
        let shared_root = self.dir.join("rootfs");
        std::fs::create_dir_all(&shared_root).map_err(self.io("create", &shared_root))?;
        mounts::bind(&root, &shared_root, false, false).map_err(self.mnt())?;
        self.stack.push(shared_root);
        for (i, src) in sources {
            let m = &req.mounts[*i];
            let name = format!("{i}-{}", safe_name(src));
            let target = self.dir.join("mounts").join(&name);
            make_target(src, &target).map_err(self.io("create", &target))?;
            let opts = mounts::parse_options(&m.options);
            let recursive = m.options.iter().any(|o| o == "rbind");
            mounts::bind(src, &target, recursive, opts.is_readonly()).map_err(self.mnt())?;
            self.stack.push(target);
            self.layout
                .sources
                .insert(*i, format!("{GUEST_DIR}/{}/mounts/{name}", self.id));
        }
        Ok(())
    }

    /// Unmounts everything in reverse order (detaching what is busy) and removes the
    /// container's directory in the share; the first error, after trying everything.
    pub fn release(mut self) -> Result<(), RootfsError> {
        let mut first = None;
        while let Some(t) = self.stack.pop() {
            if let Err(e) = mounts::unmount(&t) {
                first.get_or_insert(RootfsError::Mount {
                    id: self.id.clone(),
                    source: e,
                });
            }
        }
        if let Err(e) = sweep(&self.id, Some(&self.bundle_root), &self.share) {
            first.get_or_insert(e);
        }
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Removes what container `id` has in the share (and, given, on its bundle's root), from
/// the mount table: for a shim that died before it could [`Prepared::release`]. The
/// directory is removed only once nothing is mounted below it.
pub fn sweep(id: &str, bundle_root: Option<&Path>, share: &Path) -> Result<(), RootfsError> {
    let dir = share_dir(share, id)?;
    let mnt = |source| RootfsError::Mount {
        id: id.to_string(),
        source,
    };
    mounts::unmount_under(&dir).map_err(mnt)?;
    if let Some(root) = bundle_root {
        mounts::unmount_under(root).map_err(mnt)?;
    }
    // Never through a mount this namespace cannot see as one (a volume, an image).
    match sandnet_runtime::shared::remove_tree_same_fs(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(RootfsError::Io {
            id: id.to_string(),
            what: "remove",
            path: dir,
            source,
        }),
    }
}

/// A file or directory (like `src`) to mount on.
fn make_target(src: &Path, target: &Path) -> std::io::Result<()> {
    if src.is_dir() {
        std::fs::create_dir_all(target)
    } else {
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(target)
            .map(drop)
    }
}

/// The last component of `p`, with only `[A-Za-z0-9._-]`, at most 64 bytes.
fn safe_name(p: &Path) -> String {
    let name: String = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if name.is_empty() || name.chars().all(|c| c == '.') {
        "mount".into()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_cannot_name_a_directory() {
        let s = Path::new("/s");
        assert_eq!(
            share_dir(s, "abc-1.x_y").unwrap(),
            Path::new("/s/abc-1.x_y")
        );
        for bad in ["", "..", ".hidden", "a/b", "a b"] {
            assert!(share_dir(s, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn safe_names() {
        assert_eq!(safe_name(Path::new("/var/lib/x/hosts")), "hosts");
        assert_eq!(safe_name(Path::new("/srv/my data")), "my_data");
        assert_eq!(safe_name(Path::new("/")), "mount");
        assert_eq!(
            safe_name(&PathBuf::from("/a/".to_string() + &"x".repeat(100))).len(),
            64
        );
    }

    #[test]
    fn bundle_root_path() {
        let b = Path::new("/b");
        assert_eq!(bundle_root(b, "rootfs"), Path::new("/b/rootfs"));
        assert_eq!(bundle_root(b, ""), Path::new("/b/rootfs"));
        assert_eq!(bundle_root(b, "/abs/root"), Path::new("/abs/root"));
    }

    #[test]
    fn missing_source_fails_before_anything_is_made() {
        let share = sandnet_testkit::TempDir::new("rootfs-share");
        let bundle = sandnet_testkit::TempDir::new("rootfs-bundle");
        let mounts = vec![ocispec::Mount {
            destination: "/data".into(),
            kind: "bind".into(),
            source: "/nonexistent/sandnet-src".into(),
            options: vec!["rbind".into()],
        }];
        let e = prepare(&Request {
            id: "c1",
            bundle: &bundle,
            root_path: "rootfs",
            rootfs: &[],
            mounts: &mounts,
            share: &share,
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "container c1: mount /data: source /nonexistent/sandnet-src does not exist"
        );
        assert!(!share.join("c1").exists());
    }

    /// Needs root (mount(2)); skipped otherwise.
    #[test]
    fn prepare_and_release_leave_nothing() {
        // SAFETY: plain syscall.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("prepare_and_release_leave_nothing: skipped (needs root)");
            return;
        }
        let share = sandnet_testkit::TempDir::new("rootfs-share");
        let bundle = sandnet_testkit::TempDir::new("rootfs-bundle");
        let src = sandnet_testkit::TempDir::new("rootfs-src");
        // Dropped before the directories: a failed assertion leaves no mount for their
        // removal to reach through.
        struct Unmount(Vec<std::path::PathBuf>);
        impl Drop for Unmount {
            fn drop(&mut self) {
                for d in &self.0 {
                    let _ = sandnet_runtime::shared::unmount_below(d);
                }
            }
        }
        let _unmount = Unmount(vec![share.to_path_buf(), bundle.to_path_buf()]);
        std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
        std::fs::write(src.join("f"), "hi").unwrap();
        let img = src.join("img");
        std::fs::create_dir_all(img.join("bin")).unwrap();
        let mounts = vec![
            ocispec::Mount {
                destination: "/proc".into(),
                kind: "proc".into(),
                source: "proc".into(),
                options: vec![],
            },
            ocispec::Mount {
                destination: "/data".into(),
                kind: "bind".into(),
                source: src.display().to_string(),
                options: vec!["rbind".into(), "ro".into()],
            },
            ocispec::Mount {
                destination: "/etc/f".into(),
                kind: "bind".into(),
                source: src.join("f").display().to_string(),
                options: vec!["bind".into()],
            },
        ];
        let rootfs = [RootfsMount {
            kind: "bind".into(),
            source: img.display().to_string(),
            options: vec!["rbind".into(), "rw".into()],
        }];
        let p = prepare(&Request {
            id: "c1",
            bundle: &bundle,
            root_path: "rootfs",
            rootfs: &rootfs,
            mounts: &mounts,
            share: &share,
        })
        .unwrap();
        let c = share.join("c1");
        assert!(c.join("rootfs/bin").is_dir());
        let data = c.join("mounts").join(format!("1-{}", safe_name(&src)));
        assert_eq!(std::fs::read_to_string(data.join("f")).unwrap(), "hi");
        assert!(
            std::fs::write(data.join("g"), "x").is_err(),
            "ro bind is writable"
        );
        assert_eq!(std::fs::read_to_string(c.join("mounts/2-f")).unwrap(), "hi");
        assert_eq!(p.layout.root, format!("{GUEST_DIR}/c1/rootfs"));
        assert_eq!(p.layout.sources[&2], format!("{GUEST_DIR}/c1/mounts/2-f"));
        assert!(!p.layout.sources.contains_key(&0));
        p.release().unwrap();
        assert!(sandnet_runtime::shared::mounts_below(&share).is_empty());
        assert!(sandnet_runtime::shared::mounts_below(&bundle).is_empty());
        assert!(!c.exists());
        assert_eq!(std::fs::read_to_string(src.join("f")).unwrap(), "hi");
    }
}
