//! The agent's OCI runner on the real kernel (no VM), the processes' input and output: stdin,
//! terminals: the real
//! `sandnet-agent --listen` in a throwaway netns with a cgroup of the test's own, containers
//! on a busybox root file system (harness in `common/containers.rs`). Needs root and
//! Debian's busybox-static at /bin/busybox.

mod common;

use common::containers::{ctx, process, Env};
use sandnet_agent_proto::protobuf::MessageField;
use sandnet_agent_proto::ttrpc::{self, Code};
use sandnet_agent_proto::{agent, oci};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_reaches_the_process_and_closes() {
    let env = Env::new("ctr-stdin").await;
    let id = "cat";
    env.run(id, env.spec(&["cat"])).await;
    assert_eq!(env.write(id, "", b"hello stdin\n").await, 12);
    env.read_until(id, "", "hello stdin\n").await;
    env.close_stdin(id, "").await;
    assert_eq!(env.wait(id, "").await, 0);
    assert!(env.read_all(id, "", false).await.is_empty());
    let req = agent::WriteStreamRequest {
        container_id: id.into(),
        data: b"late".to_vec(),
        ..Default::default()
    };
    match env.c.write_stdin(ctx(10), &req).await {
        Err(ttrpc::Error::RpcStatus(s)) => assert_eq!(s.code(), Code::FAILED_PRECONDITION),
        other => panic!("{other:?}"),
    }
    env.remove(id).await;
    env.assert_gone(id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_process_has_a_pty_of_its_own() {
    let env = Env::new("ctr-tty").await;
    let id = "tty";
    let mut spec = env.spec(&["sh", "-c", "tty; stty size; read x; stty size; echo done"]);
    let p = spec.Process.as_mut().unwrap();
    p.Terminal = true;
    p.ConsoleSize = MessageField::some(oci::Box {
        Height: 20,
        Width: 60,
        ..Default::default()
    });
    env.run(id, spec).await;
    let out = env.read_until(id, "", "20 60").await;
    assert!(out.starts_with("/dev/pts/0\r\n"), "{out:?}");
    let req = agent::TtyWinResizeRequest {
        container_id: id.into(),
        row: 33,
        column: 77,
        ..Default::default()
    };
    env.c.tty_win_resize(ctx(10), &req).await.expect("resize");
    env.write(id, "", b"go\n").await;
    let out = env.read_until(id, "", "done").await;
    assert!(out.contains("33 77"), "{out}");
    assert_eq!(env.wait(id, "").await, 0);
    assert!(env.read(id, "", true).await.unwrap().is_empty());
    env.remove(id).await;
    env.assert_gone(id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tty_shows_the_containers_first_pty() {
    let env = Env::new("ctr-ttyname").await;
    let id = "ttyname";
    let mut spec = env.spec(&["sh", "-c", "tty; read x"]);
    spec.Process.as_mut().unwrap().Terminal = true;
    env.run(id, spec).await;
    env.read_until(id, "", "/dev/pts/0\r\n").await;
    // An exec'd process with a terminal gets the container's next pty.
    let mut p = process(&["tty"]);
    p.Terminal = true;
    env.exec(id, "t1", p).await.unwrap();
    assert_eq!(env.wait(id, "t1").await, 0);
    assert_eq!(env.read_all(id, "t1", false).await, "/dev/pts/1\r\n");
    assert_eq!(env.read_all(id, "t1", true).await, "");
    env.write(id, "", b"\n").await;
    assert_eq!(env.wait(id, "").await, 0);
    env.remove(id).await;
    env.assert_gone(id);
}
