//! The real CRI flow through a private containerd 1.6 and the sandnet shim: RunPodSandbox
//! boots a VM in the pod namespace containerd made, Stop/Remove leave the host as before.
//! Needs root, containerd, the guest kernel and the static agent (`scripts/build-agent`);
//! where KVM does not work the accelerator falls back to TCG by itself.

mod common;

use common::{wait_until, Containerd, Options};
use std::time::Duration;

fn netns_inode(path: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map(|m| m.ino()).unwrap_or(0)
}

#[test]
fn run_pod_ping_stop_remove_leaves_host_as_before() {
    let cd = Containerd::start("flow", Options::default());
    let before = cd.snapshot();
    // containerd's event stream, to see the shim's task events arrive.
    let events_file = cd.dir.join("events.txt");
    let mut events = std::process::Command::new("ctr")
        .arg("--address")
        .arg(cd.sock())
        .args(["events"])
        .stdout(std::fs::File::create(&events_file).unwrap())
        .spawn()
        .expect("ctr events");
    std::thread::sleep(Duration::from_millis(300));

    let id = cd
        .run_pod("flow", "sandnet")
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\ncontainerd log:\n{}", cd.log()));
    assert_eq!(id.len(), 64);
    let (st, info) = cd.status(&id).unwrap();
    assert_eq!(st.state, k8s_cri::v1::PodSandboxState::SandboxReady as i32);
    let ip = st
        .network
        .as_ref()
        .map(|n| n.ip.clone())
        .unwrap_or_default();
    assert!(
        ip.starts_with(&format!("{}.", cd.prefix)),
        "pod IP {ip} not in {}.0/24",
        cd.prefix
    );
    assert!(cd.ping(&ip), "the guest does not answer ping at {ip}");

    // The VM is the task: QEMU sits in the pod namespace containerd made.
    let qemu = cd.qemu_pid(&id).expect("sandnet state has QEMU's pid");
    let netns_path = common::pod_netns_path(&info).expect("netns path in the runtime spec");
    // Seen from containerd's mount namespace (the bind mount is only there); /var/run is
    // an absolute symlink, which would resolve in ours.
    let in_cd = netns_path.replacen("/var/run/", "/run/", 1);
    let pod_ns = netns_inode(&format!("/proc/{}/root{in_cd}", cd.containerd_pid()));
    assert_ne!(pod_ns, 0);
    assert_eq!(netns_inode(&format!("/proc/{qemu}/ns/net")), pod_ns);
    assert_eq!(
        info["pid"].as_u64(),
        Some(qemu as u64),
        "task pid is QEMU's"
    );

    // ctr sees the task running; sandnet sees the sandbox under the CRI id and execs in it.
    let tasks = common::text(&cd.ctr(&["-n", "k8s.io", "tasks", "ls"]).stdout);
    assert!(
        tasks
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("RUNNING")),
        "{tasks}"
    );
    assert_eq!(cd.sandnet_ids(), vec![id.clone()]);
    let h = sandnet_runtime::api::Runtime::new(cd.state(), "/bin/false", vec![]).handle(&id);
    let out = cd
        .rt
        .block_on(h.exec(&["ip".into(), "addr".into()], Duration::from_secs(30)))
        .expect("exec in the guest");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&ip),
        "guest has no {ip}"
    );

    cd.stop_pod(&id).expect("StopPodSandbox");
    assert!(!cd.ready(&id), "still READY after stop");
    assert!(
        !std::path::Path::new(&format!("/proc/{qemu}")).exists(),
        "QEMU still runs"
    );
    cd.stop_pod(&id).expect("StopPodSandbox twice");

    cd.remove_pod(&id).expect("RemovePodSandbox");
    wait_until("the shim to exit", Duration::from_secs(15), || {
        cd.shim_pid(&id).is_none()
    });
    let _ = events.kill();
    let _ = events.wait();
    let log = std::fs::read_to_string(&events_file).unwrap();
    for topic in [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exit",
        "/tasks/delete",
    ] {
        assert!(
            log.lines().any(|l| l.contains(topic) && l.contains(&id)),
            "no {topic} event for the pod:\n{log}"
        );
    }
    assert!(
        !std::path::Path::new(&netns_path).exists(),
        "pod netns {netns_path} left"
    );
    let after = cd.snapshot();
    assert_eq!(before, after, "host differs after Remove");
}

fn oom_score_adj(pid: u32) -> i32 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).unwrap();
    s.trim().parse().unwrap()
}

/// As containerd's runc shim: the shim daemon's OOM score is containerd's + 1, and the
/// sandbox's supervisor and QEMU, started by the shim, have the same.
#[test]
fn shim_supervisor_and_qemu_get_containerds_oom_score_plus_one() {
    let cd = Containerd::start("oom", Options::default());
    let containerd = cd.containerd_pid();
    // A score of containerd's own that no process has by chance (raised: lowering needs
    // CAP_SYS_RESOURCE, which a containerized test host may lack).
    std::fs::write(format!("/proc/{containerd}/oom_score_adj"), "321").unwrap();
    let id = cd
        .run_pod("oom", "sandnet")
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\ncontainerd log:\n{}", cd.log()));
    let shim = cd.shim_pid(&id).expect("shim runs");
    assert_eq!(oom_score_adj(shim), 322, "the shim's score");
    let st = std::fs::read_to_string(cd.state().join(&id).join("sandbox.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&st).unwrap();
    let supervisor = v["supervisor_pid"].as_u64().expect("supervisor pid") as u32;
    let qemu = cd.qemu_pid(&id).expect("QEMU pid");
    assert_eq!(oom_score_adj(supervisor), 322, "the supervisor's score");
    assert_eq!(oom_score_adj(qemu), 322, "QEMU's score");
    cd.stop_pod(&id).expect("StopPodSandbox");
    cd.remove_pod(&id).expect("RemovePodSandbox");
}
