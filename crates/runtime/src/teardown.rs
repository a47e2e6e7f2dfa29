//! Tearing a sandbox down — by its supervisor, or from its persisted state when the
//! supervisor is gone.
//!
//! The order is the CNI spec's and containerd's: QEMU stopped, taps and filters undone,
//! CNI DEL while the pod namespace still exists, and only after DEL succeeded the
//! namespace sandnet created. Each step is recorded in the state file before it acts and
//! its result after, so a kill at any point leaves a record that says what is left. A step
//! that fails stops the teardown: the record is kept (status `teardown-failed`, with the
//! reason) and a later `rm` or `gc` retries exactly what is left. Forced
//! ([`Mode::Force`], `rm --force`), a failing step is reported and the teardown goes on,
//! so it always ends with the record gone.
//!
//! A pod namespace that cannot be reached any more (its mount point is gone, or is a plain
//! file whose mount died with the mount namespace it was made in) is gone: CNI DEL then
//! runs without one, as the spec allows. When the namespace the plugins ran in is gone,
//! so is what they made there, and only the addresses are released (see
//! [`podnet::cni_del`]).

use crate::podnet::{self, fd_path, reach_netns, DelScope};
use crate::sandbox::{CniAttachment, Health, SandboxPaths, SandboxState, Status};
use sandnet_host::NetNs;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long `rm` waits for a supervisor to finish tearing its sandbox down (CNI DEL alone
/// may take the configured plugin timeout).
pub const STOP_WAIT: Duration = Duration::from_secs(150);

/// What a teardown did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RemoveReport {
    /// Whether there was no such sandbox.
    pub not_found: bool,
    /// One line per action.
    pub actions: Vec<String>,
    /// Step timings in milliseconds: `qemu_stop_ms`, `detach_ms`, `cni_del_ms`,
    /// `netns_ms`; `total_ms` for the whole removal.
    pub timings: BTreeMap<String, u64>,
    /// Steps that could not be undone (or only in part), one line each: what is left and
    /// why. A forced teardown goes on past them.
    pub not_undone: Vec<String>,
    /// Whether one of those steps left something held on the host (a process, taps, an
    /// address, rules, a mount): `rm --force` then fails although the record is gone.
    pub still_held: bool,
}

/// How a teardown treats a failing step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Stop at it, keep the record (saying why) for a retry.
    Strict,
    /// Report it in [`RemoveReport::not_undone`] and go on: the record goes in the end.
    Force,
}

/// A teardown that did not finish. The sandbox's record is kept for a retry.
#[derive(Debug, thiserror::Error)]
pub enum TeardownError {
    /// One step failed.
    #[error(
        "sandbox {id}: {step} failed: {source} (the record is kept; `sandnet rm {id}` retries)"
    )]
    Step {
        /// The sandbox.
        id: String,
        /// The step that failed.
        step: &'static str,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The supervisor tore down and reported a failure.
    #[error("sandbox {id}: {message}")]
    Supervisor {
        /// The sandbox.
        id: String,
        /// What the supervisor said.
        message: String,
    },
    /// Someone else is tearing the sandbox down (or its supervisor does not let go).
    #[error("sandbox {id} is busy: {why}")]
    Busy {
        /// The sandbox.
        id: String,
        /// Who holds it.
        why: String,
    },
    /// The record cannot be read.
    #[error("sandbox {id}: record unreadable ({why}); `sandnet rm --force {id}` removes what can be found")]
    Unreadable {
        /// The sandbox.
        id: String,
        /// Why.
        why: String,
    },
}

