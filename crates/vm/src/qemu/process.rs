//! The QEMU child process: spawning it with the NIC fds and waiting for QMP ([`Qemu`]),
//! then watching, waiting for and killing it ([`QemuProcess`]).

use super::{ChildNicFds, StatePaths, VmSpec, READY_TIMEOUT};
use crate::console::ConsoleDrain;
use crate::error::{Result, VmError};
use crate::qmp::QmpClient;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Starts QEMU processes.
pub struct Qemu;

impl Qemu {
    /// Starts QEMU for `spec` inside `netns` (when given), with exactly the NIC fds inherited,
    /// stdout/stderr in `state_dir/qemu.log`, and waits until QEMU answers on its QMP socket
    /// (the connection is kept: [`QemuProcess::qmp`]). The NIC fds are closed in this process
    /// once the child has them. QEMU is killed if this fails.
    pub async fn spawn(
        spec: VmSpec,
        netns: Option<BorrowedFd<'_>>,
        state_dir: &Path,
    ) -> Result<QemuProcess> {
        spec.validate()?;
        std::fs::create_dir_all(state_dir).map_err(|e| VmError::io("creating", state_dir, e))?;
        let paths = StatePaths::new(state_dir);
        for stale in [&paths.qmp, &paths.agent, &paths.pid] {
            match std::fs::remove_file(stale) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(VmError::io("removing stale", stale, e)),
            }
        }
        let share_daemon = match &spec.share {
            Some(s) => s.start_daemon(state_dir).await?,
            None => None,
        };
        let console = ConsoleDrain::start(&paths.console_sock, &paths.console, spec.console_cap)?;
        let log = crate::console::create_private(&paths.log)
            .map_err(|e| VmError::io("creating", &paths.log, e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| VmError::io("duplicating", &paths.log, e))?;
        let args = spec.qemu_args(&paths);
        let inherit: Vec<RawFd> = spec
            .nics
            .iter()
            .flat_map(|n| n.tap_fds.iter().chain(&n.vhost_fds))
            .map(|f| f.as_raw_fd())
            .collect();
        let child_fds = spec
            .nics
            .iter()
            .map(|n| ChildNicFds {
                id: n.id.clone(),
                tap_fds: n.tap_fds.iter().map(|f| f.as_raw_fd()).collect(),
                vhost_fds: n.vhost_fds.iter().map(|f| f.as_raw_fd()).collect(),
            })
            .collect();
        let netns_raw = netns.map(|f| f.as_raw_fd());
        let mut cmd = tokio::process::Command::new(&spec.qemu);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .kill_on_drop(true);
        // SAFETY: the closure only makes async-signal-safe system calls (umask, setns, fcntl) on fds
        // that stay open in the parent until `spawn` returns.
        unsafe {
            cmd.pre_exec(move || {
                // What QEMU creates (console, pid file, sockets) is root's alone: the
                // console carries guest output.
                libc::umask(0o077);
                if let Some(ns) = netns_raw {
                    if libc::setns(ns, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                for &fd in &inherit {
                    let flags = libc::fcntl(fd, libc::F_GETFD);
                    if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        tracing::debug!(qemu = %spec.qemu.display(), ?args, "starting QEMU");
        let child = cmd.spawn().map_err(|e| VmError::Spawn {
            qemu: spec.qemu.clone(),
            source: e,
        })?;
        let started = Instant::now();
        // The child holds its copies now; ours close here.
        drop(spec);
        let pid = child.id().unwrap_or(0);
        let mut proc = QemuProcess {
            child,
            pid,
            paths,
            child_fds,
            started,
            qmp: None,
            _console: console,
            share_daemon,
        };
        match proc.wait_ready(READY_TIMEOUT).await {
            Ok(q) => proc.qmp = Some(q),
            Err(e) => {
                let _ = proc.kill().await;
                return Err(e);
            }
        }
        tracing::info!(pid, ms = started.elapsed().as_millis() as u64, "QEMU up");
        Ok(proc)
    }
}

/// A running QEMU child. Dropping it kills QEMU.
#[derive(Debug)]
pub struct QemuProcess {
    child: tokio::process::Child,
    pid: u32,
    paths: StatePaths,
    child_fds: Vec<ChildNicFds>,
    started: Instant,
    qmp: Option<QmpClient>,
    /// Drains the console while QEMU runs; stops when dropped.
    _console: ConsoleDrain,
    /// The shared directory's daemon (virtio-fs), stopped after QEMU.
    share_daemon: Option<crate::share::ShareDaemon>,
}

impl QemuProcess {
    /// QEMU's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The state files (sockets, logs).
    pub fn paths(&self) -> &StatePaths {
        &self.paths
    }

    /// The NIC fd numbers as the child sees them.
    pub fn child_fds(&self) -> &[ChildNicFds] {
        &self.child_fds
    }

    /// When QEMU was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The last `lines` lines of QEMU's stdout/stderr log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.paths.log, lines)
    }

    /// Waits for the QMP socket, then connects and negotiates: QEMU answers only once its
    /// devices exist and its main loop runs, so a bad device argument shows up here as an exit.
    async fn wait_ready(&mut self, timeout: Duration) -> Result<QmpClient> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait()? {
                return Err(self.exited_error(st));
            }
            if std::fs::symlink_metadata(&self.paths.qmp).is_ok() {
                break;
            }
            if Instant::now() >= deadline {
                return Err(VmError::Timeout {
                    what: format!("QMP socket {}", self.paths.qmp.display()),
                    ms: timeout.as_millis(),
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let qmp_path = self.paths.qmp.clone();
        tokio::select! {
            st = self.child.wait() => {
                let st = st.map_err(|e| VmError::io("waiting for", &self.paths.log, e))?;
                Err(self.exited_error(st))
            }
            r = tokio::time::timeout(left, connect_qmp_listening(&qmp_path)) => match r {
                Ok(Ok(c)) => Ok(c),
                Ok(Err(e)) => {
                    // Connection dropped: most likely QEMU is exiting; prefer that story.
                    if let Ok(Some(st)) = self.wait_timeout(Duration::from_millis(500)).await {
                        return Err(self.exited_error(st));
                    }
                    Err(e)
                }
                Err(_) => Err(VmError::Timeout {
                    what: format!("QMP greeting on {}", qmp_path.display()),
                    ms: timeout.as_millis(),
                }),
            }
        }
    }

    fn exited_error(&self, st: ExitStatus) -> VmError {
        VmError::QemuExited {
            status: st.to_string(),
            log: self.paths.log.clone(),
            tail: self.log_tail(20),
        }
    }

    /// The QMP connection made while starting (QEMU's monitor serves one client at a time).
    pub fn qmp(&self) -> Option<&QmpClient> {
        self.qmp.as_ref()
    }

    /// Takes the QMP connection out, e.g. to hand it to another task.
    pub fn take_qmp(&mut self) -> Option<QmpClient> {
        self.qmp.take()
    }

    /// Connects a new QMP client; only works once the previous one was dropped.
    pub async fn connect_qmp(&self) -> Result<QmpClient> {
        QmpClient::connect(&self.paths.qmp).await
    }

    /// Whether QEMU has exited (reaps it if so).
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        self.child
            .try_wait()
            .map_err(|e| VmError::io("waiting for", &self.paths.log, e))
    }

    /// Waits for QEMU to exit.
    pub async fn wait(&mut self) -> Result<ExitStatus> {
        self.child
            .wait()
            .await
            .map_err(|e| VmError::io("waiting for", &self.paths.log, e))
    }

    /// Waits at most `timeout` for QEMU to exit; `None` if it is still running.
    pub async fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        match tokio::time::timeout(timeout, self.wait()).await {
            Ok(r) => r.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Kills QEMU (SIGKILL) and reaps it; does nothing if it already exited.
    pub async fn kill(&mut self) -> Result<()> {
        let r = if self.try_wait()?.is_some() {
            Ok(())
        } else {
            match self.child.kill().await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => Ok(()),
                Err(e) => Err(VmError::io("killing QEMU, log", &self.paths.log, e)),
            }
        };
        if let Some(mut d) = self.share_daemon.take() {
            d.stop().await;
        }
        r
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let Ok(data) = std::fs::read(path) else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&data);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Connects to QMP, retrying while the socket exists but is not listening yet: QEMU binds it
/// and calls listen() a moment later, and on a loaded host (ten VMs starting on two cores)
/// a connect in between is refused.
async fn connect_qmp_listening(path: &Path) -> Result<QmpClient> {
    loop {
        match QmpClient::connect(path).await {
            Err(VmError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::ConnectionRefused =>
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            r => return r,
        }
    }
}
