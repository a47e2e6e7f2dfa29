//! The task service containerd talks to: the pod sandbox task is a sandnet VM. Create
//! boots it in the pod's network namespace (containerd already ran CNI there), Start marks
//! it running, Kill stops the VM, Wait/State report it, Delete gives its network back and
//! forgets it. Containers of the pod are refused (they would run inside the VM: not yet).

use crate::bundle::{config_path, Bundle, TaskKind, SANDBOX_NAME, SANDBOX_NAMESPACE};
use crate::error::ShimError;
use async_trait::async_trait;
use containerd_shim::asynchronous::publisher::RemotePublisher;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::event::Event;
use containerd_shim::util::timestamp;
use containerd_shim_protos::api::{
    ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse, DeleteRequest,
    DeleteResponse, Empty, KillRequest, PidsRequest, PidsResponse, ShutdownRequest, StartRequest,
    StartResponse, StateRequest, StateResponse, Status, WaitRequest, WaitResponse,
};
use containerd_shim_protos::events::task::{TaskCreate, TaskDelete, TaskExit, TaskStart};
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::shim_async::Task;
use containerd_shim_protos::ttrpc::r#async::TtrpcContext;
use containerd_shim_protos::ttrpc::{self, context::Context};
use containerd_shim_protos::types::task::ProcessInfo;
use sandnet_runtime::api::{PodNetns, Runtime, SandboxRequest};
use sandnet_runtime::config::Config;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// How often the VM's liveness is checked.
const POLL: Duration = Duration::from_millis(100);

/// The one task a sandnet shim serves.
#[derive(Debug, Clone)]
struct TaskInfo {
    id: String,
    bundle: String,
    pid: u32,
    status: Status,
    /// The signal Kill delivered, for the exit status (128 + signal).
    killed_by: Option<u32>,
    exit_status: u32,
    exited_at: Option<Timestamp>,
    stdin: String,
    stdout: String,
    stderr: String,
    terminal: bool,
    deleted: bool,
}

/// The task service of one shim.
pub struct SandboxTask {
    runtime: Runtime,
    namespace: String,
    publisher: Arc<RemotePublisher>,
    exit: Arc<ExitSignal>,
    task: Arc<Mutex<Option<TaskInfo>>>,
    exited: watch::Sender<bool>,
}

impl SandboxTask {
    /// A service running sandboxes with `runtime`, publishing events for containerd
    /// namespace `namespace`; `exit` is signalled on Shutdown.
    pub fn new(
        runtime: Runtime,
        namespace: String,
        publisher: RemotePublisher,
        exit: Arc<ExitSignal>,
    ) -> Self {
        SandboxTask {
            runtime,
            namespace,
            publisher: Arc::new(publisher),
            exit,
            task: Arc::new(Mutex::new(None)),
            exited: watch::channel(false).0,
        }
    }