impl TeardownError {
    /// A failed step.
    pub(crate) fn step(
        id: &str,
        step: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> TeardownError {
        TeardownError::Step {
            id: id.to_string(),
            step,
            source: source.into(),
        }
    }
}

fn ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

/// The directory of attach plans under a state root.
pub fn attach_dir(root: &Path) -> PathBuf {
    root.join("attach")
}

/// Records the step under way before it acts.
fn begin(st: &mut SandboxState, paths: &SandboxPaths, step: &str) {
    st.status = Status::Stopping;
    st.step = Some(step.to_string());
    if let Err(e) = st.save(paths) {
        tracing::error!("{e}");
    }
}

/// A step that failed: the error when strict; forced, one line in the report (and
/// whether it leaves something held), and the teardown goes on.
fn not_undone(
    mode: Mode,
    rep: &mut RemoveReport,
    id: &str,
    step: &'static str,
    err: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    held: bool,
) -> Result<(), TeardownError> {
    let err = err.into();
    match mode {
        Mode::Strict => Err(TeardownError::step(id, step, err)),
        Mode::Force => {
            rep.not_undone.push(format!("{step}: {err}"));
            rep.still_held |= held;
            Ok(())
        }
    }
}

/// The line for a DEL that could only release the addresses: what was not undone and why
/// nothing of it is held any more.
pub(crate) fn addresses_only(network: &str, c: &CniAttachment, ipam: &[String]) -> String {
    let ipam = if ipam.is_empty() {
        "no IPAM plugin".to_string()
    } else {
        ipam.join(", ")
    };
    format!(
        "CNI DEL {network} for {}: its plugins cannot run: the namespace they ran in ({}) is \
         gone, and what they made there went with it; released its addresses ({ipam}) and \
         forgot it",
        c.container_id,
        c.host_netns.display()
    )
}

/// Gives back the host side once QEMU is gone: detach, CNI DEL (through `pod_ns` when held,
/// so it runs while the namespace exists), then the namespace sandnet created. Stops at the
/// first failing step; what succeeded is recorded.
pub(crate) async fn release_host_side(
    root: &Path,
    paths: &SandboxPaths,
    st: &mut SandboxState,
    pod_ns: Option<NetNs>,
    rep: &mut RemoveReport,
) -> Result<(), TeardownError> {
    release(root, paths, st, pod_ns, rep, Mode::Strict).await
}

/// [`release_host_side`] in either [`Mode`].
async fn release(
    root: &Path,
    paths: &SandboxPaths,
    st: &mut SandboxState,
    pod_ns: Option<NetNs>,
    rep: &mut RemoveReport,
    mode: Mode,
) -> Result<(), TeardownError> {
    let id = st.id.clone();
    begin(st, paths, "detach");
    let t = Instant::now();
    match &pod_ns {
        Some(ns) => match sandnet_host::detach(ns, &attach_dir(root)).await {
            Ok(r) => rep.actions.extend(r.actions),
            Err(e) => not_undone(mode, rep, &id, "detach", e, true)?,
        },
        None => {
            // The namespace is gone, and with it every tap and filter in it.
            if let Some(nsid) = st.netns_id {
                if let Err(e) = sandnet_host::interwork::forget_state(&attach_dir(root), nsid) {
                    not_undone(mode, rep, &id, "forget attach state", e, false)?;
                }
            }
        }
    }
    rep.timings.insert("detach_ms".into(), ms(t));
    if let Some(c) = st.cni.clone() {
        begin(st, paths, "cni_del");
        let t = Instant::now();
        // Without the pod namespace, DEL runs without one: whatever the recorded path
        // holds now (nothing, a plain file, another namespace) is not it.
        let via = pod_ns.as_ref().map(fd_path);
        match podnet::cni_del(&c, via.as_deref()).await {
            Ok((name, DelScope::Full)) => rep
                .actions
                .push(format!("CNI DEL {name} for {}", c.container_id)),
            Ok((name, DelScope::AddressesOnly(ipam))) => {
                rep.not_undone.push(addresses_only(&name, &c, &ipam));
            }
            Err(e) if mode == Mode::Force => {
                // What can still be given back: the addresses, where the plugins ran.
                let also = match podnet::cni_release_addresses(&c).await {
                    Ok(ipam) if ipam.is_empty() => String::new(),
                    Ok(ipam) => format!(
                        "; released its addresses ({}); what its plugins made in {} is left",
                        ipam.join(", "),
                        c.host_netns.display()
                    ),
                    Err(e2) => format!("; releasing its addresses failed too: {e2}"),
                };
                rep.not_undone.push(format!("{e}{also}"));
                rep.still_held = true;
            }
            Err(e) => return Err(TeardownError::step(&id, "CNI DEL", e)),
        }
        rep.timings.insert("cni_del_ms".into(), ms(t));
        st.cni = None;
        if let Err(e) = st.save(paths) {
            tracing::error!("{e}");
        }
    }
    drop(pod_ns);
    if st.netns_created && !st.netns.is_empty() {
        begin(st, paths, "netns_delete");
        let t = Instant::now();
        match NetNs::delete(&st.netns) {
            Ok(()) => {
                rep.timings.insert("netns_ms".into(), ms(t));
                rep.actions
                    .push(format!("deleted network namespace {}", st.netns));
                st.netns_created = false;
                if let Err(e) = st.save(paths) {
                    tracing::error!("{e}");
                }
            }
            Err(e) => not_undone(mode, rep, &id, "delete network namespace", e, true)?,
        }
    }
    Ok(())
}

/// Ends a teardown: on success the record goes; on failure it stays, saying why.
pub(crate) fn finish(
    paths: &SandboxPaths,
    st: &mut SandboxState,
    r: Result<(), TeardownError>,
    rep: &mut RemoveReport,
) -> Result<(), TeardownError> {
    match r {
        Ok(()) => {
            if let (Some(vm), Some(root)) = (&st.factory_vm, paths.dir.parent()) {
                // The factory VM's own files (QEMU is gone by now).
                let d = crate::sandbox::factory_vm_dir(root, vm);
                match std::fs::remove_dir_all(&d) {
                    Ok(()) => rep.actions.push(format!("removed {}", d.display())),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(TeardownError::step(&st.id, "remove factory VM files", e))
                    }
                }
            }
            crate::shared::remove_sandbox_dir(paths)
                .map_err(|e| TeardownError::step(&st.id, "remove state", e))?;
            rep.actions.push(format!("removed {}", paths.dir.display()));
            Ok(())
        }
        Err(e) => {
            st.status = Status::TeardownFailed;
            st.error = Some(match &e {
                TeardownError::Step { step, source, .. } => format!("{step}: {source}"),
                other => other.to_string(),
            });
            st.step = None;
            if let Err(se) = st.save(paths) {
                tracing::error!("{se}");
            }
            Err(e)
        }
    }
}

