//! Tearing a sandbox down — by its supervisor, or from its persisted state when the
//! supervisor is gone — and `rm`.
//!
//! The order is the CNI spec's and containerd's: QEMU stopped, taps and filters undone,
//! CNI DEL while the pod namespace still exists, and only after DEL succeeded the
//! namespace sandnet created. Each step is recorded in the state file before it acts and
//! its result after, so a kill at any point leaves a record that says what is left. A step
//! that fails stops the teardown: the record is kept (status `teardown-failed`, with the
//! reason) and a later `rm` or `gc` retries exactly what is left.

use crate::lock::SandboxLock;
use crate::podnet::{self, fd_path, owned_name, reach_netns};
use crate::sandbox::{self, Health, SandboxPaths, SandboxState, Status};
use sandnet_host::{NetNs, NetNsRef};
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
    fn step(
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
    let id = st.id.clone();
    begin(st, paths, "detach");
    let t = Instant::now();
    match &pod_ns {
        Some(ns) => {
            let r = sandnet_host::detach(ns, &attach_dir(root))
                .await
                .map_err(|e| TeardownError::step(&id, "detach", e))?;
            rep.actions.extend(r.actions);
        }
        None => {
            // The namespace is gone, and with it every tap and filter in it.
            if let Some(nsid) = st.netns_id {
                sandnet_host::interwork::forget_state(&attach_dir(root), nsid)
                    .map_err(|e| TeardownError::step(&id, "forget attach state", e))?;
            }
        }
    }
    rep.timings.insert("detach_ms".into(), ms(t));
    if let Some(c) = st.cni.clone() {
        begin(st, paths, "cni_del");
        let t = Instant::now();
        let via = pod_ns.as_ref().map(fd_path);
        let name = podnet::cni_del(&c, via.as_deref().unwrap_or(&st.netns_path))
            .await
            .map_err(|e| TeardownError::step(&id, "CNI DEL", e))?;
        rep.timings.insert("cni_del_ms".into(), ms(t));
        rep.actions
            .push(format!("CNI DEL {name} for {}", c.container_id));
        st.cni = None;
        if let Err(e) = st.save(paths) {
            tracing::error!("{e}");
        }
    }
    drop(pod_ns);
    if st.netns_created && !st.netns.is_empty() {
        begin(st, paths, "netns_delete");
        let t = Instant::now();
        NetNs::delete(&st.netns)
            .map_err(|e| TeardownError::step(&id, "delete network namespace", e))?;
        rep.timings.insert("netns_ms".into(), ms(t));
        rep.actions
            .push(format!("deleted network namespace {}", st.netns));
        st.netns_created = false;
        if let Err(e) = st.save(paths) {
            tracing::error!("{e}");
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
            } else {
                r = Err(TeardownError::step(
                    &st.id,
                    "stop QEMU",
                    format!("{what} (pid {pid}) does not die"),
                ));
            }
        }
    }
    rep.timings.insert("qemu_stop_ms".into(), ms(t));
    if r.is_ok() {
        r = release_host_side(root, &paths, st, pod_ns, rep).await;
    }
    finish(&paths, st, r, rep)
}

/// Pids of the processes that belong to sandbox `id` under `root`, found by their command
/// lines (for records that cannot be read): its supervisor and its QEMU.
fn processes_of(root: &Path, id: &str) -> Vec<(u32, &'static str)> {
    let dir = SandboxPaths::new(root, id).dir.display().to_string();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    let me = std::process::id();
    rd.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| n.parse::<u32>().ok())
        .filter(|&p| p != me)
        .filter_map(|pid| {
            if sandbox::cmdline_has(pid, &["__supervise", id]) {
                Some((pid, "supervisor"))
            } else if sandbox::cmdline_has(pid, &["qemu", &dir]) {
                Some((pid, "QEMU"))
            } else {
                None
            }
        })
        .collect()
}

/// `rm --force` of a sandbox whose record cannot be read: removes what can be found — its
/// processes by their command lines, taps and filters by the marks in its namespace, the
/// CNI attachment and namespace its spec asked for — then the record.
async fn cleanup_unreadable(
    root: &Path,
    id: &str,
    rep: &mut RemoveReport,
) -> Result<(), TeardownError> {
    let paths = SandboxPaths::new(root, id);
    let spec = crate::spec::RunSpec::load(&paths).ok();
    let procs = processes_of(root, id);
    // The namespace: through QEMU (inside it), or where the spec said, or the one sandnet
    // names for this sandbox when the spec asked for a new one.
    let mut cands: Vec<String> = procs
        .iter()
        .filter(|(_, w)| *w == "QEMU")
        .map(|(p, _)| format!("/proc/{p}/ns/net"))
        .collect();
    match spec.as_ref().map(|s| s.netns.clone()) {
        Some(Some(n)) => cands.push(n),
        _ => cands.push(owned_name(id)),
    }
    let pod_ns = cands
        .iter()
        .find_map(|c| c.parse::<NetNsRef>().and_then(|r| NetNs::open(&r)).ok());
    for (pid, what) in procs {
        if !kill_and_wait(pid).await {
            return Err(TeardownError::step(
                id,
                "stop processes",
                format!("{what} (pid {pid}) does not die"),
            ));
        }
        rep.actions.push(format!("killed {what} (pid {pid})"));
    }
    if let Some(ns) = &pod_ns {
        let r = sandnet_host::detach(ns, &attach_dir(root))
            .await
            .map_err(|e| TeardownError::step(id, "detach", e))?;
        rep.actions.extend(r.actions);
    }
    if let Some(c) = spec.as_ref().and_then(|s| s.cni.clone()) {
        let via = pod_ns.as_ref().map(fd_path);
        let fallback = PathBuf::from(sandnet_host::netns::NETNS_RUN_DIR).join(owned_name(id));
        let mut c = c;
        if c.host_netns.as_os_str().is_empty() {
            c.host_netns = PathBuf::from("/proc/self/ns/net");
        }
        let name = podnet::cni_del(&c, via.as_deref().unwrap_or(&fallback))
            .await
            .map_err(|e| TeardownError::step(id, "CNI DEL", e))?;
        rep.actions
            .push(format!("CNI DEL {name} for {}", c.container_id));
    }
    drop(pod_ns);
    if matches!(spec.as_ref().map(|s| &s.netns), Some(None)) {
        let name = owned_name(id);
        NetNs::delete(&name).map_err(|e| TeardownError::step(id, "delete network namespace", e))?;
        rep.actions
            .push(format!("deleted network namespace {name}"));
    }
    crate::shared::remove_sandbox_dir(&paths)
        .map_err(|e| TeardownError::step(id, "remove state", e))?;
    rep.actions.push(format!("removed {}", paths.dir.display()));
    Ok(())
}

