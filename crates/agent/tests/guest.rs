//! The agent as PID 1 of a real guest, booted the way sandnet boots one: the image and
//! QEMU come from `sandnet-vm` (the default cached kernel, sandnet's own; initramfs with
//! the static agent as `/init`), QEMU (TCG) runs in a throwaway netns with the agent's virtio-serial port on a
//! unix socket and a virtio-net NIC on QEMU's user-mode backend (`restrict=on`: nothing
//! leaves the VM).
//!
//! Needs the cached guest kernel (`scripts/build-kernel`) and the static agent
//! (`scripts/build-agent`), which `scripts/test` provides; `SANDNET_TEST_AGENT` overrides
//! the agent binary.

use sandnet_agent_proto::protobuf::MessageField;
use sandnet_agent_proto::{agent, agent_ttrpc, oci, ttrpc, AgentClient};
use sandnet_model::{Family, Interface, LinkKind, Route, RouteScope};
use sandnet_testkit::{TempDir, TestNs};
use sandnet_vm::{Accel, GuestKernel, Initramfs, InitramfsSpec, Qemu, VmSpec};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;

const GUEST_MAC: &str = "02:00:5e:10:00:09";

/// A booted guest: QEMU, its agent socket, and what must live as long as it.
struct Guest {
    qemu: sandnet_vm::QemuProcess,
    sock: PathBuf,
    _ns: TestNs,
    _dir: TempDir,
}

