//! Hot plug, `sandnet net …` and the netns monitor against real guests (QEMU, TCG here),
//! real netlink and the real `sandnet` binary: links added to the pod namespace of a
//! running sandbox reach the guest with their MAC, addresses and routes and carry traffic
//! both ways; deleted ones are unplugged and their taps go; bad input changes nothing; a
//! supervisor killed mid-plug leaves nothing after `rm`. Needs root, the static agent and
//! the guest kernel (`scripts/test` prepares them).

#[path = "common/guest.rs"]
mod guest;

use guest::{guest_ping, ping_from, Env, Sandbox};
use sandnet_testkit::{assert_fails_with, PodPair, TestNs};
use serde_json::Value;
use std::time::{Duration, Instant};

/// How long a change may take to reach a TCG guest on a loaded 2-core machine.
const FOLLOW: Duration = Duration::from_secs(30);

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

fn env_with(tag: &str, config: &str) -> Env {
    let env = Env::new(tag);
    std::fs::write(&env.config, config).unwrap();
    env
}

/// The guest's interfaces in sandnet's model (`net list-ifaces --json sandnet`).
fn guest_ifaces(env: &Env, id: &str) -> Vec<Value> {
    let v = env.ok_json(&["net", "list-ifaces", id, "--json", "sandnet"]);
    v.as_array().unwrap().clone()
}

fn guest_iface(env: &Env, id: &str, name: &str) -> Option<Value> {
    guest_ifaces(env, id)
        .into_iter()
        .find(|i| i["name"] == name)
}

/// The guest's routes as `dest via gateway dev device` lines.
fn guest_routes(env: &Env, id: &str) -> Vec<String> {
    let v = env.ok_json(&["net", "list-routes", id, "--json", "sandnet"]);
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} via {} dev {}",
                r["dest"].as_str().unwrap_or_default(),
                r["gateway"].as_str().unwrap_or("-"),
                r["device"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

/// Links of the pod namespace, sorted.
fn pod_links(ns: &TestNs) -> Vec<String> {
    let mut l = ns.link_names();
    l.sort();
    l
}

/// Every ingress filter in the namespace, per link.
fn filters(ns: &TestNs) -> Vec<String> {
    let mut out = Vec::new();
    for l in ns.link_names() {
        let f = ns.tc_json(&["filter", "show", "dev", &l, "ingress"]);
        if f.as_array().is_some_and(|a| !a.is_empty()) {
            out.push(format!("{l}: {f}"));
        }
    }
    out
}

/// The sandbox record's NICs as `link:state:hot`.
fn recorded_nics(sb: &Sandbox<'_>) -> Vec<String> {
    let b = std::fs::read(sb.dir().join("sandbox.json")).unwrap();
    let v: Value = serde_json::from_slice(&b).unwrap();
    v["nics"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            format!(
                "{}:{}:{}",
                n["link"].as_str().unwrap(),
                n["state"].as_str().unwrap(),
                n["hot"]
            )
        })
        .collect()
}

/// Asserts that `rm` left the pod namespace as it was before the sandbox: no taps, no
/// filters, no processes, no record.
fn assert_clean(env: &Env, p: &PodPair, links_before: &[String], id: &str) {
    assert_eq!(pod_links(&p.pod), links_before, "links after rm");
    assert!(
        filters(&p.pod).is_empty(),
        "filters after rm: {:?}",
        filters(&p.pod)
    );
    assert!(env.processes().is_empty(), "processes after rm");
    assert!(!env.state.join(id).exists(), "record after rm");
}

