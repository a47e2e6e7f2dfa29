//! `containerd-shim-sandnet-v2`: containerd's shim v2 for runtime type
//! `io.containerd.sandnet.v2`. One shim serves a whole pod: the pod sandbox task is a
//! sandnet VM booted in the pod's network namespace, the pod's containers run inside it
//! through the guest's agent, their files reaching it through the sandbox's shared
//! directory. The same binary is the supervisor of the sandboxes it starts
//! (`-sandnet-state-dir ROOT __supervise ID`), so installing this one file is enough.

mod agent;
mod annotations;
mod bundle;
mod container;
mod error;
mod events;
mod io;
mod mounts;
mod ocispec;
mod placement;
mod process;
mod rootfs;
mod sandbox;
mod shim;
mod spec;
mod stats;
mod task;
mod vmwatch;

use std::path::PathBuf;

/// containerd's name for this runtime.
const RUNTIME_ID: &str = "io.containerd.sandnet.v2";

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.len() == 5 && args[1] == shim::SUPERVISE_FLAG && args[3] == "__supervise" {
        std::process::exit(supervise(
            PathBuf::from(&args[2]),
            &args[4].to_string_lossy(),
        ));
    }
    if std::env::var_os("TTRPC_ADDRESS").is_none() {
        eprintln!(
            "{RUNTIME_ID}: TTRPC_ADDRESS is not set: this shim is started by containerd \
             (runtime_type = \"{RUNTIME_ID}\"), see scripts/install-shim"
        );
        std::process::exit(1);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{RUNTIME_ID}: tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    // The library's reaper collects the sandbox supervisors this daemon starts once they
    // exit (after Delete).
    rt.block_on(containerd_shim::asynchronous::run::<shim::SandnetShim>(
        RUNTIME_ID, None,
    ));
}

/// A sandbox's supervisor (started by the runtime API as `… __supervise ID`); its log goes
/// to stderr, which the runtime points at the sandbox's `supervisor.log`.
fn supervise(root: PathBuf, id: &str) -> i32 {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SANDNET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => {
            let code = rt.block_on(sandnet_runtime::supervisor::supervise(&root, id));
            // Exit at once: the sandbox's lock goes with this process.
            std::process::exit(code)
        }
        Err(e) => {
            eprintln!("supervisor {id}: tokio runtime: {e}");
            1
        }
    }
}