async fn boot(tag: &str) -> Guest {
    let agent = sandnet_testkit::static_agent();
    let kernel = GuestKernel::locate(&GuestKernel::default_dir()).expect("guest kernel");
    let dir = TempDir::new(tag);
    let initrd =
        Initramfs::build_cached(&InitramfsSpec::new(&agent, &kernel), &dir).expect("initramfs");
    let ns = TestNs::new(tag);
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
    let qemu = Qemu::spawn(spec, Some(netns.as_fd()), &dir.join("vm"))
        .await
        .expect("qemu");
    let sock = qemu.paths().agent.clone();
    Guest {
        qemu,
        sock,
        _ns: ns,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_serves_as_pid1_over_virtio_serial() {
    let t0 = std::time::Instant::now();
    let Guest {
        mut qemu,
        sock,
        _ns,
        _dir,
    } = boot("agent-guest").await;

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

/// `sh -c script` in the guest (outside any container); stdout, checked to succeed.
async fn guest_sh(c: &AgentClient, script: &str) -> String {
    let o = c
        .exec(
            &["sh".into(), "-c".into(), script.into()],
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(
        o.exit_code,
        0,
        "{script}: {out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

fn guest_spec(root: &str, args: &[&str], memory: i64) -> oci::Spec {
    let m = |dest: &str, typ: &str, opts: &[&str]| oci::Mount {
        destination: dest.into(),
        type_: typ.into(),
        source: typ.into(),
        options: opts.iter().map(|o| o.to_string()).collect(),
        ..Default::default()
    };
    oci::Spec {
        Process: MessageField::some(oci::Process {
            Args: args.iter().map(|a| a.to_string()).collect(),
            Env: vec!["PATH=/bin".into()],
            Cwd: "/".into(),
            ..Default::default()
        }),
        Root: MessageField::some(oci::Root {
            Path: root.into(),
            ..Default::default()
        }),
        Hostname: "in-guest".into(),
        Mounts: vec![
            m("/proc", "proc", &["nosuid", "noexec", "nodev"]),
            m("/dev", "tmpfs", &["nosuid", "mode=755"]),
            m("/dev/pts", "devpts", &["newinstance", "ptmxmode=0666"]),
            m("/sys", "sysfs", &["ro"]),
            m("/sys/fs/cgroup", "cgroup", &["ro"]),
        ],
        Linux: MessageField::some(oci::Linux {
            Resources: MessageField::some(oci::LinuxResources {
                Memory: MessageField::some(oci::LinuxMemory {
                    Limit: memory,
                    ..Default::default()
                }),
                Pids: MessageField::some(oci::LinuxPids {
                    Limit: 64,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Containers where they really run: the agent is PID 1 on the initramfs root (where
/// `pivot_root` needs the agent's root-moving step), mounts cgroup2 itself and has the
/// memory controller, so a memory limit ends in an OOM kill and an OOM event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_run_in_the_guest() {
    let mut g = boot("agent-guest-ctr").await;
    let c = AgentClient::connect(&g.sock, Duration::from_secs(10))
        .await
        .expect("connect")
        .with_call_timeout(Duration::from_secs(60));
    c.health_check().await.expect("health");
    let svc = agent_ttrpc::AgentServiceClient::new(c.raw().clone());
    let ctx = || ttrpc::context::with_timeout(Duration::from_secs(60).as_nanos() as i64);
    let root = "/run/sandnet/shared/g1/rootfs";
    let storage = agent::Storage {
        driver: "local".into(),
        fstype: "tmpfs".into(),
        source: "tmpfs".into(),
        options: vec!["size=64m".into()],
        mount_point: "/run/sandnet/shared".into(),
        ..Default::default()
    };
    let create = |id: &str, spec: oci::Spec| agent::CreateContainerRequest {
        container_id: id.into(),
        storages: vec![storage.clone()],
        OCI: MessageField::some(spec),
        ..Default::default()
    };
    let before = guest_sh(&c, "cat /proc/self/mountinfo").await;
    // The first Create mounts the storage; its root is not there yet.
    let r = svc
        .create_container(ctx(), &create("g0", guest_spec(root, &["true"], 0)))
        .await;
    // Refused for its missing root (not any error: a failed storage mount would be one).
    let msg = format!("{r:?}");
    assert!(r.is_err() && msg.contains("is not a directory"), "{msg}");
    guest_sh(
        &c,
        &format!(
            "mkdir -p {root}/bin {root}/proc {root}/dev {root}/sys && cp /bin/busybox {root}/bin/ && \
             for a in $(busybox --list | grep -vx busybox); do ln -s busybox {root}/bin/$a; done"
        ),
    )
    .await;
    let wait = |id: &str| agent::WaitProcessRequest {
        container_id: id.into(),
        ..Default::default()
    };
    let script = "hostname; echo pid=$$; cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max";
    svc.create_container(
        ctx(),
        &create("g1", guest_spec(root, &["sh", "-c", script], 32 << 20)),
    )
    .await
    .expect("create g1");
    svc.start_container(
        ctx(),
        &agent::StartContainerRequest {
            container_id: "g1".into(),
            ..Default::default()
        },
    )
    .await
    .expect("start g1");
    assert_eq!(
        svc.wait_process(ctx(), &wait("g1")).await.unwrap().status,
        0
    );
    let mut out = Vec::new();
    loop {
        let d = svc
            .read_stdout(
                ctx(),
                &agent::ReadStreamRequest {
                    container_id: "g1".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .data;
        if d.is_empty() {
            break;
        }
        out.extend(d);
    }
    let out = String::from_utf8_lossy(&out);
    assert_eq!(out, format!("in-guest\npid=1\n{}\n64\n", 32 << 20));

    let dd = ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"];
    svc.create_container(ctx(), &create("oom", guest_spec(root, &dd, 16 << 20)))
        .await
        .expect("create oom");
    svc.start_container(
        ctx(),
        &agent::StartContainerRequest {
            container_id: "oom".into(),
            ..Default::default()
        },
    )
    .await
    .expect("start oom");
    assert_eq!(
        svc.wait_process(ctx(), &wait("oom")).await.unwrap().status,
        137
    );
    let ev = svc
        .get_oom_event(ctx(), &agent::GetOOMEventRequest::default())
        .await
        .expect("oom event");
    assert_eq!(ev.container_id, "oom");
    for id in ["g1", "oom"] {
        svc.remove_container(
            ctx(),
            &agent::RemoveContainerRequest {
                container_id: id.into(),
                timeout: 10,
                ..Default::default()
            },
        )
        .await
        .expect("remove");
    }
    assert_eq!(
        guest_sh(&c, "find /sys/fs/cgroup/sandnet -mindepth 1 -type d").await,
        ""
    );
    let after = guest_sh(&c, "cat /proc/self/mountinfo").await;
    // The storage and the cgroup2 mount stay; nothing else was added.
    let added: Vec<&str> = after.lines().filter(|l| !before.contains(l)).collect();
    assert!(
        added.len() == 2
            && added.iter().any(|l| l.contains(" /run/sandnet/shared "))
            && added.iter().any(|l| l.contains(" /sys/fs/cgroup ")),
        "{added:#?}"
    );
    g.qemu.kill().await.unwrap();
}
