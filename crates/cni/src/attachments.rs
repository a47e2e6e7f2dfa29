//! Attachments as the cache knows them: the cached-attachment list, the cached result of an
//! attachment, and GC, which DELs every cached attachment that is no longer valid.

use crate::request::request_config;
use crate::version::at_least;
use crate::{cache, CniConfig, CniError, CniResult, NetworkConfigList, Runtime, SpecVersion};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::path::PathBuf;

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

impl CniConfig {
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
