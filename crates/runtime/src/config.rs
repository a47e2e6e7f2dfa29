//! sandnet's configuration file: TOML in the shape of Kata Containers' `configuration.toml`.
//!
//! The keys Kata users already know keep their names and meaning — `[runtime]`
//! `internetworking_model` and `disable_new_netns`, `[hypervisor.qemu]` `path`, `kernel`,
//! `initrd`, `machine_type`, `kernel_params`, `default_vcpus`, `default_memory`,
//! `disable_vhost_net` — and sandnet adds a `[cni]` section (`conf_dir`, `bin_dir`,
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

use sandnet_model::InterworkingModel;
use thiserror::Error;
use toml::{Table, Value};

/// Where sandnet looks for its configuration when no file is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/sandnet/sandnet.toml";
/// Environment variable naming the configuration file; it replaces [`DEFAULT_CONFIG_PATH`]
/// (an explicitly given file still wins over it).
pub const CONFIG_ENV: &str = "SANDNET_CONFIG";
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
}

/// The `[runtime]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// `internetworking_model`: how each pod NIC is connected to the VM (default `tcfilter`;
    /// Kata's alias `default` means the same).
    pub internetworking_model: InterworkingModel,
    /// `disable_new_netns`: do not create a network namespace for the sandbox (default
    /// false). As in Kata, only valid with `internetworking_model = "none"`.
    pub disable_new_netns: bool,
}

/// The `[hypervisor.qemu]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuConfig {
    /// `path`: the QEMU binary (default [`DEFAULT_QEMU_PATH`]).
    pub path: PathBuf,
    /// `kernel`: the guest kernel; `None` = sandnet's own (found or fetched by sandnet-vm).
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
            internetworking_model: InterworkingModel::TcFilter,
            disable_new_netns: false,
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

/// Top-level sections sandnet reads.
const SECTIONS: &[&str] = &["runtime", "hypervisor", "cni"];
/// Top-level sections of Kata's file (current and 1.x) that sandnet ignores.
const KATA_SECTIONS: &[&str] = &["agent", "factory", "netmon", "proxy", "shim", "image"];

/// `[runtime]` keys sandnet reads.
const RUNTIME_KEYS: &[&str] = &["internetworking_model", "disable_new_netns"];
/// `[runtime]` keys of Kata's file that sandnet ignores.
const KATA_RUNTIME_KEYS: &[&str] = &[
    "enable_debug",
    "disable_guest_seccomp",
    "enable_vcpus_pinning",
    "guest_selinux_label",
    "enable_tracing",
    "jaeger_endpoint",
    "jaeger_user",
    "jaeger_password",
    "sandbox_cgroup_only",
    "static_sandbox_resource_mgmt",
    "sandbox_bind_mounts",
    "vfio_mode",
    "disable_guest_empty_dir",
    "experimental",
    "enable_pprof",
    "create_container_timeout",
    "dan_conf",
    "enable_cpu_quota",
    "enable_cgroup_swap_control",
    "enable_metrics",
    "use_vsock",
    "name",
    "hypervisor_name",
    "agent_name",
    "log_level",
];