#[test]
fn cli_add_del_update_routes_and_bad_input_change_nothing() {
    let p = PodPair::new("hpcli");
    let env = env_with("hpcli", "[netmon]\nenable = false\n");
    let (sb, _) = Sandbox::run(&env, "cli", &p.pod.name, &[]);
    let id = sb.id.clone();

    // With the monitor off, a new link does not reach the guest by itself.
    p.add_veth("eth1", "veth1", "10.60.0.2/24", "10.60.0.1/24");
    p.pod
        .ip(&["route", "add", "10.61.0.0/16", "via", "10.60.0.1"]);
    let mut links_before = pod_links(&p.pod);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        guest_iface(&env, &id, "eth1").is_none(),
        "monitor off, yet eth1 arrived"
    );

    // add-iface --link: Kata JSON out, with the link's MAC and address.
    let k = env.ok_json(&["net", "add-iface", &id, "--link", "eth1", "--json"]);
    assert_eq!(k[0]["name"], "eth1", "{k}");
    assert_eq!(k[0]["hwAddr"], p.pod_mac("eth1").as_str(), "{k}");
    assert_eq!(k[0]["IPAddresses"][0]["address"], "10.60.0.2", "{k}");
    let g = guest_iface(&env, &id, "eth1").expect("eth1 in the guest");
    assert_eq!(g["mac"], p.pod_mac("eth1").as_str());
    assert!(guest_routes(&env, &id).contains(&"10.61.0.0/16 via 10.60.0.1 dev eth1".into()));
    assert!(
        recorded_nics(&sb).contains(&"eth1:plugged:true".into()),
        "{:?}",
        recorded_nics(&sb)
    );
    ping_from(&p.host, "10.60.0.2");
    guest_ping(&sb, "10.60.0.1");
    // The cold-plugged NIC still works beside it.
    ping_from(&p.host, "172.19.0.5");

    // update-routes replaces the guest's routes with the file's (Kata objects here).
    let routes = env.state.join("routes.json");
    std::fs::write(
        &routes,
        r#"[{"dest":"0.0.0.0/0","gateway":"172.19.0.1","device":"eth0"},
            {"dest":"10.62.0.0/16","gateway":"10.60.0.1","device":"eth1","scope":0}]"#,
    )
    .unwrap();
    env.ok(&["net", "update-routes", &id, routes.to_str().unwrap()]);
    let r = guest_routes(&env, &id);
    assert!(
        r.contains(&"10.62.0.0/16 via 10.60.0.1 dev eth1".into()),
        "{r:?}"
    );
    assert!(
        !r.contains(&"10.61.0.0/16 via 10.60.0.1 dev eth1".into()),
        "{r:?}"
    );

    // Bad input: one line each, nothing changed (guest, links, filters, record).
    let guest_before = guest_ifaces(&env, &id);
    let routes_before = guest_routes(&env, &id);
    let filters_before = filters(&p.pod);
    let nics_before = recorded_nics(&sb);
    let links_mid = pod_links(&p.pod);
    p.pod.ip(&["link", "add", "br9", "type", "bridge"]);
    p.pod.ip(&["addr", "add", "10.69.0.2/24", "dev", "br9"]);
    let bad_json = env.state.join("bad.json");
    std::fs::write(&bad_json, "{\"name\": ").unwrap();
    let bad_route = env.state.join("badroute.json");
    std::fs::write(
        &bad_route,
        r#"[{"dest":"10.63.0.0/16","gateway":"10.60.0.1","device":"eth7"}]"#,
    )
    .unwrap();
    let bad_mask = env.state.join("badmask.json");
    std::fs::write(
        &bad_mask,
        r#"{"name":"eth1","IPAddresses":[{"family":0,"address":"10.60.0.9","mask":"99"}]}"#,
    )
    .unwrap();
    for (args, needles) in [
        (
            vec!["net", "add-iface", &id, "--link", "nope0"],
            vec!["nope0", "not found"],
        ),
        (
            vec!["net", "add-iface", &id, "--link", "lo"],
            vec!["\"lo\"", "loopback"],
        ),
        (
            vec!["net", "add-iface", &id, "--link", "br9"],
            vec!["br9", "bridge"],
        ),
        (
            vec!["net", "add-iface", &id, "--link", "eth1"],
            vec!["eth1", "plugged already"],
        ),
        (
            vec!["net", "del-iface", &id, "--link", "eth7"],
            vec!["eth7", "not plugged"],
        ),
        (
            vec!["net", "add-iface", &id, bad_json.to_str().unwrap()],
            vec!["bad.json", "malformed JSON"],
        ),
        (
            vec!["net", "add-iface", &id, bad_mask.to_str().unwrap()],
            vec!["eth1", "99"],
        ),
        (
            vec!["net", "update-routes", &id, bad_route.to_str().unwrap()],
            vec!["eth7", "not a NIC"],
        ),
        (
            vec!["net", "list-ifaces", "no-such-sandbox"],
            vec!["no-such-sandbox"],
        ),
    ] {
        let o = env.sandnet(&args);
        assert_fails_with(&o, &needles);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{args:?}: one line: {err}"
        );
    }
    p.pod.ip(&["link", "del", "br9"]);
    assert_eq!(guest_ifaces(&env, &id), guest_before);
    assert_eq!(guest_routes(&env, &id), routes_before);
    assert_eq!(filters(&p.pod), filters_before);
    assert_eq!(recorded_nics(&sb), nics_before);
    assert_eq!(pod_links(&p.pod), links_mid);

    // del-iface with a Kata interface object: the guest NIC, the tap and the filters go.
    let obj = env.state.join("eth1.json");
    std::fs::write(
        &obj,
        r#"{"device":"eth1","name":"eth1","IPAddresses":[],"hwAddr":""}"#,
    )
    .unwrap();
    env.ok(&["net", "del-iface", &id, obj.to_str().unwrap()]);
    assert!(guest_iface(&env, &id, "eth1").is_none());
    assert!(!pod_links(&p.pod).iter().any(|l| l.starts_with("sntap")
        && l != &format!("sntap{}", p.pod.link("eth0").unwrap()["ifindex"])));
    assert!(
        !filters(&p.pod).iter().any(|f| f.starts_with("eth1:")),
        "{:?}",
        filters(&p.pod)
    );
    // Plugged again: it works again.
    env.ok(&["net", "add-iface", &id, "--link", "eth1"]);
    ping_from(&p.host, "10.60.0.2");

    // A sandbox whose VM is gone is not running: one clear line.
    let st: Value =
        serde_json::from_slice(&std::fs::read(sb.dir().join("sandbox.json")).unwrap()).unwrap();
    let qemu = st["qemu_pid"].as_u64().unwrap() as i32;
    // SAFETY: kill(2) of the QEMU this test's sandbox runs.
    unsafe { libc::kill(qemu, libc::SIGKILL) };
    wait_for("QEMU gone", FOLLOW, || {
        env.ps_entry(&id).is_some_and(|e| e["status"] != "running")
    });
    let o = env.sandnet(&["net", "add-iface", &id, "--link", "eth1"]);
    assert_fails_with(&o, &[&id, "not running"]);
    let o = env.ok(&["rm", &id]);
    eprintln!(
        "rm: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    links_before.retain(|l| !l.starts_with("sntap"));
    assert_clean(&env, &p, &links_before, &id);
}

