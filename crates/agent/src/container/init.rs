//! The container helper: the agent's own binary re-exec'd with [`HELPER_ARG`] (the agent
//! never forks its multi-threaded self). Single-threaded, it reads its [`Plan`] from fd
//! [`PLAN_FD`] and talks to the agent over fd [`CHANNEL_FD`] (see `channel`).
//!
//! Create: join the cgroup, `unshare` mount, UTS, IPC and pid namespaces, fork. The child
//! (PID 1 of the new pid namespace) builds the root file system, sets the process up, says
//! `ready` and waits for `start`, then execs. Exec: join the cgroup, `setns` into the
//! container's IPC, UTS, pid and mount namespaces (fds 5-8), fork; the child sets the
//! process up and execs at once. Either way the helper reports the child's pid, waits for
//! it and exits with its status (128 + signal when it was killed), which the agent's
//! reaper collects.

use super::channel::{self, ErrorKind, Record};
use super::spec::{CreatePlan, ExecPlan, Plan, ProcessPlan, DEFAULT_PATH};
use super::{caps, mounts};
use nix::sched::CloneFlags;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The first argument that makes the agent binary a container helper.
pub const HELPER_ARG: &str = "__container-init";
/// The helper's plan (JSON, read to end of file).
pub const PLAN_FD: RawFd = 3;
/// The helper's end of the agent channel.
pub const CHANNEL_FD: RawFd = 4;
/// Exec: the container's IPC, UTS, pid and mount namespaces, in the order they are joined.
pub const NS_FDS: [RawFd; 4] = [5, 6, 7, 8];

type Failure = (ErrorKind, String);

fn fail(id: &str, (kind, msg): Failure) -> ! {
    let _ = channel::send(
        CHANNEL_FD,
        &Record::Error(kind, format!("container {id}: {msg}")),
    );
    std::process::exit(1)
}

fn internal(what: &str) -> impl FnOnce(nix::errno::Errno) -> Failure + '_ {
    move |e| (ErrorKind::Internal, format!("{what}: {e}"))
}

/// The helper's entry point (from `main` before anything else).
pub fn helper_main() -> ! {
    for fd in [PLAN_FD, CHANNEL_FD] {
        // SAFETY: fcntl on descriptors the agent passed us.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    let mut text = Vec::new();
    // SAFETY: the agent passes the plan's read end as PLAN_FD; we own it from here.
    let mut f = unsafe { std::fs::File::from_raw_fd(PLAN_FD) };
    let plan: Result<Plan, String> = f
        .read_to_end(&mut text)
        .map_err(|e| e.to_string())
        .and_then(|_| serde_json::from_slice(&text).map_err(|e| e.to_string()));
    drop(f);
    match plan {
        Ok(Plan::Create(p)) => create(p),
        Ok(Plan::Exec(p)) => exec(p),
        Err(e) => fail(
            "?",
            (
                ErrorKind::Internal,
                format!("reading the helper's plan: {e}"),
            ),
        ),
    }
}

fn join_cgroup(cg: Option<&str>) -> Result<(), Failure> {
    if let Some(cg) = cg {
        std::fs::write(
            Path::new(cg).join("cgroup.procs"),
            std::process::id().to_string(),
        )
        .map_err(|e| (ErrorKind::Internal, format!("joining cgroup {cg}: {e}")))?;
    }
    Ok(())
}

fn oom_score_adj(p: &ProcessPlan) -> Result<(), Failure> {
    if let Some(adj) = p.oom_score_adj {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(|e| (ErrorKind::Internal, format!("oom_score_adj {adj}: {e}")))?;
    }
    Ok(())
}

/// The guest's `/dev/ptmx`, for a terminal when the container has no devpts of its own.
fn fallback_ptmx(p: &ProcessPlan) -> Option<OwnedFd> {
    if !p.terminal {
        return None;
    }
    open_ptmx(Path::new("/dev/ptmx"))
}

fn open_ptmx(p: &Path) -> Option<OwnedFd> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(p)
        .ok()
        .map(OwnedFd::from)
}

fn create(p: CreatePlan) -> ! {
    let id = p.id.clone();
    if let Err(f) = join_cgroup(p.cgroup.as_deref()).and_then(|_| oom_score_adj(&p.process)) {
        fail(&id, f)
    }
    let flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWPID;
    if let Err(e) = nix::sched::unshare(flags) {
        fail(&id, (ErrorKind::Internal, format!("unshare: {e}")))
    }
    // SAFETY: the helper is single-threaded.
    match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Child) => {
            let e = create_child(&p);
            fail(&id, e)
        }
        Ok(ForkResult::Parent { child }) => supervise(child),
        Err(e) => fail(&id, (ErrorKind::Internal, format!("fork: {e}"))),
    }
}

