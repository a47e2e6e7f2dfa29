//! DEL: undo an attachment from its record. Idempotent, and quiet when the namespace is
//! gone (its tap and filters went with it; only the state is dropped).

use crate::error::PluginError;
use crate::options;
use crate::protocol::config::NetConf;
use crate::protocol::env::Env;
use crate::record::{self, attach_dir, Record};
use crate::target;
use sandnet_host::interwork::{detach_link, forget_state};
use sandnet_host::HostError;
use std::path::Path;

/// Runs DEL.
pub async fn del(conf: &NetConf, env: &Env) -> Result<(), PluginError> {
    env.require(false)?;
    let state_dir = options::state_dir(conf)?;
    let _lock = record::lock(&state_dir)?;
    let Some(rec) = record::load(&state_dir, &env.container_id, &env.ifname)? else {
        return Ok(());
    };
    undo(&state_dir, &rec, &env.netns).await?;
    record::remove(&state_dir, &rec.container_id, &rec.ifname)
}

/// Undoes what the record names (the record itself stays: the caller removes it). The
/// namespace is `netns`, or the record's when that is empty; when it is gone, or is another
/// namespace than the one attached, only sandnet's plan of the old one is dropped.
pub async fn undo(state_dir: &Path, rec: &Record, netns: &str) -> Result<(), PluginError> {
    let path = if netns.is_empty() { &rec.netns } else { netns };
    let adir = attach_dir(state_dir);
    let ns = target::open_if_present(path)?;
    let same = match &ns {
        Some(ns) => ns.id().ok() == Some(rec.netns_id),
        None => false,
    };
    match ns {
        Some(ns) if same => {
            let nl = ns
                .netlink()
                .map_err(PluginError::host("netlink in the namespace"))?;
            match detach_link(&ns, &nl, &adir, &rec.ifname).await {
                Ok(_) | Err(HostError::LinkNotAttached(_)) => {}
                Err(e) => return Err(PluginError::host(format!("detaching {}", rec.ifname))(e)),
            }
            match &rec.custom_tap {
                Some(n) => crate::rename::delete_renamed(&nl, n).await,
                None => Ok(()),
            }
        }
        _ => forget_state(&adir, rec.netns_id)
            .map_err(PluginError::host("forgetting a gone namespace's plan")),
    }
}
