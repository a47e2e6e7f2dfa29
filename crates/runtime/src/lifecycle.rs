//! The sandbox life cycle: `run` (start a supervisor and wait until the guest network is
//! configured), the supervisor itself, `rm` (from the supervisor, or from persisted state
//! when it is gone), and `ps`.
//!
//! The supervisor is a process of its own per sandbox (`sandnet __supervise ID`): it owns
//! the QEMU child, the agent and QMP connections and the sandbox's state, and serves the
//! control socket. `run` starts it, reads one JSON line from its stdout (the result, or why
//! it failed after rolling back), and returns.

use crate::boot::{boot_vm, BootNic, BootPlan};
use crate::control::{self, ExecResult, GuestNetwork, Request, Response};
use crate::image;
use crate::lock::SandboxLock;
use crate::podnet::{self, namespace_dns, owned_name, CniStepError};
use crate::sandbox::{self, Health, SandboxError, SandboxPaths, SandboxState, Status};
use crate::teardown::{self, attach_dir, RemoveReport, TeardownError};
use sandnet_agent_proto::AgentClient;
use sandnet_host::interwork::{attach_scanned, AttachOptions};
use sandnet_host::{scan_detail, HostError, Model, NetNs};
use sandnet_model::{Dns, Interface, NetworkConfig, IFF_UP};
use sandnet_vm::{QemuProcess, VmSpec};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// How long a guest may take to answer its agent after QEMU started (TCG is slow).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// Errors of the life cycle, each naming the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// About sandbox state.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// A host-side step.
    #[error("{step}: {source}")]
    Host {
        /// The step.
        step: &'static str,
        /// Why.
        #[source]
        source: HostError,
    },
    /// Finding or building the guest image.
    #[error("guest image: {0}")]
    Image(#[from] image::ImageError),
    /// Starting or talking to QEMU.
    #[error("{step}: {source}")]
    Vm {
        /// The step.
        step: &'static str,
        /// Why.
        #[source]
        source: sandnet_vm::VmError,
    },
    /// Talking to the guest agent.
    #[error("{step}: {source}")]
    Agent {
        /// The step.
        step: &'static str,
        /// Why.
        #[source]
        source: sandnet_agent_proto::ClientError,
    },
    /// Talking to a supervisor.
    #[error(transparent)]
    Control(#[from] control::ControlError),
    /// A CNI step.
    #[error(transparent)]
    Cni(#[from] CniStepError),
    /// Tearing down.
    #[error(transparent)]
    Teardown(#[from] TeardownError),
    /// Taking the sandbox's lock.
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
    /// Anything else, already described.
    #[error("{0}")]
    Failed(String),
}

type Result<T> = std::result::Result<T, RuntimeError>;

fn host(step: &'static str) -> impl FnOnce(HostError) -> RuntimeError {
    move |source| RuntimeError::Host { step, source }
}

fn agent(step: &'static str) -> impl FnOnce(sandnet_agent_proto::ClientError) -> RuntimeError {
    move |source| RuntimeError::Agent { step, source }
}

/// The VM part of a sandbox's specification (from the configuration file and flags).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmParams {
    /// QEMU binary.
    pub qemu: PathBuf,
    /// Machine type.
    pub machine: String,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// Kernel image to boot instead of the cached cloud kernel.
    pub kernel: Option<PathBuf>,
    /// Initramfs to use instead of sandnet's.
    pub initrd: Option<PathBuf>,
    /// Extra kernel arguments.
    pub kernel_params: String,
    /// Do not use vhost-net even where it exists.
    pub disable_vhost_net: bool,
    /// How the accelerator is chosen.
    #[serde(default)]
    pub accel: sandnet_vm::AccelMode,
}

impl Default for VmParams {
    fn default() -> Self {
        let c = crate::config::QemuConfig::default();
        VmParams::from(&c)
    }
}

impl From<&crate::config::QemuConfig> for VmParams {
    fn from(c: &crate::config::QemuConfig) -> Self {
        VmParams {
            qemu: c.path.clone(),
            machine: c.machine_type.clone(),
            vcpus: c.default_vcpus,
            memory_mib: c.default_memory,
            kernel: c.kernel.clone(),
            initrd: c.initrd.clone(),
            kernel_params: c.kernel_params.clone(),
            disable_vhost_net: c.disable_vhost_net,
            accel: c.accel,
        }
    }
}

/// Everything a supervisor needs to start a sandbox (persisted as `spec.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    /// Sandbox id.
    pub id: String,
    /// The pod namespace (name or path); `None`: sandnet creates `sandnet-<id>`.
    pub netns: Option<String>,
    /// Interworking model.
    pub model: Model,
    /// Queues per NIC.
    pub queues: u16,
    /// The VM.
    pub vm: VmParams,
    /// DNS for the guest (defaults to the namespace's resolv.conf when `None`).
    #[serde(default)]
    pub dns: Option<Dns>,
    /// CNI to run in the pod namespace before attaching, if any.
    #[serde(default)]
    pub cni: Option<crate::sandbox::CniAttachment>,
}

/// What `run` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOutput {
    /// Sandbox id.
    pub id: String,
    /// The pod namespace.
    pub netns: String,
    /// The guest's interfaces, as its agent lists them after configuration.
    pub interfaces: Vec<Interface>,
    /// The guest's routes, likewise.
    pub routes: Vec<sandnet_model::Route>,
    /// Step timings in milliseconds: `attach_ms`, `image_ms`, `qemu_ms`, `boot_ms`,
    /// `agent_ms`, `network_ms` (attach + agent), `total_ms`.
    pub timings: BTreeMap<String, u64>,
    /// The accelerator QEMU runs with.
    pub accel: String,
    /// Why that accelerator, in one line.
    #[serde(default)]
    pub accel_reason: String,
}

