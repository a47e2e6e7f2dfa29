//! sandnet's configuration file: TOML in the shape of Kata Containers' `configuration.toml`.
//!
//! The keys Kata users already know keep their names and meaning — `[runtime]`
//! `internetworking_model` and `disable_new_netns`, `[hypervisor.qemu]` `path`, `kernel`,
//! `initrd`, `machine_type`, `kernel_params`, `default_vcpus`, `default_memory`,
//! `disable_vhost_net`, `rx_rate_limiter_max_rate`, `tx_rate_limiter_max_rate` — and sandnet
//! adds `[runtime] hotplug_network` and `guest_spoofing`, `[hypervisor.qemu] accel` and `hotplug_ports`, `[netmon] enable` (Kata 1.x's section) and a `[cni]` section (`conf_dir`, `bin_dir`,
//! `cache_dir`, `timeout`). A Kata file can be copied as it is: Kata settings sandnet does not use, other
//! hypervisors' sections and keys nobody knows are reported as [`Warning`]s (and logged with
//! `tracing::warn!`), never as errors. Values sandnet uses are checked: a bad one is a
//! [`ConfigError`] naming the key (`hypervisor.qemu.default_memory: must be at least 64 (MiB),
//! got 16`).
//!
//! Rules that apply to every key:
//! - a key left out takes its default ([`Config::default`] holds all of them);
//! - an empty string for a path or the machine type means "the default", as in Kata
//!   (`initrd = ""` is the same as no `initrd`);
//! - paths must be absolute, so the meaning of a file does not depend on the working directory.
//!
//! Where the file is found: [`Config::load`].

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sandnet_model::GuestSpoofing;
use sandnet_model::InterworkingModel as Model;
use sandnet_vm::AccelMode;
use thiserror::Error;
use toml::{Table, Value};

/// Where sandnet looks for its configuration when no file is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/sandnet/sandnet.toml";
/// Environment variable naming the configuration file; it replaces [`DEFAULT_CONFIG_PATH`]
/// (an explicitly given file still wins over it).
pub const CONFIG_ENV: &str = "SANDNET_CONFIG";
/// Default count of PCIe root ports reserved for hot plug (`hypervisor.qemu.hotplug_ports`).
pub const DEFAULT_HOTPLUG_PORTS: u32 = 4;
/// Most PCIe root ports that may be reserved for hot plug (`hypervisor.qemu.hotplug_ports`).
pub const MAX_HOTPLUG_PORTS: u32 = 32;
/// Default QEMU binary (`hypervisor.qemu.path`).
pub const DEFAULT_QEMU_PATH: &str = "/usr/bin/qemu-system-x86_64";
/// Default machine type (`hypervisor.qemu.machine_type`).
pub const DEFAULT_MACHINE_TYPE: &str = "q35";
/// Default number of vCPUs (`hypervisor.qemu.default_vcpus`).
pub const DEFAULT_VCPUS: u32 = 1;
/// Most vCPUs a sandbox may have (`hypervisor.qemu.default_vcpus`).
pub const MAX_VCPUS: u32 = 255;
/// Default guest memory in MiB (`hypervisor.qemu.default_memory`).
pub const DEFAULT_MEMORY_MIB: u32 = 256;
/// Least guest memory in MiB sandnet accepts (`hypervisor.qemu.default_memory`).
pub const MIN_MEMORY_MIB: u32 = 64;
/// Default TCG translation cache in MiB (`hypervisor.qemu.tcg_tb_size`): QEMU's own default
/// is 1 GiB, filled as code is translated; a boot fills 38 MiB, which 64 holds without a
/// flush, while 16 slowed ten guests booting at once (`cargo bench -p sandnet --bench memory`).
pub const DEFAULT_TCG_TB_SIZE_MIB: u32 = 64;
/// Largest `hypervisor.qemu.tcg_tb_size` accepted, in MiB.
pub const MAX_TCG_TB_SIZE_MIB: u32 = 4096;
/// How long one CNI plugin call may take by default (`cni.timeout`).
pub const DEFAULT_CNI_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// Default CNI network configuration directory (`cni.conf_dir`).
pub const DEFAULT_CNI_CONF_DIR: &str = "/etc/cni/net.d";

/// The whole configuration: plain data, every field filled (with defaults where the file is
/// silent). `Config::default()` is the documented defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// `[runtime]`.
    pub runtime: RuntimeConfig,
    /// `[hypervisor.qemu]`.
    pub qemu: QemuConfig,
    /// `[cni]`.
    pub cni: CniDirs,
    /// `[netmon]`.
    pub netmon: NetmonConfig,
    /// `[factory]`.
    pub factory: FactoryConfig,
}

