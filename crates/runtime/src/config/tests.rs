//! Unit tests of the configuration parser.

use super::parse::edit_distance;
use super::*;

fn parse(text: &str) -> Result<(Config, Vec<Warning>), ConfigError> {
    Config::from_toml_str(text, "test.toml")
}

fn err(text: &str) -> ConfigError {
    match parse(text) {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e,
    }
}

#[test]
fn empty_text_is_the_defaults() {
    let (c, w) = parse("").unwrap();
    assert_eq!(c, Config::default());
    assert!(w.is_empty());
    assert_eq!(c.runtime.internetworking_model, Model::TcFilter);
    assert!(!c.runtime.disable_new_netns);
    assert_eq!(c.qemu.path, Path::new("/usr/bin/qemu-system-x86_64"));
    assert_eq!(c.qemu.kernel, None);
    assert_eq!(c.qemu.initrd, None);
    assert_eq!(c.qemu.machine_type, "q35");
    assert_eq!(c.qemu.kernel_params, "");
    assert_eq!(c.qemu.default_vcpus, 1);
    assert_eq!(c.qemu.default_memory, 256);
    assert!(!c.qemu.disable_vhost_net);
    assert_eq!(c.cni.conf_dir, Path::new("/etc/cni/net.d"));
    assert_eq!(
        c.cni.bin_dirs,
        vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
    );
    assert_eq!(c.cni.cache_dir, Path::new("/var/lib/cni"));
    assert_eq!(c.cni.timeout, std::time::Duration::from_secs(60));
}

#[test]
fn cni_timeout_in_seconds() {
    let (c, w) = parse("[cni]\ntimeout = 2.5\n").unwrap();
    assert!(w.is_empty());
    assert_eq!(c.cni.timeout, std::time::Duration::from_millis(2500));
    let (c, _) = parse("[cni]\ntimeout = 3\n").unwrap();
    assert_eq!(c.cni.timeout, std::time::Duration::from_secs(3));
    for bad in ["0", "-1", "\"5s\"", "7200"] {
        let e = err(&format!("[cni]\ntimeout = {bad}\n"));
        assert_eq!(e.key(), Some("cni.timeout"), "{bad}: {e}");
    }
}

#[test]
fn syntax_error_names_origin_line_and_column() {
    let e = err("[runtime]\ndisable_new_netns = false\ninternetworking_model = \n");
    match &e {
        ConfigError::Syntax {
            origin,
            line,
            column,
            ..
        } => {
            assert_eq!(origin, "test.toml");
            assert_eq!(*line, 3);
            assert!(*column > 1, "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().starts_with("test.toml:3:"), "{e}");
    assert!(!e.to_string().contains('\n'), "{e}");
}

#[test]
fn default_alias_is_tcfilter() {
    let (c, _) = parse("[runtime]\ninternetworking_model = \"default\"\n").unwrap();
    assert_eq!(c.runtime.internetworking_model, Model::TcFilter);
}

#[test]
fn typo_gets_a_suggestion_and_kata_keys_do_not() {
    let (_, w) = parse(
        "[hypervisor.qemu]\ndefault_memroy = 512\nenable_iommu = true\n\
         [runtme]\nx = 1\n",
    )
    .unwrap();
    assert_eq!(
        w,
        vec![
            Warning {
                key: "hypervisor.qemu.default_memroy".into(),
                kind: WarningKind::Unknown {
                    did_you_mean: Some("default_memory")
                },
            },
            Warning {
                key: "hypervisor.qemu.enable_iommu".into(),
                kind: WarningKind::NotUsed,
            },
            Warning {
                key: "runtme".into(),
                kind: WarningKind::Unknown {
                    did_you_mean: Some("runtime")
                },
            },
        ]
    );
    assert!(w[0].to_string().contains("did you mean \"default_memory\""));
}

#[test]
fn empty_strings_mean_defaults() {
    let (c, w) = parse(
        "[hypervisor.qemu]\npath = \"\"\nkernel = \"\"\ninitrd = \"\"\nmachine_type = \"\"\n\
         [cni]\nconf_dir = \"\"\nbin_dir = \"\"\ncache_dir = \"\"\n",
    )
    .unwrap();
    assert_eq!(c, Config::default());
    assert!(w.is_empty());
}

#[test]
fn edit_distance_basics() {
    assert_eq!(edit_distance("kernel", "kernel"), 0);
    assert_eq!(edit_distance("kernal", "kernel"), 1);
    assert_eq!(edit_distance("", "abc"), 3);
    assert_eq!(edit_distance("default_memroy", "default_memory"), 2);
}

#[test]
fn key_accessor() {
    let e = err("[runtime]\ndisable_new_netns = 1\n");
    assert_eq!(e.key(), Some("runtime.disable_new_netns"));
    assert_eq!(err("[x").key(), None);
}

#[test]
fn hotplug_ports_is_read_and_bounded() {
    assert_eq!(parse("").unwrap().0.qemu.hotplug_ports, 4);
    let (c, w) = parse("[hypervisor.qemu]\nhotplug_ports = 8\n").unwrap();
    assert_eq!(c.qemu.hotplug_ports, 8);
    assert!(w.is_empty());
    let e = err("[hypervisor.qemu]\nhotplug_ports = 33\n").to_string();
    assert!(e.contains("hypervisor.qemu.hotplug_ports"), "{e}");
    assert!(err("[hypervisor.qemu]\nhotplug_ports = -1\n")
        .to_string()
        .contains("0..=32"));
}

#[test]
fn memory_keys_are_read_and_bounded() {
    let (c, _) = parse("").unwrap();
    assert!(c.qemu.reclaim_guest_freed_memory);
    assert_eq!(c.qemu.tcg_tb_size, DEFAULT_TCG_TB_SIZE_MIB);
    let (c, w) =
        parse("[hypervisor.qemu]\nreclaim_guest_freed_memory = false\ntcg_tb_size = 0\n").unwrap();
    assert!(!c.qemu.reclaim_guest_freed_memory);
    assert_eq!(c.qemu.tcg_tb_size, 0);
    assert!(w.is_empty(), "{w:?}");
    let e = err("[hypervisor.qemu]\ntcg_tb_size = -1\n").to_string();
    assert!(e.contains("hypervisor.qemu.tcg_tb_size"), "{e}");
    assert!(err("[hypervisor.qemu]\ntcg_tb_size = 5000\n")
        .to_string()
        .contains("0..=4096"));
    assert!(err("[hypervisor.qemu]\nreclaim_guest_freed_memory = 1\n")
        .to_string()
        .contains("reclaim_guest_freed_memory"));
}

#[test]
fn netmon_and_hotplug_network_are_read_and_katas_netmon_keys_ignored() {
    let (c, w) = parse("").unwrap();
    assert!(c.netmon.enable);
    assert!(!c.runtime.hotplug_network);
    assert!(w.is_empty());
    let (c, w) = parse(
        "[runtime]\nhotplug_network = true\n[netmon]\nenable_netmon = false\npath = \"/usr/libexec/kata-netmon\"\nenable_debug = true\n",
    )
    .unwrap();
    assert!(!c.netmon.enable);
    assert!(c.runtime.hotplug_network);
    let keys: Vec<_> = w.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(keys, vec!["netmon.enable_debug", "netmon.path"], "{w:?}");
    let e = err("[netmon]\nenable = \"yes\"\n");
    assert_eq!(e.key(), Some("netmon.enable"));
    let e = err("[runtime]\nhotplug_network = 1\n");
    assert_eq!(e.key(), Some("runtime.hotplug_network"));
}
