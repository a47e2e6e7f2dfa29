//! A CNI executor: runs CNI plugins the way libcni does (spec 1.1.0), so that real plugins
//! (Debian's `containernetworking-plugins`, or any other) work unchanged.
//!
//! - [`NetworkConfigList`] loads a network from a conf dir (`*.conflist`, legacy `*.conf` /
//!   `*.json`), selecting the highest supported version from `cniVersion`/`cniVersions`.
//! - [`CniConfig`] finds plugins in its bin dirs and runs ADD (in list order, chaining
//!   `prevResult`), DEL (in reverse order, with the cached result as `prevResult`), CHECK,
//!   STATUS, GC and VERSION, each plugin a child process with a timeout, optionally inside a
//!   given network namespace.
//! - [`CniResult`] holds a result of any spec version; conversion back to any version gives
//!   the `prevResult` a plugin expects.
//! - Results are cached in libcni's layout (`<cache>/results/<net>-<cid>-<ifname>`,
//!   `cniCacheV1`), so a DEL after a restart, or by another CNI tool, has its `prevResult`.
//!
//! **Every ADD must eventually be followed by a DEL**, also when the ADD fails: when a plugin
//! in the chain fails, [`CniConfig::add`] returns the error without undoing what the plugins
//! before it did; the caller then runs [`CniConfig::del`] (DEL is idempotent and works with or
//! without a cache entry). The cache entry is written *before* the first plugin runs, so an
//! ADD interrupted by a crash is still listed by [`CniConfig::cached_attachments`] and
//! cleaned up by [`CniConfig::gc`].
//!
//! The operations are `async` and need a Tokio runtime with the I/O and time drivers
//! (`#[tokio::main]` / `Runtime::new()` enable them); a [`CniConfig`] is cheap to clone and
//! may run operations for different attachments concurrently. The spec forbids concurrent
//! operations on the *same* attachment, and GC concurrently with ADD/DEL of its network:
//! that ordering is the caller's.
//!
//! To run the plugins in the network namespace the program was started in (where the
//! `bridge` plugin should put `cni0`) whatever thread calls, open it once at start-up:
//! `CniConfig::default().with_plugin_netns_path(Path::new("/proc/self/ns/net"))`.

#![warn(missing_docs)]

mod cache;
mod conf;
mod error;
mod exec;
mod result;
mod version;

pub use cache::{CacheEntry, CACHE_KIND};
pub use conf::{ConfFile, NetworkConfigList, PluginConf};
pub use error::CniError;
pub use result::{CniResult, ResultDns, ResultInterface, ResultIp, ResultRoute};
pub use version::{SpecVersion, CURRENT_VERSION, SUPPORTED_VERSIONS};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use version::at_least;

/// Well-known CNI error codes (spec section 5).
pub mod error_code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid environment variables.
    pub const INVALID_ENVIRONMENT: u32 = 4;
    /// I/O failure.
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content.
    pub const DECODING_FAILURE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    /// Try again later.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// The plugin is not available.
    pub const PLUGIN_NOT_AVAILABLE: u32 = 50;
    /// The plugin is not available, existing containers may have limited connectivity.
    pub const LIMITED_CONNECTIVITY: u32 = 51;
}

/// The bin dirs searched by default: the upstream location, then Debian's.
pub const DEFAULT_BIN_DIRS: &[&str] = &["/opt/cni/bin", "/usr/lib/cni"];
/// libcni's default cache dir.
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/cni";
/// How long a plugin may run by default before it is killed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The executor's settings: where plugins are, where the cache is, how long a plugin may
/// run, and in which network namespace plugins run.
#[derive(Debug, Clone)]
pub struct CniConfig {
    /// Directories searched for plugin binaries, in order (also passed as `CNI_PATH`).
    pub bin_dirs: Vec<PathBuf>,
    /// The cache dir (`results/` goes below it).
    pub cache_dir: PathBuf,
    /// A plugin still running after this long is killed, with its process group.
    pub timeout: Duration,
    /// When set, every plugin runs in this network namespace (entered with `setns` between
    /// fork and exec); otherwise in the caller's.
    pub plugin_netns: Option<Arc<OwnedFd>>,
}

