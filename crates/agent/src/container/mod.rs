//! sandnet's OCI runner in the guest: the container calls of `grpc.AgentService`
//! (CreateContainer, StartContainer, ExecProcess, stdio, signals, waits, stats, OOM
//! events, RemoveContainer).
//!
//! Each container is a helper process (the agent's own binary, `init`) with a child that
//! is PID 1 of the container's new pid namespace, in new mount, UTS and IPC namespaces,
//! the guest's network, and a cgroup `<cgroup root>/<id>`. The table here keeps, per
//! container, its init process and exec'd processes: helper pid, the child's pid (the one
//! signalled), the exit status (the helper exits with its child's, collected by the
//! agent's reaper) and the stdio the agent holds.

pub mod caps;
pub mod cgroup;
pub mod channel;
pub mod init;
pub mod launch;
pub mod mounts;
pub mod spec;
pub mod stdio;
pub mod storage;

use crate::error::{AgentError, Result};
use crate::exec::Reaper;
use channel::AgentEnd;
use launch::Cleanup;
use sandnet_agent_proto::agent;
use sandnet_agent_proto::ttrpc::Code;
use spec::{ExecPlan, Plan};
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Display;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use stdio::{Stdio, Stream};
use tokio::sync::{watch, Notify};

pub use init::{helper_main, HELPER_ARG};

/// How often cgroups are checked for OOM kills.
const OOM_POLL: Duration = Duration::from_millis(200);

/// An error about container `id`: `container <id>: <msg>`.
pub fn err(code: Code, id: &str, msg: impl Display) -> AgentError {
    AgentError::Container {
        code,
        message: format!("container {id}: {msg}"),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A process of a container: its init or an exec'd one.
pub struct Proc {
    /// The helper (the agent's child, collected by the reaper).
    pub helper: i32,
    /// The process itself, in the agent's pid namespace.
    pub pid: i32,
    /// Its exit status once it has exited.
    pub exit: watch::Receiver<Option<i32>>,
    /// Its stdio.
    pub stdio: Stdio,
}

impl Proc {
    fn exited(&self) -> Option<i32> {
        *self.exit.borrow()
    }

    async fn wait(&self) -> i32 {
        let mut rx = self.exit.clone();
        let r = rx.wait_for(Option::is_some).await.ok().and_then(|v| *v);
        r.unwrap_or(255)
    }

    /// Sends `sig`; a process that has exited is not an error.
    fn signal(&self, sig: i32) -> std::io::Result<()> {
        if self.exited().is_some() {
            return Ok(());
        }
        // SAFETY: kill takes integers.
        if unsafe { libc::kill(self.pid, sig) } < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(e);
            }
        }
        Ok(())
    }
}

/// One container.
struct Container {
    id: String,
    cgroup: Option<PathBuf>,
    init: Arc<Proc>,
    /// The channel to the init while it waits for Start.
    gate: tokio::sync::Mutex<Option<AgentEnd>>,
    started: AtomicBool,
    /// Exec'd processes; `None` while one is being started.
    execs: Mutex<HashMap<String, Option<Arc<Proc>>>>,
    oom_seen: AtomicU64,
}

impl Container {
    fn procs(&self) -> Vec<Arc<Proc>> {
        let mut v = vec![self.init.clone()];
        v.extend(lock(&self.execs).values().flatten().cloned());
        v
    }
}

#[derive(Default)]
struct Table {
    live: HashMap<String, Arc<Container>>,
    creating: HashSet<String>,
}

struct Inner {
    reaper: Reaper,
    cgroups: cgroup::Cgroups,
    table: Mutex<Table>,
    storage: tokio::sync::Mutex<()>,
    oom: Mutex<VecDeque<String>>,
    oom_notify: Notify,
}

/// The containers of this guest.
pub struct Containers {
    inner: Arc<Inner>,
}

/// Holds a container id while it is being created; released on drop.
struct Reservation {
    inner: Arc<Inner>,
    id: String,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        lock(&self.inner.table).creating.remove(&self.id);
    }
}

impl Inner {
    fn get(&self, id: &str) -> Result<Arc<Container>> {
        lock(&self.table)
            .live
            .get(id)
            .cloned()
            .ok_or_else(|| err(Code::NOT_FOUND, id, "no such container"))
    }

    fn proc(&self, id: &str, exec_id: &str) -> Result<Arc<Proc>> {
        let c = self.get(id)?;
        if exec_id.is_empty() {
            return Ok(c.init.clone());
        }
        let p = lock(&c.execs).get(exec_id).cloned().flatten();
        p.ok_or_else(|| err(Code::NOT_FOUND, id, format!("no process {exec_id:?}")))
    }

