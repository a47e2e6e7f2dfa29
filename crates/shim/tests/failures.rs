//! The shim under a private containerd when things go wrong: bad input, a missing kernel,
//! the shim killed mid-boot, containerd restarted, Remove without Stop, a container removed
//! while it runs.
//! Each leaves the host as it was. Needs what `tests/cri.rs` needs.

mod common;

use common::{wait_until, Containerd, Options};
use std::time::Duration;

fn kill9(pid: u32) {
    // SAFETY: plain syscall.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
}

#[test]
fn bad_netns_path_fails_cleanly() {
    let cd = Containerd::start("badns", Options::default());
    let before = cd.snapshot();
    let o = cd.ctr(&[
        "-n",
        "k8s.io",
        "run",
        "--snapshotter",
        "native",
        "--runtime",
        "io.containerd.sandnet.v2",
        "--with-ns",
        "network:/nonexistent/netns",
        common::image::PAUSE_IMAGE,
        "badns",
    ]);
    assert!(
        !o.status.success(),
        "ctr run succeeded with a bad netns path"
    );
    let err = common::text(&o.stderr);
    assert!(
        err.contains("/nonexistent/netns") && err.contains("network namespace"),
        "{err}"
    );
    let _ = cd.ctr(&["-n", "k8s.io", "containers", "rm", "badns"]);
    cd.wait_clean(&before, Duration::from_secs(20));
}

#[test]
fn missing_kernel_fails_run_pod_cleanly() {
    let cd = Containerd::start(
        "nokernel",
        Options {
            sandnet_config: vec!["kernel = \"/nonexistent/vmlinuz\"".into()],
            ..Default::default()
        },
    );
    let before = cd.snapshot();
    let err = cd
        .run_pod("nokernel", "sandnet")
        .expect_err("RunPodSandbox without kernel");
    assert!(
        err.message().contains("/nonexistent/vmlinuz"),
        "{}",
        err.message()
    );
    cd.wait_clean(&before, Duration::from_secs(30));
}

#[test]
fn shim_killed_mid_boot_leaves_nothing() {
    let cd = Containerd::start("killboot", Options::default());
    let before = cd.snapshot();
    let state = cd.state();
    let shims = || cd.shim_pids();
    std::thread::scope(|s| {
        let run = s.spawn(|| cd.run_pod("killboot", "sandnet"));
        // Mid-boot: QEMU started, the guest not configured yet.
        wait_until("QEMU to start", Duration::from_secs(60), || {
            std::fs::read_dir(&state)
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| {
                    let id = e.file_name().to_string_lossy().into_owned();
                    id.len() == 64 && cd.qemu_pid(&id).is_some()
                })
        });
        for p in shims() {
            kill9(p);
        }
        let r = run.join().unwrap();
        assert!(
            r.is_err(),
            "RunPodSandbox succeeded although its shim was killed"
        );
    });
    cd.wait_clean(&before, Duration::from_secs(60));
}

#[test]
fn containerd_restart_reconnects_and_remove_without_stop_cleans() {
    let cd = Containerd::start("restart", Options::default());
    let before = cd.snapshot();
    let id = cd.run_pod("restart", "sandnet").expect("RunPodSandbox");
    let shim = cd.shim_pid(&id).expect("shim runs");
    cd.restart();
    // CRI recovers its sandboxes (asking the shim for the task's state) as it starts.
    wait_until(
        "the pod READY after containerd's restart",
        Duration::from_secs(20),
        || cd.ready(&id),
    );
    assert_eq!(cd.shim_pid(&id), Some(shim), "the same shim serves the pod");
    let ip = cd.status(&id).unwrap().0.network.unwrap_or_default().ip;
    assert!(cd.ping(&ip), "guest does not answer at {ip} after restart");
    // Remove without Stop: CRI stops first.
    cd.remove_pod(&id).expect("RemovePodSandbox without Stop");
    wait_until("the shim to exit", Duration::from_secs(15), || {
        cd.shim_pid(&id).is_none()
    });
    cd.wait_clean(&before, Duration::from_secs(20));
}

