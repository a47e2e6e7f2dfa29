//! Loading network configurations (no root needed).

use sandnet_cni::{CniError, NetworkConfigList};
use serde_json::json;
use std::path::Path;

const SEED_CONF: &str = r#"{"cniVersion":"0.2.0","name":"mynet","type":"bridge","bridge":"cni0","isGateway":true,"ipMasq":true,"ipam":{"type":"host-local","subnet":"172.19.0.0/24","routes":[{"dst":"0.0.0.0/0"}]}}"#;

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn seed_conf_becomes_a_one_plugin_list() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "10-mynet.conf", SEED_CONF);
    let list = NetworkConfigList::load_dir(d.path()).unwrap();
    assert_eq!(list.name, "mynet");
    assert_eq!(list.cni_version, "0.2.0");
    assert!(!list.disable_check && !list.disable_gc);
    assert_eq!(list.plugins.len(), 1);
    let p = &list.plugins[0];
    assert_eq!(p.plugin_type, "bridge");
    // Every field is kept as written.
    let orig: serde_json::Value = serde_json::from_str(SEED_CONF).unwrap();
    assert_eq!(serde_json::Value::Object(p.raw.clone()), orig);
    // The cached "config" is libcni's upconverted list.
    let bytes: serde_json::Value = serde_json::from_slice(&list.bytes).unwrap();
    assert_eq!(
        bytes,
        json!({"name": "mynet", "cniVersion": "0.2.0", "plugins": [orig]})
    );
    assert_eq!(
        list.source.as_deref(),
        Some(d.path().join("10-mynet.conf").as_path())
    );
}

#[test]
fn conflist_keeps_unknown_fields_and_flags() {
    let text = r#"{"cniVersion":"1.0.0","name":"dbnet","disableCheck":"true","disableGC":true,
        "plugins":[{"type":"bridge","keyA":["x",{"deep":1.5}],"big":18446744073709551615,"ipam":{"type":"host-local"}},
                   {"type":"portmap","capabilities":{"portMappings":true,"bandwidth":false}}]}"#;
    let list = NetworkConfigList::from_bytes(text.as_bytes()).unwrap();
    assert!(list.disable_check && list.disable_gc);
    assert_eq!(list.plugins[0].raw["keyA"], json!(["x", {"deep": 1.5}]));
    assert_eq!(list.plugins[0].raw["big"], json!(18446744073709551615u64));
    assert!(list.plugins[1].has_capability("portMappings"));
    assert!(!list.plugins[1].has_capability("bandwidth"));
    assert!(!list.plugins[1].has_capability("mac"));
    assert_eq!(list.bytes, text.as_bytes());
}

#[test]
fn highest_supported_version_is_selected() {
    let pick = |v: serde_json::Value| {
        let mut doc = json!({"name": "n", "plugins": [{"type": "bridge"}]});
        for (k, x) in v.as_object().unwrap() {
            doc[k] = x.clone();
        }
        NetworkConfigList::from_bytes(doc.to_string().as_bytes()).map(|l| l.cni_version)
    };
    assert_eq!(
        pick(json!({"cniVersion": "0.4.0", "cniVersions": ["0.3.1", "1.0.0", "1.1.0", "2.0.0"]}))
            .unwrap(),
        "1.1.0"
    );
    assert_eq!(
        pick(json!({"cniVersion": "1.1.0", "cniVersions": ["0.3.1", "1.0.0"]})).unwrap(),
        "1.1.0"
    );
    assert_eq!(
        pick(json!({"cniVersion": "3.0.0", "cniVersions": ["0.3.1", "1.0.0"]})).unwrap(),
        "1.0.0"
    );
    assert_eq!(
        pick(json!({"cniVersions": ["0.4.0", "0.3.1"]})).unwrap(),
        "0.4.0"
    );
    assert_eq!(pick(json!({})).unwrap(), "0.1.0");
    let e = pick(json!({"cniVersions": ["9.0.0"]}))
        .unwrap_err()
        .to_string();
    assert!(e.contains("none of cniVersions is supported"), "{e}");
    let e = pick(json!({"cniVersion": "2.0.0"}))
        .unwrap_err()
        .to_string();
    assert!(e.contains("newer than the 1.1.0"), "{e}");
    let e = pick(json!({"cniVersion": "1.0"})).unwrap_err().to_string();
    assert!(e.contains("not a version"), "{e}");
    let e = pick(json!({"cniVersion": "0.5.0"}))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a released CNI spec version"), "{e}");
}

