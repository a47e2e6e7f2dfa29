//! The VM factory (Kata's VM cache): a daemon keeps N guests booted with no NIC, each run
//! by a *template* process that later becomes the supervisor of the sandbox that takes it.
//! `run` takes a ready VM when one is there (else boots as before): it hands the template
//! the sandbox's lock over the VM's `take.sock`, and the template adopts the sandbox —
//! CNI, attach, hot plug of every endpoint, guest network and hostname — exactly like a
//! boot-first start, minus the boot. The daemon boots a replacement meanwhile. A VM is
//! never reused after its sandbox; a template whose QEMU dies removes itself and is
//! replaced; everything is recorded under `<root>/factory` so that `factory destroy` and
//! `gc` remove what a killed factory left.
//!
//! Layout: `factory.json` (the daemon: pid, count), `spec.json` (the VM parameters every
//! VM is booted with; a sandbox only takes a VM booted with its own parameters),
//! `vms/<vm>/vm.json` (one per VM: its template's pid, QEMU's pid, status) next to QEMU's
//! sockets and logs.

pub mod daemon;
pub mod template;

use crate::error::{Result, RuntimeError};
use crate::sandbox::{cmdline_has, factory_vm_dir, write_private};
use crate::spec::VmParams;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long `factory init` waits for its VMs to be ready.
pub const INIT_TIMEOUT: Duration = Duration::from_secs(300);

/// The factory's directory under a state root.
pub fn factory_dir(root: &Path) -> PathBuf {
    root.join("factory")
}

/// What the daemon records of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FactoryRecord {
    /// Format version ([`crate::sandbox::STATE_VERSION`] when written; 1 when the file has
    /// none).
    #[serde(default = "sandnet_model::state_version::version_1")]
    pub version: u32,
    /// The daemon's pid.
    pub pid: u32,
    /// How many ready VMs it keeps.
    pub count: u32,
}

/// Where one factory VM is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VmStatus {
    /// QEMU is booting.
    Booting,
    /// Its agent answered; it waits to be taken.
    Ready,
    /// A sandbox took it (its template is that sandbox's supervisor now).
    Taken,
}

/// One factory VM's record (`vms/<vm>/vm.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmRecord {
    /// Format version ([`crate::sandbox::STATE_VERSION`] when written; 1 when the file has
    /// none).
    #[serde(default = "sandnet_model::state_version::version_1")]
    pub version: u32,
    /// The VM's id.
    pub vm: String,
    /// Its template process.
    pub pid: u32,
    /// QEMU's pid, once started.
    pub qemu_pid: Option<u32>,
    /// Where it is.
    pub status: VmStatus,
    /// The accelerator it runs with.
    #[serde(default)]
    pub accel: String,
    /// The sandbox that took it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

impl VmRecord {
    /// Whether its template process is alive (and is this VM's).
    pub fn alive(&self) -> bool {
        cmdline_has(self.pid, &["__template", &self.vm])
    }

    /// Whether its QEMU is alive (and is this VM's: its command line names the VM's dir).
    pub fn qemu_alive(&self, root: &Path) -> bool {
        let dir = factory_vm_dir(root, &self.vm).display().to_string();
        self.qemu_pid.is_some_and(|q| cmdline_has(q, &[&dir]))
    }

    /// Writes it (root-only).
    pub fn save(&self, root: &Path) -> Result<()> {
        let body = serde_json::to_vec_pretty(self).map_err(std::io::Error::other);
        let body = body.map_err(|source| RuntimeError::Io {
            step: "factory VM record".into(),
            source,
        })?;
        Ok(write_private(
            &factory_vm_dir(root, &self.vm).join("vm.json"),
            &body,
        )?)
    }
}

/// What `factory status` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FactoryStatus {
    /// The daemon, when it runs.
    pub daemon: Option<FactoryRecord>,
    /// Every VM not taken by a sandbox.
    pub vms: Vec<VmRecord>,
}

/// The factory's VM parameters as `spec.json` holds them: with the format version.
#[derive(Serialize, Deserialize)]
struct FactorySpec {
    /// Format version ([`crate::sandbox::STATE_VERSION`] when written; 1 when the file has
    /// none).
    #[serde(default = "sandnet_model::state_version::version_1")]
    version: u32,
    /// The parameters every VM boots with.
    #[serde(flatten)]
    params: VmParams,
}