/// `[hypervisor.qemu]` keys sandnet reads.
const QEMU_KEYS: &[&str] = &[
    "path",
    "kernel",
    "initrd",
    "machine_type",
    "kernel_params",
    "default_vcpus",
    "default_memory",
    "disable_vhost_net",
];
/// `[hypervisor.qemu]` keys of Kata's file that sandnet ignores.
const KATA_QEMU_KEYS: &[&str] = &[
    "image",
    "rootfs_type",
    "confidential_guest",
    "sev_snp_guest",
    "rootless",
    "enable_annotations",
    "valid_hypervisor_paths",
    "firmware",
    "firmware_volume",
    "machine_accelerators",
    "seccompsandbox",
    "cpu_features",
    "default_maxvcpus",
    "default_bridges",
    "memory_slots",
    "default_maxmemory",
    "memory_offset",
    "enable_virtio_mem",
    "disable_block_device_use",
    "shared_fs",
    "virtio_fs_daemon",
    "valid_virtio_fs_daemon_paths",
    "virtio_fs_cache_size",
    "virtio_fs_queue_size",
    "virtio_fs_extra_args",
    "virtio_fs_cache",
    "virtio_fs_inode_file_handles",
    "block_device_driver",
    "block_device_aio",
    "block_device_cache_set",
    "block_device_cache_direct",
    "block_device_cache_noflush",
    "enable_iothreads",
    "enable_mem_prealloc",
    "reclaim_guest_freed_memory",
    "enable_hugepages",
    "enable_vhost_user_store",
    "vhost_user_store_path",
    "enable_iommu",
    "enable_iommu_platform",
    "valid_vhost_user_store_paths",
    "vhost_user_reconnect_timeout_sec",
    "file_mem_backend",
    "valid_file_mem_backends",
    "pflashes",
    "enable_debug",
    "extra_monitor_socket",
    "disable_nesting_checks",
    "msize_9p",
    "disable_image_nvdimm",
    "hot_plug_vfio",
    "cold_plug_vfio",
    "pcie_root_port",
    "entropy_source",
    "valid_entropy_sources",
    "guest_hook_path",
    "rx_rate_limiter_max_rate",
    "tx_rate_limiter_max_rate",
    "guest_memory_dump_path",
    "guest_memory_dump_paging",
    "enable_guest_swap",
    "use_legacy_serial",
    "disable_selinux",
    "disable_guest_selinux",
    "enable_swap",
    "use_vsock",
    "hotplug_vfio_on_root_bus",
    "enable_template",
    "kernel_verity_params",
    "ctlpath",
];

/// `[cni]` keys sandnet reads (`bin_dirs` is containerd 2's spelling of `bin_dir`).
const CNI_KEYS: &[&str] = &["conf_dir", "bin_dir", "bin_dirs", "cache_dir", "timeout"];
/// Keys of containerd's CRI `cni` section that sandnet ignores.
const CONTAINERD_CNI_KEYS: &[&str] = &[
    "max_conf_num",
    "conf_template",
    "ip_pref",
    "setup_serially",
    "use_internal_loopback",
    "network_plugin_setup_concurrency",
];

