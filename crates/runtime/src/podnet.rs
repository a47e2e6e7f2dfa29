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
    /// The namespace the plugins ran in is gone, so ADD or DEL cannot run where ADD did.
    #[error("CNI: the namespace its plugins ran in ({0}) is gone")]
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
    let list = parse_network(c)?;
    if !host_netns_alive(c) {
        return Err(CniStepError::HostNetnsGone(c.host_netns.clone()));
    }
    let cfg = executor(c)
        .with_plugin_netns_path(&c.host_netns)
        .map_err(|e| CniStepError::HostNetns(Box::new(e)))?;
    Ok((cfg, list))
}

fn parse_network(c: &CniAttachment) -> Result<sandnet_cni::NetworkConfigList, CniStepError> {
    sandnet_cni::NetworkConfigList::from_bytes(c.network.as_bytes())
        .map_err(|e| CniStepError::Config(Box::new(e)))
}

/// The executor for an attachment, running plugins in the caller's namespace.
fn executor(c: &CniAttachment) -> sandnet_cni::CniConfig {
    sandnet_cni::CniConfig::new(c.bin_dirs.clone(), c.cache_dir.clone())
        .with_timeout(Duration::from_millis(c.timeout_ms))
}

/// Whether the namespace the plugins ran in still is the one recorded at ADD.
fn host_netns_alive(c: &CniAttachment) -> bool {
    match c.host_netns_id {
        Some(want) => NetNs::open(&NetNsRef::path(&c.host_netns))
            .and_then(|n| n.id())
            .is_ok_and(|id| id == want),
        None => true,
    }
}

fn cni_runtime(c: &CniAttachment, pod_netns: &Path) -> sandnet_cni::Runtime {
    let mut rt = sandnet_cni::Runtime::new(
        c.container_id.clone(),
        pod_netns.to_path_buf(),
        c.ifname.clone(),
    )
    .with_arg("IgnoreUnknown", "1");
    for (k, v) in &c.capability_args {
        rt = rt.with_capability(k.clone(), v.clone());
    }
    rt
}

/// Where a sandbox's requested `bandwidth` goes: to the CNI plugins when one of the chain
/// declares the capability (it shapes on its own link, so sandnet does not shape again);
/// else nowhere, and sandnet enforces it on the tap. Returns the capability arguments to
/// record in the attachment.
pub fn bandwidth_capability(
    list: &sandnet_cni::NetworkConfigList,
    bandwidth: Option<&sandnet_cni::BandwidthEntry>,
) -> Option<serde_json::Map<String, serde_json::Value>> {
    let b = bandwidth.filter(|b| !b.is_unlimited())?;
    if !list.has_capability(sandnet_cni::BANDWIDTH_CAPABILITY) {
        return None;
    }
    // The reference plugin wants a burst with every rate: sandnet's own largest (100 ms).
    let b = b.with_bursts(|rate| sandnet_model::RateLimit::max_burst_bytes(rate) * 8);
    let mut m = serde_json::Map::new();
    m.insert(sandnet_cni::BANDWIDTH_CAPABILITY.into(), b.to_value());
    Some(m)
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
    let Ok(list) = parse_network(c) else {
        return true; // cannot tell: DEL to be safe
    };
    let rt = cni_runtime(c, Path::new(""));
    executor(c).cache_path(&list.name, &rt).exists()
}

/// How much of a CNI DEL could run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DelScope {
    /// The whole chain, in the namespace the plugins ran in.
    Full,
    /// The namespace the plugins ran in is gone, and what they made there with it: only
    /// the addresses were released, by these IPAM plugins, and the attachment forgotten.
    AddressesOnly(Vec<String>),
}

/// CNI DEL for a sandbox's attachment, with the plugin directories and namespace recorded
/// at ADD, in `pod_netns`; `None` when the pod namespace is gone (DEL then runs with
/// `CNI_NETNS` empty, also when the cache entry names a path, which would lead to a plain
/// file or another namespace by now). When the namespace the plugins ran in is gone, only
/// the addresses are released ([`DelScope::AddressesOnly`]): running the other plugins
/// anywhere else could touch what is not theirs (a bridge of the same name). Returns the
/// network's name and what ran.
pub async fn cni_del(
    c: &CniAttachment,
    pod_netns: Option<&Path>,
) -> Result<(String, DelScope), CniStepError> {
    let (cfg, list) = match cni_config(c) {
        Ok(x) => x,
        Err(CniStepError::HostNetnsGone(_)) => {
            let (name, ipam) = release_addresses(c, executor(c)).await?;
            return Ok((name, DelScope::AddressesOnly(ipam)));
        }
        Err(e) => return Err(e),
    };
    let rt = cni_runtime(c, pod_netns.unwrap_or(Path::new("")));
    let r = match pod_netns {
        Some(_) => cfg.del(&list, &rt).await,
        None => cfg.del_without_netns(&list, &rt).await,
    };
    r.map_err(|source| CniStepError::Op {
        op: "DEL",
        network: list.name.clone(),
        source: Box::new(source),
    })?;
    Ok((list.name, DelScope::Full))
}

/// Releases only the addresses of an attachment whose DEL cannot run or failed: the IPAM
/// plugins' DEL, where the plugins ran (here when that namespace is gone), then the
/// attachment is forgotten. Returns the IPAM plugins run.
pub async fn cni_release_addresses(c: &CniAttachment) -> Result<Vec<String>, CniStepError> {
    let cfg = match cni_config(c) {
        Ok((cfg, _)) => cfg,
        Err(CniStepError::HostNetnsGone(_)) => executor(c),
        Err(e) => return Err(e),
    };
    Ok(release_addresses(c, cfg).await?.1)
}

async fn release_addresses(
    c: &CniAttachment,
    cfg: sandnet_cni::CniConfig,
) -> Result<(String, Vec<String>), CniStepError> {
    let list = parse_network(c)?;
    let ipam = cfg
        .release_addresses(&list, &cni_runtime(c, Path::new("")))
        .await
        .map_err(|source| CniStepError::Op {
            op: "DEL of the IPAM plugins",
            network: list.name.clone(),
            source: Box::new(source),
        })?;
    Ok((list.name, ipam))
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
