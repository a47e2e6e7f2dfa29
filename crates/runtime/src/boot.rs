//! Booting a sandbox's VM until its agent answers, under the accelerator
//! [`sandnet_vm::accel::choose`] picks — and when that is a KVM trial that fails (QEMU
//! aborts, exits, or shows no sign of life within
//! [`sandnet_vm::accel::KVM_TRIAL_DEADLINE`]), killing that QEMU,
//! recording the verdict and booting the same sandbox again under TCG.

use crate::error::RuntimeError;
use sandnet_agent_proto::AgentClient;
use sandnet_model::MacAddr;
use sandnet_vm::accel::{self, StartFailure};
use sandnet_vm::{Accel, AccelMode, NicSpec, Qemu, QemuProcess, VmSpec};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a guest may take to answer its agent after QEMU started (TCG is slow).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// A NIC of the sandbox. Its tap fds stay here; every QEMU started gets duplicates, so a
/// TCG retry can plug the same queues again.
#[derive(Debug)]
pub struct BootNic {
    /// Device id in QEMU.
    pub id: String,
    /// The guest NIC's MAC.
    pub mac: MacAddr,
    /// One tap (or macvtap) fd per queue.
    pub tap_fds: Vec<OwnedFd>,
}

/// What [`boot_vm`] needs besides the NICs.
pub struct BootPlan<'a> {
    /// How to choose the accelerator.
    pub mode: AccelMode,
    /// Where accelerator verdicts are kept (`<state root>/accel`).
    pub cache_dir: &'a Path,
    /// The VM without NICs, for an accelerator.
    pub spec: &'a dyn Fn(Accel) -> VmSpec,
    /// Open `/dev/vhost-net` for each queue.
    pub vhost: bool,
    /// The pod namespace QEMU runs in.
    pub netns: Option<BorrowedFd<'a>>,
    /// The sandbox's state directory (QEMU's sockets and logs).
    pub dir: &'a Path,
}

/// A VM whose agent answered.
#[derive(Debug)]
pub struct Booted {
    /// The QEMU process.
    pub qemu: QemuProcess,
    /// The agent connection.
    pub agent: AgentClient,
    /// The accelerator it runs with.
    pub accel: Accel,
    /// Why that accelerator, in one line.
    pub reason: String,
    /// Time until QEMU answered on QMP (of the attempt that succeeded).
    pub qemu_ms: u64,
    /// Time from then until the agent answered.
    pub boot_ms: u64,
}

/// The VM of `params` booting `kernel` and `initrd` under `accel` (no NICs yet).
pub fn vm_spec(
    params: &crate::spec::VmParams,
    kernel: &Path,
    initrd: &Path,
    accel: Accel,
) -> VmSpec {
    let mut vs = VmSpec::new(kernel, initrd, accel);
    vs.qemu = params.qemu.clone();
    vs.machine = params.machine.clone();
    vs.vcpus = params.vcpus;
    vs.memory_mib = params.memory_mib;
    vs.hotplug_ports = params.hotplug_ports;
    vs.free_page_reporting = params.reclaim_freed_memory;
    vs.tcg_tb_size_mib = Some(params.tcg_tb_size_mib).filter(|n| *n > 0);
    if !params.kernel_params.is_empty() {
        vs.kernel_args = format!("{} {}", vs.kernel_args, params.kernel_params);
    }
    vs
}

/// Something to record in the sandbox state as it happens: QEMU's pid (`None` once that QEMU
/// is gone), and the accelerator with its reason.
pub type Record<'a> = dyn FnMut(Option<u32>, Accel, &str) + 'a;

/// Chooses the accelerator and boots until the guest agent answers, falling back from a failed
/// KVM trial to TCG (one `warn` line says why). A forced mode never falls back. On error no
/// QEMU of this call is left running.
pub async fn boot_vm(
    plan: BootPlan<'_>,
    nics: Vec<BootNic>,
    record: &mut Record<'_>,
) -> Result<Booted, RuntimeError> {
    let qemu_bin = (plan.spec)(Accel::Tcg).qemu;
    let (mode, cache_dir) = (plan.mode, plan.cache_dir.to_path_buf());
    let choice = tokio::task::spawn_blocking(move || accel::choose(mode, &cache_dir, &qemu_bin))
        .await
        .map_err(|source| RuntimeError::Task {
            step: "choose the accelerator",
            source,
        })?
        .map_err(|source| RuntimeError::Vm {
            step: "choose the accelerator",
            source,
        })?;
    tracing::info!("accelerator {}: {}", choice.accel, choice.reason);
    let sign = "a guest answered its agent under KVM";
    let started = accel::start(
        choice,
        BOOT_TIMEOUT,
        sign,
        async |accel, deadline, reason| {
            record(None, accel, reason);
            attempt(&plan, &nics, accel, deadline, record).await
        },
    )
    .await;
    match started {
        Ok(s) => Ok(s.vm.with(s.accel, s.reason)),
        // KVM without a trial (forced, or a remembered verdict) that hangs: say it is QEMU
        // under KVM, not only which call timed out. (A failed trial fell back to TCG.)
        Err((Accel::Kvm, f)) if f.kvm_suspect => Err(RuntimeError::Supervisor(format!(
            "QEMU under KVM: {} ({})",
            f.why, f.error
        ))),
        Err((_, f)) => Err(f.error),
    }
}

