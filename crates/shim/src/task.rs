//! The task service containerd talks to: one per pod. It holds the pod sandbox task (the
//! VM, [`crate::sandbox`]), the pod's containers ([`crate::container`]) and their
//! processes ([`crate::process`]), and routes each request by task id. The shim ends on
//! Shutdown once no task is left.

use crate::agent::Agent;
use crate::bundle::{Bundle, TaskKind};
use crate::container::{Container, Pod};
use crate::error::ShimError;
use crate::events::Events;
use crate::process::lock;
use crate::process::ProcessTable;
use crate::sandbox::SandboxTask;
use async_trait::async_trait;
use containerd_shim::asynchronous::publisher::RemotePublisher;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim_protos::api::{
    CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse,
    DeleteRequest, DeleteResponse, Empty, ExecProcessRequest, KillRequest, PidsRequest,
    PidsResponse, ResizePtyRequest, ShutdownRequest, StartRequest, StartResponse, StateRequest,
    StateResponse, StatsRequest, StatsResponse, Status, WaitRequest, WaitResponse,
};
use containerd_shim_protos::events::task::{TaskCreate, TaskDelete, TaskIO, TaskOOM};
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::shim_async::Task;
use containerd_shim_protos::ttrpc;
use containerd_shim_protos::ttrpc::r#async::TtrpcContext;
use containerd_shim_protos::types::task::ProcessInfo;
use sandnet_agent_proto::ttrpc::Code;
use sandnet_runtime::api::Runtime;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a task id names.
enum Target {
    Sandbox(Arc<SandboxTask>),
    Container(Arc<Container>),
}

/// The task service of one pod's shim.
pub struct TaskService {
    runtime: Runtime,
    events: Events,
    exit: Arc<ExitSignal>,
    sandbox: Mutex<Option<Arc<SandboxTask>>>,
    agent: Mutex<Option<Arc<Agent>>>,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    procs: ProcessTable,
    oom_relay: AtomicBool,
}

impl TaskService {
    /// A service running sandboxes with `runtime`, publishing events for containerd
    /// namespace `namespace`; `exit` is signalled on Shutdown once nothing is left.
    pub fn new(
        runtime: Runtime,
        namespace: String,
        publisher: RemotePublisher,
        exit: Arc<ExitSignal>,
    ) -> Self {
        TaskService {
            runtime,
            events: Events::new(publisher, namespace),
            exit,
            sandbox: Mutex::new(None),
            agent: Mutex::new(None),
            containers: Mutex::new(HashMap::new()),
            procs: ProcessTable::default(),
            oom_relay: AtomicBool::new(false),
        }
    }

    fn sandbox(&self) -> Option<Arc<SandboxTask>> {
        lock(&self.sandbox).clone()
    }

    fn target(&self, id: &str) -> Result<Target, ShimError> {
        if let Some(s) = self.sandbox().filter(|s| s.id == id) {
            return Ok(Target::Sandbox(s));
        }
        lock(&self.containers)
            .get(id)
            .cloned()
            .map(Target::Container)
            .ok_or_else(|| ShimError::NotFound(format!("task {id} not found")))
    }

    /// The sandbox task for an exec id (it runs no processes).
    fn sandbox_exec(id: &str, exec_id: &str) -> Result<(), ShimError> {
        if exec_id.is_empty() {
            Ok(())
        } else {
            Err(ShimError::NotFound(format!(
                "exec {exec_id}: the sandbox task {id} runs no processes"
            )))
        }
    }

    async fn create_sandbox(&self, req: &CreateTaskRequest, b: &Bundle) -> Result<u32, ShimError> {
        let netns = match &b.kind {
            TaskKind::Sandbox { netns: Some(n) } => n.clone(),
            _ => {
                return Err(ShimError::Unsupported(format!(
                    "task {}: the OCI spec names no network namespace path; sandnet boots the \
                     VM in the pod namespace containerd's CRI created",
                    req.id
                )))
            }
        };
        if let Some(s) = self.sandbox() {
            return Err(ShimError::Exists(format!(
                "{} (this shim serves sandbox {})",
                req.id, s.id
            )));
        }
        let s = SandboxTask::create(&self.runtime, req, b, &netns).await?;
        let pid = s.pid;
        *lock(&self.agent) = Some(Arc::new(Agent::new(&s.agent_socket())));
        s.monitor(self.procs.clone(), self.events.clone());
        *lock(&self.sandbox) = Some(s);
        Ok(pid)
    }

