//! Unit tests of result parsing and conversion, per spec version.

use super::*;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}
fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

/// What Debian's bridge plugin prints for the seed's 0.2.0 config.
const SEED_020: &str = r#"{
    "cniVersion": "0.2.0",
    "ip4": {"ip": "172.19.0.2/24", "gateway": "172.19.0.1", "routes": [{"dst": "0.0.0.0/0"}]},
    "dns": {}
}"#;

#[test]
fn v020_seed_result() {
    let r = CniResult::parse(SEED_020.as_bytes(), "0.2.0").unwrap();
    assert_eq!(r.cni_version, "0.2.0");
    assert!(r.interfaces.is_empty());
    assert_eq!(
        r.ips,
        vec![ResultIp {
            address: net("172.19.0.2/24"),
            gateway: ip("172.19.0.1"),
            interface: None
        }]
    );
    assert_eq!(r.routes.len(), 1);
    assert_eq!(r.routes[0].dst, net("0.0.0.0/0"));
    assert_eq!(r.routes[0].gw, None);
    assert!(r.dns.is_empty());
    // Host bits are kept in the address.
    assert_eq!(r.ips[0].address.addr().to_string(), "172.19.0.2");
    // Up-conversion as libcni: 0.4.0 gets "version", 1.0.0 does not.
    assert_eq!(
        r.to_value("0.4.0").unwrap(),
        serde_json::json!({"cniVersion": "0.4.0",
            "ips": [{"version": "4", "address": "172.19.0.2/24", "gateway": "172.19.0.1"}],
            "routes": [{"dst": "0.0.0.0/0"}]})
    );
    assert_eq!(
        r.to_value("1.0.0").unwrap(),
        serde_json::json!({"cniVersion": "1.0.0",
            "ips": [{"address": "172.19.0.2/24", "gateway": "172.19.0.1"}],
            "routes": [{"dst": "0.0.0.0/0"}]})
    );
    // And back to 0.2.0 unchanged (the empty dns is dropped).
    assert_eq!(
        r.to_value("0.2.0").unwrap(),
        serde_json::json!({"cniVersion": "0.2.0",
            "ip4": {"ip": "172.19.0.2/24", "gateway": "172.19.0.1", "routes": [{"dst": "0.0.0.0/0"}]}})
    );
}

#[test]
fn v010_and_missing_version() {
    let r = CniResult::parse(
        br#"{"ip4": {"ip": "10.0.0.2/8"}, "ip6": {"ip": "fd00::2/64", "gateway": "fd00::1"}}"#,
        "",
    )
    .unwrap();
    assert_eq!(r.cni_version, "0.1.0");
    assert_eq!(r.ips.len(), 2);
    assert_eq!(r.ips[1].gateway, ip("fd00::1"));
    // Without cniVersion the configuration's version applies (libcni's fixup).
    let r = CniResult::parse(br#"{"ips": [{"address": "10.0.0.2/8"}]}"#, "1.0.0").unwrap();
    assert_eq!(r.cni_version, "1.0.0");
    assert_eq!(r.ips[0].address, net("10.0.0.2/8"));
    // `null` counts as an empty result.
    let r = CniResult::parse(b"null", "1.0.0").unwrap();
    assert_eq!(
        r,
        CniResult {
            cni_version: "1.0.0".into(),
            ..Default::default()
        }
    );
}

#[test]
fn v031_and_v040_results() {
    for v in ["0.3.0", "0.3.1", "0.4.0"] {
        let text = format!(
            r#"{{"cniVersion": "{v}",
            "interfaces": [{{"name": "cni0", "mac": "0a:58:ac:13:00:01"}},
                           {{"name": "veth1", "mac": "0a:58:ac:13:00:02"}},
                           {{"name": "eth0", "mac": "0a:58:ac:13:00:03", "sandbox": "/run/netns/p"}}],
            "ips": [{{"version": "4", "interface": 2, "address": "172.19.0.3/24", "gateway": "172.19.0.1"}},
                    {{"version": "6", "interface": 2, "address": "fd00::3/64"}}],
            "routes": [{{"dst": "0.0.0.0/0", "gw": "172.19.0.1"}}, {{"dst": "::/0"}}],
            "dns": {{"nameservers": ["1.1.1.1"], "domain": "example", "search": ["a", "b"], "options": ["ndots:2"]}}}}"#
        );
        let r = CniResult::parse(text.as_bytes(), "1.0.0").unwrap();
        assert_eq!(r.cni_version, v);
        assert_eq!(r.interfaces.len(), 3);
        assert_eq!(r.interfaces[2].sandbox.as_deref(), Some("/run/netns/p"));
        assert_eq!(r.interfaces[0].sandbox, None);
        assert_eq!(r.ips[0].interface, Some(2));
        assert_eq!(r.ips[1].address, net("fd00::3/64"));
        assert_eq!(r.routes[0].gw, ip("172.19.0.1"));
        assert_eq!(r.dns.nameservers, vec!["1.1.1.1"]);
        assert_eq!(r.dns.domain.as_deref(), Some("example"));
        assert_eq!(r.dns.search, vec!["a", "b"]);
        let in_pod = r.sandbox_interfaces("/run/netns/p");
        assert_eq!(in_pod.len(), 1);
        assert_eq!(in_pod[0].0, 2);
        // Round trip through its own version.
        let again = CniResult::from_value(r.to_json().unwrap(), "").unwrap();
        assert_eq!(again, r);
        // Down to 0.2.0: first address of each family, routes by family, dst/gw only.
        let old = r.to_value("0.2.0").unwrap();
        assert_eq!(old["ip4"]["ip"], "172.19.0.3/24");
        assert_eq!(
            old["ip4"]["routes"],
            serde_json::json!([{"dst": "0.0.0.0/0", "gw": "172.19.0.1"}])
        );
        assert_eq!(old["ip6"]["ip"], "fd00::3/64");
        assert_eq!(old["ip6"]["routes"], serde_json::json!([{"dst": "::/0"}]));
        assert_eq!(old["dns"]["nameservers"], serde_json::json!(["1.1.1.1"]));
        assert!(old.get("interfaces").is_none());
    }
}