/// The single line a supervisor writes to its stdout when it is ready or has given up.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
enum Ready {
    Progress { step: String },
    Ok { output: RunOutput },
    Failed { error: String },
}

fn spec_path(paths: &SandboxPaths) -> PathBuf {
    paths.dir.join("spec.json")
}

impl RunSpec {
    /// Reads a sandbox's `spec.json`.
    pub fn load(paths: &SandboxPaths) -> std::result::Result<RunSpec, SandboxError> {
        let p = spec_path(paths);
        let io = |source| SandboxError::Io {
            path: p.clone(),
            source,
        };
        let b = std::fs::read(&p).map_err(io)?;
        serde_json::from_slice(&b).map_err(|e| io(std::io::Error::other(e)))
    }
}

/// Where accelerator verdicts are kept.
fn accel_dir(root: &Path) -> PathBuf {
    root.join("accel")
}

/// Fault-injection knob for kill-point tests: the supervisor waits this many milliseconds
/// after recording each step of `run` (so a test can kill it while the record names the
/// step for certain). Unset in production.
pub const STEP_PAUSE_ENV: &str = "SANDNET_STEP_PAUSE_MS";

/// The environment variable through which `run` hands the sandbox's lock to its
/// supervisor (a descriptor number).
pub const LOCK_FD_ENV: &str = "SANDNET_LOCK_FD";

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
            let _ = std::fs::remove_dir_all(&paths.dir);
            return Err(e.into());
        }
    };
    let r = launch_in(root, &paths, spec, &lock, &mut supervisor, on_progress).await;
    if r.is_err() && !paths.state.exists() {
        let _ = std::fs::remove_dir_all(&paths.dir);
    }
    drop(lock);
    r
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
    let log = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&paths.log)
            .map_err(io(&paths.log))?
    };
    let lock_fd = lock.raw_fd();
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
    .map_err(|e| RuntimeError::Failed(format!("start supervisor: {e}")))?;
    let pid = child.id();
    let out = child
        .stdout
        .take()
        .ok_or_else(|| RuntimeError::Failed("supervisor has no stdout".into()))?;
    let mut reader = BufReader::new(out);
    let deadline = Instant::now() + BOOT_TIMEOUT + Duration::from_secs(120);
    let ready: Option<Ready> = loop {
        let mut line = String::new();
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, reader.read_line(&mut line)).await {
            Ok(Ok(n)) if n > 0 => match serde_json::from_str::<Ready>(&line) {
                Ok(Ready::Progress { step }) => on_progress(&step),
                Ok(r) => break Some(r),
                Err(_) => break None,
            },
            _ => break None,
        }
    };
    match ready {
        Some(Ready::Ok { output }) => Ok(output),
        Some(Ready::Failed { error }) => {
            let _ = child.wait().await;
            Err(RuntimeError::Failed(error))
        }
        Some(Ready::Progress { .. }) => unreachable!("progress lines are consumed above"),
        None => {
            // It died or hung without a word: clean up from the persisted state. The
            // lock it held is ours too, so nobody else starts a teardown meanwhile.
            if let Some(pid) = pid {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.wait().await;
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
            Err(RuntimeError::Failed(format!(
                "supervisor of sandbox {} died before the sandbox was ready: {}{cleanup}",
                spec.id,
                tail.replace('\n', " | ")
            )))
        }
    }
}