#[test]
fn macvtap_sandbox_hot_plugs_too() {
    let p = PodPair::new("hpmvt");
    let env = env_with("hpmvt", "[netmon]\nenable = false\n");
    let links_before_veth = pod_links(&p.pod);
    let (sb, _) = Sandbox::run(&env, "mvt", &p.pod.name, &["--model", "macvtap"]);
    let id = sb.id.clone();
    p.add_veth("eth1", "veth1", "10.64.0.2/24", "10.64.0.1/24");
    let mac = p.pod_mac("eth1");
    let mut links_before = links_before_veth.clone();
    links_before.push("eth1".into());
    links_before.sort();
    let obj = env.state.join("eth1.json");
    // sandnet's own model JSON is accepted too.
    std::fs::write(
        &obj,
        r#"{"name":"eth1","kind":"veth","mac":null,"mtu":0,"addresses":[]}"#,
    )
    .unwrap();
    env.ok(&["net", "add-iface", &id, obj.to_str().unwrap()]);
    let g = guest_iface(&env, &id, "eth1").expect("eth1 in the guest");
    assert_eq!(g["mac"], mac.as_str());
    assert!(p.pod.link_names().iter().any(|l| l.starts_with("snmvt")));
    ping_from(&p.host, "10.64.0.2");
    guest_ping(&sb, "10.64.0.1");
    env.ok(&["net", "del-iface", &id, "--link", "eth1"]);
    assert!(guest_iface(&env, &id, "eth1").is_none());
    // The link has its MAC and address back.
    assert_eq!(p.pod_mac("eth1"), mac);
    let a = p.pod.ip_json(&["addr", "show", "dev", "eth1"]);
    assert!(a.to_string().contains("10.64.0.2"), "{a}");
    env.ok(&["rm", &id]);
    assert_clean(&env, &p, &links_before, &id);
}

