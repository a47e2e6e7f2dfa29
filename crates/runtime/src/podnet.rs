//! The pod's network from the runtime's side: the namespace a sandbox uses (named by the
//! runtime, reached again after a crash), CNI ADD and DEL for it, and its DNS.

use crate::sandbox::{CniAttachment, SandboxState};
use sandnet_host::{NetNs, NetNsRef};
use sandnet_model::Dns;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The naming contract for what sandnet creates for sandbox `id`: the pod namespace
/// `sandnet-<id>` under `/run/netns` and the CNI container id `sandnet-<id>`.
pub fn owned_name(id: &str) -> String {
    format!("sandnet-{id}")
}

/// A CNI step that failed, with the network it was for.
#[derive(Debug, thiserror::Error)]
pub enum CniStepError {
    /// The recorded network configuration does not parse (any more).
    #[error("CNI network configuration: {0}")]
    Config(#[source] Box<sandnet_cni::CniError>),
    /// The namespace the plugins ran in is gone, so DEL cannot run where ADD did.
    #[error("CNI: the namespace it ran in ({0}) is gone")]
    HostNetnsGone(PathBuf),
    /// The executor could not be set up for that namespace.
    #[error("CNI host namespace: {0}")]
    HostNetns(#[source] Box<sandnet_cni::CniError>),
    /// ADD or DEL itself failed.
    #[error("CNI {op} ({network}): {source}")]
    Op {
        /// `ADD` or `DEL`.
        op: &'static str,
        /// The network's name.
        network: String,
        /// What the plugin or executor said.
        #[source]
        source: Box<sandnet_cni::CniError>,
    },
}

fn cni_config(
    c: &CniAttachment,
) -> Result<(sandnet_cni::CniConfig, sandnet_cni::NetworkConfigList), CniStepError> {
    let list = sandnet_cni::NetworkConfigList::from_bytes(c.network.as_bytes())
        .map_err(|e| CniStepError::Config(Box::new(e)))?;
    if let Some(want) = c.host_netns_id {
        let ok = NetNs::open(&NetNsRef::path(&c.host_netns))
            .and_then(|n| n.id())
            .is_ok_and(|id| id == want);
        if !ok {
            return Err(CniStepError::HostNetnsGone(c.host_netns.clone()));
        }
    }
    let cfg = sandnet_cni::CniConfig::new(c.bin_dirs.clone(), c.cache_dir.clone())
        .with_timeout(Duration::from_millis(c.timeout_ms))
        .with_plugin_netns_path(&c.host_netns)
        .map_err(|e| CniStepError::HostNetns(Box::new(e)))?;
    Ok((cfg, list))
}

fn cni_runtime(c: &CniAttachment, pod_netns: &Path) -> sandnet_cni::Runtime {
    sandnet_cni::Runtime::new(
        c.container_id.clone(),
        pod_netns.to_path_buf(),
        c.ifname.clone(),
    )
    .with_arg("IgnoreUnknown", "1")
}

/// CNI ADD for a sandbox's attachment in `pod_netns`.
pub async fn cni_add(
    c: &CniAttachment,
    pod_netns: &Path,
) -> Result<sandnet_cni::CniResult, CniStepError> {
    let (cfg, list) = cni_config(c)?;
    cfg.add(&list, &cni_runtime(c, pod_netns))
        .await
        .map_err(|source| CniStepError::Op {
            op: "ADD",
            network: list.name.clone(),
            source: Box::new(source),
        })
}

/// Whether an ADD for this attachment got as far as running a plugin: the executor writes
/// its cache entry before the first plugin runs, so without one there is nothing to DEL.
pub fn add_started(c: &CniAttachment) -> bool {
    let Ok(list) = sandnet_cni::NetworkConfigList::from_bytes(c.network.as_bytes()) else {
        return true; // cannot tell: DEL to be safe
    };
    let cfg = sandnet_cni::CniConfig::new(c.bin_dirs.clone(), c.cache_dir.clone());
    let rt = cni_runtime(c, Path::new(""));
    cfg.cache_path(&list.name, &rt).exists()
}

/// CNI DEL for a sandbox's attachment, with the plugin directories and namespace recorded
/// at ADD; returns the network's name.
pub async fn cni_del(c: &CniAttachment, pod_netns: &Path) -> Result<String, CniStepError> {
    let (cfg, list) = cni_config(c)?;
    cfg.del(&list, &cni_runtime(c, pod_netns))
        .await
        .map_err(|source| CniStepError::Op {
            op: "DEL",
            network: list.name.clone(),
            source: Box::new(source),
        })?;
    Ok(list.name)
}

/// The DNS a CNI result carries, if it names any nameserver.
pub fn cni_dns(res: &sandnet_cni::CniResult) -> Option<Dns> {
    if res.dns.nameservers.is_empty() {
        return None;
    }
    Some(Dns {
        nameservers: res
            .dns
            .nameservers
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect(),
        search: res.dns.search.clone(),
        options: res.dns.options.clone(),
    })
}

/// The DNS a pod namespace's containers would see: `/etc/netns/<name>/resolv.conf` (the
/// iproute2 convention) or the host's `/etc/resolv.conf`, without loopback nameservers
/// (which mean nothing inside the guest).
pub fn namespace_dns(netns: &str) -> Dns {
    let candidates = match netns
        .parse::<NetNsRef>()
        .ok()
        .as_ref()
        .and_then(NetNsRef::as_name)
    {
        Some(name) => vec![
            PathBuf::from(format!("/etc/netns/{name}/resolv.conf")),
            PathBuf::from("/etc/resolv.conf"),
        ],
        None => vec![PathBuf::from("/etc/resolv.conf")],
    };
    for c in candidates {
        if let Ok(s) = std::fs::read_to_string(&c) {
            let mut d = Dns::from_lines(s.lines()).unwrap_or_default();
            d.nameservers.retain(|ip| !ip.is_loopback());
            return d;
        }
    }
    Dns::default()
}

/// Opens a sandbox's pod namespace: by its recorded path, else through its QEMU (which
/// runs inside it); only when the identity matches the recorded one.
pub fn reach_netns(root: &Path, st: &SandboxState) -> Option<NetNs> {
    let want = st.netns_id?;
    let mut cands = vec![];
    if !st.netns_path.as_os_str().is_empty() {
        cands.push(st.netns_path.clone());
    }
    if let (true, Some(pid)) = (st.qemu_alive(root), st.qemu_pid) {
        cands.push(PathBuf::from(format!("/proc/{pid}/ns/net")));
    }
    cands.into_iter().find_map(|c| {
        NetNs::open(&NetNsRef::path(&c))
            .ok()
            .filter(|ns| ns.id().is_ok_and(|id| id == want))
    })
}

/// A path to an open namespace that this process's children (CNI plugins) can open for as
/// long as it stays open, whatever happens to its mount point.
pub fn fd_path(ns: &NetNs) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        ns.as_fd().as_raw_fd()
    ))
}