impl Default for CniConfig {
    fn default() -> Self {
        CniConfig {
            bin_dirs: DEFAULT_BIN_DIRS.iter().map(PathBuf::from).collect(),
            cache_dir: PathBuf::from(DEFAULT_CACHE_DIR),
            timeout: DEFAULT_TIMEOUT,
            plugin_netns: None,
        }
    }
}

/// The per-attachment parameters of ADD, DEL and CHECK (libcni's `RuntimeConf`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Runtime {
    /// `CNI_CONTAINERID`: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
    pub container_id: String,
    /// `CNI_NETNS`: the container's netns path (e.g. `/run/netns/NAME`).
    pub netns_path: PathBuf,
    /// `CNI_IFNAME`: the interface to create in the container (at most 15 bytes).
    pub ifname: String,
    /// `CNI_ARGS`, as key/value pairs (joined as `K=V;K2=V2`).
    pub args: Vec<(String, String)>,
    /// Capability arguments (`portMappings`, `bandwidth`, `ips`, `mac`, …); each is passed in
    /// `runtimeConfig` only to plugins that declare that capability.
    pub capability_args: Map<String, Value>,
}

impl Runtime {
    /// An attachment of `container_id` to the netns at `netns_path` as `ifname`.
    pub fn new(
        container_id: impl Into<String>,
        netns_path: impl Into<PathBuf>,
        ifname: impl Into<String>,
    ) -> Self {
        Runtime {
            container_id: container_id.into(),
            netns_path: netns_path.into(),
            ifname: ifname.into(),
            ..Default::default()
        }
    }

    /// Adds a `CNI_ARGS` pair.
    pub fn with_arg(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.args.push((key.into(), value.into()));
        self
    }

    /// Adds a capability argument.
    pub fn with_capability(mut self, name: impl Into<String>, value: Value) -> Self {
        self.capability_args.insert(name.into(), value);
        self
    }

    fn validate(&self) -> Result<(), CniError> {
        let bad = |what, value: &str, reason| CniError::InvalidParameter {
            what,
            value: value.to_string(),
            reason,
        };
        if self.container_id.is_empty() {
            return Err(bad("container ID", "", "it is empty"));
        }
        if !conf::valid_name(&self.container_id) {
            return Err(bad(
                "container ID",
                &self.container_id,
                "it must start with a letter or digit and contain only letters, digits, '_', '.', '-'",
            ));
        }
        let ifn = &self.ifname;
        if ifn.is_empty() {
            return Err(bad("interface name", ifn, "it is empty"));
        }
        if ifn.len() > 15 {
            return Err(bad("interface name", ifn, "it is longer than 15 bytes"));
        }
        if ifn == "." || ifn == ".." {
            return Err(bad("interface name", ifn, "it is . or .."));
        }
        if ifn
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
        {
            return Err(bad(
                "interface name",
                ifn,
                "it contains '/', ':' or whitespace",
            ));
        }
        for (k, v) in &self.args {
            if k.is_empty() || k.contains(['=', ';']) {
                return Err(bad("CNI_ARGS key", k, "it is empty or contains '=' or ';'"));
            }
            if v.contains(';') {
                return Err(bad("CNI_ARGS value", v, "it contains ';'"));
            }
        }
        Ok(())
    }

    fn cni_args(&self) -> String {
        let v: Vec<String> = self.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        v.join(";")
    }
}

/// An attachment that is still valid, for GC (`cni.dev/valid-attachments`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GcAttachment {
    /// `CNI_CONTAINERID` of its ADD.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// `CNI_IFNAME` of its ADD.
    #[serde(rename = "ifname")]
    pub ifname: String,
}

