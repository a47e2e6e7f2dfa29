//! `run`, `ps`, `inspect`, `exec`, `rm` and the hidden `__supervise`.

use anyhow::{bail, Context, Result};
use clap::Args;
use sandnet_model::printable;
use sandnet_runtime::api::{CniRequest, PodNetns, Runtime, SandboxRequest};
use sandnet_runtime::config::Config;
use sandnet_runtime::sandbox;
use sandnet_runtime::supervisor;
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
    /// Allow --netns to be the host's network namespace (PID 1's) or this process's own.
    #[arg(long)]
    pub allow_host_netns: bool,
    /// Boot first with no NIC and hot-plug the network once it is prepared (overrides
    /// `[runtime] hotplug_network`).
    #[arg(long)]
    pub hotplug: bool,
    /// Boot a VM of its own even when the factory has one ready.
    #[arg(long)]
    pub no_factory: bool,
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
    /// Whether the guest may send from a MAC or address that is not its NIC's: block or
    /// allow (default: `[runtime] guest_spoofing`, else block).
    #[arg(long, value_name = "block|allow")]
    pub guest_spoofing: Option<sandnet_model::GuestSpoofing>,
    /// Rate limits in the form of CNI's bandwidth capability:
    /// `ingressRate=N,ingressBurst=N,egressRate=N,egressBurst=N` (any subset; bits/s and
    /// bits, plain or `8M`, `1G`, `512Ki`); ingress is into the guest. Passed to a CNI
    /// plugin that declares the capability, else enforced by sandnet (burst at most 100 ms
    /// of the rate); a direction given replaces the configuration's Kata limit.
    #[arg(long, value_name = "LIMITS")]
    pub bandwidth: Option<sandnet_runtime::api::BandwidthEntry>,
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
    /// Kill the VM at once instead of asking it to quit, and always end with the record
    /// gone: a step that cannot be undone is reported (one line each on stderr), and the
    /// exit status is non-zero only when something is still held on the host.
    #[arg(long, short)]
    pub force: bool,
    /// Print JSON: one object per sandbox with `id`, `not_found`, `actions`, `timings`,
    /// `not_undone` and `still_held`.
    #[arg(long)]
    pub json: bool,
}

/// The runtime of the state root `root`, whose supervisors are this binary.
pub fn runtime(root: &Path, log: &str) -> Result<Runtime> {
    Ok(Runtime::new(
        root,
        std::env::current_exe()?,
        self_args(root, log),
    ))
}

/// The arguments that make another `sandnet` process (supervisor, factory daemon,
/// template) use this state root and log level.
pub fn self_args(root: &Path, log: &str) -> Vec<std::ffi::OsString> {
    vec![
        "--state-dir".into(),
        root.as_os_str().to_owned(),
        "--log".into(),
        log.into(),
    ]
}

/// `sandnet run`.
pub async fn run(a: RunArgs, rt: &Runtime) -> Result<i32> {
    let (cfg, _warnings) = Config::load(a.config.as_deref())?;
    let mut req = SandboxRequest::new(cfg);
    req.id = a.name.clone();
    req.netns = match &a.netns {
        Some(n) => PodNetns::Existing(n.clone()),
        None => PodNetns::Create,
    };
    req.cni = CniRequest {
        force: a.cni,
        conf_dir: a.cni_conf_dir.clone(),
        bin_dirs: a.cni_bin_dir.clone(),
        cache_dir: a.cni_cache_dir.clone(),
    };
    req.model = a.model.as_deref().map(str::parse).transpose()?;
    req.queues = a.queues;
    req.allow_host_netns = a.allow_host_netns;
    if a.hotplug {
        req.hotplug_network = Some(true);
    }
    req.use_factory = !a.no_factory;
    req.guest_spoofing = a.guest_spoofing;
    req.bandwidth = a.bandwidth;
    let spec = rt.spec(&req)?;
    let id = spec.id.clone();
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
    let out = rt.run_spec(&spec, &mut on_progress).await;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let sb = out.with_context(|| format!("run sandbox {id}"))?;
    let Some(out) = sb.ready() else {
        bail!("run sandbox {id}: no report");
    };
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
        println!("  accel    {} ({})", out.accel, out.accel_reason);
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
    let code = supervisor::supervise(root, id).await;
    // Exit at once: the sandbox's lock goes with this process, and waiting here for the
    // runtime's idle threads would keep `rm` waiting too.
    std::process::exit(code)
}