    /// Queues an OOM event for each container whose `oom_kill` count rose (nothing is
    /// read while there is no container).
    fn poll_oom(&self) {
        let list: Vec<Arc<Container>> = lock(&self.table).live.values().cloned().collect();
        for c in &list {
            self.check_oom(c);
        }
    }

    /// Queues an OOM event for `c` when its `oom_kill` count rose.
    fn check_oom(&self, c: &Container) {
        let Some(n) = c.cgroup.as_deref().and_then(cgroup::oom_kills) else {
            return;
        };
        if n > c.oom_seen.swap(n, Ordering::SeqCst) {
            tracing::warn!(container = %c.id, oom_kills = n, "OOM kill");
            lock(&self.oom).push_back(c.id.clone());
            self.oom_notify.notify_one();
        }
    }
}

impl Containers {
    /// An empty table; container cgroups go below `cgroup_root`. Starts the OOM watch on
    /// the current runtime.
    pub fn new(reaper: Reaper, cgroup_root: PathBuf) -> Containers {
        let inner = Arc::new(Inner {
            reaper,
            cgroups: cgroup::Cgroups::new(cgroup_root),
            table: Mutex::new(Table::default()),
            storage: tokio::sync::Mutex::new(()),
            oom: Mutex::new(VecDeque::new()),
            oom_notify: Notify::new(),
        });
        let weak: Weak<Inner> = Arc::downgrade(&inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(OOM_POLL).await;
                match weak.upgrade() {
                    Some(i) => i.poll_oom(),
                    None => return,
                }
            }
        });
        Containers { inner }
    }

    /// CreateContainer: storages, cgroup, the helper; returns once the init waits for
    /// Start. On failure nothing is left.
    pub async fn create(&self, req: agent::CreateContainerRequest) -> Result<()> {
        let id = req.container_id.clone();
        if !spec::valid_id(&id) {
            return Err(err(Code::INVALID_ARGUMENT, &id, "invalid container id"));
        }
        let _res = {
            let mut t = lock(&self.inner.table);
            if t.live.contains_key(&id) || !t.creating.insert(id.clone()) {
                return Err(err(Code::ALREADY_EXISTS, &id, "already exists"));
            }
            Reservation {
                inner: self.inner.clone(),
                id: id.clone(),
            }
        };
        let (mut plan, limits) =
            spec::create_plan(&req).map_err(|m| err(Code::INVALID_ARGUMENT, &id, m))?;
        {
            let _g = self.inner.storage.lock().await;
            for s in &req.storages {
                storage::mount_storage(s).map_err(|(code, m)| err(code, &id, m))?;
            }
        }
        match std::fs::metadata(&plan.root) {
            Ok(m) if m.is_dir() => {}
            _ => {
                return Err(err(
                    Code::INVALID_ARGUMENT,
                    &id,
                    format!("root {} is not a directory", plan.root),
                ))
            }
        }
        for m in &plan.mounts {
            if let spec::MountKind::Bind { .. } = m.kind {
                if std::fs::metadata(&m.source).is_err() {
                    return Err(err(
                        Code::INVALID_ARGUMENT,
                        &id,
                        format!("bind mount {}: source {} does not exist", m.dest, m.source),
                    ));
                }
            }
        }
        let cg = self
            .inner
            .cgroups
            .create(&id, &limits)
            .map_err(|m| err(Code::FAILED_PRECONDITION, &id, m))?;
        let mut cleanup = Cleanup::default();
        cleanup.cgroup.clone_from(&cg);
        plan.cgroup = cg.as_ref().map(|p| p.to_string_lossy().into_owned());
        let terminal = plan.process.terminal;
        let r = async {
            let sp = launch::spawn(
                &self.inner.reaper,
                &Plan::Create(plan),
                terminal,
                &id,
                vec![],
            )
            .map_err(|e| err(Code::INTERNAL, &id, format!("starting the helper: {e}")))?;
            cleanup.helper = Some((sp.helper, sp.exit.clone()));
            launch::follow(&id, sp, &mut cleanup, false).await
        }
        .await;
        let (proc, gate) = match r {
            Ok(v) => v,
            Err(e) => {
                cleanup.now().await;
                return Err(e);
            }
        };
        cleanup.disarm();
        tracing::info!(container = %id, helper = proc.helper, pid = proc.pid, "created");
        let c = Arc::new(Container {
            id: id.clone(),
            cgroup: cg,
            init: Arc::new(proc),
            gate: tokio::sync::Mutex::new(Some(gate)),
            started: AtomicBool::new(false),
            execs: Mutex::new(HashMap::new()),
            oom_seen: AtomicU64::new(0),
        });
        lock(&self.inner.table).live.insert(id, c);
        Ok(())
    }

    /// StartContainer: the init execs; its exec error fails the call.
    pub async fn start(&self, id: &str) -> Result<()> {
        let c = self.inner.get(id)?;
        let gate = c.gate.lock().await.take();
        let Some(gate) = gate else {
            return Err(err(Code::FAILED_PRECONDITION, id, "already started"));
        };
        if c.init.exited().is_some() {
            return Err(err(
                Code::FAILED_PRECONDITION,
                id,
                "the init process has exited",
            ));
        }
        c.started.store(true, Ordering::SeqCst);
        launch::start(id, gate).await?;
        tracing::info!(container = id, pid = c.init.pid, "started");
        Ok(())
    }

    /// ExecProcess: a new process in the running container, started at once.
    pub async fn exec(&self, req: agent::ExecProcessRequest) -> Result<()> {
        let (id, eid) = (req.container_id.as_str(), req.exec_id.as_str());
        let c = self.inner.get(id)?;
        if !spec::valid_id(eid) {
            return Err(err(
                Code::INVALID_ARGUMENT,
                id,
                format!("invalid exec id {eid:?}"),
            ));
        }
        let process = spec::exec_process(&req).map_err(|m| err(Code::INVALID_ARGUMENT, id, m))?;
        if !c.started.load(Ordering::SeqCst) || c.init.exited().is_some() {
            return Err(err(
                Code::FAILED_PRECONDITION,
                id,
                "the container is not running",
            ));
        }
        {
            let mut ex = lock(&c.execs);
            if ex.contains_key(eid) {
                return Err(err(
                    Code::ALREADY_EXISTS,
                    id,
                    format!("process {eid:?} exists"),
                ));
            }
            ex.insert(eid.to_string(), None);
        }
        let r = self.exec_inner(&c, eid, process).await;
        let mut ex = lock(&c.execs);
        match r {
            Ok(p) => {
                tracing::info!(container = id, exec = eid, pid = p.pid, "exec'd");
                ex.insert(eid.to_string(), Some(Arc::new(p)));
                Ok(())
            }
            Err(e) => {
                ex.remove(eid);
                Err(e)
            }
        }
    }

    async fn exec_inner(
        &self,
        c: &Container,
        eid: &str,
        process: spec::ProcessPlan,
    ) -> Result<Proc> {
        let id = c.id.as_str();
        let mut ns = Vec::new();
        for n in ["ipc", "uts", "pid", "mnt"] {
            let f = std::fs::File::open(format!("/proc/{}/ns/{n}", c.init.pid)).map_err(|e| {
                err(
                    Code::FAILED_PRECONDITION,
                    id,
                    format!("the container's {n} namespace: {e}"),
                )
            })?;
            ns.push(f.into());
        }
        let terminal = process.terminal;
        let plan = Plan::Exec(ExecPlan {
            id: id.to_string(),
            process,
            cgroup: c.cgroup.as_ref().map(|p| p.to_string_lossy().into_owned()),
        });
        let mut cleanup = Cleanup::default();
        let r = async {
            let label = format!("{id}/{eid}");
            let sp = launch::spawn(&self.inner.reaper, &plan, terminal, &label, ns)
                .map_err(|e| err(Code::INTERNAL, id, format!("starting the helper: {e}")))?;
            cleanup.helper = Some((sp.helper, sp.exit.clone()));
            launch::follow(id, sp, &mut cleanup, true).await
        }
        .await;
        match r {
            Ok((p, _chan)) => {
                cleanup.disarm();
                Ok(p)
            }
            Err(e) => {
                cleanup.now().await;
                Err(e)
            }
        }
    }

    /// SignalProcess: `exec_id` "" is the container's init.
    pub fn signal(&self, id: &str, exec_id: &str, sig: u32) -> Result<()> {
        let p = self.inner.proc(id, exec_id)?;
        let sig = i32::try_from(sig)
            .ok()
            .filter(|s| (0..=libc::SIGRTMAX()).contains(s))
            .ok_or_else(|| err(Code::INVALID_ARGUMENT, id, format!("invalid signal {sig}")))?;
        p.signal(sig).map_err(|e| {
            err(
                Code::INTERNAL,
                id,
                format!("signal {sig} to pid {}: {e}", p.pid),
            )
        })
    }

    /// WaitProcess: the exit status (128 + signal when killed).
    pub async fn wait(&self, id: &str, exec_id: &str) -> Result<i32> {
        Ok(self.inner.proc(id, exec_id)?.wait().await)
    }

    /// ReadStdout/ReadStderr: up to `len` bytes once there are some; empty at end of file.
    pub async fn read(&self, id: &str, exec_id: &str, which: Stream, len: u32) -> Result<Vec<u8>> {
        let p = self.inner.proc(id, exec_id)?;
        p.stdio
            .read(which, len)
            .await
            .map_err(|e| err(Code::INTERNAL, id, format!("reading {which:?}: {e}")))
    }

    /// WriteStdin: writes all of `data`, returns its length.
    pub async fn write(&self, id: &str, exec_id: &str, data: &[u8]) -> Result<usize> {
        let p = self.inner.proc(id, exec_id)?;
        match p.stdio.write(data).await {
            None => Err(err(Code::FAILED_PRECONDITION, id, "stdin is closed")),
            Some(r) => r.map_err(|e| err(Code::INTERNAL, id, format!("writing stdin: {e}"))),
        }
    }

    /// CloseStdin.
    pub async fn close_stdin(&self, id: &str, exec_id: &str) -> Result<()> {
        self.inner.proc(id, exec_id)?.stdio.close_stdin().await;
        Ok(())
    }

    /// TtyWinResize.
    pub fn resize(&self, id: &str, exec_id: &str, rows: u32, cols: u32) -> Result<()> {
        let p = self.inner.proc(id, exec_id)?;
        let (r, c) = (u16::try_from(rows), u16::try_from(cols));
        let (Ok(r), Ok(c)) = (r, c) else {
            return Err(err(
                Code::INVALID_ARGUMENT,
                id,
                format!("bad size {rows}x{cols}"),
            ));
        };
        match p.stdio.resize(r, c) {
            Ok(true) => Ok(()),
            Ok(false) => Err(err(
                Code::FAILED_PRECONDITION,
                id,
                "the process has no terminal",
            )),
            Err(e) => Err(err(
                Code::INTERNAL,
                id,
                format!("resizing the terminal: {e}"),
            )),
        }
    }

    /// StatsContainer, from the container's cgroup files.
    pub fn stats(&self, id: &str) -> Result<agent::StatsContainerResponse> {
        let c = self.inner.get(id)?;
        Ok(agent::StatsContainerResponse {
            cgroup_stats: c.cgroup.as_deref().map(cgroup::stats).into(),
            ..Default::default()
        })
    }

    /// GetOOMEvent: waits for the next container with a new OOM kill.
    pub async fn oom_event(&self) -> String {
        loop {
            let n = self.inner.oom_notify.notified();
            if let Some(id) = lock(&self.inner.oom).pop_front() {
                return id;
            }
            n.await;
        }
    }

    /// Kills every container and removes their cgroups (an agent outside a VM shutting
    /// down leaves nothing running).
    pub async fn shutdown(&self) {
        let ids: Vec<String> = lock(&self.inner.table).live.keys().cloned().collect();
        for id in ids {
            if let Err(e) = self.remove(&id, 2).await {
                tracing::warn!("shutdown: {e}");
            }
        }
    }

    /// RemoveContainer: SIGKILL everything, wait up to `timeout` (0: no limit), remove
    /// the cgroup, forget the container. An unknown id is fine.
    pub async fn remove(&self, id: &str, timeout: u32) -> Result<()> {
        let Some(c) = lock(&self.inner.table).live.get(id).cloned() else {
            return Ok(());
        };
        drop(c.gate.lock().await.take());
        let procs = c.procs();
        for p in &procs {
            let _ = p.signal(libc::SIGKILL);
        }
        if let Some(cg) = &c.cgroup {
            cgroup::kill_all(cg);
        }
        let all = futures::future::join_all(procs.iter().map(|p| p.wait()));
        if timeout > 0 {
            if tokio::time::timeout(Duration::from_secs(u64::from(timeout)), all)
                .await
                .is_err()
            {
                return Err(err(
                    Code::DEADLINE_EXCEEDED,
                    id,
                    format!("processes still running {timeout}s after SIGKILL"),
                ));
            }
        } else {
            all.await;
        }
        self.inner.check_oom(&c);
        if let Some(cg) = &c.cgroup {
            cgroup::remove(cg).await.map_err(|e| {
                err(
                    Code::INTERNAL,
                    id,
                    format!("removing cgroup {}: {e}", cg.display()),
                )
            })?;
        }
        lock(&self.inner.table).live.remove(id);
        tracing::info!(container = id, "removed");
        Ok(())
    }
}
