//! `rm`: removing a sandbox — through its supervisor while it lives, otherwise from its
//! persisted state, never two teardowns at once — and, with `--force`, whatever happens:
//! a supervisor that fails or does not let go, a record that cannot be read, steps that
//! cannot be undone (reported, see [`teardown::Mode::Force`]).

use crate::control::{self, Request, Response};
use crate::lock::SandboxLock;
use crate::podnet::{self, owned_name, DelScope};
use crate::sandbox::{self, SandboxPaths, SandboxState, Status};
use crate::teardown::{
    self, attach_dir, kill_and_wait, Mode, RemoveReport, TeardownError, STOP_WAIT,
};
use sandnet_host::{NetNs, NetNsRef};
use std::path::Path;
use std::time::{Duration, Instant};

fn ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
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
/// CNI attachment and namespace its spec asked for — then the record. What cannot be
/// undone is reported and the removal goes on.
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
    let left = |rep: &mut RemoveReport, line: String| {
        rep.not_undone.push(line);
        rep.still_held = true;
    };
    for (pid, what) in procs {
        if kill_and_wait(pid).await {
            rep.actions.push(format!("killed {what} (pid {pid})"));
        } else {
            left(
                rep,
                format!("stop processes: {what} (pid {pid}) does not die"),
            );
        }
    }
    if let Some(ns) = &pod_ns {
        match sandnet_host::detach(ns, &attach_dir(root)).await {
            Ok(r) => rep.actions.extend(r.actions),
            Err(e) => left(rep, format!("detach: {e}")),
        }
    }
    if let Some(mut c) = spec.as_ref().and_then(|s| s.cni.clone()) {
        let via = pod_ns.as_ref().map(podnet::fd_path);
        if c.host_netns.as_os_str().is_empty() {
            c.host_netns = std::path::PathBuf::from("/proc/self/ns/net");
        }
        match podnet::cni_del(&c, via.as_deref()).await {
            Ok((name, DelScope::Full)) => rep
                .actions
                .push(format!("CNI DEL {name} for {}", c.container_id)),
            Ok((name, DelScope::AddressesOnly(ipam))) => rep
                .not_undone
                .push(teardown::addresses_only(&name, &c, &ipam)),
            Err(e) => {
                let also = match podnet::cni_release_addresses(&c).await {
                    Ok(_) => "; released its addresses".to_string(),
                    Err(e2) => format!("; releasing its addresses failed too: {e2}"),
                };
                left(rep, format!("{e}{also}"));
            }
        }
    }
    drop(pod_ns);
    if matches!(spec.as_ref().map(|s| &s.netns), Some(None)) {
        let name = owned_name(id);
        match NetNs::delete(&name) {
            Ok(()) => rep
                .actions
                .push(format!("deleted network namespace {name}")),
            Err(e) => left(rep, format!("delete network namespace: {e}")),
        }
    }
    crate::shared::remove_sandbox_dir(&paths)
        .map_err(|e| TeardownError::step(id, "remove state", e))?;
    rep.actions.push(format!("removed {}", paths.dir.display()));
    Ok(())
}

/// Removes a sandbox: through its supervisor while it lives (it tears down and exits),
/// otherwise from the persisted state — never two teardowns at once. Idempotent: an
/// unknown id is reported, not an error. A failed step is an error and keeps the record
/// for a retry. `force` kills the VM at once, and a supervisor that does not let go.
pub async fn remove(root: &Path, id: &str, force: bool) -> Result<RemoveReport, TeardownError> {
    removal(root, id, force, Mode::Strict).await
}

/// `rm --force`: [`remove`] with `force` that always ends with the record gone. A step
/// that fails is reported in [`RemoveReport::not_undone`] and the rest goes on; check
/// [`RemoveReport::still_held`]. Only a record that cannot be removed, or a sandbox
/// someone else holds, is an error.
pub async fn remove_converging(root: &Path, id: &str) -> Result<RemoveReport, TeardownError> {
    removal(root, id, true, Mode::Force).await
}

async fn removal(
    root: &Path,
    id: &str,
    force: bool,
    mode: Mode,
) -> Result<RemoveReport, TeardownError> {
    let t0 = Instant::now();
    let mut rep = RemoveReport::default();
    let r = remove_in(root, id, force, mode, &mut rep).await;
    rep.timings.insert("total_ms".into(), ms(t0));
    r.map(|()| rep)
}

async fn remove_in(
    root: &Path,
    id: &str,
    force: bool,
    mode: Mode,
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
            match ask_to_stop(root, id, force, rep).await {
                // Converging, what it could not do is done from its record once it let go.
                Err(e) if mode == Mode::Force => rep
                    .actions
                    .push(format!("its supervisor's teardown failed ({e}); going on")),
                r => r?,
            }
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
        Ok(mut st) => teardown::cleanup(root, &mut st, rep, mode).await,
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

/// Asks the supervisor of a sandbox someone holds the lock of to tear it down: over its
/// control socket once it serves, with SIGTERM while it is still starting (it then rolls
/// back). Does nothing when no supervisor of this sandbox runs (another `rm`/`gc` holds
/// the lock); the caller then waits for the lock.
async fn ask_to_stop(
    root: &Path,
    id: &str,
    force: bool,
    rep: &mut RemoveReport,
) -> std::result::Result<(), TeardownError> {
    let Ok(st) = SandboxState::load(root, id) else {
        return Ok(());
    };
    if !st.supervisor_alive() {
        return Ok(());
    }
    let paths = SandboxPaths::new(root, id);
    match st.status {
        Status::Running | Status::QemuExited => {
            match control::call(id, &paths.ctl, &Request::Stop { force }, STOP_WAIT).await {
                Ok(Response::Stopped {
                    actions,
                    timings,
                    error,
                }) => {
                    rep.actions.extend(actions);
                    rep.timings.extend(timings);
                    if let Some(message) = error {
                        return Err(TeardownError::Supervisor {
                            id: id.to_string(),
                            message,
                        });
                    }
                }
                Ok(other) => tracing::warn!("supervisor of {id} answered {other:?}"),
                Err(e) => tracing::warn!("supervisor of {id}: {e}"),
            }
        }
        Status::Creating => {
            if let Some(pid) = st.supervisor_pid {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
                rep.actions.push(format!(
                    "asked the starting supervisor (pid {pid}) to roll back"
                ));
            }
        }
        _ => {}
    }
    Ok(())
}