/// An attachment found in the cache.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedAttachment {
    /// The cache file.
    pub path: PathBuf,
    /// The network name.
    pub network: String,
    /// The container ID.
    pub container_id: String,
    /// The interface name.
    pub ifname: String,
    /// The netns path given to ADD.
    pub netns_path: PathBuf,
    /// `CNI_ARGS` given to ADD.
    pub args: Vec<(String, String)>,
    /// Capability arguments given to ADD.
    pub capability_args: Map<String, Value>,
    /// The network configuration list's bytes at ADD time.
    pub config: Vec<u8>,
    /// The final ADD result, when the ADD completed.
    pub result: Option<Value>,
}

impl CachedAttachment {
    /// The runtime parameters to DEL this attachment with.
    pub fn runtime(&self) -> Runtime {
        Runtime {
            container_id: self.container_id.clone(),
            netns_path: self.netns_path.clone(),
            ifname: self.ifname.clone(),
            args: self.args.clone(),
            capability_args: self.capability_args.clone(),
        }
    }
}

/// What CHECK did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    /// Every plugin ran CHECK and succeeded.
    Checked,
    /// The network sets `disableCheck`.
    Disabled,
    /// The network's version is older than 0.4.0, which has no CHECK (libcni refuses it).
    Unsupported(String),
}

/// What a plugin answered to VERSION.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginVersionInfo {
    /// The plugin's `cniVersion`.
    pub cni_version: String,
    /// The spec versions it supports.
    pub supported_versions: Vec<String>,
}

impl CniConfig {
    /// An executor with the given bin dirs and cache dir, the default timeout, and plugins
    /// run in the caller's network namespace.
    pub fn new(bin_dirs: Vec<PathBuf>, cache_dir: impl Into<PathBuf>) -> Self {
        CniConfig {
            bin_dirs,
            cache_dir: cache_dir.into(),
            ..Default::default()
        }
    }

    /// Sets the plugin timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs every plugin in the network namespace of `fd` (e.g. an open `/run/netns/NAME`
    /// or `/proc/self/ns/net`).
    pub fn with_plugin_netns(mut self, fd: OwnedFd) -> Self {
        self.plugin_netns = Some(Arc::new(fd));
        self
    }

    /// Runs every plugin in the network namespace at `path`, opened now.
    pub fn with_plugin_netns_path(self, path: &Path) -> Result<Self, CniError> {
        let f = std::fs::File::open(path).map_err(|e| CniError::io("opening", path, e))?;
        Ok(self.with_plugin_netns(OwnedFd::from(f)))
    }

    /// The path of an attachment's cache file.
    pub fn cache_path(&self, network: &str, rt: &Runtime) -> PathBuf {
        cache::entry_path(&self.cache_dir, network, &rt.container_id, &rt.ifname)
    }

    /// Where a plugin's binary is: the first bin dir holding it.
    pub fn find_plugin(&self, plugin: &str) -> Result<PathBuf, CniError> {
        exec::find_plugin(plugin, &self.bin_dirs)
    }

    fn cni_path(&self) -> String {
        let v: Vec<String> = self
            .bin_dirs
            .iter()
            .map(|d| d.to_string_lossy().into_owned())
            .collect();
        v.join(":")
    }

    fn env(&self, command: &'static str, rt: Option<&Runtime>) -> Vec<(&'static str, String)> {
        let (cid, netns, args, ifname) = match rt {
            Some(rt) => (
                rt.container_id.clone(),
                rt.netns_path.to_string_lossy().into_owned(),
                rt.cni_args(),
                rt.ifname.clone(),
            ),
            None => Default::default(),
        };
        vec![
            ("CNI_COMMAND", command.to_string()),
            ("CNI_CONTAINERID", cid),
            ("CNI_NETNS", netns),
            ("CNI_ARGS", args),
            ("CNI_IFNAME", ifname),
            ("CNI_PATH", self.cni_path()),
        ]
    }

