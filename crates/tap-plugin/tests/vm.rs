//! A VMM user's flow: `bridge` + dual-stack `host-local` + `sandnet-tap` through sandnet's
//! CNI executor, then QEMU started by hand on the tap named in the result, with the result's
//! MAC (sandnet's kernel and initramfs with the agent as PID 1, TCG), the agent given the
//! result's addresses and routes, and pings between the guest and the bridge in both
//! families.
//!
//! Needs the cached guest kernel (`scripts/build-kernel`) and the static agent
//! (`scripts/build-agent`); `SANDNET_TEST_AGENT` overrides the agent binary.

mod common;

use common::*;
use sandnet_agent_proto::AgentClient;
use sandnet_model::{Family, Interface, LinkKind, Route, RouteScope};
use sandnet_vm::{Accel, GuestKernel, Initramfs, InitramfsSpec, Qemu, VmSpec};
use serde_json::{json, Value};
use std::os::fd::AsFd;
use std::time::Duration;

/// `sh -c script` in the guest: exit code and output.
async fn guest_sh(c: &AgentClient, script: &str) -> (i32, String) {
    let o = c
        .exec(
            &["sh".into(), "-c".into(), script.into()],
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.exit_code, out)
}

/// What the VMM user reads from the result: the VM's NIC (the interface the IPs point at,
/// `sandbox` = the container ID), its MAC and MTU, the tap of the same name in the netns,
/// the IPs with their gateways, the routes.
struct FromResult {
    tap: String,
    mac: String,
    mtu: u32,
    ips: Vec<(String, String)>,
    routes: Vec<String>,
}

fn read_result(r: &Value, netns: &str, container_id: &str) -> FromResult {
    let ifs = r["interfaces"].as_array().unwrap();
    let ips = r["ips"].as_array().unwrap();
    let ti = ips[0]["interface"].as_u64().unwrap() as usize;
    let t = &ifs[ti];
    assert_eq!(t["sandbox"], container_id, "{r}");
    assert!(
        ifs.iter()
            .any(|i| i["name"] == t["name"] && i["sandbox"] == netns),
        "no tap in the netns: {r}"
    );
    FromResult {
        tap: t["name"].as_str().unwrap().into(),
        mac: t["mac"].as_str().unwrap().into(),
        mtu: t["mtu"].as_u64().unwrap() as u32,
        ips: ips
            .iter()
            .map(|i| {
                assert_eq!(i["interface"].as_u64(), Some(ti as u64), "{r}");
                (
                    i["address"].as_str().unwrap().into(),
                    i["gateway"].as_str().unwrap().into(),
                )
            })
            .collect(),
        routes: r["routes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["dst"].as_str().unwrap().into())
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vmm_on_the_tap_reaches_the_bridge_in_both_families() {
    let w = World::new("tapvm");
    let list = w.conflist("tapnet", json!({}));
    let cni = w.cni();
    let rt = w.rt("vm1");
    let r = cni.add(&list, &rt).await.unwrap().to_json().unwrap();
    let res = read_result(&r, &w.pod.path(), "vm1");
    assert_eq!(res.ips.len(), 2, "{r}");

    // QEMU by hand in the pod namespace, on the tap, with the result's MAC.
    let agent = sandnet_testkit::static_agent();
    let kernel = GuestKernel::locate(&GuestKernel::default_dir()).expect("guest kernel");
    let initrd =
        Initramfs::build_cached(&InitramfsSpec::new(&agent, &kernel), &w.dir).expect("initramfs");
    let mut spec = VmSpec::new(kernel.boot_image(), &initrd, Accel::Tcg);
    spec.extra_args = [
        "-netdev".to_string(),
        format!("tap,id=n0,ifname={},script=no,downscript=no", res.tap),
        "-device".to_string(),
        format!("virtio-net-pci,netdev=n0,mac={}", res.mac),
    ]
    .to_vec();
    let netns = std::fs::File::open(w.pod.path()).unwrap();
    let mut qemu = Qemu::spawn(spec, Some(netns.as_fd()), &w.dir.join("vm"))
        .await
        .expect("qemu");
    let c = AgentClient::connect(&qemu.paths().agent, Duration::from_secs(10))
        .await
        .expect("connect")
        .with_call_timeout(Duration::from_secs(120));
    c.health_check().await.expect("the guest boots");
    let c = c.with_call_timeout(Duration::from_secs(30));

    // The agent gets the result's addresses and routes (gateway: the address's, as CNI
    // says for routes without `gw`).
    c.update_interface(&Interface {
        name: "eth0".into(),
        kind: LinkKind::Veth,
        mac: Some(res.mac.parse().unwrap()),
        mtu: res.mtu,
        addresses: res.ips.iter().map(|(a, _)| a.parse().unwrap()).collect(),
        flags: 0,
    })
    .await
    .expect("update interface");
    let routes: Vec<Route> = res
        .routes
        .iter()
        .map(|dst| {
            let v6 = dst.contains(':');
            let gw = res
                .ips
                .iter()
                .find(|(a, _)| a.contains(':') == v6)
                .map(|(_, g)| g.parse().unwrap());
            Route {
                dest: dst.parse().unwrap(),
                gateway: gw,
                device: "eth0".into(),
                source: None,
                scope: RouteScope::Universe,
                family: if v6 { Family::V6 } else { Family::V4 },
                mtu: None,
                flags: 0,
            }
        })
        .collect();
    c.update_routes(&routes).await.expect("update routes");

    // Guest → bridge, both families (IPv6 may need DAD to finish first).
    for gw in [V4_GW, V6_GW] {
        let (code, out) = guest_sh(
            &c,
            &format!(
                "for i in $(seq 1 30); do ping -c 1 -W 1 {gw} && exit 0; sleep 0.5; done; exit 1"
            ),
        )
        .await;
        assert_eq!(code, 0, "guest ping {gw}: {out}");
    }
    // Bridge side → guest, both families.
    for (addr, _) in &res.ips {
        let ip = addr.split('/').next().unwrap();
        // A few tries, as the other direction gets: a TCG guest can be slow to answer.
        let answered = (0..10).any(|_| {
            std::process::Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &w.host.name,
                    "ping",
                    "-c",
                    "1",
                    "-W",
                    "2",
                    ip,
                ])
                .status()
                .is_ok_and(|s| s.success())
        });
        assert!(answered, "the guest does not answer ping at {ip}");
    }
    qemu.kill().await.unwrap();
    cni.del(&list, &rt).await.unwrap();
    assert!(w.records().is_empty() && w.plans().is_empty());
}