#[test]
fn monitor_follows_links_addresses_and_routes() {
    let p = PodPair::new("hpmon");
    let env = env_with("hpmon", "");
    let (sb, _) = Sandbox::run(&env, "mon", &p.pod.name, &[]);
    let id = sb.id.clone();

    p.add_veth("eth1", "veth1", "10.65.0.2/24", "10.65.0.1/24");
    let mac = p.pod_mac("eth1");
    let mut links_before = pod_links(&p.pod);
    links_before.retain(|l| !l.starts_with("sntap"));
    wait_for("eth1 in the guest", FOLLOW, || {
        guest_iface(&env, &id, "eth1")
            .is_some_and(|g| g["addresses"].to_string().contains("10.65.0.2/24"))
    });
    assert_eq!(guest_iface(&env, &id, "eth1").unwrap()["mac"], mac.as_str());
    ping_from(&p.host, "10.65.0.2");
    guest_ping(&sb, "10.65.0.1");

    // A route added, then removed, follows; so does a second address and an MTU change.
    let want = "10.66.0.0/16 via 10.65.0.1 dev eth1".to_string();
    p.pod
        .ip(&["route", "add", "10.66.0.0/16", "via", "10.65.0.1"]);
    wait_for("the route in the guest", FOLLOW, || {
        guest_routes(&env, &id).contains(&want)
    });
    p.pod.ip(&["route", "del", "10.66.0.0/16"]);
    wait_for("the route gone from the guest", FOLLOW, || {
        !guest_routes(&env, &id).contains(&want)
    });
    p.pod.ip(&["addr", "add", "10.67.0.2/24", "dev", "eth1"]);
    p.pod.ip(&["link", "set", "eth1", "mtu", "1400"]);
    wait_for("the address and MTU in the guest", FOLLOW, || {
        guest_iface(&env, &id, "eth1").is_some_and(|g| {
            g["addresses"].to_string().contains("10.67.0.2/24") && g["mtu"] == 1400
        })
    });

    // Deleted: unplugged, its tap gone.
    let tap = format!("sntap{}", p.pod.link("eth1").unwrap()["ifindex"]);
    assert!(pod_links(&p.pod).contains(&tap));
    p.pod.ip(&["link", "del", "eth1"]);
    wait_for("eth1 gone from the guest", FOLLOW, || {
        guest_iface(&env, &id, "eth1").is_none()
    });
    wait_for("its tap gone", FOLLOW, || !pod_links(&p.pod).contains(&tap));
    // The record goes last (reads are answered while the unplug runs).
    wait_for("its record gone", FOLLOW, || {
        !recorded_nics(&sb).iter().any(|n| n.starts_with("eth1:"))
    });
    links_before.retain(|l| l != "eth1");
    env.ok(&["rm", &id]);
    assert_clean(&env, &p, &links_before, &id);
}

#[test]
fn eight_links_added_at_once_all_arrive() {
    let p = PodPair::new("hp8");
    let env = env_with("hp8", "[hypervisor.qemu]\nhotplug_ports = 8\n");
    let (sb, _) = Sandbox::run(&env, "eight", &p.pod.name, &[]);
    let id = sb.id.clone();
    let links_before_veths = pod_links(&p.pod);
    let t = Instant::now();
    for i in 0..8 {
        p.add_veth(
            &format!("net{i}"),
            &format!("peer{i}"),
            &format!("10.70.{i}.2/24"),
            &format!("10.70.{i}.1/24"),
        );
    }
    wait_for("8 NICs in the guest", Duration::from_secs(60), || {
        let g = guest_ifaces(&env, &id);
        (0..8).all(|i| g.iter().any(|x| x["name"] == format!("net{i}").as_str()))
    });
    eprintln!(
        "8 links: all in the guest {} ms after the first was added",
        t.elapsed().as_millis()
    );
    for i in [0, 7] {
        ping_from(&p.host, &format!("10.70.{i}.2"));
    }
    let mut links_before = links_before_veths;
    links_before.extend((0..8).map(|i| format!("net{i}")));
    links_before.retain(|l| !l.starts_with("sntap"));
    links_before.sort();
    env.ok(&["rm", &id]);
    assert_clean(&env, &p, &links_before, &id);
}

