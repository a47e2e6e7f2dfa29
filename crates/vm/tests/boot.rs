//! Real guests under QEMU (the accelerator sandnet would pick, TCG after a failed KVM trial): cold-plugged tap, console log, errors. Run as root.

mod common;

use common::*;
use sandnet_vm::{Accel, GuestKernel, NicSpec, Qemu, VmError, VmSpec};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// Boots the test guest on `kernel` with eth0 on a tap of `queues` queues and checks ping
/// both ways; returns the guest's console log.
async fn boot_and_ping(test: &str, queues: usize, vcpus: u32, kernel: GuestKernel) -> String {
    let scratch = TempDir::new(test);
    let initrd = test_initramfs(&kernel, scratch.path());
    let ns = Netns::new(test);
    let taps = ns.open_tap_queues("tap0", queues);
    ns.ip(&["addr", "add", "10.77.0.1/24", "dev", "tap0"]);
    ns.ip(&["link", "set", "tap0", "up"]);

    let make = |accel| {
        let mut spec = VmSpec::new(kernel.boot_image(), &initrd, accel);
        spec.vcpus = vcpus;
        spec.kernel_args
            .push_str(" sandnet.ip=10.77.0.2/24 sandnet.peer=10.77.0.1");
        spec.nics.push(NicSpec {
            id: "eth0".into(),
            mac: "02:aa:bb:cc:dd:01".parse().unwrap(),
            tap_fds: taps.iter().map(dup).collect(),
            vhost_fds: vec![],
            queues: queues as u32,
        });
        spec
    };
    let state = scratch.path().join("state");
    let t0 = Instant::now();
    let (mut qemu, accel) = spawn_auto(make, Some(ns.file.as_fd()), &state).await;
    eprintln!("[{test}] accelerator {accel}");
    let qmp_ready = t0.elapsed();
    assert_eq!(qemu.child_fds()[0].tap_fds.len(), queues);
    assert!(qemu.paths().agent.exists(), "agent socket missing");
    let console = qemu.paths().console.clone();
    let ok = wait_for_text(&console, "SANDNET-PING-OK", Duration::from_secs(60)).await;
    let log = std::fs::read_to_string(&console).unwrap_or_default();
    assert!(
        ok.is_some(),
        "guest never pinged the host; console:\n{log}\nqemu log:\n{}",
        qemu.log_tail(20)
    );
    eprintln!(
        "[{test}] QMP ready after {qmp_ready:?}; guest pinged host {:?} after spawn; console:\n{log}",
        t0.elapsed()
    );
    assert!(!log.contains("SANDNET-INSMOD-FAIL"), "{log}");
    let ready = wait_for_text(&console, "SANDNET-READY", Duration::from_secs(10)).await;
    assert!(ready.is_some());
    let log = std::fs::read_to_string(&console).unwrap_or_default();
    assert!(
        log.contains("SANDNET-PORT agent.channel.0 /dev/vport"),
        "agent port not visible in the guest: {log}"
    );
    for l in log.lines().filter(|l| l.starts_with("SANDNET-PORT")) {
        eprintln!("[{test}] {l}");
    }
    let rx_queues = format!("rx-{}", queues - 1);
    assert!(
        log.contains(&rx_queues),
        "guest NIC lacks {rx_queues}: {log}"
    );
    // And the host side reaches the guest.
    assert!(
        ns.exec_ok(&["ping", "-c", "1", "-W", "2", "10.77.0.2"]),
        "host cannot ping guest"
    );
    // The guest NIC has the MAC we gave it (seen from the host's neighbour table).
    let out = std::process::Command::new("ip")
        .args(["-n", &ns.name, "neigh", "show", "10.77.0.2"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("02:aa:bb:cc:dd:01"));
    // pid file written by QEMU matches the child.
    let pid: u32 = std::fs::read_to_string(&qemu.paths().pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid, qemu.pid());
    qemu.kill().await.unwrap();
    qemu.kill().await.unwrap(); // idempotent
    assert!(qemu.try_wait().unwrap().is_some());
    log
}

/// The kernel release the test guest printed.
fn uname(log: &str) -> &str {
    log.lines()
        .find_map(|l| l.strip_prefix("SANDNET-UNAME "))
        .unwrap_or_else(|| panic!("no SANDNET-UNAME line: {log}"))
        .trim()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boots_and_pings_over_cold_plugged_tap() {
    // The default kernel is sandnet's own: release ends in -sandnet, no modules to load.
    let kernel = guest_kernel();
    assert!(kernel.modules.is_empty(), "{:?}", kernel.modules);
    let log = boot_and_ping("boot-ping", 1, 1, kernel).await;
    assert!(uname(&log).ends_with("-sandnet"), "{}", uname(&log));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boots_with_a_multiqueue_tap() {
    boot_and_ping("boot-mq", 2, 2, guest_kernel()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debian_cloud_kernel_still_boots_with_its_modules() {
    let kernel = cloud_kernel();
    assert!(!kernel.modules.is_empty());
    let log = boot_and_ping("boot-cloud", 1, 1, kernel).await;
    assert!(uname(&log).ends_with("-cloud-amd64"), "{}", uname(&log));
}

#[tokio::test]
async fn missing_kernel_fails_before_spawning() {
    let scratch = TempDir::new("no-kernel");
    let spec = VmSpec::new("/nonexistent/vmlinuz", "/dev/null", Accel::Tcg);
    let state = scratch.path().join("state");
    let err = Qemu::spawn(spec, None, &state).await.unwrap_err();
    assert!(matches!(err, VmError::InvalidSpec(_)), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/vmlinuz"), "{err}");
    assert!(
        !state.join("qemu.log").exists(),
        "QEMU must not have been started"
    );
}

#[tokio::test]
async fn qemu_exiting_at_once_reports_its_log() {
    let kernel = guest_kernel();
    let scratch = TempDir::new("bad-arg");
    let initrd = test_initramfs(&kernel, scratch.path());
    let mut spec = VmSpec::new(kernel.boot_image(), &initrd, Accel::Tcg);
    spec.extra_args = vec!["-device".into(), "no-such-device-model".into()];
    let err = Qemu::spawn(spec, None, &scratch.path().join("state"))
        .await
        .unwrap_err();
    match &err {
        VmError::QemuExited { tail, .. } => {
            assert!(tail.contains("no-such-device-model"), "{tail}")
        }
        other => panic!("expected QemuExited, got {other:?}"),
    }
    eprintln!("{err}");
}