/// Reads a record, `None` when it is missing or unreadable; one of a format version this
/// build does not read is logged, naming the file and the version, and treated as missing.
fn read_json<T: serde::de::DeserializeOwned>(p: &Path) -> Option<T> {
    let b = std::fs::read(p).ok()?;
    match crate::sandbox::parse_state(p, &b) {
        Ok(v) => Some(v),
        Err(e @ crate::sandbox::SandboxError::Version { .. }) => {
            tracing::warn!("factory: {e}");
            None
        }
        Err(_) => None,
    }
}

/// Makes the factory's directory and records the VM parameters its VMs boot with.
pub fn prepare(root: &Path, params: &VmParams) -> Result<()> {
    let dir = factory_dir(root);
    crate::sandbox::create_private_dir(root)
        .and_then(|()| crate::sandbox::create_private_dir(&dir))
        .map_err(|source| RuntimeError::Io {
            step: format!("create {}", dir.display()),
            source,
        })?;
    let spec = FactorySpec {
        version: crate::sandbox::STATE_VERSION,
        params: params.clone(),
    };
    let body = serde_json::to_vec_pretty(&spec).map_err(|e| RuntimeError::Io {
        step: "factory spec".into(),
        source: std::io::Error::other(e),
    })?;
    Ok(write_private(&dir.join("spec.json"), &body)?)
}

/// The daemon's record, when the daemon is alive.
pub fn daemon(root: &Path) -> Option<FactoryRecord> {
    let r: FactoryRecord = read_json(&factory_dir(root).join("factory.json"))?;
    cmdline_has(r.pid, &["__factory"]).then_some(r)
}

/// The VM parameters the factory boots with.
pub fn vm_params(root: &Path) -> Option<VmParams> {
    read_json::<FactorySpec>(&factory_dir(root).join("spec.json")).map(|s| s.params)
}

/// Every VM record that is not taken (taken ones belong to their sandbox).
pub fn vms(root: &Path) -> Vec<VmRecord> {
    let Ok(rd) = std::fs::read_dir(factory_dir(root).join("vms")) else {
        return vec![];
    };
    let mut v: Vec<VmRecord> = rd
        .flatten()
        .filter_map(|e| read_json::<VmRecord>(&e.path().join("vm.json")))
        .filter(|r| r.status != VmStatus::Taken)
        .collect();
    v.sort_by(|a, b| a.vm.cmp(&b.vm));
    v
}

/// The factory's state.
pub fn status(root: &Path) -> FactoryStatus {
    FactoryStatus {
        daemon: daemon(root),
        vms: vms(root),
    }
}

