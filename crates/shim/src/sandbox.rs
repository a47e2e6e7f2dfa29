//! The pod sandbox task: a sandnet VM. Create boots it in the pod's network namespace
//! (containerd already ran CNI there) with a shared directory for the pod's containers,
//! Start marks it running, Kill stops the VM, Wait/State report it, Delete gives its
//! network back and forgets it. When the VM ends, every container process in it ends too
//! (exit status 255, as Kata reports an unknown end).

use crate::bundle::{config_path, Bundle, SANDBOX_NAME, SANDBOX_NAMESPACE};
use crate::error::ShimError;
use crate::events::Events;
use crate::process::ProcessTable;
use containerd_shim::util::timestamp;
use containerd_shim_protos::api::{CreateTaskRequest, StateResponse, Status};
use containerd_shim_protos::events::task::TaskExit;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::MessageField;
use sandnet_runtime::api::{PodNetns, Runtime, Sandbox, SandboxRequest};
use sandnet_runtime::config::Config;
use sandnet_runtime::pod::PodRef;
use sandnet_runtime::sandbox::SandboxPaths;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

/// The sandbox task's state.
#[derive(Debug, Clone)]
pub struct VmState {
    /// CREATED, RUNNING or STOPPED.
    pub status: Status,
    /// The signal Kill delivered, for the exit status (128 + signal).
    killed_by: Option<u32>,
    /// Exit status once STOPPED.
    pub exit_status: u32,
    /// When the VM ended.
    pub exited_at: Option<Timestamp>,
    /// Whether Delete ran.
    pub deleted: bool,
}

/// The pod sandbox task.
pub struct SandboxTask {
    /// The task (and sandbox) id.
    pub id: String,
    /// Its bundle.
    pub bundle: String,
    /// QEMU's pid (the task pid of the sandbox and of every container in it).
    pub pid: u32,
    /// containerd's stdio paths (unused: the VM has no stdio).
    pub stdio: crate::io::Stdio,
    runtime: Runtime,
    state: Mutex<VmState>,
    exited: watch::Sender<bool>,
}

