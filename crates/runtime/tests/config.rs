//! The configuration file: defaults, a full file, Kata's own file, every rejected value, the
//! example file and how the file is found.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use sandnet_model::InterworkingModel;
use sandnet_runtime::config::{Config, ConfigError, Warning, WarningKind};
use sandnet_vm::AccelMode;

fn parse(text: &str) -> Result<(Config, Vec<Warning>), ConfigError> {
    Config::from_toml_str(text, "/etc/sandnet/sandnet.toml")
}

fn parse_err(text: &str) -> ConfigError {
    match parse(text) {
        Ok(c) => panic!("expected an error for {text:?}, got {c:?}"),
        Err(e) => e,
    }
}

/// A fresh directory for one test, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("sandnet-config-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating temp dir");
        TempDir(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("writing test file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../etc/sandnet.toml")
}

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
fn invalid_values_are_rejected_naming_the_key() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "[runtime]\ninternetworking_model = \"bridged\"",
            "runtime.internetworking_model",
            "\"bridged\"",
        ),
        (
            "[runtime]\ninternetworking_model = \"\"",
            "runtime.internetworking_model",
            "expected tcfilter, macvtap or none",
        ),
        (
            "[hypervisor.qemu]\ndefault_memory = 16",
            "hypervisor.qemu.default_memory",
            "must be at least 64 (MiB), got 16",
        ),
        (
            "[hypervisor.qemu]\ndefault_memory = -1",
            "hypervisor.qemu.default_memory",
            "must be at least 64 (MiB), got -1",
        ),
        (
            "[hypervisor.qemu]\ndefault_memory = 99999999999",
            "hypervisor.qemu.default_memory",
            "must be at most",
        ),
        (
            "[hypervisor.qemu]\ndefault_vcpus = 0",
            "hypervisor.qemu.default_vcpus",
            "must be at least 1, got 0",
        ),
        (
            "[hypervisor.qemu]\ndefault_vcpus = -1",
            "hypervisor.qemu.default_vcpus",
            "all host CPUs",
        ),
        (
            "[hypervisor.qemu]\ndefault_vcpus = 256",
            "hypervisor.qemu.default_vcpus",
            "must be at most 255, got 256",
        ),
        (
            "[hypervisor.qemu]\nmachine_type = \"q35,accel=kvm\"",
            "hypervisor.qemu.machine_type",
            "not a machine type name",
        ),
        (
            "[hypervisor.qemu]\npath = \"qemu-system-x86_64\"",
            "hypervisor.qemu.path",
            "must be an absolute path",
        ),
        (
            "[hypervisor.qemu]\nkernel = \"boot/vmlinux\"",
            "hypervisor.qemu.kernel",
            "must be an absolute path or a kernel name",
        ),
        (
            "[hypervisor.qemu]\ninitrd = \"./initrd.img\"",
            "hypervisor.qemu.initrd",
            "must be an absolute path",
        ),
        (
            "[cni]\nconf_dir = \"net.d\"",
            "cni.conf_dir",
            "must be an absolute path",
        ),
        (
            "[cni]\ncache_dir = \"cache\"",
            "cni.cache_dir",
            "must be an absolute path",
        ),
        (
            "[cni]\nbin_dir = []",
            "cni.bin_dir",
            "at least one directory",
        ),
        (
            "[cni]\nbin_dir = [\"/opt/cni/bin\", \"bin\"]",
            "cni.bin_dir[1]",
            "must be an absolute path",
        ),
        ("[cni]\nbin_dir = [\"\"]", "cni.bin_dir[0]", "is empty"),
        (
            "[cni]\nbin_dir = \"/a\"\nbin_dirs = [\"/b\"]",
            "cni.bin_dirs",
            "give only one",
        ),
    ];
    for (text, key, needle) in cases {
        let e = parse_err(text);
        assert!(matches!(e, ConfigError::Invalid { .. }), "{text:?}: {e:?}");
        assert_eq!(e.key(), Some(*key), "{text:?}: {e}");
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!("/etc/sandnet/sandnet.toml: {key}: ")),
            "{msg}"
        );
        assert!(msg.contains(needle), "{text:?}: {msg:?} lacks {needle:?}");
    }
}

