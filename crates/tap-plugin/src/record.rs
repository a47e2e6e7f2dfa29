//! The plugin's own record of each attachment (`<stateDir>/attachments/<cid>@<ifname>.json`),
//! written before any kernel object exists, so DEL and GC know what to undo after a crash
//! and after the namespace is gone. sandnet's attach plans live beside it in
//! `<stateDir>/attach` (see [`attach_dir`]).

use crate::error::PluginError;
use sandnet_host::NetNsId;
use sandnet_model::{InterworkingModel, MacAddr};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The format version of records this build writes and reads.
pub const RECORD_VERSION: u32 = 1;

/// One attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Format version.
    pub version: u32,
    /// The network (`name`) it belongs to; GC only touches its own network's.
    pub network: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`: the pod link the tap is connected to.
    pub ifname: String,
    /// `CNI_NETNS` at ADD.
    pub netns: String,
    /// The namespace's identity at ADD.
    pub netns_id: NetNsId,
    /// The model.
    pub model: InterworkingModel,
    /// Queues.
    pub queues: u16,
    /// The tap's name, once made.
    pub tap: Option<String>,
    /// `tapName`, when asked for: the tap is renamed to it after attach (recorded before,
    /// so DEL finds it by this name after a crash in between).
    #[serde(default)]
    pub custom_tap: Option<String>,
    /// The MAC the guest NIC gets.
    pub mac: Option<MacAddr>,
    /// macvtap: the character device to open.
    pub device: Option<PathBuf>,
    /// Whether ADD finished.
    pub complete: bool,
}

/// Where records are kept.
pub fn records_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("attachments")
}

/// Where sandnet-host keeps its attach plans (one per namespace).
pub fn attach_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("attach")
}

fn record_path(state_dir: &Path, cid: &str, ifname: &str) -> PathBuf {
    // Container IDs have no '@', so the name splits back unambiguously.
    records_dir(state_dir).join(format!("{cid}@{ifname}.json"))
}

/// Loads the record of an attachment, if any.
pub fn load(state_dir: &Path, cid: &str, ifname: &str) -> Result<Option<Record>, PluginError> {
    let p = record_path(state_dir, cid, ifname);
    match std::fs::read(&p) {
        Ok(b) => parse(&b).map(Some).map_err(PluginError::io("reading", &p)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(PluginError::io("reading", &p)(e)),
    }
}

fn parse(b: &[u8]) -> std::io::Result<Record> {
    let r: Record = serde_json::from_slice(b).map_err(std::io::Error::other)?;
    if r.version != RECORD_VERSION {
        return Err(std::io::Error::other(format!(
            "record format version {}, this sandnet-tap reads {RECORD_VERSION}",
            r.version
        )));
    }
    Ok(r)
}

/// Every record of the state directory (unreadable ones are errors, named).
pub fn list(state_dir: &Path) -> Result<Vec<Record>, PluginError> {
    let d = records_dir(state_dir);
    let rd = match std::fs::read_dir(&d) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(PluginError::io("listing", &d)(e)),
    };
    let mut out = vec![];
    for e in rd {
        let p = e.map_err(PluginError::io("listing", &d))?.path();
        if p.extension().is_some_and(|x| x == "json") {
            let b = std::fs::read(&p).map_err(PluginError::io("reading", &p))?;
            out.push(parse(&b).map_err(PluginError::io("reading", &p))?);
        }
    }
    out.sort_by(|a, b| (&a.container_id, &a.ifname).cmp(&(&b.container_id, &b.ifname)));
    Ok(out)
}

/// Writes a record atomically and durably (synced before the rename, directory after).
pub fn save(state_dir: &Path, r: &Record) -> Result<(), PluginError> {
    let d = records_dir(state_dir);
    let p = record_path(state_dir, &r.container_id, &r.ifname);
    std::fs::create_dir_all(&d).map_err(PluginError::io("creating", &d))?;
    let tmp = p.with_extension(format!("json.{}.tmp", std::process::id()));
    let body = serde_json::to_vec_pretty(r)
        .map_err(|e| PluginError::io("writing", &p)(std::io::Error::other(e)))?;
    let written = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_data()?;
        std::fs::rename(&tmp, &p)?;
        File::open(&d)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(PluginError::io("writing", &p))
}

/// Removes a record; one that is not there is not an error.
pub fn remove(state_dir: &Path, cid: &str, ifname: &str) -> Result<(), PluginError> {
    let p = record_path(state_dir, cid, ifname);
    match std::fs::remove_file(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(PluginError::io("removing", &p)(e)),
    }
}

/// An exclusive lock over the plugin's records (an `flock` of the records directory),
/// held for a whole command so GC never races an ADD or DEL of the same state.
pub struct RecordsLock(#[allow(dead_code)] File);

/// Takes the records lock, creating the directory if needed.
pub fn lock(state_dir: &Path) -> Result<RecordsLock, PluginError> {
    let d = records_dir(state_dir);
    std::fs::create_dir_all(&d).map_err(PluginError::io("creating", &d))?;
    let f = File::open(&d).map_err(PluginError::io("opening", &d))?;
    loop {
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(RecordsLock(f));
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(PluginError::io("locking", &d)(e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let dir = sandnet_testkit::TempDir::new("taprec");
        let r = Record {
            version: RECORD_VERSION,
            network: "n".into(),
            container_id: "c1".into(),
            ifname: "eth0".into(),
            netns: "/run/netns/x".into(),
            netns_id: NetNsId { dev: 1, ino: 2 },
            model: InterworkingModel::TcFilter,
            queues: 1,
            tap: None,
            custom_tap: None,
            mac: None,
            device: None,
            complete: false,
        };
        let _l = lock(&dir).unwrap();
        save(&dir, &r).unwrap();
        assert_eq!(load(&dir, "c1", "eth0").unwrap(), Some(r.clone()));
        assert_eq!(list(&dir).unwrap(), vec![r]);
        remove(&dir, "c1", "eth0").unwrap();
        remove(&dir, "c1", "eth0").unwrap();
        assert!(list(&dir).unwrap().is_empty());
    }
}
