//! The guest kernel cache (sandnet's own kernel from scripts/build-kernel, the default, and
//! Debian's cloud kernel from scripts/guest-kernel.sh) and the images built from them.

mod common;

use common::*;
use sandnet_vm::cpio::{read_archive, EntryKind};
use sandnet_vm::{GuestKernel, Initramfs, InitramfsSpec, MODULE_LIST_PATH, SANDNET_KERNEL};

#[test]
fn modules_load_after_their_dependencies() {
    let k = cloud_kernel();
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
    assert!(e.to_string().contains("build-kernel"), "{e}");
}

#[test]
fn default_kernel_is_sandnets_own_with_everything_built_in() {
    let k = guest_kernel();
    assert!(k.release.ends_with("-sandnet"), "release {}", k.release);
    assert!(k.modules.is_empty(), "{:?}", k.modules);
    let image = k.boot_image();
    assert!(
        std::fs::read(image).unwrap().starts_with(b"\x7fELF"),
        "{} is not the ELF vmlinux (PVH boot)",
        image.display()
    );
    // The name `sandnet` is the same kernel as `current`.
    let named = GuestKernel::named(SANDNET_KERNEL).unwrap();
    assert_eq!(
        named.boot_image().canonicalize().unwrap(),
        k.boot_image().canonicalize().unwrap()
    );
    // Every option the fragment asks for is in the built config, and modules are off.
    let dir = k.vmlinuz.parent().unwrap();
    let config = std::fs::read_to_string(dir.join("config")).unwrap();
    for must in [
        "CONFIG_VIRTIO_NET=y",
        "CONFIG_VIRTIO_CONSOLE=y",
        "CONFIG_HOTPLUG_PCI_PCIE=y",
        "CONFIG_PVH=y",
        "CONFIG_HW_RANDOM_VIRTIO=y",
        "CONFIG_VIRTIO_VSOCKETS=y",
        "CONFIG_OVERLAY_FS=y",
        "CONFIG_VIRTIO_FS=y",
    ] {
        assert!(config.lines().any(|l| l == must), "{must} missing");
    }
    assert!(config.contains("# CONFIG_MODULES is not set"));
    // The image sandnet builds for it carries no modules and an empty load list.
    let scratch = TempDir::new("kernel-builtin");
    let init = scratch.path().join("init");
    std::fs::write(&init, "#!/bin/busybox sh\n").unwrap();
    let bytes = Initramfs::build(&InitramfsSpec::new(&init, &k)).unwrap();
    let entries = read_archive(&bytes).unwrap();
    assert!(!entries.iter().any(|e| e.name.ends_with(".ko")));
    let list = entries.iter().find(|e| e.name == MODULE_LIST_PATH).unwrap();
    assert_eq!(list.kind, EntryKind::File(Vec::new()));
}

#[test]
fn image_lists_modules_in_load_order() {
    let k = cloud_kernel();
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