/// `sandnet ps`.
pub async fn ps(a: PsArgs, rt: &Runtime) -> Result<i32> {
    let list = rt.list()?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        println!(
            "{:<14} {:<16} {:<9} {:<5} NETNS",
            "ID", "STATUS", "MODEL", "ACCEL"
        );
        for e in list {
            let model = e.model.map(|m| m.to_string()).unwrap_or_else(|| "-".into());
            let accel = if e.accel.is_empty() { "-" } else { &e.accel };
            println!(
                "{:<14} {:<16} {:<9} {:<5} {}",
                printable(&e.id),
                printable(&e.status),
                model,
                accel,
                printable(&e.netns)
            );
        }
    }
    Ok(0)
}

/// `sandnet inspect`.
pub async fn inspect(a: IdArgs, rt: &Runtime) -> Result<i32> {
    let net = rt
        .get(&a.id)?
        .inspect()
        .await
        .with_context(|| format!("inspect sandbox {}", a.id))?;
    let st = rt
        .get(&a.id)?
        .state()
        .with_context(|| format!("inspect sandbox {}", a.id))?;
    if a.json {
        let mut v = serde_json::to_value(&net)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("accel".into(), st.accel.clone().into());
            o.insert("accel_reason".into(), st.accel_reason.clone().into());
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("accel        {} ({})", st.accel, st.accel_reason);
        for i in &net.interfaces {
            println!("{}", iface_line(i));
        }
        for r in &net.routes {
            println!("route {}", route_line(r));
        }
    }
    Ok(0)
}

/// One guest interface as text: name, MAC, MTU, addresses (guest strings escaped).
pub fn iface_line(i: &sandnet_model::Interface) -> String {
    let addrs: Vec<String> = i.addresses.iter().map(|x| x.to_string()).collect();
    format!(
        "{:<12} {} mtu {} {}",
        printable(&i.name),
        i.mac.map(|m| m.to_string()).unwrap_or_default(),
        i.mtu,
        addrs.join(" ")
    )
}

/// One guest route as text (`DEST via GW dev DEV`, guest strings escaped).
pub fn route_line(r: &sandnet_model::Route) -> String {
    format!(
        "{} dev {}",
        printable(&sandnet_host::netlink::route_text(r)),
        printable(&r.device)
    )
}

/// `sandnet exec`: the command's exit status becomes ours.
pub async fn exec(a: ExecArgs, rt: &Runtime) -> Result<i32> {
    let out = rt
        .get(&a.id)?
        .exec(&a.cmd, Duration::from_secs(a.timeout))
        .await
        .with_context(|| format!("exec in sandbox {}", a.id))?;
    std::io::stdout().write_all(&out.stdout)?;
    std::io::stderr().write_all(&out.stderr)?;
    std::io::stdout().flush()?;
    Ok(out.exit_code)
}

/// Arguments of `sandnet gc`.
#[derive(Args, Debug)]
pub struct GcArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `sandnet gc`: non-zero when something could not be cleaned up (its record is kept).
pub async fn gc(a: GcArgs, rt: &Runtime) -> Result<i32> {
    let mut rep = rt.gc().await.context("gc")?;
    // Sandboxes of a containerd shim that died with nobody to run its `delete`.
    rt.gc_orphans(&mut rep).await;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rep)?);
    } else {
        for l in &rep.actions {
            println!("{l}");
        }
    }
    for f in &rep.failures {
        eprintln!("sandnet: gc: {f}");
    }
    Ok(if rep.failures.is_empty() { 0 } else { 1 })
}

/// `sandnet rm`: every id is tried; non-zero when any teardown failed (its record is kept
/// for a retry) or, with `--force`, left something held on the host. Each step not undone
/// is one line on stderr.
pub async fn rm(a: RmArgs, rt: &Runtime) -> Result<i32> {
    let mut reports = vec![];
    let mut failed = 0;
    for id in &a.ids {
        sandbox::check_id(id).with_context(|| format!("remove sandbox {id}"))?;
        let h = rt.handle(id);
        let r = if a.force {
            h.remove_converging().await
        } else {
            h.remove(false).await
        };
        match r {
            Ok(rep) => {
                if rep.not_found {
                    eprintln!("sandnet: no sandbox {id} (nothing to remove)");
                } else if !a.json {
                    println!("{id}");
                }
                for l in &rep.not_undone {
                    eprintln!("sandnet: remove sandbox {id}: not undone: {l}");
                }
                if rep.still_held {
                    failed += 1;
                }
                reports.push(serde_json::json!({
                    "id": id,
                    "not_found": rep.not_found,
                    "actions": rep.actions,
                    "timings": rep.timings,
                    "not_undone": rep.not_undone,
                    "still_held": rep.still_held,
                }));
            }
            Err(e) => {
                failed += 1;
                eprintln!("sandnet: remove sandbox {id}: {e}");
                reports.push(serde_json::json!({ "id": id, "error": e.to_string() }));
            }
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    }
    Ok(if failed == 0 { 0 } else { 1 })
}