/// A failed attempt: the error to report, and whether (and why) KVM may be at fault.
type Failure = StartFailure<RuntimeError>;

struct Attempt {
    qemu: QemuProcess,
    agent: AgentClient,
    qemu_ms: u64,
    boot_ms: u64,
}

impl Attempt {
    fn with(self, accel: Accel, reason: String) -> Booted {
        Booted {
            qemu: self.qemu,
            agent: self.agent,
            accel,
            reason,
            qemu_ms: self.qemu_ms,
            boot_ms: self.boot_ms,
        }
    }
}

/// One QEMU under `accel`: started, and waited for until its agent answers (at most
/// `deadline` from the start). Killed and reaped if anything fails.
async fn attempt(
    plan: &BootPlan<'_>,
    nics: &[BootNic],
    accel: Accel,
    deadline: Duration,
    record: &mut Record<'_>,
) -> Result<Attempt, Failure> {
    let plain = |error: RuntimeError| Failure {
        why: error.to_string(),
        error,
        kvm_suspect: false,
    };
    let mut spec = (plan.spec)(accel);
    for n in nics {
        spec.nics.push(nic_spec(n, plan.vhost).map_err(plain)?);
    }
    let t = Instant::now();
    let until = t + deadline;
    let mut q = match Qemu::spawn(spec, plan.netns, plan.dir).await {
        Ok(q) => q,
        Err(e) => {
            return Err(Failure {
                kvm_suspect: accel::kvm_may_be_at_fault(&e),
                why: accel::describe_kvm_failure(&e),
                error: RuntimeError::Vm {
                    step: "start QEMU",
                    source: e,
                },
            })
        }
    };
    let qemu_ms = ms(t);
    record(Some(q.pid()), accel, "");
    let t = Instant::now();
    let r = wait_for_agent(&mut q, until, deadline).await;
    match r {
        Ok(agent) => Ok(Attempt {
            qemu: q,
            agent,
            qemu_ms,
            boot_ms: ms(t),
        }),
        Err(f) => {
            let _ = q.kill().await;
            record(None, accel, "");
            Err(f)
        }
    }
}

pub(crate) fn nic_spec(n: &BootNic, vhost: bool) -> Result<NicSpec, RuntimeError> {
    let tap_fds = n
        .tap_fds
        .iter()
        .map(|f| f.try_clone())
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|source| RuntimeError::Io {
            step: format!("duplicate the tap fds of {}", n.id),
            source,
        })?;
    let queues = tap_fds.len() as u32;
    let vhost_fds = if vhost {
        open_vhost(queues).map_err(|source| RuntimeError::Io {
            step: "open /dev/vhost-net".into(),
            source,
        })?
    } else {
        vec![]
    };
    Ok(NicSpec {
        id: n.id.clone(),
        mac: n.mac,
        tap_fds,
        vhost_fds,
        queues,
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

/// Waits until the guest agent answers its health check (the first answer means the guest
/// booted), QEMU exits, or `until` passes.
async fn wait_for_agent(
    q: &mut QemuProcess,
    until: Instant,
    limit: Duration,
) -> Result<AgentClient, Failure> {
    let suspect = |why: String, error: RuntimeError| Failure {
        error,
        kvm_suspect: true,
        why,
    };
    let sock = q.paths().agent.clone();
    let client = match AgentClient::connect(&sock, Duration::from_secs(10)).await {
        Ok(c) => c,
        Err(source) => {
            let error = RuntimeError::Agent {
                step: "connect to the agent channel",
                source,
            };
            return Err(suspect(error.to_string(), error));
        }
    };
    let probe = client.clone().with_call_timeout(Duration::from_secs(2));
    // Silence means the guest is still booting; anything else (an error status, an answer
    // that does not decode, a dead connection) will not get better by waiting.
    let mut answered_badly = 0;
    loop {
        let e = match probe.health_check().await {
            Ok(()) => return Ok(client),
            Err(e) => e,
        };
        if matches!(e, sandnet_agent_proto::ClientError::Timeout { .. }) {
            answered_badly = 0;
        } else {
            answered_badly += 1;
        }
        if let Ok(Some(st)) = q.try_wait() {
            let tail = q.log_tail(3);
            let what = if st.signal() == Some(libc::SIGABRT) {
                "QEMU aborted".to_string()
            } else {
                format!("QEMU exited ({st})")
            };
            let why = format!("{what}: {}", accel::last_lines(&tail, 2));
            let error = RuntimeError::QemuEnded {
                what: what.clone(),
                log: tail.replace('\n', " | "),
            };
            return Err(suspect(why, error));
        }
        if answered_badly >= 3 {
            // The guest runs (it answers), so the accelerator is not to blame.
            return Err(Failure {
                error: RuntimeError::Agent {
                    step: "wait for the guest agent",
                    source: e,
                },
                kvm_suspect: false,
                why: String::new(),
            });
        }
        if Instant::now() >= until {
            let console = std::fs::read_to_string(&q.paths().console).unwrap_or_default();
            let last = accel::last_lines(&console, 1);
            let why = format!(
                "the guest showed no sign of life within {} s (console: {})",
                limit.as_secs(),
                if last.is_empty() { "empty" } else { &last }
            );
            let error = RuntimeError::Agent {
                step: "wait for the guest agent",
                source: e,
            };
            return Err(suspect(why, error));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}
