//! The agent's OCI runner on the real kernel (no VM): the real `sandnet-agent --listen`
//! in a throwaway netns with a cgroup of the test's own, containers on a busybox root file
//! system in a temp dir, driven with the generated `AgentServiceClient`. Needs root and
//! Debian's busybox-static at /bin/busybox.

mod common;

use common::AgentNs;
use sandnet_agent_proto::protobuf::MessageField;
use sandnet_agent_proto::ttrpc::{self, r#async::Client, Code};
use sandnet_agent_proto::{agent, agent_ttrpc::AgentServiceClient, oci};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// containerd's default capabilities.
const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];
/// Those as the hex mask `/proc/self/status` shows.
const DEFAULT_CAPS_HEX: &str = "00000000a80425fb";

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("snc-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A busybox root file system: /bin/busybox and a link per applet.
fn rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "work", "data"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("/bin/busybox");
    let list = common::run("/bin/busybox", &["--list"]);
    for a in list.lines().filter(|a| !a.is_empty() && *a != "busybox") {
        let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(a));
    }
    root
}

/// An agent with its own cgroup, a client, a root file system.
struct Env {
    ns: AgentNs,
    c: AgentServiceClient,
    tmp: TempDir,
    root: PathBuf,
}

impl Env {
    async fn new(test: &str) -> Env {
        let ns = AgentNs::with_cgroup(test);
        // Health first (waits for the socket).
        drop(ns.client().await);
        let client = Client::connect(&format!("unix://{}", ns.sock.display()))
            .await
            .expect("connect");
        let tmp = TempDir::new(test);
        let root = rootfs(&tmp.0);
        Env {
            ns,
            c: AgentServiceClient::new(client),
            tmp,
            root,
        }
    }

    /// The container's cgroup as the test sees it.
    fn cgroup(&self, id: &str) -> PathBuf {
        self.ns.cgroup.as_ref().unwrap().host.join(id)
    }

