//! The configuration file's values: the defaults, a full file, Kata's own file, unknown
//! keys as warnings and the values that have more than one spelling.

mod common;

use std::path::Path;

use common::{parse, parse_err};
use sandnet_model::InterworkingModel;
use sandnet_runtime::config::{Config, Warning, WarningKind};
use sandnet_vm::AccelMode;

#[test]
fn defaults_are_the_documented_ones() {
    let c = Config::default();
    assert_eq!(c.runtime.internetworking_model, InterworkingModel::TcFilter);
    assert!(!c.runtime.disable_new_netns);
    assert_eq!(c.qemu.path, Path::new("/usr/bin/qemu-system-x86_64"));
    assert_eq!(c.qemu.kernel, None);
    assert_eq!(c.qemu.initrd, None);
    assert_eq!(c.qemu.machine_type, "q35");
    assert_eq!(c.qemu.kernel_params, "");
    assert_eq!(c.qemu.default_vcpus, 1);
    assert_eq!(c.qemu.default_memory, 256);
    assert!(!c.qemu.disable_vhost_net);
    assert_eq!(c.qemu.accel, AccelMode::Auto);
    assert_eq!(c.cni.conf_dir, Path::new("/etc/cni/net.d"));
    assert_eq!(
        c.cni.bin_dirs,
        [Path::new("/opt/cni/bin"), Path::new("/usr/lib/cni")]
    );
    assert_eq!(c.cni.cache_dir, Path::new("/var/lib/cni"));
}

#[test]
fn full_valid_file() {
    let (c, w) = parse(
        r#"
[runtime]
internetworking_model = "macvtap"
disable_new_netns = false

[hypervisor.qemu]
path = "/opt/qemu/bin/qemu-system-x86_64"
kernel = "/srv/vmlinux"
initrd = "/srv/initrd.img"
machine_type = "pc"
kernel_params = " debug "
default_vcpus = 2
default_memory = 512
disable_vhost_net = true
accel = "tcg"

[cni]
conf_dir = "/srv/cni/conf"
bin_dir = ["/srv/cni/bin", "/usr/lib/cni"]
cache_dir = "/srv/cni/cache"
"#,
    )
    .expect("valid file");
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(c.runtime.internetworking_model, InterworkingModel::Macvtap);
    assert!(!c.runtime.disable_new_netns);
    assert_eq!(c.qemu.path, Path::new("/opt/qemu/bin/qemu-system-x86_64"));
    assert_eq!(c.qemu.kernel.as_deref(), Some(Path::new("/srv/vmlinux")));
    assert_eq!(c.qemu.initrd.as_deref(), Some(Path::new("/srv/initrd.img")));
    assert_eq!(c.qemu.machine_type, "pc");
    assert_eq!(c.qemu.kernel_params, "debug");
    assert_eq!(c.qemu.default_vcpus, 2);
    assert_eq!(c.qemu.default_memory, 512);
    assert!(c.qemu.disable_vhost_net);
    assert_eq!(c.qemu.accel, AccelMode::Tcg);
    assert_eq!(c.cni.conf_dir, Path::new("/srv/cni/conf"));
    assert_eq!(
        c.cni.bin_dirs,
        [Path::new("/srv/cni/bin"), Path::new("/usr/lib/cni")]
    );
    assert_eq!(c.cni.cache_dir, Path::new("/srv/cni/cache"));
}

/// `kernel` may name a kernel of the cache instead of a path.
#[test]
fn kernel_may_name_a_kernel_in_the_cache() {
    for name in ["debian-cloud", "sandnet", "6.1.0-57-cloud-amd64"] {
        let (c, w) = parse(&format!("[hypervisor.qemu]\nkernel = \"{name}\"")).expect(name);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.qemu.kernel.as_deref(), Some(Path::new(name)));
    }
    for bad in ["..", "./vmlinux", "a b"] {
        let e = parse_err(&format!("[hypervisor.qemu]\nkernel = \"{bad}\"")).to_string();
        assert!(e.contains("absolute path or a kernel name"), "{bad}: {e}");
    }
}

