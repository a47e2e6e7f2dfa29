//! The sandbox's shared directory (what containers' files travel through), against real
//! guests, for both transports: the guest mounts the share the way the agent's `Storage`
//! says, sees files and bind mounts made on the host after boot, writes back; the
//! supervisor's `ctr.sock` forwards to the guest's agent; remove detaches what a
//! dead shim left mounted in the share without touching what was mounted there.

use sandnet_runtime::api::{PodNetns, Runtime, SandboxRequest};
use sandnet_runtime::config::Config;
use sandnet_runtime::shared::{mounts_below, SharedFs};
use sandnet_testkit::{PodPair, TempDir};

#[path = "common/guest.rs"]
mod guest;
use guest::{Env, Sandbox};
use std::process::Command;
use std::time::Duration;

async fn share_round_trip(fs: SharedFs, tag: &str) {
    let pair = PodPair::new(tag);
    let env = Env::new(tag);
    let state = &env.state;
    let volume = TempDir::new(&format!("{tag}-vol"));
    std::fs::write(volume.join("from-host"), "volume data\n").unwrap();
    let rt = Runtime::new(
        state.to_path_buf(),
        env!("CARGO_BIN_EXE_sandnet"),
        vec!["--state-dir".into(), state.as_os_str().to_owned()],
    );
    let mut cfg = Config::default();
    cfg.qemu.shared_fs = fs;
    let mut req = SandboxRequest::new(cfg);
    req.netns = PodNetns::Existing(pair.pod.path());
    req.shared_dir = true;
    let sb = rt.run(&req, &mut |_| {}).await.expect("run");
    // Removed (and its processes killed) even when an assertion fails.
    let _guard = Sandbox::adopt(&env, sb.id());

    let share = sb.shared_dir().expect("shared dir");
    assert_eq!(share.fs, fs);
    assert!(share.host.is_dir(), "{} missing", share.host.display());
    // A file written before the guest mounts, and a bind mount made after boot (what the
    // shim does for a container's rootfs and volumes).
    std::fs::write(share.host.join("hello"), "hello from the host\n").unwrap();
    let target = share.host.join("c1/vol");
    std::fs::create_dir_all(&target).unwrap();
    let st = Command::new("mount")
        .args(["--bind"])
        .arg(volume.as_os_str())
        .arg(&target)
        .status()
        .unwrap();
    assert!(st.success(), "bind mount into the share");

    let m = fs.guest_mount().expect("a guest mount");
    let script = format!(
        "mkdir -p {mp} && mount -t {t} -o {o} {src} {mp} && cat {mp}/hello {mp}/c1/vol/from-host \
         && echo guest > {mp}/c1/vol/from-guest",
        mp = m.mount_point,
        t = m.fstype,
        o = if m.options.is_empty() {
            "defaults".to_string()
        } else {
            m.options.join(",")
        },
        src = m.source,
    );
    let out = sb
        .exec(&["sh".into(), "-c".into(), script], Duration::from_secs(30))
        .await
        .expect("exec");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.exit_code,
        0,
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("hello from the host"), "{stdout}");
    assert!(stdout.contains("volume data"), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(volume.join("from-guest")).unwrap(),
        "guest\n"
    );

    // ctr.sock answers, forwarding to the guest's agent.
    let sock = sb.containers_socket();
    let c = sandnet_agent_proto::AgentClient::connect(&sock, Duration::from_secs(5))
        .await
        .expect("connect ctr.sock");
    assert!(c.version().await.unwrap().starts_with("sandnet-agent"));
    // The network methods are not forwarded: they are the supervisor's.
    assert!(c.list_interfaces().await.is_err());

    // Remove with the bind mount still there (a shim that died): it is detached, the
    // volume keeps its files, nothing is left mounted.
    let dir = state.to_path_buf().join(sb.id());
    sb.remove(true).await.expect("remove");
    assert!(!dir.exists(), "{} left", dir.display());
    assert!(mounts_below(&dir).is_empty(), "mounts left below {dir:?}");
    assert!(
        volume.join("from-host").exists(),
        "the volume lost its files"
    );
    assert!(
        volume.join("from-guest").exists(),
        "the volume lost its files"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtio_9p_share_reaches_the_guest_and_remove_keeps_volumes() {
    share_round_trip(SharedFs::Virtio9p, "sh9p").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtio_fs_share_reaches_the_guest_and_remove_keeps_volumes() {
    share_round_trip(SharedFs::VirtioFs, "shvfs").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_without_containers_has_no_share() {
    let pair = PodPair::new("shnone");
    let env = Env::new("shnone");
    let state = &env.state;
    let rt = Runtime::new(
        state.to_path_buf(),
        env!("CARGO_BIN_EXE_sandnet"),
        vec!["--state-dir".into(), state.as_os_str().to_owned()],
    );
    let mut req = SandboxRequest::new(Config::default());
    req.netns = PodNetns::Existing(pair.pod.path());
    let sb = rt.run(&req, &mut |_| {}).await.expect("run");
    let _guard = Sandbox::adopt(&env, sb.id());
    assert_eq!(sb.shared_dir().unwrap().fs, SharedFs::None);
    assert!(!sb.containers_socket().exists());
    let out = sb
        .exec(
            &[
                "sh".into(),
                "-c".into(),
                "ls /sys/bus/virtio/devices/ | wc -l; cat /sys/bus/virtio/devices/*/device".into(),
            ],
            Duration::from_secs(20),
        )
        .await
        .expect("exec");
    // virtio-9p is device 0x0009, virtio-fs 0x001a: neither is there. The agent's
    // virtio-serial (0x0003) is, so the listing itself worked.
    let s = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.exit_code, 0, "{s}");
    assert!(s.contains("0x0003"), "no virtio devices listed: {s}");
    assert!(!s.contains("0x0009") && !s.contains("0x001a"), "{s}");
    sb.remove(true).await.expect("remove");
}