/// Parsing state: where the text came from and what has been ignored so far.
struct Parser<'a> {
    origin: &'a str,
    warnings: Vec<Warning>,
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
                k => p.ignore(key.clone(), k, SECTIONS, KATA_SECTIONS),
            }
        }
        if config.runtime.disable_new_netns
            && config.runtime.internetworking_model != InterworkingModel::None
        {
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

impl Parser<'_> {
    fn runtime(&mut self, t: &Table, out: &mut RuntimeConfig) -> Result<(), ConfigError> {
        for (k, v) in t {
            let key = format!("runtime.{k}");
            match k.as_str() {
                "internetworking_model" => {
                    let name = self.string(v, &key)?;
                    // Kata's own alias for its default model, which is tcfilter.
                    let name = if name == "default" { "tcfilter" } else { name };
                    out.internetworking_model = InterworkingModel::from_str(name)
                        .map_err(|e| self.invalid(&key, e.to_string()))?;
                }
                "disable_new_netns" => out.disable_new_netns = self.boolean(v, &key)?,
                _ => self.ignore(key, k, RUNTIME_KEYS, KATA_RUNTIME_KEYS),
            }
        }
        Ok(())
    }

    fn qemu(&mut self, t: &Table, out: &mut QemuConfig) -> Result<(), ConfigError> {
        for (k, v) in t {
            let key = format!("hypervisor.qemu.{k}");
            match k.as_str() {
                "path" => {
                    if let Some(p) = self.path(v, &key)? {
                        out.path = p;
                    }
                }
                "kernel" => out.kernel = self.path(v, &key)?,
                "initrd" => out.initrd = self.path(v, &key)?,
                "machine_type" => {
                    let m = self.string(v, &key)?;
                    if m.contains(|c: char| c == ',' || c.is_whitespace()) {
                        return Err(self.invalid(
                            &key,
                            format!(
                                "{m:?} is not a machine type name (no commas or spaces; \
                                 e.g. \"q35\")"
                            ),
                        ));
                    }
                    if !m.is_empty() {
                        out.machine_type = m.to_string();
                    }
                }
                "kernel_params" => out.kernel_params = self.string(v, &key)?.trim().to_string(),
                "default_vcpus" => {
                    let n = self.integer(v, &key)?;
                    if n < 1 {
                        return Err(self.invalid(
                            &key,
                            format!(
                                "must be at least 1, got {n} (Kata reads 0 as its default and a \
                                 negative count as \"all host CPUs\"; sandnet needs the number)"
                            ),
                        ));
                    }
                    if n > i64::from(MAX_VCPUS) {
                        return Err(
                            self.invalid(&key, format!("must be at most {MAX_VCPUS}, got {n}"))
                        );
                    }
                    out.default_vcpus = n as u32;
                }
                "default_memory" => {
                    let n = self.integer(v, &key)?;
                    if n < i64::from(MIN_MEMORY_MIB) {
                        return Err(self.invalid(
                            &key,
                            format!("must be at least {MIN_MEMORY_MIB} (MiB), got {n}"),
                        ));
                    }
                    out.default_memory = u32::try_from(n).map_err(|_| {
                        self.invalid(&key, format!("must be at most {} (MiB), got {n}", u32::MAX))
                    })?;
                }
                "disable_vhost_net" => out.disable_vhost_net = self.boolean(v, &key)?,
                _ => self.ignore(key, k, QEMU_KEYS, KATA_QEMU_KEYS),
            }
        }
        Ok(())
    }

    fn cni(&mut self, t: &Table, out: &mut CniDirs) -> Result<(), ConfigError> {
        if t.contains_key("bin_dir") && t.contains_key("bin_dirs") {
            return Err(self.invalid(
                "cni.bin_dirs",
                "cni.bin_dir and cni.bin_dirs are the same setting; give only one".into(),
            ));
        }
        for (k, v) in t {
            let key = format!("cni.{k}");
            match k.as_str() {
                "conf_dir" => {
                    if let Some(p) = self.path(v, &key)? {
                        out.conf_dir = p;
                    }
                }
                "cache_dir" => {
                    if let Some(p) = self.path(v, &key)? {
                        out.cache_dir = p;
                    }
                }
                "timeout" => {
                    let secs = match v {
                        Value::Integer(n) => *n as f64,
                        Value::Float(f) => *f,
                        other => return Err(self.wrong_type(&key, "a number of seconds", other)),
                    };
                    if !(secs > 0.0 && secs <= 3600.0) {
                        return Err(self.invalid(
                            &key,
                            format!("must be more than 0 and at most 3600 (seconds), got {secs}"),
                        ));
                    }
                    out.timeout = std::time::Duration::from_secs_f64(secs);
                }
                "bin_dir" | "bin_dirs" => match v {
                    Value::Array(items) => {
                        if items.is_empty() {
                            return Err(self.invalid(
                                &key,
                                "must name at least one directory (leave it out for the \
                                 defaults)"
                                    .into(),
                            ));
                        }
                        let mut dirs = Vec::with_capacity(items.len());
                        for (i, item) in items.iter().enumerate() {
                            let item_key = format!("{key}[{i}]");
                            match self.path(item, &item_key)? {
                                Some(p) => dirs.push(p),
                                None => {
                                    return Err(self.invalid(&item_key, "is empty".into()));
                                }
                            }
                        }
                        out.bin_dirs = dirs;
                    }
                    Value::String(_) => {
                        if let Some(p) = self.path(v, &key)? {
                            out.bin_dirs = vec![p];
                        }
                    }
                    other => {
                        return Err(self.wrong_type(&key, "a string or an array of strings", other))
                    }
                },
                _ => self.ignore(key, k, CNI_KEYS, CONTAINERD_CNI_KEYS),
            }
        }
        Ok(())
    }

    /// Records an ignored key: a known foreign setting, or an unknown one (with a suggestion
    /// from `supported` when one is close).
    fn ignore(&mut self, key: String, name: &str, supported: &[&'static str], known: &[&str]) {
        let kind = if known.contains(&name) {
            WarningKind::NotUsed
        } else {
            WarningKind::Unknown {
                did_you_mean: supported
                    .iter()
                    .copied()
                    .filter(|s| edit_distance(s, name) <= 2)
                    .min_by_key(|s| edit_distance(s, name)),
            }
        };
        self.warn(key, kind);
    }

    fn warn(&mut self, key: String, kind: WarningKind) {
        self.warnings.push(Warning { key, kind });
    }

    fn table<'v>(&self, v: &'v Value, key: &str) -> Result<&'v Table, ConfigError> {
        v.as_table()
            .ok_or_else(|| self.wrong_type(key, "a table (section)", v))
    }

    fn string<'v>(&self, v: &'v Value, key: &str) -> Result<&'v str, ConfigError> {
        v.as_str()
            .ok_or_else(|| self.wrong_type(key, "a string", v))
    }

    fn boolean(&self, v: &Value, key: &str) -> Result<bool, ConfigError> {
        v.as_bool()
            .ok_or_else(|| self.wrong_type(key, "a boolean", v))
    }

    fn integer(&self, v: &Value, key: &str) -> Result<i64, ConfigError> {
        v.as_integer()
            .ok_or_else(|| self.wrong_type(key, "an integer", v))
    }

    /// A path: `None` for the empty string ("the default"), an error unless absolute.
    fn path(&self, v: &Value, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        let s = self.string(v, key)?;
        if s.is_empty() {
            return Ok(None);
        }
        let p = PathBuf::from(s);
        if p.is_relative() {
            return Err(self.invalid(key, format!("must be an absolute path, got {s:?}")));
        }
        Ok(Some(p))
    }

    fn wrong_type(&self, key: &str, expected: &'static str, found: &Value) -> ConfigError {
        ConfigError::WrongType {
            origin: self.origin.to_string(),
            key: key.to_string(),
            expected,
            found: found.type_str(),
        }
    }

    fn invalid(&self, key: &str, message: String) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.to_string(),
            key: key.to_string(),
            message,
        }
    }
}