/// A configuration in the shape Kata ships (configuration-qemu.toml with its usual values),
/// plus a firecracker section and Kata 1.x sections: everything sandnet does not use is a
/// warning, what it uses is taken.
#[test]
fn kata_file_warns_and_keeps_what_sandnet_uses() {
    let (c, w) = parse(
        r#"
[hypervisor.qemu]
path = "/opt/kata/bin/qemu-system-x86_64"
kernel = "/opt/kata/share/kata-containers/vmlinux.container"
image = "/opt/kata/share/kata-containers/kata-containers.img"
machine_type = "q35"
rootfs_type = "ext4"
enable_annotations = ["enable_iommu", "virtio_fs_extra_args", "kernel_params"]
valid_hypervisor_paths = ["/opt/kata/bin/qemu-system-x86_64"]
kernel_params = ""
firmware = ""
firmware_volume = ""
machine_accelerators = ""
cpu_features = "pmu=off"
default_vcpus = 1
default_maxvcpus = 0
default_bridges = 1
default_memory = 2048
default_maxmemory = 0
disable_block_device_use = false
shared_fs = "virtio-fs"
virtio_fs_daemon = "/opt/kata/libexec/virtiofsd"
valid_virtio_fs_daemon_paths = ["/opt/kata/libexec/virtiofsd"]
virtio_fs_cache_size = 0
virtio_fs_queue_size = 1024
virtio_fs_extra_args = ["--thread-pool-size=1", "-o", "announce_submounts"]
virtio_fs_cache = "auto"
block_device_driver = "virtio-scsi"
block_device_aio = "io_uring"
enable_iothreads = false
enable_iommu = true
enable_vhost_user_store = false
vhost_user_store_path = "/var/run/kata-containers/vhost-user"
valid_vhost_user_store_paths = ["/var/run/kata-containers/vhost-user"]
vhost_user_reconnect_timeout_sec = 0
valid_file_mem_backends = [""]
pflashes = []
disable_image_nvdimm = false
disable_vhost_net = true
valid_entropy_sources = ["/dev/urandom", "/dev/random", ""]
disable_selinux = false
disable_guest_selinux = true

[hypervisor.firecracker]
path = "/opt/kata/bin/firecracker"

[factory]

[agent.kata]
kernel_modules = []
dial_timeout = 45

[netmon]
enable_netmon = false

[runtime]
internetworking_model = "tcfilter"
disable_guest_seccomp = true
sandbox_cgroup_only = false
static_sandbox_resource_mgmt = false
sandbox_bind_mounts = []
vfio_mode = "guest-kernel"
disable_guest_empty_dir = false
experimental = []
create_container_timeout = 60
dan_conf = "/run/kata-containers/dans"
"#,
    )
    .expect("a Kata file is accepted");

    assert_eq!(c.qemu.path, Path::new("/opt/kata/bin/qemu-system-x86_64"));
    assert_eq!(
        c.qemu.kernel.as_deref(),
        Some(Path::new(
            "/opt/kata/share/kata-containers/vmlinux.container"
        ))
    );
    assert_eq!(c.qemu.initrd, None);
    assert_eq!(c.qemu.default_memory, 2048);
    assert_eq!(c.qemu.default_vcpus, 1);
    assert!(c.qemu.disable_vhost_net);
    assert_eq!(c.runtime.internetworking_model, InterworkingModel::TcFilter);
    assert_eq!(c.cni, Config::default().cni);
    // Kata 1.x's `[netmon] enable_netmon` is read as `enable`.
    assert!(!c.netmon.enable);

    let keys: Vec<&str> = w.iter().map(|w| w.key.as_str()).collect();
    for expected in [
        "hypervisor.qemu.image",
        "hypervisor.qemu.enable_iommu",
        "hypervisor.qemu.virtio_fs_extra_args",
        "hypervisor.qemu.firmware",
        "hypervisor.firecracker",
        "agent",
        "runtime.disable_guest_seccomp",
        "runtime.vfio_mode",
    ] {
        assert!(
            keys.contains(&expected),
            "no warning for {expected}: {keys:?}"
        );
    }
    // Every warning is about a Kata setting, not an unknown key: Kata's vocabulary is known.
    for warning in &w {
        assert_ne!(
            std::mem::discriminant(&warning.kind),
            std::mem::discriminant(&WarningKind::Unknown { did_you_mean: None }),
            "{warning}"
        );
    }
    let fc = w
        .iter()
        .find(|w| w.key == "hypervisor.firecracker")
        .expect("firecracker warning");
    assert_eq!(fc.kind, WarningKind::OtherHypervisor);
    // No key sandnet uses is reported as ignored.
    for used in [
        "path",
        "kernel",
        "machine_type",
        "kernel_params",
        "default_vcpus",
        "default_memory",
        "disable_vhost_net",
    ] {
        let key = format!("hypervisor.qemu.{used}");
        assert!(!keys.contains(&key.as_str()), "{key} warned about");
    }
}

#[test]
fn unknown_key_is_a_warning_naming_its_path() {
    let (c, w) = parse("[hypervisor.qemu]\nfrobnicate = 3\ndefault_memory = 128\n").unwrap();
    assert_eq!(c.qemu.default_memory, 128);
    assert_eq!(
        w,
        [Warning {
            key: "hypervisor.qemu.frobnicate".into(),
            kind: WarningKind::Unknown { did_you_mean: None },
        }]
    );
    assert_eq!(
        w[0].to_string(),
        "hypervisor.qemu.frobnicate: unknown key, ignored"
    );
}

#[test]
fn bin_dir_as_string_list_and_containerd_name() {
    let (c, _) = parse("[cni]\nbin_dir = \"/usr/lib/cni\"\n").unwrap();
    assert_eq!(c.cni.bin_dirs, [Path::new("/usr/lib/cni")]);

    let (c, _) = parse("[cni]\nbin_dir = [\"/a\", \"/b\", \"/c\"]\n").unwrap();
    assert_eq!(
        c.cni.bin_dirs,
        [Path::new("/a"), Path::new("/b"), Path::new("/c")]
    );

    let (c, w) = parse("[cni]\nbin_dirs = [\"/x\"]\n").unwrap();
    assert!(w.is_empty());
    assert_eq!(c.cni.bin_dirs, [Path::new("/x")]);
}

#[test]
fn accel_modes_and_a_bad_one_named_by_key() {
    for (v, m) in [
        ("auto", AccelMode::Auto),
        ("kvm", AccelMode::Kvm),
        ("tcg", AccelMode::Tcg),
    ] {
        let (c, w) = parse(&format!("[hypervisor.qemu]\naccel = \"{v}\"\n")).unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.qemu.accel, m);
    }
    let e = parse_err("[hypervisor.qemu]\naccel = \"hvf\"\n");
    assert_eq!(e.key(), Some("hypervisor.qemu.accel"));
    let msg = e.to_string();
    assert!(msg.contains("hypervisor.qemu.accel"), "{msg}");
    assert!(
        msg.contains("\"hvf\"") && msg.contains("auto, kvm or tcg"),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "{msg}");
    let e = parse_err("[hypervisor.qemu]\naccel = true\n");
    assert_eq!(e.key(), Some("hypervisor.qemu.accel"));
}
