//! The runtime's API: what the command line, a containerd shim or a network monitor call
//! to run sandboxes. A typed [`SandboxRequest`] goes in; [`Runtime::run`] applies the
//! policy (names sandnet owns, `disable_new_netns`, which CNI to run), starts the
//! sandbox's supervisor and returns a [`Sandbox`] handle once the guest network is
//! configured. The handle inspects, executes in, stops and removes it; [`Runtime::list`]
//! and [`Runtime::gc`] cover every sandbox of the state root.

use crate::config::Config;
use crate::control::{ExecResult, GuestNetwork, Request, Response};
use crate::error::RuntimeError;
use crate::gc::{GcReport, PsEntry};
use crate::podnet;
use crate::sandbox::{self, CniAttachment, Health, SandboxPaths, SandboxState};
use crate::spec::{RunOutput, RunSpec, VmParams};
use crate::teardown::{self, RemoveReport};
use crate::{client, launch};
pub use sandnet_cni::BandwidthEntry;
use sandnet_host::NetNsRef;
use sandnet_model::InterworkingModel as Model;
use sandnet_model::{Dns, GuestSpoofing, RateLimit, TapPolicy};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

type Result<T> = std::result::Result<T, RuntimeError>;

/// Which network namespace a sandbox's VM runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodNetns {
    /// sandnet creates `sandnet-<id>` and runs CNI ADD in it (unless the configuration's
    /// `disable_new_netns` says to share the caller's).
    Create,
    /// An existing namespace (a name under `/run/netns` or a path), used as it is.
    Existing(String),
}

/// CNI settings of a request; each one left out takes the configuration's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniRequest {
    /// Run CNI ADD even in an existing namespace.
    pub force: bool,
    /// Configuration directory.
    pub conf_dir: Option<PathBuf>,
    /// Plugin directories, searched in order.
    pub bin_dirs: Vec<PathBuf>,
    /// Cache directory.
    pub cache_dir: Option<PathBuf>,
}

/// What a sandbox is asked to be.
#[derive(Debug, Clone)]
pub struct SandboxRequest {
    /// Its id; a random one when `None`.
    pub id: Option<String>,
    /// Its network namespace.
    pub netns: PodNetns,
    /// CNI settings.
    pub cni: CniRequest,
    /// Interworking model; the configuration's when `None`.
    pub model: Option<Model>,
    /// Queues per NIC.
    pub queues: u16,
    /// DNS for the guest; from the CNI result or the namespace's resolv.conf when `None`.
    pub dns: Option<Dns>,
    /// Allow an existing namespace that is init's or the caller's own (refused otherwise:
    /// attaching there would redirect the host's own NICs).
    pub allow_host_netns: bool,
    /// Boot first and hot-plug the network (`run --hotplug`); `None`: the configuration's
    /// `[runtime] hotplug_network`.
    pub hotplug_network: Option<bool>,
    /// Take a ready VM from the factory when there is one (default true).
    pub use_factory: bool,
    /// The sandbox will run containers: its VM gets the shared directory of
    /// `[hypervisor.qemu] shared_fs` (default false).
    pub shared_dir: bool,
    /// The guest's host name; the sandbox id when `None`.
    pub hostname: Option<String>,
    /// Whether the guest may spoof (`run --guest-spoofing`); the configuration's
    /// `[runtime] guest_spoofing` when `None`.
    pub guest_spoofing: Option<GuestSpoofing>,
    /// Rate limits in CNI's `bandwidth` form (`run --bandwidth`): passed to the CNI chain
    /// when sandnet runs CNI and a plugin declares the capability, else enforced by sandnet
    /// on the tap, where each direction given replaces the configuration's Kata limit.
    pub bandwidth: Option<BandwidthEntry>,
    /// The configuration (VM parameters, CNI defaults, runtime policy).
    pub config: Config,
}

impl SandboxRequest {
    /// A request with everything else from `config`: a new namespace, CNI from the
    /// configuration, one queue per NIC.
    pub fn new(config: Config) -> SandboxRequest {
        SandboxRequest {
            id: None,
            netns: PodNetns::Create,
            cni: CniRequest::default(),
            model: None,
            queues: 1,
            dns: None,
            allow_host_netns: false,
            hotplug_network: None,
            use_factory: true,
            shared_dir: false,
            hostname: None,
            guest_spoofing: None,
            bandwidth: None,
            config,
        }
    }
}

/// The sandboxes of one state root.
#[derive(Debug, Clone)]
pub struct Runtime {
    root: PathBuf,
    program: PathBuf,
    args: Vec<OsString>,
}

