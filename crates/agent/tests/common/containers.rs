//! The harness of the OCI runner tests (`containers_*.rs`): the real `sandnet-agent --listen`
//! in a throwaway netns with a cgroup of the test's own, containers on a busybox root file
//! system in a temp dir, driven with the generated `AgentServiceClient`.

use super::AgentNs;
use sandnet_agent_proto::protobuf::MessageField;
use sandnet_agent_proto::ttrpc::{self, r#async::Client, Code};
use sandnet_agent_proto::{agent, agent_ttrpc::AgentServiceClient, oci};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// containerd's default capabilities.
pub const DEFAULT_CAPS: &[&str] = &[
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
pub const DEFAULT_CAPS_HEX: &str = "00000000a80425fb";

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// `<tmp>/snc-<name>-<pid>`, emptied first.
    pub fn new(name: &str) -> TempDir {
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
pub fn rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "work", "data"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("/bin/busybox");
    let list = super::run("/bin/busybox", &["--list"]);
    for a in list.lines().filter(|a| !a.is_empty() && *a != "busybox") {
        let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(a));
    }
    root
}

/// An agent with its own cgroup, a client, a root file system.
pub struct Env {
    /// The agent in its netns, with its cgroup.
    pub ns: AgentNs,
    /// A client of the agent's socket.
    pub c: AgentServiceClient,
    /// The test's scratch directory.
    pub tmp: TempDir,
    /// The busybox root file system.
    pub root: PathBuf,
}

impl Env {
    /// Starts the agent for `test` and builds the root file system.
    pub async fn new(test: &str) -> Env {
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
    pub fn cgroup(&self, id: &str) -> PathBuf {
        self.ns.cgroup.as_ref().unwrap().host.join(id)
    }

    /// Pids of the agent's helpers for `label` (`<id>` or `<id>/<exec id>`).
    pub fn helpers(&self, label: &str) -> Vec<u32> {
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
    pub fn assert_gone(&self, id: &str) {
        assert!(self.helpers(id).is_empty(), "helpers of {id} left");
        assert!(!self.cgroup(id).exists(), "cgroup of {id} left");
        self.assert_no_mounts();
    }

    /// The test's mount table has nothing below the test's directories.
    pub fn assert_no_mounts(&self) {
        let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let t = self.tmp.0.to_string_lossy();
        let a = self.ns.dir.to_string_lossy();
        assert!(
            !mi.lines()
                .any(|l| l.contains(t.as_ref()) || l.contains(a.as_ref())),
            "mounts left in the test's namespace:\n{mi}"
        );
    }

    /// CreateContainer.
    pub async fn create(&self, id: &str, spec: oci::Spec) -> ttrpc::Result<()> {
        let req = agent::CreateContainerRequest {
            container_id: id.into(),
            OCI: MessageField::some(spec),
            ..Default::default()
        };
        self.c.create_container(ctx(30), &req).await.map(|_| ())
    }

    /// StartContainer.
    pub async fn start(&self, id: &str) -> ttrpc::Result<()> {
        let req = agent::StartContainerRequest {
            container_id: id.into(),
            ..Default::default()
        };
        self.c.start_container(ctx(30), &req).await.map(|_| ())
    }

    /// Create + Start.
    pub async fn run(&self, id: &str, spec: oci::Spec) {
        self.create(id, spec)
            .await
            .unwrap_or_else(|e| panic!("create {id}: {e:?}"));
        self.start(id)
            .await
            .unwrap_or_else(|e| panic!("start {id}: {e:?}"));
    }

    /// WaitProcess: the exit status.
    pub async fn wait(&self, id: &str, exec: &str) -> i32 {
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
    pub async fn still_running(&self, id: &str, exec: &str, d: Duration) -> bool {
        tokio::time::timeout(d, self.wait(id, exec)).await.is_err()
    }

    /// One ReadStdout (or ReadStderr); empty at end of file.
    pub async fn read(&self, id: &str, exec: &str, stderr: bool) -> ttrpc::Result<Vec<u8>> {
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
    pub async fn read_all(&self, id: &str, exec: &str, stderr: bool) -> String {
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
    pub async fn read_until(&self, id: &str, exec: &str, want: &str) -> String {
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

    /// WriteStdin: the number of bytes taken.
    pub async fn write(&self, id: &str, exec: &str, data: &[u8]) -> u32 {
        let req = agent::WriteStreamRequest {
            container_id: id.into(),
            exec_id: exec.into(),
            data: data.to_vec(),
            ..Default::default()
        };
        self.c.write_stdin(ctx(10), &req).await.expect("write").len
    }

    /// CloseStdin.
    pub async fn close_stdin(&self, id: &str, exec: &str) {
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

    /// SignalProcess.
    pub async fn signal(&self, id: &str, exec: &str, sig: i32) -> ttrpc::Result<()> {
        let req = agent::SignalProcessRequest {
            container_id: id.into(),
            exec_id: exec.into(),
            signal: sig as u32,
            ..Default::default()
        };
        self.c.signal_process(ctx(10), &req).await.map(|_| ())
    }

    /// ExecProcess.
    pub async fn exec(&self, id: &str, exec: &str, p: oci::Process) -> ttrpc::Result<()> {
        let req = agent::ExecProcessRequest {
            container_id: id.into(),
            exec_id: exec.into(),
            process: MessageField::some(p),
            ..Default::default()
        };
        self.c.exec_process(ctx(30), &req).await.map(|_| ())
    }

    /// RemoveContainer, which must succeed.
    pub async fn remove(&self, id: &str) {
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
    pub fn spec(&self, args: &[&str]) -> oci::Spec {
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

/// A ttrpc context with a timeout of `secs` seconds.
pub fn ctx(secs: u64) -> ttrpc::context::Context {
    ttrpc::context::with_timeout(Duration::from_secs(secs).as_nanos() as i64)
}

/// A process running `args` as root with containerd's default capabilities.
pub fn process(args: &[&str]) -> oci::Process {
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

/// An OCI mount.
pub fn mount(dest: &str, typ: &str, src: &str, opts: &[&str]) -> oci::Mount {
    oci::Mount {
        destination: dest.into(),
        type_: typ.into(),
        source: src.into(),
        options: opts.iter().map(|o| o.to_string()).collect(),
        ..Default::default()
    }
}

/// containerd's default mounts.
pub fn default_mounts() -> Vec<oci::Mount> {
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
pub fn failure(r: ttrpc::Result<()>, id: &str) -> (Code, String) {
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
