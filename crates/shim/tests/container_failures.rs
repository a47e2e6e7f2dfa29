//! Containers of a sandnet pod when things go wrong: QEMU killed under running containers,
//! the shim killed with containers running, containerd restarted, a factory running.
//! Each ends with the host as it was (mounts under containerd's state included). Needs
//! what `tests/cri.rs` needs.

mod common;

use common::containers::sh;
use common::{wait_until, Containerd, Options};
use std::time::Duration;

fn kill9(pid: u32) {
    // SAFETY: plain syscall.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
}

fn sleeper(cd: &Containerd, name: &str) -> k8s_cri::v1::ContainerConfig {
    cd.command_config(name, sh("echo up; exec /bin/busybox sleep 100000"))
}

/// Nothing of the pod's containers is mounted anywhere below containerd's directory (the
/// bundles' rootfs, sandnet's share) in containerd's mount namespace.
fn assert_no_mounts(cd: &Containerd) {
    let m = cd.mounts_under(&cd.dir);
    assert!(m.is_empty(), "mounts left: {m:?}");
}

/// The `sandnet` binary beside the shim (built here when this test runs alone).
fn sandnet_bin() -> std::path::PathBuf {
    let p = std::path::Path::new(common::SHIM).with_file_name("sandnet");
    let st = std::process::Command::new(env!("CARGO"))
        .args(["build", "-p", "sandnet"])
        .status()
        .expect("cargo build -p sandnet");
    assert!(st.success() && p.exists(), "no {}", p.display());
    p
}

#[test]
fn qemu_killed_ends_every_container_with_a_status() {
    let cd = Containerd::start("cqemu", Options::default());
    let before = cd.snapshot();
    let pod = cd.run_pod("cqemu", "sandnet").expect("RunPodSandbox");
    let a = cd.launch(&pod, "cqemu", sleeper(&cd, "a"));
    let b = cd.launch(&pod, "cqemu", sleeper(&cd, "b"));
    kill9(cd.qemu_pid(&pod).expect("QEMU pid"));
    for id in [&a, &b] {
        let st = cd.wait_exited(id, Duration::from_secs(30));
        assert_eq!(
            st.state,
            k8s_cri::v1::ContainerState::ContainerExited as i32
        );
        assert_eq!(st.exit_code, 255, "a container of a dead VM: {st:?}");
    }
    wait_until("the pod NOTREADY", Duration::from_secs(30), || {
        !cd.ready(&pod)
    });
    for id in [&a, &b] {
        cd.remove_container(id).expect("RemoveContainer");
    }
    cd.stop_pod(&pod).expect("StopPodSandbox");
    cd.remove_pod(&pod).expect("RemovePodSandbox");
    cd.wait_clean(&before, Duration::from_secs(30));
    assert_no_mounts(&cd);
}

#[test]
fn shim_killed_with_containers_running_leaves_nothing_after_delete_and_gc() {
    let cd = Containerd::start("ckill", Options::default());
    let before = cd.snapshot();
    let pod = cd.run_pod("ckill", "sandnet").expect("RunPodSandbox");
    let c = cd.launch(&pod, "ckill", sleeper(&cd, "app"));
    let qemu = cd.qemu_pid(&pod).expect("QEMU pid");
    assert!(
        !cd.mounts_under(&cd.dir).is_empty(),
        "the running container has no mounts: the test proves nothing"
    );
    kill9(cd.shim_pid(&pod).expect("shim runs"));
    // containerd sees the shim gone and runs the shim's `delete` for its tasks.
    wait_until("QEMU to be stopped", Duration::from_secs(30), || {
        !std::path::Path::new(&format!("/proc/{qemu}")).exists()
    });
    let st = cd.wait_exited(&c, Duration::from_secs(30));
    assert_eq!(
        st.state,
        k8s_cri::v1::ContainerState::ContainerExited as i32
    );
    let _ = cd.remove_container(&c);
    cd.stop_pod(&pod).expect("StopPodSandbox");
    cd.remove_pod(&pod).expect("RemovePodSandbox");
    // What `sandnet gc` runs, in containerd's mount namespace's view: nothing left.
    let rt = sandnet_runtime::api::Runtime::new(cd.state(), "/bin/false", vec![]);
    let mut rep = cd.rt.block_on(rt.gc()).expect("gc");
    cd.rt.block_on(rt.gc_orphans(&mut rep));
    assert!(rep.failures.is_empty(), "{rep:?}");
    cd.wait_clean(&before, Duration::from_secs(30));
    assert_no_mounts(&cd);
    assert!(cd.sandnet_ids().is_empty());
}