impl Runtime {
    /// A runtime keeping its state under `root`, whose supervisors are started as
    /// `program ARGS… __supervise ID` (`program` is normally the `sandnet` binary; `args`
    /// carries e.g. `--state-dir`).
    pub fn new(root: impl Into<PathBuf>, program: impl Into<PathBuf>, args: Vec<OsString>) -> Self {
        Runtime {
            root: root.into(),
            program: program.into(),
            args,
        }
    }

    /// The state root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Turns a request into the spec its supervisor runs: picks the id, the model and the
    /// namespace (failing fast on one that does not open), and records the CNI attachment
    /// under the names sandnet owns.
    pub fn spec(&self, req: &SandboxRequest) -> Result<RunSpec> {
        let cfg = &req.config;
        let id = req.id.clone().unwrap_or_else(sandbox::new_id);
        sandbox::check_id(&id)?;
        // A bad SANDNET_ACCEL is refused before anything starts.
        cfg.qemu
            .accel
            .with_env()
            .map_err(|source| RuntimeError::Vm {
                step: "accelerator",
                source,
            })?;
        let mut netns = match &req.netns {
            PodNetns::Existing(n) => Some(n.clone()),
            PodNetns::Create => None,
        };
        if netns.is_none() && cfg.runtime.disable_new_netns {
            // Kata's disable_new_netns (model none only): the VM shares this namespace.
            let (here, _) = podnet::host_netns();
            if here.as_os_str().is_empty() {
                return Err(RuntimeError::NoNamedNetns);
            }
            netns = Some(here.display().to_string());
        }
        // Fail fast on a namespace that is not there, or is the host's, before anything
        // starts (the one sandnet shares under disable_new_netns is policy, not a typo).
        if let PodNetns::Existing(n) = &req.netns {
            n.parse::<NetNsRef>()
                .and_then(|r| r.open_guarded(req.allow_host_netns))
                .map_err(|source| RuntimeError::Host {
                    step: "open network namespace",
                    source,
                })?;
        }
        let mut tap_policy = tap_policy(req);
        let cni = if (netns.is_none() || req.cni.force) && !cfg.runtime.disable_new_netns {
            let conf_dir = req.cni.conf_dir.clone().unwrap_or(cfg.cni.conf_dir.clone());
            let list = podnet::network_from_dir(&conf_dir)?;
            let capability_args = podnet::bandwidth_capability(&list, req.bandwidth.as_ref());
            if capability_args.is_some() {
                // A plugin of the chain shapes: the configuration's limits stay, the
                // request's are the plugin's alone.
                tap_policy.bandwidth = cfg.tap_policy().bandwidth;
            }
            let (host_netns, host_netns_id) = podnet::host_netns();
            Some(CniAttachment {
                network: String::from_utf8_lossy(&list.bytes).into_owned(),
                bin_dirs: if req.cni.bin_dirs.is_empty() {
                    cfg.cni.bin_dirs.clone()
                } else {
                    req.cni.bin_dirs.clone()
                },
                cache_dir: req
                    .cni
                    .cache_dir
                    .clone()
                    .unwrap_or(cfg.cni.cache_dir.clone()),
                host_netns,
                host_netns_id,
                container_id: podnet::owned_name(&id),
                ifname: "eth0".into(),
                timeout_ms: cfg.cni.timeout.as_millis() as u64,
                capability_args: capability_args.unwrap_or_default(),
            })
        } else {
            None
        };
        Ok(RunSpec {
            version: crate::sandbox::STATE_VERSION,
            id,
            netns,
            model: req.model.unwrap_or(cfg.runtime.internetworking_model),
            queues: req.queues,
            vm: VmParams::from(&cfg.qemu),
            dns: req.dns.clone(),
            cni,
            netmon: cfg.netmon.enable,
            hotplug_network: req.hotplug_network.unwrap_or(cfg.runtime.hotplug_network),
            use_factory: req.use_factory,
            shared_fs: if req.shared_dir {
                cfg.qemu.shared_fs
            } else {
                crate::shared::SharedFs::None
            },
            hostname: req.hostname.clone().filter(|h| !h.is_empty()),
            tap_policy,
        })
    }

