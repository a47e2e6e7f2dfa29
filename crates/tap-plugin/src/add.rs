//! ADD: connect `CNI_IFNAME` to a tap (or macvtap) with sandnet's interworking, and return
//! `prevResult` with the tap added.

use crate::error::PluginError;
use crate::options::Options;
use crate::protocol::config::NetConf;
use crate::protocol::env::Env;
use crate::record::{self, attach_dir, Record, RECORD_VERSION};
use crate::result::{parse_prev, with_tap, TapEntry};
use crate::{owner, rename, target};
use sandnet_host::interwork::{attach_link, attached_endpoints, detach_link};
use sandnet_host::{scan_detail, AttachOptions, AttachedEndpoint, NetNs, Netlink};
use serde_json::Value;

/// Runs ADD. Everything is checked before anything is changed; the record is written
/// before the kernel is touched; a failure after attach undoes it.
pub async fn add(conf: &NetConf, env: &Env) -> Result<Value, PluginError> {
    env.require(true)?;
    conf.require_name()?;
    let opts = Options::resolve(conf, env)?;
    let prev = conf.prev_result.as_ref().ok_or_else(|| {
        PluginError::InvalidConfig(
            "prevResult is missing: sandnet-tap only runs chained after a plugin that \
             creates CNI_IFNAME"
                .into(),
        )
    })?;
    parse_prev(prev, &conf.cni_version)?;
    let _lock = record::lock(&opts.state_dir)?;
    if record::load(&opts.state_dir, &env.container_id, &env.ifname)?.is_some() {
        return Err(PluginError::AlreadyAdded {
            container_id: env.container_id.clone(),
            ifname: env.ifname.clone(),
        });
    }
    let ns = target::open(&env.netns)?;
    let id = ns
        .id()
        .map_err(PluginError::host("reading the namespace's identity"))?;
    let nl = ns
        .netlink()
        .map_err(PluginError::host("netlink in the namespace"))?;
    let scan = scan_detail(&nl)
        .await
        .map_err(|e| PluginError::host("scanning the namespace")(e.into()))?;
    if scan.link_by_name(&env.ifname).is_none() {
        return Err(PluginError::InvalidEnv(format!(
            "CNI_IFNAME {:?} is not a link in {}",
            env.ifname, env.netns
        )));
    }
    if let Some(n) = opts
        .tap_name
        .as_deref()
        .filter(|n| scan.link_by_name(n).is_some())
    {
        return Err(PluginError::InvalidConfig(format!(
            "tapName {n:?}: a link of that name exists in {}",
            env.netns
        )));
    }
    let mut rec = Record {
        version: RECORD_VERSION,
        network: conf.name.clone(),
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
        netns: env.netns.clone(),
        netns_id: id,
        model: opts.model,
        queues: opts.queues,
        tap: None,
        custom_tap: opts.tap_name.clone(),
        mac: None,
        device: None,
        complete: false,
    };
    record::save(&opts.state_dir, &rec)?;
    let adir = attach_dir(&opts.state_dir);
    let hopts = AttachOptions {
        model: opts.model,
        queues: opts.queues,
        state_dir: adir.clone(),
        policy: opts.policy,
    };
    let a = match attach_link(&ns, &nl, &scan, &hopts, &env.ifname).await {
        Ok(a) => a,
        Err(e) => {
            // attach_link rolled back; only a rollback that failed leaves the link in the
            // plan, and then the record stays for DEL to finish.
            let kept = attached_endpoints(&ns, &adir)
                .map(|v| v.iter().any(|p| p.endpoint.name == env.ifname))
                .unwrap_or(true);
            if !kept {
                record::remove(&opts.state_dir, &env.container_id, &env.ifname)?;
            }
            return Err(PluginError::host(format!("connecting {}", env.ifname))(e));
        }
    };
    let renamed = match (&opts.tap_name, &a.tap) {
        (Some(to), Some(from)) if to != from => rename::rename_tap(&nl, from, to).await,
        _ => Ok(()),
    };
    let done = match renamed {
        Ok(()) => finish(conf, env, &opts, prev, &a, &mut rec),
        Err(e) => Err(e),
    };
    match done {
        Ok(v) => Ok(v),
        Err(e) => {
            rollback(&ns, &nl, &opts, env).await;
            Err(e)
        }
    }
}

/// After attach: the owner, the record completed, the result.
fn finish(
    conf: &NetConf,
    env: &Env,
    opts: &Options,
    prev: &Value,
    a: &AttachedEndpoint,
    rec: &mut Record,
) -> Result<Value, PluginError> {
    let tap = opts
        .tap_name
        .clone()
        .or_else(|| a.tap.clone())
        .ok_or_else(|| PluginError::InvalidConfig(format!("model {} made no tap", opts.model)))?;
    let owned = match (&a.device, a.fds.first()) {
        (Some(dev), _) => owner::set_device_owner(dev, opts.uid, opts.gid),
        (None, Some(fd)) => owner::set_tap_owner(fd, opts.uid, opts.gid),
        (None, None) => Ok(()),
    };
    owned.map_err(PluginError::io("setting the owner of", &tap))?;
    rec.tap = Some(tap.clone());
    rec.mac = Some(a.guest_mac);
    rec.device = a.device.clone();
    rec.complete = true;
    record::save(&opts.state_dir, rec)?;
    with_tap(
        prev,
        &conf.cni_version,
        (&env.netns, &env.container_id),
        &env.ifname,
        &TapEntry {
            name: tap,
            mac: a.guest_mac.to_string(),
            mtu: a.endpoint.mtu,
        },
    )
}

/// Undoes a finished attach whose ADD failed afterwards; what cannot be undone stays in
/// the record for DEL.
async fn rollback(ns: &NetNs, nl: &Netlink, opts: &Options, env: &Env) {
    let detached = match detach_link(ns, nl, &attach_dir(&opts.state_dir), &env.ifname).await {
        Ok(_) => match &opts.tap_name {
            Some(n) => rename::delete_renamed(nl, n).await,
            None => Ok(()),
        },
        Err(e) => Err(PluginError::host("detaching")(e)),
    };
    match detached {
        Ok(()) => {
            let _ = record::remove(&opts.state_dir, &env.container_id, &env.ifname);
        }
        Err(e) => eprintln!(
            "sandnet-tap: rollback of {} failed (left for DEL): {e}",
            env.ifname
        ),
    }
}
