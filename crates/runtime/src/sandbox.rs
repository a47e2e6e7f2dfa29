//! A sandbox's persisted state under `<root>/<id>/`, and what can be told about it from
//! outside its supervisor (is the supervisor alive, is QEMU).

use sandnet_host::NetNsId;
use sandnet_model::InterworkingModel;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where sandnet keeps runtime state by default.
pub const DEFAULT_ROOT: &str = "/run/sandnet";

/// The format version of the state files this build writes: `sandbox.json`, `spec.json`
/// and the factory's records.
pub const STATE_VERSION: u32 = 1;

/// The format versions of those files this build reads.
pub const READ_VERSIONS: &[u32] = &[1];

/// Names under the root that are not sandboxes.
const RESERVED: &[&str] = &["attach", "demo", "dev", "cni", "accel", "factory"];

/// Errors about sandbox state.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// An id that cannot name a sandbox.
    #[error("invalid sandbox id {0:?} (1-64 of [A-Za-z0-9_.-], starting with a letter or digit)")]
    InvalidId(String),
    /// No sandbox with this id.
    #[error("no sandbox {0:?}")]
    NotFound(String),
    /// A sandbox with this id exists already.
    #[error("sandbox {0:?} already exists")]
    Exists(String),
    /// Reading or writing the state failed.
    #[error("sandbox state {path:?}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A state file of a format version this build does not read.
    #[error(
        "{}: {}",
        path.display(),
        sandnet_model::state_version::UnknownVersion { found: *version, reads: READ_VERSIONS }
    )]
    Version {
        /// The file.
        path: PathBuf,
        /// The version it carries.
        version: u64,
    },
}

/// Parses the state file `path` (its bytes `b`), checking its format version before its
/// fields (a later version may have changed what they mean): a file without a `version`
/// is version 1; one of a version this build does not read is refused naming the file,
/// its version and the versions read.
pub fn parse_state<T: DeserializeOwned>(path: &Path, b: &[u8]) -> Result<T, SandboxError> {
    sandnet_model::state_version::check(b, READ_VERSIONS).map_err(|e| SandboxError::Version {
        path: path.to_path_buf(),
        version: e.found,
    })?;
    serde_json::from_slice(b).map_err(|e| SandboxError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })
}

/// Checks that an id is usable as a directory name and a QEMU id.
pub fn check_id(id: &str) -> Result<(), SandboxError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
        && !RESERVED.contains(&id);
    if ok {
        Ok(())
    } else {
        Err(SandboxError::InvalidId(id.to_string()))
    }
}

/// A fresh random id (12 hex digits).
pub fn new_id() -> String {
    sandnet_host::random_bytes::<6>()
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// Where one sandbox's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxPaths {
    /// `<root>/<id>`.
    pub dir: PathBuf,
    /// The persisted state.
    pub state: PathBuf,
    /// The supervisor's control socket.
    pub ctl: PathBuf,
    /// The supervisor's log.
    pub log: PathBuf,
    /// `ctr.sock`: the supervisor's socket for container calls (a ttrpc `grpc.AgentService`
    /// that forwards the container methods to the guest's agent).
    pub agent: PathBuf,
    /// The host side of the sandbox's shared directory (see [`crate::shared`]).
    pub shared: PathBuf,
}

impl SandboxPaths {
    /// The paths of sandbox `id` under `root`.
    pub fn new(root: &Path, id: &str) -> SandboxPaths {
        let dir = root.join(id);
        SandboxPaths {
            state: dir.join("sandbox.json"),
            ctl: dir.join("ctl.sock"),
            log: dir.join("supervisor.log"),
            // Short: a unix socket path has 107 bytes, and a CRI id alone is 64.
            agent: dir.join("ctr.sock"),
            shared: dir.join("shared"),
            dir,
        }
    }
}

/// Where a sandbox is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Being set up.
    Creating,
    /// The guest network is configured.
    Running,
    /// QEMU exited on its own (the supervisor lives on to be told to clean up).
    QemuExited,
    /// Being removed.
    Stopping,
    /// A teardown step failed; the record is kept so that `rm`/`gc` retry what is left.
    TeardownFailed,
}