    /// Runs a sandbox: returns once its guest network is configured (`on_progress` hears
    /// each step), or fails having rolled back.
    pub async fn run(
        &self,
        req: &SandboxRequest,
        on_progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Sandbox> {
        let spec = self.spec(req)?;
        self.run_spec(&spec, on_progress).await
    }

    /// Runs a sandbox from a ready spec (see [`Runtime::spec`]).
    pub async fn run_spec(
        &self,
        spec: &RunSpec,
        on_progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Sandbox> {
        let mut sup = std::process::Command::new(&self.program);
        sup.args(&self.args).arg("__supervise").arg(&spec.id);
        let out = launch::launch(&self.root, spec, sup, on_progress).await?;
        Ok(Sandbox {
            root: self.root.clone(),
            id: spec.id.clone(),
            ready: Some(out),
        })
    }

    /// A handle on an existing sandbox (checked to have a record).
    pub fn get(&self, id: &str) -> Result<Sandbox> {
        sandbox::check_id(id)?;
        if !SandboxPaths::new(&self.root, id).dir.exists() {
            return Err(sandbox::SandboxError::NotFound(id.to_string()).into());
        }
        Ok(self.handle(id))
    }

    /// A handle on sandbox `id` whether or not it exists (removing an unknown id is not an
    /// error).
    pub fn handle(&self, id: &str) -> Sandbox {
        Sandbox {
            root: self.root.clone(),
            id: id.to_string(),
            ready: None,
        }
    }

    /// Removes the sandboxes whose owner (see [`Sandbox::set_owner`]) is gone: a containerd
    /// shim killed when containerd was not there to run its `delete`. Adds to `rep` what
    /// was removed or failed. Sandboxes with no owner are left to [`Runtime::gc`].
    pub async fn gc_orphans(&self, rep: &mut GcReport) {
        let Ok(rd) = std::fs::read_dir(&self.root) else {
            return;
        };
        for e in rd.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            let Ok(owner) = std::fs::read_to_string(e.path().join(OWNER_FILE)) else {
                continue;
            };
            if owner_alive(owner.trim()) {
                continue;
            }
            match self.handle(&id).remove(true).await {
                Ok(r) => {
                    rep.sandboxes.push(id.clone());
                    rep.actions.push(format!(
                        "removed sandbox {id}: its owner {} is gone",
                        owner.trim()
                    ));
                    rep.actions.extend(r.actions);
                }
                Err(err) => rep.failures.push(format!("sandbox {id}: {err}")),
            }
        }
    }

    /// Every sandbox with its health, unreadable records included.
    pub fn list(&self) -> Result<Vec<PsEntry>> {
        Ok(crate::gc::ps(&self.root)?)
    }

    /// Cleans up what dead sandboxes of this root left.
    pub async fn gc(&self) -> Result<GcReport> {
        Ok(crate::gc::gc(&self.root).await?)
    }
}

/// What sandnet enforces on the sandbox's NICs: the configuration's policy, with the
/// request's spoofing choice and, per direction given, its rate limits (bursts clamped by
/// [`RateLimit::new`]: containerd's 2^32−1 bits become 100 ms of the rate).
fn tap_policy(req: &SandboxRequest) -> TapPolicy {
    let mut p = req.config.tap_policy();
    if let Some(s) = req.guest_spoofing {
        p.spoofing = s;
    }
    if let Some(b) = &req.bandwidth {
        if let Some((rate, burst)) = b.ingress() {
            p.bandwidth.ingress = RateLimit::new(rate, burst);
        }
        if let Some((rate, burst)) = b.egress() {
            p.bandwidth.egress = RateLimit::new(rate, burst);
        }
    }
    p
}

/// How a sandbox's VM ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitInfo {
    /// Its health when it was seen ended.
    pub health: Health,
    /// Whether the sandbox's record is gone (it was removed).
    pub removed: bool,
}

/// One sandbox.
#[derive(Debug, Clone)]
pub struct Sandbox {
    root: PathBuf,
    id: String,
    ready: Option<RunOutput>,
}

impl Sandbox {
    /// Its id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// What `run` reported when it became ready (only on the handle `run` returned).
    pub fn ready(&self) -> Option<&RunOutput> {
        self.ready.as_ref()
    }

    /// Its shared directory for containers' files: the host directory and how the guest
    /// mounts it (`SharedFs::None` for a sandbox started without one).
    pub fn shared_dir(&self) -> Result<crate::shared::SharedDir> {
        let paths = SandboxPaths::new(&self.root, &self.id);
        let spec = crate::spec::RunSpec::load(&paths)?;
        Ok(crate::shared::SharedDir {
            host: paths.shared,
            fs: spec.shared_fs,
        })
    }

    /// The supervisor's socket for container calls (`grpc.AgentService`, forwarded to the
    /// guest's agent).
    pub fn containers_socket(&self) -> PathBuf {
        SandboxPaths::new(&self.root, &self.id).agent
    }

    /// Its persisted record.
    pub fn state(&self) -> Result<SandboxState> {
        Ok(SandboxState::load(&self.root, &self.id)?)
    }

    /// Its health as seen from outside its supervisor.
    pub fn health(&self) -> Health {
        teardown::health_of(&self.root, &self.id).1
    }

