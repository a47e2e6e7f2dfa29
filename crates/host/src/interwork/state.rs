//! The persisted attach plan of one namespace (`<state>/<netns-id>.json`), written before
//! the kernel is touched so that detach can undo exactly that, also after a crash half-way.
//!
//! Attach and detach serialise on an `flock` of the state directory itself, so no lock file
//! is ever created. Plans are written to a uniquely named `*.tmp` file and renamed into
//! place; a writer (holding the lock) first removes `*.tmp` files a killed writer left.

use crate::error::{HostError, Result};
use crate::netns::NetNsId;
use crate::Endpoint;
use sandnet_model::{InterworkingModel, MacAddr, Route, TapPolicy};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// One endpoint's part of the persisted plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedEndpoint {
    /// The endpoint as scanned before anything changed.
    pub endpoint: Endpoint,
    /// The tap (or macvtap) sandnet creates for it.
    pub tap_name: String,
    /// Routes through the link before attach (macvtap restores them on detach).
    pub routes: Vec<Route>,
    /// tcfilter: the link had no ingress qdisc, so sandnet adds (and later removes) it.
    pub created_qdisc: bool,
    /// macvtap: the MAC the link wears while the macvtap has its original one.
    pub link_mac_during: Option<MacAddr>,
}

/// The format version of the attach plans this build writes.
pub const STATE_VERSION: u32 = 1;

/// The format versions of attach plans this build reads.
pub const READ_VERSIONS: &[u32] = &[1];

/// The persisted state of one namespace's attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachState {
    /// Format version ([`STATE_VERSION`] when written; 1 when the file has none).
    #[serde(default = "sandnet_model::state_version::version_1")]
    pub version: u32,
    /// The namespace as named by the caller.
    pub netns: String,
    /// The namespace's identity.
    pub netns_id: NetNsId,
    /// The model used.
    pub model: InterworkingModel,
    /// Queues per endpoint.
    pub queues: u16,
    /// What the host enforces on each NIC (a plan without it enforced nothing).
    #[serde(default = "TapPolicy::unenforced")]
    pub policy: TapPolicy,
    /// Whether attach finished.
    pub complete: bool,
    /// One entry per endpoint.
    pub endpoints: Vec<PlannedEndpoint>,
}

impl AttachState {
    /// A namespace's plan of `endpoints` with the caller's model and queues, not complete.
    pub(crate) fn new(
        ns: &crate::netns::NetNs,
        id: NetNsId,
        opts: &super::AttachOptions,
        endpoints: Vec<PlannedEndpoint>,
    ) -> AttachState {
        AttachState {
            version: STATE_VERSION,
            netns: ns.display(),
            netns_id: id,
            model: opts.model,
            queues: opts.queues,
            policy: opts.policy,
            complete: false,
            endpoints,
        }
    }
}

/// The plan file of a namespace.
pub(crate) fn state_path(dir: &Path, id: NetNsId) -> PathBuf {
    dir.join(format!("{id}.json"))
}

/// Where private macvtap device nodes of a namespace are made.
pub(crate) fn dev_dir(dir: &Path, id: NetNsId) -> PathBuf {
    dir.join("dev").join(id.to_string())
}

/// Wraps an I/O error with the state file it concerns.
pub(crate) fn state_err(path: &Path) -> impl FnOnce(std::io::Error) -> HostError + '_ {
    move |source| HostError::State {
        path: path.to_path_buf(),
        source,
    }
}

