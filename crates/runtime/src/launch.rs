//! `run`'s side of starting a sandbox: create its directory and lock, write its spec,
//! start its supervisor in a session of its own with the lock handed over, and wait for
//! the supervisor's report — cleaning up from the record if the supervisor dies first.

use crate::boot::BOOT_TIMEOUT;
use crate::error::{Result, RuntimeError};
use crate::factory;
use crate::lock::SandboxLock;
use crate::report::Ready;
use crate::sandbox::{self, SandboxError, SandboxPaths, SandboxState};
use crate::spec::{spec_path, RunOutput, RunSpec};
use crate::supervisor::env::LOCK_FD_ENV;
use crate::teardown::{self, RemoveReport};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Starts a sandbox: creates its directory (root-only) and takes its lock, writes its spec,
/// starts `supervisor` (a command that runs [`supervise`] for this id, e.g. `sandnet
/// __supervise ID`) in a session of its own with the lock handed over, and waits for it to
/// report. On failure the supervisor has rolled back; the directory is removed here unless
/// the supervisor kept a record of something it could not undo.
pub async fn launch(
    root: &Path,
    spec: &RunSpec,
    mut supervisor: std::process::Command,
    on_progress: &mut (dyn FnMut(&str) + Send),
) -> Result<RunOutput> {
    sandbox::check_id(&spec.id)?;
    let paths = SandboxPaths::new(root, &spec.id);
    sandbox::create_private_dir(root).map_err(|e| SandboxError::Io {
        path: root.to_path_buf(),
        source: e,
    })?;
    {
        use std::os::unix::fs::DirBuilderExt;
        match std::fs::DirBuilder::new().mode(0o700).create(&paths.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(SandboxError::Exists(spec.id.clone()).into())
            }
            Err(e) => {
                return Err(SandboxError::Io {
                    path: paths.dir.clone(),
                    source: e,
                }
                .into())
            }
        }
    }
    let lock = match SandboxLock::try_acquire(&paths.dir) {
        Ok(Some(l)) => l,
        Ok(None) => return Err(SandboxError::Exists(spec.id.clone()).into()),
        Err(e) => {
            let _ = crate::shared::remove_sandbox_dir(&paths);
            return Err(e.into());
        }
    };
    let r = launch_in(root, &paths, spec, &lock, &mut supervisor, on_progress).await;
    if r.is_err() && !paths.state.exists() {
        let _ = crate::shared::remove_sandbox_dir(&paths);
    }
    drop(lock);
    r
}

/// Runs `spec` on a ready factory VM when one can serve it; `None`: the caller boots its own
/// (one log line says why a running factory could not serve).
async fn take_factory_vm(
    root: &Path,
    paths: &SandboxPaths,
    spec: &RunSpec,
    lock_fd: i32,
    on_progress: &mut (dyn FnMut(&str) + Send),
) -> Result<Option<RunOutput>> {
    if spec.shared_fs != crate::shared::SharedFs::None {
        // Booted with no shared directory, in the factory's mount namespace: it could not
        // see the mounts a shim makes for containers.
        tracing::info!(
            "sandbox {}: not taking a factory VM: factory VMs have no shared directory for \
             containers; booting its own",
            spec.id
        );
        return Ok(None);
    }
    // The pod namespace goes to the VM as a descriptor opened here: its path may only
    // resolve in this mount namespace (containerd's netns mounts are in its own).
    let netns = match &spec.netns {
        None => None,
        Some(n) => match n
            .parse::<sandnet_host::NetNsRef>()
            .and_then(|r| sandnet_host::NetNs::open(&r))
        {
            Ok(ns) => Some(ns),
            Err(e) => {
                tracing::info!("sandbox {}: not taking a factory VM: {e}", spec.id);
                return Ok(None);
            }
        },
    };
    let netns_fd = netns
        .as_ref()
        .map(|n| std::os::fd::AsRawFd::as_raw_fd(&std::os::fd::AsFd::as_fd(n)));
    let (r, id, vm) = (root.to_path_buf(), spec.id.clone(), spec.vm.clone());
    let taken = tokio::task::spawn_blocking(move || factory::take(&r, &id, &vm, lock_fd, netns_fd))
        .await
        .ok()
        .flatten();
    let Some(t) = taken else {
        return Ok(None);
    };
    on_progress(&format!("factory VM {}", t.vm));
    let stream = t
        .stream
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixStream::from_std(t.stream))
        .map_err(|source| RuntimeError::Io {
            step: "factory VM connection".into(),
            source,
        })?;
    match read_reports(BufReader::new(stream), on_progress).await {
        Some(Ready::Ok { output }) => Ok(Some(output)),
        Some(Ready::Failed { error }) => Err(RuntimeError::Supervisor(error)),
        _ => Err(died(root, paths, spec, None).await),
    }
}

