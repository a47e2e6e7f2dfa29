//! `sandnet`: container networking for VM sandboxes, the way Kata Containers does it.

mod demo;
mod factorycmd;
mod hostcmd;
mod netcmd;
mod sandboxcmd;
mod statscmd;
mod statsfmt;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Container networking for VM sandboxes.
#[derive(Parser, Debug)]
#[command(name = "sandnet", version, about)]
struct Cli {
    /// Root of sandnet's runtime state.
    #[arg(
        long,
        global = true,
        env = "SANDNET_STATE_DIR",
        default_value = "/run/sandnet"
    )]
    state_dir: PathBuf,
    /// Log filter (e.g. `info`, `sandnet_host=debug`); also `RUST_LOG`.
    #[arg(long, global = true, env = "SANDNET_LOG", default_value = "warn")]
    log: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Scan a network namespace: interfaces, addresses, routes, neighbours.
    Scan(hostcmd::ScanArgs),
    /// Connect every endpoint of a namespace to a tap (tcfilter) or macvtap.
    Attach(hostcmd::AttachArgs),
    /// Undo what attach did in a namespace (idempotent).
    Detach(hostcmd::DetachArgs),
    /// Show the host-side flow on a throw-away namespace: create, scan, attach, detach.
    Demo(demo::DemoArgs),
    /// Boot a VM sandbox on a pod network namespace and configure its network.
    Run(sandboxcmd::RunArgs),
    /// List sandboxes.
    Ps(sandboxcmd::PsArgs),
    /// Show a sandbox's guest network as its agent reports it.
    Inspect(sandboxcmd::IdArgs),
    /// Run a command in a sandbox's guest; its exit status is passed through.
    Exec(sandboxcmd::ExecArgs),
    /// Network counters of a running sandbox per NIC (tap, pod link, guard, guest), or
    /// `--prometheus` for every running sandbox.
    Stats(statscmd::StatsArgs),
    /// Stop sandboxes and remove everything they left (idempotent).
    Rm(sandboxcmd::RmArgs),
    /// Remove what dead sandboxes left behind (state, taps, CNI attachments, namespaces).
    Gc(sandboxcmd::GcArgs),
    /// The network of a running sandbox (Kata's `kata-network`): list-ifaces, list-routes,
    /// add-iface, del-iface, update-routes.
    Net(netcmd::NetArgs),
    /// The VM factory (Kata's VM cache): init, status, destroy.
    Factory(factorycmd::FactoryArgs),
    #[command(name = "__factory", hide = true)]
    FactoryDaemon { count: u32 },
    #[command(name = "__template", hide = true)]
    Template { vm: String },
    /// The per-sandbox supervisor (started by `run`).
    #[command(name = "__supervise", hide = true)]
    Supervise {
        /// Sandbox id.
        id: String,
    },
}

fn main() {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // Errors may quote what a guest sent: no raw control characters to the terminal.
            eprintln!(
                "sandnet: {}",
                sandnet_model::printable_lines(&format!("{e:#}"))
            );
            1
        }
    };
    std::process::exit(code);
}

fn run(cli: Cli) -> Result<i32> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let sandboxes = sandboxcmd::runtime(&cli.state_dir, &cli.log)?;
    rt.block_on(async move {
        let sb = &sandboxes;
        match cli.cmd {
            Cmd::Scan(a) => hostcmd::scan(a).await,
            Cmd::Attach(a) => hostcmd::attach(a, &cli.state_dir).await,
            Cmd::Detach(a) => hostcmd::detach(a, &cli.state_dir).await,
            Cmd::Demo(a) => demo::run(a, &cli.state_dir).await,
            Cmd::Run(a) => sandboxcmd::run(a, sb).await,
            Cmd::Ps(a) => sandboxcmd::ps(a, sb).await,
            Cmd::Inspect(a) => sandboxcmd::inspect(a, sb).await,
            Cmd::Exec(a) => sandboxcmd::exec(a, sb).await,
            Cmd::Stats(a) => statscmd::stats(a, sb).await,
            Cmd::Rm(a) => sandboxcmd::rm(a, sb).await,
            Cmd::Gc(a) => sandboxcmd::gc(a, sb).await,
            Cmd::Net(a) => netcmd::run(a, sb).await,
            Cmd::Factory(a) => factorycmd::run(a, &cli.state_dir, &cli.log).await,
            Cmd::FactoryDaemon { count } => {
                factorycmd::daemon_main(&cli.state_dir, &cli.log, count).await
            }
            Cmd::Template { vm } => factorycmd::template_main(&cli.state_dir, &vm).await,
            Cmd::Supervise { id } => sandboxcmd::supervise(&id, &cli.state_dir).await,
        }
    })
}