/// Kills `pid` and waits (bounded) until it is gone or a zombie.
pub(crate) async fn kill_and_wait(pid: u32) -> bool {
    let p = nix::unistd::Pid::from_raw(pid as i32);
    let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGKILL);
    for _ in 0..500 {
        let gone = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true);
        if gone {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Tears a sandbox down from its persisted state, with its lock held (so its supervisor
/// is gone): kills what is left of its processes, then gives back the host side.
pub async fn cleanup_locked(
    root: &Path,
    st: &mut SandboxState,
    rep: &mut RemoveReport,
) -> Result<(), TeardownError> {
    cleanup(root, st, rep, Mode::Strict).await
}

/// [`cleanup_locked`] in either [`Mode`]: forced, it always ends with the record gone
/// (unless the record itself cannot be removed).
pub async fn cleanup(
    root: &Path,
    st: &mut SandboxState,
    rep: &mut RemoveReport,
    mode: Mode,
) -> Result<(), TeardownError> {
    let paths = SandboxPaths::new(root, &st.id);
    // Reach the pod namespace before anything is killed: QEMU runs inside it, and the
    // recorded path may no longer lead to it.
    let pod_ns = reach_netns(root, st);
    begin(st, &paths, "qemu_stop");
    let t = Instant::now();
    let mut r = Ok(());
    for (what, alive, pid) in [
        ("supervisor", st.supervisor_alive(), st.supervisor_pid),
        ("QEMU", st.qemu_alive(root), st.qemu_pid),
    ] {
        if let (true, Some(pid)) = (alive, pid) {
            if kill_and_wait(pid).await {
                rep.actions.push(format!("killed {what} (pid {pid})"));
            } else if r.is_ok() {
                let msg = format!("{what} (pid {pid}) does not die");
                r = not_undone(mode, rep, &st.id, "stop QEMU", msg, true);
            }
        }
    }
    rep.timings.insert("qemu_stop_ms".into(), ms(t));
    if r.is_ok() {
        r = release(root, &paths, st, pod_ns, rep, mode).await;
    }
    finish(&paths, st, r, rep)
}

/// The health of a sandbox from its record, `Unreadable` when it cannot be read.
pub fn health_of(root: &Path, id: &str) -> (Option<SandboxState>, Health) {
    match SandboxState::load(root, id) {
        Ok(st) => {
            let h = st.health(root);
            (Some(st), h)
        }
        Err(e) => (None, Health::Unreadable(e.to_string())),
    }
}
