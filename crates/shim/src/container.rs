//! A container's life in its pod's VM. Create lays its files out in the sandbox's share
//! ([`crate::rootfs`]), converts its spec ([`crate::spec`]) and has the agent set it up;
//! Start execs it; Exec adds processes; Kill signals through the agent; Delete has the
//! agent remove it and undoes the mounts. Any failure of Create leaves nothing behind.

use crate::agent::Agent;
use crate::error::ShimError;
use crate::events::Events;
use crate::io::{Opened, Stdio};
use crate::ocispec;
use crate::process::lock;
use crate::process::{self, Process, ProcessTable, Snapshot};
use crate::rootfs::{self, Prepared, RootfsMount};
use crate::sandbox::SandboxTask;
use crate::spec;
use containerd_shim_protos::api::{CreateTaskRequest, ExecProcessRequest, StateResponse, Status};
use containerd_shim_protos::events::task::{TaskDelete, TaskExecAdded, TaskExecStarted, TaskStart};
use containerd_shim_protos::protobuf::MessageField;
use sandnet_agent_proto::agent::{CreateContainerRequest, Storage};
use sandnet_agent_proto::oci;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long the agent may take to end a container's processes on RemoveContainer.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Exit status of a process whose start failed.
const START_FAILED: u32 = 128;

/// What a container needs from its pod.
#[derive(Clone)]
pub struct Pod {
    /// The sandbox task (the VM).
    pub sandbox: Arc<SandboxTask>,
    /// Its agent.
    pub agent: Arc<Agent>,
    /// The shim's process table.
    pub procs: ProcessTable,
    /// containerd's events.
    pub events: Events,
}

/// One container of the pod.
pub struct Container {
    /// Its id.
    pub id: String,
    /// Its bundle.
    pub bundle: String,
    root_path: String,
    pod: Pod,
    files: Mutex<Option<Prepared>>,
    exec_specs: Mutex<HashMap<String, oci::Process>>,
}

fn stdio(stdin: &str, stdout: &str, stderr: &str, terminal: bool) -> Stdio {
    Stdio {
        stdin: stdin.into(),
        stdout: stdout.into(),
        stderr: stderr.into(),
        terminal,
    }
}

/// Runs `f` on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ShimError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ShimError::Internal(e.to_string()))
}

