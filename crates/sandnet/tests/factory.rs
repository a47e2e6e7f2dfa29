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

/// containerd keeps its pod netns mounts in a mount namespace of its own; the factory's
/// VMs live in the host's. `run --netns PATH` from such a namespace, where PATH does not
/// resolve in the factory's, still takes a factory VM: the namespace is handed over as a
/// descriptor.
#[test]
fn a_netns_path_only_the_taker_sees_is_handed_over_as_a_descriptor() {
    let p = PodPair::new("facmnt");
    let env = Env::new("facmnt");
    let f = Factory::init(&env, 1);
    let vms = f.ready();
    assert_eq!(vms.len(), 1, "{vms:?}");
    // A private mount namespace, with the pod netns bind-mounted at a path that exists
    // only there.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let holder = Kill(
        std::process::Command::new("unshare")
            .args(["-m", "--propagation", "private", "sleep", "1000"])
            .spawn()
            .expect("unshare -m"),
    );
    let pid = holder.0.id();
    let own = std::fs::read_link("/proc/self/ns/mnt").unwrap();
    wait_for("the mount namespace", Duration::from_secs(5), || {
        std::fs::read_link(format!("/proc/{pid}/ns/mnt")).is_ok_and(|l| l != own)
    });
    let dir = env.state.join("private-netns");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("pod");
    let mnt = format!("--mount=/proc/{pid}/ns/mnt");
    let st = std::process::Command::new("nsenter")
        .args([&mnt, "--", "sh", "-c"])
        .arg(format!(
            "touch {p} && mount --bind {ns} {p}",
            p = path.display(),
            ns = p.pod.path()
        ))
        .status()
        .unwrap();
    assert!(st.success(), "bind mount in the private namespace");
    assert!(
        std::fs::metadata(&path)
            .map(|m| m.len() == 0)
            .unwrap_or(true),
        "outside the private namespace the path must be a plain file"
    );
    let id = sandnet_testkit::unique("facmnt");
    let sb = Sandbox::adopt(&env, &id);
    let mut c = env.cmd(&["run", "--json", "--name", &id, "--netns"]);
    c.arg(&path);
    let prog = c.get_program().to_owned();
    let args: Vec<_> = c.get_args().map(|a| a.to_owned()).collect();
    let envs: Vec<_> = c
        .get_envs()
        .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned())))
        .collect();
    let o = std::process::Command::new("nsenter")
        .args([&mnt, "--"])
        .arg(prog)
        .args(args)
        .envs(envs)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "run: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out: Value = serde_json::from_slice(&o.stdout).unwrap();
    let reason = out["accel_reason"].as_str().unwrap_or("");
    assert!(reason.contains(&format!("factory VM {}", vms[0])), "{out}");
    guest_ping(&sb, "172.19.0.1");
    env.ok(&["rm", &id]);
    drop(sb);
    drop(f);
}

/// `factory init` with no `--count` and no `[factory] vm_cache_number` keeps 2 VMs, and
/// says so; `--count 0` is refused in one line.
#[test]
fn init_without_a_count_keeps_two_vms() {
    let env = Env::new("facdef");
    let o = env.sandnet(&["factory", "init", "--count", "0"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--count must be 1..="), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let o = env.sandnet(&["factory", "init"]);
    let f = Factory(&env);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("keeping 2 VMs ready"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(f.ready().len(), 2);
}
