//! `sandnet factory init|status|destroy` (Kata's VM cache), and the hidden `__factory`
//! (the daemon) and `__template` (one VM) processes.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use sandnet_runtime::config::Config;
use sandnet_runtime::factory::{self, daemon, template};
use sandnet_runtime::spec::VmParams;
use std::io::Write;
use std::path::{Path, PathBuf};

/// `sandnet factory`.
#[derive(Args, Debug)]
pub struct FactoryArgs {
    #[command(subcommand)]
    cmd: FactoryCmd,
}

#[derive(Subcommand, Debug)]
enum FactoryCmd {
    /// Starts the factory daemon and returns once its VMs are booted and ready.
    Init {
        /// How many ready VMs to keep (default: `[factory] vm_cache_number`, else
        /// [`DEFAULT_COUNT`]).
        #[arg(long)]
        count: Option<u32>,
        /// Configuration file (the VMs are booted with its `[hypervisor.qemu]`).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// The daemon and its VMs.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stops the daemon and every VM no sandbox took; removes the factory's records.
    Destroy,
}

/// Runs `sandnet factory …`.
pub async fn run(a: FactoryArgs, root: &Path, log: &str) -> Result<i32> {
    match a.cmd {
        FactoryCmd::Init { count, config } => init(root, log, count, config.as_deref()).await,
        FactoryCmd::Status { json } => {
            let st = factory::status(root);
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                match &st.daemon {
                    Some(d) => {
                        println!("factory daemon pid {}, keeps {} VMs ready", d.pid, d.count)
                    }
                    None => println!("no factory daemon runs"),
                }
                for v in &st.vms {
                    println!(
                        "{:<14} {:<8} {:<4} pid {}",
                        v.vm,
                        format!("{:?}", v.status).to_lowercase(),
                        v.accel,
                        v.pid
                    );
                }
            }
            Ok(0)
        }
        FactoryCmd::Destroy => {
            for a in factory::destroy(root).await {
                println!("{a}");
            }
            Ok(0)
        }
    }
}

/// VMs `factory init` keeps ready when neither `--count` nor `[factory] vm_cache_number`
/// says (Kata's 0 means "no factory"; asking `init` for one means at least one).
pub const DEFAULT_COUNT: u32 = 2;

async fn init(root: &Path, log: &str, count: Option<u32>, config: Option<&Path>) -> Result<i32> {
    let (cfg, _w) = Config::load(config)?;
    let count = match (count, cfg.factory.vm_cache_number) {
        (Some(n), _) => n,
        (None, 0) => DEFAULT_COUNT,
        (None, n) => n,
    };
    if count == 0 || count > sandnet_runtime::config::MAX_VM_CACHE {
        bail!(
            "--count must be 1..={}, got {count}",
            sandnet_runtime::config::MAX_VM_CACHE
        );
    }
    eprintln!("factory: keeping {count} VMs ready");
    if let Some(d) = factory::daemon(root) {
        bail!(
            "a factory runs already (pid {}); `sandnet factory destroy` first",
            d.pid
        );
    }
    // What a previous factory left (killed daemon) goes first.
    factory::destroy(root).await;
    factory::prepare(root, &VmParams::from(&cfg.qemu))?;
    let args = crate::sandboxcmd::self_args(root, log);
    factory::daemon::spawn_daemon(root, &std::env::current_exe()?, &args, count)
        .context("start the factory daemon")?;
    let mut err = std::io::stderr();
    factory::wait_ready(root, count, &mut |n| {
        let _ = writeln!(err, "factory: {n}/{count} VMs ready");
    })
    .await?;
    println!("factory: {count} VMs ready");
    Ok(0)
}

/// `sandnet __factory COUNT`.
pub async fn daemon_main(root: &Path, log: &str, count: u32) -> Result<i32> {
    let args = crate::sandboxcmd::self_args(root, log);
    Ok(daemon::run_daemon(root, count, std::env::current_exe()?, args).await)
}

/// `sandnet __template VM`.
pub async fn template_main(root: &Path, vm: &str) -> Result<i32> {
    Ok(template::serve_template(root, vm).await)
}
