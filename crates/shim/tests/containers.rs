//! Containers of sandnet pods through a private containerd 1.6 and CRI: they run inside
//! the pod's VM (busybox from the test image), with the pod's network, their output in
//! CRI's log files, exec, exit codes, stop, bind mounts, memory limits; bad input fails
//! with one line; removing everything leaves the host as it was. Needs what `tests/cri.rs`
//! needs, plus a guest kernel with 9p and the agent's container runner.

mod common;

use common::containers::sh;
use common::{wait_until, Containerd, Options};
use k8s_cri::v1::{ContainerConfig, ContainerState, LinuxContainerResources, Mount};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(90);

/// A pod of `cd` named `name`, READY; its id.
fn pod(cd: &Containerd, name: &str) -> String {
    std::fs::create_dir_all(cd.dir.join("logs")).unwrap();
    cd.run_pod(name, "sandnet")
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\ncontainerd log:\n{}", cd.log()))
}

fn sleeper(cd: &Containerd, name: &str) -> ContainerConfig {
    cd.command_config(name, sh("exec /bin/busybox sleep 100000"))
}

/// `cfg` with the directory `vol` of the test's own dir (made here) bind-mounted at
/// `/data`; the host path.
fn with_volume(cd: &Containerd, cfg: &mut ContainerConfig, readonly: bool) -> std::path::PathBuf {
    let host = cd.dir.join("vol");
    std::fs::create_dir_all(&host).unwrap();
    cfg.mounts = vec![Mount {
        container_path: "/data".into(),
        host_path: host.display().to_string(),
        readonly,
        ..Default::default()
    }];
    host
}

#[test]
fn output_reaches_the_log_and_the_address_is_the_pods() {
    let cd = Containerd::start("clog", Options::default());
    let p = pod(&cd, "clog");
    let ip = cd.pod_ip(&p);
    assert!(!ip.is_empty(), "no pod IP");
    let c = cd.launch(
        &p,
        "clog",
        cd.command_config("addr", sh("ip -o addr; echo MARK-sandnet-1")),
    );
    let st = cd.wait_exited(&c, LONG);
    assert_eq!(st.exit_code, 0, "{st:?}");
    // The log is complete when the exit is reported.
    let log = cd.container_log(&c);
    assert!(log.contains("MARK-sandnet-1"), "marker missing:\n{log}");
    assert!(
        log.contains(&format!("inet {ip}/")),
        "pod IP {ip} missing:\n{log}"
    );
    // With a terminal: one stream, through the guest's pty.
    let mut cfg = cd.command_config("tty", sh("[ -t 1 ] && echo TTY-sandnet-2"));
    cfg.tty = true;
    let t = cd.launch(&p, "clog", cfg);
    let st = cd.wait_exited(&t, LONG);
    assert_eq!(st.exit_code, 0, "{st:?}\n{}", cd.container_log(&t));
    assert!(cd.container_log(&t).contains("TTY-sandnet-2"));
}

