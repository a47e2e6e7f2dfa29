//! Starting helpers (`/proc/self/exe __container-init`, see `init`) and following them
//! through setup: a new container up to `ready`, Start up to the exec, an exec'd process
//! up to its exec. What a failure leaves (the helper, its child, the cgroup) is removed
//! before the call returns, and also when the call is dropped half-way.

use super::channel::{self, AgentEnd, ErrorKind, Record};
use super::init::{CHANNEL_FD, HELPER_ARG, NS_FDS, PLAN_FD};
use super::spec::Plan;
use super::stdio::{self, Stdio};
use super::{cgroup, err, Proc};
use crate::error::{AgentError, Result};
use crate::exec::Reaper;
use sandnet_agent_proto::ttrpc::Code;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio as StdStdio};
use tokio::sync::watch;

/// A running helper, not yet past setup.
pub struct Spawned {
    /// The helper's pid.
    pub helper: i32,
    /// Its exit status once it has exited.
    pub exit: watch::Receiver<Option<i32>>,
    /// The agent's end of the channel.
    pub chan: AgentEnd,
    /// The agent's ends of the stdio pipes (no terminal).
    pub pipes: Option<[OwnedFd; 3]>,
}

/// Puts `pairs` (source, target) at their target numbers in a freshly forked child.
/// Sources are first moved above every target, so none is overwritten before it is
/// copied. Async-signal-safe: no allocation.
fn remap(pairs: &[(RawFd, RawFd)]) -> std::io::Result<()> {
    let mut tmp = [0 as RawFd; 8];
    for (i, (src, _)) in pairs.iter().enumerate().take(tmp.len()) {
        // SAFETY: fcntl on a descriptor the parent keeps open until the spawn returns.
        tmp[i] = unsafe { libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, 16) };
        if tmp[i] < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    for (i, (_, dst)) in pairs.iter().enumerate().take(tmp.len()) {
        // SAFETY: dup2 onto a number the helper expects; it clears close-on-exec there.
        if unsafe { libc::dup2(tmp[i], *dst) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Spawns a helper for `plan` (`label` names it in `ps`): stdio on new pipes, or
/// `/dev/null` when the process gets a terminal; `ns` are passed as fds 5-8.
pub fn spawn(
    reaper: &Reaper,
    plan: &Plan,
    terminal: bool,
    label: &str,
    ns: Vec<OwnedFd>,
) -> std::io::Result<Spawned> {
    let json = serde_json::to_vec(plan).map_err(std::io::Error::other)?;
    let (plan_r, mut plan_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map(|(r, w)| (r, std::fs::File::from(w)))?;
    let (ours, theirs) = channel::pair()?;
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("sandnet-agent")
        .args([HELPER_ARG, label])
        .env_clear()
        .current_dir("/");
    let pipes = if terminal {
        cmd.stdin(StdStdio::null())
            .stdout(StdStdio::null())
            .stderr(StdStdio::null());
        None
    } else {
        let ([i, o, e], agent_ends) = stdio::pipes()?;
        cmd.stdin(i).stdout(o).stderr(e);
        Some(agent_ends)
    };
    let mut keep: Vec<(OwnedFd, RawFd)> = vec![(plan_r, PLAN_FD), (theirs, CHANNEL_FD)];
    keep.extend(ns.into_iter().zip(NS_FDS));
    let raw: Vec<(RawFd, RawFd)> = keep.iter().map(|(f, n)| (f.as_raw_fd(), *n)).collect();
    // SAFETY: the closure only calls fcntl and dup2 (async-signal-safe) on descriptors
    // `keep` holds open until after the spawn.
    unsafe {
        cmd.pre_exec(move || remap(&raw));
    }
    let (child, rx) = reaper.spawn(&mut cmd)?;
    let helper = child.id() as i32;
    drop(child);
    drop(keep);
    drop(cmd);
    let (tx, exit) = watch::channel(None);
    tokio::spawn(async move {
        let code = rx.await.unwrap_or(255);
        let _ = tx.send(Some(code));
    });
    // The helper reads the plan at once; a write that would block must not hold up the
    // runtime, and one that fails means the helper died (its exit says the rest).
    tokio::task::spawn_blocking(move || {
        let _ = plan_w.write_all(&json);
    });
    Ok(Spawned {
        helper,
        exit,
        chan: AgentEnd::new(ours)?,
        pipes,
    })
}

/// What a failed (or abandoned) launch leaves behind, removed by [`Cleanup::now`] or, if
/// the call is dropped, by a task spawned from `Drop`.
#[derive(Default)]
pub struct Cleanup {
    /// The helper and its exit status.
    pub helper: Option<(i32, watch::Receiver<Option<i32>>)>,
    /// The helper's child, once reported.
    pub child: Option<i32>,
    /// A cgroup to remove (create only).
    pub cgroup: Option<PathBuf>,
}

impl Cleanup {
    async fn run(mut self) {
        let (helper, child, cg) = (self.helper.take(), self.child.take(), self.cgroup.take());
        if let Some(pid) = child {
            // SAFETY: kill takes integers; this is our helper's child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        // The helper exits once its child has (and reaps it: killing the helper first
        // would orphan the child into the container). One stuck in setup is killed, and
        // its child follows (parent-death signal).
        if let Some((pid, mut exit)) = helper {
            let waited = tokio::time::timeout(
                std::time::Duration::from_secs(2),
                exit.wait_for(Option::is_some),
            )
            .await
            .is_ok();
            if !waited {
                // SAFETY: kill takes integers; this is our helper.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                let _ = exit.wait_for(Option::is_some).await;
            }
        }
        if let Some(cg) = cg {
            if let Err(e) = cgroup::remove(&cg).await {
                tracing::warn!(cgroup = %cg.display(), "removing after a failed create: {e}");
            }
        }
    }

    /// Removes everything now.
    pub async fn now(self) {
        self.run().await
    }

    /// Nothing to remove any more: the launch succeeded.
    pub fn disarm(mut self) {
        self.helper = None;
        self.child = None;
        self.cgroup = None;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.helper.is_some() || self.cgroup.is_some() {
            let me = Cleanup {
                helper: self.helper.take(),
                child: self.child.take(),
                cgroup: self.cgroup.take(),
            };
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(me.run());
            }
        }
    }
}

fn code_of(k: ErrorKind) -> Code {
    match k {
        ErrorKind::Invalid | ErrorKind::NotFound => Code::INVALID_ARGUMENT,
        ErrorKind::Internal => Code::INTERNAL,
    }
}

/// The helper's error as the request's error.
fn helper_error(k: ErrorKind, msg: String) -> AgentError {
    AgentError::Container {
        code: code_of(k),
        message: msg,
    }
}

async fn helper_gone(id: &str, exit: &mut watch::Receiver<Option<i32>>) -> AgentError {
    let status = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        exit.wait_for(Option::is_some),
    )
    .await
    .ok()
    .and_then(|r| r.ok().and_then(|v| *v));
    err(
        Code::INTERNAL,
        id,
        match status {
            Some(s) => format!("the container helper exited during setup (status {s})"),
            None => "the container helper closed its channel during setup".into(),
        },
    )
}

/// Follows a helper until its process is set up: `exec` waits for end of file (the exec
/// happened), create for `ready`. Returns the process with its stdio.
pub async fn follow(
    id: &str,
    sp: Spawned,
    cleanup: &mut Cleanup,
    until_exec: bool,
) -> Result<(Proc, AgentEnd)> {
    let Spawned {
        helper,
        mut exit,
        chan,
        pipes,
    } = sp;
    let (mut pid, mut ready) = (None, None);
    loop {
        match chan.recv().await {
            Ok(Some(Record::Pid(p))) => {
                pid = Some(p);
                cleanup.child = Some(p);
            }
            Ok(Some(Record::Ready(m))) => ready = Some(m),
            Ok(Some(Record::Error(k, m))) => return Err(helper_error(k, m)),
            Ok(Some(Record::Start)) => {}
            Ok(None) if until_exec && pid.is_some() && ready.is_some() => break,
            Ok(None) => return Err(helper_gone(id, &mut exit).await),
            Err(e) => return Err(err(Code::INTERNAL, id, format!("helper channel: {e}"))),
        }
        if !until_exec && pid.is_some() && ready.is_some() {
            break;
        }
    }
    let (Some(pid), Some(master)) = (pid, ready) else {
        return Err(helper_gone(id, &mut exit).await);
    };
    let stdio = match (master, pipes) {
        (Some(m), _) => Stdio::from_tty(m),
        (None, Some(p)) => Stdio::from_pipes(p),
        (None, None) => {
            return Err(err(
                Code::INTERNAL,
                id,
                "a terminal was asked for but the helper sent no pty",
            ))
        }
    }
    .map_err(|e| err(Code::INTERNAL, id, format!("stdio: {e}")))?;
    Ok((
        Proc {
            helper,
            pid,
            exit,
            stdio,
        },
        chan,
    ))
}

/// Start: releases the child waiting on `gate` and waits for its exec (end of file) or
/// the exec's error.
pub async fn start(id: &str, gate: AgentEnd) -> Result<()> {
    if let Err(e) = gate.send(&Record::Start).await {
        return Err(err(
            Code::FAILED_PRECONDITION,
            id,
            format!("the container's init is gone ({e})"),
        ));
    }
    loop {
        match gate.recv().await {
            Ok(None) => return Ok(()),
            Ok(Some(Record::Error(k, m))) => return Err(helper_error(k, m)),
            Ok(Some(_)) => {}
            Err(e) => return Err(err(Code::INTERNAL, id, format!("helper channel: {e}"))),
        }
    }
}
