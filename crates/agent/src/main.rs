//! `sandnet-agent`: sandnet's guest agent.
//!
//! As PID 1 in a guest (no `--listen`): mounts `/proc`, `/sys`, `/dev`, `/dev/pts`, `/run`,
//! `/tmp`, logs to `/dev/console`, loads the modules listed in `/etc/sandnet/modules`,
//! reaps zombies, and serves the agent protocol on the virtio-serial port named
//! `agent.channel.0` (and on vsock port 1024 when `/dev/vsock` exists).
//!
//! With `--listen unix:PATH` it serves on that unix socket instead and configures the
//! network namespace it runs in (tests, or an agent outside a VM).
//!
//! Either way it runs OCI containers (`container`): each through a helper, this binary
//! re-exec'd with a hidden first argument, dispatched before anything else in `main`.

mod container;
mod error;
mod exec;
#[cfg(feature = "hostile")]
mod hostile;
mod init;
mod net;
mod sandbox;
mod serial;
mod service;
mod stats;

use anyhow::{bail, Context, Result};
use clap::Parser;
use sandnet_agent_proto::ttrpc::r#async::Server;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// vsock port the agent listens on (Kata's agent uses 1024 too).
const VSOCK_PORT: u32 = 1024;

/// sandnet's guest agent (Kata agent protocol over ttrpc).
#[derive(Parser, Debug)]
#[command(name = "sandnet-agent", version)]
struct Args {
    /// Serve on this address instead of the guest's virtio-serial port: `unix:PATH`.
    #[arg(long, value_name = "unix:PATH")]
    listen: Option<String>,
    /// Directory under which `etc/hostname` and `etc/resolv.conf` are written;
    /// `sethostname(2)` is only called when this is `/`.
    #[arg(long, value_name = "DIR", default_value = "/")]
    root: PathBuf,
    /// How long UpdateInterface waits for a NIC with the requested MAC to appear.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    link_wait_ms: u64,
    /// How long the guest mode waits for its virtio-serial port to appear.
    #[arg(long, value_name = "MS", default_value_t = 30000)]
    port_wait_ms: u64,
    /// Misbehave on purpose (tests of the host side only; only in a build with the
    /// `hostile` feature, never in the shipped agent).
    #[cfg(feature = "hostile")]
    #[arg(long, value_name = "MODE", hide = true)]
    hostile: Option<hostile::Mode>,
    /// The cgroup (v2) under which each container gets `<id>/`.
    #[arg(long, value_name = "DIR", default_value = "/sys/fs/cgroup/sandnet")]
    cgroup_root: PathBuf,
    /// Log filter (tracing's env-filter syntax); `SANDNET_AGENT_LOG` overrides it.
    #[arg(long, default_value = "info")]
    log: String,
}

fn main() {
    // A container helper (the agent re-exec'd by itself): nothing of the agent runs.
    if std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new(container::HELPER_ARG)) {
        container::helper_main();
    }
    // A raw-frame sender for tests of the host's guard (hostile test builds only).
    #[cfg(feature = "hostile")]
    if std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new(hostile::SEND_FRAME_ARG))
    {
        hostile::send_frame_main();
    }
    let pid1 = std::process::id() == 1;
    if pid1 {
        init::mount_pseudo_fs();
        init::use_console();
        if std::env::var_os("PATH").is_none() {
            std::env::set_var("PATH", "/bin:/sbin:/usr/bin:/usr/sbin");
        }
    }
    // The kernel hands init whatever command-line words it did not understand: as PID 1,
    // arguments that do not parse are ignored rather than fatal.
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) if !pid1 => e.exit(),
        Err(_) => Args::parse_from(["sandnet-agent"]),
    };
    let filter = std::env::var("SANDNET_AGENT_LOG").unwrap_or_else(|_| args.log.clone());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(!pid1)
        .with_writer(std::io::stderr)
        .init();
    if pid1 {
        // The first line the guest prints with quiet kernel arguments: when PID 1 started,
        // on the kernel's clock (boot measurements split the boot at this point).
        tracing::info!(uptime_ms = init::uptime_ms(), "sandnet-agent up as PID 1");
    }

    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => fatal(pid1, anyhow::Error::from(e).context("tokio runtime")),
    };
    if let Err(e) = rt.block_on(run(args, pid1)) {
        fatal(pid1, e);
    }
}

fn fatal(pid1: bool, e: anyhow::Error) -> ! {
    tracing::error!("sandnet-agent: {e:#}");
    eprintln!("sandnet-agent: fatal: {e:#}");
    if pid1 {
        init::power_off();
    }
    std::process::exit(1);
}