/// Removes a sandbox: through its supervisor while it lives (it tears down and exits),
/// otherwise from the persisted state — never two teardowns at once. Idempotent: an
/// unknown id is reported, not an error. A failed step is an error and keeps the record.
pub async fn remove(root: &Path, id: &str, force: bool) -> Result<RemoveReport, TeardownError> {
    let t0 = Instant::now();
    let mut rep = RemoveReport::default();
    let r = remove_in(root, id, force, &mut rep).await;
    rep.timings.insert("total_ms".into(), ms(t0));
    r.map(|()| rep)
}

async fn remove_in(
    root: &Path,
    id: &str,
    force: bool,
    rep: &mut RemoveReport,
) -> Result<(), TeardownError> {
    let paths = SandboxPaths::new(root, id);
    let lock_err = |e: crate::lock::LockError| TeardownError::step(id, "lock", e);
    // Opened once: waiting on this descriptor waits for a supervisor to let go even after
    // it removed the directory.
    let handle = match SandboxLock::open(&paths.dir) {
        Ok(h) => h,
        Err(_) if !paths.dir.exists() => {
            rep.not_found = true;
            return Ok(());
        }
        Err(e) => return Err(lock_err(e)),
    };
    let lock = match handle.try_lock().map_err(lock_err)? {
        Ok(l) => l,
        Err(_) if unreadable(root, id).is_some() => {
            // Held, and the record is unreadable: nobody can be asked. Only with --force
            // are its supervisors killed (QEMU stays until its namespace is reached).
            if !force {
                return Err(TeardownError::Unreadable {
                    id: id.to_string(),
                    why: unreadable(root, id).unwrap_or_default(),
                });
            }
            for (pid, what) in processes_of(root, id) {
                if what == "supervisor" {
                    kill_and_wait(pid).await;
                    rep.actions.push(format!("killed supervisor (pid {pid})"));
                }
            }
            SandboxLock::acquire_within(&paths.dir, Duration::from_secs(5))
                .await
                .map_err(lock_err)?
                .ok_or_else(|| TeardownError::Busy {
                    id: id.to_string(),
                    why: "another sandnet holds it".into(),
                })?
        }
        Err(handle) => {
            // Its supervisor (or another rm/gc) is at work: ask it, then wait for it.
            crate::client::ask_to_stop(root, id, force, rep).await?;
            match handle.lock_within(STOP_WAIT).await {
                Ok(Some(l)) => l,
                Ok(None) if force => {
                    for (pid, _) in processes_of(root, id) {
                        kill_and_wait(pid).await;
                    }
                    match SandboxLock::acquire_within(&paths.dir, Duration::from_secs(5)).await {
                        Ok(Some(l)) => l,
                        Err(_) if !paths.dir.exists() => return Ok(()),
                        Ok(None) => {
                            return Err(TeardownError::Busy {
                                id: id.to_string(),
                                why: "another sandnet holds it".into(),
                            })
                        }
                        Err(e) => return Err(lock_err(e)),
                    }
                }
                Ok(None) => {
                    return Err(TeardownError::Busy {
                        id: id.to_string(),
                        why: format!(
                            "its supervisor did not finish within {}s (`rm --force` kills it)",
                            STOP_WAIT.as_secs()
                        ),
                    })
                }
                // The supervisor finished and removed the directory.
                Err(_) if !paths.dir.exists() => return Ok(()),
                Err(e) => return Err(lock_err(e)),
            }
        }
    };
    if !paths.dir.exists() {
        return Ok(()); // the supervisor removed it
    }
    let r = match SandboxState::load(root, id) {
        Ok(mut st) => cleanup_locked(root, &mut st, rep).await,
        Err(sandbox::SandboxError::NotFound(_)) => {
            // A directory whose supervisor never recorded anything: nothing was created.
            crate::shared::remove_sandbox_dir(&paths)
                .map_err(|e| TeardownError::step(id, "remove state", e))?;
            rep.actions
                .push(format!("removed incomplete {}", paths.dir.display()));
            Ok(())
        }
        Err(e) if force => {
            rep.actions.push(format!("record unreadable: {e}"));
            cleanup_unreadable(root, id, rep).await
        }
        Err(e) => Err(TeardownError::Unreadable {
            id: id.to_string(),
            why: e.to_string(),
        }),
    };
    drop(lock);
    r
}

/// Why a sandbox's record cannot be read, when it exists and cannot.
fn unreadable(root: &Path, id: &str) -> Option<String> {
    match SandboxState::load(root, id) {
        Err(sandbox::SandboxError::NotFound(_)) | Ok(_) => None,
        Err(e) => Some(e.to_string()),
    }
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