/// Loads a namespace's attach state, if there is one. A plan of a format version this build
/// does not read is refused, naming the file, its version and the versions read.
pub fn load_state(dir: &Path, id: NetNsId) -> Result<Option<AttachState>> {
    let p = state_path(dir, id);
    match std::fs::read(&p) {
        Ok(b) => parse_state(&b).map(Some).map_err(|e| state_err(&p)(e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(state_err(&p)(e)),
    }
}

/// Parses a plan, checking its format version before its fields (a later version may
/// have changed what they mean): one without a version is version 1, one of a version this
/// build does not read is an error naming its version and the versions read.
pub fn parse_state(b: &[u8]) -> std::io::Result<AttachState> {
    sandnet_model::state_version::check(b, READ_VERSIONS).map_err(std::io::Error::other)?;
    serde_json::from_slice(b).map_err(std::io::Error::other)
}

/// Writes a plan atomically: a unique `*.tmp` file renamed into place. `durable` (a plan
/// naming objects about to be created) syncs the file before the rename and the directory
/// after it, so the plan is on disk before any object it names exists; an update that
/// creates nothing (attach's `complete`) only needs to be atomic. Called with the directory
/// lock held, so any other `*.tmp` there is a killed writer's and goes.
pub(crate) fn save_state(dir: &Path, st: &AttachState, durable: bool) -> Result<()> {
    let p = state_path(dir, st.netns_id);
    std::fs::create_dir_all(dir).map_err(state_err(&p))?;
    remove_stale_tmp(dir);
    let [a, b, c, d] = crate::random_bytes::<4>();
    let tmp = dir.join(format!(
        "{}.json.{}-{:08x}.tmp",
        st.netns_id,
        std::process::id(),
        u32::from_le_bytes([a, b, c, d])
    ));
    let body =
        serde_json::to_vec_pretty(st).map_err(|e| state_err(&p)(std::io::Error::other(e)))?;
    let written = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(&body)?;
        if durable {
            f.sync_data()?;
        }
        std::fs::rename(&tmp, &p)?;
        if durable {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(state_err(&p))
}

/// Removes `*.tmp` files left in the state directory by a writer that was killed; only
/// with the directory lock held.
pub(crate) fn remove_stale_tmp(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "tmp") {
            let _ = std::fs::remove_file(&p);
        }
    }
}

/// Removes a namespace's plan; one that is not there is not an error.
pub(crate) fn remove_state(dir: &Path, id: NetNsId) -> Result<()> {
    let p = state_path(dir, id);
    match std::fs::remove_file(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(state_err(&p)(e)),
    }
}

/// Forgets a namespace's attach state (for a namespace that no longer exists, whose taps
/// and filters went with it).
pub fn forget_state(dir: &Path, id: NetNsId) -> Result<()> {
    remove_state(dir, id)?;
    let d = dev_dir(dir, id);
    match std::fs::remove_dir_all(&d) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(state_err(&d)(e)),
    }
}

/// An exclusive lock on the state directory, held while attaching or detaching. It is an
/// `flock` on the directory's own fd: nothing is created, and the kernel drops it when the
/// holder exits, however it exits.
pub(crate) struct StateLock(#[allow(dead_code)] File);

/// Takes the state directory's lock, creating the directory if needed.
pub(crate) fn lock_state(dir: &Path) -> Result<StateLock> {
    std::fs::create_dir_all(dir).map_err(state_err(dir))?;
    let f = File::open(dir).map_err(state_err(dir))?;
    loop {
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(StateLock(f));
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(state_err(dir)(e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_are_written_without_leftovers() {
        // Removed on drop, also when an assertion fails.
        let dir = sandnet_testkit::TempDir::new("state");
        std::fs::write(dir.join("1-2.json.99-0.tmp"), b"{").unwrap();
        let id = NetNsId { dev: 1, ino: 2 };
        let st = AttachState {
            version: STATE_VERSION,
            netns: "pod".into(),
            netns_id: id,
            model: InterworkingModel::TcFilter,
            queues: 1,
            policy: TapPolicy::default(),
            complete: false,
            endpoints: vec![],
        };
        {
            let _l = lock_state(&dir).unwrap();
            save_state(&dir, &st, true).unwrap();
        }
        assert_eq!(load_state(&dir, id).unwrap(), Some(st));
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["1-2.json".to_string()]);
        forget_state(&dir, id).unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    }

    fn plan_json(version: Option<u32>) -> String {
        let mut v = serde_json::json!({
            "netns": "pod", "netns_id": {"dev": 1, "ino": 2}, "model": "tcfilter",
            "queues": 1, "complete": true, "endpoints": []
        });
        if let Some(n) = version {
            v["version"] = n.into();
        }
        v.to_string()
    }

    #[test]
    fn plans_without_a_version_are_version_1() {
        let dir = sandnet_testkit::TempDir::new("statev1");
        let id = NetNsId { dev: 1, ino: 2 };
        std::fs::write(state_path(&dir, id), plan_json(None)).unwrap();
        let st = load_state(&dir, id).unwrap().unwrap();
        assert_eq!(st.version, 1);
        assert_eq!(st.netns, "pod");
        // Written back, it carries the version.
        let body = serde_json::to_value(&st).unwrap();
        assert_eq!(body["version"], STATE_VERSION);
    }

    #[test]
    fn plans_of_an_unknown_version_are_refused_naming_it() {
        let dir = sandnet_testkit::TempDir::new("statev99");
        let id = NetNsId { dev: 1, ino: 2 };
        let p = state_path(&dir, id);
        std::fs::write(&p, plan_json(Some(99))).unwrap();
        let e = load_state(&dir, id).unwrap_err().to_string();
        assert!(e.contains(&p.display().to_string()), "{e}");
        assert!(
            e.contains("state format version 99, this sandnet reads 1"),
            "{e}"
        );
        // Even when the rest would not parse as today's format.
        std::fs::write(&p, r#"{"version": 7, "netns": ["changed"]}"#).unwrap();
        let e = load_state(&dir, id).unwrap_err().to_string();
        assert!(e.contains("state format version 7"), "{e}");
    }
}