/// The persisted state of one sandbox: enough to clean up from, whatever died.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxState {
    /// Format version ([`STATE_VERSION`] when written; 1 when the file has none).
    #[serde(default = "sandnet_model::state_version::version_1")]
    pub version: u32,
    /// The sandbox id.
    pub id: String,
    /// The pod namespace as given (name or path).
    pub netns: String,
    /// The namespace's path.
    pub netns_path: PathBuf,
    /// The namespace's identity, to find its attach state even when it is gone.
    pub netns_id: Option<NetNsId>,
    /// Whether sandnet created the namespace (and so deletes it on rm).
    #[serde(default)]
    pub netns_created: bool,
    /// The interworking model.
    pub model: InterworkingModel,
    /// Life-cycle status.
    pub status: Status,
    /// The supervisor's pid.
    pub supervisor_pid: Option<u32>,
    /// QEMU's pid.
    pub qemu_pid: Option<u32>,
    /// Unix time of creation (seconds).
    pub created: u64,
    /// Step timings in milliseconds.
    #[serde(default)]
    pub timings: BTreeMap<String, u64>,
    /// The CNI attachment made for this sandbox, recorded before its ADD ran, and cleared
    /// only once its DEL succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni: Option<CniAttachment>,
    /// The step under way (of starting or of tearing down), recorded before it acts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Why the last teardown failed (with [`Status::TeardownFailed`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The accelerator QEMU runs with (`kvm`, `tcg`); empty until it is chosen.
    #[serde(default)]
    pub accel: String,
    /// Why that accelerator, in one line.
    #[serde(default)]
    pub accel_reason: String,
    /// The guest's NICs, one per plugged endpoint: a hot plug is recorded before it acts,
    /// an unplug keeps its entry until everything of it is undone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nics: Vec<GuestNic>,
    /// The factory VM this sandbox took (its id; QEMU's files are in [`factory_vm_dir`]),
    /// `None` when it booted its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factory_vm: Option<String>,
}

/// Where a factory VM's files are: `<root>/factory/vms/<vm>`.
pub fn factory_vm_dir(root: &Path, vm: &str) -> PathBuf {
    root.join("factory").join("vms").join(vm)
}

/// One NIC of the guest and the pod link behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestNic {
    /// The pod link's name (the guest NIC's too).
    pub link: String,
    /// The pod link's index.
    pub index: u32,
    /// The device id in QEMU.
    pub id: String,
    /// The PCIe root port it sits on.
    pub port: String,
    /// Whether it was hot-plugged (else it came on QEMU's command line).
    pub hot: bool,
    /// Where it is in its life.
    pub state: NicState,
}

/// Where a guest NIC is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NicState {
    /// Being plugged (host side, then QEMU, then the guest).
    Plugging,
    /// In the guest.
    Plugged,
    /// Being unplugged.
    Unplugging,
}

/// Everything needed to run CNI ADD for a sandbox, and DEL again later from anywhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniAttachment {
    /// The network configuration list (conflist JSON).
    pub network: String,
    /// Plugin directories, searched in order.
    pub bin_dirs: Vec<PathBuf>,
    /// libcni-layout cache directory.
    pub cache_dir: PathBuf,
    /// The namespace the plugins run in (where `sandnet run` was started).
    pub host_netns: PathBuf,
    /// That namespace's identity, checked before running DEL there.
    pub host_netns_id: Option<NetNsId>,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// Plugin timeout in milliseconds.
    pub timeout_ms: u64,
    /// Capability arguments (`runtimeConfig`) for the plugins that declare them, e.g.
    /// `bandwidth`; passed on ADD and DEL.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub capability_args: serde_json::Map<String, serde_json::Value>,
}

