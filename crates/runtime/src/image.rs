//! The guest image: a kernel from the setup step's cache (sandnet's own by default, Debian's
//! cloud kernel or any image when configured), and an initramfs sandnet builds around its
//! static guest agent and that kernel's modules, if any (rebuilt only when an input changes).

use sandnet_vm::{GuestKernel, Initramfs, InitramfsSpec, DEFAULT_INITRAMFS_CACHE};
use std::path::{Path, PathBuf};

/// Environment variable naming the static guest agent binary.
pub const AGENT_ENV: &str = "SANDNET_AGENT";

/// Where an installed agent lives.
pub const INSTALLED_AGENT: &str = "/usr/lib/sandnet/sandnet-agent";

/// What boots a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestImage {
    /// The kernel image QEMU boots.
    pub kernel: PathBuf,
    /// The initramfs.
    pub initrd: PathBuf,
    /// The agent binary inside it (when sandnet built it).
    pub agent: Option<PathBuf>,
}

/// Errors finding or building the image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// No static agent binary was found.
    #[error("static guest agent not found (looked at {0}); build it with scripts/setup or set SANDNET_AGENT")]
    NoAgent(String),
    /// The kernel cache or the initramfs build failed.
    #[error(transparent)]
    Vm(#[from] sandnet_vm::VmError),
}

/// Finds the static guest agent: `$SANDNET_AGENT`, next to this executable's target
/// directory (`target/x86_64-unknown-linux-gnu/release/`), or the installed one.
pub fn locate_agent() -> Result<PathBuf, ImageError> {
    let mut tried = vec![];
    if let Some(p) = std::env::var_os(AGENT_ENV) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        tried.push(p);
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            // target/{debug,release}/sandnet → target/x86_64-unknown-linux-gnu/release/
            let mut cands = vec![];
            for up in [dir.parent(), dir.parent().and_then(Path::parent)]
                .into_iter()
                .flatten()
            {
                cands.push(up.join("x86_64-unknown-linux-gnu/release/sandnet-agent"));
            }
            for c in cands {
                if c.is_file() {
                    return Ok(c);
                }
                tried.push(c);
            }
        }
    }
    let inst = PathBuf::from(INSTALLED_AGENT);
    if inst.is_file() {
        return Ok(inst);
    }
    tried.push(inst);
    Err(ImageError::NoAgent(
        tried
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    ))
}

/// Resolves the image. `kernel` is the `[hypervisor.qemu] kernel` setting: `None` = the
/// cache's `current` (sandnet's own kernel), a name in the cache (`debian-cloud`), a kernel
/// directory or an image file (see [`GuestKernel::select`]). With an initrd given, that is
/// used as is; otherwise an initramfs is built (or reused) with the static agent as `/init`
/// and the chosen kernel's modules (none for a kernel with everything built in).
pub fn resolve(kernel: Option<&Path>, initrd: Option<&Path>) -> Result<GuestImage, ImageError> {
    let gk = match kernel {
        None => GuestKernel::locate(&GuestKernel::default_dir())?,
        Some(k) => GuestKernel::select(k)?,
    };
    let kernel = gk.boot_image().to_path_buf();
    if let Some(i) = initrd {
        return Ok(GuestImage {
            kernel,
            initrd: i.to_path_buf(),
            agent: None,
        });
    }
    let agent = locate_agent()?;
    let spec = InitramfsSpec::new(&agent, &gk);
    let initrd = Initramfs::build_cached(&spec, Path::new(DEFAULT_INITRAMFS_CACHE))?;
    Ok(GuestImage {
        kernel,
        initrd,
        agent: Some(agent),
    })
}
