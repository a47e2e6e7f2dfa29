//! How a supervisor tells `run` what it is doing: one JSON line per step on its stdout,
//! then the result (or why it failed after rolling back); and how it notices that nobody
//! reads any more (the `run` process died).

use crate::spec::RunOutput;
use serde::{Deserialize, Serialize};
use std::os::fd::AsFd;
use std::time::Duration;

/// The single line a supervisor writes to its stdout when it is ready or has given up.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub(crate) enum Ready {
    /// A step started.
    Progress {
        /// Its name.
        step: String,
    },
    /// The sandbox is ready.
    Ok {
        /// What `run` reports.
        output: RunOutput,
    },
    /// It failed and was rolled back (as far as it could be).
    Failed {
        /// Why.
        error: String,
    },
}

/// Resolves when nobody reads our stdout any more (the `run` process died): a pipe whose
/// reading end is closed polls as POLLERR on the writing end.
pub(crate) async fn reader_gone() {
    use std::os::fd::AsRawFd;
    loop {
        let mut p = libc::pollfd {
            fd: std::io::stdout().as_raw_fd(),
            events: 0,
            revents: 0,
        };
        // SAFETY: polling one valid pollfd without waiting.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        if n > 0 && p.revents & (libc::POLLERR | libc::POLLHUP) != 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) fn report(r: &Ready) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, r);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

/// After reporting, stdout's reader (the `run` process) goes away: point stdout at
/// /dev/null so nothing later can die of SIGPIPE.
pub(crate) fn silence_stdout() {
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(null.as_fd());
    }
}

/// Tells the `run` process (reading our stdout) which step is under way.
pub(crate) fn progress(step: &str) {
    report(&Ready::Progress {
        step: step.to_string(),
    });
}