#[test]
fn containerd_restart_keeps_containers_running() {
    let cd = Containerd::start("crestart", Options::default());
    let before = cd.snapshot();
    let pod = cd.run_pod("crestart", "sandnet").expect("RunPodSandbox");
    let c = cd.launch(&pod, "crestart", sleeper(&cd, "app"));
    // One that exits (3) when told, after the restart.
    let late = cd.launch(
        &pod,
        "crestart",
        cd.command_config(
            "late",
            sh("echo up; while [ ! -e /go ]; do /bin/busybox sleep 0.1; done; exit 3"),
        ),
    );
    let shim = cd.shim_pid(&pod).expect("shim");
    let qemu = cd.qemu_pid(&pod).expect("QEMU");
    cd.restart();
    wait_until(
        "the pod READY after containerd's restart",
        Duration::from_secs(30),
        || cd.ready(&pod),
    );
    assert_eq!(
        cd.shim_pid(&pod),
        Some(shim),
        "the same shim serves the pod"
    );
    assert_eq!(cd.qemu_pid(&pod), Some(qemu), "the same VM runs");
    let st = cd.container_status(&c).expect("ContainerStatus");
    assert_eq!(
        st.state,
        k8s_cri::v1::ContainerState::ContainerRunning as i32,
        "{st:?}"
    );
    let r = cd
        .exec_sync(&c, &["/bin/busybox", "echo", "still here"])
        .expect("ExecSync after the restart");
    assert_eq!(common::text(&r.stdout).trim(), "still here");
    // An exit after the restart reaches the new containerd.
    let r = cd
        .exec_sync(&late, &["/bin/busybox", "touch", "/go"])
        .expect("ExecSync after the restart");
    assert_eq!(r.exit_code, 0, "touch /go: {}", common::text(&r.stderr));
    let st = cd.wait_exited(&late, Duration::from_secs(30));
    assert_eq!(st.exit_code, 3, "{st:?}");
    cd.remove_container(&late)
        .expect("RemoveContainer of an exited one");
    cd.stop_container(&c, 2).expect("StopContainer");
    cd.remove_container(&c).expect("RemoveContainer");
    cd.stop_pod(&pod).expect("StopPodSandbox");
    cd.remove_pod(&pod).expect("RemovePodSandbox");
    cd.wait_clean(&before, Duration::from_secs(30));
    assert_no_mounts(&cd);
}

/// With a sandnet factory running under the shim's state root, RunPodSandbox still works:
/// a pod for containers boots its own VM (factory VMs have no shared directory, and a log
/// line says so), and with `shared_fs = "none"` a pod takes a factory VM, the pod netns
/// (a path in containerd's mount namespace only) handed over as a descriptor.
#[test]
fn run_pod_with_a_factory_running() {
    for (tag, extra, takes) in [
        ("cfac", vec![], false),
        ("cfacn", vec!["shared_fs = \"none\"".to_string()], true),
    ] {
        let cd = Containerd::start(
            tag,
            Options {
                sandnet_config: extra.clone(),
                ..Default::default()
            },
        );
        let sandnet = sandnet_bin();
        let cfg = cd.dir.join("sandnet.toml");
        let o = std::process::Command::new(&sandnet)
            .args(["factory", "init", "--count", "1", "--config"])
            .arg(&cfg)
            .env("SANDNET_STATE_DIR", cd.state())
            .output()
            .expect("sandnet factory init (cargo builds the sandnet binary with the tests)");
        struct Destroy(std::path::PathBuf, std::path::PathBuf);
        impl Drop for Destroy {
            fn drop(&mut self) {
                let _ = std::process::Command::new(&self.0)
                    .args(["factory", "destroy"])
                    .env("SANDNET_STATE_DIR", &self.1)
                    .output();
            }
        }
        let _destroy = Destroy(sandnet.clone(), cd.state());
        assert!(o.status.success(), "{}", common::text(&o.stderr));
        let pod = cd
            .run_pod(tag, "sandnet")
            .unwrap_or_else(|e| panic!("RunPodSandbox with a factory: {e}\n{}", cd.log()));
        let ip = cd.pod_ip(&pod);
        assert!(cd.ping(&ip), "the pod does not answer at {ip}");
        let st = std::fs::read_to_string(cd.state().join(&pod).join("sandbox.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&st).unwrap();
        let took = v["factory_vm"].is_string();
        assert_eq!(took, takes, "{tag}: {v}");
        cd.stop_pod(&pod).expect("StopPodSandbox");
        cd.remove_pod(&pod).expect("RemovePodSandbox");
    }
}
