//! `sandnet-tap` chained after `bridge` + dual-stack `host-local`, through sandnet's own
//! CNI executor and by raw `CNI_COMMAND` calls. Root; every test has its own namespaces.

mod common;

use common::*;
use sandnet_cni::CheckOutcome;
use serde_json::{json, Value};

/// The result's interface entries by name.
fn iface<'a>(r: &'a Value, name: &str) -> Option<(usize, &'a Value)> {
    r["interfaces"]
        .as_array()?
        .iter()
        .enumerate()
        .find(|(_, i)| i["name"] == name)
}

/// The pod's link named like `prefix*`, if any.
fn link_with_prefix(w: &World, prefix: &str) -> Option<String> {
    w.pod
        .link_names()
        .into_iter()
        .find(|n| n.starts_with(prefix))
}

#[tokio::test]
async fn dual_stack_add_check_del_through_the_executor() {
    let w = World::new("tapds");
    let list = w.conflist("tapnet", json!({}));
    let cni = w.cni();
    let rt = w.rt("ctr1");
    let r = cni.add(&list, &rt).await.unwrap().to_json().unwrap();

    // Both families, and the routes, kept from prevResult.
    let ips: Vec<&str> = r["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["address"].as_str().unwrap())
        .collect();
    assert_eq!(ips.len(), 2, "{r}");
    assert!(ips[0].starts_with("10.77.0."), "{r}");
    assert!(ips[1].starts_with("fd77::"), "{r}");
    let dsts: Vec<&str> = r["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["dst"].as_str().unwrap())
        .collect();
    assert_eq!(dsts, ["0.0.0.0/0", "::/0"], "{r}");

    // The tap: in the sandbox, with eth0's MAC and MTU; then the VM's NIC (same name,
    // sandbox = the container ID, as tc-redirect-tap's results have it), which the IPs
    // point at.
    let tap = link_with_prefix(&w, "sntap").expect("a tap in the pod");
    let (ti, t) = iface(&r, &tap).unwrap_or_else(|| panic!("no {tap} in {r}"));
    assert_eq!(t["sandbox"], w.pod.path());
    let eth0 = w.pod.link("eth0").unwrap();
    assert_eq!(t["mac"], eth0["address"]);
    assert_eq!(t["mtu"], eth0["mtu"]);
    assert_eq!(w.pod.link(&tap).unwrap()["mtu"], eth0["mtu"]);
    let vm = &r["interfaces"][ti + 1];
    assert_eq!(
        (&vm["name"], &vm["sandbox"]),
        (&json!(tap), &json!("ctr1")),
        "{r}"
    );
    assert_eq!(vm["mac"], eth0["address"]);
    for ip in r["ips"].as_array().unwrap() {
        assert_eq!(ip["interface"], ti + 1, "{r}");
    }
    // The datapath: a redirect each way.
    assert!(has_ingress(&w.pod, "eth0") && has_ingress(&w.pod, &tap));
    assert!(!ingress_filters(&w.pod, "eth0").is_empty());
    assert!(!ingress_filters(&w.pod, &tap).is_empty());
    assert_eq!(w.records(), ["ctr1@eth0.json"]);

    // CHECK passes; with a filter removed by hand, it fails naming it.
    assert_eq!(cni.check(&list, &rt).await.unwrap(), CheckOutcome::Checked);
    sandnet_testkit::run(
        "ip",
        &[
            "netns",
            "exec",
            &w.pod.name,
            "tc",
            "filter",
            "del",
            "dev",
            "eth0",
            "ingress",
        ],
    );
    let e = cni.check(&list, &rt).await.unwrap_err();
    assert_eq!(e.plugin_code(), Some(100), "{e}");
    assert!(e.to_string().contains("eth0 has no redirect filter"), "{e}");

    // sandnet-tap's DEL alone: the tap, qdiscs and state go, eth0 stays; then the whole
    // chain's DEL, twice.
    let conf = plugin_conf(&list, 1, Some(&r));
    let d = raw("DEL", &conf, "ctr1", &w.pod.path(), "eth0");
    assert_eq!(d.status, 0, "{d:?}");
    assert_eq!(link_with_prefix(&w, "sntap"), None);
    assert!(w.pod.link("eth0").is_some());
    assert!(!has_ingress(&w.pod, "eth0"));
    assert!(w.records().is_empty() && w.plans().is_empty());
    cni.del(&list, &rt).await.unwrap();
    cni.del(&list, &rt).await.unwrap();
    assert_eq!(link_with_prefix(&w, "sntap"), None);
    assert!(w.records().is_empty() && w.plans().is_empty());
}

#[tokio::test]
async fn del_after_the_netns_is_gone() {
    let w = World::new("tapgone");
    let list = w.conflist("tapnet", json!({}));
    let cni = w.cni();
    let rt = w.rt("ctr2");
    let r = cni.add(&list, &rt).await.unwrap().to_json().unwrap();
    let prev = plugin_conf(&list, 1, Some(&r));
    sandnet_testkit::run("ip", &["netns", "del", &w.pod.name]);
    // The plugin alone, as a runtime does it, with and without CNI_NETNS.
    let d = raw("DEL", &prev, "ctr2", &w.pod.path(), "eth0");
    assert_eq!((d.status, &d.out), (0, &Value::Null), "{d:?}");
    assert!(w.records().is_empty() && w.plans().is_empty());
    let d = raw("DEL", &prev, "ctr2", "", "eth0");
    assert_eq!(d.status, 0, "{d:?}");
    // The whole chain's DEL too (bridge is quiet about a gone netns as well).
    cni.del(&list, &rt).await.unwrap();
}

#[tokio::test]
async fn del_after_a_crash_before_add_finished() {
    let w = World::new("tapcrash");
    let list = w.conflist("tapnet", json!({"tapName": "vmtap1"}));
    let cni = w.cni();
    let rt = w.rt("crash");
    let r = cni.add(&list, &rt).await.unwrap().to_json().unwrap();
    // As a plugin killed after attach and rename, before it completed its record: the
    // record names only what ADD was asked to make.
    let rec_path = w.state_dir().join("attachments").join("crash@eth0.json");
    let mut rec: Value = serde_json::from_slice(&std::fs::read(&rec_path).unwrap()).unwrap();
    rec["complete"] = json!(false);
    rec["tap"] = Value::Null;
    rec["mac"] = Value::Null;
    std::fs::write(&rec_path, rec.to_string()).unwrap();
    assert!(w.pod.link("vmtap1").is_some());
    // CHECK says so; DEL (no CNI_NETNS: the record has it) removes everything.
    let conf = plugin_conf(&list, 1, Some(&r));
    assert_eq!(
        raw("CHECK", &conf, "crash", &w.pod.path(), "eth0").code(),
        Some(100)
    );
    let d = raw("DEL", &conf, "crash", "", "eth0");
    assert_eq!(d.status, 0, "{d:?}");
    assert!(w.pod.link("vmtap1").is_none());
    assert!(!has_ingress(&w.pod, "eth0"));
    assert!(w.records().is_empty() && w.plans().is_empty());
    cni.del(&list, &rt).await.unwrap();
}

#[tokio::test]
async fn gc_removes_a_stale_attachment_and_keeps_a_valid_one() {
    let w = World::new("tapgc");
    let pod2 = sandnet_testkit::TestNs::new("tapgcq");
    let list = w.conflist("tapnet", json!({}));
    let cni = w.cni();
    cni.add(&list, &w.rt("keep")).await.unwrap();
    let rt2 = sandnet_cni::Runtime::new("stale", pod2.path(), "eth0");
    cni.add(&list, &rt2).await.unwrap();
    assert_eq!(w.records(), ["keep@eth0.json", "stale@eth0.json"]);

    // GC is 1.1.0's (Debian's bridge speaks up to 1.0.0, so the list is 1.0.0).
    let mut gc = plugin_conf(&list, 1, None);
    gc["cniVersion"] = json!("1.1.0");
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
    let g = raw("GC", &gc, "", "", "");
    assert_eq!(g.status, 0, "{g:?}");
    assert_eq!(w.records(), ["keep@eth0.json"]);
    assert!(pod2.link_names().iter().all(|n| !n.starts_with("sntap")));
    assert!(!has_ingress(&pod2, "eth0"));
    assert!(link_with_prefix(&w, "sntap").is_some());
    assert_eq!(
        cni.check(&list, &w.rt("keep")).await.unwrap(),
        CheckOutcome::Checked
    );
    // Another network's GC leaves this network's attachments alone.
    gc["name"] = json!("othernet");
    gc["cni.dev/valid-attachments"] = json!([]);
    assert_eq!(raw("GC", &gc, "", "", "").status, 0);
    assert_eq!(w.records(), ["keep@eth0.json"]);
    cni.del(&list, &w.rt("keep")).await.unwrap();
    cni.del(&list, &rt2).await.unwrap();
}

#[tokio::test]
async fn bad_config_gives_the_cni_code_and_changes_nothing() {
    let w = World::new("tapbad");
    let list = w.conflist("tapnet", json!({}));
    let cni = w.cni();
    // Only the bridge: its result is the prevResult sandnet-tap would get.
    let bridge_only = sandnet_cni::NetworkConfigList {
        plugins: vec![list.plugins[0].clone()],
        ..list.clone()
    };
    let rt = w.rt("bad");
    let prev = cni.add(&bridge_only, &rt).await.unwrap().to_json().unwrap();
    let base = plugin_conf(&list, 1, Some(&prev));
    let links_before = w.pod.link_names();
    let with = |k: &str, v: Value| {
        let mut c = base.clone();
        c[k] = v;
        c
    };
    let mut no_prev = base.clone();
    no_prev.as_object_mut().unwrap().remove("prevResult");
    let pod = w.pod.path();
    let cases: Vec<(&str, Value, &str, &str, u64)> = vec![
        (
            "unknown model",
            with("model", json!("vhost")),
            pod.as_str(),
            "eth0",
            7,
        ),
        (
            "queues 0",
            with("queues", json!(0)),
            pod.as_str(),
            "eth0",
            7,
        ),
        ("missing prevResult", no_prev, pod.as_str(), "eth0", 7),
        (
            "ifname not in the netns",
            base.clone(),
            pod.as_str(),
            "eth9",
            4,
        ),
        (
            "netns missing",
            base.clone(),
            "/run/netns/sn-no-such-ns",
            "eth0",
            3,
        ),
        (
            "old version",
            with("cniVersion", json!("0.2.0")),
            pod.as_str(),
            "eth0",
            1,
        ),
        (
            "anti-spoofing not a boolean",
            with("antiSpoofing", json!("on")),
            pod.as_str(),
            "eth0",
            7,
        ),
        (
            "garbage prevResult",
            with("prevResult", json!({"ips": 5})),
            pod.as_str(),
            "eth0",
            6,
        ),
    ];
    for (what, conf, netns, ifname, code) in cases {
        let r = raw("ADD", &conf, "bad", netns, ifname);
        assert_eq!(r.status, 1, "{what}: {r:?}");
        assert_eq!(r.code(), Some(code), "{what}: {r:?}");
        assert!(
            r.out["msg"].is_string() && r.out["details"].is_string(),
            "{what}"
        );
        assert_eq!(w.pod.link_names(), links_before, "{what}");
        assert!(!has_ingress(&w.pod, "eth0"), "{what}");
        assert!(w.records().is_empty() && w.plans().is_empty(), "{what}");
    }
    // queues also through CNI_ARGS, as a string.
    let r = raw_args(
        "ADD",
        &base,
        "bad",
        &pod,
        "eth0",
        "IgnoreUnknown=1;queues=0",
    );
    assert_eq!(r.code(), Some(7), "{r:?}");
    assert!(w.records().is_empty());
    cni.del(&bridge_only, &rt).await.unwrap();
}

#[tokio::test]
async fn tap_name_is_honoured() {
    let w = World::new("tapname");
    let list = w.conflist("tapnet", json!({"tapName": "vmtap0"}));
    let cni = w.cni();
    let rt = w.rt("named");
    let r = cni.add(&list, &rt).await.unwrap().to_json().unwrap();
    let (ti, t) = iface(&r, "vmtap0").unwrap_or_else(|| panic!("{r}"));
    assert_eq!(r["ips"][0]["interface"], ti + 1);
    assert_eq!(r["interfaces"][ti + 1]["name"], "vmtap0");
    assert_eq!(t["sandbox"], w.pod.path());
    assert_eq!(link_with_prefix(&w, "sntap"), None);
    let l = w.pod.link("vmtap0").unwrap();
    assert!(
        l["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
        "{l}"
    );
    assert!(!ingress_filters(&w.pod, "vmtap0").is_empty());
    assert_eq!(cni.check(&list, &rt).await.unwrap(), CheckOutcome::Checked);
    let conf = plugin_conf(&list, 1, Some(&r));
    assert_eq!(raw("DEL", &conf, "named", &w.pod.path(), "eth0").status, 0);
    assert!(w.pod.link("vmtap0").is_none());
    assert!(!has_ingress(&w.pod, "eth0"));
    assert!(w.records().is_empty() && w.plans().is_empty());
    cni.del(&list, &rt).await.unwrap();
}

#[tokio::test]
async fn macvtap_model() {
    let w = World::new("tapmvt");
    let list = w.conflist(
        "tapnet",
        json!({"model": "macvtap", "uid": 4242, "gid": 4343}),
    );
    let cni = w.cni();
    let rt = w.rt("mvt");
    let r = cni.add(&list, &rt).await.unwrap().to_json().unwrap();
    let eth0_mac = {
        let tap = link_with_prefix(&w, "snmvt").expect("a macvtap in the pod");
        let (ti, t) = iface(&r, &tap).unwrap();
        for ip in r["ips"].as_array().unwrap() {
            assert_eq!(ip["interface"], ti + 1, "{r}");
        }
        let l = w.pod.link(&tap).unwrap();
        assert_eq!(l["linkinfo"]["info_kind"], "macvtap");
        assert_eq!(t["mac"], l["address"], "the guest MAC is the macvtap's");
        t["mac"].as_str().unwrap().to_string()
    };
    // eth0 wears another MAC meanwhile (so the bridge plugin's own CHECK, which compares
    // it with its result, fails: sandnet-tap's CHECK is run alone); DEL gives it back.
    assert_ne!(w.pod.link("eth0").unwrap()["address"], eth0_mac.as_str());
    let conf = plugin_conf(&list, 1, Some(&r));
    let c = raw("CHECK", &conf, "mvt", &w.pod.path(), "eth0");
    assert_eq!(c.status, 0, "{c:?}");
    let d = raw("DEL", &conf, "mvt", &w.pod.path(), "eth0");
    assert_eq!(d.status, 0, "{d:?}");
    assert_eq!(w.pod.link("eth0").unwrap()["address"], eth0_mac.as_str());
    cni.del(&list, &rt).await.unwrap();
    assert_eq!(link_with_prefix(&w, "snmvt"), None);
    assert!(w.records().is_empty() && w.plans().is_empty());
}

#[tokio::test]
async fn multiqueue_tap_owned_by_a_user() {
    let w = World::new("tapmq");
    let list = w.conflist("tapnet", json!({"queues": 4, "uid": 4242, "gid": 4343}));
    let cni = w.cni();
    let rt = w.rt("mq");
    cni.add(&list, &rt).await.unwrap();
    let tap = link_with_prefix(&w, "sntap").expect("a tap");
    let info = &w.pod.link(&tap).unwrap()["linkinfo"]["info_data"];
    assert_eq!(info["multi_queue"], true, "{info}");
    assert_eq!(info["user"], 4242, "{info}");
    assert_eq!(info["group"], 4343, "{info}");
    assert_eq!(cni.check(&list, &rt).await.unwrap(), CheckOutcome::Checked);
    // The owner, without any capability, can attach all four queues; another user cannot.
    assert_eq!(w.pod.enter(|| attach_queues_as(&tap, 4242, 4343, 4)), Ok(4));
    assert_eq!(
        w.pod.enter(|| attach_queues_as(&tap, 4244, 4344, 1)),
        Err(libc::EPERM)
    );
    cni.del(&list, &rt).await.unwrap();
    assert_eq!(link_with_prefix(&w, "sntap"), None);
}

/// Opens `/dev/net/tun` `queues` times (as root: this machine's node may be 0600), then on
/// a thread that has become `uid`/`gid` (no capabilities left) attaches each fd to `tap`
/// with `TUNSETIFF`, as a non-root VMM would. Returns how many attached, or the errno.
fn attach_queues_as(tap: &str, uid: u32, gid: u32, queues: usize) -> Result<usize, i32> {
    use std::os::fd::AsRawFd;
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    let files: Vec<std::fs::File> = (0..queues)
        .map(|_| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/net/tun")
                .unwrap()
        })
        .collect();
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: raw setresgid/setresuid change this thread's credentials only; the
            // thread ends right after.
            unsafe {
                assert_eq!(libc::syscall(libc::SYS_setresgid, gid, gid, gid), 0);
                assert_eq!(libc::syscall(libc::SYS_setresuid, uid, uid, uid), 0);
            }
            for f in &files {
                // struct ifreq: name[16], short flags, padding.
                let mut req = [0u8; 40];
                req[..tap.len()].copy_from_slice(tap.as_bytes());
                let flags: libc::c_short = 0x0002 | 0x1000 | 0x4000 | 0x0100;
                req[16..18].copy_from_slice(&flags.to_ne_bytes());
                // SAFETY: TUNSETIFF reads and writes a 40-byte struct ifreq.
                if unsafe { libc::ioctl(f.as_raw_fd(), TUNSETIFF as _, req.as_mut_ptr()) } < 0 {
                    return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
                }
            }
            Ok(files.len())
        })
        .join()
        .unwrap()
    })
}

