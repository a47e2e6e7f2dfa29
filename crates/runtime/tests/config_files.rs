//! The configuration's files: the example file, and how the file is found (given path,
//! environment, default path) and read.

mod common;

use std::ffi::OsStr;
use std::path::Path;

use common::{example_path, parse, TempDir};
use sandnet_runtime::config::{Config, ConfigError};

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