impl SandboxState {
    /// Writes the state atomically, readable by root only.
    pub fn save(&self, paths: &SandboxPaths) -> Result<(), SandboxError> {
        let body = serde_json::to_vec_pretty(self).map_err(|e| SandboxError::Io {
            path: paths.state.clone(),
            source: std::io::Error::other(e),
        })?;
        write_private(&paths.state, &body)
    }

    /// Reads a sandbox's state; a record of a format version this build does not read is
    /// refused ([`SandboxError::Version`]).
    pub fn load(root: &Path, id: &str) -> Result<SandboxState, SandboxError> {
        check_id(id)?;
        let p = SandboxPaths::new(root, id);
        let b = std::fs::read(&p.state).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => SandboxError::NotFound(id.to_string()),
            _ => SandboxError::Io {
                path: p.state.clone(),
                source: e,
            },
        })?;
        parse_state(&p.state, &b)
    }

    /// Whether the supervisor process is alive (and is this sandbox's).
    pub fn supervisor_alive(&self) -> bool {
        self.supervisor_pid
            .is_some_and(|pid| match &self.factory_vm {
                // A factory VM's supervisor became this sandbox's when it was taken.
                Some(vm) => cmdline_has(pid, &["__template", vm]),
                None => cmdline_has(pid, &["__supervise", &self.id]),
            })
    }

    /// Whether QEMU is alive (and is this sandbox's).
    pub fn qemu_alive(&self, root: &Path) -> bool {
        let dir = match &self.factory_vm {
            Some(vm) => factory_vm_dir(root, vm),
            None => SandboxPaths::new(root, &self.id).dir,
        };
        self.qemu_pid
            .is_some_and(|pid| cmdline_has(pid, &[&dir.display().to_string()]))
    }

    /// What `ps` says of the sandbox: its status, or what died.
    pub fn health(&self, root: &Path) -> Health {
        if self.status == Status::TeardownFailed {
            return Health::TeardownFailed(self.error.clone().unwrap_or_default());
        }
        match (self.supervisor_alive(), self.qemu_alive(root), self.status) {
            (true, true, Status::Running) => Health::Running,
            (true, _, Status::Creating) => Health::Creating,
            (true, _, Status::Stopping) => Health::Stopping,
            (true, false, _) | (true, true, _) => Health::QemuExited,
            (false, true, _) => Health::SupervisorDead,
            (false, false, _) => Health::Dead,
        }
    }
}

/// A sandbox's health as seen from outside its supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Supervisor and QEMU alive, the guest network configured.
    Running,
    /// Being set up.
    Creating,
    /// Being removed.
    Stopping,
    /// QEMU is gone; the supervisor waits to be told to clean up.
    QemuExited,
    /// QEMU runs but its supervisor is gone.
    SupervisorDead,
    /// Both are gone; only the record is left.
    Dead,
    /// A teardown step failed (why); `rm` retries what is left.
    TeardownFailed(String),
    /// The record cannot be read (why); `rm --force` removes what can be found.
    Unreadable(String),
}

impl Health {
    /// Whether a supervisor is at work on the sandbox (so nobody else may tear it down).
    pub fn is_live(&self) -> bool {
        matches!(self, Health::Running | Health::Creating | Health::Stopping)
    }
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Health::Running => "running",
            Health::Creating => "creating",
            Health::Stopping => "stopping",
            Health::QemuExited => "qemu-exited",
            Health::SupervisorDead => "supervisor-dead",
            Health::Dead => "dead",
            Health::TeardownFailed(why) => return write!(f, "teardown-failed: {why}"),
            Health::Unreadable(why) => return write!(f, "unreadable: {why}"),
        };
        f.pad(s)
    }
}

/// Creates `dir` (and missing parents) accessible to root only; an existing directory is
/// made so too (state may carry CNI arguments and guest output).
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Creates (truncating) a file with mode 0600.
pub fn create_private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

