//! Finding plugin binaries and running them as child processes.

use crate::error::CniError;
use std::os::fd::RawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How much of stderr an error keeps (its end).
const STDERR_TAIL: usize = 2048;
/// How much of a non-JSON stdout an error keeps (its start).
const STDOUT_HEAD: usize = 512;
/// How long to wait for the pipes to close once the plugin has been killed.
const DRAIN_AFTER_KILL: Duration = Duration::from_secs(2);

/// The first `dir/plugin` that is a regular file.
pub(crate) fn find_plugin(plugin: &str, dirs: &[PathBuf]) -> Result<PathBuf, CniError> {
    if plugin.is_empty() || plugin.contains('/') {
        return Err(CniError::PluginNotFound {
            plugin: plugin.to_string(),
            dirs: dirs.to_vec(),
        });
    }
    for d in dirs {
        let p = d.join(plugin);
        if std::fs::metadata(&p).is_ok_and(|m| m.is_file()) {
            return Ok(p);
        }
    }
    Err(CniError::PluginNotFound {
        plugin: plugin.to_string(),
        dirs: dirs.to_vec(),
    })
}

/// One plugin execution.
pub(crate) struct Invocation<'a> {
    /// The plugin's `type` (for messages).
    pub plugin: &'a str,
    /// Its binary.
    pub path: &'a Path,
    /// `CNI_COMMAND`.
    pub command: &'static str,
    /// The `CNI_*` variables.
    pub env: Vec<(&'static str, String)>,
    /// The configuration written to stdin.
    pub stdin: Vec<u8>,
}

/// Runs a plugin: config on stdin, `CNI_*` in the environment (the rest of this process's
/// environment is inherited: plugins need `PATH` to find `iptables`), in its own process
/// group so that a timeout kills it together with the IPAM plugin it may have started.
/// With `netns`, the child enters that network namespace before `exec`.
///
/// Returns stdout on success; a failure becomes [`CniError::Plugin`] (error object on
/// stdout) or [`CniError::PluginFailed`].
pub(crate) async fn run(
    inv: Invocation<'_>,
    timeout: Duration,
    netns: Option<RawFd>,
) -> Result<Vec<u8>, CniError> {
    let mut cmd = tokio::process::Command::new(inv.path);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("CNI_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(inv.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(fd) = netns {
        // SAFETY: the closure runs in the forked child before exec and only calls
        // async-signal-safe functions (setns, errno access).
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    // A binary that is still open for writing somewhere (a freshly written plugin, or a
    // forked child of another thread holding the write fd until its exec) fails with
    // ETXTBSY; libcni retries, and so do we.
    let mut attempt = 0;
    let mut child = loop {
        match cmd.spawn() {
            Ok(c) => break c,
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < 20 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
            }
            Err(e) => {
                return Err(CniError::Spawn {
                    plugin: inv.plugin.to_string(),
                    path: inv.path.to_path_buf(),
                    command: inv.command,
                    source: e,
                })
            }
        }
    };
    let pid = child.id().and_then(|p| i32::try_from(p).ok());

    let stdin = child.stdin.take();
    let data = inv.stdin;
    let in_task = tokio::spawn(async move {
        if let Some(mut s) = stdin {
            // A plugin that does not read its stdin (or exits early) is not our error.
            let _ = s.write_all(&data).await;
            let _ = s.shutdown().await;
        }
    });
    let out_task = tokio::spawn(read_all(child.stdout.take()));
    let err_task = tokio::spawn(read_all(child.stderr.take()));

    let deadline = tokio::time::Instant::now() + timeout;
    let waited = tokio::time::timeout_at(deadline, child.wait()).await;
    let status: ExitStatus = match waited {
        Ok(Ok(st)) => st,
        Ok(Err(e)) => {
            kill_group(pid);
            let _ = child.kill().await;
            in_task.abort();
            return Err(CniError::Spawn {
                plugin: inv.plugin.to_string(),
                path: inv.path.to_path_buf(),
                command: inv.command,
                source: e,
            });
        }
        Err(_) => {
            kill_group(pid);
            let _ = child.kill().await;
            in_task.abort();
            out_task.abort();
            let stderr = drain(err_task).await;
            return Err(CniError::Timeout {
                plugin: inv.plugin.to_string(),
                command: inv.command,
                timeout,
                stderr: tail(&stderr),
            });
        }
    };
    in_task.abort();
    // The plugin has exited, but something it started may still hold the pipes open.
    let stdout = match tokio::time::timeout_at(deadline, out_task).await {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => Vec::new(),
        Err(_) => {
            kill_group(pid);
            let stderr = drain(err_task).await;
            return Err(CniError::Timeout {
                plugin: inv.plugin.to_string(),
                command: inv.command,
                timeout,
                stderr: tail(&stderr),
            });
        }
    };
    let stderr = drain(err_task).await;
    if !stderr.is_empty() {
        tracing::debug!(
            plugin = inv.plugin,
            command = inv.command,
            "plugin stderr: {}",
            String::from_utf8_lossy(&stderr).trim_end()
        );
    }
    if status.success() {
        return Ok(stdout);
    }
    Err(plugin_error(
        inv.plugin,
        inv.command,
        status,
        &stdout,
        &stderr,
    ))
}

async fn read_all<R: tokio::io::AsyncRead + Unpin>(r: Option<R>) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(mut r) = r {
        let _ = r.read_to_end(&mut buf).await;
    }
    buf
}

async fn drain(task: tokio::task::JoinHandle<Vec<u8>>) -> Vec<u8> {
    let abort = task.abort_handle();
    match tokio::time::timeout(DRAIN_AFTER_KILL, task).await {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => Vec::new(),
        Err(_) => {
            abort.abort();
            Vec::new()
        }
    }
}

fn kill_group(pid: Option<i32>) {
    if let Some(pid) = pid.filter(|p| *p > 0) {
        // SAFETY: plain syscall; the group was created for this child (process_group(0)).
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

/// The last [`STDERR_TAIL`] bytes of stderr, as text.
fn tail(b: &[u8]) -> String {
    let start = b.len().saturating_sub(STDERR_TAIL);
    let s = String::from_utf8_lossy(&b[start..]).trim().to_string();
    if start > 0 {
        format!("…{s}")
    } else {
        s
    }
}

fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        format!("exit status {code}")
    } else if let Some(sig) = status.signal() {
        format!("killed by signal {sig}")
    } else {
        status.to_string()
    }
}

/// A failed plugin's error: the CNI error object from stdout when there is one.
pub(crate) fn plugin_error(
    plugin: &str,
    command: &'static str,
    status: ExitStatus,
    stdout: &[u8],
    stderr: &[u8],
) -> CniError {
    if let Ok(serde_json::Value::Object(m)) = serde_json::from_slice(stdout) {
        if m.contains_key("code") || m.contains_key("msg") {
            let code = m
                .get("code")
                .and_then(|c| c.as_u64())
                .and_then(|c| u32::try_from(c).ok())
                .unwrap_or(0);
            let text = |k: &str| {
                m.get(k)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            let mut msg = text("msg");
            if msg.is_empty() {
                msg = format!("(no message, {})", describe(status));
            }
            return CniError::Plugin {
                plugin: plugin.to_string(),
                command,
                code,
                msg,
                details: text("details"),
                stderr: tail(stderr),
            };
        }
    }
    let head_end = stdout.len().min(STDOUT_HEAD);
    CniError::PluginFailed {
        plugin: plugin.to_string(),
        command,
        status: describe(status),
        stdout: String::from_utf8_lossy(&stdout[..head_end])
            .trim()
            .to_string(),
        stderr: tail(stderr),
    }
}
