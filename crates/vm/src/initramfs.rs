//! The guest's initramfs, built by sandnet: `/init`, the kernel modules with their load order,
//! busybox and its applet links, and the usual empty directories.

use crate::cpio::CpioWriter;
use crate::error::{Result, VmError};
use crate::kernel::{GuestKernel, KernelModule};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where initramfs images are cached unless the caller says otherwise.
pub const DEFAULT_INITRAMFS_CACHE: &str = "/var/cache/sandnet/initramfs";
/// Debian's `busybox-static` binary.
pub const DEFAULT_BUSYBOX: &str = "/bin/busybox";
/// The file in the image listing modules to load, one path (relative to `/`) per line.
pub const MODULE_LIST_PATH: &str = "etc/sandnet/modules";
/// Bumped whenever the image layout changes, so old cache entries are not reused.
const FORMAT_VERSION: &str = "sandnet-initramfs-1";

/// The inputs of an initramfs.
#[derive(Debug, Clone)]
pub struct InitramfsSpec {
    /// The program to run as `/init` (the agent, or any static binary or script).
    pub init: PathBuf,
    /// Kernel modules, in load order; each lands in `/lib/modules/<name>.ko`.
    pub modules: Vec<KernelModule>,
    /// A statically linked busybox to install as `/bin/busybox` with its applet links.
    pub busybox: Option<PathBuf>,
}

impl InitramfsSpec {
    /// `init` plus all modules of `kernel` and Debian's static busybox.
    pub fn new(init: impl Into<PathBuf>, kernel: &GuestKernel) -> Self {
        InitramfsSpec {
            init: init.into(),
            modules: kernel.modules.clone(),
            busybox: Some(PathBuf::from(DEFAULT_BUSYBOX)),
        }
    }
}

/// Builder of initramfs images.
pub struct Initramfs;

struct Inputs {
    init: Vec<u8>,
    modules: Vec<(String, Vec<u8>)>,
    busybox: Option<(PathBuf, Vec<u8>)>,
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| VmError::io("reading", path, e))
}

/// Whether an ELF file asks for a dynamic loader (has a `PT_INTERP` program header).
fn elf_is_dynamic(d: &[u8]) -> bool {
    let u = |off: usize, n: usize| -> Option<u64> {
        let b = d.get(off..off + n)?;
        let mut v = [0u8; 8];
        v[..n].copy_from_slice(b);
        Some(u64::from_le_bytes(v))
    };
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u(0x20, 8), u(0x36, 2), u(0x38, 2)) else {
        return false;
    };
    (0..phnum).any(|i| {
        usize::try_from(phoff + i * phentsize)
            .ok()
            .and_then(|o| u(o, 4))
            == Some(3)
    })
}

