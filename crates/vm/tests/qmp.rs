//! The QMP client against a real QEMU: capabilities, status, NIC hot plug and unplug, errors.

mod common;

use common::*;
use sandnet_vm::{NicSpec, VmError, VmSpec};
use serde_json::json;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hotplug_and_unplug_a_nic_over_qmp() {
    let kernel = guest_kernel();
    let scratch = TempDir::new("qmp-hotplug");
    let initrd = test_initramfs(&kernel, scratch.path());
    let ns = Netns::new("qmp-hotplug");
    let make = |accel| {
        let mut spec = VmSpec::new(kernel.boot_image(), &initrd, accel);
        spec.hotplug_ports = 2;
        spec
    };
    let (mut qemu, _) =
        spawn_auto(make, Some(ns.file.as_fd()), &scratch.path().join("state")).await;
    let console = qemu.paths().console.clone();
    let qmp = qemu.take_qmp().expect("QMP connection");
    assert!(qmp.greeting()["QMP"]["version"]["qemu"]["major"].is_u64());
    let st = qmp.query_status().await.unwrap();
    assert!(st.running, "{st:?}");
    assert_eq!(st.status, "running");

    // Wait for the guest to have its drivers (the init script says READY after insmod).
    let ready = wait_for_text(&console, "SANDNET-READY", Duration::from_secs(60)).await;
    assert!(
        ready.is_some(),
        "guest not ready: {}",
        std::fs::read_to_string(&console).unwrap_or_default()
    );

    // A bus that does not exist: error, and nothing left behind (same id works afterwards).
    let tap = ns.open_tap("tap1");
    let mac = "02:aa:bb:cc:dd:02".parse().unwrap();
    let nic = NicSpec::new("hp0", mac, tap);
    let err = qmp.hotplug_nic(&nic, "rp9").await.unwrap_err();
    assert!(
        matches!(err, VmError::Qmp { ref command, .. } if command == "device_add"),
        "{err:?}"
    );

    let t0 = Instant::now();
    qmp.hotplug_nic(&nic, "rp0").await.expect("hotplug");
    let plugged = t0.elapsed();
    let got = qmp
        .execute(
            "qom-get",
            Some(json!({"path": "/machine/peripheral/hp0", "property": "mac"})),
        )
        .await
        .unwrap();
    assert_eq!(got, json!("02:aa:bb:cc:dd:02"));
    let seen = wait_for_text(
        &console,
        "SANDNET-LINK-ADD eth0 02:aa:bb:cc:dd:02",
        Duration::from_secs(30),
    )
    .await;
    assert!(
        seen.is_some(),
        "guest never saw the NIC: {}",
        std::fs::read_to_string(&console).unwrap_or_default()
    );
    eprintln!(
        "hotplug QMP calls {plugged:?}; guest saw eth0 {:?} later",
        seen.unwrap()
    );

    // Typed errors.
    match qmp
        .device_del("no-such-dev", Duration::from_millis(100))
        .await
    {
        Err(VmError::Qmp { class, desc, .. }) => {
            assert_eq!(class, "DeviceNotFound", "{desc}");
        }
        other => panic!("expected a QMP error, got {other:?}"),
    }
    let dup = qmp
        .device_add(json!({"driver": "virtio-net-pci", "id": "hp0", "bus": "rp1"}))
        .await
        .unwrap_err();
    assert!(matches!(dup, VmError::Qmp { .. }), "{dup:?}");

    let t0 = Instant::now();
    let deleted = qmp
        .unplug_nic("hp0", Duration::from_secs(15))
        .await
        .expect("unplug");
    eprintln!("unplug: DEVICE_DELETED={deleted} after {:?}", t0.elapsed());
    assert!(
        deleted,
        "no DEVICE_DELETED within 15 s: the guest never released hp0; console:\n{}",
        std::fs::read_to_string(&console).unwrap_or_default()
    );
    assert!(qmp
        .execute(
            "qom-get",
            Some(json!({"path": "/machine/peripheral/hp0", "property": "mac"}))
        )
        .await
        .is_err());
    assert!(
        wait_for_text(&console, "SANDNET-LINK-DEL eth0", Duration::from_secs(10))
            .await
            .is_some(),
        "the guest never saw eth0 go"
    );

    qmp.quit().await.expect("quit");
    let st = qemu.wait_timeout(Duration::from_secs(10)).await.unwrap();
    assert!(st.is_some(), "QEMU still running after quit");
    assert!(
        qmp.query_status().await.is_err(),
        "connection should be closed"
    );
}
