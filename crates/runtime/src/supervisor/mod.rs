//! The supervisor: a process of its own per sandbox (`sandnet __supervise ID`). It holds
//! the sandbox's lock for its whole life, owns the QEMU child, the agent and QMP
//! connections and the sandbox's record, runs the steps of `run` (`steps.rs`), then serves
//! the control socket (`serve.rs`) until it is told to stop, and tears down.

mod bootfirst;
pub mod containers;
pub mod env;
mod hotplug;
mod netmon;
mod serve;
mod share;
mod steps;

use crate::error::RuntimeError;
use crate::lock::SandboxLock;
use crate::report::{progress, reader_gone, report, silence_stdout, Ready};
use crate::sandbox::{self, SandboxPaths, SandboxState, Status};
use crate::spec::RunSpec;
use crate::teardown::{self, RemoveReport, TeardownError};
use env::{LOCK_FD_ENV, STEP_PAUSE_ENV};
use sandnet_agent_proto::AgentClient;
use sandnet_host::NetNs;
use sandnet_vm::QemuProcess;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where accelerator verdicts are kept.
fn accel_dir(root: &Path) -> PathBuf {
    root.join("accel")
}

/// The supervisor's main: set the sandbox up, report on stdout, then serve until told to
/// stop. Returns the process exit code.
pub async fn supervise(root: &Path, id: &str) -> i32 {
    let fd = std::env::var(LOCK_FD_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok());
    std::env::remove_var(LOCK_FD_ENV);
    supervise_with(root, id, fd, None).await
}

/// A VM booted before its sandbox existed (a factory VM), handed to [`supervise_with`].
pub struct Preboot {
    /// The booted VM.
    pub booted: crate::boot::Booted,
    /// The factory VM's id (its files are in `sandbox::factory_vm_dir`).
    pub vm: String,
    /// The pod's network namespace as the taker opened it: its path may not resolve in
    /// the factory's mount namespace (containerd keeps its netns mounts in its own).
    pub netns: Option<std::os::fd::OwnedFd>,
}