impl SandboxTask {
    /// Boots the sandbox of `req` in `netns`, with a shared directory for containers.
    pub async fn create(
        runtime: &Runtime,
        req: &CreateTaskRequest,
        bundle: &Bundle,
        netns: &Path,
    ) -> Result<Arc<SandboxTask>, ShimError> {
        let ann = |k: &str| bundle.annotations.get(k).map_or("-", String::as_str);
        log::info!(
            "pod {}/{}: sandbox {} in {}",
            ann(SANDBOX_NAMESPACE),
            ann(SANDBOX_NAME),
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
        sreq.shared_dir = true;
        // The pod's host name is the guest's, so its containers show it (they share the
        // pod's UTS namespace under runc).
        sreq.hostname = Some(bundle.hostname.clone()).filter(|h| !h.is_empty());
        crate::annotations::apply(&bundle.annotations, &mut sreq)?;
        let sandbox = runtime
            .run(&sreq, &mut |step| log::info!("sandbox {}: {step}", req.id))
            .await?;
        // The sandbox lives as long as this shim: if it dies and containerd cannot run
        // `delete`, `sandnet gc` removes it.
        if let Err(e) = sandbox.set_owner(std::process::id()) {
            log::warn!("{e}");
        }
        // The pod's name and namespace label its counters (`sandnet stats --prometheus`).
        let annotation = |k: &str| bundle.annotations.get(k).map(String::as_str);
        if let Some(pod) = PodRef::new(annotation(SANDBOX_NAME), annotation(SANDBOX_NAMESPACE)) {
            if let Err(e) = sandnet_runtime::pod::record(runtime.root(), &req.id, &pod) {
                log::warn!("{e}");
            }
        }
        let pid = sandbox.state()?.qemu_pid.unwrap_or_default();
        Ok(Arc::new(SandboxTask {
            id: req.id.clone(),
            bundle: req.bundle.clone(),
            pid,
            stdio: crate::io::Stdio {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
            },
            runtime: runtime.clone(),
            state: Mutex::new(VmState {
                status: Status::CREATED,
                killed_by: None,
                exit_status: 0,
                exited_at: None,
                deleted: false,
            }),
            exited: watch::channel(false).0,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, VmState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The runtime's handle of the sandbox.
    pub fn handle(&self) -> Sandbox {
        self.runtime.handle(&self.id)
    }

    /// The host side of the sandbox's shared directory.
    pub fn share_dir(&self) -> PathBuf {
        SandboxPaths::new(self.runtime.root(), &self.id).shared
    }

    /// The supervisor's socket for container calls.
    pub fn agent_socket(&self) -> PathBuf {
        self.handle().containers_socket()
    }

    /// The network counters of its pod links (task Stats; `io.containerd.cgroups.v1.Metrics`
    /// with only `network` set).
    pub async fn stats(
        &self,
    ) -> Result<containerd_shim_protos::protobuf::well_known_types::any::Any, ShimError> {
        let s = sandnet_runtime::stats::collect(self.runtime.root(), &self.id, false).await?;
        crate::stats::to_network_metrics(&s).map_err(|e| ShimError::Internal(e.to_string()))
    }

    /// Its state now.
    pub fn state(&self) -> VmState {
        self.lock().clone()
    }

    /// Whether the VM still runs.
    pub fn vm_running(&self) -> bool {
        !*self.exited.borrow()
    }

    /// Becomes true when the VM has ended.
    pub fn vm_exit(&self) -> watch::Receiver<bool> {
        self.exited.subscribe()
    }

    /// Watches the VM (the kernel tells when its QEMU or supervisor exits, see
    /// [`crate::vmwatch`]) and reports its end: every container process ends (255), then the
    /// sandbox's TaskExit, and every pending Wait returns.
    pub fn monitor(self: &Arc<Self>, procs: ProcessTable, events: Events) {
        let me = self.clone();
        tokio::spawn(async move {
            crate::vmwatch::wait_vm_end(&me.handle()).await;
            log::info!("sandbox {}: its VM has ended", me.id);
            let info = {
                let mut t = me.lock();
                t.status = Status::STOPPED;
                t.exit_status = t.killed_by.map(|s| 128 + s).unwrap_or(255);
                t.exited_at = timestamp().ok();
                t.clone()
            };
            for p in procs.all() {
                p.vm_gone(&events).await;
            }
            me.exited.send_replace(true);
            events
                .publish(TaskExit {
                    container_id: me.id.clone(),
                    id: me.id.clone(),
                    pid: me.pid,
                    exit_status: info.exit_status,
                    exited_at: MessageField::from_option(info.exited_at),
                    ..Default::default()
                })
                .await;
        });
    }

    /// Start: the VM already runs; the pid.
    pub fn start(&self) -> Result<u32, ShimError> {
        let mut t = self.lock();
        match t.status {
            Status::CREATED => t.status = Status::RUNNING,
            Status::RUNNING => {}
            _ => {
                return Err(ShimError::State(format!(
                    "task {}: its VM has already stopped",
                    self.id
                )))
            }
        }
        Ok(self.pid)
    }

    /// State.
    pub fn state_response(&self) -> StateResponse {
        let t = self.state();
        StateResponse {
            id: self.id.clone(),
            bundle: self.bundle.clone(),
            pid: self.pid,
            status: t.status.into(),
            stdin: self.stdio.stdin.clone(),
            stdout: self.stdio.stdout.clone(),
            stderr: self.stdio.stderr.clone(),
            terminal: self.stdio.terminal,
            exit_status: t.exit_status,
            exited_at: MessageField::from_option(t.exited_at),
            ..Default::default()
        }
    }

    /// Waits until the VM has ended (or the task was deleted).
    pub async fn wait(&self) -> VmState {
        let mut rx = self.exited.subscribe();
        let _ = rx.wait_for(|e| *e).await;
        self.state()
    }

    /// Stops the VM (SIGKILL at once, any other signal as a QEMU quit); killing a VM
    /// that has ended is not an error.
    pub async fn kill(&self, signal: u32) -> Result<(), ShimError> {
        {
            let mut t = self.lock();
            if t.status == Status::STOPPED || t.deleted {
                return Ok(());
            }
            t.killed_by.get_or_insert(signal);
        }
        let force = signal == libc::SIGKILL as u32;
        self.handle().stop(force).await?;
        Ok(())
    }

    /// Delete: removes the sandbox (whatever containers left in the share unmounted first,
    /// (network back, record gone); the final state.
    pub async fn delete(&self) -> Result<VmState, ShimError> {
        if self.state().status == Status::RUNNING {
            return Err(ShimError::State(format!(
                "task {}: its VM is running; kill it first",
                self.id
            )));
        }
        // Removing the sandbox first unmounts whatever containers left in its share.
        self.handle().remove(true).await?;
        let t = {
            let mut t = self.lock();
            t.deleted = true;
            if t.status != Status::STOPPED {
                t.status = Status::STOPPED;
                t.exited_at = timestamp().ok();
            }
            t.clone()
        };
        self.exited.send_replace(true);
        Ok(t)
    }
}