#[test]
fn invalid_configs_name_the_file_and_the_problem() {
    let d = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str, &str)] = &[
        ("a.conflist", "{not json", "not valid JSON"),
        (
            "b.conflist",
            r#"{"plugins":[{"type":"bridge"}]}"#,
            "no \"name\"",
        ),
        (
            "c.conflist",
            r#"{"name":"-bad","plugins":[{"type":"bridge"}]}"#,
            "must start with a letter or digit",
        ),
        (
            "d.conflist",
            r#"{"name":"n","plugins":{}}"#,
            "plugins must be an array",
        ),
        (
            "e.conflist",
            r#"{"name":"n","plugins":[]}"#,
            "\"plugins\" is empty",
        ),
        (
            "f.conflist",
            r#"{"name":"n","plugins":[{"type":"bridge"},{"ipam":{}}]}"#,
            "plugins[1] has no \"type\"",
        ),
        (
            "g.conflist",
            r#"{"name":"n","plugins":[{"type":"../bin/sh"}]}"#,
            "is not a binary name",
        ),
        (
            "h.conflist",
            r#"{"name":"n","plugins":[{"type":"portmap","capabilities":{"portMappings":"yes"}}]}"#,
            "capabilities.portMappings must be a boolean",
        ),
        (
            "i.conflist",
            r#"{"name":"n","disableCheck":"maybe","plugins":[{"type":"x"}]}"#,
            "disableCheck must be true or false",
        ),
        ("j.conflist", SEED_CONF, "looks like a single-plugin config"),
        (
            "k.conf",
            r#"{"name":"n","cniVersion":"1.0.0","plugins":[{"type":"x"}]}"#,
            "looks like a configuration list",
        ),
        (
            "l.conf",
            r#"{"name":"n","cniVersion":"1.0.0"}"#,
            "has no \"type\"",
        ),
        ("m.json", r#"[1]"#, "expected a JSON object"),
    ];
    for (file, text, want) in cases {
        write(d.path(), file, text);
        let e = NetworkConfigList::from_file(&d.path().join(file)).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, CniError::InvalidConfig { .. }), "{file}: {e:?}");
        assert!(msg.contains(file), "{file}: {msg}");
        assert!(msg.contains(want), "{file}: {msg}");
    }
    // With only invalid files, load_dir says so, naming each one.
    let e = NetworkConfigList::load_dir(d.path()).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, CniError::NoConfig { ref skipped, .. } if skipped.len() == cases.len()),
        "{msg}"
    );
    assert!(
        msg.contains("f.conflist") && msg.contains("plugins[1] has no \"type\""),
        "{msg}"
    );
}

#[test]
fn lexical_order_first_valid_wins_and_names_select() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "05-broken.conflist",
        r#"{"name":"broken","plugins":[{}]}"#,
    );
    write(d.path(), "10-mynet.conf", SEED_CONF);
    write(
        d.path(),
        "20-other.conflist",
        r#"{"cniVersion":"1.0.0","name":"other","plugins":[{"type":"ptp"}]}"#,
    );
    write(
        d.path(),
        "30-third.json",
        r#"{"cniVersion":"0.4.0","name":"third","type":"macvlan"}"#,
    );
    write(d.path(), "README.md", "not a config");
    std::fs::create_dir(d.path().join("99-dir.conflist")).unwrap();
    assert_eq!(NetworkConfigList::load_dir(d.path()).unwrap().name, "mynet");
    assert_eq!(
        NetworkConfigList::load_dir_named(d.path(), "other")
            .unwrap()
            .plugins[0]
            .plugin_type,
        "ptp"
    );
    assert_eq!(
        NetworkConfigList::load_dir_named(d.path(), "third")
            .unwrap()
            .cni_version,
        "0.4.0"
    );
    let e = NetworkConfigList::load_dir_named(d.path(), "nope")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no CNI network named \"nope\"") && e.contains("05-broken.conflist"),
        "{e}"
    );
    let scan = NetworkConfigList::scan_dir(d.path()).unwrap();
    let names: Vec<_> = scan
        .iter()
        .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "05-broken.conflist",
            "10-mynet.conf",
            "20-other.conflist",
            "30-third.json"
        ]
    );
    assert!(scan[0].network.is_err());
    // A missing directory has no networks.
    let e = NetworkConfigList::load_dir(&d.path().join("missing")).unwrap_err();
    assert!(matches!(e, CniError::NoConfig { .. }), "{e}");
}

/// Found by the `cni_conf` fuzz target: a legacy `.conf` whose number serde_json's fast
/// float parser rounded wrongly came back different from the list bytes kept for the cache
/// (and handed to the plugin). Parsing is now correctly rounded, so it survives the trip.
#[test]
fn fuzz_regression_float_survives_conf_to_list() {
    let input: &[u8] = b"{\"cniVersion\": \"0.3.0\", \"name\": \"mv\", \"type\": \"macvlan\", \"master\": \"eth0\", \"mode\":2222222222222022222222.2222222222222222222222222222222222222, \"ipam\": {\"type\": \"dhcp\"}}";
    let list = NetworkConfigList::from_plugin_bytes(input).unwrap();
    let again = NetworkConfigList::from_bytes(&list.bytes).unwrap();
    assert_eq!(again.plugins, list.plugins);
}

/// Found by the `cni_conf` fuzz target: a legacy `.conf` with `cniVersions` but no
/// `cniVersion` ran as 1.1.0, but its generated list (kept in the cache for DEL) had an
/// empty `cniVersion` and loaded again as 0.1.0.
#[test]
fn fuzz_regression_conf_with_only_cni_versions_keeps_its_version() {
    let input: &[u8] = br#"{"cniVersions": ["1.1.0"], "name": "m.", "type": "ptp", "ipam": {"type": "host-local", "subnet": "66.1.1.0/24"}}"#;
    let list = NetworkConfigList::from_plugin_bytes(input).unwrap();
    assert_eq!(list.cni_version, "1.1.0");
    let again = NetworkConfigList::from_bytes(&list.bytes).unwrap();
    assert_eq!(again.cni_version, "1.1.0");
    assert_eq!(again.plugins, list.plugins);
}
