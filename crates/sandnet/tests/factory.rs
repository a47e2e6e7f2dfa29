//! The VM factory against real guests: `factory init` returns with VMs ready, `run` takes
//! one (and the factory boots a replacement), the sandbox works like any other, a VM is
//! never reused, a dead factory VM is replaced, and a killed factory leaves nothing after
//! `gc`. Needs root, the static agent and the guest kernel.

#[path = "common/guest.rs"]
mod guest;

use guest::{guest_ping, ping_from, Env, Sandbox};
use sandnet_testkit::{pids_mentioning, PodPair};
use serde_json::Value;
use std::time::{Duration, Instant};

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

/// A factory of this test's own state root; destroyed on drop.
struct Factory<'a>(&'a Env);

impl<'a> Factory<'a> {
    fn init(env: &'a Env, count: u32) -> Factory<'a> {
        let f = Factory(env);
        env.ok(&["factory", "init", "--count", &count.to_string()]);
        f
    }

    fn ready(&self) -> Vec<String> {
        let v = self.0.ok_json(&["factory", "status", "--json"]);
        v["vms"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["status"] == "ready")
            .map(|x| x["vm"].as_str().unwrap().to_string())
            .collect()
    }
}

impl Drop for Factory<'_> {
    fn drop(&mut self) {
        let _ = self.0.sandnet(&["factory", "destroy"]);
    }
}

fn state_dir_processes(env: &Env) -> Vec<(u32, String)> {
    pids_mentioning(&env.state.display().to_string())
}

#[test]
fn run_takes_a_ready_vm_which_is_replaced_and_never_reused() {
    let p = PodPair::new("fact");
    let links_before = p.pod.link_names();
    let env = Env::new("fact");
    let f = Factory::init(&env, 1);
    let first = f.ready();
    assert_eq!(first.len(), 1, "{first:?}");
    let (sb, out) = Sandbox::run(&env, "warm", &p.pod.name, &[]);
    let reason = out["accel_reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("factory VM {}", first[0])),
        "{out}"
    );
    assert!(out["timings"]["factory_ms"].is_u64(), "{out}");
    assert!(
        out["timings"].get("boot_ms").is_none(),
        "nothing booted: {out}"
    );
    ping_from(&p.host, "172.19.0.5");
    guest_ping(&sb, "172.19.0.1");
    assert_eq!(sb.exec_ok(&["hostname"]).trim(), sb.id);
    assert_eq!(env.ps_entry(&sb.id).unwrap()["status"], "running");
    // A replacement boots; the taken VM is not offered again.
    wait_for("a replacement VM", Duration::from_secs(120), || {
        f.ready().iter().any(|v| v != &first[0])
    });
    assert!(!f.ready().contains(&first[0]));
    env.ok(&["rm", &sb.id]);
    drop(sb);
    assert_eq!(p.pod.link_names(), links_before);
    assert!(!env.state.join("factory/vms").join(&first[0]).exists());
    // --no-factory boots its own.
    let (sb2, out2) = Sandbox::run(&env, "cold", &p.pod.name, &["--no-factory"]);
    assert!(
        !out2["accel_reason"].as_str().unwrap().contains("factory"),
        "{out2}"
    );
    env.ok(&["rm", &sb2.id]);
    drop(sb2);
    drop(f);
    assert!(
        state_dir_processes(&env).is_empty(),
        "{:?}",
        state_dir_processes(&env)
    );
    assert!(!env.state.join("factory").exists());
}

#[test]
fn a_dead_vm_is_replaced_and_a_killed_factory_leaves_nothing_after_gc() {
    let env = Env::new("factkill");
    let f = Factory::init(&env, 2);
    let vms = f.ready();
    assert_eq!(vms.len(), 2);
    let rec: Value = serde_json::from_slice(
        &std::fs::read(env.state.join("factory/vms").join(&vms[0]).join("vm.json")).unwrap(),
    )
    .unwrap();
    let qemu = rec["qemu_pid"].as_u64().unwrap() as i32;
    // SAFETY: kill(2) of a QEMU of this test's factory.
    unsafe { libc::kill(qemu, libc::SIGKILL) };
    wait_for("the dead VM replaced", Duration::from_secs(120), || {
        let r = f.ready();
        r.len() == 2 && !r.contains(&vms[0])
    });
    assert!(!env.state.join("factory/vms").join(&vms[0]).exists());
    // The daemon killed: its VMs live on until gc removes them.
    let d: Value =
        serde_json::from_slice(&std::fs::read(env.state.join("factory/factory.json")).unwrap())
            .unwrap();
    // SAFETY: kill(2) of this test's factory daemon.
    unsafe { libc::kill(d["pid"].as_u64().unwrap() as i32, libc::SIGKILL) };
    wait_for("the daemon gone", Duration::from_secs(10), || {
        env.ok_json(&["factory", "status", "--json"])["daemon"].is_null()
    });
    env.ok(&["gc"]);
    wait_for("no process of the factory", Duration::from_secs(10), || {
        state_dir_processes(&env).is_empty()
    });
    let left: Vec<_> = std::fs::read_dir(env.state.join("factory/vms"))
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    drop(f);
}
