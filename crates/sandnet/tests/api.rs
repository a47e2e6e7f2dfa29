//! The runtime API a shim or a monitor uses, against a real guest: a typed request in, a
//! handle out that inspects, executes, stops (the VM only), waits for the exit and removes.
//! Supervisors are the real `sandnet` binary; the pod namespace is a throw-away one.

use sandnet_runtime::api::{PodNetns, Runtime, SandboxRequest};
use sandnet_runtime::config::Config;
use sandnet_runtime::sandbox::Health;
use sandnet_testkit::{pids_mentioning, PodPair, TempDir};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_handle_inspect_exec_stop_wait_remove() {
    let pair = PodPair::new("api");
    let state = TempDir::new("api-state");
    let rt = Runtime::new(
        state.to_path_buf(),
        env!("CARGO_BIN_EXE_sandnet"),
        vec!["--state-dir".into(), state.as_os_str().to_owned()],
    );
    let mut req = SandboxRequest::new(Config::default());
    req.netns = PodNetns::Existing(pair.pod.path());
    let sb = rt.run(&req, &mut |_| {}).await.expect("run");
    // Removed even when an assertion below fails.
    struct Guard(std::path::PathBuf, String);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = std::process::Command::new(env!("CARGO_BIN_EXE_sandnet"))
                .arg("--state-dir")
                .arg(&self.0)
                .args(["rm", "--force", &self.1])
                .output();
        }
    }
    let _guard = Guard(state.to_path_buf(), sb.id().to_string());
    let ready = sb.ready().expect("run reports");
    assert_eq!(ready.interfaces.len(), 1, "{ready:?}");
    assert_eq!(sb.health(), Health::Running);

    let net = sb.inspect().await.expect("inspect");
    assert!(net.interfaces.iter().any(|i| i.name == "eth0"), "{net:?}");
    let out = sb
        .exec(
            &["sh".into(), "-c".into(), "exit 7".into()],
            Duration::from_secs(20),
        )
        .await
        .expect("exec");
    assert_eq!(out.exit_code, 7);
    assert_eq!(rt.list().unwrap().len(), 1);

    // Stop: the VM goes, the record and the network stay; stopping again is fine.
    let waiter = {
        let sb = sb.clone();
        tokio::spawn(async move { sb.wait_exit(Duration::from_millis(50)).await })
    };
    sb.stop(false).await.expect("stop");
    let exit = tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .expect("wait_exit returns after stop")
        .unwrap();
    assert_eq!(exit.health, Health::QemuExited);
    assert!(!exit.removed);
    sb.stop(true).await.expect("stop twice");
    assert!(sb.state().is_ok(), "the record stays until remove");
    assert!(
        !pair.pod.link_names().is_empty(),
        "the pod network stays until remove"
    );
    let dir = state.to_path_buf().join(sb.id());
    assert!(
        pids_mentioning(&format!("{}/", dir.display()))
            .iter()
            .all(|(_, cmd)| !cmd.contains("qemu")),
        "QEMU still runs after stop"
    );
    assert!(sb.inspect().await.is_err(), "inspect of a stopped VM fails");

    let rep = sb.remove(false).await.expect("remove");
    assert!(!rep.not_found);
    assert!(!dir.exists());
    assert!(pids_mentioning(&dir.display().to_string()).is_empty());
    let again = rt
        .handle(sb.id())
        .remove(false)
        .await
        .expect("remove again");
    assert!(again.not_found);
    assert!(rt.get(sb.id()).is_err());
    let exit = sb.wait_exit(Duration::from_millis(50)).await;
    assert!(exit.removed);
}
