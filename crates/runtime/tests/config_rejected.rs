//! Every rejected configuration value, wrong type, conflict and syntax error, each named by
//! its key (and file and line).

mod common;

use std::path::Path;

use common::{parse, parse_err, TempDir};
use sandnet_model::InterworkingModel;
use sandnet_runtime::config::{Config, ConfigError};

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
