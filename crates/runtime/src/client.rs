//! Talking to a sandbox's supervisor from outside: questions for a running sandbox, and
//! asking one to stop.

use crate::control::{self, Request, Response};
use crate::error::{Result, RuntimeError};
use crate::sandbox::{Health, SandboxPaths, SandboxState, Status};
use crate::teardown::{self, RemoveReport, TeardownError};
use std::path::Path;
use std::time::Duration;

/// Asks a live supervisor something; a clear error when it is not there.
pub async fn ask(root: &Path, id: &str, req: &Request, timeout: Duration) -> Result<Response> {
    let st = SandboxState::load(root, id)?;
    let health = st.health(root);
    let gone = if !st.supervisor_alive() {
        Some("its supervisor is not running")
    } else if health == Health::QemuExited {
        // The supervisor lives on, but its agent connection is dead: say so rather than
        // pass on a transport error.
        Some("its VM is not running")
    } else {
        None
    };
    if let Some(why) = gone {
        return Err(RuntimeError::NotRunning {
            id: id.to_string(),
            health,
            why,
        });
    }
    let paths = SandboxPaths::new(root, id);
    Ok(control::call(id, &paths.ctl, req, timeout).await?)
}

/// Asks the supervisor of a sandbox someone holds the lock of to tear it down: over its
/// control socket once it serves, with SIGTERM while it is still starting (it then rolls
/// back). Does nothing when no supervisor of this sandbox runs (another `rm`/`gc` holds
/// the lock); the caller then waits for the lock.
pub(crate) async fn ask_to_stop(
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
            match control::call(
                id,
                &paths.ctl,
                &Request::Stop { force },
                teardown::STOP_WAIT,
            )
            .await
            {
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