    fn snapshot(&self, id: &str) -> Result<TaskInfo, ShimError> {
        match self.lock().as_ref() {
            Some(t) if t.id == id => Ok(t.clone()),
            _ => Err(ShimError::NotFound(format!("task {id} not found"))),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<TaskInfo>> {
        self.task.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn publish(&self, ev: impl Event + 'static) {
        let topic = ev.topic();
        if let Err(e) = self
            .publisher
            .publish(Context::default(), &topic, &self.namespace, Box::new(ev))
            .await
        {
            log::warn!("publish {topic}: {e}");
        }
    }

    async fn create_sandbox(&self, req: &CreateTaskRequest) -> Result<u32, ShimError> {
        let bundle = Bundle::load(std::path::Path::new(&req.bundle))?;
        let netns = match bundle.kind {
            TaskKind::Container { sandbox } => {
                return Err(ShimError::Unsupported(format!(
                    "sandnet runs pod sandboxes only: container {} of pod {sandbox} would have \
                     to run inside the pod's VM, which sandnet does not do yet",
                    req.id
                )))
            }
            TaskKind::Sandbox { netns: Some(n) } => n,
            TaskKind::Sandbox { netns: None } => {
                return Err(ShimError::Unsupported(format!(
                    "task {}: the OCI spec names no network namespace path; sandnet boots the \
                     VM in the pod namespace containerd's CRI created",
                    req.id
                )))
            }
        };
        log::info!(
            "pod {}/{}: sandbox {} in {}",
            bundle
                .annotations
                .get(SANDBOX_NAMESPACE)
                .map_or("-", String::as_str),
            bundle
                .annotations
                .get(SANDBOX_NAME)
                .map_or("-", String::as_str),
            req.id,
            netns.display()
        );
        let options = req
            .options
            .as_ref()
            .map(|a| config_path(&a.value))
            .transpose()?
            .flatten();
        let (config, warnings) =
            Config::load(options.as_deref()).map_err(|e| ShimError::Config(e.to_string()))?;
        for w in warnings {
            log::warn!("configuration: {w}");
        }
        let mut sreq = SandboxRequest::new(config);
        sreq.id = Some(req.id.clone());
        sreq.netns = PodNetns::Existing(netns.display().to_string());
        let sandbox = match self
            .runtime
            .run(&sreq, &mut |step| log::info!("sandbox {}: {step}", req.id))
            .await
        {
            Ok(s) => s,
            Err(e) => return Err(e.into()),
        };
        // The sandbox lives as long as this shim: if it dies and containerd cannot run
        // `delete`, `sandnet gc` removes it.
        if let Err(e) = sandbox.set_owner(std::process::id()) {
            log::warn!("{e}");
        }
        let pid = sandbox
            .state()
            .map_err(ShimError::from)?
            .qemu_pid
            .unwrap_or_default();
        Ok(pid)
    }

    /// Watches the VM and reports its end: TaskExit, and every pending Wait returns.
    fn monitor(&self, id: String) {
        let sandbox = self.runtime.handle(&id);
        let task = self.task.clone();
        let exited = self.exited.clone();
        let publisher = self.publisher.clone();
        let namespace = self.namespace.clone();
        tokio::spawn(async move {
            let _ = sandbox.wait_exit(POLL).await;
            let info = {
                let mut g = task.lock().unwrap_or_else(|p| p.into_inner());
                let Some(t) = g.as_mut().filter(|t| t.id == id) else {
                    return;
                };
                t.status = Status::STOPPED;
                t.exit_status = t.killed_by.map(|s| 128 + s).unwrap_or(255);
                t.exited_at = timestamp().ok();
                t.clone()
            };
            let _ = exited.send(true);
            let ev = TaskExit {
                container_id: info.id.clone(),
                id: info.id.clone(),
                pid: info.pid,
                exit_status: info.exit_status,
                exited_at: MessageField::from_option(info.exited_at.clone()),
                ..Default::default()
            };
            let topic = ev.topic();
            if let Err(e) = publisher
                .publish(Context::default(), &topic, &namespace, Box::new(ev))
                .await
            {
                log::warn!("publish {topic}: {e}");
            }
        });
    }
}

fn no_exec(exec_id: &str) -> Result<(), ShimError> {
    if exec_id.is_empty() {
        Ok(())
    } else {
        Err(ShimError::NotFound(format!(
            "exec {exec_id}: sandnet runs no processes in the sandbox task"
        )))
    }
}

#[async_trait]
impl Task for SandboxTask {
    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> ttrpc::Result<CreateTaskResponse> {
        if let Some(t) = self.lock().as_ref() {
            return Err(ShimError::Exists(t.id.clone()).into());
        }
        let pid = self.create_sandbox(&req).await?;
        let info = TaskInfo {
            id: req.id.clone(),
            bundle: req.bundle.clone(),
            pid,
            status: Status::CREATED,
            killed_by: None,
            exit_status: 0,
            exited_at: None,
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
            deleted: false,
        };
        *self.lock() = Some(info);
        self.monitor(req.id.clone());
        self.publish(TaskCreate {
            container_id: req.id.clone(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
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
        no_exec(&req.exec_id)?;
        let pid = {
            let mut g = self.lock();
            let t = g
                .as_mut()
                .filter(|t| t.id == req.id)
                .ok_or_else(|| ShimError::NotFound(format!("task {} not found", req.id)))?;
            match t.status {
                Status::CREATED => t.status = Status::RUNNING,
                Status::RUNNING => {}
                _ => {
                    return Err(ShimError::State(format!(
                        "task {}: its VM has already stopped",
                        req.id
                    ))
                    .into())
                }
            }
            t.pid
        };
        self.publish(TaskStart {
            container_id: req.id.clone(),
            pid,
            ..Default::default()
        })
        .await;
        Ok(StartResponse {
            pid,
            ..Default::default()
        })
    }

    async fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> ttrpc::Result<StateResponse> {
        no_exec(&req.exec_id)?;
        let t = self.snapshot(&req.id)?;
        Ok(StateResponse {
            id: t.id,
            bundle: t.bundle,
            pid: t.pid,
            status: t.status.into(),
            stdin: t.stdin,
            stdout: t.stdout,
            stderr: t.stderr,
            terminal: t.terminal,
            exit_status: t.exit_status,
            exited_at: MessageField::from_option(t.exited_at),
            ..Default::default()
        })
    }

    async fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> ttrpc::Result<WaitResponse> {
        no_exec(&req.exec_id)?;
        self.snapshot(&req.id)?;
        let mut rx = self.exited.subscribe();
        let _ = rx.wait_for(|e| *e).await;
        let t = self.snapshot(&req.id)?;
        Ok(WaitResponse {
            exit_status: t.exit_status,
            exited_at: MessageField::from_option(t.exited_at),
            ..Default::default()
        })
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> ttrpc::Result<Empty> {
        no_exec(&req.exec_id)?;
        let t = self.snapshot(&req.id)?;
        if t.status == Status::STOPPED || t.deleted {
            // Killing a task that has already exited (containerd's Kill(all) after the
            // exit) is not an error.
            return Ok(Empty::default());
        }
        if let Some(x) = self.lock().as_mut() {
            x.killed_by.get_or_insert(req.signal);
        }
        let force = req.signal == libc::SIGKILL as u32;
        self.runtime
            .handle(&req.id)
            .stop(force)
            .await
            .map_err(ShimError::from)?;
        Ok(Empty::default())
    }

    async fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: DeleteRequest,
    ) -> ttrpc::Result<DeleteResponse> {
        no_exec(&req.exec_id)?;
        let t = self.snapshot(&req.id)?;
        if t.status == Status::RUNNING {
            return Err(ShimError::State(format!(
                "task {}: its VM is running; kill it first",
                req.id
            ))
            .into());
        }
        self.runtime
            .handle(&req.id)
            .remove(true)
            .await
            .map_err(ShimError::from)?;
        let t = {
            let mut g = self.lock();
            let Some(x) = g.as_mut() else {
                return Err(ShimError::NotFound(format!("task {} not found", req.id)).into());
            };
            x.deleted = true;
            if x.status != Status::STOPPED {
                x.status = Status::STOPPED;
                x.exited_at = timestamp().ok();
            }
            x.clone()
        };
        let _ = self.exited.send(true);
        self.publish(TaskDelete {
            container_id: t.id.clone(),
            id: t.id.clone(),
            pid: t.pid,
            exit_status: t.exit_status,
            exited_at: MessageField::from_option(t.exited_at.clone()),
            ..Default::default()
        })
        .await;
        Ok(DeleteResponse {
            pid: t.pid,
            exit_status: t.exit_status,
            exited_at: MessageField::from_option(t.exited_at),
            ..Default::default()
        })
    }

    async fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> ttrpc::Result<PidsResponse> {
        let t = self.snapshot(&req.id)?;
        let mut r = PidsResponse::default();
        if t.status != Status::STOPPED {
            r.processes.push(ProcessInfo {
                pid: t.pid,
                ..Default::default()
            });
        }
        Ok(r)
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: ConnectRequest,
    ) -> ttrpc::Result<ConnectResponse> {
        let pid = self
            .lock()
            .as_ref()
            .filter(|t| t.id == req.id)
            .map(|t| t.pid)
            .unwrap_or_default();
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: pid,
            ..Default::default()
        })
    }

    async fn shutdown(&self, _ctx: &TtrpcContext, _req: ShutdownRequest) -> ttrpc::Result<Empty> {
        // Only once nothing is left to serve: a live sandbox keeps its shim.
        let idle = self.lock().as_ref().is_none_or(|t| t.deleted);
        if idle {
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
