//! STATUS: whether ADD can work now — the tun device is there and the state directory can
//! be written.

use crate::error::PluginError;
use crate::options;
use crate::protocol::config::NetConf;
use crate::record::records_dir;

/// Runs STATUS.
pub fn status(conf: &NetConf) -> Result<(), PluginError> {
    conf.require_name()?;
    let state_dir = options::state_dir(conf)?;
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Err(PluginError::NotAvailable(
            "/dev/net/tun does not exist (tun module not loaded?)".into(),
        ));
    }
    let d = records_dir(&state_dir);
    std::fs::create_dir_all(&d)
        .map_err(|e| PluginError::NotAvailable(format!("state directory {}: {e}", d.display())))?;
    Ok(())
}