/// Most VMs the factory may keep ready (`factory.vm_cache_number`).
pub const MAX_VM_CACHE: u32 = 64;

/// The `[factory]` section (Kata's VM cache).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FactoryConfig {
    /// `vm_cache_number` (default 0): how many ready VMs `sandnet factory init` keeps when
    /// no `--count` is given.
    pub vm_cache_number: u32,
}

/// The `[netmon]` section (Kata 1.x's name): the monitor that keeps a running guest's
/// network equal to its pod namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetmonConfig {
    /// `enable` (default true): follow the pod namespace after start (hot-plug new links,
    /// unplug deleted ones, apply address, MTU, route and neighbour changes).
    pub enable: bool,
}

impl Default for NetmonConfig {
    fn default() -> Self {
        NetmonConfig { enable: true }
    }
}

/// The `[runtime]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// `internetworking_model`: how each pod NIC is connected to the VM (default `tcfilter`;
    /// Kata's alias `default` means the same).
    pub internetworking_model: Model,
    /// `disable_new_netns`: do not create a network namespace for the sandbox (default
    /// false). As in Kata, only valid with `internetworking_model = "none"`.
    pub disable_new_netns: bool,
    /// `hotplug_network` (sandnet's own, Kata's VM-factory path): start QEMU with no NIC
    /// while the namespace and CNI are still being prepared, then hot-plug every endpoint
    /// (default false: cold plug on QEMU's command line).
    pub hotplug_network: bool,
    /// `guest_spoofing` (sandnet's own): `block` (default) drops what a guest sends from a
    /// MAC or address that is not its NIC's; `allow` lets it through, as Kata does.
    pub guest_spoofing: GuestSpoofing,
}

/// The `[hypervisor.qemu]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuConfig {
    /// `path`: the QEMU binary (default [`DEFAULT_QEMU_PATH`]).
    pub path: PathBuf,
    /// `kernel`: the guest kernel; `None` = the cache's default (sandnet's own kernel). A
    /// relative one-component value is a name in the kernel cache (`"debian-cloud"`,
    /// `"sandnet"`); an absolute one a kernel directory or image file.
    pub kernel: Option<PathBuf>,
    /// `initrd`: the guest initramfs; `None` = sandnet's own image (built by sandnet-vm).
    pub initrd: Option<PathBuf>,
    /// `machine_type`: QEMU's `-machine` (default [`DEFAULT_MACHINE_TYPE`]).
    pub machine_type: String,
    /// `kernel_params`: extra guest kernel arguments, appended after sandnet's defaults (so
    /// they take priority, as in Kata). Default empty.
    pub kernel_params: String,
    /// `default_vcpus`: vCPUs per sandbox, 1..=[`MAX_VCPUS`] (default 1). Unlike Kata, 0 and
    /// negative counts ("Kata's default", "all host CPUs") are rejected: give a number.
    pub default_vcpus: u32,
    /// `default_memory`: guest memory in MiB, at least [`MIN_MEMORY_MIB`] (default 256).
    pub default_memory: u32,
    /// `disable_vhost_net`: never use vhost-net for virtio-net (default false: use it where
    /// the host has `/dev/vhost-net`).
    pub disable_vhost_net: bool,
    /// `hotplug_ports` (sandnet's own): free PCIe root ports reserved at boot for hot-plugged
    /// NICs, 0..=[`MAX_HOTPLUG_PORTS`] (default [`DEFAULT_HOTPLUG_PORTS`]).
    pub hotplug_ports: u32,
    /// `accel` (sandnet's own): `auto` (default: KVM where a guest really runs under it,
    /// else TCG), `kvm` or `tcg`. `$SANDNET_ACCEL` overrides it.
    pub accel: AccelMode,
    /// `shared_fs` (Kata's key): how containers' files reach the guest of a sandbox that
    /// runs containers (the shim's): `virtio-fs` (default), `virtio-9p` or `none`.
    pub shared_fs: crate::shared::SharedFs,
    /// `reclaim_guest_freed_memory` (Kata's key): a virtio balloon with free page reporting,
    /// so memory the guest frees goes back to the host. Unlike Kata, on by default.
    pub reclaim_guest_freed_memory: bool,
    /// `tcg_tb_size` (sandnet's own): MiB of TCG translation cache when the VM runs under TCG
    /// (default [`DEFAULT_TCG_TB_SIZE_MIB`]); 0 leaves QEMU's own default (1 GiB).
    pub tcg_tb_size: u32,
    /// `rx_rate_limiter_max_rate` (Kata's key): bits/s into the guest, on every NIC of the
    /// sandbox; 0 (the default) is no limit.
    pub rx_rate_limiter_max_rate: u64,
    /// `tx_rate_limiter_max_rate` (Kata's key): bits/s out of the guest, on every NIC of
    /// the sandbox; 0 (the default) is no limit.
    pub tx_rate_limiter_max_rate: u64,
}