#[test]
fn wrong_types_are_rejected_naming_the_key() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "[runtime]\ndisable_new_netns = \"yes\"",
            "runtime.disable_new_netns",
            "expected a boolean, found string",
        ),
        (
            "[runtime]\ninternetworking_model = 1",
            "runtime.internetworking_model",
            "expected a string, found integer",
        ),
        (
            "[hypervisor.qemu]\ndefault_memory = \"2048\"",
            "hypervisor.qemu.default_memory",
            "expected an integer, found string",
        ),
        (
            "[hypervisor.qemu]\ndefault_vcpus = 1.5",
            "hypervisor.qemu.default_vcpus",
            "expected an integer, found float",
        ),
        (
            "[hypervisor.qemu]\ndisable_vhost_net = 1",
            "hypervisor.qemu.disable_vhost_net",
            "expected a boolean, found integer",
        ),
        (
            "[hypervisor.qemu]\npath = [\"/usr/bin/qemu\"]",
            "hypervisor.qemu.path",
            "expected a string, found array",
        ),
        (
            "[hypervisor.qemu]\nkernel = true",
            "hypervisor.qemu.kernel",
            "expected a string",
        ),
        (
            "[hypervisor.qemu]\ninitrd = 0",
            "hypervisor.qemu.initrd",
            "expected a string",
        ),
        (
            "[hypervisor.qemu]\nmachine_type = 35",
            "hypervisor.qemu.machine_type",
            "expected a string",
        ),
        (
            "[hypervisor.qemu]\nkernel_params = [\"quiet\"]",
            "hypervisor.qemu.kernel_params",
            "expected a string",
        ),
        (
            "[cni]\nbin_dir = 5",
            "cni.bin_dir",
            "expected a string or an array of strings, found integer",
        ),
        (
            "[cni]\nbin_dir = [\"/a\", 5]",
            "cni.bin_dir[1]",
            "expected a string, found integer",
        ),
        (
            "[cni]\nconf_dir = false",
            "cni.conf_dir",
            "expected a string",
        ),
        (
            "[cni]\ncache_dir = {}",
            "cni.cache_dir",
            "expected a string, found table",
        ),
        ("runtime = \"tcfilter\"", "runtime", "expected a table"),
        ("hypervisor = 1", "hypervisor", "expected a table"),
        (
            "[hypervisor]\nqemu = 1",
            "hypervisor.qemu",
            "expected a table",
        ),
        ("cni = []", "cni", "expected a table"),
    ];
    for (text, key, needle) in cases {
        let e = parse_err(text);
        assert!(
            matches!(e, ConfigError::WrongType { .. }),
            "{text:?}: {e:?}"
        );
        assert_eq!(e.key(), Some(*key), "{text:?}: {e}");
        let msg = e.to_string();
        assert!(msg.contains(&format!(": {key}: ")), "{msg}");
        assert!(msg.contains(needle), "{text:?}: {msg:?} lacks {needle:?}");
    }
}

#[test]
fn disable_new_netns_needs_model_none() {
    for model in ["tcfilter", "macvtap"] {
        let e = parse_err(&format!(
            "[runtime]\ninternetworking_model = \"{model}\"\ndisable_new_netns = true\n"
        ));
        assert_eq!(e.key(), Some("runtime.disable_new_netns"), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("runtime.internetworking_model"), "{msg}");
        assert!(msg.contains(&format!("{model:?}")), "{msg}");
    }
    // The default model is tcfilter, so leaving the model out is the same conflict.
    let e = parse_err("[runtime]\ndisable_new_netns = true\n");
    assert_eq!(e.key(), Some("runtime.disable_new_netns"));

    // Key order in the file does not matter.
    let (c, w) =
        parse("[runtime]\ndisable_new_netns = true\ninternetworking_model = \"none\"\n").unwrap();
    assert!(w.is_empty());
    assert!(c.runtime.disable_new_netns);
    assert_eq!(c.runtime.internetworking_model, InterworkingModel::None);
}

#[test]
fn syntax_error_names_the_file_and_line() {
    let dir = TempDir::new("syntax");
    let file = dir.write(
        "bad.toml",
        "[runtime]\ninternetworking_model = \"tcfilter\"\n\n[hypervisor.qemu\npath = \"/x\"\n",
    );
    let e =
        Config::load_with(Some(&file), None, Path::new("/nonexistent")).expect_err("syntax error");
    match &e {
        ConfigError::Syntax { origin, line, .. } => {
            assert_eq!(origin, &file.display().to_string());
            assert_eq!(*line, 4);
        }
        other => panic!("{other:?}"),
    }
    let msg = e.to_string();
    assert!(msg.starts_with(&format!("{}:4:", file.display())), "{msg}");
}