    /// Pids of the agent's helpers for `label` (`<id>` or `<id>/<exec id>`).
    fn helpers(&self, label: &str) -> Vec<u32> {
        let mut v = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
            if args.len() >= 3 && args[1] == b"__container-init" && args[2] == label.as_bytes() {
                v.push(pid);
            }
        }
        v
    }

    /// Nothing of container `id` is left: no helper, no cgroup, no mount of ours.
    fn assert_gone(&self, id: &str) {
        assert!(self.helpers(id).is_empty(), "helpers of {id} left");
        assert!(!self.cgroup(id).exists(), "cgroup of {id} left");
        self.assert_no_mounts();
    }

    /// The test's mount table has nothing below the test's directories.
    fn assert_no_mounts(&self) {
        let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let t = self.tmp.0.to_string_lossy();
        let a = self.ns.dir.to_string_lossy();
        assert!(
            !mi.lines()
                .any(|l| l.contains(t.as_ref()) || l.contains(a.as_ref())),
            "mounts left in the test's namespace:\n{mi}"
        );
    }

    async fn create(&self, id: &str, spec: oci::Spec) -> ttrpc::Result<()> {
        let req = agent::CreateContainerRequest {
            container_id: id.into(),
            OCI: MessageField::some(spec),
            ..Default::default()
        };
        self.c.create_container(ctx(30), &req).await.map(|_| ())
    }

    async fn start(&self, id: &str) -> ttrpc::Result<()> {
        let req = agent::StartContainerRequest {
            container_id: id.into(),
            ..Default::default()
        };
        self.c.start_container(ctx(30), &req).await.map(|_| ())
    }

    /// Create + Start.
    async fn run(&self, id: &str, spec: oci::Spec) {
        self.create(id, spec)
            .await
            .unwrap_or_else(|e| panic!("create {id}: {e:?}"));
        self.start(id)
            .await
            .unwrap_or_else(|e| panic!("start {id}: {e:?}"));
    }

    async fn wait(&self, id: &str, exec: &str) -> i32 {
        let req = agent::WaitProcessRequest {
            container_id: id.into(),
            exec_id: exec.into(),
            ..Default::default()
        };
        self.c
            .wait_process(ctx(60), &req)
            .await
            .expect("wait")
            .status
    }

    /// Whether the process is still running after `d`.
    async fn still_running(&self, id: &str, exec: &str, d: Duration) -> bool {
        tokio::time::timeout(d, self.wait(id, exec)).await.is_err()
    }

    async fn read(&self, id: &str, exec: &str, stderr: bool) -> ttrpc::Result<Vec<u8>> {
        let req = agent::ReadStreamRequest {
            container_id: id.into(),
            exec_id: exec.into(),
            len: 0,
            ..Default::default()
        };
        let r = if stderr {
            self.c.read_stderr(ctx(60), &req).await
        } else {
            self.c.read_stdout(ctx(60), &req).await
        };
        r.map(|r| r.data)
    }

    /// Everything until end of file.
    async fn read_all(&self, id: &str, exec: &str, stderr: bool) -> String {
        let mut out = Vec::new();
        loop {
            let d = self.read(id, exec, stderr).await.expect("read");
            if d.is_empty() {
                return String::from_utf8_lossy(&out).into_owned();
            }
            out.extend(d);
        }
    }

    /// Reads stdout until `want` shows up.
    async fn read_until(&self, id: &str, exec: &str, want: &str) -> String {
        let mut out = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let d = self.read(id, exec, false).await.expect("read");
                if d.is_empty() {
                    break;
                }
                out.extend(d);
                if String::from_utf8_lossy(&out).contains(want) {
                    break;
                }
            }
        })
        .await;
        let s = String::from_utf8_lossy(&out).into_owned();
        assert!(r.is_ok() && s.contains(want), "{want:?} not in {s:?}");
        s
    }

    async fn write(&self, id: &str, exec: &str, data: &[u8]) -> u32 {
        let req = agent::WriteStreamRequest {
            container_id: id.into(),
            exec_id: exec.into(),
            data: data.to_vec(),
            ..Default::default()
        };
        self.c.write_stdin(ctx(10), &req).await.expect("write").len
    }

    async fn close_stdin(&self, id: &str, exec: &str) {
        let req = agent::CloseStdinRequest {
            container_id: id.into(),
            exec_id: exec.into(),
            ..Default::default()
        };
        self.c
            .close_stdin(ctx(10), &req)
            .await
            .expect("close stdin");
    }

    async fn signal(&self, id: &str, exec: &str, sig: i32) -> ttrpc::Result<()> {
        let req = agent::SignalProcessRequest {
            container_id: id.into(),
            exec_id: exec.into(),
            signal: sig as u32,
            ..Default::default()
        };
        self.c.signal_process(ctx(10), &req).await.map(|_| ())
    }

    async fn exec(&self, id: &str, exec: &str, p: oci::Process) -> ttrpc::Result<()> {
        let req = agent::ExecProcessRequest {
            container_id: id.into(),
            exec_id: exec.into(),
            process: MessageField::some(p),
            ..Default::default()
        };
        self.c.exec_process(ctx(30), &req).await.map(|_| ())
    }

    async fn remove(&self, id: &str) {
        let req = agent::RemoveContainerRequest {
            container_id: id.into(),
            timeout: 10,
            ..Default::default()
        };
        self.c
            .remove_container(ctx(30), &req)
            .await
            .unwrap_or_else(|e| panic!("remove {id}: {e:?}"));
    }

    /// A spec with containerd's default mounts, masked paths and capabilities.
    fn spec(&self, args: &[&str]) -> oci::Spec {
        oci::Spec {
            Version: "1.1.0".into(),
            Process: MessageField::some(process(args)),
            Root: MessageField::some(oci::Root {
                Path: self.root.to_string_lossy().into_owned(),
                ..Default::default()
            }),
            Hostname: "ctr-host".into(),
            Mounts: default_mounts(),
            Linux: MessageField::some(oci::Linux {
                Namespaces: ["pid", "ipc", "uts", "mount", "network"]
                    .iter()
                    .map(|t| oci::LinuxNamespace {
                        Type: t.to_string(),
                        ..Default::default()
                    })
                    .collect(),
                MaskedPaths: [
                    "/proc/kcore",
                    "/proc/timer_list",
                    "/proc/acpi",
                    "/sys/firmware",
                ]
                .map(String::from)
                .to_vec(),
                ReadonlyPaths: ["/proc/sys", "/proc/sysrq-trigger"]
                    .map(String::from)
                    .to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

fn ctx(secs: u64) -> ttrpc::context::Context {
    ttrpc::context::with_timeout(Duration::from_secs(secs).as_nanos() as i64)
}

fn process(args: &[&str]) -> oci::Process {
    let caps: Vec<String> = DEFAULT_CAPS.iter().map(|c| c.to_string()).collect();
    oci::Process {
        Args: args.iter().map(|a| a.to_string()).collect(),
        Env: vec!["PATH=/usr/bin:/bin".into(), "HOME=/".into()],
        Cwd: "/".into(),
        User: MessageField::some(oci::User::default()),
        Capabilities: MessageField::some(oci::LinuxCapabilities {
            Bounding: caps.clone(),
            Effective: caps.clone(),
            Permitted: caps,
            ..Default::default()
        }),
        NoNewPrivileges: true,
        ..Default::default()
    }
}

fn mount(dest: &str, typ: &str, src: &str, opts: &[&str]) -> oci::Mount {
    oci::Mount {
        destination: dest.into(),
        type_: typ.into(),
        source: src.into(),
        options: opts.iter().map(|o| o.to_string()).collect(),
        ..Default::default()
    }
}

/// containerd's default mounts.
fn default_mounts() -> Vec<oci::Mount> {
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        ),
    ]
}

/// The status of a failed call, checked to be one line naming the container.
fn failure(r: ttrpc::Result<()>, id: &str) -> (Code, String) {
    match r {
        Err(ttrpc::Error::RpcStatus(s)) => {
            let m = s.message().to_string();
            assert!(m.starts_with(&format!("container {id}: ")), "{m}");
            assert!(!m.contains('\n'), "{m:?}");
            (s.code(), m)
        }
        other => panic!("expected an error status, got {other:?}"),
    }
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_cwd_user_and_readonly_root() {
    let env = Env::new("ctr-user").await;
    let id = "user";
    let mut spec = env.spec(&[
        "sh",
        "-c",
        "echo \"$FOO\"; pwd; id; touch /x || echo ro-root; echo nofile=$(ulimit -n); \
         grep -E '^(CapEff|CapAmb|CapBnd|NoNewPrivs)' /proc/self/status; \
         echo adj=$(cat /proc/self/oom_score_adj)",
    ]);
    let p = spec.Process.as_mut().unwrap();
    p.OOMScoreAdj = 500;
    let caps = p.Capabilities.as_mut().unwrap();
    let raw = vec!["CAP_NET_RAW".to_string()];
    caps.Effective.clone_from(&raw);
    caps.Permitted.clone_from(&raw);
    caps.Inheritable.clone_from(&raw);
    caps.Ambient = raw;
    p.Rlimits.push(oci::POSIXRlimit {
        Type: "RLIMIT_NOFILE".into(),
        Hard: 2048,
        Soft: 1000,
        ..Default::default()
    });
    p.Env = vec!["PATH=/bin".into(), "FOO=bar baz".into()];
    p.Cwd = "/work".into();
    p.User = MessageField::some(oci::User {
        UID: 1000,
        GID: 1000,
        AdditionalGids: vec![1001],
        ..Default::default()
    });
    spec.Root.as_mut().unwrap().Readonly = true;
    env.run(id, spec).await;
    assert_eq!(env.wait(id, "").await, 0);
    let out = env.read_all(id, "", false).await;
    assert!(
        out.starts_with("bar baz\n/work\nuid=1000 gid=1000"),
        "{out}"
    );
    assert!(out.contains("1001"), "{out}");
    assert!(out.contains("ro-root"), "{out}");
    assert!(out.contains("nofile=1000\n"), "{out}");
    assert!(out.contains("adj=500\n"), "{out}");
    // A non-root user keeps exactly the ambient capability across exec.
    for want in [
        "CapEff:\t0000000000002000".to_string(),
        "CapAmb:\t0000000000002000".to_string(),
        format!("CapBnd:\t{DEFAULT_CAPS_HEX}"),
        "NoNewPrivs:\t1".to_string(),
    ] {
        assert!(out.contains(&want), "{want:?} not in {out}");
    }
    env.remove(id).await;
    env.assert_gone(id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_mount_of_a_host_directory() {
    let env = Env::new("ctr-bind").await;
    let id = "bind";
    let host = TempDir::new("ctr-bind-host");
    std::fs::write(host.0.join("in.txt"), "from host\n").unwrap();
    let src = host.0.to_string_lossy().into_owned();
    let mut spec = env.spec(&[
        "sh",
        "-c",
        "cat /data/in.txt; echo written > /data/out.txt; echo no > /ro/x || echo ro-ok",
    ]);
    spec.Mounts
        .push(mount("/data", "bind", &src, &["rbind", "rw"]));
    spec.Mounts
        .push(mount("/ro", "bind", &src, &["bind", "ro"]));
    env.run(id, spec).await;
    assert_eq!(env.wait(id, "").await, 0);
    let out = env.read_all(id, "", false).await;
    assert!(out.starts_with("from host\n"), "{out}");
    assert!(out.contains("ro-ok"), "{out}");
    assert_eq!(
        std::fs::read_to_string(host.0.join("out.txt")).unwrap(),
        "written\n"
    );
    assert!(!host.0.join("x").exists());
    env.remove(id).await;
    env.assert_gone(id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_fail_with_one_line_and_leave_nothing() {
    let env = Env::new("ctr-bad").await;
    let id = "bad";
    let cases: Vec<(oci::Spec, Code, &str)> = vec![
        (
            env.spec(&["/nope"]),
            Code::INVALID_ARGUMENT,
            "executable \"/nope\" not found in the container's root (PATH=/usr/bin:/bin)",
        ),
        (
            env.spec(&["nope-cmd"]),
            Code::INVALID_ARGUMENT,
            "executable \"nope-cmd\" not found",
        ),
        (
            {
                let mut s = env.spec(&["true"]);
                s.Mounts
                    .push(mount("/data", "bind", "/nonexistent/src", &["rbind"]));
                s
            },
            Code::INVALID_ARGUMENT,
            "bind mount /data: source /nonexistent/src does not exist",
        ),
        (
            {
                let mut s = env.spec(&["true"]);
                s.Process.as_mut().unwrap().Rlimits.push(oci::POSIXRlimit {
                    Type: "RLIMIT_BOGUS".into(),
                    Hard: 1,
                    Soft: 1,
                    ..Default::default()
                });
                s
            },
            Code::INVALID_ARGUMENT,
            "unknown rlimit \"RLIMIT_BOGUS\"",
        ),
        (
            {
                let mut s = env.spec(&["true"]);
                let c = s.Process.as_mut().unwrap().Capabilities.as_mut().unwrap();
                c.Bounding.push("CAP_BOGUS".into());
                s
            },
            Code::INVALID_ARGUMENT,
            "unknown capability \"CAP_BOGUS\"",
        ),
        (
            {
                let mut s = env.spec(&["true"]);
                s.Process.as_mut().unwrap().Cwd = "/no/such/dir".into();
                s
            },
            Code::INVALID_ARGUMENT,
            "cwd /no/such/dir",
        ),
    ];
    for (spec, want_code, want) in cases {
        let (code, m) = failure(env.create(id, spec).await, id);
        assert_eq!(code, want_code, "{m}");
        assert!(m.contains(want), "{m:?} does not contain {want:?}");
        env.assert_gone(id);
        let (code, _) = failure(env.start(id).await, id);
        assert_eq!(code, Code::NOT_FOUND);
    }
    // An executable the kernel refuses fails Start (the exec error comes back).
    std::fs::write(env.root.join("bin/not-elf"), "just text\n").unwrap();
    std::fs::set_permissions(
        env.root.join("bin/not-elf"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    env.create(id, env.spec(&["not-elf"])).await.unwrap();
    let (code, m) = failure(env.start(id).await, id);
    assert_eq!(code, Code::INTERNAL, "{m}");
    assert!(m.contains("exec /bin/not-elf: ENOEXEC"), "{m}");
    assert_eq!(env.wait(id, "").await, 127);
    env.remove(id).await;
    env.assert_gone(id);
    // The same id works afterwards.
    env.run(id, env.spec(&["sh", "-c", "echo fine"])).await;
    assert_eq!(env.wait(id, "").await, 0);
    assert_eq!(env.read_all(id, "", false).await, "fine\n");
    env.remove(id).await;
    env.assert_gone(id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_kills_with_137_and_reports_oom() {
    let env = Env::new("ctr-oom").await;
    let id = "oom";
    let mut spec = env.spec(&["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"]);
    spec.Linux.as_mut().unwrap().Resources = MessageField::some(oci::LinuxResources {
        Memory: MessageField::some(oci::LinuxMemory {
            Limit: 16 << 20,
            // memory + swap = memory: on a host with swap, dd would swap instead of
            // being killed.
            Swap: 16 << 20,
            ..Default::default()
        }),
        ..Default::default()
    });
    let has_memory = env.ns.cgroup.as_ref().unwrap().offers("memory");
    if !has_memory {
        // A hybrid-cgroup host binds the memory controller to v1: the limit cannot be
        // honoured, so Create refuses it clearly and leaves nothing.
        eprintln!("no memory controller in this host's cgroup2: checking the refusal only");
        let (code, m) = failure(env.create(id, spec).await, id);
        assert_eq!(code, Code::FAILED_PRECONDITION, "{m}");
        assert!(m.contains("memory controller is not available"), "{m}");
        env.assert_gone(id);
        return;
    }
    env.run(id, spec).await;
    assert_eq!(env.wait(id, "").await, 137);
    let ev = tokio::time::timeout(
        Duration::from_secs(10),
        env.c
            .get_oom_event(ctx(10), &agent::GetOOMEventRequest::default()),
    )
    .await
    .expect("no OOM event")
    .expect("oom event");
    assert_eq!(ev.container_id, id);
    let max = std::fs::read_to_string(env.cgroup(id).join("memory.max")).unwrap();
    assert_eq!(max.trim(), (16u64 << 20).to_string());
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