/// Stops the daemon (SIGTERM: it stops its VMs) and removes whatever is left of VMs not
/// taken by a sandbox, also when the daemon is dead. Returns what was done.
pub async fn destroy(root: &Path) -> Vec<String> {
    let mut actions = Vec::new();
    if let Some(d) = daemon(root) {
        signal(d.pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..300 {
            if daemon(root).is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if daemon(root).is_some() {
            signal(d.pid, nix::sys::signal::Signal::SIGKILL);
        }
        actions.push(format!("stopped the factory daemon (pid {})", d.pid));
    }
    actions.extend(remove_orphans(root).await);
    let f = factory_dir(root);
    let _ = std::fs::remove_file(f.join("factory.json"));
    let _ = std::fs::remove_file(f.join("spec.json"));
    let _ = std::fs::remove_file(f.join("factory.log"));
    let _ = std::fs::remove_dir(f.join("vms"));
    let _ = std::fs::remove_dir(&f);
    actions
}

/// Removes VMs not taken by a sandbox whose daemon is gone: their template and QEMU are
/// killed, their files removed. (`gc` calls this too.)
pub async fn remove_orphans(root: &Path) -> Vec<String> {
    if daemon(root).is_some() {
        return vec![];
    }
    let mut actions = Vec::new();
    for r in vms(root) {
        if r.alive() {
            signal(r.pid, nix::sys::signal::Signal::SIGKILL);
        }
        if let (Some(q), true) = (r.qemu_pid, r.qemu_alive(root)) {
            signal(q, nix::sys::signal::Signal::SIGKILL);
        }
        for _ in 0..50 {
            if !r.alive() && !r.qemu_alive(root) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = std::fs::remove_dir_all(factory_vm_dir(root, &r.vm));
        actions.push(format!("removed factory VM {}", r.vm));
    }
    actions
}

fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

/// Waits until the daemon has `count` ready VMs; `progress` hears how many are ready.
pub async fn wait_ready(root: &Path, count: u32, progress: &mut dyn FnMut(usize)) -> Result<()> {
    let deadline = tokio::time::Instant::now() + INIT_TIMEOUT;
    let mut last = usize::MAX;
    let started = tokio::time::Instant::now();
    loop {
        let ready = vms(root)
            .iter()
            .filter(|r| r.status == VmStatus::Ready && r.alive())
            .count();
        if ready != last {
            progress(ready);
            last = ready;
        }
        if ready >= count as usize {
            return Ok(());
        }
        // (The daemon records itself a moment after it starts.)
        if daemon(root).is_none() && started.elapsed() > Duration::from_secs(5) {
            return Err(RuntimeError::Refused(format!(
                "the factory daemon exited (see {})",
                factory_dir(root).join("factory.log").display()
            )));
        }
        if tokio::time::Instant::now() > deadline {
            return Err(RuntimeError::Refused(format!(
                "the factory has {ready} of {count} VMs ready after {} s",
                INIT_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A ready VM whose template accepted this sandbox: reading the stream gives the
/// supervisor's report lines, as a supervisor's stdout does.
pub struct Taken {
    /// The VM's id.
    pub vm: String,
    /// The connection to its template.
    pub stream: std::os::unix::net::UnixStream,
}

/// Hands sandbox `id` (its lock descriptor `lock_fd`) to a ready factory VM booted with
/// `vm`'s parameters; `None` when there is none (or none accepted in time).
pub fn take(
    root: &Path,
    id: &str,
    vm: &VmParams,
    lock_fd: i32,
    netns_fd: Option<i32>,
) -> Option<Taken> {
    daemon(root)?;
    if vm_params(root).as_ref() != Some(vm) {
        return None;
    }
    for r in vms(root) {
        if r.status != VmStatus::Ready || !r.alive() {
            continue;
        }
        match template::offer(root, &r.vm, id, lock_fd, netns_fd) {
            Ok(stream) => return Some(Taken { vm: r.vm, stream }),
            Err(e) => tracing::info!("factory VM {} not taken: {e}", r.vm),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::STATE_VERSION;

    #[test]
    fn records_without_a_version_are_version_1_and_written_with_one() {
        let root = sandnet_testkit::TempDir::new("factv1");
        let dir = factory_dir(&root);
        std::fs::create_dir_all(dir.join("vms/vm1")).unwrap();
        // As written before records carried a version.
        std::fs::write(dir.join("factory.json"), r#"{"pid": 1, "count": 2}"#).unwrap();
        let old_params = serde_json::to_vec(&VmParams::default()).unwrap();
        std::fs::write(dir.join("spec.json"), old_params).unwrap();
        std::fs::write(
            dir.join("vms/vm1/vm.json"),
            r#"{"vm": "vm1", "pid": 1, "qemu_pid": null, "status": "ready"}"#,
        )
        .unwrap();
        let f: FactoryRecord = read_json(&dir.join("factory.json")).unwrap();
        assert_eq!((f.version, f.count), (1, 2));
        assert_eq!(vm_params(&root), Some(VmParams::default()));
        let v = vms(&root);
        assert_eq!((v.len(), v[0].version), (1, 1));
        // Written now, each carries the version.
        prepare(&root, &VmParams::default()).unwrap();
        v[0].save(&root).unwrap();
        for f in ["spec.json", "vms/vm1/vm.json"] {
            let j: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.join(f)).unwrap()).unwrap();
            assert_eq!(j["version"], STATE_VERSION, "{f}");
        }
        assert_eq!(vm_params(&root), Some(VmParams::default()));
    }

    #[test]
    fn records_of_an_unknown_version_are_refused() {
        let root = sandnet_testkit::TempDir::new("factv99");
        let dir = factory_dir(&root);
        std::fs::create_dir_all(dir.join("vms/vm1")).unwrap();
        let mut spec = serde_json::to_value(VmParams::default()).unwrap();
        spec["version"] = 99.into();
        std::fs::write(dir.join("spec.json"), spec.to_string()).unwrap();
        std::fs::write(
            dir.join("vms/vm1/vm.json"),
            r#"{"version": 99, "vm": "vm1", "pid": 1, "qemu_pid": null, "status": "ready"}"#,
        )
        .unwrap();
        assert_eq!(vm_params(&root), None);
        assert!(vms(&root).is_empty());
        let b = std::fs::read(dir.join("spec.json")).unwrap();
        let e = crate::sandbox::parse_state::<FactorySpec>(&dir.join("spec.json"), &b)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.ends_with("spec.json: state format version 99, this sandnet reads 1"),
            "{e}"
        );
    }
}
