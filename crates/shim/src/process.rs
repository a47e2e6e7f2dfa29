//! The processes the shim serves in the guest — each container's own (exec id `""`) and
//! its execs — in one table keyed by container id and exec id; each one's state, its
//! waiters, and the task that learns its end from the agent and reports it: once the
//! output is copied, then Wait returns and TaskExit goes out.

use crate::agent::Agent;
use crate::events::Events;
use crate::io::{Copies, Opened, Stdio};
use containerd_shim::util::timestamp;
use containerd_shim_protos::api::Status;
use containerd_shim_protos::events::task::TaskExit;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::MessageField;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;

/// Exit status of a process whose end the agent cannot tell (its VM is gone), as Kata.
pub const UNKNOWN_EXIT: u32 = 255;
/// How long the output may take to be copied after the process ended (a daemonized child
/// can hold the streams open forever).
const OUTPUT_GRACE: Duration = Duration::from_secs(5);

/// A process's state as containerd sees it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// CREATED, RUNNING or STOPPED.
    pub status: Status,
    /// Exit status (valid once STOPPED).
    pub exit_status: u32,
    /// When it ended.
    pub exited_at: Option<Timestamp>,
}

enum Io {
    Opened(Box<Opened>),
    Started(Copies),
    Gone,
}

/// One process in the guest.
pub struct Process {
    /// The container.
    pub id: String,
    /// The exec id (`""`: the container's own process).
    pub exec: String,
    /// containerd's stdio paths.
    pub stdio: Stdio,
    /// The pid containerd is told (the VM's QEMU, as Kata does: there is no host process).
    pub pid: u32,
    state: Mutex<Snapshot>,
    io: Mutex<Io>,
    exited: watch::Sender<bool>,
}

/// Locks `m`, taking the data of a poisoned lock (a panicked holder changes nothing here).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Process {
    /// A CREATED process with its stdio opened.
    pub fn new(id: &str, exec: &str, stdio: Stdio, pid: u32, io: Opened) -> Arc<Process> {
        Arc::new(Process {
            id: id.to_string(),
            exec: exec.to_string(),
            stdio,
            pid,
            state: Mutex::new(Snapshot {
                status: Status::CREATED,
                exit_status: 0,
                exited_at: None,
            }),
            io: Mutex::new(Io::Opened(Box::new(io))),
            exited: watch::channel(false).0,
        })
    }

    /// Its state now.
    pub fn snapshot(&self) -> Snapshot {
        lock(&self.state).clone()
    }

    /// Its status now.
    pub fn status(&self) -> Status {
        lock(&self.state).status
    }

    /// The stdio opened at create, to start copying; `None` unless it is CREATED and not
    /// being started already.
    pub fn take_opened_io(&self) -> Option<Opened> {
        if self.status() != Status::CREATED {
            return None;
        }
        let mut io = lock(&self.io);
        match std::mem::replace(&mut *io, Io::Gone) {
            Io::Opened(o) => Some(*o),
            other => {
                *io = other;
                None
            }
        }
    }

    /// It runs, copying its stdio with `copies`.
    pub fn set_running(&self, copies: Copies) {
        *lock(&self.io) = Io::Started(copies);
        let mut s = lock(&self.state);
        if s.status == Status::CREATED {
            s.status = Status::RUNNING;
        }
    }

    /// CloseIO: its stdin ends once what containerd wrote went in.
    pub fn close_stdin(&self) {
        if let Io::Started(c) = &*lock(&self.io) {
            c.close_stdin();
        }
    }

    fn take_copies(&self) -> Option<Copies> {
        let prev = std::mem::replace(&mut *lock(&self.io), Io::Gone);
        match prev {
            Io::Started(c) => Some(c),
            _ => None,
        }
    }

    /// Stops copying its stdio at once (closing containerd's FIFOs).
    pub fn abort_io(&self) {
        let prev = std::mem::replace(&mut *lock(&self.io), Io::Gone);
        drop(prev);
    }

    /// Records its end with `status` (the first time only: then the state to report, and
    /// every Wait returns).
    pub fn finish(&self, status: u32) -> Option<Snapshot> {
        let snap = {
            let mut s = lock(&self.state);
            if s.status == Status::STOPPED {
                return None;
            }
            s.status = Status::STOPPED;
            s.exit_status = status;
            s.exited_at = timestamp().ok();
            s.clone()
        };
        self.exited.send_replace(true);
        Some(snap)
    }

    /// Waits until it has ended.
    pub async fn wait(&self) -> Snapshot {
        let mut rx = self.exited.subscribe();
        let _ = rx.wait_for(|e| *e).await;
        self.snapshot()
    }

    /// TaskExit for `snap`, as runc's shim sends it (`id` is the exec id, or the
    /// container's for its own process).
    pub fn exit_event(&self, snap: &Snapshot) -> TaskExit {
        TaskExit {
            container_id: self.id.clone(),
            id: if self.exec.is_empty() {
                self.id.clone()
            } else {
                self.exec.clone()
            },
            pid: self.pid,
            exit_status: snap.exit_status,
            exited_at: MessageField::from_option(snap.exited_at.clone()),
            ..Default::default()
        }
    }

    /// Ends it as unknown (its VM is gone): stdio closed, 255, TaskExit.
    pub async fn vm_gone(&self, events: &Events) {
        self.abort_io();
        if let Some(s) = self.finish(UNKNOWN_EXIT) {
            events.publish(self.exit_event(&s)).await;
        }
    }
}

