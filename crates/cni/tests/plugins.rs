//! The executor against Debian's real CNI plugins (/usr/lib/cni), as root. Each test runs
//! the plugins inside its own "host" netns (cni0, veth host ends and iptables rules land
//! there) and attaches a "pod" netns; every effect is checked with `ip -j` / `iptables`.

mod common;

use common::{Env, Netns};
use sandnet_cni::{CheckOutcome, CniConfig, CniError, GcAttachment, NetworkConfigList, Runtime};
use serde_json::{json, Value};

/// The seed's `10-mynet.conf`, with host-local's reservations in the test's dir.
fn seed_conf(env: &Env) -> String {
    json!({"cniVersion":"0.2.0","name":"mynet","type":"bridge","bridge":"cni0","isGateway":true,
           "ipMasq":true,"ipam":{"type":"host-local","subnet":"172.19.0.0/24",
           "routes":[{"dst":"0.0.0.0/0"}],"dataDir": env.ipam_dir()}})
    .to_string()
}

fn bridge_conflist(env: &Env, name: &str, extra: &[Value]) -> String {
    let mut plugins = vec![
        json!({"type":"bridge","bridge":"cni0","isGateway":true,"ipMasq":true,
        "ipam":{"type":"host-local","subnet":"10.88.0.0/24","routes":[{"dst":"0.0.0.0/0"}],
                "dataDir": env.ipam_dir()}}),
    ];
    plugins.extend_from_slice(extra);
    json!({"cniVersion":"1.0.0","name":name,"plugins":plugins}).to_string()
}