impl Container {
    /// Creates container `req.id` in `pod`: its files in the share, the agent's container
    /// set up and waiting for Start. On failure nothing is left (mounts, share directory,
    /// agent state).
    pub async fn create(pod: Pod, req: &CreateTaskRequest) -> Result<Arc<Container>, ShimError> {
        let id = req.id.clone();
        let bundle = PathBuf::from(&req.bundle);
        let path = bundle.join("config.json");
        let text = std::fs::read(&path).map_err(|e| ShimError::Bundle {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let oci =
            ocispec::parse_spec(&text).map_err(|e| ShimError::Bundle { path, reason: e.0 })?;
        let spec_err = |reason: String| ShimError::Spec {
            id: id.clone(),
            reason,
        };
        let p = oci
            .process
            .as_ref()
            .ok_or_else(|| spec_err("the spec has no process".into()))?;
        spec::check_process(p).map_err(|e| spec_err(e.0))?;
        let share = pod.sandbox.handle().shared_dir()?;
        let storage = share.fs.guest_mount().ok_or_else(|| {
            ShimError::Unsupported(format!(
                "container {id}: sandbox {} has no shared directory (shared_fs = \"none\"), \
                 so it cannot run containers",
                pod.sandbox.id
            ))
        })?;
        let io = stdio(&req.stdin, &req.stdout, &req.stderr, req.terminal);
        let opened = Opened::open(&io).map_err(|source| ShimError::Io {
            id: id.clone(),
            source,
        })?;
        let root_path = oci
            .root
            .as_ref()
            .map(|r| r.path.clone())
            .unwrap_or_default();
        let rootfs: Vec<RootfsMount> = req
            .rootfs
            .iter()
            .map(|m| RootfsMount {
                kind: m.type_.clone(),
                source: m.source.clone(),
                options: m.options.clone(),
            })
            .collect();
        let prepared = {
            let (id, bundle, root_path, mounts) = (
                id.clone(),
                bundle.clone(),
                root_path.clone(),
                oci.mounts.clone(),
            );
            let host = share.host.clone();
            blocking(move || {
                rootfs::prepare(&rootfs::Request {
                    id: &id,
                    bundle: &bundle,
                    root_path: &root_path,
                    rootfs: &rootfs,
                    mounts: &mounts,
                    share: &host,
                })
            })
            .await??
        };
        let mut guest = spec::to_proto(&oci);
        spec::adapt_for_guest(&mut guest, &prepared.layout);
        let creq = CreateContainerRequest {
            container_id: id.clone(),
            storages: vec![Storage {
                driver: storage.driver,
                source: storage.source,
                fstype: storage.fstype,
                options: storage.options,
                mount_point: storage.mount_point,
                ..Default::default()
            }],
            OCI: MessageField::some(guest),
            ..Default::default()
        };
        if let Err(e) = pod.agent.create_container(creq).await {
            // The agent may have got half-way.
            if let Err(r) = pod.agent.remove_container(&id, REMOVE_TIMEOUT).await {
                log::warn!("container {id}: {r}");
            }
            if let Err(u) = blocking(move || prepared.release()).await? {
                log::error!("{u}");
            }
            return Err(ShimError::agent(&id)(e));
        }
        let init = Process::new(&id, "", io, pod.sandbox.pid, opened);
        pod.procs.insert(init);
        Ok(Arc::new(Container {
            id,
            bundle: req.bundle.clone(),
            root_path,
            pod,
            files: Mutex::new(Some(prepared)),
            exec_specs: Mutex::new(HashMap::new()),
        }))
    }

    /// Process `exec` (`""`: the container's own).
    pub fn process(&self, exec: &str) -> Result<Arc<Process>, ShimError> {
        self.pod.procs.get(&self.id, exec).ok_or_else(|| {
            ShimError::NotFound(if exec.is_empty() {
                format!("container {} not found", self.id)
            } else {
                format!("exec {exec} of container {} not found", self.id)
            })
        })
    }

    /// Starts process `exec`: the container's (StartContainer) or an exec (ExecProcess);
    /// the pid containerd is told.
    pub async fn start(&self, exec: &str) -> Result<u32, ShimError> {
        let p = self.process(exec)?;
        let opened = p.take_opened_io().ok_or_else(|| {
            ShimError::State(format!(
                "container {} process {exec:?} is not in the created state",
                self.id
            ))
        })?;
        let agent = &self.pod.agent;
        let started = if exec.is_empty() {
            agent.start_container(&self.id).await
        } else {
            let spec = lock(&self.exec_specs).remove(exec).unwrap_or_default();
            agent.exec_process(&self.id, exec, spec).await
        };
        if let Err(e) = started {
            drop(opened);
            if let Some(s) = p.finish(START_FAILED) {
                self.pod.events.publish(p.exit_event(&s)).await;
            }
            return Err(ShimError::agent(&self.id)(e));
        }
        p.set_running(opened.start(agent.clone(), &self.id, exec));
        process::watch_exit(
            p.clone(),
            agent.clone(),
            self.pod.sandbox.vm_exit(),
            self.pod.events.clone(),
        );
        let pid = p.pid;
        if exec.is_empty() {
            let ev = TaskStart {
                container_id: self.id.clone(),
                pid,
                ..Default::default()
            };
            self.pod.events.publish(ev).await;
        } else {
            let ev = TaskExecStarted {
                container_id: self.id.clone(),
                exec_id: exec.to_string(),
                pid,
                ..Default::default()
            };
            self.pod.events.publish(ev).await;
        }
        Ok(pid)
    }

    /// Adds exec process `req.exec_id` (started by [`Container::start`]).
    pub async fn exec(&self, req: &ExecProcessRequest) -> Result<(), ShimError> {
        if self.process("")?.status() != Status::RUNNING {
            return Err(ShimError::State(format!(
                "container {} is not running",
                self.id
            )));
        }
        if req.exec_id.is_empty() || self.pod.procs.get(&self.id, &req.exec_id).is_some() {
            return Err(ShimError::Exists(format!("{}/{}", self.id, req.exec_id)));
        }
        let spec_err = |reason: String| ShimError::Spec {
            id: self.id.clone(),
            reason: format!("exec {}: {reason}", req.exec_id),
        };
        let json = req
            .spec
            .as_ref()
            .map(|a| a.value.as_slice())
            .ok_or_else(|| spec_err("no process spec".into()))?;
        let p = ocispec::parse_process(json).map_err(|e| spec_err(e.0))?;
        spec::check_process(&p).map_err(|e| spec_err(e.0))?;
        let mut proto = spec::process_to_proto(&p);
        proto.Terminal = req.terminal;
        let io = stdio(&req.stdin, &req.stdout, &req.stderr, req.terminal);
        let opened = Opened::open(&io).map_err(|source| ShimError::Io {
            id: self.id.clone(),
            source,
        })?;
        let proc = Process::new(&self.id, &req.exec_id, io, self.pod.sandbox.pid, opened);
        if !self.pod.procs.insert(proc) {
            return Err(ShimError::Exists(format!("{}/{}", self.id, req.exec_id)));
        }
        lock(&self.exec_specs).insert(req.exec_id.clone(), proto);
        let ev = TaskExecAdded {
            container_id: self.id.clone(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        };
        self.pod.events.publish(ev).await;
        Ok(())
    }

    /// Signals process `exec`; with `all` (for the container's own) every exec too.
    /// Signalling a process that has ended is not an error.
    pub async fn kill(&self, exec: &str, signal: u32, all: bool) -> Result<(), ShimError> {
        let p = self.process(exec)?;
        let agent = &self.pod.agent;
        match p.status() {
            Status::RUNNING => {}
            Status::CREATED => {
                // Never started: nothing runs but the agent's set-up, which SIGKILL ends.
                if signal == libc::SIGKILL as u32 {
                    if exec.is_empty() {
                        if let Err(e) = agent.remove_container(&self.id, REMOVE_TIMEOUT).await {
                            log::warn!("container {}: {e}", self.id);
                        }
                    }
                    p.abort_io();
                    if let Some(s) = p.finish(128 + signal) {
                        self.pod.events.publish(p.exit_event(&s)).await;
                    }
                }
                return Ok(());
            }
            _ => return Ok(()),
        }
        let r = agent.signal_process(&self.id, exec, signal).await;
        if all && exec.is_empty() {
            for e in self.pod.procs.of(&self.id) {
                if !e.exec.is_empty() && e.status() == Status::RUNNING {
                    if let Err(err) = agent.signal_process(&self.id, &e.exec, signal).await {
                        log::debug!("container {} exec {}: {err}", self.id, e.exec);
                    }
                }
            }
        }
        match r {
            Ok(()) => Ok(()),
            Err(_) if p.status() == Status::STOPPED || !self.pod.sandbox.vm_running() => Ok(()),
            Err(e) => Err(ShimError::agent(&self.id)(e)),
        }
    }

    /// Deletes exec `exec`, or (`""`) the container: the agent removes it, its mounts are
    /// undone, TaskDelete goes out. The final state of the process.
    pub async fn delete(&self, exec: &str) -> Result<Snapshot, ShimError> {
        let p = self.process(exec)?;
        if p.status() == Status::RUNNING {
            return Err(ShimError::State(format!(
                "container {} process {exec:?} is running; kill it first",
                self.id
            )));
        }
        if !exec.is_empty() {
            p.abort_io();
            p.finish(0);
            self.pod.procs.remove(&self.id, exec);
            lock(&self.exec_specs).remove(exec);
            return Ok(p.snapshot());
        }
        self.remove_from_guest(true).await?;
        for q in self.pod.procs.of(&self.id) {
            q.abort_io();
            let was_running = q.status() == Status::RUNNING;
            if let Some(s) = q.finish(128 + libc::SIGKILL as u32) {
                if was_running {
                    self.pod.events.publish(q.exit_event(&s)).await;
                }
            }
        }
        self.release_files().await?;
        for q in self.pod.procs.of(&self.id) {
            self.pod.procs.remove(&self.id, &q.exec);
        }
        let s = p.snapshot();
        let ev = TaskDelete {
            container_id: self.id.clone(),
            id: self.id.clone(),
            pid: p.pid,
            exit_status: s.exit_status,
            exited_at: MessageField::from_option(s.exited_at.clone()),
            ..Default::default()
        };
        self.pod.events.publish(ev).await;
        Ok(s)
    }

    /// Has the agent kill and forget the container (while its VM runs); with `strict` a
    /// failure is an error, else only logged.
    pub async fn remove_from_guest(&self, strict: bool) -> Result<(), ShimError> {
        if !self.pod.sandbox.vm_running() {
            return Ok(());
        }
        match self
            .pod
            .agent
            .remove_container(&self.id, REMOVE_TIMEOUT)
            .await
        {
            Ok(()) => Ok(()),
            Err(_) if !self.pod.sandbox.vm_running() => Ok(()),
            Err(e) if strict => Err(ShimError::agent(&self.id)(e)),
            Err(e) => {
                log::warn!("container {}: {e}", self.id);
                Ok(())
            }
        }
    }

    /// Undoes the container's mounts (also what an earlier failed attempt left).
    async fn release_files(&self) -> Result<(), ShimError> {
        let prepared = lock(&self.files).take();
        let id = self.id.clone();
        let root = rootfs::bundle_root(Path::new(&self.bundle), &self.root_path);
        let share = self.pod.sandbox.share_dir();
        blocking(move || match prepared {
            Some(p) => p.release(),
            None => rootfs::sweep(&id, Some(&root), &share),
        })
        .await??;
        Ok(())
    }

    /// The pid containerd is told for the container's processes (QEMU's).
    pub fn process_pid(&self) -> u32 {
        self.pod.sandbox.pid
    }

    /// State of process `exec`.
    pub fn state(&self, exec: &str) -> Result<StateResponse, ShimError> {
        let p = self.process(exec)?;
        let s = p.snapshot();
        Ok(StateResponse {
            id: self.id.clone(),
            bundle: self.bundle.clone(),
            pid: p.pid,
            status: s.status.into(),
            stdin: p.stdio.stdin.clone(),
            stdout: p.stdio.stdout.clone(),
            stderr: p.stdio.stderr.clone(),
            terminal: p.stdio.terminal,
            exit_status: s.exit_status,
            exited_at: MessageField::from_option(s.exited_at),
            exec_id: exec.to_string(),
            ..Default::default()
        })
    }

    /// ResizePty of process `exec`.
    pub async fn resize(&self, exec: &str, width: u32, height: u32) -> Result<(), ShimError> {
        let p = self.process(exec)?;
        if p.status() != Status::RUNNING {
            return Ok(());
        }
        self.pod
            .agent
            .resize(&self.id, exec, height, width)
            .await
            .map_err(ShimError::agent(&self.id))
    }

    /// The container's cgroup statistics (`io.containerd.cgroups.v2.Metrics`).
    pub async fn stats(
        &self,
    ) -> Result<containerd_shim_protos::protobuf::well_known_types::any::Any, ShimError> {
        let r = self
            .pod
            .agent
            .stats(&self.id)
            .await
            .map_err(ShimError::agent(&self.id))?;
        crate::stats::to_metrics(&r).map_err(|e| ShimError::Internal(e.to_string()))
    }
}