fn valid_module_name(n: &str) -> bool {
    !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl Inputs {
    fn load(spec: &InitramfsSpec) -> Result<Inputs> {
        let init = read(&spec.init)?;
        if init.is_empty() {
            return Err(VmError::Initramfs(format!(
                "init {} is empty",
                spec.init.display()
            )));
        }
        if init.starts_with(b"\x7fELF") && elf_is_dynamic(&init) {
            return Err(VmError::Initramfs(format!(
                "init {} is dynamically linked; the guest has no libc, build it static",
                spec.init.display()
            )));
        }
        let mut seen = BTreeSet::new();
        let mut modules = Vec::new();
        for m in &spec.modules {
            if !valid_module_name(&m.name) || !seen.insert(m.name.clone()) {
                return Err(VmError::Initramfs(format!(
                    "bad or duplicate module name {:?}",
                    m.name
                )));
            }
            modules.push((m.name.clone(), read(&m.path)?));
        }
        let busybox = match &spec.busybox {
            None => None,
            Some(p) => {
                let b = read(p)?;
                if !b.starts_with(b"\x7fELF") || elf_is_dynamic(&b) {
                    return Err(VmError::Initramfs(format!(
                        "busybox {} is not a static ELF binary (install busybox-static)",
                        p.display()
                    )));
                }
                Some((p.clone(), b))
            }
        };
        Ok(Inputs {
            init,
            modules,
            busybox,
        })
    }

    fn key(&self) -> String {
        let mut h = Sha256::new();
        let mut field = |tag: &str, bytes: &[u8]| {
            h.update((tag.len() as u64).to_le_bytes());
            h.update(tag.as_bytes());
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        field("format", FORMAT_VERSION.as_bytes());
        field("init", &self.init);
        for (name, data) in &self.modules {
            field("module", name.as_bytes());
            field("module-data", data);
        }
        if let Some((_, b)) = &self.busybox {
            field("busybox", b);
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Applet paths (`usr/bin/ls`, …) of a busybox binary, from `busybox --list-full`.
fn busybox_applets(busybox: &Path) -> Result<Vec<String>> {
    let out = std::process::Command::new(busybox)
        .arg("--list-full")
        .output()
        .map_err(|e| VmError::io("running", busybox, e))?;
    if !out.status.success() {
        return Err(VmError::Initramfs(format!(
            "{} --list-full failed: {}",
            busybox.display(),
            out.status
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().trim_start_matches('/').to_string())
        .filter(|l| !l.is_empty())
        .collect())
}

const DIRS: &[(&str, u32)] = &[
    ("bin", 0o755),
    ("dev", 0o755),
    ("etc", 0o755),
    ("etc/sandnet", 0o755),
    ("lib", 0o755),
    ("lib/modules", 0o755),
    ("proc", 0o555),
    ("root", 0o700),
    ("run", 0o755),
    ("sbin", 0o755),
    ("sys", 0o555),
    ("tmp", 0o1777),
    ("usr", 0o755),
    ("usr/bin", 0o755),
    ("usr/sbin", 0o755),
    ("var", 0o755),
];

fn write_image<W: Write>(inputs: &Inputs, applets: &[String], out: W) -> std::io::Result<W> {
    let mut w = CpioWriter::new(out);
    let mut taken: BTreeSet<String> = BTreeSet::new();
    for (d, perm) in DIRS {
        w.dir(d, *perm)?;
        taken.insert(d.to_string());
    }
    w.char_dev("dev/console", 0o600, 5, 1)?;
    w.char_dev("dev/null", 0o666, 1, 3)?;
    w.file("init", 0o755, &inputs.init)?;
    taken.extend(["dev/console", "dev/null", "init"].map(String::from));
    let mut list = String::new();
    for (name, data) in &inputs.modules {
        let p = format!("lib/modules/{name}.ko");
        w.file(&p, 0o644, data)?;
        list.push_str(&p);
        list.push('\n');
        taken.insert(p);
    }
    w.file(MODULE_LIST_PATH, 0o644, list.as_bytes())?;
    taken.insert(MODULE_LIST_PATH.to_string());
    if let Some((_, b)) = &inputs.busybox {
        w.file("bin/busybox", 0o755, b)?;
        taken.insert("bin/busybox".into());
        for a in applets {
            let top_level = !a.contains('/');
            let under_known_dir = a
                .rsplit_once('/')
                .is_some_and(|(d, _)| DIRS.iter().any(|(k, _)| *k == d));
            if top_level || !under_known_dir || !taken.insert(a.clone()) {
                continue;
            }
            w.symlink(a, "/bin/busybox")?;
        }
    }
    w.finish()
}

impl Initramfs {
    /// Builds the image for `spec` into `cache_dir/initramfs-<hash>.cpio`, where the hash covers
    /// every input; returns the existing file when nothing changed.
    pub fn build_cached(spec: &InitramfsSpec, cache_dir: &Path) -> Result<PathBuf> {
        let inputs = Inputs::load(spec)?;
        let key = inputs.key();
        let path = cache_dir.join(format!("initramfs-{}.cpio", &key[..32]));
        if path.is_file() {
            tracing::debug!(path = %path.display(), "initramfs cache hit");
            return Ok(path);
        }
        std::fs::create_dir_all(cache_dir).map_err(|e| VmError::io("creating", cache_dir, e))?;
        let applets = match &inputs.busybox {
            Some((p, _)) => busybox_applets(p)?,
            None => Vec::new(),
        };
        let tmp = cache_dir.join(format!(
            ".initramfs-{}.{}.{:?}.tmp",
            &key[..16],
            std::process::id(),
            std::thread::current().id()
        ));
        let res = (|| -> Result<()> {
            let f = std::fs::File::create(&tmp).map_err(|e| VmError::io("creating", &tmp, e))?;
            let f = write_image(&inputs, &applets, std::io::BufWriter::new(f))
                .map_err(|e| VmError::io("writing", &tmp, e))?;
            f.into_inner()
                .map_err(|e| VmError::io("writing", &tmp, e.into_error()))?
                .sync_all()
                .map_err(|e| VmError::io("writing", &tmp, e))?;
            std::fs::rename(&tmp, &path).map_err(|e| VmError::io("renaming into", &path, e))
        })();
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        res?;
        tracing::info!(path = %path.display(), "built initramfs");
        Ok(path)
    }

    /// Builds the image for `spec` in memory (no cache).
    pub fn build(spec: &InitramfsSpec) -> Result<Vec<u8>> {
        let inputs = Inputs::load(spec)?;
        let applets = match &inputs.busybox {
            Some((p, _)) => busybox_applets(p)?,
            None => Vec::new(),
        };
        write_image(&inputs, &applets, Vec::new())
            .map_err(|e| VmError::Initramfs(format!("writing image: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpio::{read_archive, EntryKind};

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sandnet-vm-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn image_layout_and_cache() {
        let d = tmpdir("initramfs");
        let init = d.join("init.sh");
        std::fs::write(&init, "#!/bin/busybox sh\necho hi\n").unwrap();
        let ko = d.join("foo.ko");
        std::fs::write(&ko, b"\x7fELF fake").unwrap();
        let bb = Path::new(DEFAULT_BUSYBOX);
        let spec = InitramfsSpec {
            init: init.clone(),
            modules: vec![KernelModule {
                name: "foo".into(),
                path: ko,
                depends: vec![],
            }],
            busybox: bb.exists().then(|| bb.to_path_buf()),
        };
        let cache = d.join("cache");
        let p1 = Initramfs::build_cached(&spec, &cache).unwrap();
        let bytes1 = std::fs::read(&p1).unwrap();
        let entries = read_archive(&bytes1).unwrap();
        let find = |n: &str| entries.iter().find(|e| e.name == n).map(|e| e.kind.clone());
        assert_eq!(
            find("init"),
            Some(EntryKind::File(b"#!/bin/busybox sh\necho hi\n".to_vec()))
        );
        assert_eq!(
            find(MODULE_LIST_PATH),
            Some(EntryKind::File(b"lib/modules/foo.ko\n".to_vec()))
        );
        assert_eq!(find("dev/console"), Some(EntryKind::CharDev(5, 1)));
        assert_eq!(find("tmp"), Some(EntryKind::Dir));
        if spec.busybox.is_some() {
            assert_eq!(
                find("bin/sh"),
                Some(EntryKind::Symlink("/bin/busybox".into()))
            );
            assert!(matches!(find("bin/busybox"), Some(EntryKind::File(_))));
        }
        // Same inputs: same file, same bytes (deterministic build too).
        let mtime = std::fs::metadata(&p1).unwrap().modified().unwrap();
        let p2 = Initramfs::build_cached(&spec, &cache).unwrap();
        assert_eq!(p1, p2);
        assert_eq!(std::fs::metadata(&p2).unwrap().modified().unwrap(), mtime);
        assert_eq!(Initramfs::build(&spec).unwrap(), bytes1);
        // A changed input: a new file.
        std::fs::write(&init, "#!/bin/busybox sh\necho bye\n").unwrap();
        let p3 = Initramfs::build_cached(&spec, &cache).unwrap();
        assert_ne!(p1, p3);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let d = tmpdir("initramfs-bad");
        let spec = InitramfsSpec {
            init: d.join("missing"),
            modules: vec![],
            busybox: None,
        };
        let e = Initramfs::build_cached(&spec, &d).unwrap_err().to_string();
        assert!(e.contains("missing"), "{e}");
        // A dynamically linked init is refused.
        let spec = InitramfsSpec {
            init: PathBuf::from("/bin/ls"),
            modules: vec![],
            busybox: None,
        };
        let e = Initramfs::build_cached(&spec, &d).unwrap_err().to_string();
        assert!(e.contains("dynamically linked"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