/// Starts the task that learns the process's end from the agent (or from its VM's end,
/// `vm_exit`), waits for its output to be copied, then records it and sends TaskExit.
pub fn watch_exit(
    p: Arc<Process>,
    agent: Arc<Agent>,
    mut vm_exit: watch::Receiver<bool>,
    events: Events,
) {
    tokio::spawn(async move {
        let status = tokio::select! {
            s = wait_agent(&agent, &p) => s,
            _ = vm_exit.wait_for(|e| *e) => UNKNOWN_EXIT,
        };
        if p.status() == Status::STOPPED {
            return;
        }
        if let Some(mut c) = p.take_copies() {
            if !c.finish_output(OUTPUT_GRACE).await {
                log::warn!(
                    "{}/{}: output still open {OUTPUT_GRACE:?} after the process ended; closed",
                    p.id,
                    p.exec
                );
            }
        }
        if let Some(s) = p.finish(status) {
            events.publish(p.exit_event(&s)).await;
        }
    });
}

async fn wait_agent(agent: &Agent, p: &Process) -> u32 {
    loop {
        match agent.wait_process(&p.id, &p.exec).await {
            Ok(s) => return u32::try_from(s).unwrap_or(UNKNOWN_EXIT),
            Err(e) if e.is_transient() => {
                log::debug!("{}/{}: {e}; asking again", p.id, p.exec);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                log::warn!("{}/{}: {e}", p.id, p.exec);
                return UNKNOWN_EXIT;
            }
        }
    }
}

/// Processes by (container id, exec id).
type Table = BTreeMap<(String, String), Arc<Process>>;

/// Every process the shim serves, by container id and exec id.
#[derive(Default, Clone)]
pub struct ProcessTable {
    inner: Arc<Mutex<Table>>,
}

impl ProcessTable {
    /// Process `exec` of container `id`.
    pub fn get(&self, id: &str, exec: &str) -> Option<Arc<Process>> {
        lock(&self.inner)
            .get(&(id.to_string(), exec.to_string()))
            .cloned()
    }

    /// Adds `p`; false if it exists already.
    pub fn insert(&self, p: Arc<Process>) -> bool {
        let key = (p.id.clone(), p.exec.clone());
        let mut t = lock(&self.inner);
        if t.contains_key(&key) {
            return false;
        }
        t.insert(key, p);
        true
    }

    /// Removes process `exec` of container `id`.
    pub fn remove(&self, id: &str, exec: &str) -> Option<Arc<Process>> {
        lock(&self.inner).remove(&(id.to_string(), exec.to_string()))
    }

    /// The processes of container `id` (its own first).
    pub fn of(&self, id: &str) -> Vec<Arc<Process>> {
        lock(&self.inner)
            .range((id.to_string(), String::new())..)
            .take_while(|((c, _), _)| c == id)
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// Every process.
    pub fn all(&self) -> Vec<Arc<Process>> {
        lock(&self.inner).values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(id: &str, exec: &str) -> Arc<Process> {
        let io = Opened::open(&Stdio::default()).unwrap();
        Process::new(id, exec, Stdio::default(), 42, io)
    }

    #[tokio::test]
    async fn table_by_container_and_exec() {
        let t = ProcessTable::default();
        assert!(t.insert(proc("a", "")));
        assert!(t.insert(proc("a", "e1")));
        assert!(t.insert(proc("ab", "")));
        assert!(!t.insert(proc("a", "e1")));
        let of_a: Vec<String> = t.of("a").iter().map(|p| p.exec.clone()).collect();
        assert_eq!(of_a, ["", "e1"]);
        assert_eq!(t.all().len(), 3);
        assert!(t.remove("a", "e1").is_some());
        assert!(t.get("a", "e1").is_none());
        assert!(t.get("ab", "").is_some());
    }

    #[tokio::test]
    async fn finish_once_and_waiters_return() {
        let p = proc("c", "");
        assert_eq!(p.status(), Status::CREATED);
        let w = {
            let p = p.clone();
            tokio::spawn(async move { p.wait().await })
        };
        assert!(p.take_opened_io().is_some());
        assert!(p.take_opened_io().is_none(), "stdio handed out twice");
        let s = p.finish(7).unwrap();
        assert_eq!(s.exit_status, 7);
        assert!(p.finish(9).is_none());
        let got = w.await.unwrap();
        assert_eq!((got.status, got.exit_status), (Status::STOPPED, 7));
        let ev = p.exit_event(&got);
        assert_eq!((ev.container_id.as_str(), ev.id.as_str()), ("c", "c"));
        assert_eq!(ev.pid, 42);
        let e = proc("c", "x1");
        let snap = e.finish(0).unwrap();
        assert_eq!(e.exit_event(&snap).id, "x1");
    }
}