async fn launch_in(
    root: &Path,
    paths: &SandboxPaths,
    spec: &RunSpec,
    lock: &SandboxLock,
    supervisor: &mut std::process::Command,
    on_progress: &mut (dyn FnMut(&str) + Send),
) -> Result<RunOutput> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SandboxError::Io { path, source }
    };
    let body =
        serde_json::to_vec_pretty(spec).map_err(|e| io(&paths.dir)(std::io::Error::other(e)))?;
    sandbox::write_private(&spec_path(paths), &body)?;
    let log = sandbox::create_private_file(&paths.log).map_err(io(&paths.log))?;
    let lock_fd = lock.raw_fd();
    // `take` would find no daemon either; asking first spares the log line and the
    // namespace's open on every run without a factory.
    if spec.use_factory && factory::daemon(root).is_some() {
        if let Some(out) = take_factory_vm(root, paths, spec, lock_fd, on_progress).await? {
            return Ok(out);
        }
    }
    {
        use std::os::unix::process::CommandExt;
        supervisor
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .env(LOCK_FD_ENV, lock_fd.to_string());
        // SAFETY: setsid and fcntl are async-signal-safe; the supervisor must outlive this
        // process and not share its session or terminal, and it inherits the sandbox lock
        // (the descriptor stays close-on-exec in this process).
        unsafe {
            supervisor.pre_exec(move || {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                if libc::fcntl(lock_fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = tokio::process::Command::from(std::mem::replace(
        supervisor,
        std::process::Command::new("true"),
    ))
    .kill_on_drop(false)
    .spawn()
    .map_err(|source| RuntimeError::Io {
        step: "start supervisor".into(),
        source,
    })?;
    let pid = child.id();
    let out = child.stdout.take().ok_or_else(|| RuntimeError::Io {
        step: "supervisor stdout".into(),
        source: std::io::Error::other("not piped"),
    })?;
    let ready = read_reports(BufReader::new(out), on_progress).await;
    match ready {
        Some(Ready::Ok { output }) => Ok(output),
        Some(Ready::Failed { error }) => {
            let _ = child.wait().await;
            Err(RuntimeError::Supervisor(error))
        }
        _ => {
            let e = died(root, paths, spec, pid).await;
            let _ = child.wait().await;
            Err(e)
        }
    }
}

/// Reads a supervisor's report lines until its result (`None`: it died or hung first).
async fn read_reports<R: tokio::io::AsyncBufRead + Unpin>(
    mut reader: R,
    on_progress: &mut (dyn FnMut(&str) + Send),
) -> Option<Ready> {
    let deadline = Instant::now() + BOOT_TIMEOUT + Duration::from_secs(120);
    loop {
        let mut line = String::new();
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, reader.read_line(&mut line)).await {
            Ok(Ok(n)) if n > 0 => match serde_json::from_str::<Ready>(&line) {
                Ok(Ready::Progress { step }) => on_progress(&step),
                Ok(r) => return Some(r),
                Err(_) => return None,
            },
            _ => return None,
        }
    }
}

/// The supervisor died or hung without a word: it is killed (`pid`, else the recorded
/// one) and everything is cleaned up from the persisted state. The lock it held is ours
/// too, so nobody else starts a teardown meanwhile.
async fn died(root: &Path, paths: &SandboxPaths, spec: &RunSpec, pid: Option<u32>) -> RuntimeError {
    let pid = pid.or_else(|| {
        SandboxState::load(root, &spec.id)
            .ok()
            .filter(|st| st.supervisor_alive())
            .and_then(|st| st.supervisor_pid)
    });
    if let Some(pid) = pid {
        teardown::kill_and_wait(pid).await;
    }
    let tail = log_tail(&paths.log, 5);
    let mut rep = RemoveReport::default();
    let cleanup = match SandboxState::load(root, &spec.id) {
        Ok(mut st) => teardown::cleanup_locked(root, &mut st, &mut rep)
            .await
            .err()
            .map(|e| format!("; cleaning up failed: {e}"))
            .unwrap_or_default(),
        Err(_) => String::new(),
    };
    RuntimeError::SupervisorDied {
        id: spec.id.clone(),
        log: tail.replace('\n', " | "),
        cleanup,
    }
}

fn log_tail(p: &Path, n: usize) -> String {
    let s = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
