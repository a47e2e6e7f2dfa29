//! The attachment operations ADD, DEL, CHECK and STATUS: each runs the network's plugins in
//! the order the spec gives, with the right `prevResult`, and keeps the result cache in step.

use crate::request::{parse_add_output, prev_result, request_config};
use crate::version::at_least;
use crate::{cache, CacheEntry, CniConfig, CniError, CniResult, NetworkConfigList, Runtime};
use crate::{SpecVersion, CACHE_KIND};
use serde_json::Value;
use std::path::PathBuf;

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

impl CniConfig {
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
        self.del_inner(list, rt, true).await
    }

    /// DEL, taking an empty `netns_path` from the cache entry only when `netns_from_cache`.
    pub(crate) async fn del_inner(
        &self,
        list: &NetworkConfigList,
        rt: &Runtime,
        netns_from_cache: bool,
    ) -> Result<(), CniError> {
        let (cpath, rt, prev) = self.del_context(list, rt, netns_from_cache)?;
        for plugin in list.plugins.iter().rev() {
            let path = self.find_plugin(&plugin.plugin_type)?;
            let config = request_config(list, plugin, prev.as_ref(), Some(&rt));
            self.run_plugin(plugin, &path, "DEL", self.env("DEL", Some(&rt)), &config)
                .await?;
        }
        cache::remove(&cpath)
    }

    /// What a DEL of this attachment is run with: its cache file, the runtime parameters
    /// completed from the cache entry, and the `prevResult`.
    pub(crate) fn del_context(
        &self,
        list: &NetworkConfigList,
        rt: &Runtime,
        netns_from_cache: bool,
    ) -> Result<(PathBuf, Runtime, Option<Value>), CniError> {
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
            if netns_from_cache && rt.netns_path.as_os_str().is_empty() {
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
        Ok((cpath, rt, prev))
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
}

fn unreachable_plugins<T>() -> Result<T, CniError> {
    Err(CniError::InvalidConfig {
        file: None,
        reason: "network has no plugins".into(),
    })
}
