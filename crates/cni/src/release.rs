//! DEL when the namespaces it would use are gone: the whole DEL without a container
//! namespace (`CNI_NETNS` empty, which the spec allows: plugins then release what they
//! hold without it), and, when the namespace the plugins ran in is gone too, only the
//! address release of the IPAM plugins.

use crate::request::request_config;
use crate::{cache, CniConfig, CniError, NetworkConfigList, PluginConf, Runtime};
use std::path::PathBuf;

impl CniConfig {
    /// DEL with `CNI_NETNS` empty, also when the cache entry recorded a namespace: for an
    /// attachment whose container namespace is gone. Otherwise as [`del`](Self::del).
    pub async fn del_without_netns(
        &self,
        list: &NetworkConfigList,
        rt: &Runtime,
    ) -> Result<(), CniError> {
        let mut rt = rt.clone();
        rt.netns_path = PathBuf::new();
        self.del_inner(list, &rt, false).await
    }

    /// Releases an attachment's addresses alone, then forgets it (removes its cache
    /// entry): DEL of the IPAM plugin each plugin names in `ipam.type`, in reverse order,
    /// given what the plugin itself would hand it (its configuration, `CNI_NETNS` empty).
    ///
    /// For an attachment whose plugins cannot run any more because the namespace they ran
    /// in is gone — and with it whatever they made there (links, rules). IPAM plugins keep
    /// their state outside any network namespace (files, a daemon), so they still can:
    /// they run where this executor runs plugins. Returns the IPAM plugins run; stops at
    /// the first that fails, keeping the cache entry.
    pub async fn release_addresses(
        &self,
        list: &NetworkConfigList,
        rt: &Runtime,
    ) -> Result<Vec<String>, CniError> {
        let mut rt = rt.clone();
        rt.netns_path = PathBuf::new();
        let (cpath, rt, prev) = self.del_context(list, &rt, false)?;
        let mut ran = vec![];
        for plugin in list.plugins.iter().rev() {
            let Some(ipam) = ipam_type(plugin) else {
                continue;
            };
            let path = self.find_plugin(&ipam)?;
            let config = request_config(list, plugin, prev.as_ref(), Some(&rt));
            let as_plugin = PluginConf {
                plugin_type: ipam.clone(),
                capabilities: Default::default(),
                raw: Default::default(),
            };
            self.run_plugin(
                &as_plugin,
                &path,
                "DEL",
                self.env("DEL", Some(&rt)),
                &config,
            )
            .await?;
            ran.push(ipam);
        }
        cache::remove(&cpath)?;
        Ok(ran)
    }
}

/// The IPAM plugin a plugin's configuration names (`ipam.type`), if any.
fn ipam_type(plugin: &PluginConf) -> Option<String> {
    plugin
        .raw
        .get("ipam")?
        .get("type")?
        .as_str()
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}