fn log_tail(p: &Path, n: usize) -> String {
    let s = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The supervisor's main: set the sandbox up, report on stdout, then serve until told to
/// stop. Returns the process exit code.
pub async fn supervise(root: &Path, id: &str) -> i32 {
    let paths = SandboxPaths::new(root, id);
    // The sandbox's lock, handed over by `run` (or taken here when started by hand): held
    // for the supervisor's whole life, so no `rm`/`gc` tears down behind its back.
    let lock = match std::env::var(LOCK_FD_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    {
        Some(fd) => SandboxLock::inherit(fd, &paths.dir).map(Some),
        None => SandboxLock::try_acquire(&paths.dir),
    };
    std::env::remove_var(LOCK_FD_ENV);
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
    let mut sv = Supervisor {
        root: root.to_path_buf(),
        paths,
        state: SandboxState {
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
        },
        ns: None,
        qemu: None,
        agent: None,
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
        _ = reader_gone() => Err(RuntimeError::Failed(
            "the run process went away before the sandbox was ready".into(),
        )),
        _ = terminated => Err(RuntimeError::Failed(
            "told to stop (SIGTERM) before the sandbox was ready".into(),
        )),
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

/// Resolves when nobody reads our stdout any more (the `run` process died): a pipe whose
/// reading end is closed polls as POLLERR on the writing end.
async fn reader_gone() {
    use std::os::fd::AsRawFd;
    loop {
        let mut p = libc::pollfd {
            fd: std::io::stdout().as_raw_fd(),
            events: 0,
            revents: 0,
        };
        // SAFETY: polling one valid pollfd without waiting.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        if n > 0 && p.revents & (libc::POLLERR | libc::POLLHUP) != 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn report(r: &Ready) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, r);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

/// After reporting, stdout's reader (the `run` process) goes away: point stdout at
/// /dev/null so nothing later can die of SIGPIPE.
fn silence_stdout() {
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(null.as_fd());
    }
}

struct Supervisor {
    root: PathBuf,
    paths: SandboxPaths,
    state: SandboxState,
    ns: Option<NetNs>,
    qemu: Option<QemuProcess>,
    agent: Option<AgentClient>,
}

fn ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

impl Supervisor {
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

    async fn start(&mut self, spec: &RunSpec) -> Result<RunOutput> {
        let t0 = Instant::now();
        let mut timings = BTreeMap::new();
        let ns = match &spec.netns {
            Some(n) => NetNs::open(n).map_err(host("open network namespace"))?,
            None => {
                // Recorded before it exists, so that a crash right after leaves a trace.
                let name = owned_name(&spec.id);
                self.state.netns = name.clone();
                self.state.netns_path = Path::new(sandnet_host::netns::NETNS_RUN_DIR).join(&name);
                self.state.netns_created = true;
                self.begin("netns").await;
                let t = Instant::now();
                let ns = NetNs::create(&name).map_err(host("create network namespace"))?;
                timings.insert("netns_ms".to_string(), ms(t));
                ns
            }
        };
        self.state.netns_path = ns.path().to_path_buf();
        self.state.netns_id = Some(ns.id().map_err(host("network namespace"))?);
        // Held from here on: teardown reaches the namespace through this descriptor, so
        // CNI DEL runs in it whatever happens to its mount point.
        self.ns = Some(ns.try_clone().map_err(host("network namespace"))?);
        self.save();
        let mut cni_dns = None;
        if let Some(c) = &spec.cni {
            let mut c = c.clone();
            if c.host_netns.as_os_str().is_empty() {
                c.host_netns = PathBuf::from(format!("/proc/{}/ns/net", std::process::id()));
            }
            self.state.cni = Some(c.clone());
            self.begin("cni").await;
            let t = Instant::now();
            let res = match podnet::cni_add(&c, &self.state.netns_path).await {
                Ok(r) => r,
                Err(e) => {
                    if !podnet::add_started(&c) {
                        // Refused before any plugin ran (e.g. one is missing): no DEL owed.
                        self.state.cni = None;
                        self.save();
                    }
                    return Err(e.into());
                }
            };
            timings.insert("cni_add_ms".to_string(), ms(t));
            cni_dns = podnet::cni_dns(&res);
        }
        self.begin("attach").await;

        // Host side: scan and attach.
        let t = Instant::now();
        let nl = ns.netlink().map_err(host("netlink"))?;
        let scan = scan_detail(&nl).await.map_err(host("scan"))?;
        let opts = AttachOptions {
            model: spec.model,
            queues: spec.queues,
            state_dir: attach_dir(&self.root),
        };
        let eps = attach_scanned(&ns, &nl, &scan, &opts)
            .await
            .map_err(host("attach"))?;
        let attach_ms = ms(t);

        // The guest image.
        self.begin("image").await;
        let t = Instant::now();
        let img = tokio::task::spawn_blocking({
            let k = spec.vm.kernel.clone();
            let i = spec.vm.initrd.clone();
            move || image::resolve(k.as_deref(), i.as_deref())
        })
        .await
        .map_err(|e| RuntimeError::Failed(format!("image task: {e}")))??;
        let image_ms = ms(t);

        // QEMU, inside the pod namespace, with every endpoint cold-plugged; under KVM only
        // where a guest really runs under it (see boot.rs).
        let make_spec = |accel| {
            let mut vs = VmSpec::new(&img.kernel, &img.initrd, accel);
            vs.qemu = spec.vm.qemu.clone();
            vs.machine = spec.vm.machine.clone();
            vs.vcpus = spec.vm.vcpus;
            vs.memory_mib = spec.vm.memory_mib;
            if !spec.vm.kernel_params.is_empty() {
                vs.kernel_args = format!("{} {}", vs.kernel_args, spec.vm.kernel_params);
            }
            vs
        };
        let vhost = !spec.vm.disable_vhost_net && Path::new("/dev/vhost-net").exists();
        let mut guest_ifaces = Vec::new();
        let mut nics = Vec::new();
        for (i, mut e) in eps.into_iter().enumerate() {
            if e.fds.is_empty() {
                continue; // model none
            }
            nics.push(BootNic {
                id: format!("net{i}"),
                mac: e.guest_mac,
                tap_fds: std::mem::take(&mut e.fds),
            });
            guest_ifaces.push(Interface {
                name: e.endpoint.name.clone(),
                kind: e.endpoint.kind.clone(),
                mac: Some(e.guest_mac),
                mtu: e.endpoint.mtu,
                addresses: e.endpoint.addresses.clone(),
                flags: IFF_UP,
            });
        }
        self.begin("boot").await;
        let cache_dir = accel_dir(&self.root);
        let plan = BootPlan {
            mode: spec.vm.accel,
            cache_dir: &cache_dir,
            spec: &make_spec,
            vhost,
            netns: self.ns.as_ref().map(|n| n.as_fd()),
            dir: &self.paths.dir,
        };
        let (state, paths) = (&mut self.state, &self.paths);
        let mut record = |pid: Option<u32>, accel: sandnet_vm::Accel, why: &str| {
            state.qemu_pid = pid;
            state.accel = accel.to_string();
            if !why.is_empty() {
                state.accel_reason = why.to_string();
            }
            if let Err(e) = state.save(paths) {
                tracing::error!("{e}");
            }
        };
        let booted = boot_vm(plan, nics, &mut record).await?;
        let (accel, qemu_ms, boot_ms) = (booted.accel, booted.qemu_ms, booted.boot_ms);
        self.state.qemu_pid = Some(booted.qemu.pid());
        self.state.accel_reason = booted.reason.clone();
        self.qemu = Some(booted.qemu);
        self.save();
        let client = booted.agent;

        // The guest network, in Kata's order.
        self.begin("network").await;
        let t = Instant::now();
        let devices: Vec<&str> = guest_ifaces.iter().map(|i| i.name.as_str()).collect();
        let wanted = NetworkConfig {
            interfaces: guest_ifaces.clone(),
            routes: scan
                .config
                .routes
                .iter()
                .filter(|r| devices.contains(&r.device.as_str()))
                .cloned()
                .collect(),
            neighbors: scan
                .config
                .neighbors
                .iter()
                .filter(|n| devices.contains(&n.device.as_str()))
                .cloned()
                .collect(),
            dns: Some(
                spec.dns
                    .clone()
                    .or(cni_dns)
                    .unwrap_or_else(|| namespace_dns(&self.state.netns)),
            ),
        };
        apply_network(&client, &spec.id, &wanted).await?;
        let agent_ms = ms(t);
        let interfaces = client
            .list_interfaces()
            .await
            .map_err(agent("list interfaces"))?;
        let routes = client.list_routes().await.map_err(agent("list routes"))?;
        self.agent = Some(client);

        timings.insert("attach_ms".to_string(), attach_ms);
        timings.insert("image_ms".to_string(), image_ms);
        timings.insert("qemu_ms".to_string(), qemu_ms);
        timings.insert("boot_ms".to_string(), boot_ms);
        timings.insert("agent_ms".to_string(), agent_ms);
        timings.insert("network_ms".to_string(), attach_ms + agent_ms);
        timings.insert("total_ms".to_string(), ms(t0));
        self.state.timings = timings.clone();
        self.state.status = Status::Running;
        self.state.step = None;
        self.save();
        Ok(RunOutput {
            id: spec.id.clone(),
            netns: self.state.netns.clone(),
            interfaces,
            routes,
            timings,
            accel: accel.as_str().to_string(),
            accel_reason: self.state.accel_reason.clone(),
        })
    }

    /// Serves the control socket until told to stop; QEMU exiting on its own is recorded.
    async fn serve(&mut self, listener: tokio::net::UnixListener) -> i32 {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let mut qemu_done = false;
        loop {
            let qemu_exit = async {
                match (self.qemu.as_mut(), qemu_done) {
                    (Some(q), false) => q.wait().await.ok(),
                    _ => std::future::pending().await,
                }
            };
            let sigterm = async {
                match term.as_mut() {
                    Some(t) => t.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                st = qemu_exit => {
                    qemu_done = true;
                    tracing::warn!("QEMU exited on its own: {st:?}");
                    self.state.status = Status::QemuExited;
                    self.save();
                }
                _ = sigterm => {
                    return match self.teardown(false).await {
                        Ok(_) => 0,
                        Err(e) => {
                            tracing::error!("{e}");
                            1
                        }
                    };
                }
                conn = listener.accept() => {
                    let Ok((stream, _)) = conn else { continue };
                    let (rd, mut wr) = stream.into_split();
                    let mut line = String::new();
                    let mut rd = BufReader::new(rd);
                    let req = match tokio::time::timeout(Duration::from_secs(5), rd.read_line(&mut line)).await {
                        Ok(Ok(_)) => serde_json::from_str::<Request>(&line),
                        _ => continue,
                    };
                    match req {
                        Ok(Request::Stop { force }) => {
                            let (resp, code) = match self.teardown(force).await {
                                Ok(rep) => (Response::Stopped { actions: rep.actions, timings: rep.timings, error: None }, 0),
                                Err(e) => (Response::Stopped { actions: vec![], timings: BTreeMap::new(), error: Some(e.to_string()) }, 1),
                            };
                            let _ = write_response(&mut wr, &resp).await;
                            let _ = std::fs::remove_file(&self.paths.ctl);
                            return code;
                        }
                        Ok(Request::Halt { force }) => {
                            if let Some(q) = self.qemu.as_mut() {
                                if !force {
                                    if let Some(qmp) = q.qmp() {
                                        let _ = tokio::time::timeout(Duration::from_secs(2), qmp.quit()).await;
                                    }
                                    let _ = q.wait_timeout(Duration::from_secs(3)).await;
                                }
                                let resp = match q.kill().await {
                                    Ok(()) => Response::Halted,
                                    Err(e) => Response::Error { message: format!("stop QEMU: {e}") },
                                };
                                if !qemu_done {
                                    qemu_done = true;
                                    self.state.status = Status::QemuExited;
                                    self.save();
                                }
                                self.agent = None;
                                let _ = write_response(&mut wr, &resp).await;
                            } else {
                                let _ = write_response(&mut wr, &Response::Halted).await;
                            }
                        }
                        Ok(req) => {
                            let client = self.agent.clone();
                            tokio::spawn(async move {
                                let resp = answer(client, req).await;
                                let _ = write_response(&mut wr, &resp).await;
                            });
                        }
                        Err(e) => {
                            let _ = write_response(&mut wr, &Response::Error { message: format!("bad request: {e}") }).await;
                        }
                    }
                }
            }
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
        let t = Instant::now();
        let mut r = Ok(());
        if let Some(mut q) = self.qemu.take() {
            if !force {
                if let Some(qmp) = q.qmp() {
                    let _ = tokio::time::timeout(Duration::from_secs(2), qmp.quit()).await;
                }
                let _ = q.wait_timeout(Duration::from_secs(3)).await;
            }
            match q.kill().await {
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

async fn write_response(
    w: &mut tokio::net::unix::OwnedWriteHalf,
    r: &Response,
) -> std::io::Result<()> {
    let mut b = serde_json::to_vec(r).map_err(std::io::Error::other)?;
    b.push(b'\n');
    w.write_all(&b).await
}

async fn answer(client: Option<AgentClient>, req: Request) -> Response {
    let Some(c) = client else {
        return Response::Error {
            message: "the guest agent is not connected".into(),
        };
    };
    let r = match req {
        Request::Inspect => match (c.list_interfaces().await, c.list_routes().await) {
            (Ok(interfaces), Ok(routes)) => {
                Ok(Response::Network(GuestNetwork { interfaces, routes }))
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
        },
        Request::Exec { args, timeout_ms } => c
            .exec(&args, Duration::from_millis(timeout_ms))
            .await
            .map(|o| {
                Response::Exec(ExecResult {
                    exit_code: o.exit_code,
                    stdout: o.stdout,
                    stderr: o.stderr,
                })
            }),
        Request::Stop { .. } | Request::Halt { .. } => {
            return Response::Error {
                message: "handled by the supervisor loop".into(),
            }
        }
    };
    r.unwrap_or_else(|e| Response::Error {
        message: e.to_string(),
    })
}

/// Applies a network to a guest through its agent, in Kata's order: every interface, then
/// the routes, then the neighbours, then `CreateSandbox` with hostname and DNS.
pub async fn apply_network(
    client: &AgentClient,
    hostname: &str,
    net: &NetworkConfig,
) -> Result<()> {
    for i in &net.interfaces {
        client
            .update_interface(i)
            .await
            .map_err(agent("configure guest interface"))?;
    }
    if !net.routes.is_empty() {
        client
            .update_routes(&net.routes)
            .await
            .map_err(agent("configure guest routes"))?;
    }
    if !net.neighbors.is_empty() {
        client
            .add_arp_neighbors(&net.neighbors)
            .await
            .map_err(agent("configure guest neighbours"))?;
    }
    client
        .create_sandbox(hostname, &net.dns.clone().unwrap_or_default())
        .await
        .map_err(agent("create sandbox (hostname, DNS)"))?;
    Ok(())
}

/// Tells the `run` process (reading our stdout) which step is under way.
fn progress(step: &str) {
    report(&Ready::Progress {
        step: step.to_string(),
    });
}

/// Asks a live supervisor something; a clear error when it is not there.
pub async fn ask(root: &Path, id: &str, req: &Request, timeout: Duration) -> Result<Response> {
    let st = SandboxState::load(root, id)?;
    let health = st.health(root);
    let gone = if !st.supervisor_alive() {
        Some("its supervisor is not running")
    } else if health == Health::QemuExited {
        // The supervisor lives on, but its agent connection is dead: say so rather than
        // pass on a transport error.
        Some("its VM is not running")
    } else {
        None
    };
    if let Some(why) = gone {
        return Err(RuntimeError::Failed(format!(
            "sandbox {id} is {health}: {why} (remove it with `sandnet rm {id}`)"
        )));
    }
    let paths = SandboxPaths::new(root, id);
    Ok(control::call(id, &paths.ctl, req, timeout).await?)
}

/// Asks the supervisor of a sandbox someone holds the lock of to tear it down: over its
/// control socket once it serves, with SIGTERM while it is still starting (it then rolls
/// back). Does nothing when no supervisor of this sandbox runs (another `rm`/`gc` holds
/// the lock); the caller then waits for the lock.
pub(crate) async fn ask_to_stop(
    root: &Path,
    id: &str,
    force: bool,
    rep: &mut RemoveReport,
) -> std::result::Result<(), TeardownError> {
    let Ok(st) = SandboxState::load(root, id) else {
        return Ok(());
    };
    if !st.supervisor_alive() {
        return Ok(());
    }
    let paths = SandboxPaths::new(root, id);
    match st.status {
        Status::Running | Status::QemuExited => {
            // Recorded as running a moment before its control socket is bound.
            for _ in 0..100 {
                if paths.ctl.exists() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            match control::call(
                id,
                &paths.ctl,
                &Request::Stop { force },
                teardown::STOP_WAIT,
            )
            .await
            {
                Ok(Response::Stopped {
                    actions,
                    timings,
                    error,
                }) => {
                    rep.actions.extend(actions);
                    rep.timings.extend(timings);
                    if let Some(message) = error {
                        return Err(TeardownError::Supervisor {
                            id: id.to_string(),
                            message,
                        });
                    }
                }
                Ok(other) => tracing::warn!("supervisor of {id} answered {other:?}"),
                Err(e) => tracing::warn!("supervisor of {id}: {e}"),
            }
        }
        Status::Creating => {
            if let Some(pid) = st.supervisor_pid {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
                rep.actions.push(format!(
                    "asked the starting supervisor (pid {pid}) to roll back"
                ));
            }
        }
        _ => {}
    }
    Ok(())
}
