//! The guest kernels in the cache: sandnet's own (`scripts/build-kernel`, everything built
//! in, the default) and Debian's cloud kernel (`scripts/guest-kernel.sh`, with its modules in
//! load order), chosen by name, directory or image file.

use crate::error::{Result, VmError};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Where the kernel scripts put their kernels unless `SANDNET_KERNEL_DIR` says otherwise.
pub const DEFAULT_KERNEL_DIR: &str = "/var/cache/sandnet/kernel";
/// The cache's name for the kernel used when none is configured (a link to sandnet's own).
pub const CURRENT_KERNEL: &str = "current";
/// The cache's name for sandnet's own kernel, built by `scripts/build-kernel`.
pub const SANDNET_KERNEL: &str = "sandnet";
/// The cache's name for Debian's cloud kernel, fetched by `scripts/guest-kernel.sh`.
pub const DEBIAN_CLOUD_KERNEL: &str = "debian-cloud";

/// Tie-break order for modules that do not depend on each other (the order known to work).
const PREFERRED_ORDER: &[&str] = &[
    "virtio",
    "virtio_ring",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
    "virtio_console",
    "vsock",
    "vmw_vsock_virtio_transport_common",
    "vmw_vsock_virtio_transport",
];

/// One loadable kernel module of the guest kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelModule {
    /// Module name as the kernel knows it (`virtio_net`).
    pub name: String,
    /// The uncompressed `.ko` file on the host.
    pub path: PathBuf,
    /// Names of the modules it needs loaded first (from its `.modinfo` `depends=`).
    pub depends: Vec<String>,
}

/// A guest kernel: the image to boot and its modules, ordered so each loads after its dependencies.
#[derive(Debug, Clone)]
pub struct GuestKernel {
    /// The kernel release (`6.1.0-56-cloud-amd64`).
    pub release: String,
    /// The compressed bzImage.
    pub vmlinuz: PathBuf,
    /// The uncompressed ELF, when it could be extracted (boots faster through PVH).
    pub vmlinux: Option<PathBuf>,
    /// Modules in load order.
    pub modules: Vec<KernelModule>,
}