#[test]
fn supervisor_killed_mid_plug_then_rm_leaves_nothing() {
    let p = PodPair::new("hpkill");
    let env = env_with("hpkill", "[netmon]\nenable = false\n");
    let links_before_run = pod_links(&p.pod);
    // The pause reaches the supervisor through run's environment.
    let (sb, _) = Sandbox::run_with(
        &env,
        "kill",
        &p.pod.name,
        &[],
        &[("SANDNET_PLUG_PAUSE_MS", "60000")],
    );
    let id = sb.id.clone();
    p.add_veth("eth1", "veth1", "10.71.0.2/24", "10.71.0.1/24");
    let mut links_before = links_before_run;
    links_before.push("eth1".into());
    links_before.sort();
    let mut plug = env
        .cmd(&["net", "add-iface", &id, "--link", "eth1"])
        .spawn()
        .unwrap();
    // Proof of the step: the record says plugging and the host side is attached (the tap
    // and its filters exist); the pause sits before QEMU is asked for the device.
    let tap = format!("sntap{}", p.pod.link("eth1").unwrap()["ifindex"]);
    wait_for("the plug paused after attach", FOLLOW, || {
        recorded_nics(&sb).contains(&"eth1:plugging:true".into())
            && pod_links(&p.pod).contains(&tap)
    });
    assert!(filters(&p.pod).iter().any(|f| f.starts_with("eth1:")));
    let st: Value =
        serde_json::from_slice(&std::fs::read(sb.dir().join("sandbox.json")).unwrap()).unwrap();
    let sup = st["supervisor_pid"].as_u64().unwrap() as i32;
    // SAFETY: kill(2) of this test's supervisor.
    unsafe { libc::kill(sup, libc::SIGKILL) };
    let o = plug.wait().unwrap();
    assert!(!o.success(), "add-iface must fail when its supervisor dies");
    env.ok(&["rm", &id]);
    assert_clean(&env, &p, &links_before, &id);
}

#[test]
fn boot_first_hotplugs_every_endpoint() {
    let p = PodPair::new("hpboot");
    p.add_veth("eth1", "veth1", "10.72.0.2/24", "10.72.0.1/24");
    let links_before = pod_links(&p.pod);
    let env = env_with("hpboot", "[netmon]\nenable = false\n");
    let (sb, out) = Sandbox::run(&env, "boot", &p.pod.name, &["--hotplug"]);
    let id = sb.id.clone();
    assert!(out["timings"]["plug_ms"].is_u64(), "{out}");
    let mut nics = recorded_nics(&sb);
    nics.sort();
    assert_eq!(nics, vec!["eth0:plugged:true", "eth1:plugged:true"]);
    for (name, _) in [("eth0", 0), ("eth1", 1)] {
        let g = guest_iface(&env, &id, name).expect("in the guest");
        assert_eq!(g["mac"], p.pod_mac(name).as_str());
    }
    ping_from(&p.host, "172.19.0.5");
    ping_from(&p.host, "10.72.0.2");
    guest_ping(&sb, "172.19.0.1");
    env.ok(&["rm", &id]);
    assert_clean(&env, &p, &links_before, &id);
}

/// The control socket serves clients concurrently: six clients that connect and send
/// nothing hold nobody (each used to hold the loop for 5 s), and a plug in flight does not
/// hold read-only requests.
#[test]
fn silent_clients_and_a_plug_in_flight_do_not_stall_the_control_socket() {
    let p = PodPair::new("hpctl");
    let env = env_with("hpctl", "[netmon]\nenable = false\n");
    let (sb, _) = Sandbox::run_with(
        &env,
        "ctl",
        &p.pod.name,
        &[],
        &[("SANDNET_PLUG_PAUSE_MS", "8000")],
    );
    let id = sb.id.clone();
    let ctl = sb.dir().join("ctl.sock");
    let silent: Vec<std::os::unix::net::UnixStream> = (0..6)
        .map(|_| std::os::unix::net::UnixStream::connect(&ctl).unwrap())
        .collect();
    let t = std::time::Instant::now();
    env.ok(&["inspect", &id]);
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "inspect took {:?} behind 6 silent clients",
        t.elapsed()
    );
    drop(silent);
    // A plug paused for 8 s after its attach: inspect and exec still answer at once.
    p.add_veth("eth1", "veth1", "10.73.0.2/24", "10.73.0.1/24");
    let mut plug = env
        .cmd(&["net", "add-iface", &id, "--link", "eth1"])
        .spawn()
        .unwrap();
    wait_for("the plug in flight", FOLLOW, || {
        recorded_nics(&sb).contains(&"eth1:plugging:true".into())
    });
    let t = std::time::Instant::now();
    env.ok(&["inspect", &id]);
    env.ok(&["exec", &id, "--", "true"]);
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "read-only requests took {:?} behind a plug",
        t.elapsed()
    );
    assert!(
        recorded_nics(&sb).contains(&"eth1:plugging:true".into()),
        "the plug finished before the reads: the test proves nothing"
    );
    assert!(plug.wait().unwrap().success(), "add-iface");
    env.ok(&["rm", &id]);
}