/// Where `sandnet run` was started, as a path that stays valid: init's namespace, a named
/// one under /run/netns, or empty (the supervisor then records its own `/proc/<pid>/ns/net`).
pub fn host_netns() -> (PathBuf, Option<sandnet_host::NetNsId>) {
    let Ok(cur) = NetNs::current().and_then(|n| n.id()) else {
        return (PathBuf::new(), None);
    };
    let mut cands = vec![PathBuf::from("/proc/1/ns/net")];
    if let Ok(rd) = std::fs::read_dir(sandnet_host::netns::NETNS_RUN_DIR) {
        cands.extend(rd.filter_map(|e| e.ok()).map(|e| e.path()));
    }
    for c in cands {
        if let Ok(ns) = NetNs::open(&NetNsRef::path(&c)) {
            if ns.id().ok() == Some(cur) {
                return (c, Some(cur));
            }
        }
    }
    (PathBuf::new(), Some(cur))
}

/// The network sandnet uses when the CNI conf dir has none: the seed's `10-mynet.conf`
/// (bridge `cni0`, gateway, masquerade, host-local on 172.19.0.0/24, default route).
pub const DEFAULT_NETWORK: &str = r#"{
  "cniVersion": "0.2.0",
  "name": "mynet",
  "type": "bridge",
  "bridge": "cni0",
  "isGateway": true,
  "ipMasq": true,
  "ipam": {
    "type": "host-local",
    "subnet": "172.19.0.0/24",
    "routes": [ { "dst": "0.0.0.0/0" } ]
  }
}"#;

/// The network to use from a conf dir: its first valid configuration; the embedded
/// default when the directory has no configuration files at all; an error when it has
/// some but none is valid.
pub fn network_from_dir(dir: &Path) -> Result<sandnet_cni::NetworkConfigList, CniStepError> {
    let embedded = || {
        sandnet_cni::NetworkConfigList::from_plugin_bytes(DEFAULT_NETWORK.as_bytes())
            .map_err(|e| CniStepError::Config(Box::new(e)))
    };
    if !dir.exists() {
        return embedded();
    }
    match sandnet_cni::NetworkConfigList::load_dir(dir) {
        Ok(l) => Ok(l),
        Err(sandnet_cni::CniError::NoConfig { skipped, .. }) if skipped.is_empty() => embedded(),
        Err(e) => Err(CniStepError::Config(Box::new(e))),
    }
}