#[test]
fn version_and_status() {
    let dir = sandnet_testkit::TempDir::new("tapstatus");
    let v = raw("VERSION", &json!({"cniVersion": "1.1.0"}), "", "", "");
    assert_eq!(v.status, 0, "{v:?}");
    assert_eq!(v.out["cniVersion"], "1.1.0");
    assert!(v.out["supportedVersions"]
        .as_array()
        .unwrap()
        .contains(&json!("1.1.0")));
    let conf = json!({"cniVersion": "1.1.0", "name": "n", "type": "sandnet-tap",
                      "stateDir": dir.join("state")});
    let s = raw("STATUS", &conf, "", "", "");
    assert_eq!((s.status, &s.out), (0, &Value::Null), "{s:?}");
    // STATUS and GC are 1.1.0's.
    let mut old = conf.clone();
    old["cniVersion"] = json!("1.0.0");
    assert_eq!(raw("STATUS", &old, "", "", "").code(), Some(1));
    assert_eq!(raw("GC", &old, "", "", "").code(), Some(1));
    // A state dir that cannot be made: not available (50).
    let mut bad = conf.clone();
    bad["stateDir"] = json!("/proc/sandnet-tap-state");
    assert_eq!(raw("STATUS", &bad, "", "", "").code(), Some(50));
    // An unknown command.
    assert_eq!(raw("FROB", &conf, "", "", "").code(), Some(4));
}