    /// The pod container `id` of sandbox `sandbox` runs in.
    fn pod(&self, sandbox: &str, id: &str) -> Result<Pod, ShimError> {
        let s = self.sandbox().filter(|s| s.id == sandbox).ok_or_else(|| {
            ShimError::NotFound(format!(
                "container {id}: pod sandbox {sandbox:?} is not served by this shim"
            ))
        })?;
        if !s.vm_running() || s.state().deleted {
            return Err(ShimError::State(format!(
                "container {id}: the VM of pod sandbox {sandbox} has stopped"
            )));
        }
        let agent = lock(&self.agent)
            .clone()
            .ok_or_else(|| ShimError::Internal("no agent for the sandbox".into()))?;
        Ok(Pod {
            sandbox: s,
            agent,
            procs: self.procs.clone(),
            events: self.events.clone(),
        })
    }

    async fn create_container(
        &self,
        req: &CreateTaskRequest,
        sandbox: &str,
    ) -> Result<u32, ShimError> {
        let pod = self.pod(sandbox, &req.id)?;
        let c = Container::create(pod.clone(), req).await?;
        let pid = pod.sandbox.pid;
        lock(&self.containers).insert(req.id.clone(), c);
        if !self.oom_relay.swap(true, Ordering::SeqCst) {
            oom_events(&pod);
        }
        Ok(pid)
    }
}

