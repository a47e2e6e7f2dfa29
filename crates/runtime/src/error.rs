//! The runtime's errors: each names the step that failed and keeps its source.

use crate::control;
use crate::image;
use crate::lock::LockError;
use crate::podnet::CniStepError;
use crate::sandbox::SandboxError;
use crate::teardown::TeardownError;
use sandnet_host::HostError;

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
    Lock(#[from] LockError),
    /// An operating-system step of the runtime itself (starting the supervisor, opening a
    /// device, duplicating a descriptor).
    #[error("{step}: {source}")]
    Io {
        /// The step.
        step: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A background task of the runtime died.
    #[error("{step}: {source}")]
    Task {
        /// The step.
        step: &'static str,
        /// Why.
        #[source]
        source: tokio::task::JoinError,
    },
    /// QEMU ended before the guest agent answered.
    #[error("{what} before the guest agent answered: {log}")]
    QemuEnded {
        /// `QEMU aborted` or `QEMU exited (status)`.
        what: String,
        /// The last lines of its log, on one line.
        log: String,
    },
    /// The supervisor gave up (its own words, after rolling back as far as it could).
    #[error("{0}")]
    Supervisor(String),
    /// The supervisor died or went silent before the sandbox was ready.
    #[error("supervisor of sandbox {id} died before the sandbox was ready: {log}{cleanup}")]
    SupervisorDied {
        /// The sandbox.
        id: String,
        /// The last lines of its log, on one line.
        log: String,
        /// What cleaning up from the record said, when it failed (with a leading `; `).
        cleanup: String,
    },
    /// Starting was given up on before the sandbox was ready.
    #[error("{0} before the sandbox was ready")]
    Interrupted(&'static str),
    /// The sandbox is not in a state to answer.
    #[error("sandbox {id} is {health}: {why} (remove it with `sandnet rm {id}`)")]
    NotRunning {
        /// The sandbox.
        id: String,
        /// Its health.
        health: crate::sandbox::Health,
        /// What is missing.
        why: &'static str,
    },
    /// The supervisor answered a request with an error, or with something else.
    #[error("sandbox {id}: {message}")]
    Answer {
        /// The sandbox.
        id: String,
        /// What it said.
        message: String,
    },
    /// A request that cannot be carried out as asked (nothing was changed).
    #[error("{0}")]
    Refused(String),
    /// The guest did not let go of a NIC in time (`DEVICE_DELETED` never came); the NIC and
    /// its host side stay, recorded, for a retry or the sandbox's removal.
    #[error("the guest did not release NIC {link:?} within {secs} s; it stays plugged")]
    UnplugTimeout {
        /// The pod link.
        link: String,
        /// How long was waited.
        secs: u64,
    },
    /// `disable_new_netns` needs a namespace with a name the sandbox can use.
    #[error("disable_new_netns: this network namespace has no name the sandbox can use")]
    NoNamedNetns,
}

/// The runtime's result.
pub type Result<T> = std::result::Result<T, RuntimeError>;

/// Maps a host-side error to the step it failed in.
pub(crate) fn host(step: &'static str) -> impl FnOnce(HostError) -> RuntimeError {
    move |source| RuntimeError::Host { step, source }
}

/// Maps a QEMU/QMP error to the step it failed in.
pub(crate) fn vm(step: &'static str) -> impl FnOnce(sandnet_vm::VmError) -> RuntimeError {
    move |source| RuntimeError::Vm { step, source }
}

/// Maps an agent error to the step it failed in.
pub(crate) fn agent(
    step: &'static str,
) -> impl FnOnce(sandnet_agent_proto::ClientError) -> RuntimeError {
    move |source| RuntimeError::Agent { step, source }
}