fn create_child(p: &CreatePlan) -> Failure {
    parent_death_kill();
    let fallback = fallback_ptmx(&p.process);
    if !p.hostname.is_empty() {
        if let Err(e) = nix::unistd::sethostname(&p.hostname) {
            return (
                ErrorKind::Internal,
                format!("sethostname {:?}: {e}", p.hostname),
            );
        }
    }
    if let Err(m) = mounts::setup_rootfs(p) {
        return (ErrorKind::Internal, m);
    }
    finish(&p.id, &p.process, fallback, true)
}

fn exec(p: ExecPlan) -> ! {
    let id = p.id.clone();
    if let Err(f) = join_cgroup(p.cgroup.as_deref()).and_then(|_| oom_score_adj(&p.process)) {
        fail(&id, f)
    }
    let fallback = fallback_ptmx(&p.process);
    let kinds = [
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ];
    for (fd, (name, flag)) in NS_FDS.iter().zip(kinds) {
        // SAFETY: the agent passed the namespace descriptors at these numbers.
        let ns = unsafe { BorrowedFd::borrow_raw(*fd) };
        if let Err(e) = nix::sched::setns(ns, flag) {
            fail(
                &id,
                (
                    ErrorKind::Internal,
                    format!("joining the container's {name} namespace: {e}"),
                ),
            )
        }
        // SAFETY: closing a descriptor we no longer use.
        unsafe { libc::close(*fd) };
    }
    // SAFETY: the helper is single-threaded.
    match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Child) => {
            parent_death_kill();
            let e = finish(&id, &p.process, fallback, false);
            fail(&id, e)
        }
        Ok(ForkResult::Parent { child }) => supervise(child),
        Err(e) => fail(&id, (ErrorKind::Internal, format!("fork: {e}"))),
    }
}

/// The helper after the fork: report the child, let go of everything, wait for it.
fn supervise(child: Pid) -> ! {
    let _ = channel::send(CHANNEL_FD, &Record::Pid(child.as_raw()));
    for fd in [CHANNEL_FD, 0, 1, 2] {
        // SAFETY: the helper uses none of these any more.
        unsafe { libc::close(fd) };
    }
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => std::process::exit(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => std::process::exit(128 + sig as i32),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => std::process::exit(255),
        }
    }
}

fn parent_death_kill() {
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
}

/// `args[0]` looked up the way `execvp` would, with the process's `PATH`, in the root the
/// process now has.
fn resolve(p: &ProcessPlan) -> Result<PathBuf, Failure> {
    let arg0 = &p.args[0];
    let path_var = p
        .env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    let executable = |c: &Path| {
        std::fs::metadata(c)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    let found = if arg0.contains('/') {
        Some(PathBuf::from(arg0)).filter(|c| executable(c))
    } else {
        path_var
            .split(':')
            .map(|d| Path::new(if d.is_empty() { "." } else { d }).join(arg0))
            .find(|c| executable(c))
    };
    found.ok_or_else(|| {
        (
            ErrorKind::NotFound,
            format!("executable {arg0:?} not found in the container's root (PATH={path_var})"),
        )
    })
}

fn cstrings(v: &[String]) -> Result<Vec<CString>, Failure> {
    v.iter()
        .map(|s| {
            CString::new(s.as_str())
                .map_err(|_| (ErrorKind::Invalid, format!("{s:?} contains a NUL byte")))
        })
        .collect()
}

/// A pty from the container's devpts (or the guest's as a fallback): the slave becomes
/// stdin, stdout and stderr and the controlling terminal of a new session; the master is
/// returned for the agent.
fn terminal(p: &ProcessPlan, fallback: Option<OwnedFd>) -> Result<OwnedFd, Failure> {
    let master = open_ptmx(Path::new("/dev/pts/ptmx"))
        .or_else(|| open_ptmx(Path::new("/dev/ptmx")))
        .or(fallback)
        .ok_or((
            ErrorKind::Internal,
            "terminal: no /dev/ptmx to open".to_string(),
        ))?;
    let m = master.as_raw_fd();
    let unlock: libc::c_int = 0;
    // SAFETY: ioctls on the master we own; TIOCSPTLCK reads one int.
    let slave = unsafe {
        libc::ioctl(m, libc::TIOCSPTLCK, &unlock);
        libc::ioctl(m, libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY)
    };
    if slave < 0 {
        return Err((
            ErrorKind::Internal,
            format!(
                "terminal: opening the pty slave: {}",
                std::io::Error::last_os_error()
            ),
        ));
    }
    if let Some((rows, cols)) = p.console {
        let _ = super::stdio::set_winsize(m, rows, cols);
    }
    nix::unistd::setsid().map_err(internal("setsid"))?;
    for fd in 0..3 {
        // SAFETY: dup2 onto the standard descriptors.
        if unsafe { libc::dup2(slave, fd) } < 0 {
            return Err((ErrorKind::Internal, "terminal: dup2".into()));
        }
    }
    if slave > 2 {
        // SAFETY: the slave lives on as 0-2.
        unsafe { libc::close(slave) };
    }
    // SAFETY: TIOCSCTTY with an integer argument.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
        return Err((
            ErrorKind::Internal,
            format!("terminal: TIOCSCTTY: {}", std::io::Error::last_os_error()),
        ));
    }
    Ok(master)
}