#[test]
fn example_file_is_the_defaults_without_warnings() {
    let path = example_path();
    let (c, w) = Config::load_with(Some(&path), None, Path::new("/nonexistent"))
        .expect("example file parses");
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(c, Config::default());
}

/// Every supported key appears in the example file (set, or commented out when its default
/// is "unset").
#[test]
fn example_file_mentions_every_supported_key() {
    let text = std::fs::read_to_string(example_path()).expect("reading example");
    for key in [
        "internetworking_model = ",
        "disable_new_netns = ",
        "path = ",
        "# kernel = ",
        "# initrd = ",
        "machine_type = ",
        "kernel_params = ",
        "default_vcpus = ",
        "default_memory = ",
        "disable_vhost_net = ",
        "accel = ",
        "conf_dir = ",
        "bin_dir = ",
        "cache_dir = ",
    ] {
        assert!(text.contains(key), "example lacks {key:?}");
    }
    // Uncommenting kernel and initrd gives a valid file.
    let uncommented = text
        .replace("# kernel = ", "kernel = ")
        .replace("# initrd = ", "initrd = ");
    let (c, w) = parse(&uncommented).unwrap();
    assert!(w.is_empty());
    assert!(c.qemu.kernel.is_some() && c.qemu.initrd.is_some());
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
fn missing_given_file_is_an_error() {
    let dir = TempDir::new("missing-given");
    let missing = dir.0.join("nope.toml");
    let e = Config::load_with(Some(&missing), None, Path::new("/nonexistent"))
        .expect_err("missing file");
    match &e {
        ConfigError::Read { path, source } => {
            assert_eq!(path, &missing);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("nope.toml"), "{e}");
}

#[test]
fn missing_default_file_gives_defaults() {
    let dir = TempDir::new("missing-default");
    let (c, w) = Config::load_with(None, None, &dir.0.join("sandnet.toml")).unwrap();
    assert_eq!(c, Config::default());
    assert!(w.is_empty());
}

#[test]
fn default_file_is_read_when_present() {
    let dir = TempDir::new("default-present");
    let default = dir.write("sandnet.toml", "[hypervisor.qemu]\ndefault_memory = 300\n");
    let (c, _) = Config::load_with(None, None, &default).unwrap();
    assert_eq!(c.qemu.default_memory, 300);
}

#[test]
fn unreadable_default_path_is_an_error_not_defaults() {
    // A directory where the file should be: reading fails with something other than
    // "not found", which must not be mistaken for "no file".
    let dir = TempDir::new("default-dir");
    let e = Config::load_with(None, None, &dir.0).expect_err("directory");
    assert!(matches!(e, ConfigError::Read { .. }), "{e:?}");
}

#[test]
fn environment_names_the_file_and_a_given_path_wins() {
    let dir = TempDir::new("env");
    let default = dir.write("default.toml", "[hypervisor.qemu]\ndefault_memory = 100\n");
    let from_env = dir.write("env.toml", "[hypervisor.qemu]\ndefault_memory = 200\n");
    let given = dir.write("given.toml", "[hypervisor.qemu]\ndefault_memory = 400\n");
    let env = Some(from_env.as_os_str());

    let (c, _) = Config::load_with(None, env, &default).unwrap();
    assert_eq!(c.qemu.default_memory, 200);

    let (c, _) = Config::load_with(Some(&given), env, &default).unwrap();
    assert_eq!(c.qemu.default_memory, 400);

    // An empty variable counts as unset.
    let (c, _) = Config::load_with(None, Some(OsStr::new("")), &default).unwrap();
    assert_eq!(c.qemu.default_memory, 100);

    // A file named by the environment must exist, like a given one.
    let missing = dir.0.join("missing.toml");
    let e = Config::load_with(None, Some(missing.as_os_str()), &default).expect_err("missing");
    assert!(matches!(e, ConfigError::Read { .. }), "{e:?}");
}

#[test]
fn errors_from_a_file_name_the_file() {
    let dir = TempDir::new("file-origin");
    let file = dir.write("conf.toml", "[hypervisor.qemu]\ndefault_memory = 16\n");
    let e = Config::load_with(Some(&file), None, Path::new("/nonexistent")).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: hypervisor.qemu.default_memory: must be at least 64 (MiB), got 16",
            file.display()
        )
    );
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