impl GuestKernel {
    /// The kernel cache: `$SANDNET_KERNEL_DIR` or `/var/cache/sandnet/kernel`.
    pub fn cache_dir() -> PathBuf {
        std::env::var_os("SANDNET_KERNEL_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_KERNEL_DIR))
    }

    /// The kernel directory to use by default: the cache's `current` (sandnet's own kernel).
    pub fn default_dir() -> PathBuf {
        Self::cache_dir().join(CURRENT_KERNEL)
    }

    /// The kernel the cache knows as `name` (`sandnet`, `debian-cloud`, `current`, or a
    /// versioned directory such as `6.1.0-57-cloud-amd64`).
    pub fn named(name: &str) -> Result<GuestKernel> {
        if !is_kernel_name(name) {
            return Err(VmError::GuestKernel {
                dir: Self::cache_dir(),
                reason: format!("{name:?} is not a kernel name (letters, digits, '.', '_', '-')"),
            });
        }
        Self::locate(&Self::cache_dir().join(name))
    }

    /// The kernel a setting (`[hypervisor.qemu] kernel`) asks for: a name in the cache (no
    /// `/`, see [`GuestKernel::named`]), a kernel directory of the cache's layout, or an
    /// image file. An image inside such a directory brings that directory's modules along;
    /// any other image is taken to have what it needs built in (no modules).
    pub fn select(setting: &Path) -> Result<GuestKernel> {
        if setting.is_relative() && setting.components().count() == 1 {
            return Self::named(&setting.to_string_lossy());
        }
        if setting.is_dir() {
            return Self::locate(setting);
        }
        if !setting.is_file() {
            return Err(VmError::GuestKernel {
                dir: setting.to_path_buf(),
                reason: "no such kernel image or directory".into(),
            });
        }
        let beside = setting
            .parent()
            .filter(|d| d.join("version").is_file())
            .and_then(|d| Self::locate(d).ok());
        let (release, modules) = beside.map(|k| (k.release, k.modules)).unwrap_or_default();
        let head = std::fs::File::open(setting)
            .and_then(|mut f| {
                let mut b = [0u8; 4];
                std::io::Read::read_exact(&mut f, &mut b).map(|_| b)
            })
            .map_err(|e| VmError::io("reading", setting, e))?;
        let elf = &head == b"\x7fELF";
        Ok(GuestKernel {
            release,
            vmlinuz: setting.to_path_buf(),
            vmlinux: elf.then(|| setting.to_path_buf()),
            modules,
        })
    }

    /// Reads a kernel directory of the cache (`vmlinuz`, optional `vmlinux`, `version`, and
    /// `modules/*.ko` unless everything is built in). `dir` may be a versioned directory or a
    /// link to one; the cache root is accepted too and means its `current`. A kernel without
    /// a `modules` directory has no modules (sandnet's own); one with an empty `modules`
    /// directory is an incomplete download and an error.
    pub fn locate(dir: &Path) -> Result<GuestKernel> {
        let dir = if dir.join("current").is_dir() && !dir.join("vmlinuz").exists() {
            dir.join("current")
        } else {
            dir.to_path_buf()
        };
        let bad = |reason: String| VmError::GuestKernel {
            dir: dir.clone(),
            reason,
        };
        let vmlinuz = dir.join("vmlinuz");
        if !vmlinuz.is_file() {
            return Err(bad(format!("no kernel image {}", vmlinuz.display())));
        }
        let vmlinux = Some(dir.join("vmlinux")).filter(|p| p.is_file());
        let release = std::fs::read_to_string(dir.join("version"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let mdir = dir.join("modules");
        if !mdir.exists() {
            return Ok(GuestKernel {
                release,
                vmlinuz,
                vmlinux,
                modules: Vec::new(),
            });
        }
        let entries = std::fs::read_dir(&mdir)
            .map_err(|e| bad(format!("cannot list {}: {e}", mdir.display())))?;
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| VmError::io("listing", &mdir, e))?;
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("ko") {
                continue;
            }
            let data = std::fs::read(&path).map_err(|e| VmError::io("reading", &path, e))?;
            let info = modinfo(&data).map_err(|reason| VmError::Module {
                path: path.clone(),
                reason,
            })?;
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string();
            let name = info.name.unwrap_or(stem);
            found.push(KernelModule {
                name,
                path,
                depends: info.depends,
            });
        }
        if found.is_empty() {
            return Err(bad(format!("no .ko files in {}", mdir.display())));
        }
        let modules = load_order(found)?;
        Ok(GuestKernel {
            release,
            vmlinuz,
            vmlinux,
            modules,
        })
    }

    /// The image to pass to `-kernel`: the ELF `vmlinux` when present, else `vmlinuz`.
    pub fn boot_image(&self) -> &Path {
        self.vmlinux.as_deref().unwrap_or(&self.vmlinuz)
    }
}

/// Whether `s` can name a kernel in the cache (one path component, no dots only).
fn is_kernel_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars().any(|c| c != '.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// What `.modinfo` says about a module.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ModInfo {
    pub name: Option<String>,
    pub depends: Vec<String>,
}

fn rd<const N: usize>(d: &[u8], off: usize) -> std::result::Result<[u8; N], String> {
    d.get(off..off + N)
        .and_then(|s| <[u8; N]>::try_from(s).ok())
        .ok_or_else(|| format!("truncated ELF at offset {off}"))
}

fn u16_at(d: &[u8], off: usize) -> std::result::Result<usize, String> {
    Ok(u16::from_le_bytes(rd(d, off)?) as usize)
}

fn u32_at(d: &[u8], off: usize) -> std::result::Result<usize, String> {
    Ok(u32::from_le_bytes(rd(d, off)?) as usize)
}

fn u64_at(d: &[u8], off: usize) -> std::result::Result<usize, String> {
    usize::try_from(u64::from_le_bytes(rd(d, off)?)).map_err(|_| "ELF offset too large".into())
}

/// Returns the bytes of the named section of a little-endian ELF64 file.
pub(crate) fn elf_section<'a>(
    d: &'a [u8],
    want: &str,
) -> std::result::Result<Option<&'a [u8]>, String> {
    if d.get(..4) != Some(b"\x7fELF") {
        return Err("not an ELF file (compressed module?)".into());
    }
    if d.get(4) != Some(&2) || d.get(5) != Some(&1) {
        return Err("not a little-endian ELF64 file".into());
    }
    let shoff = u64_at(d, 0x28)?;
    let shentsize = u16_at(d, 0x3a)?;
    let shnum = u16_at(d, 0x3c)?;
    let shstrndx = u16_at(d, 0x3e)?;
    if shentsize < 64 || shstrndx >= shnum {
        return Err("bad ELF section header table".into());
    }
    let sh = |i: usize| shoff + i * shentsize;
    let str_off = u64_at(d, sh(shstrndx) + 24)?;
    let str_size = u64_at(d, sh(shstrndx) + 32)?;
    let strtab = d
        .get(str_off..str_off.saturating_add(str_size))
        .ok_or("section name table out of bounds")?;
    for i in 0..shnum {
        let name_off = u32_at(d, sh(i))?;
        let name = strtab
            .get(name_off..)
            .and_then(|s| s.split(|&b| b == 0).next())
            .unwrap_or_default();
        if name == want.as_bytes() {
            let off = u64_at(d, sh(i) + 24)?;
            let size = u64_at(d, sh(i) + 32)?;
            return d
                .get(off..off.saturating_add(size))
                .map(Some)
                .ok_or_else(|| format!("section {want} out of bounds"));
        }
    }
    Ok(None)
}

