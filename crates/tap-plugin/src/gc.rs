//! GC: undo every attachment of this network that is not in `cni.dev/valid-attachments`.

use crate::del::undo;
use crate::error::PluginError;
use crate::options;
use crate::protocol::config::NetConf;
use crate::record;

/// Runs GC; every stale attachment is tried, the failures are returned together.
pub async fn gc(conf: &NetConf) -> Result<(), PluginError> {
    conf.require_name()?;
    let state_dir = options::state_dir(conf)?;
    let valid = conf.valid_attachments.as_ref().ok_or_else(|| {
        PluginError::InvalidConfig(format!(
            "{} is missing",
            crate::protocol::config::VALID_ATTACHMENTS
        ))
    })?;
    let _lock = record::lock(&state_dir)?;
    let mut errors = vec![];
    for rec in record::list(&state_dir)? {
        let keep = rec.network != conf.name
            || valid
                .iter()
                .any(|v| v.container_id == rec.container_id && v.ifname == rec.ifname);
        if keep {
            continue;
        }
        let r = match undo(&state_dir, &rec, "").await {
            Ok(()) => record::remove(&state_dir, &rec.container_id, &rec.ifname),
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            errors.push(e);
        }
    }
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(PluginError::Multiple(errors)),
    }
}
