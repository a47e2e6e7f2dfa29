//! End to end: the real `sandnet` binary boots real guests (QEMU, TCG on these machines) on
//! throw-away pod namespaces, and the network is checked from both sides: the host-side
//! peer pings the guest, the guest pings back (`sandnet exec`), `sandnet inspect` matches
//! the pod's scan, and `sandnet rm` leaves nothing behind — also after the supervisor or
//! QEMU was killed.
//!
//! Each boot takes seconds under TCG on two cores, so there are few of them (one per test
//! that needs a guest), at most two at a time in this binary; checks share a boot where
//! they can. Needs root, the static agent (`scripts/build-agent`) and the guest kernels
//! (`scripts/build-kernel`, `scripts/guest-kernel.sh`), which `scripts/test` prepares.

#[path = "common/guest.rs"]
mod guest;

use guest::{guest_ping, ping_from, Env, Sandbox};
use sandnet_testkit::{assert_fails_with, unique, PodPair, TestNs};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The scan's entry of `name`.
fn scan_iface<'v>(scan: &'v Value, name: &str) -> &'v Value {
    scan["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in the scan: {scan}"))
}

fn sorted(v: &Value) -> Vec<String> {
    let mut s: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| x.as_str().unwrap_or_default().to_string())
        .collect();
    s.sort();
    s
}

/// Asserts that the guest's network (`inspect --json`, or `run --json`) matches the pod's
/// scan for the endpoints `names`: per interface MAC, MTU and addresses (and up); every
/// scanned route through them is in the guest with the same destination, gateway,
/// device, family and MTU.
fn assert_matches_scan(guest: &Value, scan: &Value, names: &[&str]) {
    let gifs = guest["interfaces"].as_array().expect("interfaces");
    for name in names {
        let want = scan_iface(scan, name);
        let got = gifs
            .iter()
            .find(|i| i["name"] == *name)
            .unwrap_or_else(|| panic!("the guest has no {name}: {guest}"));
        assert_eq!(got["mac"], want["mac"], "{name} MAC");
        assert_eq!(got["mtu"], want["mtu"], "{name} MTU");
        assert_eq!(
            sorted(&got["addresses"]),
            sorted(&want["addresses"]),
            "{name} addresses"
        );
        assert_eq!(
            got["flags"].as_u64().unwrap_or(0) & 1,
            1,
            "{name} is up in the guest"
        );
    }
    let groutes = guest["routes"].as_array().expect("routes");
    let mut checked = 0;
    for r in scan["routes"].as_array().expect("routes") {
        if !names.iter().any(|n| r["device"] == *n) {
            continue;
        }
        checked += 1;
        let same = |g: &&Value| {
            ["dest", "gateway", "device", "family"]
                .iter()
                .all(|k| g[k] == r[k])
                && g["mtu"].as_u64().unwrap_or(0) == r["mtu"].as_u64().unwrap_or(0)
        };
        assert!(
            groutes.iter().any(|g| same(&g)),
            "route {r} is not in the guest: {}",
            Value::Array(groutes.clone())
        );
    }
    assert!(checked > 0, "the scan has routes through {names:?}");
}

/// Asserts that `sandnet rm` left nothing of the sandbox: no sandnet link in the pod
/// (taps `sntap*`, macvtaps `snmvt*`), no ingress qdisc or filter on `links`, no process
/// of the state directory, no state directory.
fn assert_clean(env: &Env, pod: &TestNs, id: &str, links: &[&str]) {
    let names = pod.link_names();
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("sntap") || n.starts_with("snmvt")),
        "a sandnet link is left in the pod: {names:?}"
    );
    for l in links {
        let q = pod.tc_json(&["qdisc", "show", "dev", l]);
        assert!(
            !q.as_array()
                .into_iter()
                .flatten()
                .any(|q| q["kind"] == "ingress"),
            "ingress qdisc left on {l}: {q}"
        );
        let f = pod.tc_json(&["filter", "show", "dev", l, "ingress"]);
        assert!(
            f.as_array().is_none_or(|a| a.is_empty()),
            "filter left on {l}: {f}"
        );
    }
    // The processes are gone (a killed one may take a moment to be reaped).
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut left = env.processes();
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        left = env
            .processes()
            .into_iter()
            .filter(|p| !is_zombie(*p))
            .collect();
    }
    assert!(left.is_empty(), "processes left: {left:?}");
    assert!(
        !env.state.join(id).exists(),
        "state directory {} left",
        env.state.join(id).display()
    );
    let attach = env.state.join("attach");
    let plans: Vec<_> = std::fs::read_dir(&attach)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        // The host crate keeps its (empty) per-namespace flock files.
        .filter(|p| p.extension().is_none_or(|x| x != "lock"))
        .collect();
    assert!(plans.is_empty(), "attach state left: {plans:?}");
    assert!(env.ps_entry(id).is_none(), "ps still lists {id}");
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.contains(") Z "))
        .unwrap_or(true)
}