/// Parses the `.modinfo` section (NUL-separated `key=value` strings) of a `.ko`.
pub(crate) fn modinfo(d: &[u8]) -> std::result::Result<ModInfo, String> {
    let sec = elf_section(d, ".modinfo")?.ok_or("no .modinfo section")?;
    let mut info = ModInfo::default();
    for kv in sec.split(|&b| b == 0) {
        let kv = String::from_utf8_lossy(kv);
        if let Some(v) = kv.strip_prefix("depends=") {
            info.depends = v
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.replace('-', "_"))
                .collect();
        } else if let Some(v) = kv.strip_prefix("name=") {
            info.name = Some(v.to_string());
        }
    }
    Ok(info)
}

fn rank(name: &str) -> (usize, String) {
    let r = PREFERRED_ORDER
        .iter()
        .position(|p| *p == name)
        .unwrap_or(PREFERRED_ORDER.len());
    (r, name.to_string())
}

/// Orders modules so each comes after everything in its `depends`; ties keep the known-good order.
pub(crate) fn load_order(mods: Vec<KernelModule>) -> Result<Vec<KernelModule>> {
    let mut by_name: BTreeMap<String, KernelModule> = BTreeMap::new();
    for m in mods {
        by_name.insert(m.name.clone(), m);
    }
    for m in by_name.values() {
        for d in &m.depends {
            if !by_name.contains_key(d) {
                return Err(VmError::Module {
                    path: m.path.clone(),
                    reason: format!("depends on {d}, which is not among the guest modules"),
                });
            }
        }
    }
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::with_capacity(by_name.len());
    while out.len() < by_name.len() {
        let next = by_name
            .values()
            .filter(|m| !done.contains(&m.name) && m.depends.iter().all(|d| done.contains(d)))
            .min_by_key(|m| rank(&m.name))
            .cloned();
        match next {
            Some(m) => {
                done.insert(m.name.clone());
                out.push(m);
            }
            None => {
                let left: Vec<_> = by_name
                    .keys()
                    .filter(|n| !done.contains(*n))
                    .cloned()
                    .collect();
                let path = by_name
                    .values()
                    .find(|m| !done.contains(&m.name))
                    .map(|m| m.path.clone())
                    .unwrap_or_default();
                return Err(VmError::Module {
                    path,
                    reason: format!("dependency cycle among {}", left.join(", ")),
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, deps: &[&str]) -> KernelModule {
        KernelModule {
            name: name.into(),
            path: PathBuf::from(format!("/x/{name}.ko")),
            depends: deps.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn order_follows_depends_then_preference() {
        let mods = vec![
            m("virtio_net", &["net_failover", "virtio", "virtio_ring"]),
            m("net_failover", &["failover"]),
            m("failover", &[]),
            m("virtio_ring", &["virtio"]),
            m("virtio", &[]),
            m("virtio_console", &["virtio", "virtio_ring"]),
        ];
        let names: Vec<_> = load_order(mods)
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(
            names,
            [
                "virtio",
                "virtio_ring",
                "failover",
                "net_failover",
                "virtio_net",
                "virtio_console"
            ]
        );
    }

    #[test]
    fn missing_dependency_and_cycle_are_errors() {
        let e = load_order(vec![m("a", &["b"])]).unwrap_err().to_string();
        assert!(e.contains("depends on b"), "{e}");
        let e = load_order(vec![m("a", &["b"]), m("b", &["a"])])
            .unwrap_err()
            .to_string();
        assert!(e.contains("cycle"), "{e}");
    }

    #[test]
    fn kernel_names() {
        for ok in ["sandnet", "debian-cloud", "current", "6.1.0-57-cloud-amd64"] {
            assert!(is_kernel_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "x y", "k\n"] {
            assert!(!is_kernel_name(bad), "{bad:?}");
        }
        let e = GuestKernel::named("..").unwrap_err().to_string();
        assert!(e.contains("not a kernel name"), "{e}");
    }

    #[test]
    fn select_takes_an_image_file_without_modules() {
        let d = sandnet_testkit::TempDir::new("kernel-select");
        let img = d.join("vmlinux");
        std::fs::write(&img, b"\x7fELF rest").unwrap();
        let k = GuestKernel::select(&img).unwrap();
        assert_eq!(k.boot_image(), img.as_path());
        assert!(k.modules.is_empty());
        let bz = d.join("bzImage");
        std::fs::write(&bz, b"MZ..").unwrap();
        let k = GuestKernel::select(&bz).unwrap();
        assert_eq!(k.boot_image(), bz.as_path());
        assert!(k.vmlinux.is_none());
        // A directory without modules/ is a built-in kernel.
        std::fs::write(d.join("vmlinuz"), b"MZ..").unwrap();
        let k = GuestKernel::select(&d).unwrap();
        assert_eq!(k.boot_image(), img.as_path());
        assert!(k.modules.is_empty());
        let e = GuestKernel::select(&d.join("absent"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no such kernel"), "{e}");
    }

    #[test]
    fn modinfo_rejects_garbage() {
        assert!(modinfo(b"not an elf").is_err());
        assert!(modinfo(b"\x7fELF\x02\x01").is_err());
    }
}