#[test]
fn v100_and_v110_results() {
    for v in ["1.0.0", "1.1.0"] {
        let text = format!(
            r#"{{"cniVersion": "{v}",
            "interfaces": [{{"name": "eth0", "mac": "aa:bb:cc:dd:ee:ff", "mtu": 1450, "sandbox": "/run/netns/x",
                             "socketPath": "/run/sock", "pciID": "0000:00:01.0"}}],
            "ips": [{{"interface": 0, "address": "10.1.0.5/16", "gateway": "10.1.0.1"}}],
            "routes": [{{"dst": "10.2.0.0/16", "gw": "10.1.0.254", "mtu": 1400, "advmss": 1360,
                         "priority": 10, "table": 100, "scope": 0}}]}}"#
        );
        let r = CniResult::parse(text.as_bytes(), "0.4.0").unwrap();
        assert_eq!(r.cni_version, v);
        let i = &r.interfaces[0];
        assert_eq!(i.mtu, Some(1450));
        assert_eq!(i.socket_path.as_deref(), Some("/run/sock"));
        assert_eq!(i.pci_id.as_deref(), Some("0000:00:01.0"));
        assert_eq!(
            r.routes[0],
            ResultRoute {
                dst: net("10.2.0.0/16"),
                gw: ip("10.1.0.254"),
                mtu: Some(1400),
                advmss: Some(1360),
                priority: Some(10),
                table: Some(100),
                scope: Some(0)
            }
        );
        assert_eq!(CniResult::from_value(r.to_json().unwrap(), "").unwrap(), r);
        // 1.x → 0.4.0: "version" appears, interface mtu/socketPath/pciID do not.
        let v04 = r.to_value("0.4.0").unwrap();
        assert_eq!(v04["ips"][0]["version"], "4");
        assert_eq!(
            v04["interfaces"][0],
            serde_json::json!({"name": "eth0", "mac": "aa:bb:cc:dd:ee:ff", "sandbox": "/run/netns/x"})
        );
        assert_eq!(v04["routes"][0]["table"], 100);
        let back = CniResult::from_value(v04, "").unwrap();
        assert_eq!(back.ips, r.ips);
        assert_eq!(back.interfaces[0].mtu, None);
    }
}

#[test]
fn conversion_to_020_needs_an_address() {
    let r = CniResult {
        cni_version: "1.0.0".into(),
        ..Default::default()
    };
    let e = r.to_value("0.2.0").unwrap_err().to_string();
    assert!(e.contains("no IP addresses"), "{e}");
    assert!(r.to_value("0.5.0").is_err());
    assert!(r.to_value("1.0.0").is_ok());
}

#[test]
fn invalid_results_are_rejected_clearly() {
    let cases: &[(&str, &str)] = &[
        (r#"{"cniVersion": "0.5.0"}"#, "unsupported result version"),
        (r#"{"cniVersion": 1}"#, "not a string"),
        (r#"[1, 2]"#, "expected a JSON object"),
        (
            r#"{"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.300/8"}]}"#,
            "not an address in CIDR",
        ),
        (
            r#"{"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.3"}]}"#,
            "not an address in CIDR",
        ),
        (
            r#"{"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.3/8", "gateway": "x"}]}"#,
            "not an IP address",
        ),
        (
            r#"{"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.3/8", "interface": 0}]}"#,
            "refers to interface 0",
        ),
        (
            r#"{"cniVersion": "0.2.0", "ip4": {"gateway": "10.0.0.1"}}"#,
            "missing field `ip`",
        ),
        (
            r#"{"cniVersion": "1.0.0", "routes": [{"gw": "10.0.0.1"}]}"#,
            "missing field `dst`",
        ),
        ("not json", "not JSON"),
    ];
    for (text, want) in cases {
        let e = CniResult::parse(text.as_bytes(), "1.0.0")
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{text}: {e}");
    }
    // An empty gateway is accepted as "none", as Go's net.IP does.
    let r = CniResult::parse(
        br#"{"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.3/8", "gateway": ""}]}"#,
        "",
    )
    .unwrap();
    assert_eq!(r.ips[0].gateway, None);
}
