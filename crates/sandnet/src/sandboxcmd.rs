//! `run`, `ps`, `inspect`, `exec`, `rm` and the hidden `__supervise`.

use anyhow::{bail, Context, Result};
use clap::Args;
use sandnet_host::Model;
use sandnet_model::printable;
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
    /// Use this existing network namespace as it is (a name under /run/netns or a path);
    /// without it sandnet creates one and runs CNI ADD in it.
    #[arg(long)]
    pub netns: Option<String>,
    /// Run CNI ADD even in the namespace given with --netns.
    #[arg(long)]
    pub cni: bool,
    /// CNI configuration directory (default: the configuration's, else /etc/cni/net.d).
    #[arg(long)]
    pub cni_conf_dir: Option<PathBuf>,
    /// CNI plugin directory; repeat for several (default: /opt/cni/bin, then /usr/lib/cni).
    #[arg(long)]
    pub cni_bin_dir: Vec<PathBuf>,
    /// CNI cache directory (default: /var/lib/cni).
    #[arg(long)]
    pub cni_cache_dir: Option<PathBuf>,
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
    /// Print JSON: one object per sandbox with `id`, `not_found`, `actions` and `timings`.
    #[arg(long)]
    pub json: bool,
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
    let mut netns = a.netns.clone();
    if netns.is_none() && cfg.runtime.disable_new_netns {
        // Kata's disable_new_netns (model none only): the VM shares this namespace, no NICs.
        let (here, _) = lifecycle::host_netns();
        if here.as_os_str().is_empty() {
            bail!("disable_new_netns: this network namespace has no name the sandbox can use");
        }
        netns = Some(here.display().to_string());
    }
    // Fail fast on a namespace that is not there, before anything starts.
    if let Some(n) = &netns {
        sandnet_host::NetNs::open(n)?;
    }
    let cni = if (netns.is_none() || a.cni) && !cfg.runtime.disable_new_netns {
        let conf_dir = a.cni_conf_dir.clone().unwrap_or(cfg.cni.conf_dir.clone());
        let list = lifecycle::network_from_dir(&conf_dir)?;
        let (host_netns, host_netns_id) = lifecycle::host_netns();
        Some(sandbox::CniAttachment {
            network: String::from_utf8_lossy(&list.bytes).into_owned(),
            bin_dirs: if a.cni_bin_dir.is_empty() {
                cfg.cni.bin_dirs.clone()
            } else {
                a.cni_bin_dir.clone()
            },
            cache_dir: a.cni_cache_dir.clone().unwrap_or(cfg.cni.cache_dir.clone()),
            host_netns,
            host_netns_id,
            container_id: format!("sandnet-{id}"),
            ifname: "eth0".into(),
            timeout_ms: cfg.cni.timeout.as_millis() as u64,
        })
    } else {
        None
    };
    let spec = RunSpec {
        id: id.clone(),
        netns,
        model,
        queues: a.queues,
        vm: VmParams::from(&cfg.qemu),
        dns: None,
        cni,
    };
    let mut sup = std::process::Command::new(std::env::current_exe()?);
    sup.arg("--state-dir")
        .arg(root)
        .arg("--log")
        .arg(log)
        .arg("__supervise")
        .arg(&id);
    let bar = (!a.json && std::io::IsTerminal::is_terminal(&std::io::stderr())).then(|| {
        let b = indicatif::ProgressBar::new_spinner();
        b.enable_steady_tick(Duration::from_millis(100));
        b.set_message(format!("sandbox {id}: starting"));
        b
    });
    let started = std::time::Instant::now();
    let mut on_progress = |step: &str| {
        let what = match step {
            "netns" => "creating the network namespace",
            "cni" => "CNI ADD",
            "attach" => "attaching the pod network",
            "image" => "guest image (initramfs)",
            "boot" => "booting the VM",
            "network" => "configuring the guest network",
            other => other,
        };
        if let Some(b) = &bar {
            b.set_message(format!(
                "sandbox {id}: {what} ({:.1} s)",
                started.elapsed().as_secs_f64()
            ));
        }
    };
    let out = lifecycle::launch(root, &spec, sup, &mut on_progress).await;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let out = out.with_context(|| format!("run sandbox {id}"))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let ips: Vec<String> = out
            .interfaces
            .iter()
            .flat_map(|i| i.addresses.iter().map(|a| a.addr().to_string()))
            .collect();
        println!("{}", out.id);
        let ip = if ips.is_empty() {
            "-".to_string()
        } else {
            ips.join(" ")
        };
        println!("  ip       {ip}");
        println!("  netns    {}", out.netns);
        println!("  accel    {}", out.accel);
        for i in &out.interfaces {
            let addrs: Vec<String> = i.addresses.iter().map(|x| x.to_string()).collect();
            println!(
                "  nic      {} {} {}",
                printable(&i.name),
                i.mac.map(|m| m.to_string()).unwrap_or_default(),
                addrs.join(" ")
            );
        }
        let steps = [
            ("netns_ms", "netns"),
            ("cni_add_ms", "cni add"),
            ("attach_ms", "attach"),
            ("image_ms", "image"),
            ("qemu_ms", "qemu start"),
            ("boot_ms", "boot"),
            ("agent_ms", "agent"),
            ("total_ms", "total"),
        ];
        let parts: Vec<String> = steps
            .iter()
            .filter_map(|(k, n)| out.timings.get(*k).map(|v| format!("{n} {v} ms")))
            .collect();
        println!("  timings  {}", parts.join(", "));
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
            println!(
                "{:<14} {:<16} {:<9} {}",
                printable(&e.id),
                e.status,
                e.model,
                printable(&e.netns)
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
                printable(&i.name),
                i.mac.map(|m| m.to_string()).unwrap_or_default(),
                i.mtu,
                addrs.join(" ")
            );
        }
        for r in &net.routes {
            println!(
                "route {} dev {}",
                printable(&sandnet_host::nl::route_text(r)),
                printable(&r.device)
            );
        }
    }
    Ok(0)
}

fn describe(r: &Response) -> String {
    match r {
        Response::Error { message } => printable(message).into_owned(),
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

/// Arguments of `sandnet gc`.
#[derive(Args, Debug)]
pub struct GcArgs {
    /// CNI cache directory to look for leaked attachments in (default: the configuration's).
    #[arg(long)]
    pub cni_cache_dir: Vec<PathBuf>,
    /// Configuration file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `sandnet gc`.
pub async fn gc(a: GcArgs, root: &Path) -> Result<i32> {
    let (cfg, _) = Config::load(a.config.as_deref())?;
    let dirs = if a.cni_cache_dir.is_empty() {
        vec![cfg.cni.cache_dir.clone()]
    } else {
        a.cni_cache_dir.clone()
    };
    let rep = lifecycle::gc(root, &dirs).await.context("gc")?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rep)?);
    } else {
        for l in &rep.actions {
            println!("{l}");
        }
    }
    Ok(0)
}

/// `sandnet rm`.
pub async fn rm(a: RmArgs, root: &Path) -> Result<i32> {
    let mut reports = vec![];
    for id in &a.ids {
        let rep = lifecycle::remove(root, id, a.force)
            .await
            .with_context(|| format!("remove sandbox {id}"))?;
        if rep.not_found {
            eprintln!("sandnet: no sandbox {id} (nothing to remove)");
        } else if !a.json {
            println!("{id}");
        }
        reports.push(serde_json::json!({
            "id": id,
            "not_found": rep.not_found,
            "actions": rep.actions,
            "timings": rep.timings,
        }));
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    }
    Ok(0)
}
