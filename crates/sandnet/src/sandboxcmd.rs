//! `run`, `ps`, `inspect`, `exec`, `rm` and the hidden `__supervise`.

use anyhow::{bail, Context, Result};
use clap::Args;
use sandnet_host::Model;
use sandnet_runtime::config::Config;
use sandnet_runtime::control::{Request, Response};
use sandnet_runtime::lifecycle::{self, RunSpec, VmParams};
use sandnet_runtime::sandbox;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Arguments of `sandnet run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Use this existing network namespace as it is (a name under /run/netns or a path).
    #[arg(long)]
    pub netns: String,
    /// Sandbox id (default: random).
    #[arg(long)]
    pub name: Option<String>,
    /// Interworking model (default: the configuration's, else tcfilter).
    #[arg(long)]
    pub model: Option<String>,
    /// Queues per NIC.
    #[arg(long, default_value_t = 1)]
    pub queues: u16,
    /// Configuration file (default: $SANDNET_CONFIG, else /etc/sandnet/sandnet.toml if present).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments naming one sandbox.
#[derive(Args, Debug)]
pub struct IdArgs {
    /// Sandbox id.
    pub id: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `sandnet ps`.
#[derive(Args, Debug)]
pub struct PsArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `sandnet exec`.
#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Sandbox id.
    pub id: String,
    /// Seconds the command may run.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true)]
    pub cmd: Vec<String>,
}

/// Arguments of `sandnet rm`.
#[derive(Args, Debug)]
pub struct RmArgs {
    /// Sandbox ids.
    #[arg(required = true)]
    pub ids: Vec<String>,
    /// Kill the VM at once instead of asking it to quit.
    #[arg(long, short)]
    pub force: bool,
}

/// `sandnet run`.
pub async fn run(a: RunArgs, root: &Path, log: &str) -> Result<i32> {
    let (cfg, _warnings) = Config::load(a.config.as_deref())?;
    let model: Model = match &a.model {
        Some(m) => m.parse()?,
        None => cfg.runtime.internetworking_model,
    };
    let id = a.name.clone().unwrap_or_else(sandbox::new_id);
    sandbox::check_id(&id)?;
    // Fail fast on a namespace that is not there, before anything starts.
    let ns = sandnet_host::NetNs::open(&a.netns)?;
    drop(ns);
    let spec = RunSpec {
        id: id.clone(),
        netns: a.netns.clone(),
        netns_created: false,
        model,
        queues: a.queues,
        vm: VmParams::from(&cfg.qemu),
        dns: None,
        cni: None,
    };
    let mut sup = std::process::Command::new(std::env::current_exe()?);
    sup.arg("--state-dir")
        .arg(root)
        .arg("--log")
        .arg(log)
        .arg("__supervise")
        .arg(&id);
    let out = lifecycle::launch(root, &spec, sup)
        .await
        .with_context(|| format!("run sandbox {id}"))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "sandbox {} is running in {} ({})",
            out.id, out.netns, out.accel
        );
        for i in &out.interfaces {
            let addrs: Vec<String> = i.addresses.iter().map(|x| x.to_string()).collect();
            println!(
                "  {} {} {}",
                i.name,
                i.mac.map(|m| m.to_string()).unwrap_or_default(),
                addrs.join(" ")
            );
        }
        let t = |k: &str| out.timings.get(k).copied().unwrap_or_default();
        println!(
            "  boot {} ms, network {} ms (attach {} + agent {}), total {} ms",
            t("boot_ms"),
            t("network_ms"),
            t("attach_ms"),
            t("agent_ms"),
            t("total_ms")
        );
    }
    Ok(0)
}

/// `sandnet __supervise ID` (started by `run`).
pub async fn supervise(id: &str, root: &Path) -> Result<i32> {
    Ok(lifecycle::supervise(root, id).await)
}

/// `sandnet ps`.
pub async fn ps(a: PsArgs, root: &Path) -> Result<i32> {
    let list = lifecycle::ps(root)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        println!("{:<14} {:<16} {:<9} NETNS", "ID", "STATUS", "MODEL");
        for e in list {
            // `Model`'s Display ignores width: pad its text.
            println!(
                "{:<14} {:<16} {:<9} {}",
                e.id,
                e.status,
                e.model.as_str(),
                e.netns
            );
        }
    }
    Ok(0)
}

/// `sandnet inspect`.
pub async fn inspect(a: IdArgs, root: &Path) -> Result<i32> {
    let r = lifecycle::ask(root, &a.id, &Request::Inspect, Duration::from_secs(30))
        .await
        .with_context(|| format!("inspect sandbox {}", a.id))?;
    let Response::Network(net) = r else {
        bail!("inspect sandbox {}: {}", a.id, describe(&r));
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&net)?);
    } else {
        for i in &net.interfaces {
            let addrs: Vec<String> = i.addresses.iter().map(|x| x.to_string()).collect();
            println!(
                "{:<12} {} mtu {} {}",
                i.name,
                i.mac.map(|m| m.to_string()).unwrap_or_default(),
                i.mtu,
                addrs.join(" ")
            );
        }
        for r in &net.routes {
            println!("route {} dev {}", sandnet_host::nl::route_text(r), r.device);
        }
    }
    Ok(0)
}

fn describe(r: &Response) -> String {
    match r {
        Response::Error { message } => message.clone(),
        other => format!("unexpected answer {other:?}"),
    }
}

/// `sandnet exec`: the command's exit status becomes ours.
pub async fn exec(a: ExecArgs, root: &Path) -> Result<i32> {
    let req = Request::Exec {
        args: a.cmd.clone(),
        timeout_ms: a.timeout.saturating_mul(1000),
    };
    let r = lifecycle::ask(root, &a.id, &req, Duration::from_secs(a.timeout + 30))
        .await
        .with_context(|| format!("exec in sandbox {}", a.id))?;
    let Response::Exec(out) = r else {
        bail!("exec in sandbox {}: {}", a.id, describe(&r));
    };
    std::io::stdout().write_all(&out.stdout)?;
    std::io::stderr().write_all(&out.stderr)?;
    std::io::stdout().flush()?;
    Ok(out.exit_code)
}

/// `sandnet rm`.
pub async fn rm(a: RmArgs, root: &Path) -> Result<i32> {
    for id in &a.ids {
        let rep = lifecycle::remove(root, id, a.force)
            .await
            .with_context(|| format!("remove sandbox {id}"))?;
        if rep.not_found {
            eprintln!("sandnet: no sandbox {id} (nothing to remove)");
        } else {
            println!("{id}");
        }
    }
    Ok(0)
}