/// `rm` of `id` succeeds, and so does a second one (saying there is nothing to remove).
fn rm_twice(env: &Env, id: &str) {
    env.ok(&["rm", id]);
    let o = env.ok(&["rm", id]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no sandbox"), "second rm says so: {err:?}");
}

/// Waits until `ps` shows `id` with `status`.
fn wait_status(env: &Env, id: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let e = env.ps_entry(id).expect("ps lists the sandbox");
        if e["status"] == status || Instant::now() > deadline {
            assert_eq!(e["status"], status, "ps: {e}");
            return e;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn pid_of(e: &Value, key: &str) -> i32 {
    e[key].as_u64().unwrap_or_else(|| panic!("{key} in {e}")) as i32
}

/// The pod's state as `macvtap` must give it back: MAC, MTU, addresses, routes.
fn pod_state(pod: &TestNs, dev: &str) -> Value {
    let link = pod.link(dev).expect("link");
    let addrs: Vec<Value> = pod.ip_json(&["addr", "show", "dev", dev])[0]["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["scope"] != "link")
        .map(|a| serde_json::json!([a["local"], a["prefixlen"]]))
        .collect();
    let mut routes: Vec<String> = pod
        .ip_json(&["route", "show"])
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r.to_string())
        .collect();
    routes.sort();
    serde_json::json!({
        "mac": link["address"],
        "mtu": link["mtu"],
        "operstate_up": link["flags"].as_array().is_some_and(|f| f.iter().any(|x| x == "UP")),
        "addresses": addrs,
        "routes": routes,
    })
}

#[test]
fn tcfilter_guest_network_matches_the_pod_and_rm_leaves_nothing() {
    let p = PodPair::new("e2etc");
    p.pod.ip(&["link", "set", "eth0", "mtu", "1400"]);
    p.host.ip(&["link", "set", "veth0", "mtu", "1400"]);
    p.pod.ip(&[
        "route",
        "add",
        "10.77.0.0/16",
        "via",
        "172.19.0.1",
        "mtu",
        "1300",
    ]);
    let env = Env::new("e2etc");
    let (sb, out) = Sandbox::run(&env, "tc", &p.pod.name, &[]);
    let id = sb.id.clone();

    // run's JSON: the contract.
    assert_eq!(out["id"], id.as_str());
    assert_eq!(out["netns"], p.pod.name.as_str());
    for k in ["boot_ms", "attach_ms", "agent_ms", "network_ms", "total_ms"] {
        assert!(out["timings"][k].is_u64(), "timings.{k}: {out}");
    }
    let scan = env.ok_json(&["scan", "--netns", &p.pod.name, "--json"]);
    assert_eq!(scan_iface(&scan, "eth0")["mtu"], 1400);
    assert_matches_scan(&out, &scan, &["eth0"]);

    // Both ways over the wire.
    ping_from(&p.host, "172.19.0.5");
    guest_ping(&sb, "172.19.0.1");
    // A full-size frame at the pod's MTU gets through (1400 - 28 bytes of headers).
    let o = Command::new("ip")
        .args([
            "netns",
            "exec",
            &p.host.name,
            "ping",
            "-c1",
            "-W5",
            "-M",
            "do",
            "-s",
            "1372",
            "172.19.0.5",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "MTU-size ping: {o:?}");

    // Exit codes and output pass through exec.
    let o = sb.exec(&["sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!(o.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&o.stderr), "err\n");
    assert_eq!(sb.exec(&["false"]).status.code(), Some(1));
    let o = sb.exec(&["ping", "-c1", "-W1", "172.19.0.99"]);
    assert!(!o.status.success(), "pinging nobody fails in the guest");
    assert_eq!(sb.exec_ok(&["hostname"]).trim(), id);
    // The default guest kernel is sandnet's own (CONFIG_LOCALVERSION="-sandnet").
    let release = sb.exec_ok(&["uname", "-r"]);
    assert!(release.trim().ends_with("-sandnet"), "{release}");

    // inspect: what the guest's agent lists matches the pod's scan.
    let guest = env.ok_json(&["inspect", &id, "--json"]);
    assert_matches_scan(&guest, &scan, &["eth0"]);

    // ps: running, with both pids.
    let e = env.ps_entry(&id).expect("ps lists the sandbox");
    assert_eq!(e["status"], "running", "{e}");
    assert_eq!(e["model"], "tcfilter");
    assert!(
        e["qemu_pid"].is_u64() && e["supervisor_pid"].is_u64(),
        "{e}"
    );
    let qemu = pid_of(&e, "qemu_pid");
    assert!(env.processes().contains(&(qemu as u32)));

    // The same name again is refused and changes nothing.
    let links = p.pod.link_names();
    let o = env.sandnet(&["run", "--name", &id, "--netns", &p.pod.name]);
    assert_fails_with(&o, &[&id, "already exists"]);
    assert_eq!(p.pod.link_names(), links);
    assert!(sb.dir().join("sandbox.json").exists());
    guest_ping(&sb, "172.19.0.1");
    assert_eq!(env.ps_entry(&id).unwrap()["status"], "running");

    // rm: nothing left; rm again is fine.
    rm_twice(&env, &id);
    assert_clean(&env, &p.pod, &id, &["eth0"]);
    assert!(
        !Path::new(&format!("/proc/{qemu}")).exists() || is_zombie(qemu as u32),
        "QEMU is gone"
    );
    // The pod's own link is as it was.
    assert_eq!(p.pod.link("eth0").unwrap()["mtu"], 1400);
}

#[test]
fn debian_cloud_kernel_is_selectable_and_boots() {
    let p = PodPair::new("e2ecloud");
    let env = Env::new("e2ecloud");
    std::fs::write(
        &env.config,
        "[hypervisor.qemu]\nkernel = \"debian-cloud\"\n",
    )
    .unwrap();
    let (sb, _) = Sandbox::run(&env, "cloud", &p.pod.name, &[]);
    let release = sb.exec_ok(&["uname", "-r"]);
    assert!(release.trim().ends_with("-cloud-amd64"), "{release}");
    ping_from(&p.host, "172.19.0.5");
    guest_ping(&sb, "172.19.0.1");
    let id = sb.id.clone();
    rm_twice(&env, &id);
    assert_clean(&env, &p.pod, &id, &["eth0"]);
}

#[test]
fn two_nics_in_one_netns_both_work() {
    let p = PodPair::new("e2etwo");
    p.add_veth("eth1", "veth1", "172.20.0.5/24", "172.20.0.1/24");
    let env = Env::new("e2etwo");
    let (sb, out) = Sandbox::run(&env, "two", &p.pod.name, &[]);
    let scan = env.ok_json(&["scan", "--netns", &p.pod.name, "--json"]);
    assert_matches_scan(&out, &scan, &["eth0", "eth1"]);
    ping_from(&p.host, "172.19.0.5");
    ping_from(&p.host, "172.20.0.5");
    guest_ping(&sb, "172.19.0.1");
    guest_ping(&sb, "172.20.0.1");
    let id = sb.id.clone();
    rm_twice(&env, &id);
    assert_clean(&env, &p.pod, &id, &["eth0", "eth1"]);
}

#[test]
fn macvtap_works_and_rm_restores_the_pod() {
    let p = PodPair::new("e2emvt");
    p.pod.ip(&[
        "route",
        "add",
        "10.78.0.0/16",
        "via",
        "172.19.0.1",
        "mtu",
        "1300",
    ]);
    let before = pod_state(&p.pod, "eth0");
    let scan = {
        let env = Env::new("e2emvt-scan");
        env.ok_json(&["scan", "--netns", &p.pod.name, "--json"])
    };
    let env = Env::new("e2emvt");
    let (sb, out) = Sandbox::run(&env, "mvt", &p.pod.name, &["--model", "macvtap"]);
    assert_matches_scan(&out, &scan, &["eth0"]);
    ping_from(&p.host, "172.19.0.5");
    guest_ping(&sb, "172.19.0.1");
    let guest = env.ok_json(&["inspect", &sb.id, "--json"]);
    assert_matches_scan(&guest, &scan, &["eth0"]);
    assert_eq!(env.ps_entry(&sb.id).unwrap()["model"], "macvtap");
    let id = sb.id.clone();
    rm_twice(&env, &id);
    assert_clean(&env, &p.pod, &id, &["eth0"]);
    assert_eq!(pod_state(&p.pod, "eth0"), before, "the pod is as it was");
}

#[test]
fn supervisor_killed_then_rm_cleans_up_from_state() {
    let p = PodPair::new("e2esup");
    let env = Env::new("e2esup");
    let (sb, _) = Sandbox::run(&env, "sup", &p.pod.name, &[]);
    let id = sb.id.clone();
    let e = wait_status(&env, &id, "running");
    let (sup, qemu) = (pid_of(&e, "supervisor_pid"), pid_of(&e, "qemu_pid"));
    // SAFETY: kill(2) of the supervisor this test started.
    assert_eq!(unsafe { libc::kill(sup, libc::SIGKILL) }, 0);
    let e = wait_status(&env, &id, "supervisor-dead");
    assert_eq!(pid_of(&e, "qemu_pid"), qemu);
    // The guest lives on, but nothing can talk to it: a clear error.
    let o = sb.exec(&["true"]);
    assert_fails_with(&o, &[&id, "supervisor"]);
    rm_twice(&env, &id);
    assert_clean(&env, &p.pod, &id, &["eth0"]);
}

#[test]
fn qemu_killed_then_ps_shows_it_and_rm_cleans_up() {
    let p = PodPair::new("e2eqemu");
    let env = Env::new("e2eqemu");
    let (sb, _) = Sandbox::run(&env, "qemu", &p.pod.name, &[]);
    let id = sb.id.clone();
    let e = wait_status(&env, &id, "running");
    let qemu = pid_of(&e, "qemu_pid");
    // SAFETY: kill(2) of the QEMU this test started.
    assert_eq!(unsafe { libc::kill(qemu, libc::SIGKILL) }, 0);
    wait_status(&env, &id, "qemu-exited");
    // exec without a guest: a clear one-line error.
    let o = sb.exec(&["true"]);
    assert_fails_with(&o, &[&id, "qemu-exited", "VM is not running"]);
    let o = env.sandnet(&["inspect", &id]);
    assert_fails_with(&o, &[&id, "qemu-exited", "VM is not running"]);
    rm_twice(&env, &id);
    assert_clean(&env, &p.pod, &id, &["eth0"]);
}

#[test]
fn bad_input_is_refused_clearly_and_leaves_nothing() {
    let env = Env::new("e2ebad");
    let id = unique("bad");
    let o = env.sandnet(&["run", "--name", &id, "--netns", "sandnet-nope-404"]);
    assert_fails_with(&o, &["sandnet-nope-404"]);
    assert!(!env.state.join(&id).exists(), "no state directory");
    assert!(env.processes().is_empty());

    for cmd in [
        vec!["exec", &id, "--", "true"],
        vec!["inspect", &id],
        vec!["inspect", &id, "--json"],
    ] {
        let o = env.sandnet(&cmd);
        assert_fails_with(&o, &[&id, "no sandbox"]);
    }
    let o = env.ok(&["rm", &id]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("no sandbox"));
    let o = env.ok(&["rm", "--force", &id, &unique("bad")]);
    assert_eq!(String::from_utf8_lossy(&o.stderr).lines().count(), 2);
    let ps = env.ok_json(&["ps", "--json"]);
    assert_eq!(ps, Value::Array(vec![]));
}