/// The `[cni]` section (sandnet's own): where CNI network configurations, plugins and the
/// result cache are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniDirs {
    /// `conf_dir`: network configurations (default [`DEFAULT_CNI_CONF_DIR`]).
    pub conf_dir: PathBuf,
    /// `bin_dir` (a string or a list; containerd's `bin_dirs` is accepted too): plugin
    /// directories searched in order (default `/opt/cni/bin`, then Debian's `/usr/lib/cni`).
    pub bin_dirs: Vec<PathBuf>,
    /// `cache_dir`: libcni-layout result cache (default `/var/lib/cni`).
    pub cache_dir: PathBuf,
    /// `timeout`: seconds one plugin call may take before it is killed (default
    /// [`DEFAULT_CNI_TIMEOUT`]; a number, fractions allowed).
    pub timeout: std::time::Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            internetworking_model: Model::TcFilter,
            disable_new_netns: false,
            hotplug_network: false,
            guest_spoofing: GuestSpoofing::Block,
        }
    }
}

impl Default for QemuConfig {
    fn default() -> Self {
        QemuConfig {
            path: PathBuf::from(DEFAULT_QEMU_PATH),
            kernel: None,
            initrd: None,
            machine_type: DEFAULT_MACHINE_TYPE.to_string(),
            kernel_params: String::new(),
            default_vcpus: DEFAULT_VCPUS,
            default_memory: DEFAULT_MEMORY_MIB,
            disable_vhost_net: false,
            hotplug_ports: DEFAULT_HOTPLUG_PORTS,
            accel: AccelMode::Auto,
            shared_fs: crate::shared::SharedFs::default(),
            reclaim_guest_freed_memory: true,
            tcg_tb_size: DEFAULT_TCG_TB_SIZE_MIB,
            rx_rate_limiter_max_rate: 0,
            tx_rate_limiter_max_rate: 0,
        }
    }
}

impl Default for CniDirs {
    fn default() -> Self {
        CniDirs {
            conf_dir: PathBuf::from(DEFAULT_CNI_CONF_DIR),
            bin_dirs: sandnet_cni::DEFAULT_BIN_DIRS
                .iter()
                .map(PathBuf::from)
                .collect(),
            cache_dir: PathBuf::from(sandnet_cni::DEFAULT_CACHE_DIR),
            timeout: DEFAULT_CNI_TIMEOUT,
        }
    }
}

/// Why a configuration could not be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file is not valid TOML.
    #[error("{origin}:{line}:{column}: TOML syntax error: {message}")]
    Syntax {
        /// The file (or other origin) given to the parser.
        origin: String,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column (in characters) of the error.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// A key holds a value of the wrong TOML type.
    #[error("{origin}: {key}: expected {expected}, found {found}")]
    WrongType {
        /// The file (or other origin).
        origin: String,
        /// Full key path, e.g. `runtime.disable_new_netns`.
        key: String,
        /// What was expected ("a boolean").
        expected: &'static str,
        /// The TOML type found ("string").
        found: &'static str,
    },
    /// A key holds a value of the right type that sandnet cannot use.
    #[error("{origin}: {key}: {message}")]
    Invalid {
        /// The file (or other origin).
        origin: String,
        /// Full key path, e.g. `hypervisor.qemu.default_memory`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// The file could not be read (a given file that does not exist is this error too).
    #[error("cannot read configuration file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

impl ConfigError {
    /// The full key path the error is about, if it is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::WrongType { key, .. } | ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::Syntax { .. } | ConfigError::Read { .. } => None,
        }
    }
}

/// A key that was ignored, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Full key path, e.g. `hypervisor.qemu.enable_iommu` (or a section: `agent`).
    pub key: String,
    /// Why it was ignored.
    pub kind: WarningKind,
}

