//! `sandnet demo`: the host-side flow on a throw-away pair of namespaces.

use anyhow::{Context, Result};
use clap::Args;
use sandnet_host::interwork::AttachOptions;
use sandnet_host::InterworkingModel;
use sandnet_host::{scan_detail, NetNs};
use std::path::Path;

/// Arguments of `sandnet demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Interworking model to show.
    #[arg(long, default_value = "tcfilter")]
    pub model: String,
}

/// Removes the demo's namespaces however the demo ends.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = NetNs::delete(n);
        }
    }
}

/// Runs the demo.
pub async fn run(a: DemoArgs, root: &Path) -> Result<i32> {
    let model: InterworkingModel = a.model.parse()?;
    let id = std::process::id();
    let host = format!("sandnet-demo-host-{id}");
    let pod = format!("sandnet-demo-pod-{id}");
    let _cleanup = Cleanup(vec![pod.clone(), host.clone()]);
    let host_ns = NetNs::create(&host)?;
    let pod_ns = NetNs::create(&pod)?;
    println!("created network namespaces {host} (host side) and {pod} (pod)");

    let pod_nl = pod_ns.netlink()?;
    let host_nl = host_ns.netlink()?;
    pod_nl
        .add_veth(
            "eth0",
            "veth-demo",
            Some(std::os::fd::AsFd::as_fd(&host_ns)),
        )
        .await?;
    let eth0 = pod_nl
        .link_by_name("eth0")
        .await?
        .context("eth0 vanished")?
        .header
        .index;
    let peer = host_nl
        .link_by_name("veth-demo")
        .await?
        .context("veth-demo vanished")?
        .header
        .index;
    pod_nl
        .add_address(eth0, "172.19.0.5/24".parse()?, false, "eth0")
        .await?;
    pod_nl.set_up(eth0, true, "eth0").await?;
    host_nl
        .add_address(peer, "172.19.0.1/24".parse()?, false, "veth-demo")
        .await?;
    host_nl.set_up(peer, true, "veth-demo").await?;
    let default: sandnet_model::Route = serde_json::from_value(serde_json::json!({
        "dest": "0.0.0.0/0", "gateway": "172.19.0.1", "device": "eth0",
        "scope": "universe", "family": "v4"
    }))?;
    pod_nl.replace_route(&default, eth0).await?;
    println!("pod: eth0 172.19.0.5/24, default via 172.19.0.1 (veth peer in {host})");

    let t = std::time::Instant::now();
    let s = scan_detail(&pod_nl).await?;
    println!("\nscan ({:.1} ms):", t.elapsed().as_secs_f64() * 1e3);
    println!("{}", serde_json::to_string_pretty(&s.config)?);

    let dir = root.join("demo").join(id.to_string());
    let opts = AttachOptions {
        model,
        queues: 1,
        state_dir: dir.clone(),
        policy: Default::default(),
    };
    let t = std::time::Instant::now();
    let eps = sandnet_host::attach(&pod_ns, &opts).await?;
    println!(
        "attach, model {model} ({:.1} ms):",
        t.elapsed().as_secs_f64() * 1e3
    );
    for e in &eps {
        println!(
            "  {} -> {} ({} fd(s) ready for a VMM; guest NIC MAC {})",
            e.endpoint.name,
            e.device
                .as_ref()
                .map(|d| d.display().to_string())
                .or(e.tap.clone())
                .unwrap_or_default(),
            e.fds.len(),
            e.guest_mac
        );
    }
    drop(eps);
    let t = std::time::Instant::now();
    let rep = sandnet_host::detach(&pod_ns, &dir).await?;
    println!("detach ({:.1} ms):", t.elapsed().as_secs_f64() * 1e3);
    for l in &rep.actions {
        println!("  {l}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!("\nremoved {pod} and {host}");
    Ok(0)
}