fn set_user(p: &ProcessPlan) -> Result<(), Failure> {
    let last = caps::last_cap();
    let io =
        |what: &'static str| move |e: std::io::Error| (ErrorKind::Internal, format!("{what}: {e}"));
    if let Some(c) = &p.caps {
        caps::drop_bounding(c.bounding, last).map_err(io("bounding capabilities"))?;
        caps::keep_caps(true).map_err(io("PR_SET_KEEPCAPS"))?;
    }
    let groups: Vec<libc::gid_t> = p.groups.clone();
    // SAFETY: setgroups reads `groups.len()` gids; setgid/setuid take integers.
    unsafe {
        if libc::setgroups(groups.len(), groups.as_ptr()) < 0 {
            return Err(io("setgroups")(std::io::Error::last_os_error()));
        }
        if libc::setgid(p.gid) < 0 {
            return Err(io("setgid")(std::io::Error::last_os_error()));
        }
        if libc::setuid(p.uid) < 0 {
            return Err(io("setuid")(std::io::Error::last_os_error()));
        }
    }
    if let Some(c) = &p.caps {
        caps::keep_caps(false).map_err(io("PR_SET_KEEPCAPS"))?;
        caps::apply(c, last).map_err(io("capabilities"))?;
    }
    Ok(())
}

fn reset_signals() {
    // SAFETY: default dispositions and an empty mask; signals the C library reserves
    // refuse with EINVAL, which is fine.
    unsafe {
        for s in 1..=libc::SIGRTMAX() {
            if s != libc::SIGKILL && s != libc::SIGSTOP {
                libc::signal(s, libc::SIG_DFL);
            }
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// The process's own setup, in its final root: cwd, executable lookup, rlimits,
/// terminal, user and capabilities; then `ready` (and for a new container, waiting for
/// `start`) and `execve`. Returns only on failure.
fn finish(id: &str, p: &ProcessPlan, fallback: Option<OwnedFd>, wait_for_start: bool) -> Failure {
    match prepare(p, fallback) {
        Err(f) => f,
        Ok((exe, args, env, master)) => {
            if let Err(e) = channel::send(CHANNEL_FD, &Record::Ready(master)) {
                return (ErrorKind::Internal, format!("reporting ready: {e}"));
            }
            if wait_for_start {
                match channel::recv(CHANNEL_FD) {
                    Ok(Some(Record::Start)) => {}
                    // The agent went away or gave up on the container.
                    _ => std::process::exit(0),
                }
            }
            reset_signals();
            let e = match nix::unistd::execve(&exe, &args, &env) {
                Err(e) => e,
                Ok(never) => match never {},
            };
            let _ = channel::send(
                CHANNEL_FD,
                &Record::Error(
                    ErrorKind::Internal,
                    format!("container {id}: exec {}: {e}", exe.to_string_lossy()),
                ),
            );
            std::process::exit(127)
        }
    }
}

type Prepared = (CString, Vec<CString>, Vec<CString>, Option<OwnedFd>);

fn prepare(p: &ProcessPlan, fallback: Option<OwnedFd>) -> Result<Prepared, Failure> {
    nix::unistd::chdir(p.cwd.as_str())
        .map_err(|e| (ErrorKind::Invalid, format!("cwd {}: {e}", p.cwd)))?;
    let exe = resolve(p)?;
    let exe_c = CString::new(exe.as_os_str().as_encoded_bytes()).map_err(|_| {
        (
            ErrorKind::Invalid,
            "executable path contains a NUL byte".to_string(),
        )
    })?;
    let args = cstrings(&p.args)?;
    let env = cstrings(&p.env)?;
    for r in &p.rlimits {
        let lim = libc::rlimit {
            rlim_cur: r.soft,
            rlim_max: r.hard,
        };
        // SAFETY: setrlimit reads one rlimit we own.
        if unsafe { libc::setrlimit(r.resource as _, &lim) } < 0 {
            return Err((
                ErrorKind::Invalid,
                format!(
                    "rlimit {} {}/{}: {}",
                    r.resource,
                    r.soft,
                    r.hard,
                    std::io::Error::last_os_error()
                ),
            ));
        }
    }
    let master = if p.terminal {
        Some(terminal(p, fallback)?)
    } else {
        drop(fallback);
        let _ = nix::unistd::setsid();
        None
    };
    set_user(p)?;
    parent_death_kill();
    if p.no_new_privs {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
            return Err((ErrorKind::Internal, "PR_SET_NO_NEW_PRIVS".into()));
        }
    }
    Ok((exe_c, args, env, master))
}