    async fn run_plugin(
        &self,
        plugin: &PluginConf,
        path: &Path,
        command: &'static str,
        env: Vec<(&'static str, String)>,
        config: &Map<String, Value>,
    ) -> Result<Vec<u8>, CniError> {
        let stdin = serde_json::to_vec(config).map_err(|e| CniError::InvalidConfig {
            file: None,
            reason: format!("plugin {}: {e}", plugin.plugin_type),
        })?;
        tracing::debug!(plugin = %plugin.plugin_type, command, "running CNI plugin");
        exec::run(
            exec::Invocation {
                plugin: &plugin.plugin_type,
                path,
                command,
                env,
                stdin,
            },
            self.timeout,
            self.plugin_netns.as_ref().map(|fd| fd.as_raw_fd()),
        )
        .await
    }

    /// ADD: runs the plugins in list order, each given the previous one's result as
    /// `prevResult` (in the network's version), and caches the final result.
    ///
    /// All plugin binaries are looked up first: a missing one fails before anything runs.
    /// When a plugin fails the error is returned and nothing is undone: **the caller must run
    /// [`del`](Self::del)** (the cache entry, written before the first plugin, stays until
    /// then so a crash does not lose the attachment).
    pub async fn add(&self, list: &NetworkConfigList, rt: &Runtime) -> Result<CniResult, CniError> {
        rt.validate()?;
        if list.plugins.is_empty() {
            return Err(CniError::InvalidConfig {
                file: list.source.clone(),
                reason: format!("network {:?} has no plugins", list.name),
            });
        }
        let paths = list
            .plugins
            .iter()
            .map(|p| self.find_plugin(&p.plugin_type))
            .collect::<Result<Vec<_>, _>>()?;
        let cpath = self.cache_path(&list.name, rt);
        let mut entry = CacheEntry {
            kind: CACHE_KIND.into(),
            container_id: rt.container_id.clone(),
            config: list.bytes.clone(),
            if_name: rt.ifname.clone(),
            network_name: list.name.clone(),
            netns: rt.netns_path.to_string_lossy().into_owned(),
            cni_args: rt.args.clone(),
            capability_args: rt.capability_args.clone(),
            result: None,
        };
        // Keep an earlier complete entry (a repeated ADD without DEL): its result is what a
        // DEL needs if this ADD fails.
        if !matches!(cache::read(&cpath), Ok(Some(_))) {
            cache::write(&cpath, &entry)?;
        }

        let mut prev: Option<Value> = None;
        let mut last: Option<(Value, CniResult)> = None;
        for (plugin, path) in list.plugins.iter().zip(&paths) {
            let config = request_config(list, plugin, prev.as_ref(), Some(rt));
            let out = self
                .run_plugin(plugin, path, "ADD", self.env("ADD", Some(rt)), &config)
                .await?;
            let (raw, result) = parse_add_output(&out, &list.cni_version).map_err(|reason| {
                CniError::BadResult {
                    plugin: plugin.plugin_type.clone(),
                    command: "ADD",
                    reason,
                }
            })?;
            prev = Some(if result.cni_version == list.cni_version {
                raw.clone()
            } else {
                result.to_value(&list.cni_version)?
            });
            last = Some((raw, result));
        }
        let Some((raw, result)) = last else {
            return unreachable_plugins();
        };
        entry.result = Some(raw);
        cache::write(&cpath, &entry)?;
        Ok(result)
    }

    /// DEL: runs the plugins in reverse order, each given the cached ADD result as
    /// `prevResult` (for versions ≥ 0.4.0, as libcni), then removes the cache entry.
    ///
    /// Works without a cache entry (a failed or never-finished ADD, a second DEL). Empty
    /// `args`, `capability_args` or `netns_path` in `rt` are taken from the cache entry, so
    /// a DEL after a restart needs only the container ID and interface name. Stops at the
    /// first failing plugin (the spec's rule) and keeps the cache entry for a retry.
    pub async fn del(&self, list: &NetworkConfigList, rt: &Runtime) -> Result<(), CniError> {
        rt.validate()?;
        let cpath = self.cache_path(&list.name, rt);
        let entry = match cache::read(&cpath) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!("ignoring unreadable CNI cache entry: {e}");
                None
            }
        };
        let mut rt = rt.clone();
        let mut prev = None;
        if let Some(entry) = &entry {
            if rt.args.is_empty() {
                rt.args = entry.cni_args.clone();
            }
            if rt.capability_args.is_empty() {
                rt.capability_args = entry.capability_args.clone();
            }
            if rt.netns_path.as_os_str().is_empty() {
                rt.netns_path = PathBuf::from(&entry.netns);
            }
            if at_least(&list.cni_version, SpecVersion::V0_4_0) {
                if let Some(raw) = &entry.result {
                    match prev_result(raw, &list.cni_version) {
                        Ok(v) => prev = Some(v),
                        Err(e) => tracing::warn!("cached result not usable as prevResult: {e}"),
                    }
                }
            }
        }
        for plugin in list.plugins.iter().rev() {
            let path = self.find_plugin(&plugin.plugin_type)?;
            let config = request_config(list, plugin, prev.as_ref(), Some(&rt));
            self.run_plugin(plugin, &path, "DEL", self.env("DEL", Some(&rt)), &config)
                .await?;
        }
        cache::remove(&cpath)
    }

    /// CHECK: runs the plugins in list order with the cached ADD result as `prevResult`.
    /// Not run when the network sets `disableCheck` or its version is older than 0.4.0.
    pub async fn check(
        &self,
        list: &NetworkConfigList,
        rt: &Runtime,
    ) -> Result<CheckOutcome, CniError> {
        if !at_least(&list.cni_version, SpecVersion::V0_4_0) {
            return Ok(CheckOutcome::Unsupported(list.cni_version.clone()));
        }
        if list.disable_check {
            return Ok(CheckOutcome::Disabled);
        }
        rt.validate()?;
        let cpath = self.cache_path(&list.name, rt);
        let raw =
            cache::read(&cpath)?
                .and_then(|e| e.result)
                .ok_or_else(|| CniError::NotAdded {
                    network: list.name.clone(),
                    container_id: rt.container_id.clone(),
                    ifname: rt.ifname.clone(),
                })?;
        let prev = prev_result(&raw, &list.cni_version)?;
        for plugin in &list.plugins {
            let path = self.find_plugin(&plugin.plugin_type)?;
            let config = request_config(list, plugin, Some(&prev), Some(rt));
            self.run_plugin(plugin, &path, "CHECK", self.env("CHECK", Some(rt)), &config)
                .await?;
        }
        Ok(CheckOutcome::Checked)
    }

    /// STATUS (1.1.0): asks each plugin whether it can serve ADDs; the first error is
    /// returned. Networks older than 1.1.0 have no STATUS and are reported ready, as libcni.
    pub async fn status(&self, list: &NetworkConfigList) -> Result<(), CniError> {
        if !at_least(&list.cni_version, SpecVersion::V1_1_0) {
            return Ok(());
        }
        for plugin in &list.plugins {
            let path = self.find_plugin(&plugin.plugin_type)?;
            let config = request_config(list, plugin, None, None);
            self.run_plugin(plugin, &path, "STATUS", self.env("STATUS", None), &config)
                .await?;
        }
        Ok(())
    }

    /// GC: DELs every cached attachment of this network that is not in `valid`, then (for
    /// version 1.1.0) runs GC on each plugin with `cni.dev/valid-attachments`. Continues past
    /// errors and returns them all. Nothing happens when the network sets `disableGC`.
    ///
    /// As the spec says, GC must not run concurrently with ADD or DEL on the same network.
    pub async fn gc(
        &self,
        list: &NetworkConfigList,
        valid: &[GcAttachment],
    ) -> Result<(), CniError> {
        if list.disable_gc {
            return Ok(());
        }
        let mut errors = Vec::new();
        for att in self.cached_attachments(None)? {
            if att.network != list.name {
                continue;
            }
            let key = GcAttachment {
                container_id: att.container_id.clone(),
                ifname: att.ifname.clone(),
            };
            if valid.contains(&key) {
                continue;
            }
            tracing::info!(
                network = %list.name,
                container = %att.container_id,
                ifname = %att.ifname,
                "GC: deleting stale attachment"
            );
            if let Err(e) = self.del(list, &att.runtime()).await {
                errors.push(e);
            }
        }
        if at_least(&list.cni_version, SpecVersion::V1_1_0) {
            let valid_json = serde_json::to_value(valid).unwrap_or_else(|_| json!([]));
            for plugin in &list.plugins {
                let path = match self.find_plugin(&plugin.plugin_type) {
                    Ok(p) => p,
                    Err(e) => {
                        errors.push(e);
                        continue;
                    }
                };
                let mut config = request_config(list, plugin, None, None);
                config.insert("cni.dev/valid-attachments".into(), valid_json.clone());
                // libcni also sends the name the spec first used (containernetworking/cni#1101).
                config.insert("cni.dev/attachments".into(), valid_json.clone());
                if let Err(e) = self
                    .run_plugin(plugin, &path, "GC", self.env("GC", None), &config)
                    .await
                {
                    errors.push(e);
                }
            }
        }
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(CniError::Multiple(errors)),
        }
    }

    /// VERSION: the spec versions a plugin supports.
    pub async fn version(&self, plugin_type: &str) -> Result<PluginVersionInfo, CniError> {
        let path = self.find_plugin(plugin_type)?;
        let plugin = PluginConf {
            plugin_type: plugin_type.to_string(),
            capabilities: Default::default(),
            raw: Map::new(),
        };
        let mut config = Map::new();
        config.insert("cniVersion".into(), json!(CURRENT_VERSION));
        // Older plugin libraries insist on these even for VERSION (libcni sets them too).
        let mut env = self.env("VERSION", None);
        for (k, v) in env.iter_mut() {
            if *k == "CNI_NETNS" || *k == "CNI_IFNAME" {
                *v = "dummy".into();
            }
        }
        let out = match self
            .run_plugin(&plugin, &path, "VERSION", env, &config)
            .await
        {
            Ok(out) => out,
            Err(CniError::Plugin { msg, .. }) if msg == "unknown CNI_COMMAND: VERSION" => {
                return Ok(PluginVersionInfo {
                    cni_version: "0.1.0".into(),
                    supported_versions: vec!["0.1.0".into()],
                })
            }
            Err(e) => return Err(e),
        };
        let bad = |reason: String| CniError::BadResult {
            plugin: plugin_type.to_string(),
            command: "VERSION",
            reason,
        };
        let v: Value = serde_json::from_slice(&out).map_err(|e| bad(format!("not JSON: {e}")))?;
        let cni_version = v
            .get("cniVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let mut supported: Vec<String> = match v.get("supportedVersions") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|s| {
                    s.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| bad("supportedVersions holds a non-string".into()))
                })
                .collect::<Result<_, _>>()?,
            None | Some(Value::Null) => Vec::new(),
            Some(_) => return Err(bad("supportedVersions is not a list".into())),
        };
        if supported.is_empty() {
            // libcni's decoder: a bare 0.2.0 answer means 0.1.0 and 0.2.0.
            if cni_version == "0.2.0" {
                supported = vec!["0.1.0".into(), "0.2.0".into()];
            } else {
                return Err(bad("no supportedVersions".into()));
            }
        }
        Ok(PluginVersionInfo {
            cni_version,
            supported_versions: supported,
        })
    }

    /// Checks that every plugin of the network exists and supports its version (libcni's
    /// `ValidateNetworkList`); returns the capabilities the network declares.
    pub async fn validate(&self, list: &NetworkConfigList) -> Result<Vec<String>, CniError> {
        let mut caps = std::collections::BTreeSet::new();
        let mut errors = Vec::new();
        for plugin in &list.plugins {
            match self.version(&plugin.plugin_type).await {
                Ok(info) if info.supported_versions.contains(&list.cni_version) => {}
                Ok(info) => errors.push(CniError::InvalidConfig {
                    file: list.source.clone(),
                    reason: format!(
                        "plugin {:?} does not support version {} (it supports {})",
                        plugin.plugin_type,
                        list.cni_version,
                        info.supported_versions.join(", ")
                    ),
                }),
                Err(e) => errors.push(e),
            }
            caps.extend(
                plugin
                    .capabilities
                    .iter()
                    .filter(|(_, on)| **on)
                    .map(|(c, _)| c.clone()),
            );
        }
        match errors.len() {
            0 => Ok(caps.into_iter().collect()),
            1 => Err(errors.remove(0)),
            _ => Err(CniError::Multiple(errors)),
        }
    }

    /// The cached result of an attachment's last completed ADD, if any.
    pub fn cached_result(
        &self,
        list: &NetworkConfigList,
        rt: &Runtime,
    ) -> Result<Option<CniResult>, CniError> {
        rt.validate()?;
        let cpath = self.cache_path(&list.name, rt);
        match cache::read(&cpath)?.and_then(|e| e.result) {
            None => Ok(None),
            Some(raw) => CniResult::from_value(raw, &list.cni_version).map(Some),
        }
    }

    /// Every attachment in the cache (of any network), optionally only one container's.
    /// Includes ADDs that never completed (their `result` is `None`).
    pub fn cached_attachments(
        &self,
        container_id: Option<&str>,
    ) -> Result<Vec<CachedAttachment>, CniError> {
        Ok(cache::list(&self.cache_dir)?
            .into_iter()
            .filter(|(_, e)| container_id.is_none_or(|c| c == e.container_id))
            .map(|(path, e)| CachedAttachment {
                path,
                network: e.network_name,
                container_id: e.container_id,
                ifname: e.if_name,
                netns_path: PathBuf::from(e.netns),
                args: e.cni_args,
                capability_args: e.capability_args,
                config: e.config,
                result: e.result,
            })
            .collect())
    }
}

