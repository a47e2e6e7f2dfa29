//! Running commands for `sandnet.Exec`, and reaping every child (the agent is PID 1 in a
//! guest, so orphans are re-parented to it).
//!
//! One reaper owns `waitpid(-1)`: it runs on `SIGCHLD`, collects every exited child and
//! hands the status to whoever registered that pid; unregistered ones (orphans) are just
//! reaped. Commands are spawned under the registry lock, so the reaper cannot miss a
//! registration.

use crate::error::{AgentError, Result};
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

/// Largest amount of stdout or stderr kept per command (the rest is dropped).
pub const MAX_OUTPUT: usize = 1 << 20;

/// The exit statuses children are waited for with.
#[derive(Clone, Default)]
pub struct Reaper {
    waiters: Arc<Mutex<HashMap<i32, oneshot::Sender<i32>>>>,
}

fn exit_code(ws: WaitStatus) -> Option<(i32, i32)> {
    match ws {
        WaitStatus::Exited(pid, code) => Some((pid.as_raw(), code)),
        WaitStatus::Signaled(pid, sig, _) => Some((pid.as_raw(), 128 + sig as i32)),
        _ => None,
    }
}

impl Reaper {
    /// Starts the reaper task on the current runtime.
    pub fn start() -> std::io::Result<Reaper> {
        let r = Reaper::default();
        let mut sig = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
        let me = r.clone();
        tokio::spawn(async move {
            loop {
                me.reap_all();
                // A periodic sweep too, in case a signal was coalesced before the handler
                // was installed.
                let _ = tokio::time::timeout(Duration::from_secs(1), sig.recv()).await;
            }
        });
        Ok(r)
    }

    fn reap_all(&self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(ws) => {
                    if let Some((pid, code)) = exit_code(ws) {
                        let tx = match self.waiters.lock() {
                            Ok(mut m) => m.remove(&pid),
                            Err(p) => p.into_inner().remove(&pid),
                        };
                        match tx {
                            Some(tx) => {
                                let _ = tx.send(code);
                            }
                            None => tracing::debug!(pid, code, "reaped orphan"),
                        }
                    }
                }
            }
        }
    }

    /// Spawns `cmd` and registers its pid before the reaper can collect it: the receiver
    /// gets its exit status (128 + N when signal N killed it). Nobody else may wait for
    /// the process (the `Child` is for its pipes).
    pub fn spawn(
        &self,
        cmd: &mut Command,
    ) -> std::io::Result<(std::process::Child, oneshot::Receiver<i32>)> {
        let (tx, rx) = oneshot::channel();
        let mut w = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        let child = cmd.spawn()?;
        w.insert(child.id() as i32, tx);
        Ok((child, rx))
    }

    /// Runs `args` with `env` added, feeding `stdin`, until it exits or `timeout` passes
    /// (then its process group is killed and the result is DEADLINE_EXCEEDED).
    pub async fn run(
        &self,
        args: &[String],
        env: &[String],
        stdin: Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<(i32, Vec<u8>, Vec<u8>)> {
        let Some(prog) = args.first().filter(|a| !a.is_empty()) else {
            return Err(AgentError::Invalid("exec: args is empty".into()));
        };
        let mut cmd = Command::new(prog);
        cmd.args(&args[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        for kv in env {
            match kv.split_once('=') {
                Some((k, v)) if !k.is_empty() => {
                    cmd.env(k, v);
                }
                _ => {
                    return Err(AgentError::Invalid(format!(
                        "exec: env entry {kv:?} is not KEY=VALUE"
                    )))
                }
            }
        }
        let (mut child, rx) = self.spawn(&mut cmd).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                AgentError::NotFound(format!("exec: {prog}: command not found"))
            }
            _ => AgentError::io(format!("exec: {prog}"), e),
        })?;
        let pid = child.id() as i32;
        let io_err = |e| AgentError::io("exec: pipe", e);
        let mut cin = child
            .stdin
            .take()
            .map(tokio::process::ChildStdin::from_std)
            .transpose()
            .map_err(io_err)?;
        let out = child
            .stdout
            .take()
            .map(tokio::process::ChildStdout::from_std)
            .transpose()
            .map_err(io_err)?;
        let err = child
            .stderr
            .take()
            .map(tokio::process::ChildStderr::from_std)
            .transpose()
            .map_err(io_err)?;

        let feed = async move {
            if let Some(c) = cin.as_mut() {
                // A command that does not read its stdin is not an error.
                let _ = c.write_all(&stdin).await;
            }
            drop(cin);
        };
        let work = async {
            let (_, o, e, code) = tokio::join!(feed, read_capped(out), read_capped(err), rx);
            (o, e, code)
        };
        let res = match timeout {
            Some(t) => tokio::time::timeout(t, work).await.ok(),
            None => Some(work.await),
        };
        match res {
            Some((o, e, Ok(code))) => Ok((code, o, e)),
            Some((_, _, Err(_))) => Err(AgentError::io(
                "exec: wait",
                std::io::Error::other("reaper dropped the child's status"),
            )),
            None => {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                Err(AgentError::Deadline(format!(
                    "exec: {prog} did not finish within {:?}; killed",
                    timeout.unwrap_or_default()
                )))
            }
        }
    }
}

async fn read_capped<R: tokio::io::AsyncRead + Unpin>(r: Option<R>) -> Vec<u8> {
    let mut out = Vec::new();
    let Some(mut r) = r else { return out };
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => {
                let room = MAX_OUTPUT.saturating_sub(out.len());
                out.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}
