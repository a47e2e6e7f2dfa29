//! A guest flooding its serial console: the host keeps at most two capped files and QMP still
//! answers promptly meanwhile. Real QEMU guest; run as root.

mod common;

use common::*;
use sandnet_vm::{Accel, Initramfs, InitramfsSpec, Qemu, VmSpec};
use std::path::Path;
use std::time::{Duration, Instant};

/// Writes 3 MiB of `x` to the serial port, then a marker.
const FLOOD_INIT: &str = r#"#!/bin/busybox sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t devtmpfs dev /dev
echo SANDNET-FLOOD-START
dd if=/dev/zero bs=65536 count=48 2>/dev/null | tr '\0' x > /dev/ttyS0
echo
echo SANDNET-FLOOD-END
while true; do sleep 1; done
"#;

/// sandnet's default cap per console file (1 MiB, `DEFAULT_CONSOLE_CAP`).
const CAP: u64 = 1024 * 1024;

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

#[tokio::test]
async fn console_flood_stays_under_the_cap() {
    let kernel = guest_kernel();
    let scratch = TempDir::new("console-flood");
    let init = scratch.path().join("init.sh");
    std::fs::write(&init, FLOOD_INIT).expect("write init");
    let initrd = Initramfs::build_cached(
        &InitramfsSpec::new(&init, &kernel),
        &std::env::temp_dir().join("sandnet-vm-test-initramfs"),
    )
    .expect("initramfs");
    // Not about the accelerator: TCG runs everywhere.
    let mut spec = VmSpec::new(kernel.boot_image(), &initrd, Accel::Tcg);
    spec.hotplug_ports = 0;
    let qemu = Qemu::spawn(spec, None, &scratch.path().join("state"))
        .await
        .expect("spawn");
    let console = qemu.paths().console.clone();
    let old = console.with_file_name("console.log.1");
    let qmp = qemu.qmp().expect("qmp");

    let t0 = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut biggest = 0;
    let done = loop {
        let t = Instant::now();
        qmp.query_status()
            .await
            .expect("query-status during the flood");
        slowest = slowest.max(t.elapsed());
        biggest = biggest.max(file_len(&console) + file_len(&old));
        if std::fs::read_to_string(&console).is_ok_and(|s| s.contains("SANDNET-FLOOD-END")) {
            break true;
        }
        if t0.elapsed() > Duration::from_secs(240) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "flood took {:?}; console.log + .1 peaked at {biggest} bytes; slowest query-status {slowest:?}",
        t0.elapsed()
    );
    assert!(done, "guest never finished its flood; console tail:\n{}", {
        let s = std::fs::read(&console).unwrap_or_default();
        String::from_utf8_lossy(&s[s.len().saturating_sub(300)..]).into_owned()
    });
    let total = file_len(&console) + file_len(&old);
    assert!(
        total <= 2 * CAP && biggest <= 2 * CAP,
        "console used {total} bytes (peak {biggest}), cap {CAP} per file"
    );
    assert!(file_len(&old) > 0, "the flood should have rotated the log");
    assert!(
        slowest < Duration::from_secs(2),
        "QMP answered in {slowest:?} during the flood"
    );
}