#[test]
fn container_removed_while_running_leaves_nothing() {
    let cd = Containerd::start("ctr", Options::default());
    let id = cd.run_pod("ctrpod", "sandnet").expect("RunPodSandbox");
    let shims = cd.shim_pids();
    let before = cd.snapshot();
    // Create, start (the image sleeps), remove at once (CRI kills it first).
    cd.run_container(&id, "ctrpod", "app")
        .unwrap_or_else(|e| panic!("a container in a sandnet pod: {e}\n{}", cd.log()));
    assert_eq!(
        cd.shim_pids(),
        shims,
        "the pod's shim serves its containers"
    );
    cd.wait_clean(&before, Duration::from_secs(20));
    assert!(cd.ready(&id), "the pod suffered from the container");
    cd.stop_pod(&id).unwrap();
    cd.remove_pod(&id).unwrap();
}

#[test]
fn shim_killed_when_ready_is_cleaned_by_containerd_delete() {
    let cd = Containerd::start("killready", Options::default());
    let before = cd.snapshot();
    let id = cd.run_pod("killready", "sandnet").expect("RunPodSandbox");
    let qemu = cd.qemu_pid(&id).expect("QEMU pid");
    kill9(cd.shim_pid(&id).expect("shim runs"));
    // containerd sees the shim gone, runs `containerd-shim-sandnet-v2 … delete`, which
    // removes the sandbox from its state: no QEMU, no taps, no record.
    wait_until("QEMU to be stopped", Duration::from_secs(30), || {
        !std::path::Path::new(&format!("/proc/{qemu}")).exists()
    });
    wait_until("the pod to be NOTREADY", Duration::from_secs(30), || {
        !cd.ready(&id)
    });
    assert!(cd.sandnet_ids().is_empty(), "sandnet still has the sandbox");
    cd.stop_pod(&id).expect("StopPodSandbox");
    cd.remove_pod(&id).expect("RemovePodSandbox");
    cd.wait_clean(&before, Duration::from_secs(20));
}

#[test]
fn qemu_dying_makes_the_pod_notready() {
    let cd = Containerd::start("qemudies", Options::default());
    let before = cd.snapshot();
    let id = cd.run_pod("qemudies", "sandnet").expect("RunPodSandbox");
    kill9(cd.qemu_pid(&id).expect("QEMU pid"));
    // The shim sees the VM gone: TaskExit, the pending Wait returns, CRI marks it.
    wait_until("the pod to be NOTREADY", Duration::from_secs(30), || {
        !cd.ready(&id)
    });
    let tasks = common::text(&cd.ctr(&["-n", "k8s.io", "tasks", "ls"]).stdout);
    assert!(!tasks.contains("RUNNING"), "{tasks}");
    cd.stop_pod(&id).expect("StopPodSandbox");
    cd.remove_pod(&id).expect("RemovePodSandbox");
    cd.wait_clean(&before, Duration::from_secs(20));
}

#[test]
fn shim_and_containerd_killed_sandnet_gc_removes_the_sandbox() {
    let cd = Containerd::start("gc", Options::default());
    let before = cd.snapshot();
    let id = cd.run_pod("gc", "sandnet").expect("RunPodSandbox");
    let qemu = cd.qemu_pid(&id).expect("QEMU pid");
    // Nobody left to run the shim's `delete`.
    cd.kill_containerd();
    kill9(cd.shim_pid(&id).expect("shim runs"));
    std::thread::sleep(Duration::from_millis(300));
    assert!(std::path::Path::new(&format!("/proc/{qemu}")).exists());
    // What `sandnet gc` runs.
    let rt = sandnet_runtime::api::Runtime::new(cd.state(), "/bin/false", vec![]);
    let mut rep = cd.rt.block_on(rt.gc()).expect("gc");
    cd.rt.block_on(rt.gc_orphans(&mut rep));
    assert_eq!(rep.sandboxes, vec![id.clone()], "{:?}", rep);
    assert!(
        !std::path::Path::new(&format!("/proc/{qemu}")).exists(),
        "QEMU still runs"
    );
    assert!(cd.sandnet_ids().is_empty());
    // containerd comes back, finds the shim dead, and the pod goes away as usual.
    cd.restart();
    wait_until("the pod NOTREADY", Duration::from_secs(20), || {
        !cd.ready(&id)
    });
    cd.stop_pod(&id).expect("StopPodSandbox");
    cd.remove_pod(&id).expect("RemovePodSandbox");
    cd.wait_clean(&before, Duration::from_secs(20));
}
