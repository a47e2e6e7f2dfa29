//! The agent's OCI runner on the real kernel (no VM), the containers' life cycle: create, start,
//! exit codes, signals, exec, remove: the real
//! `sandnet-agent --listen` in a throwaway netns with a cgroup of the test's own, containers
//! on a busybox root file system (harness in `common/containers.rs`). Needs root and
//! Debian's busybox-static at /bin/busybox.

mod common;

use common::containers::{ctx, failure, process, Env, DEFAULT_CAPS_HEX};
use sandnet_agent_proto::agent;
use sandnet_agent_proto::ttrpc::{self, Code};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_prints_marker_hostname_and_id() {
    let env = Env::new("ctr-hello").await;
    let id = "hello";
    let script = "echo marker-1; hostname; id; echo pid=$$; \
                  grep CapEff /proc/self/status; ls /dev; echo timer=$(wc -c < /proc/timer_list); \
                  echo firmware=$(ls /sys/firmware | wc -l); \
                  (echo x > /proc/sys/kernel/hostname) 2>/dev/null || echo ro-ok; \
                  ls /sys/fs/cgroup/cgroup.procs; echo err-1 >&2";
    env.run(id, env.spec(&["sh", "-c", script])).await;
    // Output written before the exit is there after WaitProcess.
    assert_eq!(env.wait(id, "").await, 0);
    let out = env.read_all(id, "", false).await;
    let err = env.read_all(id, "", true).await;
    assert!(out.starts_with("marker-1\nctr-host\n"), "{out}");
    assert!(out.contains("uid=0 gid=0"), "{out}");
    assert!(out.contains("pid=1\n"), "{out}");
    assert!(
        out.contains(&format!("CapEff:\t{DEFAULT_CAPS_HEX}")),
        "{out}"
    );
    for d in [
        "null", "zero", "urandom", "tty", "pts", "shm", "mqueue", "ptmx", "fd",
    ] {
        assert!(out.lines().any(|l| l == d), "/dev/{d} missing: {out}");
    }
    assert!(
        out.contains("timer=0\n"),
        "/proc/timer_list not masked: {out}"
    );
    assert!(
        out.contains("firmware=0\n"),
        "/sys/firmware not masked: {out}"
    );
    assert!(out.contains("ro-ok"), "{out}");
    assert!(out.contains("/sys/fs/cgroup/cgroup.procs"), "{out}");
    assert_eq!(err, "err-1\n");
    // Reads after end of file stay empty; the status can be asked again.
    assert!(env.read(id, "", false).await.unwrap().is_empty());
    assert_eq!(env.wait(id, "").await, 0);
    let st = env
        .c
        .stats_container(
            ctx(10),
            &agent::StatsContainerRequest {
                container_id: id.into(),
                ..Default::default()
            },
        )
        .await
        .expect("stats");
    assert!(
        st.cgroup_stats.cpu_stats.cpu_usage.total_usage > 0,
        "{st:?}"
    );
    env.remove(id).await;
    env.assert_gone(id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_code_and_state_errors() {
    let env = Env::new("ctr-exit").await;
    let id = "exit7";
    env.create(id, env.spec(&["sh", "-c", "exit 7"]))
        .await
        .unwrap();
    assert!(!env.helpers(id).is_empty());
    assert!(env.cgroup(id).is_dir());
    let (code, _) = failure(env.create(id, env.spec(&["true"])).await, id);
    assert_eq!(code, Code::ALREADY_EXISTS);
    env.start(id).await.unwrap();
    assert_eq!(env.wait(id, "").await, 7);
    let (code, _) = failure(env.start(id).await, id);
    assert_eq!(code, Code::FAILED_PRECONDITION);
    let (code, _) = failure(env.start("nope").await, "nope");
    assert_eq!(code, Code::NOT_FOUND);
    let (code, _) = failure(env.signal("nope", "", 9).await, "nope");
    assert_eq!(code, Code::NOT_FOUND);
    // Signalling an exited process is fine.
    env.signal(id, "", 15).await.unwrap();
    env.remove(id).await;
    env.remove(id).await;
    env.assert_gone(id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_ignores_sigterm_without_handler_and_dies_of_sigkill() {
    let env = Env::new("ctr-sig").await;
    let id = "sleeper";
    env.run(id, env.spec(&["sleep", "1000"])).await;
    env.signal(id, "", libc::SIGTERM).await.unwrap();
    assert!(env.still_running(id, "", Duration::from_millis(700)).await);
    env.signal(id, "", libc::SIGKILL).await.unwrap();
    assert_eq!(env.wait(id, "").await, 137);
    env.remove(id).await;
    env.assert_gone(id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_joins_the_running_container() {
    let env = Env::new("ctr-exec").await;
    let id = "base";
    env.run(id, env.spec(&["sleep", "1000"])).await;
    let script = "hostname; tr '\\0' ' ' < /proc/1/cmdline; echo; echo pid=$$; exit 3";
    env.exec(id, "e1", process(&["sh", "-c", script]))
        .await
        .unwrap();
    assert_eq!(env.wait(id, "e1").await, 3);
    let out = env.read_all(id, "e1", false).await;
    assert!(out.starts_with("ctr-host\nsleep 1000 \n"), "{out}");
    assert!(!out.contains("pid=1\n"), "{out}");
    let (code, _) = failure(env.exec(id, "e1", process(&["true"])).await, id);
    assert_eq!(code, Code::ALREADY_EXISTS);
    let (code, m) = failure(env.exec(id, "e2", process(&["/nope"])).await, id);
    assert_eq!(code, Code::INVALID_ARGUMENT);
    assert!(m.contains("\"/nope\" not found"), "{m}");
    assert!(env.helpers(&format!("{id}/e2")).is_empty());
    // A killed exec is 137; the init runs on.
    env.exec(id, "e3", process(&["sleep", "1000"]))
        .await
        .unwrap();
    env.signal(id, "e3", libc::SIGKILL).await.unwrap();
    assert_eq!(env.wait(id, "e3").await, 137);
    assert!(env.still_running(id, "", Duration::from_millis(100)).await);
    env.remove(id).await;
    env.assert_gone(id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_kills_everything_and_is_idempotent() {
    let env = Env::new("ctr-rm").await;
    let id = "victim";
    env.run(id, env.spec(&["sleep", "1000"])).await;
    env.exec(id, "x1", process(&["sleep", "1000"]))
        .await
        .unwrap();
    // A created, never started container goes too.
    env.create("idle", env.spec(&["sleep", "1000"]))
        .await
        .unwrap();
    assert_eq!(env.helpers(id).len(), 1);
    assert_eq!(env.helpers(&format!("{id}/x1")).len(), 1);
    let procs = std::fs::read_to_string(env.cgroup(id).join("cgroup.procs")).unwrap();
    assert_eq!(procs.lines().count(), 4, "{procs}");
    env.remove(id).await;
    env.remove("idle").await;
    env.assert_gone(id);
    env.assert_gone("idle");
    assert!(env.helpers(&format!("{id}/x1")).is_empty());
    let req = agent::WaitProcessRequest {
        container_id: id.into(),
        ..Default::default()
    };
    match env.c.wait_process(ctx(5), &req).await {
        Err(ttrpc::Error::RpcStatus(s)) => assert_eq!(s.code(), Code::NOT_FOUND),
        other => panic!("{other:?}"),
    }
    env.remove(id).await;
    env.remove("never-existed").await;
    env.assert_no_mounts();
}
