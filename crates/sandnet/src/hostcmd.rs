//! `scan`, `attach` and `detach`: the host side on its own.

use anyhow::{Context, Result};
use clap::Args;
use sandnet_host::interwork::AttachOptions;
use sandnet_host::{scan_detail, InterworkingModel, NetNs, NetNsRef};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Arguments of `sandnet scan`.
#[derive(Args, Debug)]
pub struct ScanArgs {
    /// Network namespace: a name under /run/netns or a path.
    #[arg(long)]
    pub netns: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `sandnet attach`.
#[derive(Args, Debug)]
pub struct AttachArgs {
    /// Network namespace: a name under /run/netns or a path.
    #[arg(long)]
    pub netns: String,
    /// Interworking model: tcfilter, macvtap or none.
    #[arg(long, default_value = "tcfilter")]
    pub model: String,
    /// Queues per endpoint (multiqueue taps when more than one).
    #[arg(long, default_value_t = 1)]
    pub queues: u16,
    /// Whether the guest may send from addresses that are not its own: block (the
    /// default) or allow.
    #[arg(long, default_value = "block")]
    pub guest_spoofing: sandnet_model::GuestSpoofing,
    /// Allow the host's network namespace (PID 1's) or this process's own: attaching there
    /// takes its NICs away from the host.
    #[arg(long)]
    pub allow_host_netns: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `sandnet detach`.
#[derive(Args, Debug)]
pub struct DetachArgs {
    /// Network namespace: a name under /run/netns or a path.
    #[arg(long)]
    pub netns: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Where attach state lives under the state root.
pub fn attach_state_dir(root: &Path) -> PathBuf {
    root.join("attach")
}

/// `sandnet scan`.
///
/// Read-only, so any namespace may be scanned, the host's too.
pub async fn scan(a: ScanArgs) -> Result<i32> {
    let ns = NetNs::open(&a.netns.parse::<NetNsRef>()?)?;
    let nl = ns.netlink()?;
    let s = scan_detail(&nl)
        .await
        .with_context(|| format!("scan network namespace {}", ns.display()))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s.config)?);
        return Ok(0);
    }
    for i in &s.config.interfaces {
        let mac = i.mac.map(|m| m.to_string()).unwrap_or_else(|| "-".into());
        let addrs: Vec<String> = i.addresses.iter().map(|a| a.to_string()).collect();
        let ep = match s
            .link_by_name(&i.name)
            .map(sandnet_host::endpoint::classify)
        {
            Some(Ok(_)) => "endpoint".to_string(),
            Some(Err(r)) => format!("skipped: {}", skip_text(&r)),
            None => String::new(),
        };
        println!(
            "{:<16} {:<9} {} mtu {:<5} {} [{}]",
            i.name,
            i.kind.as_str(),
            mac,
            i.mtu,
            addrs.join(" "),
            ep
        );
    }
    for r in &s.config.routes {
        println!(
            "route {}",
            sandnet_host::netlink::route_text(r) + &format!(" dev {}", r.device)
        );
    }
    for n in &s.config.neighbors {
        println!("neighbor {} lladdr {} dev {}", n.ip, n.mac, n.device);
    }
    Ok(0)
}

fn skip_text(r: &sandnet_host::SkipReason) -> String {
    use sandnet_host::SkipReason::*;
    match r {
        Loopback => "loopback".into(),
        Sandnet => "created by sandnet".into(),
        NoMac => "no MAC address".into(),
        NoAddresses => "no addresses".into(),
        UnsupportedKind(k) => format!("kind {k} is not a NIC"),
    }
}

/// One endpoint as `attach --json` prints it.
#[derive(Serialize)]
struct AttachedOut {
    name: String,
    kind: String,
    mac: String,
    model: InterworkingModel,
    tap: Option<String>,
    tap_name: Option<String>,
    tap_index: Option<u32>,
    queues: usize,
    mtu: u32,
    addresses: Vec<String>,
}

/// `CLOCK_MONOTONIC` in nanoseconds: a clock other processes can read too, so that the
/// attach benchmark can place this process's phases within its own measurement.
fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// `attach --json`'s `timings`: when the command began (`CLOCK_MONOTONIC`, after process
/// start, argument parsing and the tokio runtime), the library's phases, and the
/// command's own total (namespace open, attach, output).
#[derive(Serialize)]
struct AttachTimingsOut {
    start_monotonic_ns: u64,
    open_us: u64,
    #[serde(flatten)]
    phases: sandnet_host::AttachTimings,
    total_us: u64,
}

/// `sandnet attach`.
pub async fn attach(a: AttachArgs, root: &Path) -> Result<i32> {
    let start_monotonic_ns = monotonic_ns();
    let t0 = std::time::Instant::now();
    let model: InterworkingModel = a.model.parse()?;
    let ns = a
        .netns
        .parse::<NetNsRef>()?
        .open_guarded(a.allow_host_netns)?;
    let opts = AttachOptions {
        model,
        queues: a.queues,
        state_dir: attach_state_dir(root),
        policy: sandnet_model::TapPolicy {
            spoofing: a.guest_spoofing,
            ..Default::default()
        },
    };
    let open_us = t0.elapsed().as_micros() as u64;
    let (eps, phases) = sandnet_host::attach_timed(&ns, &opts)
        .await
        .with_context(|| format!("attach network namespace {}", ns.display()))?;
    let out: Vec<AttachedOut> = eps
        .iter()
        .map(|e| AttachedOut {
            name: e.endpoint.name.clone(),
            kind: e.endpoint.kind.to_string(),
            mac: e.guest_mac.to_string(),
            model: e.model,
            tap: match &e.device {
                Some(d) => Some(d.display().to_string()),
                None => e.tap.clone(),
            },
            tap_name: e.tap.clone(),
            tap_index: e.tap_index,
            queues: e.fds.len(),
            mtu: e.endpoint.mtu,
            addresses: e.endpoint.addresses.iter().map(|a| a.to_string()).collect(),
        })
        .collect();
    if a.json {
        let timings = AttachTimingsOut {
            start_monotonic_ns,
            open_us,
            phases,
            total_us: t0.elapsed().as_micros() as u64,
        };
        let v = serde_json::json!({
            "netns": ns.display(), "model": model, "endpoints": out, "timings": timings,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if out.is_empty() {
        eprintln!(
            "sandnet: no endpoints in network namespace {}",
            ns.display()
        );
    } else {
        for o in &out {
            println!(
                "{} ({}, {}) -> {} {}",
                o.name,
                o.kind,
                o.mac,
                o.model,
                o.tap.as_deref().unwrap_or("-")
            );
        }
    }
    Ok(0)
}

/// `sandnet detach`.
///
/// Not guarded against the host's namespaces: detach removes only what carries sandnet's
/// marks or its plan, so it cannot harm the host, and it is how an attach made there with
/// `--allow-host-netns` is undone.
pub async fn detach(a: DetachArgs, root: &Path) -> Result<i32> {
    let ns = NetNs::open(&a.netns.parse::<NetNsRef>()?)?;
    let rep = sandnet_host::detach(&ns, &attach_state_dir(root))
        .await
        .with_context(|| format!("detach network namespace {}", ns.display()))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rep)?);
    } else if rep.nothing_attached {
        eprintln!(
            "sandnet: nothing attached in network namespace {}",
            ns.display()
        );
    } else {
        for l in &rep.actions {
            println!("{l}");
        }
    }
    Ok(0)
}
