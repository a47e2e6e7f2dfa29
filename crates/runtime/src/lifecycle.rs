//! The sandbox life cycle: `run` (start a supervisor and wait until the guest network is
//! configured), the supervisor itself, `rm` (from the supervisor, or from persisted state
//! when it is gone), and `ps`.
//!
//! The supervisor is a process of its own per sandbox (`sandnet __supervise ID`): it owns
//! the QEMU child, the agent and QMP connections and the sandbox's state, and serves the
//! control socket. `run` starts it, reads one JSON line from its stdout (the result, or why
//! it failed after rolling back), and returns.

use crate::control::{self, ExecResult, GuestNetwork, Request, Response};
use crate::image;
use crate::sandbox::{self, CniAttachment, SandboxError, SandboxPaths, SandboxState, Status};
use sandnet_agent_proto::AgentClient;
use sandnet_host::interwork::{attach_scanned, AttachOptions};
use sandnet_host::{scan_detail, HostError, Model, NetNs};
use sandnet_model::{Dns, Interface, NetworkConfig, IFF_UP};
use sandnet_vm::{Accel, NicSpec, Qemu, QemuProcess, VmSpec};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
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
    /// Anything else, already described.
    #[error("{0}")]
    Failed(String),
}

type Result<T> = std::result::Result<T, RuntimeError>;

fn host(step: &'static str) -> impl FnOnce(HostError) -> RuntimeError {
    move |source| RuntimeError::Host { step, source }
}