#[test]
fn httpd_answers_on_the_pod_ip_and_to_its_neighbour_on_localhost() {
    let cd = Containerd::start("chttp", Options::default());
    let p = pod(&cd, "chttp");
    let ip = cd.pod_ip(&p);
    let web = cd.launch(
        &p,
        "chttp",
        cd.command_config(
            "web",
            sh(
                "mkdir -p /www && echo hello-from-sandnet > /www/index.html && \
                exec httpd -f -p 8080 -h /www",
            ),
        ),
    );
    // busybox-static's wget crashes in glibc's resolver; nc speaks HTTP/1.0 well enough.
    let get = |host: &str| format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} 8080");
    let url = format!("http://{ip}:8080/");
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let r = cd.in_netns(&["busybox", "sh", "-c", &get(&ip)]);
        if r.as_ref().is_ok_and(|b| b.contains("hello-from-sandnet")) {
            break;
        }
        if std::time::Instant::now() > deadline {
            let inside = cd.exec_sync(&web, &["/bin/busybox", "sh", "-c", "netstat -ltn; ip addr"]);
            panic!(
                "httpd does not answer on {url}: {r:?}\nstatus {:?}\nlog:\n{}\ninside: {inside:?}",
                cd.container_status(&web),
                cd.container_log(&web)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let side = cd.launch(&p, "chttp", sleeper(&cd, "side"));
    let r = cd
        .exec_sync(
            &side,
            &[
                "/bin/busybox",
                "wget",
                "-q",
                "-O",
                "-",
                "http://127.0.0.1:8080/",
            ],
        )
        .expect("ExecSync wget");
    assert_eq!(r.exit_code, 0, "{}", common::text(&r.stderr));
    assert!(common::text(&r.stdout).contains("hello-from-sandnet"));
}

#[test]
fn exec_sync_returns_output_and_exit_codes() {
    let cd = Containerd::start("cexec", Options::default());
    let p = pod(&cd, "cexec");
    let c = cd.launch(&p, "cexec", sleeper(&cd, "s"));
    let r = cd
        .exec_sync(&c, &["/bin/busybox", "echo", "hello", "exec"])
        .expect("ExecSync");
    assert_eq!(r.exit_code, 0);
    assert_eq!(common::text(&r.stdout), "hello exec\n");
    let r = cd
        .exec_sync(&c, &["/bin/busybox", "sh", "-c", "echo err >&2; exit 3"])
        .expect("ExecSync");
    assert_eq!(r.exit_code, 3);
    assert_eq!(common::text(&r.stderr), "err\n");
    // The pod's host name, as in the pod's shared UTS namespace under runc.
    let r = cd
        .exec_sync(&c, &["/bin/busybox", "hostname"])
        .expect("ExecSync hostname");
    assert_eq!(common::text(&r.stdout).trim(), "cexec");
    // Statistics from the container's cgroup in the guest.
    let st = cd.container_stats(&c).expect("ContainerStats");
    let mem = st
        .memory
        .and_then(|m| m.working_set_bytes)
        .map_or(0, |v| v.value);
    assert!(mem > 0, "no memory working set: {mem}");
}

/// `exec -it`: an exec with a terminal through containerd (`ctr tasks exec -t`, given a
/// terminal by `script`): the process has a pty of the container's, sized as the client's
/// terminal, and its output comes back.
#[test]
fn exec_with_a_tty_gets_a_pty() {
    let cd = Containerd::start("cexectty", Options::default());
    let p = pod(&cd, "cexectty");
    let c = cd.launch(&p, "cexectty", sleeper(&cd, "s"));
    let ctr = format!(
        "stty rows 33 cols 111; ctr --address {} -n k8s.io tasks exec -t --exec-id tty1 {c} \
         /bin/busybox sh -c 'tty; stty size; [ -t 0 ] && echo STDIN-IS-A-TTY'",
        cd.sock().display()
    );
    let o = std::process::Command::new("script")
        .args(["-qefc", &ctr, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script");
    let out = common::text(&o.stdout);
    assert!(o.status.success(), "{out}{}", common::text(&o.stderr));
    assert!(out.contains("/dev/pts/"), "{out}");
    assert!(out.contains("33 111"), "{out}");
    assert!(out.contains("STDIN-IS-A-TTY"), "{out}");
}

#[test]
fn exit_code_and_stop_timeout() {
    let cd = Containerd::start("cexit", Options::default());
    let p = pod(&cd, "cexit");
    let c = cd.launch(&p, "cexit", cd.command_config("seven", sh("exit 7")));
    let st = cd.wait_exited(&c, LONG);
    assert_eq!(st.exit_code, 7, "{st:?}");

    // PID 1 of its namespace: sleep ignores SIGTERM, so Stop ends it with SIGKILL.
    let s = cd.launch(
        &p,
        "cexit",
        cd.command_config(
            "stubborn",
            vec!["/bin/busybox".into(), "sleep".into(), "100000".into()],
        ),
    );
    let took = cd.stop_container(&s, 2).expect("StopContainer");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(20),
        "stop took {took:?}"
    );
    let st = cd.container_status(&s).unwrap();
    assert_eq!(st.state, ContainerState::ContainerExited as i32);
    assert_eq!(st.exit_code, 137, "{st:?}");
}

#[test]
fn bind_mounted_directory_is_readable_and_writable() {
    let cd = Containerd::start("cbind", Options::default());
    let p = pod(&cd, "cbind");
    let mut cfg = cd.command_config(
        "vol",
        sh("cat /data/in.txt && echo from-the-guest > /data/out.txt"),
    );
    let host = with_volume(&cd, &mut cfg, false);
    std::fs::write(host.join("in.txt"), "from-the-host\n").unwrap();
    let c = cd.launch(&p, "cbind", cfg);
    let st = cd.wait_exited(&c, LONG);
    assert_eq!(st.exit_code, 0, "{st:?}\n{}", cd.container_log(&c));
    assert!(cd.container_log(&c).contains("from-the-host"));
    assert_eq!(
        std::fs::read_to_string(host.join("out.txt")).unwrap(),
        "from-the-guest\n"
    );
}

#[test]
fn memory_limit_ends_the_container() {
    let cd = Containerd::start("coom", Options::default());
    let p = pod(&cd, "coom");
    let mut cfg = cd.command_config("hog", sh("dd if=/dev/zero of=/dev/null bs=64M count=1"));
    cfg.linux.get_or_insert_with(Default::default).resources = Some(LinuxContainerResources {
        memory_limit_in_bytes: 32 << 20,
        ..Default::default()
    });
    let c = cd.launch(&p, "coom", cfg);
    let st = cd.wait_exited(&c, LONG);
    assert_eq!(st.exit_code, 137, "{st:?}\n{}", cd.container_log(&c));
    eprintln!("reason: {:?}", st.reason);
    assert!(
        st.reason == "OOMKilled" || st.reason == "Error",
        "reason {:?}",
        st.reason
    );
}

#[test]
fn removing_everything_leaves_the_host_as_before() {
    let cd = Containerd::start("cclean", Options::default());
    let before = cd.snapshot();
    let p = pod(&cd, "cclean");
    let mut cfg = sleeper(&cd, "running");
    with_volume(&cd, &mut cfg, true);
    let running = cd.launch(&p, "cclean", cfg);
    let done = cd.launch(&p, "cclean", cd.command_config("done", sh("true")));
    cd.wait_exited(&done, LONG);
    let share = cd.state().join(&p).join("shared");
    assert!(
        !cd.mounts_under(&share).is_empty(),
        "the running container has no mounts in the share"
    );
    let shim = cd.shim_pid(&p).expect("the pod's shim");
    assert_eq!(cd.shim_pids(), vec![shim], "one shim serves the whole pod");

    cd.stop_container(&running, 2).expect("StopContainer");
    for c in [&running, &done] {
        cd.remove_container(c).expect("RemoveContainer");
    }
    assert!(
        cd.mounts_under(&cd.state()).is_empty(),
        "mounts left under the state dir: {:?}",
        cd.mounts_under(&cd.state())
    );
    assert!(
        cd.share_entries(&p).is_empty(),
        "{:?}",
        cd.share_entries(&p)
    );
    cd.stop_pod(&p).expect("StopPodSandbox");
    cd.remove_pod(&p).expect("RemovePodSandbox");
    wait_until("the shim to exit", Duration::from_secs(15), || {
        cd.shim_pid(&p).is_none()
    });
    cd.wait_clean(&before, Duration::from_secs(20));
    assert!(cd.mounts_under(&cd.state()).is_empty());
}

#[test]
fn bad_input_fails_with_one_line_and_leaves_nothing() {
    let cd = Containerd::start("cbad", Options::default());
    let p = pod(&cd, "cbad");
    let before = cd.snapshot();
    let one_line = |e: &tonic::Status| {
        assert!(!e.message().contains('\n'), "not one line: {}", e.message());
    };
    let try_run = |cfg| -> Result<String, tonic::Status> {
        let id = cd.create_container(&p, "cbad", cfg)?;
        let r = cd.start_container(&id);
        let _ = cd.remove_container(&id);
        r.map(|()| id)
    };

    // An entrypoint that does not exist.
    let e = try_run(cd.command_config("noentry", vec!["/nonexistent/entry".into()]))
        .expect_err("a missing entrypoint started");
    one_line(&e);
    assert!(
        e.message().contains("/nonexistent/entry"),
        "{}",
        e.message()
    );
    cd.wait_clean(&before, Duration::from_secs(20));
    assert!(
        cd.share_entries(&p).is_empty(),
        "{:?}",
        cd.share_entries(&p)
    );

    // A mount source that goes away between CreateContainer (CRI makes missing host
    // paths) and the task's creation (at StartContainer).
    let gone = cd.dir.join("gone");
    std::fs::create_dir_all(&gone).unwrap();
    let mut cfg = sleeper(&cd, "nosrc");
    cfg.mounts = vec![Mount {
        container_path: "/data".into(),
        host_path: gone.display().to_string(),
        ..Default::default()
    }];
    let id = cd
        .create_container(&p, "cbad", cfg)
        .expect("CreateContainer");
    std::fs::remove_dir(&gone).unwrap();
    let e = cd
        .start_container(&id)
        .expect_err("a missing mount source started");
    let _ = cd.remove_container(&id);
    one_line(&e);
    assert!(
        e.message().contains(&format!(
            "mount /data: source {} does not exist",
            gone.display()
        )),
        "{}",
        e.message()
    );
    cd.wait_clean(&before, Duration::from_secs(20));
    assert!(
        cd.share_entries(&p).is_empty(),
        "{:?}",
        cd.share_entries(&p)
    );

    // A user the image does not know (containerd resolves names from the image).
    let mut cfg = sleeper(&cd, "nouser");
    cfg.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .run_as_username = "sandnet-nobody".into();
    let e = try_run(cfg).expect_err("an unknown user started");
    one_line(&e);
    eprintln!("unknown user: {}", e.message());
    cd.wait_clean(&before, Duration::from_secs(20));
    assert!(cd.ready(&p), "the pod suffered from bad containers");
}

fn kill9(pid: u32) {
    // SAFETY: plain syscall.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
}

// (QEMU killed under running containers: tests/container_failures.rs.)
#[test]
fn shim_killed_with_containers_leaves_no_mounts() {
    let cd = Containerd::start("ckill", Options::default());
    let before = cd.snapshot();
    let p = pod(&cd, "ckill");
    let mut cfg = sleeper(&cd, "held");
    with_volume(&cd, &mut cfg, false);
    let c = cd.launch(&p, "ckill", cfg);
    assert!(!cd.mounts_under(&cd.state()).is_empty());
    kill9(cd.shim_pid(&p).expect("the pod's shim"));
    // containerd runs the shim's `delete` for each of its tasks: the container's mounts
    // and the sandbox go.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let left = || {
        let mut m = cd.mounts_under(&cd.state());
        // Bundle root file systems (CRI's own pod shm stays until the pod goes).
        m.extend(cd.mounts_under(&cd.dir.join("state/io.containerd.runtime.v2.task")));
        m
    };
    while !left().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "mounts left: {:?}\ncontainerd log:\n{}",
            left(),
            cd.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = cd.stop_container(&c, 0);
    cd.remove_container(&c).expect("RemoveContainer");
    cd.stop_pod(&p).expect("StopPodSandbox");
    cd.remove_pod(&p).expect("RemovePodSandbox");
    cd.wait_clean(&before, Duration::from_secs(30));
}
