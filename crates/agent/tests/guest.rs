//! The agent as PID 1 of a real guest: a throwaway initramfs (agent as `/init`, the
//! virtio modules, busybox), QEMU (TCG) in a throwaway netns with the agent's
//! virtio-serial port on a unix socket and a virtio-net NIC on QEMU's user-mode backend.
//!
//! Ignored by default (it boots a VM, ~5-10 s under TCG, and needs the cached guest kernel
//! and a static agent build). Run with:
//! `RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -p sandnet-agent --target x86_64-unknown-linux-gnu`
//! then `cargo test -p sandnet-agent --test guest -- --ignored`.
//! `SANDNET_TEST_KERNEL_DIR` (default `/var/cache/sandnet/kernel/current`, with `vmlinuz`
//! and `modules/*.ko`) and `SANDNET_TEST_AGENT` (the static binary) override the inputs.

use sandnet_agent_proto::AgentClient;
use sandnet_model::{Family, Interface, LinkKind, Route, RouteScope};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const MODULES: &[&str] = &[
    "virtio",
    "virtio_ring",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
    "virtio_console",
];
const GUEST_MAC: &str = "02:00:5e:10:00:09";

struct Vm {
    ns: String,
    dir: PathBuf,
    qemu: Option<Child>,
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Some(mut q) = self.qemu.take() {
            let _ = q.kill();
            let _ = q.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        if std::thread::panicking() {
            eprintln!(
                "guest console:\n{}",
                std::fs::read_to_string(self.dir.join("console.log")).unwrap_or_default()
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sh(cmd: &str) {
    let st = Command::new("sh").args(["-c", cmd]).status().unwrap();
    assert!(st.success(), "{cmd}");
}

fn build_initramfs(agent: &Path, kdir: &Path, out: &Path, stage: &Path) {
    std::fs::create_dir_all(stage.join("lib/modules")).unwrap();
    std::fs::create_dir_all(stage.join("etc/sandnet")).unwrap();
    std::fs::create_dir_all(stage.join("bin")).unwrap();
    std::fs::create_dir_all(stage.join("dev")).unwrap();
    std::fs::copy(agent, stage.join("init")).unwrap();
    let mut list = String::new();
    for m in MODULES {
        std::fs::copy(
            kdir.join("modules").join(format!("{m}.ko")),
            stage.join(format!("lib/modules/{m}.ko")),
        )
        .unwrap();
        list.push_str(&format!("lib/modules/{m}.ko\n"));
    }
    std::fs::write(stage.join("etc/sandnet/modules"), list).unwrap();
    std::fs::copy("/bin/busybox", stage.join("bin/busybox")).unwrap();
    for app in ["sh", "ip", "cat", "echo", "ls", "hostname", "sleep"] {
        std::os::unix::fs::symlink("busybox", stage.join("bin").join(app)).unwrap();
    }
    sh(&format!(
        "mknod -m 600 {}/dev/console c 5 1",
        stage.display()
    ));
    sh(&format!(
        "cd {} && find . | cpio -o -H newc --quiet > {}",
        stage.display(),
        out.display()
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots a VM; needs the cached guest kernel and a static agent build"]
async fn agent_serves_as_pid1_over_virtio_serial() {
    let kdir = PathBuf::from(
        std::env::var("SANDNET_TEST_KERNEL_DIR")
            .unwrap_or_else(|_| "/var/cache/sandnet/kernel/current".into()),
    );
    let agent = std::env::var("SANDNET_TEST_AGENT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/x86_64-unknown-linux-gnu/release/sandnet-agent")
        });
    assert!(
        kdir.join("vmlinuz").exists(),
        "no kernel in {}",
        kdir.display()
    );
    assert!(agent.exists(), "no static agent at {}", agent.display());

    let ns = format!("sna-guest-{}", std::process::id());
    let dir = std::env::temp_dir().join(&ns);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let _ = Command::new("ip").args(["netns", "del", &ns]).output();
    sh(&format!("ip netns add {ns}"));
    let mut vm = Vm {
        ns: ns.clone(),
        dir: dir.clone(),
        qemu: None,
    };
    let initrd = dir.join("initrd.cpio");
    build_initramfs(&agent, &kdir, &initrd, &dir.join("stage"));
    let sock = dir.join("agent.sock");
    let t0 = std::time::Instant::now();
    let qemu = Command::new("ip")
        .args(["netns", "exec", &ns, "qemu-system-x86_64"])
        .args(["-M", "q35", "-accel", "tcg", "-m", "256", "-smp", "1"])
        .args(["-cpu", "qemu64,+rdrand", "-nodefaults", "-no-user-config"])
        .args(["-display", "none", "-no-reboot"])
        .arg("-kernel")
        .arg(kdir.join("vmlinuz"))
        .arg("-initrd")
        .arg(&initrd)
        .args([
            "-append",
            "console=ttyS0 panic=-1 random.trust_cpu=on cryptomgr.notests quiet",
        ])
        .arg("-serial")
        .arg(format!("file:{}", dir.join("console.log").display()))
        .args(["-device", "virtio-serial-pci,id=vser0"])
        .arg("-chardev")
        .arg(format!(
            "socket,id=agent0,path={},server=on,wait=off",
            sock.display()
        ))
        .args([
            "-device",
            "virtserialport,bus=vser0.0,chardev=agent0,name=agent.channel.0",
        ])
        .args(["-netdev", "user,id=n0,restrict=on"])
        .args([
            "-device",
            &format!("virtio-net-pci,netdev=n0,mac={GUEST_MAC}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("qemu");
    vm.qemu = Some(qemu);

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
}