/// A TOML parse error with the 1-based line and column of where it happened.
fn syntax_error(text: &str, origin: &str, e: &toml::de::Error) -> ConfigError {
    let (line, column) = match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            (line, before[line_start..].chars().count() + 1)
        }
        None => (1, 1),
    };
    ConfigError::Syntax {
        origin: origin.to_string(),
        line,
        column,
        // toml puts "expected ..." on a second line; keep errors to one line.
        message: e
            .message()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; "),
    }
}

/// Levenshtein distance between two short ASCII-ish names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<(Config, Vec<Warning>), ConfigError> {
        Config::from_toml_str(text, "test.toml")
    }

    fn err(text: &str) -> ConfigError {
        match parse(text) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn empty_text_is_the_defaults() {
        let (c, w) = parse("").unwrap();
        assert_eq!(c, Config::default());
        assert!(w.is_empty());
        assert_eq!(c.runtime.internetworking_model, InterworkingModel::TcFilter);
        assert!(!c.runtime.disable_new_netns);
        assert_eq!(c.qemu.path, Path::new("/usr/bin/qemu-system-x86_64"));
        assert_eq!(c.qemu.kernel, None);
        assert_eq!(c.qemu.initrd, None);
        assert_eq!(c.qemu.machine_type, "q35");
        assert_eq!(c.qemu.kernel_params, "");
        assert_eq!(c.qemu.default_vcpus, 1);
        assert_eq!(c.qemu.default_memory, 256);
        assert!(!c.qemu.disable_vhost_net);
        assert_eq!(c.cni.conf_dir, Path::new("/etc/cni/net.d"));
        assert_eq!(
            c.cni.bin_dirs,
            vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
        );
        assert_eq!(c.cni.cache_dir, Path::new("/var/lib/cni"));
        assert_eq!(c.cni.timeout, std::time::Duration::from_secs(60));
    }

    #[test]
    fn cni_timeout_in_seconds() {
        let (c, w) = parse("[cni]\ntimeout = 2.5\n").unwrap();
        assert!(w.is_empty());
        assert_eq!(c.cni.timeout, std::time::Duration::from_millis(2500));
        let (c, _) = parse("[cni]\ntimeout = 3\n").unwrap();
        assert_eq!(c.cni.timeout, std::time::Duration::from_secs(3));
        for bad in ["0", "-1", "\"5s\"", "7200"] {
            let e = err(&format!("[cni]\ntimeout = {bad}\n"));
            assert_eq!(e.key(), Some("cni.timeout"), "{bad}: {e}");
        }
    }

    #[test]
    fn syntax_error_names_origin_line_and_column() {
        let e = err("[runtime]\ndisable_new_netns = false\ninternetworking_model = \n");
        match &e {
            ConfigError::Syntax {
                origin,
                line,
                column,
                ..
            } => {
                assert_eq!(origin, "test.toml");
                assert_eq!(*line, 3);
                assert!(*column > 1, "{e}");
            }
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().starts_with("test.toml:3:"), "{e}");
        assert!(!e.to_string().contains('\n'), "{e}");
    }

    #[test]
    fn default_alias_is_tcfilter() {
        let (c, _) = parse("[runtime]\ninternetworking_model = \"default\"\n").unwrap();
        assert_eq!(c.runtime.internetworking_model, InterworkingModel::TcFilter);
    }

    #[test]
    fn typo_gets_a_suggestion_and_kata_keys_do_not() {
        let (_, w) = parse(
            "[hypervisor.qemu]\ndefault_memroy = 512\nenable_iommu = true\n\
             [runtme]\nx = 1\n",
        )
        .unwrap();
        assert_eq!(
            w,
            vec![
                Warning {
                    key: "hypervisor.qemu.default_memroy".into(),
                    kind: WarningKind::Unknown {
                        did_you_mean: Some("default_memory")
                    },
                },
                Warning {
                    key: "hypervisor.qemu.enable_iommu".into(),
                    kind: WarningKind::NotUsed,
                },
                Warning {
                    key: "runtme".into(),
                    kind: WarningKind::Unknown {
                        did_you_mean: Some("runtime")
                    },
                },
            ]
        );
        assert!(w[0].to_string().contains("did you mean \"default_memory\""));
    }

    #[test]
    fn empty_strings_mean_defaults() {
        let (c, w) = parse(
            "[hypervisor.qemu]\npath = \"\"\nkernel = \"\"\ninitrd = \"\"\nmachine_type = \"\"\n\
             [cni]\nconf_dir = \"\"\nbin_dir = \"\"\ncache_dir = \"\"\n",
        )
        .unwrap();
        assert_eq!(c, Config::default());
        assert!(w.is_empty());
    }

    #[test]
    fn edit_distance_basics() {
        assert_eq!(edit_distance("kernel", "kernel"), 0);
        assert_eq!(edit_distance("kernal", "kernel"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("default_memroy", "default_memory"), 2);
    }

    #[test]
    fn key_accessor() {
        let e = err("[runtime]\ndisable_new_netns = 1\n");
        assert_eq!(e.key(), Some("runtime.disable_new_netns"));
        assert_eq!(err("[x").key(), None);
    }
}
