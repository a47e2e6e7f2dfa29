//! The executor's settings ([`CniConfig`]): bin dirs, cache dir, timeout and plugin netns,
//! and the plumbing every operation shares: finding a plugin binary, building the `CNI_*`
//! environment, and running one plugin as a child process.

use crate::{cache, DEFAULT_BIN_DIRS, DEFAULT_CACHE_DIR, DEFAULT_TIMEOUT};
use crate::{exec, CniError, PluginConf, Runtime};
use serde_json::{Map, Value};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

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

    pub(crate) fn env(
        &self,
        command: &'static str,
        rt: Option<&Runtime>,
    ) -> Vec<(&'static str, String)> {
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

    pub(crate) async fn run_plugin(
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
}
