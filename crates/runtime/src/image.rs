//! The guest image: Debian's cloud kernel from the setup step's cache, and an initramfs
//! sandnet builds around its static guest agent (rebuilt only when an input changes).

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

/// Resolves the image: the given kernel/initrd when set, otherwise the cached cloud kernel
/// and an initramfs built (or reused) with the static agent as `/init`.
pub fn resolve(kernel: Option<&Path>, initrd: Option<&Path>) -> Result<GuestImage, ImageError> {
    if let (Some(k), Some(i)) = (kernel, initrd) {
        return Ok(GuestImage {
            kernel: k.to_path_buf(),
            initrd: i.to_path_buf(),
            agent: None,
        });
    }
    let gk = GuestKernel::locate(&GuestKernel::default_dir())?;
    let kernel = kernel
        .map(Path::to_path_buf)
        .unwrap_or_else(|| gk.boot_image().to_path_buf());
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
