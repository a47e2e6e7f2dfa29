//! Talking to a sandbox's supervisor from outside: questions for a running sandbox
//! (asking one to stop belongs to `rm`).

use crate::control::{self, Request, Response};
use crate::error::{Result, RuntimeError};
use crate::sandbox::{Health, SandboxPaths, SandboxState};
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