/// [`supervise`] with the sandbox's lock descriptor given (`None`: take it here) and,
/// for a factory VM taken by `run`, the VM already booted.
pub async fn supervise_with(
    root: &Path,
    id: &str,
    lock_fd: Option<i32>,
    preboot: Option<Preboot>,
) -> i32 {
    let paths = SandboxPaths::new(root, id);
    // The sandbox's lock, handed over by `run` (or taken here when started by hand): held
    // for the supervisor's whole life, so no `rm`/`gc` tears down behind its back.
    let lock = match lock_fd {
        Some(fd) => SandboxLock::inherit(fd, &paths.dir).map(Some),
        None => SandboxLock::try_acquire(&paths.dir),
    };
    let lock = match lock {
        Ok(Some(l)) => l,
        Ok(None) => {
            report(&Ready::Failed {
                error: format!("sandbox {id}: another sandnet holds its lock"),
            });
            return 1;
        }
        Err(e) => {
            report(&Ready::Failed {
                error: format!("sandbox {id}: {e}"),
            });
            return 1;
        }
    };
    let spec = match RunSpec::load(&paths) {
        Ok(s) => s,
        Err(e) => {
            report(&Ready::Failed {
                error: format!("sandbox {id}: read spec: {e}"),
            });
            return 1;
        }
    };
    let mut preboot = preboot;
    let handed_netns = preboot.as_mut().and_then(|p| p.netns.take());
    let mut sv = Supervisor {
        root: root.to_path_buf(),
        paths,
        state: SandboxState {
            version: sandbox::STATE_VERSION,
            id: spec.id.clone(),
            netns: spec.netns.clone().unwrap_or_default(),
            netns_path: PathBuf::new(),
            netns_id: None,
            netns_created: false,
            model: spec.model,
            status: Status::Creating,
            supervisor_pid: Some(std::process::id()),
            qemu_pid: None,
            created: sandbox::now_unix(),
            timings: BTreeMap::new(),
            cni: None,
            step: None,
            error: None,
            accel: String::new(),
            accel_reason: String::new(),
            nics: Vec::new(),
            factory_vm: preboot.as_ref().map(|p| p.vm.clone()),
        },
        preboot,
        spec: spec.clone(),
        ns: None,
        nl: None,
        qemu: None,
        agent: None,
        applied: BTreeMap::new(),
        own_links: sandnet_host::OwnLinks::new(),
        containers: None,
        handed_netns,
    };
    // Held until the process is gone: `rm` waiting for the lock then knows the supervisor
    // has exited, not just finished its teardown.
    lock.hold_until_exit();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminated = async {
        match term.as_mut() {
            Some(t) => t.recv().await,
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        r = sv.start(&spec) => r,
        _ = reader_gone() => Err(RuntimeError::Interrupted("the run process went away")),
        _ = terminated => Err(RuntimeError::Interrupted("told to stop (SIGTERM)")),
    };
    match outcome {
        Ok(output) => {
            // The control socket is there before `run` hears of success, so a caller may
            // use the sandbox the moment `run` returns.
            let _ = std::fs::remove_file(&sv.paths.ctl);
            let listener = match tokio::net::UnixListener::bind(&sv.paths.ctl) {
                Ok(l) => l,
                Err(e) => {
                    let error = format!("sandbox {id}: bind {}: {e}", sv.paths.ctl.display());
                    let _ = sv.teardown(true).await;
                    report(&Ready::Failed { error });
                    return 1;
                }
            };
            if sv.spec.shared_fs != crate::shared::SharedFs::None {
                if let Err(e) = sv.serve_containers().await {
                    let error = format!("sandbox {id}: {e}");
                    let _ = sv.teardown(true).await;
                    report(&Ready::Failed { error });
                    return 1;
                }
            }
            // Recorded as running only now that its control socket is there, so whoever
            // reads `running` can reach it.
            sv.state.status = Status::Running;
            sv.save();
            report(&Ready::Ok { output });
            silence_stdout();
            sv.serve(listener).await
        }
        Err(e) => {
            tracing::error!("start failed: {e}");
            let r = sv.teardown(true).await;
            let error = match r {
                Ok(rep) => {
                    tracing::info!("rolled back: {:?}", rep.actions);
                    format!("sandbox {id}: {e}")
                }
                Err(te) => {
                    tracing::error!("rollback failed: {te}");
                    format!("sandbox {id}: {e}; rolling back failed: {te}")
                }
            };
            report(&Ready::Failed { error });
            1
        }
    }
}

struct Supervisor {
    root: PathBuf,
    paths: SandboxPaths,
    state: SandboxState,
    spec: RunSpec,
    ns: Option<NetNs>,
    /// A netlink client in the pod namespace (opened once; entering the namespace is a
    /// thread trip each time).
    nl: Option<sandnet_host::Netlink>,
    qemu: Option<QemuProcess>,
    agent: Option<AgentClient>,
    /// What the guest was last given for each plugged link.
    applied: BTreeMap<String, Applied>,
    /// A factory VM to use instead of booting one.
    preboot: Option<Preboot>,
    /// sandnet's own links in the pod namespace, whose events the monitor drops (taps are
    /// named here before they exist: their first event carries no alias yet).
    own_links: sandnet_host::OwnLinks,
    /// The server of `ctr.sock` (sandboxes with a shared directory).
    containers: Option<sandnet_agent_proto::ttrpc::r#async::Server>,
    /// The pod namespace handed over by the taker of a factory VM.
    handed_netns: Option<std::os::fd::OwnedFd>,
}

/// What the guest was last given for one pod link: what the monitor compares against.
#[derive(Debug, Clone)]
struct Applied {
    iface: sandnet_model::Interface,
    routes: Vec<sandnet_model::Route>,
    neighbors: Vec<sandnet_model::Neighbor>,
}

/// Stops QEMU: asks it to quit over QMP and gives it a moment (unless `force`), then
/// kills whatever is left.
async fn stop_qemu(q: &mut QemuProcess, force: bool) -> sandnet_vm::Result<()> {
    if !force {
        if let Some(qmp) = q.qmp() {
            let _ = tokio::time::timeout(Duration::from_secs(2), qmp.quit()).await;
        }
        let _ = q.wait_timeout(Duration::from_secs(3)).await;
    }
    q.kill().await
}

fn ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

impl Supervisor {
    /// Serves `ctr.sock` over the agent connection.
    async fn serve_containers(&mut self) -> Result<(), RuntimeError> {
        let Some(agent) = self.agent.as_ref() else {
            return Err(RuntimeError::Supervisor(
                "no agent connection to serve container calls over".into(),
            ));
        };
        let s = containers::serve(&self.paths.agent, agent.raw())
            .await
            .map_err(|source| RuntimeError::Io {
                step: format!("serve {}", self.paths.agent.display()),
                source,
            })?;
        self.containers = Some(s);
        Ok(())
    }

    fn save(&self) {
        if let Err(e) = self.state.save(&self.paths) {
            tracing::error!("{e}");
        }
    }

    /// Records that `step` starts (before it acts) and tells `run`.
    async fn begin(&mut self, step: &str) {
        self.state.step = Some(step.to_string());
        self.save();
        progress(step);
        if let Some(ms) = std::env::var(STEP_PAUSE_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }

    /// Stops QEMU and gives back the host side (see [`teardown`]); on success the record
    /// is removed, on failure it is kept saying which step failed.
    async fn teardown(&mut self, force: bool) -> std::result::Result<RemoveReport, TeardownError> {
        let mut rep = RemoveReport::default();
        self.state.status = Status::Stopping;
        self.state.step = Some("qemu_stop".into());
        self.save();
        self.agent = None;
        if let Some(mut s) = self.containers.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), s.shutdown()).await;
        }
        let t = Instant::now();
        let mut r = Ok(());
        if let Some(mut q) = self.qemu.take() {
            match stop_qemu(&mut q, force).await {
                Ok(()) => rep.actions.push(format!("stopped QEMU (pid {})", q.pid())),
                Err(e) => {
                    r = Err(TeardownError::Step {
                        id: self.state.id.clone(),
                        step: "stop QEMU",
                        source: Box::new(e),
                    })
                }
            }
        }
        rep.timings.insert("qemu_stop_ms".to_string(), ms(t));
        if r.is_ok() {
            let ns = self.ns.take();
            r = teardown::release_host_side(&self.root, &self.paths, &mut self.state, ns, &mut rep)
                .await;
        }
        teardown::finish(&self.paths, &mut self.state, r, &mut rep).map(|()| rep)
    }
}
