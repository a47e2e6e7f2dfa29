//! What a sandbox is asked to be (`spec.json`, persisted before its supervisor starts) and
//! what `run` reports once it is up.

use crate::sandbox::{SandboxError, SandboxPaths};
use crate::shared::SharedFs;
use sandnet_model::InterworkingModel as Model;
use sandnet_model::{Dns, Interface};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The VM part of a sandbox's specification (from the configuration file and flags).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmParams {
    /// QEMU binary.
    pub qemu: PathBuf,
    /// Machine type.
    pub machine: String,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// Kernel to boot instead of the default (sandnet's own): a cache name or a path.
    pub kernel: Option<PathBuf>,
    /// Initramfs to use instead of sandnet's.
    pub initrd: Option<PathBuf>,
    /// Extra kernel arguments.
    pub kernel_params: String,
    /// Do not use vhost-net even where it exists.
    pub disable_vhost_net: bool,
    /// Free PCIe root ports reserved at boot for hot-plugged NICs.
    #[serde(default = "default_hotplug_ports")]
    pub hotplug_ports: u32,
    /// How the accelerator is chosen.
    #[serde(default)]
    pub accel: sandnet_vm::AccelMode,
    /// Give memory the guest frees back to the host (a balloon with free page reporting).
    #[serde(default)]
    pub reclaim_freed_memory: bool,
    /// TCG translation cache in MiB under TCG; 0: QEMU's default.
    #[serde(default)]
    pub tcg_tb_size_mib: u32,
}

fn default_hotplug_ports() -> u32 {
    crate::config::DEFAULT_HOTPLUG_PORTS
}

impl Default for VmParams {
    fn default() -> Self {
        let c = crate::config::QemuConfig::default();
        VmParams::from(&c)
    }
}

impl From<&crate::config::QemuConfig> for VmParams {
    fn from(c: &crate::config::QemuConfig) -> Self {
        VmParams {
            qemu: c.path.clone(),
            machine: c.machine_type.clone(),
            vcpus: c.default_vcpus,
            memory_mib: c.default_memory,
            kernel: c.kernel.clone(),
            initrd: c.initrd.clone(),
            kernel_params: c.kernel_params.clone(),
            disable_vhost_net: c.disable_vhost_net,
            hotplug_ports: c.hotplug_ports,
            accel: c.accel,
            reclaim_freed_memory: c.reclaim_guest_freed_memory,
            tcg_tb_size_mib: c.tcg_tb_size,
        }
    }
}

/// Everything a supervisor needs to start a sandbox (persisted as `spec.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    /// Format version ([`crate::sandbox::STATE_VERSION`] when written; 1 when the file has
    /// none).
    #[serde(default = "sandnet_model::state_version::version_1")]
    pub version: u32,
    /// Sandbox id.
    pub id: String,
    /// The pod namespace (name or path); `None`: sandnet creates `sandnet-<id>`.
    pub netns: Option<String>,
    /// Interworking model.
    pub model: Model,
    /// Queues per NIC.
    pub queues: u16,
    /// The VM.
    pub vm: VmParams,
    /// DNS for the guest (defaults to the namespace's resolv.conf when `None`).
    #[serde(default)]
    pub dns: Option<Dns>,
    /// CNI to run in the pod namespace before attaching, if any.
    #[serde(default)]
    pub cni: Option<crate::sandbox::CniAttachment>,
    /// Follow the pod namespace after start (`[netmon] enable`).
    #[serde(default = "yes")]
    pub netmon: bool,
    /// Boot with no NIC while the network is prepared, then hot-plug every endpoint
    /// (`[runtime] hotplug_network`).
    #[serde(default)]
    pub hotplug_network: bool,
    /// Take a ready VM from the factory when one booted with these VM parameters is there.
    #[serde(default = "yes")]
    pub use_factory: bool,
    /// The shared directory for containers' files (`none` for a sandbox without
    /// containers, e.g. `sandnet run`'s).
    #[serde(default = "no_share")]
    pub shared_fs: SharedFs,
    /// The guest's host name; the sandbox id when `None` (a pod's: its hostname, which
    /// its containers show).
    #[serde(default)]
    pub hostname: Option<String>,
    /// What the host enforces on each NIC: anti-spoofing (`[runtime] guest_spoofing`) and
    /// rate limits (Kata's `[hypervisor.qemu] rx/tx_rate_limiter_max_rate`, CNI's
    /// `bandwidth`). A record written before policies existed enforced nothing.
    #[serde(default = "sandnet_model::TapPolicy::unenforced")]
    pub tap_policy: sandnet_model::TapPolicy,
}

fn yes() -> bool {
    true
}

fn no_share() -> SharedFs {
    SharedFs::None
}

/// What `run` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOutput {
    /// Sandbox id.
    pub id: String,
    /// The pod namespace.
    pub netns: String,
    /// The guest's interfaces, as its agent lists them after configuration.
    pub interfaces: Vec<Interface>,
    /// The guest's routes, likewise.
    pub routes: Vec<sandnet_model::Route>,
    /// Step timings in milliseconds: `attach_ms`, `image_ms`, `qemu_ms`, `boot_ms`,
    /// `agent_ms`, `network_ms` (attach + agent), `total_ms`.
    pub timings: BTreeMap<String, u64>,
    /// The accelerator QEMU runs with.
    pub accel: String,
    /// Why that accelerator, in one line.
    #[serde(default)]
    pub accel_reason: String,
}

/// Where a sandbox's spec is kept.
pub(crate) fn spec_path(paths: &SandboxPaths) -> PathBuf {
    paths.dir.join("spec.json")
}

impl RunSpec {
    /// Reads a sandbox's `spec.json`; one of a format version this build does not read is
    /// refused ([`SandboxError::Version`]).
    pub fn load(paths: &SandboxPaths) -> std::result::Result<RunSpec, SandboxError> {
        let p = spec_path(paths);
        let b = std::fs::read(&p).map_err(|source| SandboxError::Io {
            path: p.clone(),
            source,
        })?;
        crate::sandbox::parse_state(&p, &b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::{create_private_dir, SandboxError, STATE_VERSION};

    fn spec_json(version: Option<u32>) -> serde_json::Value {
        let mut v = serde_json::json!({
            "id": "sb1", "netns": null, "model": "tcfilter", "queues": 1,
            "vm": serde_json::to_value(VmParams::default()).unwrap()
        });
        if let Some(n) = version {
            v["version"] = n.into();
        }
        v
    }

    #[test]
    fn specs_without_a_version_are_version_1() {
        let root = sandnet_testkit::TempDir::new("specv1");
        let paths = SandboxPaths::new(&root, "sb1");
        create_private_dir(&paths.dir).unwrap();
        std::fs::write(spec_path(&paths), spec_json(None).to_string()).unwrap();
        let s = RunSpec::load(&paths).unwrap();
        assert_eq!(s.version, 1);
        assert_eq!(s.id, "sb1");
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["version"], STATE_VERSION);
    }

    #[test]
    fn specs_of_an_unknown_version_are_refused_naming_file_and_versions() {
        let root = sandnet_testkit::TempDir::new("specv99");
        let paths = SandboxPaths::new(&root, "sb1");
        create_private_dir(&paths.dir).unwrap();
        std::fs::write(spec_path(&paths), spec_json(Some(99)).to_string()).unwrap();
        let e = RunSpec::load(&paths).unwrap_err();
        assert!(
            matches!(e, SandboxError::Version { version: 99, .. }),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            format!(
                "{}: state format version 99, this sandnet reads 1",
                spec_path(&paths).display()
            )
        );
    }
}