/// Relays the agent's OOM events (a long poll) as TaskOOM until the VM ends.
fn oom_events(pod: &Pod) {
    let (agent, events) = (pod.agent.clone(), pod.events.clone());
    let mut vm_exit = pod.sandbox.vm_exit();
    tokio::spawn(async move {
        loop {
            let r = tokio::select! {
                r = agent.oom_event() => r,
                _ = vm_exit.wait_for(|e| *e) => return,
            };
            match r {
                Ok(id) if !id.is_empty() => {
                    let ev = TaskOOM {
                        container_id: id,
                        ..Default::default()
                    };
                    events.publish(ev).await;
                }
                Ok(_) => {}
                Err(e) if e.code() == Some(Code::UNIMPLEMENTED) => {
                    log::warn!("the agent reports no OOM events: {e}");
                    return;
                }
                Err(e) => {
                    log::debug!("{e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
}

#[async_trait]
impl Task for TaskService {
    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> ttrpc::Result<CreateTaskResponse> {
        if self.target(&req.id).is_ok() {
            return Err(ShimError::Exists(req.id.clone()).into());
        }
        let b = Bundle::load(Path::new(&req.bundle))?;
        let pid = match &b.kind {
            TaskKind::Container { sandbox } => self.create_container(&req, sandbox).await?,
            TaskKind::Sandbox { .. } => self.create_sandbox(&req, &b).await?,
        };
        self.events
            .publish(TaskCreate {
                container_id: req.id.clone(),
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                io: MessageField::some(TaskIO {
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    terminal: req.terminal,
                    ..Default::default()
                }),
                checkpoint: req.checkpoint.clone(),
                pid,
                ..Default::default()
            })
            .await;
        Ok(CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    async fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> ttrpc::Result<StartResponse> {
        let pid = match self.target(&req.id)? {
            Target::Sandbox(s) => {
                Self::sandbox_exec(&req.id, &req.exec_id)?;
                let pid = s.start()?;
                self.events
                    .publish(containerd_shim_protos::events::task::TaskStart {
                        container_id: req.id.clone(),
                        pid,
                        ..Default::default()
                    })
                    .await;
                pid
            }
            Target::Container(c) => c.start(&req.exec_id).await?,
        };
        Ok(StartResponse {
            pid,
            ..Default::default()
        })
    }

    async fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> ttrpc::Result<StateResponse> {
        match self.target(&req.id)? {
            Target::Sandbox(s) => {
                Self::sandbox_exec(&req.id, &req.exec_id)?;
                Ok(s.state_response())
            }
            Target::Container(c) => Ok(c.state(&req.exec_id)?),
        }
    }

    async fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> ttrpc::Result<WaitResponse> {
        let (exit_status, exited_at) = match self.target(&req.id)? {
            Target::Sandbox(s) => {
                Self::sandbox_exec(&req.id, &req.exec_id)?;
                let t = s.wait().await;
                (t.exit_status, t.exited_at)
            }
            Target::Container(c) => {
                let s = c.process(&req.exec_id)?.wait().await;
                (s.exit_status, s.exited_at)
            }
        };
        Ok(WaitResponse {
            exit_status,
            exited_at: MessageField::from_option(exited_at),
            ..Default::default()
        })
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> ttrpc::Result<Empty> {
        match self.target(&req.id)? {
            Target::Sandbox(s) => {
                Self::sandbox_exec(&req.id, &req.exec_id)?;
                // The containers go first, so they end by their own exits.
                let cs: Vec<_> = lock(&self.containers).values().cloned().collect();
                for c in cs {
                    let _ = c.remove_from_guest(false).await;
                }
                s.kill(req.signal).await?;
            }
            Target::Container(c) => c.kill(&req.exec_id, req.signal, req.all).await?,
        }
        Ok(Empty::default())
    }

    async fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: DeleteRequest,
    ) -> ttrpc::Result<DeleteResponse> {
        let (pid, exit_status, exited_at) = match self.target(&req.id)? {
            Target::Sandbox(s) => {
                Self::sandbox_exec(&req.id, &req.exec_id)?;
                let t = s.delete().await?;
                self.events
                    .publish(TaskDelete {
                        container_id: s.id.clone(),
                        id: s.id.clone(),
                        pid: s.pid,
                        exit_status: t.exit_status,
                        exited_at: MessageField::from_option(t.exited_at.clone()),
                        ..Default::default()
                    })
                    .await;
                (s.pid, t.exit_status, t.exited_at)
            }
            Target::Container(c) => {
                let s = c.delete(&req.exec_id).await?;
                if req.exec_id.is_empty() {
                    lock(&self.containers).remove(&req.id);
                }
                (c.process_pid(), s.exit_status, s.exited_at)
            }
        };
        Ok(DeleteResponse {
            pid,
            exit_status,
            exited_at: MessageField::from_option(exited_at),
            ..Default::default()
        })
    }

    async fn exec(&self, _ctx: &TtrpcContext, req: ExecProcessRequest) -> ttrpc::Result<Empty> {
        match self.target(&req.id)? {
            Target::Sandbox(_) => Err(ShimError::Unsupported(format!(
                "exec {}: the sandbox task {} runs no processes (use sandnet exec)",
                req.exec_id, req.id
            ))
            .into()),
            Target::Container(c) => {
                c.exec(&req).await?;
                Ok(Empty::default())
            }
        }
    }

    async fn resize_pty(&self, _ctx: &TtrpcContext, req: ResizePtyRequest) -> ttrpc::Result<Empty> {
        if let Target::Container(c) = self.target(&req.id)? {
            c.resize(&req.exec_id, req.width, req.height).await?;
        }
        Ok(Empty::default())
    }

    async fn close_io(&self, _ctx: &TtrpcContext, req: CloseIORequest) -> ttrpc::Result<Empty> {
        if let Target::Container(c) = self.target(&req.id)? {
            if req.stdin {
                c.process(&req.exec_id)?.close_stdin();
            }
        }
        Ok(Empty::default())
    }

    async fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> ttrpc::Result<PidsResponse> {
        // There is no host process per container: QEMU's pid stands for the task, as Kata.
        let (pid, running) = match self.target(&req.id)? {
            Target::Sandbox(s) => (s.pid, s.state().status != Status::STOPPED),
            Target::Container(c) => {
                let p = c.process("")?;
                (p.pid, p.status() != Status::STOPPED)
            }
        };
        let mut r = PidsResponse::default();
        if running {
            r.processes.push(ProcessInfo {
                pid,
                ..Default::default()
            });
        }
        Ok(r)
    }

    async fn stats(&self, _ctx: &TtrpcContext, req: StatsRequest) -> ttrpc::Result<StatsResponse> {
        match self.target(&req.id)? {
            Target::Sandbox(s) => Ok(StatsResponse {
                stats: MessageField::some(s.stats().await?),
                ..Default::default()
            }),
            Target::Container(c) => Ok(StatsResponse {
                stats: MessageField::some(c.stats().await?),
                ..Default::default()
            }),
        }
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: ConnectRequest,
    ) -> ttrpc::Result<ConnectResponse> {
        let task_pid = match self.target(&req.id) {
            Ok(Target::Sandbox(s)) => s.pid,
            Ok(Target::Container(c)) => c.process_pid(),
            Err(_) => 0,
        };
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            ..Default::default()
        })
    }

    async fn shutdown(&self, _ctx: &TtrpcContext, _req: ShutdownRequest) -> ttrpc::Result<Empty> {
        // Only once nothing is left to serve: a live sandbox or container keeps its shim.
        let sandbox_gone = self.sandbox().is_none_or(|s| s.state().deleted);
        if sandbox_gone && lock(&self.containers).is_empty() {
            self.exit.signal();
        }
        Ok(Empty::default())
    }
}

/// The bundle directory a `delete` action runs for: `-bundle`, else the working directory.
pub fn bundle_dir(flag: &str) -> PathBuf {
    if flag.is_empty() {
        std::env::current_dir().unwrap_or_default()
    } else {
        PathBuf::from(flag)
    }
}