    /// The guest's interfaces and routes, as its agent lists them.
    pub async fn inspect(&self) -> Result<GuestNetwork> {
        match self.ask(&Request::Inspect, Duration::from_secs(30)).await? {
            Response::Network(n) => Ok(n),
            other => Err(unexpected(&self.id, other)),
        }
    }

    /// Runs a command in the guest, which may take `timeout`.
    pub async fn exec(&self, args: &[String], timeout: Duration) -> Result<ExecResult> {
        let req = Request::Exec {
            args: args.to_vec(),
            timeout_ms: timeout.as_millis() as u64,
        };
        match self.ask(&req, timeout + Duration::from_secs(30)).await? {
            Response::Exec(r) => Ok(r),
            other => Err(unexpected(&self.id, other)),
        }
    }

    /// Stops the VM (asks it to quit; at once with `force`); the sandbox's network stays
    /// until [`Sandbox::remove`]. Stopping a stopped sandbox is not an error.
    pub async fn stop(&self, force: bool) -> Result<()> {
        if matches!(self.health(), Health::QemuExited | Health::Dead) {
            return Ok(());
        }
        match self
            .ask(&Request::Halt { force }, Duration::from_secs(30))
            .await?
        {
            Response::Halted => Ok(()),
            other => Err(unexpected(&self.id, other)),
        }
    }

    /// Removes it: stops the VM, gives back the network, deletes the record. Idempotent; a
    /// failed step keeps the record for a retry.
    pub async fn remove(&self, force: bool) -> Result<RemoveReport> {
        Ok(crate::rm::remove(&self.root, &self.id, force).await?)
    }

    /// `rm --force`: removes it whatever fails, always ending with the record gone; what
    /// could not be undone is in the report (see [`crate::rm::remove_converging`]).
    pub async fn remove_converging(&self) -> Result<RemoveReport> {
        Ok(crate::rm::remove_converging(&self.root, &self.id).await?)
    }

    /// Records the process that owns this sandbox (a containerd shim): once that process is
    /// gone, [`Runtime::gc_orphans`] removes the sandbox even though its supervisor lives.
    pub fn set_owner(&self, pid: u32) -> Result<()> {
        let path = SandboxPaths::new(&self.root, &self.id).dir.join(OWNER_FILE);
        let ident = process_identity(pid).ok_or_else(|| RuntimeError::Io {
            step: format!("record the owner of sandbox {}", self.id),
            source: std::io::Error::other(format!("pid {pid} is not running")),
        })?;
        sandbox::write_private(&path, ident.as_bytes())?;
        Ok(())
    }

    /// Waits until its VM no longer runs (it exited or was stopped, or the sandbox was
    /// removed), polling every `poll`.
    pub async fn wait_exit(&self, poll: Duration) -> ExitInfo {
        loop {
            let paths = SandboxPaths::new(&self.root, &self.id);
            if !paths.dir.exists() {
                return ExitInfo {
                    health: Health::Dead,
                    removed: true,
                };
            }
            let h = self.health();
            if !matches!(h, Health::Running | Health::Creating) {
                return ExitInfo {
                    health: h,
                    removed: false,
                };
            }
            tokio::time::sleep(poll).await;
        }
    }

    pub(crate) async fn ask(&self, req: &Request, timeout: Duration) -> Result<Response> {
        match client::ask(&self.root, &self.id, req, timeout).await? {
            Response::Error { message } => Err(RuntimeError::Answer {
                id: self.id.clone(),
                message,
            }),
            r => Ok(r),
        }
    }
}

pub(crate) fn unexpected(id: &str, r: Response) -> RuntimeError {
    RuntimeError::Answer {
        id: id.to_string(),
        message: format!("unexpected answer {r:?}"),
    }
}

/// The file in a sandbox's directory naming its owner process (`PID:STARTTIME`).
const OWNER_FILE: &str = "owner";

/// `PID:STARTTIME` of a running process (start time in clock ticks since boot, from
/// `/proc/PID/stat`, so a reused pid is told apart).
fn process_identity(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    // A zombie (nobody reaped it yet) is gone all the same.
    if matches!(fields.next(), Some("Z" | "X")) {
        return None;
    }
    let start = fields.nth(18)?;
    Some(format!("{pid}:{start}"))
}

/// Whether the process recorded as `PID:STARTTIME` still runs (unreadable records count
/// as alive: nothing is removed on a guess).
fn owner_alive(ident: &str) -> bool {
    let Some(pid) = ident.split(':').next().and_then(|p| p.parse::<u32>().ok()) else {
        return true;
    };
    process_identity(pid).as_deref() == Some(ident)
}