fn unreachable_plugins<T>() -> Result<T, CniError> {
    Err(CniError::InvalidConfig {
        file: None,
        reason: "network has no plugins".into(),
    })
}

/// A cached or previous result as the `prevResult` of a network of version `version`:
/// unchanged when already in that version (unknown fields kept), converted otherwise.
fn prev_result(raw: &Value, version: &str) -> Result<Value, CniError> {
    let result = CniResult::from_value(raw.clone(), version)?;
    if result.cni_version == version {
        Ok(raw.clone())
    } else {
        result.to_value(version)
    }
}

/// A plugin's ADD output: the raw JSON with `cniVersion` filled in (libcni's fixup), and
/// the parsed result.
fn parse_add_output(out: &[u8], conf_version: &str) -> Result<(Value, CniResult), String> {
    let mut raw: Value = serde_json::from_slice(out).map_err(|e| {
        let head = String::from_utf8_lossy(&out[..out.len().min(256)]).into_owned();
        format!("stdout is not JSON ({e}): {head:?}")
    })?;
    if raw.is_null() {
        raw = Value::Object(Map::new());
    }
    let Value::Object(m) = &mut raw else {
        return Err(format!("stdout is not a JSON object: {raw}"));
    };
    let missing = !matches!(m.get("cniVersion"), Some(Value::String(s)) if !s.is_empty());
    if missing {
        m.insert("cniVersion".into(), json!(conf_version));
    }
    let result = CniResult::from_value(raw.clone(), conf_version).map_err(|e| e.to_string())?;
    Ok((raw, result))
}

/// The configuration a plugin gets on stdin: its own object with `name` and `cniVersion`
/// of the network, `prevResult`, and `runtimeConfig` for its declared capabilities.
fn request_config(
    list: &NetworkConfigList,
    plugin: &PluginConf,
    prev: Option<&Value>,
    rt: Option<&Runtime>,
) -> Map<String, Value> {
    let mut m = plugin.raw.clone();
    m.insert("name".into(), json!(list.name));
    m.insert("cniVersion".into(), json!(list.cni_version));
    if let Some(p) = prev {
        m.insert("prevResult".into(), p.clone());
    }
    if let Some(rt) = rt {
        let rc: Map<String, Value> = rt
            .capability_args
            .iter()
            .filter(|(k, _)| plugin.has_capability(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !rc.is_empty() {
            m.insert("runtimeConfig".into(), Value::Object(rc));
        }
    }
    m
}
