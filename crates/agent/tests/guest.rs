//! The agent as PID 1 of a real guest, booted the way sandnet boots one: the image and
//! QEMU come from `sandnet-vm` (the default cached kernel, sandnet's own; initramfs with
//! the static agent as `/init`), QEMU (TCG) runs in a throwaway netns with the agent's virtio-serial port on a
//! unix socket and a virtio-net NIC on QEMU's user-mode backend (`restrict=on`: nothing
//! leaves the VM).
//!
//! Needs the cached guest kernel (`scripts/build-kernel`) and the static agent
//! (`scripts/build-agent`), which `scripts/test` provides; `SANDNET_TEST_AGENT` overrides
//! the agent binary.

use sandnet_agent_proto::AgentClient;
use sandnet_model::{Family, Interface, LinkKind, Route, RouteScope};
use sandnet_testkit::{TempDir, TestNs};
use sandnet_vm::{Accel, GuestKernel, Initramfs, InitramfsSpec, Qemu, VmSpec};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

const GUEST_MAC: &str = "02:00:5e:10:00:09";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_serves_as_pid1_over_virtio_serial() {
    let agent = std::env::var("SANDNET_TEST_AGENT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/x86_64-unknown-linux-gnu/release/sandnet-agent")
        });
    assert!(agent.exists(), "no static agent at {}", agent.display());
    let kernel = GuestKernel::locate(&GuestKernel::default_dir()).expect("guest kernel");
    let dir = TempDir::new("agent-guest");
    let initrd =
        Initramfs::build_cached(&InitramfsSpec::new(&agent, &kernel), &dir).expect("initramfs");
    let ns = TestNs::new("agent-guest");
    let netns = std::fs::File::open(ns.path()).unwrap();
    let mut spec = VmSpec::new(kernel.boot_image(), &initrd, Accel::Tcg);
    spec.extra_args = [
        "-netdev",
        "user,id=n0,restrict=on",
        "-device",
        &format!("virtio-net-pci,netdev=n0,mac={GUEST_MAC}"),
    ]
    .map(String::from)
    .to_vec();
    let t0 = std::time::Instant::now();
    let mut qemu = Qemu::spawn(spec, Some(netns.as_fd()), &dir.join("vm"))
        .await
        .expect("qemu");
    let sock = qemu.paths().agent.clone();

    let c = AgentClient::connect(&sock, Duration::from_secs(10))
        .await
        .expect("connect")
        .with_call_timeout(Duration::from_secs(60));
    // The first call waits for the guest to boot and open its port.
    c.health_check().await.expect("health");
    let boot = t0.elapsed();
    let c = c.with_call_timeout(Duration::from_secs(10));
    let t1 = std::time::Instant::now();
    let got = c
        .update_interface(&Interface {
            name: "eth0".into(),
            kind: LinkKind::Veth,
            mac: Some(GUEST_MAC.parse().unwrap()),
            mtu: 1400,
            addresses: vec!["10.0.2.15/24".parse().unwrap()],
            flags: 0,
        })
        .await
        .expect("update interface");
    assert_eq!(got.name, "eth0");
    assert_eq!(got.mtu, 1400);
    let routes = c
        .update_routes(&[Route {
            dest: "0.0.0.0/0".parse().unwrap(),
            gateway: Some("10.0.2.2".parse().unwrap()),
            device: "eth0".into(),
            source: None,
            scope: RouteScope::Universe,
            family: Family::V4,
            mtu: None,
            flags: 0,
        }])
        .await
        .expect("update routes");
    assert!(routes.iter().any(|r| r.is_default()));
    let apply = t1.elapsed();
    c.create_sandbox("guest1", &Default::default())
        .await
        .unwrap();
    let o = c
        .exec(
            &[
                "sh".into(),
                "-c".into(),
                "hostname; ip -o addr show eth0".into(),
            ],
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.exit_code, 0, "{out}");
    assert!(out.starts_with("guest1\n"), "{out}");
    assert!(out.contains("10.0.2.15/24"), "{out}");
    eprintln!("boot to first answer {boot:?}, interface+routes {apply:?}");

    // A second host session on the same port after the first one disconnects.
    drop(c);
    let c2 = AgentClient::connect(&sock, Duration::from_secs(5))
        .await
        .unwrap()
        .with_call_timeout(Duration::from_secs(10));
    c2.health_check()
        .await
        .expect("health on a second connection");
    let ifs = c2.list_interfaces().await.unwrap();
    assert!(ifs.iter().any(|i| i.name == "eth0" && i.mtu == 1400));
    qemu.kill().await.unwrap();
}