fn cache_json(env: &Env, file: &str) -> Value {
    let p = env.cache_dir().join("results").join(file);
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// The NAT rules mentioning a container ID.
fn nat_rules_for(ns: &Netns, cid: &str) -> Vec<String> {
    ns.nat_rules()
        .lines()
        .filter(|l| l.contains(cid))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn bridge_seed_conf_0_2_0_add_check_del() {
    let env = Env::new("seed");
    let list = env.load("10-mynet.conf", &seed_conf(&env));
    assert_eq!(list.cni_version, "0.2.0");
    let cni = env.cni();
    let rt = env.rt("seedc1");

    let r = cni.add(&list, &rt).await.unwrap();
    assert_eq!(r.cni_version, "0.2.0");
    assert_eq!(r.ips.len(), 1);
    let addr = r.ips[0].address;
    assert!(addr.to_string().starts_with("172.19.0."), "{addr}");
    assert_eq!(addr.prefix_len(), 24);
    assert_eq!(r.ips[0].gateway.unwrap().to_string(), "172.19.0.1");
    assert_eq!(r.routes[0].dst.to_string(), "0.0.0.0/0");

    // Real effects: eth0 in the pod with the address, cni0 in the *host* netns (the
    // plugin ran there), host-local's reservation, the masquerade rule.
    assert_eq!(env.pod.addrs("eth0"), vec![addr.to_string()]);
    assert_eq!(env.host.addrs("cni0"), vec!["172.19.0.1/24".to_string()]);
    assert_eq!(env.reservations("mynet"), vec![addr.addr().to_string()]);
    let held = std::fs::read_to_string(env.ipam_dir().join("mynet").join(addr.addr().to_string()))
        .unwrap();
    assert!(held.starts_with("seedc1"), "{held:?}");
    assert!(
        !nat_rules_for(&env.host, "seedc1").is_empty(),
        "{}",
        env.host.nat_rules()
    );

    // The cache, in libcni's layout.
    assert_eq!(env.cache_entries(), vec!["mynet-seedc1-eth0".to_string()]);
    let c = cache_json(&env, "mynet-seedc1-eth0");
    assert_eq!(c["kind"], "cniCacheV1");
    assert_eq!(c["containerId"], "seedc1");
    assert_eq!(c["ifName"], "eth0");
    assert_eq!(c["networkName"], "mynet");
    assert_eq!(c["netns"], env.pod.path().to_string_lossy().as_ref());
    assert_eq!(c["result"]["ip4"]["ip"], addr.to_string());
    assert_eq!(c["result"]["cniVersion"], "0.2.0");
    assert!(c["config"].is_string());

    // 0.2.0 has no CHECK.
    assert_eq!(
        cni.check(&list, &rt).await.unwrap(),
        CheckOutcome::Unsupported("0.2.0".into())
    );

    cni.del(&list, &rt).await.unwrap();
    assert!(!env.pod.has_link("eth0"));
    assert!(env.reservations("mynet").is_empty());
    assert!(
        nat_rules_for(&env.host, "seedc1").is_empty(),
        "{}",
        env.host.nat_rules()
    );
    assert!(env.cache_entries().is_empty());
    // DEL is idempotent.
    cni.del(&list, &rt).await.unwrap();
}

#[tokio::test]
async fn bridge_conflist_1_0_0_check_and_del_after_restart() {
    let env = Env::new("restart");
    let list = env.load("10-net.conflist", &bridge_conflist(&env, "podnet", &[]));
    // Debian's plugins reject CNI_ARGS they do not know unless IgnoreUnknown=1 comes
    // with them (what kubelet/containerd send).
    let strict = env.rt("restartc0").with_arg("K8S_POD_NAME", "p0");
    let e = env.cni().add(&list, &strict).await.unwrap_err().to_string();
    assert!(e.contains("unknown args"), "{e}");
    env.cni().del(&list, &strict).await.unwrap_err();
    let strict = strict.with_arg("IgnoreUnknown", "1");
    env.cni().del(&list, &strict).await.unwrap();
    assert!(env.cache_entries().is_empty());
    let rt = env
        .rt("restartc1")
        .with_arg("IgnoreUnknown", "1")
        .with_arg("K8S_POD_NAME", "p1");
    let r = {
        let cni = env.cni();
        let r = cni.add(&list, &rt).await.unwrap();
        assert_eq!(cni.check(&list, &rt).await.unwrap(), CheckOutcome::Checked);
        r
    };
    assert_eq!(r.cni_version, "1.0.0");
    // bridge reports cni0, the host veth and the pod's eth0 (with the sandbox path).
    let pod_ifs = r.sandbox_interfaces(&env.pod.path().to_string_lossy());
    assert_eq!(pod_ifs.len(), 1);
    let (idx, eth0) = pod_ifs[0];
    assert_eq!(eth0.name, "eth0");
    assert_eq!(r.ips[0].interface, Some(idx));
    let mac = env.pod.link("eth0")["address"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(eth0.mac.as_deref(), Some(mac.as_str()));

    // "Restart": a new executor finds the cached result and can CHECK and DEL with only
    // the container ID and interface name.
    let cni = env.cni();
    assert_eq!(cni.cached_result(&list, &rt).unwrap().as_ref(), Some(&r));
    let atts = cni.cached_attachments(Some("restartc1")).unwrap();
    assert_eq!(atts.len(), 1);
    assert_eq!(atts[0].args, rt.args);
    assert_eq!(atts[0].netns_path, env.pod.path());
    assert_eq!(atts[0].config, list.bytes);
    assert_eq!(cni.check(&list, &rt).await.unwrap(), CheckOutcome::Checked);

    // CHECK notices a broken attachment (the address removed behind its back).
    let a = r.ips[0].address.to_string();
    env.pod.ip(&["addr", "del", &a, "dev", "eth0"]);
    let e = cni.check(&list, &rt).await.unwrap_err();
    assert!(
        matches!(e, CniError::Plugin { ref plugin, .. } if plugin == "bridge"),
        "{e}"
    );

    let bare = Runtime::new("restartc1", "", "eth0");
    cni.del(&list, &bare).await.unwrap();
    assert!(!env.pod.has_link("eth0"));
    assert!(env.reservations("podnet").is_empty());
    assert!(env.cache_entries().is_empty());
    cni.del(&list, &bare).await.unwrap();
    // CHECK after DEL: nothing to check.
    let e = cni.check(&list, &rt).await.unwrap_err();
    assert!(matches!(e, CniError::NotAdded { .. }), "{e}");
}

#[tokio::test]
async fn ptp_add_check_del() {
    let env = Env::new("ptp");
    let conf = json!({"cniVersion":"1.0.0","name":"ptpnet","plugins":[{"type":"ptp","ipMasq":true,
        "ipam":{"type":"host-local","subnet":"10.99.0.0/24","routes":[{"dst":"0.0.0.0/0"}],
                "dataDir": env.ipam_dir()}}]});
    let list = env.load("10-ptp.conflist", &conf.to_string());
    let cni = env.cni();
    let rt = env.rt("ptpc1");
    let r = cni.add(&list, &rt).await.unwrap();
    let addr = r.ips[0].address;
    assert_eq!(env.pod.addrs("eth0"), vec![addr.to_string()]);
    // The host end is a veth in the host netns, named in the result.
    let host_if = r.interfaces.iter().find(|i| i.sandbox.is_none()).unwrap();
    assert_eq!(
        env.host.link(&host_if.name)["linkinfo"]["info_kind"],
        "veth"
    );
    assert_eq!(env.reservations("ptpnet"), vec![addr.addr().to_string()]);
    assert_eq!(cni.check(&list, &rt).await.unwrap(), CheckOutcome::Checked);
    cni.del(&list, &rt).await.unwrap();
    assert!(!env.pod.has_link("eth0"));
    assert!(!env.host.has_link(&host_if.name));
    assert!(env.reservations("ptpnet").is_empty());
    assert!(nat_rules_for(&env.host, "ptpc1").is_empty());
    cni.del(&list, &rt).await.unwrap();
}

#[tokio::test]
async fn macvlan_on_a_dummy_master_in_the_host_netns() {
    let env = Env::new("macvlan");
    // (This kernel has no dummy driver; one end of a veth pair does as well.)
    env.host.ip(&[
        "link", "add", "master0", "type", "veth", "peer", "name", "master0p",
    ]);
    env.host.ip(&["link", "set", "master0", "up"]);
    let conf = json!({"cniVersion":"0.4.0","name":"mvnet","type":"macvlan","master":"master0",
        "mode":"bridge","ipam":{"type":"host-local","subnet":"192.168.77.0/24",
        "dataDir": env.ipam_dir()}});
    let list = env.load("10-macvlan.conf", &conf.to_string());
    assert_eq!(list.cni_version, "0.4.0");
    let cni = env.cni();
    let rt = env.rt("mvc1");
    let r = cni.add(&list, &rt).await.unwrap();
    assert_eq!(r.cni_version, "0.4.0");
    let link = env.pod.link("eth0");
    assert_eq!(link["linkinfo"]["info_kind"], "macvlan");
    assert_eq!(link["linkinfo"]["info_data"]["mode"], "bridge");
    assert_eq!(env.pod.addrs("eth0"), vec![r.ips[0].address.to_string()]);
    assert_eq!(cni.check(&list, &rt).await.unwrap(), CheckOutcome::Checked);
    cni.del(&list, &rt).await.unwrap();
    assert!(!env.pod.has_link("eth0"));
    assert!(env.reservations("mvnet").is_empty());
    assert!(env.host.has_link("master0"));
}

#[tokio::test]
async fn loopback_brings_lo_up() {
    let env = Env::new("lo");
    env.pod.ip(&["link", "set", "lo", "down"]);
    let list = env.load(
        "99-loopback.conflist",
        r#"{"cniVersion":"1.0.0","name":"lo","plugins":[{"type":"loopback"}]}"#,
    );
    let cni = env.cni();
    let rt = Runtime::new("loc1", env.pod.path(), "lo");
    let r = cni.add(&list, &rt).await.unwrap();
    assert_eq!(r.interfaces[0].name, "lo");
    assert!(r
        .ips
        .iter()
        .any(|ip| ip.address.to_string() == "127.0.0.1/8"));
    let flags = env.pod.link("lo")["flags"].clone();
    assert!(flags.as_array().unwrap().contains(&json!("UP")), "{flags}");
    assert_eq!(cni.check(&list, &rt).await.unwrap(), CheckOutcome::Checked);
    cni.del(&list, &rt).await.unwrap();
    let flags = env.pod.link("lo")["flags"].clone();
    assert!(!flags.as_array().unwrap().contains(&json!("UP")), "{flags}");
}

#[tokio::test]
async fn chained_bridge_tuning_portmap_with_capabilities() {
    let env = Env::new("chain");
    let conf = bridge_conflist(
        &env,
        "chainnet",
        &[
            json!({"type":"tuning","capabilities":{"mac":true},"mtu":1400,
                   "sysctl":{"net.ipv4.conf.eth0.arp_notify":"1"}}),
            json!({"type":"portmap","capabilities":{"portMappings":true},"snat":true}),
        ],
    );
    let list = env.load("10-chain.conflist", &conf);
    assert_eq!(list.plugins.len(), 3);
    let cni = env.cni();
    let rt = env
        .rt("chainc1")
        .with_capability("mac", json!("c2:11:22:33:44:55"))
        .with_capability(
            "portMappings",
            json!([{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]),
        )
        .with_capability("bandwidth", json!({"ingressRate": 1000}));
    let r = cni.add(&list, &rt).await.unwrap();
    let ip = r.ips[0].address.addr().to_string();

    // tuning: the MAC from runtimeConfig, the MTU and the sysctl from its config.
    let link = env.pod.link("eth0");
    assert_eq!(link["address"], "c2:11:22:33:44:55");
    assert_eq!(link["mtu"], 1400);
    let sysctl = env
        .pod
        .exec(&["cat", "/proc/sys/net/ipv4/conf/eth0/arp_notify"]);
    assert_eq!(sysctl.trim(), "1");
    // The chained result reflects tuning's change.
    let (_, eth0) = r.sandbox_interfaces(&env.pod.path().to_string_lossy())[0];
    assert_eq!(eth0.mac.as_deref(), Some("c2:11:22:33:44:55"));

    // portmap: a DNAT rule for the host port to the pod's address, in the host netns.
    let rules = env.host.nat_rules();
    assert!(
        rules
            .lines()
            .any(|l| l.contains("--dport 18080") && l.contains(&format!("{ip}:80"))),
        "{rules}"
    );
    // portmap 1.1.1 (Debian's) fails CHECK on IPv4-only mappings, looking for an ip6tables
    // chain it never made (containernetworking/plugins#819); newer ones pass.
    match cni.check(&list, &rt).await {
        Ok(o) => assert_eq!(o, CheckOutcome::Checked),
        Err(e) => assert!(
            matches!(&e, CniError::Plugin { plugin, msg, .. } if plugin == "portmap" && msg.contains("ipv6")),
            "{e}"
        ),
    }
    // That is what disableCheck is for.
    let mut no_check = list.clone();
    no_check.disable_check = true;
    assert_eq!(
        cni.check(&no_check, &rt).await.unwrap(),
        CheckOutcome::Disabled
    );

    cni.del(&list, &rt).await.unwrap();
    let rules = env.host.nat_rules();
    assert!(!rules.contains("18080"), "{rules}");
    assert!(nat_rules_for(&env.host, "chainc1").is_empty(), "{rules}");
    assert!(!env.pod.has_link("eth0"));
    assert!(env.reservations("chainnet").is_empty());
    assert!(env.cache_entries().is_empty());
    cni.del(&list, &rt).await.unwrap();
}

#[tokio::test]
async fn failing_plugin_in_chain_then_del_cleans_up() {
    let env = Env::new("fail");
    env.script(
        "failer",
        r#"cat >/dev/null
echo "some log line" >&2
echo '{"cniVersion":"1.0.0","code":7,"msg":"Invalid Configuration","details":"subnet too small"}'
exit 1"#,
    );
    let conf = bridge_conflist(&env, "failnet", &[json!({"type":"failer"})]);
    let list = env.load("10-fail.conflist", &conf);
    let cni = env.cni();
    let rt = env.rt("failc1");
    let e = cni.add(&list, &rt).await.unwrap_err();
    let msg = e.to_string();
    match &e {
        CniError::Plugin {
            plugin,
            command,
            code,
            msg,
            details,
            ..
        } => {
            assert_eq!(plugin, "failer");
            assert_eq!(*command, "ADD");
            assert_eq!(*code, 7);
            assert_eq!(msg, "Invalid Configuration");
            assert_eq!(details, "subnet too small");
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(
        msg.contains("failer") && msg.contains("code 7") && msg.contains("Invalid Configuration"),
        "{msg}"
    );
    assert_eq!(e.plugin_code(), Some(7));

    // The bridge plugin before it did its work, and the attachment is known to the cache
    // (without a result), so the caller's DEL, or a later GC, can undo it.
    assert!(env.pod.has_link("eth0"));
    assert_eq!(env.reservations("failnet").len(), 1);
    let atts = cni.cached_attachments(None).unwrap();
    assert_eq!(atts.len(), 1);
    assert!(atts[0].result.is_none());

    // The failing plugin fails DEL too: DEL stops there and keeps the cache entry.
    let e = cni.del(&list, &rt).await.unwrap_err();
    assert!(matches!(e, CniError::Plugin { command: "DEL", .. }), "{e}");
    assert_eq!(env.cache_entries().len(), 1);
    // Fix the plugin (it now succeeds on DEL), and DEL again: everything is gone.
    env.script(
        "failer",
        r#"cat >/dev/null; [ "$CNI_COMMAND" = DEL ] && exit 0; exit 1"#,
    );
    cni.del(&list, &rt).await.unwrap();
    assert!(!env.pod.has_link("eth0"));
    assert!(env.reservations("failnet").is_empty());
    assert!(nat_rules_for(&env.host, "failc1").is_empty());
    assert!(env.cache_entries().is_empty());
}

#[tokio::test]
async fn gc_deletes_stale_attachments_only() {
    let env = Env::new("gc");
    let list = env.load("10-gc.conflist", &bridge_conflist(&env, "gcnet", &[]));
    let cni = env.cni();
    let pod2 = Netns::new(format!("cnit-gc-{}-p2", std::process::id()));
    let pod3 = Netns::new(format!("cnit-gc-{}-p3", std::process::id()));
    let rt1 = env.rt("gcc1");
    let rt2 = Runtime::new("gcc2", pod2.path(), "eth0");
    let rt3 = Runtime::new("gcc3", pod3.path(), "eth0");
    let r1 = cni.add(&list, &rt1).await.unwrap();
    let r2 = cni.add(&list, &rt2).await.unwrap();
    let r3 = cni.add(&list, &rt3).await.unwrap();
    assert_eq!(env.reservations("gcnet").len(), 3);
    let host_veth = |r: &sandnet_cni::CniResult| {
        r.interfaces
            .iter()
            .find(|i| i.sandbox.is_none() && i.name != "cni0")
            .unwrap()
            .name
            .clone()
    };
    let (veth2, veth3) = (host_veth(&r2), host_veth(&r3));
    assert!(env.host.has_link(&veth2) && env.host.has_link(&veth3));
    // An entry of another network is not touched.
    let other = env.cache_dir().join("results").join("othernet-gcc9-eth0");
    std::fs::write(&other, r#"{"kind":"cniCacheV1","containerId":"gcc9","config":"","ifName":"eth0","networkName":"othernet"}"#).unwrap();

    // gcc3's netns is gone (as after a crash); gcc2's still exists but is not valid.
    drop(pod3);
    let valid = [GcAttachment {
        container_id: "gcc1".into(),
        ifname: "eth0".into(),
    }];
    cni.gc(&list, &valid).await.unwrap();
    assert_eq!(
        env.reservations("gcnet"),
        vec![r1.ips[0].address.addr().to_string()]
    );
    assert!(!pod2.has_link("eth0"));
    assert!(!env.host.has_link(&veth2) && !env.host.has_link(&veth3));
    assert!(nat_rules_for(&env.host, "gcc2").is_empty());
    // Quirk of bridge 1.1.1: with the netns gone, its DEL releases the address but cannot
    // learn it from the interface, so it leaves the ipMasq rules of gcc3 behind. Run DEL
    // before deleting a netns.
    let leaked = nat_rules_for(&env.host, "gcc3");
    eprintln!("ipMasq rules left by bridge after DEL without netns: {leaked:?}");
    assert_eq!(
        env.cache_entries(),
        vec![
            "gcnet-gcc1-eth0".to_string(),
            "othernet-gcc9-eth0".to_string()
        ]
    );
    assert!(env.pod.has_link("eth0"));

    // disableGC: nothing happens.
    let mut off = list.clone();
    off.disable_gc = true;
    cni.gc(&off, &[]).await.unwrap();
    assert_eq!(env.reservations("gcnet").len(), 1);

    cni.gc(&list, &[]).await.unwrap();
    assert!(env.reservations("gcnet").is_empty());
    assert!(!env.pod.has_link("eth0"));
    assert_eq!(env.cache_entries(), vec!["othernet-gcc9-eth0".to_string()]);
}

#[tokio::test]
async fn version_of_real_plugins_and_validate() {
    let env = Env::new("version");
    let cni = env.cni();
    for p in [
        "bridge",
        "host-local",
        "ptp",
        "macvlan",
        "loopback",
        "tuning",
        "portmap",
    ] {
        let v = cni.version(p).await.unwrap();
        assert!(
            v.supported_versions.iter().any(|s| s == "1.0.0"),
            "{p}: {v:?}"
        );
        assert!(
            v.supported_versions.iter().any(|s| s == "0.2.0"),
            "{p}: {v:?}"
        );
    }
    let list = NetworkConfigList::from_bytes(
        bridge_conflist(
            &env,
            "v",
            &[json!({"type":"portmap","capabilities":{"portMappings":true}})],
        )
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(
        cni.validate(&list).await.unwrap(),
        vec!["portMappings".to_string()]
    );
    // Debian's plugins (1.1.1) stop at 1.0.0.
    let mut newer = list.clone();
    newer.cni_version = "1.1.0".into();
    let e = cni.validate(&newer).await.unwrap_err().to_string();
    assert!(e.contains("does not support version 1.1.0"), "{e}");
}

#[tokio::test]
async fn missing_plugin_fails_before_anything_runs() {
    let env = Env::new("missing");
    let conf = bridge_conflist(&env, "missnet", &[json!({"type":"no-such-plugin"})]);
    let list = env.load("10-miss.conflist", &conf);
    let cni = env.cni();
    let rt = env.rt("missc1");
    let e = cni.add(&list, &rt).await.unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, CniError::PluginNotFound { ref plugin, .. } if plugin == "no-such-plugin"),
        "{e:?}"
    );
    assert!(
        msg.contains(&env.bin_dir().display().to_string()) && msg.contains("/usr/lib/cni"),
        "{msg}"
    );
    // Nothing ran: no link, no reservation, no cache entry.
    assert!(!env.pod.has_link("eth0"));
    assert!(env.reservations("missnet").is_empty());
    assert!(env.cache_entries().is_empty());
    // With the default bin dirs the error names both.
    let e = CniConfig::default()
        .find_plugin("no-such-plugin")
        .unwrap_err()
        .to_string();
    assert!(e.contains("/opt/cni/bin, /usr/lib/cni"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_concurrent_adds_get_distinct_addresses() {
    let env = Env::new("ten");
    let list = env.load("10-ten.conflist", &bridge_conflist(&env, "tennet", &[]));
    let cni = env.cni();
    let pid = std::process::id();
    let pods: Vec<Netns> = (0..10)
        .map(|i| Netns::new(format!("cnit-ten-{pid}-p{i}")))
        .collect();
    let mut set = tokio::task::JoinSet::new();
    for (i, pod) in pods.iter().enumerate() {
        let (cni, list) = (cni.clone(), list.clone());
        let rt = Runtime::new(format!("tenc{i}"), pod.path(), "eth0");
        set.spawn(async move { cni.add(&list, &rt).await.map(|r| (i, r)) });
    }
    let mut addrs = Vec::new();
    while let Some(r) = set.join_next().await {
        let (i, r) = r.unwrap().unwrap();
        let a = r.ips[0].address.to_string();
        assert_eq!(pods[i].addrs("eth0"), vec![a.clone()]);
        addrs.push(a);
    }
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 10, "{addrs:?}");
    assert_eq!(env.reservations("tennet").len(), 10);
    assert_eq!(env.cache_entries().len(), 10);

    for (i, pod) in pods.iter().enumerate() {
        let (cni, list) = (cni.clone(), list.clone());
        let rt = Runtime::new(format!("tenc{i}"), pod.path(), "eth0");
        set.spawn(async move { cni.del(&list, &rt).await.map(|()| (i, Default::default())) });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap().unwrap();
    }
    assert!(env.reservations("tennet").is_empty());
    assert!(env.cache_entries().is_empty());
    assert!(pods.iter().all(|p| !p.has_link("eth0")));
    let rules = env.host.nat_rules();
    assert!(!rules.contains("tenc"), "{rules}");
}