/// Why a key was ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WarningKind {
    /// Neither sandnet nor Kata/containerd knows the key (likely a typo).
    Unknown {
        /// A supported key of the same section with a similar name.
        did_you_mean: Option<&'static str>,
    },
    /// A Kata Containers (or containerd) setting that sandnet has no use for.
    NotUsed,
    /// A section for a hypervisor other than QEMU.
    OtherHypervisor,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.key)?;
        match &self.kind {
            WarningKind::Unknown {
                did_you_mean: Some(s),
            } => write!(f, "unknown key, ignored (did you mean {s:?}?)"),
            WarningKind::Unknown { did_you_mean: None } => f.write_str("unknown key, ignored"),
            WarningKind::NotUsed => f.write_str("not used by sandnet, ignored"),
            WarningKind::OtherHypervisor => {
                f.write_str("sandnet only runs QEMU ([hypervisor.qemu]); section ignored")
            }
        }
    }
}

impl Config {
    /// Parses a configuration from TOML text. `origin` (usually the file's path) only
    /// labels errors and log lines. Keys that are ignored come back as warnings (each is
    /// also logged with `tracing::warn!`).
    pub fn from_toml_str(text: &str, origin: &str) -> Result<(Config, Vec<Warning>), ConfigError> {
        let table: Table = toml::from_str(text).map_err(|e| syntax_error(text, origin, &e))?;
        let mut p = Parser {
            origin,
            warnings: Vec::new(),
        };
        let mut config = Config::default();
        for (key, value) in &table {
            match key.as_str() {
                "runtime" => p.runtime(p.table(value, key)?, &mut config.runtime)?,
                "hypervisor" => {
                    for (name, hv) in p.table(value, key)? {
                        let path = format!("hypervisor.{name}");
                        if name == "qemu" {
                            p.qemu(p.table(hv, &path)?, &mut config.qemu)?;
                        } else {
                            p.warn(path, WarningKind::OtherHypervisor);
                        }
                    }
                }
                "cni" => p.cni(p.table(value, key)?, &mut config.cni)?,
                "netmon" => p.netmon(p.table(value, key)?, &mut config.netmon)?,
                "factory" => p.factory(p.table(value, key)?, &mut config.factory)?,
                k => p.ignore(key.clone(), k, SECTIONS, KATA_SECTIONS),
            }
        }
        if config.runtime.disable_new_netns && config.runtime.internetworking_model != Model::None {
            return Err(p.invalid(
                "runtime.disable_new_netns",
                format!(
                    "true is only valid with runtime.internetworking_model = \"none\" (the tap \
                     then lives in the host's network namespace), but the model is {:?}",
                    config.runtime.internetworking_model.as_str()
                ),
            ));
        }
        for w in &p.warnings {
            tracing::warn!(origin, key = %w.key, "configuration: {w}");
        }
        Ok((config, p.warnings))
    }

    /// Reads the configuration sandnet should use:
    /// 1. `path`, when given (e.g. from `--config`): it must exist;
    /// 2. else the file named by `$SANDNET_CONFIG` ([`CONFIG_ENV`]) when set and not empty:
    ///    it must exist too;
    /// 3. else [`DEFAULT_CONFIG_PATH`] if it exists;
    /// 4. else the built-in defaults ([`Config::default`]), with no warnings.
    pub fn load(path: Option<&Path>) -> Result<(Config, Vec<Warning>), ConfigError> {
        let env = std::env::var_os(CONFIG_ENV);
        Config::load_with(path, env.as_deref(), Path::new(DEFAULT_CONFIG_PATH))
    }

    /// [`Config::load`] with the environment value and the default path passed in (for
    /// tests, and callers with their own default location).
    pub fn load_with(
        path: Option<&Path>,
        env: Option<&OsStr>,
        default_path: &Path,
    ) -> Result<(Config, Vec<Warning>), ConfigError> {
        let (file, required) = match (path, env.filter(|e| !e.is_empty())) {
            (Some(p), _) => (p, true),
            (None, Some(e)) => (Path::new(e), true),
            (None, None) => (default_path, false),
        };
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) if !required && e.kind() == io::ErrorKind::NotFound => {
                tracing::debug!(path = %file.display(), "no configuration file; using defaults");
                return Ok((Config::default(), Vec::new()));
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: file.to_path_buf(),
                    source,
                })
            }
        };
        tracing::debug!(path = %file.display(), "reading configuration");
        Config::from_toml_str(&text, &file.display().to_string())
    }
}

mod keys;
mod parse;
mod policy;
#[cfg(test)]
mod tests;

use keys::{KATA_SECTIONS, SECTIONS};
use parse::{syntax_error, Parser};
