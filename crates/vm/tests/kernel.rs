//! The guest kernel cache left by scripts/guest-kernel.sh and the image built from it.

mod common;

use common::*;
use sandnet_vm::cpio::{read_archive, EntryKind};
use sandnet_vm::{GuestKernel, Initramfs, InitramfsSpec, MODULE_LIST_PATH};

#[test]
fn modules_load_after_their_dependencies() {
    let k = guest_kernel();
    assert!(k.vmlinuz.is_file());
    assert!(!k.release.is_empty());
    let names: Vec<&str> = k.modules.iter().map(|m| m.name.as_str()).collect();
    eprintln!(
        "release {} boot image {} modules {names:?}",
        k.release,
        k.boot_image().display()
    );
    for must in [
        "virtio",
        "virtio_ring",
        "virtio_pci",
        "failover",
        "net_failover",
        "virtio_net",
        "virtio_console",
    ] {
        assert!(names.contains(&must), "{must} missing from {names:?}");
    }
    for (i, m) in k.modules.iter().enumerate() {
        for d in &m.depends {
            let j = names
                .iter()
                .position(|n| n == d)
                .expect("dependency present");
            assert!(j < i, "{} loads before its dependency {d}", m.name);
        }
    }
    // virtio_net really declares dependencies (parsed from .modinfo, not hard-coded).
    let vnet = k.modules.iter().find(|m| m.name == "virtio_net").unwrap();
    assert!(
        vnet.depends.iter().any(|d| d == "net_failover"),
        "{:?}",
        vnet.depends
    );
}

#[test]
fn locate_reports_a_missing_cache_clearly() {
    let e = GuestKernel::locate(std::path::Path::new("/nonexistent/kernel")).unwrap_err();
    assert!(e.to_string().contains("guest-kernel.sh"), "{e}");
}

#[test]
fn image_lists_modules_in_load_order() {
    let k = guest_kernel();
    let scratch = TempDir::new("kernel-image");
    let init = scratch.path().join("init");
    std::fs::write(&init, "#!/bin/busybox sh\n").unwrap();
    let bytes = Initramfs::build(&InitramfsSpec::new(&init, &k)).unwrap();
    let entries = read_archive(&bytes).unwrap();
    let list = entries.iter().find(|e| e.name == MODULE_LIST_PATH).unwrap();
    let EntryKind::File(data) = &list.kind else {
        panic!("module list is not a file")
    };
    let want: String = k
        .modules
        .iter()
        .map(|m| format!("lib/modules/{}.ko\n", m.name))
        .collect();
    assert_eq!(String::from_utf8_lossy(data), want);
    for m in &k.modules {
        let p = format!("lib/modules/{}.ko", m.name);
        let e = entries
            .iter()
            .find(|e| e.name == p)
            .expect("module in image");
        assert_eq!(e.kind, EntryKind::File(std::fs::read(&m.path).unwrap()));
    }
    assert!(entries.iter().any(|e| e.name == "bin/sh"));
    assert!(entries
        .iter()
        .any(|e| e.name == "usr/bin/ping" || e.name == "bin/ping"));
}
