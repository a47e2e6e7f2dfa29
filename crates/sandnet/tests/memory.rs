//! Host memory of a sandbox, against a real guest: with sandnet's defaults the guest has a
//! virtio balloon whose free page reporting gives back what the guest frees (64 MiB written
//! to its tmpfs and removed leave QEMU's resident memory within reach of where it was),
//! and under TCG QEMU runs with sandnet's translation cache size.

use sandnet_runtime::api::{PodNetns, Runtime, SandboxRequest};
use sandnet_runtime::config::{Config, DEFAULT_TCG_TB_SIZE_MIB};
use sandnet_testkit::PodPair;
use std::time::{Duration, Instant};

#[path = "common/guest.rs"]
mod guest;
use guest::{Env, Sandbox};

/// QEMU's anonymous memory in MiB.
fn anon_mib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .expect("smaps_rollup")
        .lines()
        .find(|l| l.starts_with("Anonymous:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .expect("Anonymous:")
        / 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freed_guest_memory_goes_back_to_the_host() {
    let tag = "mem";
    let pair = PodPair::new(tag);
    let env = Env::new(tag);
    let rt = Runtime::new(
        env.state.to_path_buf(),
        env!("CARGO_BIN_EXE_sandnet"),
        vec!["--state-dir".into(), env.state.as_os_str().to_owned()],
    );
    let mut req = SandboxRequest::new(Config::default());
    req.netns = PodNetns::Existing(pair.pod.path());
    req.use_factory = false;
    let sb = rt.run(&req, &mut |_| {}).await.expect("run");
    let guard = Sandbox::adopt(&env, sb.id());
    let sh = |script: &str| guard.exec_ok(&["sh", "-c", script]);
    let st = sb.state().expect("state");
    let qemu = st.qemu_pid.expect("QEMU pid");

    // The command line: a balloon with free page reporting; the TCG cache capped.
    let cmdline = std::fs::read(format!("/proc/{qemu}/cmdline")).expect("cmdline");
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    assert!(
        args.iter()
            .any(|a| a.starts_with("virtio-balloon-pci") && a.contains("free-page-reporting=on")),
        "{args:?}"
    );
    if st.accel == "tcg" {
        let want = format!("tcg,tb-size={DEFAULT_TCG_TB_SIZE_MIB}");
        assert!(args.contains(&want), "{want} not in {args:?}");
    }
    // The guest bound its driver to the balloon.
    let bound = sh("ls /sys/bus/virtio/drivers/virtio_balloon/");
    assert!(
        bound.contains("virtio"),
        "no balloon device bound: {bound:?}"
    );

    let before = anon_mib(qemu);
    sh("dd if=/dev/zero of=/tmp/fill bs=1M count=64 2>/dev/null && sync");
    let peak = anon_mib(qemu);
    assert!(
        peak >= before + 48,
        "64 MiB in the guest's tmpfs should show on the host: {before} -> {peak} MiB"
    );
    sh("rm /tmp/fill");
    // Page reporting runs about 2 s after pages are freed.
    let t = Instant::now();
    let mut now = anon_mib(qemu);
    while now > before + 16 && t.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        now = anon_mib(qemu);
    }
    assert!(
        now <= before + 16,
        "freed guest memory not given back: {before} MiB before, {peak} with 64 MiB written, \
         {now} {:?} after removing it",
        t.elapsed()
    );
    eprintln!(
        "QEMU anonymous: {before} MiB idle, {peak} with 64 MiB written, {now} after removal \
         ({} ms)",
        t.elapsed().as_millis()
    );
    sb.remove(true).await.expect("remove");
}