/// Writes `path` atomically with mode 0600. The temporary file has a name of its own per
/// writer, and stale ones a killed writer left are removed, so no `*.tmp` outlives a write.
pub fn write_private(path: &Path, body: &[u8]) -> Result<(), SandboxError> {
    let io = |source| SandboxError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    remove_stale_tmp(dir, &name);
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let r = (|| {
        let mut f = create_private_file(&tmp)?;
        f.write_all(body)?;
        f.sync_data()?;
        std::fs::rename(&tmp, path)
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r.map_err(io)
}

/// Removes `.<name>.<pid>.tmp` files whose writer is no longer running.
fn remove_stale_tmp(dir: &Path, name: &str) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = format!(".{name}.");
    for e in rd.filter_map(|e| e.ok()) {
        let f = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = f
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix(".tmp"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Whether `/proc/<pid>/cmdline` contains every needle (guards against reused pids).
pub fn cmdline_has(pid: u32, needles: &[&str]) -> bool {
    let Ok(b) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let s = String::from_utf8_lossy(&b).replace('\0', " ");
    needles.iter().all(|n| s.contains(n))
}

/// Ids of every sandbox under the root, sorted.
pub fn list(root: &Path) -> Result<Vec<String>, SandboxError> {
    let rd = match std::fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => {
            return Err(SandboxError::Io {
                path: root.to_path_buf(),
                source: e,
            })
        }
    };
    let mut ids: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| check_id(n).is_ok() && SandboxPaths::new(root, n).state.exists())
        .collect();
    ids.sort();
    Ok(ids)
}

/// Unix time now, in seconds.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        check_id("pod-1.a_b").unwrap();
        check_id(&new_id()).unwrap();
        for bad in ["", "-x", "a/b", "attach", "x y", &"a".repeat(65)] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
        assert_ne!(new_id(), new_id());
    }

    fn record(version: Option<u32>) -> serde_json::Value {
        let mut v = serde_json::json!({
            "id": "sb1", "netns": "pod", "netns_path": "/run/netns/pod", "netns_id": null,
            "model": "tcfilter", "status": "running", "supervisor_pid": null,
            "qemu_pid": null, "created": 1
        });
        if let Some(n) = version {
            v["version"] = n.into();
        }
        v
    }

    #[test]
    fn records_without_a_version_are_version_1_and_saved_with_one() {
        let root = sandnet_testkit::TempDir::new("sbv1");
        let paths = SandboxPaths::new(&root, "sb1");
        create_private_dir(&paths.dir).unwrap();
        std::fs::write(&paths.state, record(None).to_string()).unwrap();
        let st = SandboxState::load(&root, "sb1").unwrap();
        assert_eq!(st.version, 1);
        assert_eq!(st.netns, "pod");
        st.save(&paths).unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&paths.state).unwrap()).unwrap();
        assert_eq!(v["version"], STATE_VERSION);
        assert_eq!(SandboxState::load(&root, "sb1").unwrap(), st);
    }

    #[test]
    fn records_of_an_unknown_version_are_refused_naming_file_and_versions() {
        let root = sandnet_testkit::TempDir::new("sbv99");
        let paths = SandboxPaths::new(&root, "sb1");
        create_private_dir(&paths.dir).unwrap();
        std::fs::write(&paths.state, record(Some(99)).to_string()).unwrap();
        let e = SandboxState::load(&root, "sb1").unwrap_err();
        assert!(
            matches!(e, SandboxError::Version { version: 99, .. }),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            format!(
                "{}: state format version 99, this sandnet reads 1",
                paths.state.display()
            )
        );
        // The version is checked first: a later format's fields may mean something else.
        std::fs::write(&paths.state, r#"{"version": 2, "status": {"new": true}}"#).unwrap();
        let e = SandboxState::load(&root, "sb1").unwrap_err().to_string();
        assert!(
            e.contains("state format version 2, this sandnet reads 1"),
            "{e}"
        );
        // A version that is no number is a broken record, not a version.
        std::fs::write(&paths.state, r#"{"version": "x"}"#).unwrap();
        let e = SandboxState::load(&root, "sb1").unwrap_err();
        assert!(matches!(e, SandboxError::Io { .. }), "{e:?}");
    }
}