fn vm(step: &'static str) -> impl FnOnce(sandnet_vm::VmError) -> RuntimeError {
    move |source| RuntimeError::Vm { step, source }
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

fn attach_dir(root: &Path) -> PathBuf {
    root.join("attach")
}

/// Starts a sandbox: writes its spec and state, starts `supervisor` (a command that runs
/// [`supervise`] for this id, e.g. `sandnet __supervise ID`) in a session of its own, and
/// waits for it to report. On failure the supervisor has rolled back; what is left of the
/// state directory is removed here.
pub async fn launch(
    root: &Path,
    spec: &RunSpec,
    mut supervisor: std::process::Command,
    on_progress: &mut (dyn FnMut(&str) + Send),
) -> Result<RunOutput> {
    sandbox::check_id(&spec.id)?;
    let paths = SandboxPaths::new(root, &spec.id);
    std::fs::create_dir_all(root).map_err(|e| SandboxError::Io {
        path: root.to_path_buf(),
        source: e,
    })?;
    match std::fs::create_dir(&paths.dir) {
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
    let r = launch_in(root, &paths, spec, &mut supervisor, on_progress).await;
    if r.is_err() {
        let _ = std::fs::remove_dir_all(&paths.dir);
    }
    r
}

async fn launch_in(
    root: &Path,
    paths: &SandboxPaths,
    spec: &RunSpec,
    supervisor: &mut std::process::Command,
    on_progress: &mut (dyn FnMut(&str) + Send),
) -> Result<RunOutput> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SandboxError::Io { path, source }
    };
    std::fs::write(
        spec_path(paths),
        serde_json::to_vec_pretty(spec).map_err(|e| io(&paths.dir)(std::io::Error::other(e)))?,
    )
    .map_err(io(&spec_path(paths)))?;
    let log = std::fs::File::create(&paths.log).map_err(io(&paths.log))?;
    {
        use std::os::unix::process::CommandExt;
        supervisor
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        // SAFETY: setsid is async-signal-safe; the supervisor must outlive this process
        // and not share its session or terminal.
        unsafe {
            supervisor.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
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
            // It died or hung without a word: clean up from the persisted state.
            if let Some(pid) = pid {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.wait().await;
            let tail = log_tail(&paths.log, 5);
            let _ = cleanup_from_state(root, &spec.id).await;
            Err(RuntimeError::Failed(format!(
                "supervisor of sandbox {} died before the sandbox was ready: {}",
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

/// The DNS a pod namespace's containers would see: `/etc/netns/<name>/resolv.conf` (the
/// iproute2 convention) or the host's `/etc/resolv.conf`, without loopback nameservers
/// (which mean nothing inside the guest).
pub fn namespace_dns(netns: &str) -> Dns {
    let candidates = if netns.contains('/') {
        vec![PathBuf::from("/etc/resolv.conf")]
    } else {
        vec![
            PathBuf::from(format!("/etc/netns/{netns}/resolv.conf")),
            PathBuf::from("/etc/resolv.conf"),
        ]
    };
    for c in candidates {
        if let Ok(s) = std::fs::read_to_string(&c) {
            let mut d = Dns::from_lines(s.lines()).unwrap_or_default();
            d.nameservers.retain(|ip| !ip.is_loopback());
            return d;
        }
    }
    Dns::default()
}

/// The supervisor's main: set the sandbox up, report on stdout, then serve until told to
/// stop. Returns the process exit code.
pub async fn supervise(root: &Path, id: &str) -> i32 {
    let paths = SandboxPaths::new(root, id);
    let spec: RunSpec = match std::fs::read(spec_path(&paths))
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
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
        },
        ns: None,
        qemu: None,
        agent: None,
        teardown_ms: BTreeMap::new(),
    };
    let outcome = tokio::select! {
        r = sv.start(&spec) => r,
        _ = reader_gone() => Err(RuntimeError::Failed(
            "the run process went away before the sandbox was ready".into(),
        )),
    };
    match outcome {
        Ok(output) => {
            report(&Ready::Ok { output });
            silence_stdout();
            sv.serve().await
        }
        Err(e) => {
            tracing::error!("start failed: {e}");
            let actions = sv.teardown(true).await;
            tracing::info!("rolled back: {actions:?}");
            let _ = std::fs::remove_dir_all(&sv.paths.dir);
            report(&Ready::Failed {
                error: format!("sandbox {id}: {e}"),
            });
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
    /// Step timings of the last teardown, in milliseconds.
    teardown_ms: BTreeMap<String, u64>,
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

    async fn start(&mut self, spec: &RunSpec) -> Result<RunOutput> {
        let t0 = Instant::now();
        let mut timings = BTreeMap::new();
        let ns = match &spec.netns {
            Some(n) => NetNs::open(n).map_err(host("open network namespace"))?,
            None => {
                // Recorded before it exists, so that a crash right after leaves a trace.
                let name = format!("sandnet-{}", spec.id);
                self.state.netns = name.clone();
                self.state.netns_path = Path::new(sandnet_host::netns::NETNS_RUN_DIR).join(&name);
                self.state.netns_created = true;
                self.save();
                progress("netns");
                let t = Instant::now();
                let ns = NetNs::create(&name).map_err(host("create network namespace"))?;
                timings.insert("netns_ms".to_string(), ms(t));
                ns
            }
        };
        self.state.netns_path = ns.path().to_path_buf();
        self.state.netns_id = Some(ns.id().map_err(host("network namespace"))?);
        self.save();
        let mut cni_dns = None;
        if let Some(c) = &spec.cni {
            let mut c = c.clone();
            if c.host_netns.as_os_str().is_empty() {
                c.host_netns = PathBuf::from(format!("/proc/{}/ns/net", std::process::id()));
            }
            self.state.cni = Some(c.clone());
            self.save();
            progress("cni");
            let t = Instant::now();
            let res = cni_add(&c, &self.state.netns_path).await?;
            timings.insert("cni_add_ms".to_string(), ms(t));
            if !res.dns.nameservers.is_empty() {
                cni_dns = Some(Dns {
                    nameservers: res
                        .dns
                        .nameservers
                        .iter()
                        .filter_map(|n| n.parse().ok())
                        .collect(),
                    search: res.dns.search.clone(),
                    options: res.dns.options.clone(),
                });
            }
        }
        self.ns = Some(ns.try_clone().map_err(host("network namespace"))?);
        progress("attach");

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
        progress("image");
        let t = Instant::now();
        let img = tokio::task::spawn_blocking({
            let k = spec.vm.kernel.clone();
            let i = spec.vm.initrd.clone();
            move || image::resolve(k.as_deref(), i.as_deref())
        })
        .await
        .map_err(|e| RuntimeError::Failed(format!("image task: {e}")))??;
        let image_ms = ms(t);

        // QEMU, inside the pod namespace, with every endpoint cold-plugged.
        let (accel, why) = Accel::detect();
        tracing::info!("accelerator {}: {why}", accel.as_str());
        let mut vs = VmSpec::new(&img.kernel, &img.initrd, accel);
        vs.qemu = spec.vm.qemu.clone();
        vs.machine = spec.vm.machine.clone();
        vs.vcpus = spec.vm.vcpus;
        vs.memory_mib = spec.vm.memory_mib;
        if !spec.vm.kernel_params.is_empty() {
            vs.kernel_args = format!("{} {}", vs.kernel_args, spec.vm.kernel_params);
        }
        let vhost = !spec.vm.disable_vhost_net && Path::new("/dev/vhost-net").exists();
        let mut guest_ifaces = Vec::new();
        for (i, mut e) in eps.into_iter().enumerate() {
            if e.fds.is_empty() {
                continue; // model none
            }
            let queues = e.fds.len() as u32;
            let vhost_fds = if vhost {
                open_vhost(queues).map_err(|source| {
                    RuntimeError::Failed(format!("open /dev/vhost-net: {source}"))
                })?
            } else {
                vec![]
            };
            let nic = NicSpec {
                id: format!("net{i}"),
                mac: e.guest_mac,
                tap_fds: std::mem::take(&mut e.fds),
                vhost_fds,
                queues,
            };
            vs.nics.push(nic);
            guest_ifaces.push(Interface {
                name: e.endpoint.name.clone(),
                kind: e.endpoint.kind.clone(),
                mac: Some(e.guest_mac),
                mtu: e.endpoint.mtu,
                addresses: e.endpoint.addresses.clone(),
                flags: IFF_UP,
            });
        }
        progress("boot");
        let t = Instant::now();
        let netns_fd = self.ns.as_ref().map(|n| n.as_fd());
        let q = Qemu::spawn(vs, netns_fd, &self.paths.dir)
            .await
            .map_err(vm("start QEMU"))?;
        let qemu_ms = ms(t);
        self.state.qemu_pid = Some(q.pid());
        self.qemu = Some(q);
        self.save();

        // Wait for the agent: the first answer means the guest booted.
        let t = Instant::now();
        let agent_sock = self
            .qemu
            .as_ref()
            .map(|q| q.paths().agent.clone())
            .unwrap_or_default();
        let client = AgentClient::connect(&agent_sock, Duration::from_secs(10))
            .await
            .map_err(agent("connect to the agent channel"))?;
        self.wait_for_agent(&client).await?;
        let boot_ms = ms(t);

        // The guest network, in Kata's order.
        progress("network");
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
        self.save();
        Ok(RunOutput {
            id: spec.id.clone(),
            netns: self.state.netns.clone(),
            interfaces,
            routes,
            timings,
            accel: accel.as_str().to_string(),
        })
    }

    async fn wait_for_agent(&mut self, client: &AgentClient) -> Result<()> {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        let probe = client.clone().with_call_timeout(Duration::from_secs(2));
        // Silence means the guest is still booting; anything else (an error status, an
        // answer that does not decode, a dead connection) will not get better by waiting.
        let mut answered_badly = 0;
        loop {
            match probe.health_check().await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    if matches!(e, sandnet_agent_proto::ClientError::Timeout { .. }) {
                        answered_badly = 0;
                    } else {
                        answered_badly += 1;
                    }
                    if answered_badly >= 3 {
                        return Err(RuntimeError::Agent {
                            step: "wait for the guest agent",
                            source: e,
                        });
                    }
                    if let Some(q) = self.qemu.as_mut() {
                        if let Ok(Some(st)) = q.try_wait() {
                            return Err(RuntimeError::Failed(format!(
                                "QEMU exited ({st}) before the guest agent answered: {}",
                                q.log_tail(3).replace('\n', " | ")
                            )));
                        }
                    }
                    if Instant::now() >= deadline {
                        return Err(RuntimeError::Agent {
                            step: "wait for the guest agent",
                            source: e,
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Serves the control socket until told to stop; QEMU exiting on its own is recorded.
    async fn serve(&mut self) -> i32 {
        let _ = std::fs::remove_file(&self.paths.ctl);
        let listener = match tokio::net::UnixListener::bind(&self.paths.ctl) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("bind {}: {e}", self.paths.ctl.display());
                self.teardown(true).await;
                return 1;
            }
        };
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
                    self.teardown(false).await;
                    return 0;
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
                            let actions = self.teardown(force).await;
                            let timings = self.teardown_ms.clone();
                            let _ = write_response(&mut wr, &Response::Stopped { actions, timings }).await;
                            let _ = std::fs::remove_file(&self.paths.ctl);
                            return 0;
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

    /// Stops QEMU and undoes the host side; every step runs whatever failed before.
    async fn teardown(&mut self, force: bool) -> Vec<String> {
        let mut actions = vec![];
        let mut timings = BTreeMap::new();
        self.state.status = Status::Stopping;
        self.save();
        self.agent = None;
        let t = Instant::now();
        if let Some(mut q) = self.qemu.take() {
            if !force {
                if let Some(qmp) = q.qmp() {
                    let _ = tokio::time::timeout(Duration::from_secs(2), qmp.quit()).await;
                }
                let _ = q.wait_timeout(Duration::from_secs(3)).await;
            }
            match q.kill().await {
                Ok(()) => actions.push(format!("stopped QEMU (pid {})", q.pid())),
                Err(e) => actions.push(format!("stopping QEMU failed: {e}")),
            }
        }
        timings.insert("qemu_stop_ms".to_string(), ms(t));
        let t = Instant::now();
        let ns = self.ns.take();
        if let Some(ns) = &ns {
            match sandnet_host::detach(ns, &attach_dir(&self.root)).await {
                Ok(r) => actions.extend(r.actions),
                Err(e) => actions.push(format!("detach failed: {e}")),
            }
        }
        timings.insert("detach_ms".to_string(), ms(t));
        // DEL through the namespace we hold, even if its mount point went away.
        let via = ns.as_ref().map(fd_path);
        actions
            .extend(release_network(&self.root, &self.state, via.as_deref(), &mut timings).await);
        drop(ns);
        self.teardown_ms = timings;
        actions
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
        Request::Stop { .. } => unreachable!("handled by the supervisor loop"),
    };
    r.unwrap_or_else(|e| Response::Error {
        message: e.to_string(),
    })
}

fn open_vhost(queues: u32) -> std::io::Result<Vec<OwnedFd>> {
    (0..queues)
        .map(|_| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/vhost-net")
                .map(OwnedFd::from)
        })
        .collect()
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

/// What `rm` did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RemoveReport {
    /// Whether there was no such sandbox.
    pub not_found: bool,
    /// One line per action.
    pub actions: Vec<String>,
    /// Step timings in milliseconds: from the supervisor `qemu_stop_ms`, `detach_ms`,
    /// `cni_del_ms`, `netns_ms`; `total_ms` for the whole removal.
    pub timings: BTreeMap<String, u64>,
}

/// Removes a sandbox: through its supervisor when it is alive, otherwise from the persisted
/// state. Idempotent: an unknown id is reported, not an error.
pub async fn remove(root: &Path, id: &str, force: bool) -> Result<RemoveReport> {
    sandbox::check_id(id)?;
    let st = match SandboxState::load(root, id) {
        Ok(s) => s,
        Err(SandboxError::NotFound(_)) => {
            let dir = SandboxPaths::new(root, id).dir;
            let existed = dir.exists();
            let _ = std::fs::remove_dir_all(&dir);
            return Ok(RemoveReport {
                not_found: !existed,
                actions: if existed {
                    vec![format!("removed incomplete {}", dir.display())]
                } else {
                    vec![]
                },
                timings: BTreeMap::new(),
            });
        }
        Err(e) => return Err(e.into()),
    };
    let t0 = Instant::now();
    let mut report = RemoveReport::default();
    let paths = SandboxPaths::new(root, id);
    if st.supervisor_alive() {
        match control::call(
            id,
            &paths.ctl,
            &Request::Stop { force },
            Duration::from_secs(30),
        )
        .await
        {
            Ok(Response::Stopped { actions, timings }) => {
                report.actions.extend(actions);
                report.timings = timings;
            }
            Ok(other) => report
                .actions
                .push(format!("supervisor answered {other:?}")),
            Err(e) => report.actions.push(format!("supervisor: {e}")),
        }
    }
    report.actions.extend(cleanup_from_state(root, id).await?);
    report.timings.insert("total_ms".to_string(), ms(t0));
    Ok(report)
}

/// Cleans up after a sandbox from its persisted state alone: kills its QEMU and supervisor
/// if they are still there, detaches its namespace, removes the state directory.
pub async fn cleanup_from_state(root: &Path, id: &str) -> Result<Vec<String>> {
    let paths = SandboxPaths::new(root, id);
    let st = match SandboxState::load(root, id) {
        Ok(s) => s,
        Err(SandboxError::NotFound(_)) => {
            let _ = std::fs::remove_dir_all(&paths.dir);
            return Ok(vec![]);
        }
        Err(e) => return Err(e.into()),
    };
    let mut actions = vec![];
    // Reach the pod namespace before anything is killed: QEMU runs inside it, and the
    // recorded path may no longer lead to it (unmounted, or mounted only in the private
    // mount namespace of a supervisor started under `ip netns exec`, gone with it).
    let pod_ns = reach_netns(root, &st);
    for (what, alive, pid) in [
        ("supervisor", st.supervisor_alive(), st.supervisor_pid),
        ("QEMU", st.qemu_alive(root), st.qemu_pid),
    ] {
        if let (true, Some(pid)) = (alive, pid) {
            let p = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGKILL);
            for _ in 0..200 {
                if !Path::new(&format!("/proc/{pid}")).exists()
                    || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                        .map(|s| s.contains(") Z "))
                        .unwrap_or(true)
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            actions.push(format!("killed {what} (pid {pid})"));
        }
    }
    match &pod_ns {
        Some(ns) => {
            let r = sandnet_host::detach(ns, &attach_dir(root))
                .await
                .map_err(host("detach"))?;
            actions.extend(r.actions);
        }
        None => {
            // The namespace is gone, and with it every tap and filter in it.
            if let Some(nsid) = st.netns_id {
                sandnet_host::interwork::forget_state(&attach_dir(root), nsid)
                    .map_err(host("forget attach state"))?;
            }
        }
    }
    let via = pod_ns.as_ref().map(fd_path);
    actions.extend(release_network(root, &st, via.as_deref(), &mut BTreeMap::new()).await);
    drop(pod_ns);
    std::fs::remove_dir_all(&paths.dir).map_err(|e| SandboxError::Io {
        path: paths.dir.clone(),
        source: e,
    })?;
    actions.push(format!("removed {}", paths.dir.display()));
    Ok(actions)
}

/// Opens a sandbox's pod namespace: by its recorded path, else through its QEMU (which
/// runs inside it); only when the identity matches the recorded one.
fn reach_netns(root: &Path, st: &SandboxState) -> Option<NetNs> {
    let want = st.netns_id?;
    let mut cands = vec![];
    if !st.netns_path.as_os_str().is_empty() {
        cands.push(st.netns_path.clone());
    }
    if let (true, Some(pid)) = (st.qemu_alive(root), st.qemu_pid) {
        cands.push(PathBuf::from(format!("/proc/{pid}/ns/net")));
    }
    cands.into_iter().find_map(|c| {
        NetNs::open(&c.display().to_string())
            .ok()
            .filter(|ns| ns.id().is_ok_and(|id| id == want))
    })
}

/// A path to an open namespace that this process's children (CNI plugins) can open for as
/// long as it stays open, whatever happens to its mount point.
fn fd_path(ns: &NetNs) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        ns.as_fd().as_raw_fd()
    ))
}

/// Where `sandnet run` was started, as a path that stays valid: init's namespace, a named
/// one under /run/netns, or empty (the supervisor then records its own `/proc/<pid>/ns/net`).
pub fn host_netns() -> (PathBuf, Option<sandnet_host::NetNsId>) {
    let Ok(cur) = NetNs::current().and_then(|n| n.id()) else {
        return (PathBuf::new(), None);
    };
    let mut cands = vec![PathBuf::from("/proc/1/ns/net")];
    if let Ok(rd) = std::fs::read_dir(sandnet_host::netns::NETNS_RUN_DIR) {
        cands.extend(rd.filter_map(|e| e.ok()).map(|e| e.path()));
    }
    for c in cands {
        if let Ok(ns) = NetNs::open(&c.display().to_string()) {
            if ns.id().ok() == Some(cur) {
                return (c, Some(cur));
            }
        }
    }
    (PathBuf::new(), Some(cur))
}

fn cni_config(
    c: &CniAttachment,
) -> Result<(sandnet_cni::CniConfig, sandnet_cni::NetworkConfigList)> {
    let fail =
        |what: &str, e: sandnet_cni::CniError| RuntimeError::Failed(format!("CNI {what}: {e}"));
    let list = sandnet_cni::NetworkConfigList::from_bytes(c.network.as_bytes())
        .map_err(|e| fail("network configuration", e))?;
    if let Some(want) = c.host_netns_id {
        let ok = NetNs::open(&c.host_netns.display().to_string())
            .and_then(|n| n.id())
            .is_ok_and(|id| id == want);
        if !ok {
            return Err(RuntimeError::Failed(format!(
                "CNI: the namespace it ran in ({}) is gone",
                c.host_netns.display()
            )));
        }
    }
    let cfg = sandnet_cni::CniConfig::new(c.bin_dirs.clone(), c.cache_dir.clone())
        .with_timeout(Duration::from_millis(c.timeout_ms))
        .with_plugin_netns_path(&c.host_netns)
        .map_err(|e| fail("host namespace", e))?;
    Ok((cfg, list))
}

fn cni_runtime(c: &CniAttachment, pod_netns: &Path) -> sandnet_cni::Runtime {
    sandnet_cni::Runtime::new(
        c.container_id.clone(),
        pod_netns.to_path_buf(),
        c.ifname.clone(),
    )
    .with_arg("IgnoreUnknown", "1")
}

async fn cni_add(c: &CniAttachment, pod_netns: &Path) -> Result<sandnet_cni::CniResult> {
    let (cfg, list) = cni_config(c)?;
    cfg.add(&list, &cni_runtime(c, pod_netns))
        .await
        .map_err(|e| RuntimeError::Failed(format!("CNI ADD ({}): {e}", list.name)))
}

/// Gives back what the sandbox took from the host besides taps: CNI DEL (in the namespace
/// ADD ran in; `pod_netns` overrides the recorded pod namespace path), then the pod
/// namespace if sandnet created it. Every step runs.
async fn release_network(
    root: &Path,
    st: &SandboxState,
    pod_netns: Option<&Path>,
    timings: &mut BTreeMap<String, u64>,
) -> Vec<String> {
    let mut actions = vec![];
    if let Some(c) = &st.cni {
        let t = Instant::now();
        let r = match cni_config(c) {
            Ok((cfg, list)) => cfg
                .del(&list, &cni_runtime(c, pod_netns.unwrap_or(&st.netns_path)))
                .await
                .map(|()| list.name.clone())
                .map_err(|e| format!("CNI DEL ({}): {e}", list.name)),
            Err(e) => Err(e.to_string()),
        };
        match r {
            Ok(name) => actions.push(format!("CNI DEL {name} for {}", c.container_id)),
            Err(e) => actions.push(format!("failed: {e}")),
        }
        timings.insert("cni_del_ms".to_string(), ms(t));
    }
    if st.netns_created && !st.netns.is_empty() {
        let t = Instant::now();
        let r = NetNs::delete(&st.netns);
        timings.insert("netns_ms".to_string(), ms(t));
        match r {
            Ok(()) => {
                actions.push(format!("deleted network namespace {}", st.netns));
                // Nobody can attach that namespace any more: its attach lock file would
                // only pile up, one per sandbox.
                if let Some(id) = st.netns_id {
                    let _ = std::fs::remove_file(attach_dir(root).join(format!("{id}.lock")));
                }
            }
            Err(e) => actions.push(format!("failed: {e}")),
        }
    }
    actions
}

/// Tells the `run` process (reading our stdout) which step is under way.
fn progress(step: &str) {
    report(&Ready::Progress {
        step: step.to_string(),
    });
}

/// One line of `ps`.
#[derive(Debug, Clone, Serialize)]
pub struct PsEntry {
    /// Sandbox id.
    pub id: String,
    /// `running`, `creating`, `qemu-exited`, `supervisor-dead`, `dead`, …
    pub status: String,
    /// The pod namespace.
    pub netns: String,
    /// Interworking model.
    pub model: Model,
    /// QEMU's pid.
    pub qemu_pid: Option<u32>,
    /// Supervisor's pid.
    pub supervisor_pid: Option<u32>,
    /// Unix time of creation.
    pub created: u64,
}

/// Every sandbox under the root with its health.
pub fn ps(root: &Path) -> Result<Vec<PsEntry>> {
    let mut out = vec![];
    for id in sandbox::list(root)? {
        let Ok(st) = SandboxState::load(root, &id) else {
            continue;
        };
        out.push(PsEntry {
            status: st.health(root).to_string(),
            id,
            netns: st.netns.clone(),
            model: st.model,
            qemu_pid: st.qemu_pid,
            supervisor_pid: st.supervisor_pid,
            created: st.created,
        });
    }
    Ok(out)
}

/// Asks a live supervisor something; a clear error when it is not there.
pub async fn ask(root: &Path, id: &str, req: &Request, timeout: Duration) -> Result<Response> {
    let st = SandboxState::load(root, id)?;
    let health = st.health(root);
    let gone = if !st.supervisor_alive() {
        Some("its supervisor is not running")
    } else if health == "qemu-exited" {
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

/// What `gc` removed.
#[derive(Debug, Default, Clone, Serialize)]
pub struct GcReport {
    /// Sandboxes whose supervisor or QEMU was gone, and were cleaned up.
    pub sandboxes: Vec<String>,
    /// Other leftovers removed (namespaces, attach state, CNI attachments).
    pub actions: Vec<String>,
}

/// Finds what dead sandboxes left behind and removes it: sandboxes whose supervisor or
/// QEMU is gone (from their persisted state), namespaces `sandnet-<id>` and CNI
/// attachments `sandnet-<id>` that no sandbox owns, attach state of namespaces that no
/// longer exist. Live sandboxes, and anything not sandnet's, are left alone.
pub async fn gc(root: &Path, cni_cache_dirs: &[PathBuf]) -> Result<GcReport> {
    let mut rep = GcReport::default();
    let mut live = std::collections::HashSet::new();
    for id in sandbox::list(root)? {
        let Ok(st) = SandboxState::load(root, &id) else {
            continue;
        };
        match st.health(root) {
            "running" | "creating" | "stopping" => {
                live.insert(id);
            }
            "qemu-exited" if st.supervisor_alive() => {
                let r = remove(root, &id, true).await?;
                rep.actions.extend(r.actions);
                rep.sandboxes.push(id);
            }
            _ => {
                rep.actions.extend(cleanup_from_state(root, &id).await?);
                rep.sandboxes.push(id);
            }
        }
    }
    // Directories of sandboxes that never got a state file, whose supervisor is gone.
    if let Ok(rd) = std::fs::read_dir(root) {
        for e in rd.filter_map(|e| e.ok()) {
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            let p = SandboxPaths::new(root, &name);
            if sandbox::check_id(&name).is_ok()
                && !live.contains(&name)
                && !p.state.exists()
                && spec_path(&p).exists()
                && !supervisor_running(&name)
            {
                let _ = std::fs::remove_dir_all(&p.dir);
                rep.actions
                    .push(format!("removed incomplete {}", p.dir.display()));
            }
        }
    }
    // CNI attachments sandnet made whose sandbox is gone: DEL them here.
    for dir in cni_cache_dirs {
        let cfg = sandnet_cni::CniConfig::new(
            sandnet_cni::DEFAULT_BIN_DIRS
                .iter()
                .map(PathBuf::from)
                .collect(),
            dir.clone(),
        );
        let Ok(atts) = cfg.cached_attachments(None) else {
            continue;
        };
        for a in atts {
            let Some(id) = a.container_id.strip_prefix("sandnet-") else {
                continue;
            };
            // Live here, or a sandbox of another state root sharing this cache.
            if live.contains(id) || supervisor_running(id) || netns_in_use(&a.netns_path) {
                continue;
            }
            let r = match sandnet_cni::NetworkConfigList::from_bytes(&a.config) {
                Ok(list) => cfg
                    .del(&list, &a.runtime())
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            rep.actions.push(match r {
                Ok(()) => format!("CNI DEL {} for {}", a.network, a.container_id),
                Err(e) => format!("failed: CNI DEL {} for {}: {e}", a.network, a.container_id),
            });
        }
    }
    // Namespaces sandnet created for sandboxes that are gone.
    if let Ok(rd) = std::fs::read_dir(sandnet_host::netns::NETNS_RUN_DIR) {
        for e in rd.filter_map(|e| e.ok()) {
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            if let Some(id) = name.strip_prefix("sandnet-") {
                // Names are global but state roots are not: a namespace whose sandbox lives
                // under another root (its supervisor runs, or QEMU still runs inside it) is
                // not ours to delete.
                if !live.contains(id)
                    && !SandboxPaths::new(root, id).dir.exists()
                    && !supervisor_running(id)
                    && !netns_in_use(&e.path())
                {
                    match NetNs::delete(&name) {
                        Ok(()) => rep
                            .actions
                            .push(format!("deleted network namespace {name}")),
                        Err(e) => rep.actions.push(format!("failed: {e}")),
                    }
                }
            }
        }
    }
    // Attach state of namespaces that no longer exist (their taps went with them).
    rep.actions
        .extend(forget_vanished_attachments(&attach_dir(root)));
    Ok(rep)
}

/// Forgets attach plans whose namespace is gone (or is another one by now).
fn forget_vanished_attachments(dir: &Path) -> Vec<String> {
    let mut actions = vec![];
    let Ok(rd) = std::fs::read_dir(dir) else {
        return actions;
    };
    for e in rd.filter_map(|e| e.ok()) {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let Some(st) = std::fs::read(&p)
            .ok()
            .and_then(|b| serde_json::from_slice::<sandnet_host::interwork::AttachState>(&b).ok())
        else {
            continue;
        };
        let alive = NetNs::open(&st.netns)
            .and_then(|ns| ns.id())
            .is_ok_and(|id| id == st.netns_id);
        if !alive && sandnet_host::interwork::forget_state(dir, st.netns_id).is_ok() {
            let _ = std::fs::remove_file(dir.join(format!("{}.lock", st.netns_id)));
            actions.push(format!(
                "forgot attach state of vanished namespace {}",
                st.netns
            ));
        }
    }
    actions
}

/// Whether any process is inside the namespace at `path` or holds it open (nsfs files read
/// back as `net:[INODE]` through `/proc/<pid>/ns/net` and `/proc/<pid>/fd/*`).
fn netns_in_use(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::metadata(path) else {
        return false;
    };
    let want = std::ffi::OsString::from(format!("net:[{}]", m.ino()));
    let me = std::process::id();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return false;
    };
    for pid in rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| n.parse::<u32>().ok())
        .filter(|&p| p != me)
    {
        let base = PathBuf::from(format!("/proc/{pid}"));
        if std::fs::read_link(base.join("ns/net")).is_ok_and(|l| l.as_os_str() == want) {
            return true;
        }
        if let Ok(fds) = std::fs::read_dir(base.join("fd")) {
            if fds
                .filter_map(|e| e.ok())
                .any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.as_os_str() == want))
            {
                return true;
            }
        }
    }
    false
}

fn supervisor_running(id: &str) -> bool {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return false;
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| n.parse::<u32>().ok())
        .any(|pid| sandbox::cmdline_has(pid, &["__supervise", id]))
}

/// The network sandnet uses when the CNI conf dir has none: the seed's `10-mynet.conf`
/// (bridge `cni0`, gateway, masquerade, host-local on 172.19.0.0/24, default route).
pub const DEFAULT_NETWORK: &str = r#"{
  "cniVersion": "0.2.0",
  "name": "mynet",
  "type": "bridge",
  "bridge": "cni0",
  "isGateway": true,
  "ipMasq": true,
  "ipam": {
    "type": "host-local",
    "subnet": "172.19.0.0/24",
    "routes": [ { "dst": "0.0.0.0/0" } ]
  }
}"#;

/// The network to use from a conf dir: its first valid configuration; the embedded
/// default when the directory has no configuration files at all; an error when it has
/// some but none is valid.
pub fn network_from_dir(dir: &Path) -> Result<sandnet_cni::NetworkConfigList> {
    let embedded = || {
        sandnet_cni::NetworkConfigList::from_plugin_bytes(DEFAULT_NETWORK.as_bytes())
            .map_err(|e| RuntimeError::Failed(format!("embedded default network: {e}")))
    };
    if !dir.exists() {
        return embedded();
    }
    match sandnet_cni::NetworkConfigList::load_dir(dir) {
        Ok(l) => Ok(l),
        Err(sandnet_cni::CniError::NoConfig { skipped, .. }) if skipped.is_empty() => embedded(),
        Err(e) => Err(RuntimeError::Failed(format!("CNI configuration: {e}"))),
    }
}