fn unix_path(listen: &str) -> Result<PathBuf> {
    let p = listen
        .strip_prefix("unix://")
        .or_else(|| listen.strip_prefix("unix:"))
        .unwrap_or(listen);
    if p.is_empty() {
        bail!("--listen {listen:?}: expected unix:PATH");
    }
    Ok(PathBuf::from(p))
}

async fn run(args: Args, pid1: bool) -> Result<()> {
    let reaper = exec::Reaper::start().context("installing the SIGCHLD reaper")?;
    if pid1 {
        let t = std::time::Instant::now();
        let n = init::load_modules(Path::new("/"), Path::new(init::MODULES_LIST));
        tracing::info!(
            loaded = n,
            ms = t.elapsed().as_millis() as u64,
            uptime_ms = init::uptime_ms(),
            "kernel modules"
        );
    }
    let nl = sandnet_netlink::Netlink::connect_current().context("opening netlink")?;
    let net = net::NetApplier::new(nl, Duration::from_millis(args.link_wait_ms));
    if pid1 {
        if let Err(e) = net.loopback_up().await {
            tracing::warn!("bringing lo up: {e}");
        }
    }
    let containers = container::Containers::new(reaper.clone(), args.cgroup_root.clone());
    let agent = Arc::new(service::Agent {
        net,
        files: sandbox::SystemFiles::new(&args.root),
        reaper,
        containers,
    });

    let services = || {
        #[cfg(feature = "hostile")]
        if let Some(m) = args.hostile {
            return hostile::services(m, agent.clone());
        }
        service::services(agent.clone())
    };
    let listen = match &args.listen {
        Some(l) => {
            let path = unix_path(l)?;
            remove_stale_socket(&path)?;
            Some(path)
        }
        None => None,
    };
    let mut servers = Vec::new();
    let mut socket_file = None;
    // A raw hostile mode serves bytes instead of the protocol (test builds only).
    #[cfg(feature = "hostile")]
    let raw = match args.hostile.filter(|m| m.is_raw()) {
        Some(m) => {
            let wait = Duration::from_millis(args.port_wait_ms);
            hostile::serve_raw_mode(m, listen.as_deref(), wait).await?;
            socket_file = listen.clone();
            true
        }
        None => false,
    };
    #[cfg(not(feature = "hostile"))]
    let raw = false;
    if raw {
        // Served above.
    } else if let Some(path) = listen {
        let mut s = Server::new()
            .bind(&format!("unix://{}", path.display()))
            .with_context(|| format!("listening on {}", path.display()))?
            .register_service(services());
        s.start().await.context("starting the ttrpc server")?;
        tracing::info!(socket = %path.display(), "serving");
        socket_file = Some(path);
        servers.push(s);
    } else {
        match serial::open_port(
            serial::AGENT_PORT_NAME,
            Duration::from_millis(args.port_wait_ms),
        )
        .await
        {
            Ok((dev, fd)) => {
                let l = serial::port_listener(fd).context("watching the agent port")?;
                let mut s = Server::new().add_listener(l).register_service(services());
                s.start().await.context("starting the ttrpc server")?;
                tracing::info!(
                    port = %dev.display(),
                    uptime_ms = init::uptime_ms(),
                    "serving on virtio-serial"
                );
                servers.push(s);
            }
            Err(e) => tracing::warn!("{e}"),
        }
        if Path::new("/dev/vsock").exists() {
            let addr = format!("vsock://-1:{VSOCK_PORT}");
            match Server::new().bind(&addr) {
                Ok(s) => {
                    let mut s = s.register_service(services());
                    s.start().await.context("starting the vsock server")?;
                    tracing::info!(port = VSOCK_PORT, "serving on vsock");
                    servers.push(s);
                }
                Err(e) => tracing::warn!("vsock: {e}"),
            }
        }
        if servers.is_empty() {
            bail!(
                "neither a virtio-serial port named {} nor vsock to serve on",
                serial::AGENT_PORT_NAME
            );
        }
    }

    if pid1 {
        // Init never returns.
        std::future::pending::<()>().await;
    }
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down");
    for mut s in servers {
        let _ = tokio::time::timeout(Duration::from_secs(2), s.shutdown()).await;
    }
    agent.containers.shutdown().await;
    if let Some(p) = socket_file {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}

/// Removes a socket file left by an earlier agent; anything else at the path is an error.
fn remove_stale_socket(path: &Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))
        }
        Ok(_) => bail!("{} exists and is not a socket", path.display()),
        Err(_) => Ok(()),
    }
}
