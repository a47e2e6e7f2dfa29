//! A private containerd for one test: its own root, state and sockets in a temp dir, its
//! own network namespace (bridge + host-local network) and mount namespace (`unshare -m`,
//! then `nsenter --net`), the local pause image, runtimes `sandnet` (this crate's shim)
//! and `runc`, and a CRI client on its socket. Dropping it stops every pod it ran, containerd,
//! its shims and sandboxes, and removes the temp dir and the namespace.

#![allow(dead_code)]

pub mod containers;
pub mod image;
pub mod scale;
pub mod snapshot;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use sandnet_testkit::{pids_mentioning, TempDir, TestNs};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint, Uri};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The shim binary under test.
pub const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-sandnet-v2");

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Options of a private containerd.
#[derive(Default)]
pub struct Options {
    /// sandnet.toml lines for the runtime's `ConfigPath` (a file is written when non-empty).
    pub sandnet_config: Vec<String>,
    /// An IPv6 subnet for a second host-local range (dual-stack pods) and a `::/0` route.
    pub ipv6_subnet: Option<String>,
    /// Plugins chained after the bridge in the conflist.
    pub extra_plugins: Vec<Value>,
}

/// One private containerd.
pub struct Containerd {
    pub rt: tokio::runtime::Runtime,
    pub ns: TestNs,
    pub dir: TempDir,
    pub bridge: String,
    pub net: String,
    pub prefix: String,
    child: Mutex<Option<Child>>,
    holder: Mutex<Option<Child>>,
    client: Mutex<Option<RuntimeServiceClient<Channel>>>,
    pods: Mutex<Vec<String>>,
}

impl Containerd {
    pub fn start(tag: &str, opts: Options) -> Containerd {
        // SAFETY: plain syscall.
        assert_eq!(unsafe { libc::geteuid() }, 0, "run these tests as root");
        let pid = std::process::id();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let ns = TestNs::new(&format!("cd{tag}"));
        let dir = TempDir::new("cd");
        for d in ["root", "state", "net.d", "ipam", "sn", "opt"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let bridge = format!("scd{pid:x}x{n}");
        let net = format!("cdnet{pid}x{n}");
        let prefix = format!("10.{}.{}", 150 + n % 50, pid % 250);
        // The bridge exists before the first pod, so "links as before" holds after one.
        ns.ip(&["link", "add", &bridge, "type", "bridge"]);
        let mut ipam = json!({"type":"host-local","subnet":format!("{prefix}.0/24"),
                              "routes":[{"dst":"0.0.0.0/0"}],"dataDir":dir.join("ipam")});
        if let Some(v6) = &opts.ipv6_subnet {
            ipam["ranges"] = json!([[{"subnet":ipam["subnet"].take()}], [{"subnet":v6}]]);
            ipam["routes"] = json!([{"dst":"0.0.0.0/0"}, {"dst":"::/0"}]);
            ipam.as_object_mut().unwrap().remove("subnet");
        }
        let mut plugins = vec![
            json!({"type":"bridge","bridge":bridge,"isGateway":true,"ipMasq":true,"ipam":ipam}),
        ];
        plugins.extend(opts.extra_plugins.iter().cloned());
        let conflist = json!({"cniVersion":"1.0.0","name":net,"plugins":plugins});
        std::fs::write(dir.join("net.d/10-test.conflist"), conflist.to_string()).unwrap();
        let mut options = String::new();
        let sandnet_toml = dir.join("sandnet.toml");
        let mut cfg = String::from("[hypervisor.qemu]\ndefault_memory = 256\n");
        for l in &opts.sandnet_config {
            cfg += l;
            cfg += "\n";
        }
        std::fs::write(&sandnet_toml, cfg).unwrap();
        options += &format!(
            "      [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.sandnet.options]\n        ConfigPath = \"{}\"\n",
            sandnet_toml.display()
        );
        let d = dir.display();
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{d}/c.sock"
[ttrpc]
  address = "{d}/c.sock.ttrpc"
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{d}/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "{img}"
    restrict_oom_score_adj = true
    disable_apparmor = true
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "{d}/net.d"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "native"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          Root = "{d}/runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.sandnet]
        runtime_type = "io.containerd.sandnet.v2"
        pod_annotations = ["io.katacontainers.*"]
{options}"#,
            img = image::PAUSE_IMAGE
        );
        std::fs::write(dir.join("config.toml"), config).unwrap();
        let holder = spawn_mount_holder();
        // Wait until the holder has its own mount namespace.
        let own = std::fs::read_link("/proc/self/ns/mnt").unwrap();
        wait_until("the mount namespace holder", Duration::from_secs(5), || {
            std::fs::read_link(format!("/proc/{}/ns/mnt", holder.id())).is_ok_and(|l| l != own)
        });
        let child = spawn_containerd(&dir, &ns, holder.id());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let cd = Containerd {
            rt,
            ns,
            dir,
            bridge,
            net,
            prefix,
            child: Mutex::new(Some(child)),
            holder: Mutex::new(Some(holder)),
            client: Mutex::new(None),
            pods: Mutex::new(vec![]),
        };
        cd.wait_serving();
        let tar = image::build(&cd.dir);
        let o = Command::new("ctr")
            .args(["--address"])
            .arg(cd.sock())
            .args([
                "-n",
                "k8s.io",
                "images",
                "import",
                "--snapshotter",
                "native",
            ])
            .arg(&tar)
            .output()
            .unwrap();
        assert!(o.status.success(), "ctr import: {}", text(&o.stderr));
        cd
    }

    fn wait_serving(&self) {
        wait_until("containerd's socket", Duration::from_secs(30), || {
            self.ctr(&["version"]).status.success()
        });
    }

    /// Kills containerd (SIGKILL: its shims and sandboxes live on).
    pub fn kill_containerd(&self) {
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        *self.client.lock().unwrap() = None;
    }

    /// Kills containerd (SIGKILL: its shims and sandboxes live on) and starts it again on
    /// the same state; the CRI client reconnects.
    pub fn restart(&self) {
        self.kill_containerd();
        let _ = std::fs::remove_file(self.sock());
        let holder = self
            .holder
            .lock()
            .unwrap()
            .as_ref()
            .map(|h| h.id())
            .unwrap_or(0);
        *self.child.lock().unwrap() = Some(spawn_containerd(&self.dir, &self.ns, holder));
        self.wait_serving();
    }

    /// A container config running the pause image.
    pub fn container_config(&self, name: &str) -> ContainerConfig {
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: image::PAUSE_IMAGE.into(),
                ..Default::default()
            }),
            log_path: format!("{name}.log"),
            linux: Some(LinuxContainerConfig::default()),
            ..Default::default()
        }
    }

    /// CreateContainer + StartContainer in pod `pod`; the error of the first that fails.
    pub fn run_container(
        &self,
        pod: &str,
        pod_name: &str,
        name: &str,
    ) -> Result<String, tonic::Status> {
        let mut c = self.client();
        let id = self
            .rt
            .block_on(c.create_container(CreateContainerRequest {
                pod_sandbox_id: pod.into(),
                config: Some(self.container_config(name)),
                sandbox_config: Some(self.pod_config(pod_name)),
            }))?
            .into_inner()
            .container_id;
        let started = self.rt.block_on(c.start_container(StartContainerRequest {
            container_id: id.clone(),
        }));
        let removed = self.rt.block_on(c.remove_container(RemoveContainerRequest {
            container_id: id.clone(),
        }));
        started?;
        removed?;
        Ok(id)
    }

    /// Pids of this containerd's sandnet shim daemons.
    pub fn shim_pids(&self) -> Vec<u32> {
        pids_mentioning(&self.dir.display().to_string())
            .into_iter()
            .filter(|(_, c)| c.contains("containerd-shim-sandnet-v2") && c.contains("-socket"))
            .map(|(p, _)| p)
            .collect()
    }

    pub fn sock(&self) -> PathBuf {
        self.dir.join("c.sock")
    }

    /// sandnet's state root for this containerd's shims.
    pub fn state(&self) -> PathBuf {
        self.dir.join("sn")
    }

    pub fn containerd_pid(&self) -> u32 {
        // unshare execs nsenter execs containerd: same pid.
        self.child
            .lock()
            .unwrap()
            .as_ref()
            .map(|c| c.id())
            .unwrap_or(0)
    }

    pub fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(self.sock())
            .args(args)
            .output()
            .unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    pub fn client(&self) -> RuntimeServiceClient<Channel> {
        let mut g = self.client.lock().unwrap();
        if g.is_none() {
            let sock = self.sock();
            let ch = self.rt.block_on(async move {
                Endpoint::try_from("http://[::]:50051")
                    .unwrap()
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let sock = sock.clone();
                        async move {
                            Ok::<_, std::io::Error>(TokioIo::new(
                                tokio::net::UnixStream::connect(sock).await?,
                            ))
                        }
                    }))
                    .await
                    .expect("connect to CRI")
            });
            *g = Some(RuntimeServiceClient::new(ch));
        }
        g.clone().unwrap()
    }

    pub fn pod_config(&self, name: &str) -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{name}"),
                namespace: "default".into(),
                attempt: 1,
            }),
            hostname: name.into(),
            log_directory: self.dir.join("logs").display().to_string(),
            linux: Some(LinuxPodSandboxConfig::default()),
            ..Default::default()
        }
    }

    /// RunPodSandbox with `handler` ("sandnet" or "runc").
    pub fn run_pod(&self, name: &str, handler: &str) -> Result<String, tonic::Status> {
        self.run_pod_with(self.pod_config(name), handler)
    }

    /// RunPodSandbox of `config` (e.g. [`Containerd::pod_config`] with annotations) with
    /// `handler`.
    pub fn run_pod_with(
        &self,
        config: PodSandboxConfig,
        handler: &str,
    ) -> Result<String, tonic::Status> {
        let mut c = self.client();
        let req = RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: handler.into(),
        };
        let id = self
            .rt
            .block_on(c.run_pod_sandbox(req))?
            .into_inner()
            .pod_sandbox_id;
        self.pods.lock().unwrap().push(id.clone());
        Ok(id)
    }

    pub fn stop_pod(&self, id: &str) -> Result<(), tonic::Status> {
        let mut c = self.client();
        self.rt.block_on(c.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        }))?;
        Ok(())
    }

    pub fn remove_pod(&self, id: &str) -> Result<(), tonic::Status> {
        let mut c = self.client();
        self.rt
            .block_on(c.remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: id.into(),
            }))?;
        Ok(())
    }

    /// PodSandboxStatus (verbose): the status and the `info` JSON.
    pub fn status(&self, id: &str) -> Result<(PodSandboxStatus, Value), tonic::Status> {
        let mut c = self.client();
        let r = self
            .rt
            .block_on(c.pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: true,
            }))?
            .into_inner();
        let info = r
            .info
            .get("info")
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or(Value::Null);
        Ok((r.status.unwrap_or_default(), info))
    }

    pub fn ready(&self, id: &str) -> bool {
        self.status(id)
            .map(|(s, _)| s.state == PodSandboxState::SandboxReady as i32)
            .unwrap_or(false)
    }

    /// QEMU's pid of sandbox `id`, from sandnet's state.
    pub fn qemu_pid(&self, id: &str) -> Option<u32> {
        let s = std::fs::read_to_string(self.state().join(id).join("sandbox.json")).ok()?;
        let v: Value = serde_json::from_str(&s).ok()?;
        v["qemu_pid"].as_u64().map(|p| p as u32)
    }

    /// The shim daemon serving task `id`.
    pub fn shim_pid(&self, id: &str) -> Option<u32> {
        pids_mentioning(&format!("-id {id} "))
            .into_iter()
            .find(|(_, c)| c.contains("containerd-shim-sandnet-v2") && c.contains("-socket"))
            .map(|(p, _)| p)
    }

    /// Pings `ip` from containerd's network namespace.
    pub fn ping(&self, ip: &str) -> bool {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns.name,
                "ping",
                "-c",
                "1",
                "-W",
                "2",
                ip,
            ])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// The sandbox ids `sandnet ps` lists for this containerd's state root.
    pub fn sandnet_ids(&self) -> Vec<String> {
        sandnet_runtime::api::Runtime::new(self.state(), "/bin/false", vec![])
            .list()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.id)
            .collect()
    }
}

/// The containerd under test: `$SANDNET_TEST_CONTAINERD` (e.g. a 1.7 from
/// `scripts/fetch-containerd-1.7`), else `containerd` on PATH (Debian bookworm's 1.6).
pub fn containerd_bin() -> String {
    std::env::var("SANDNET_TEST_CONTAINERD")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "containerd".into())
}

/// A process holding the private mount namespace containerd runs in (kept across
/// containerd restarts, so its pod netns bind mounts stay).
fn spawn_mount_holder() -> Child {
    Command::new("unshare")
        .args(["-m", "--propagation", "private", "sleep", "1000000"])
        .stdin(Stdio::null())
        .spawn()
        .expect("unshare -m")
}

fn spawn_containerd(dir: &Path, ns: &TestNs, holder: u32) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("containerd.log"))
        .unwrap();
    let shim_dir = Path::new(SHIM).parent().unwrap();
    let path = format!(
        "{}:{}",
        shim_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new("nsenter")
        .args([
            &format!("--mount=/proc/{holder}/ns/mnt"),
            &format!("--net={}", ns.path()),
            &containerd_bin(),
            "--config",
        ])
        .arg(dir.join("config.toml"))
        .env("PATH", path)
        .env("SANDNET_STATE_DIR", dir.join("sn"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start containerd")
}

/// The pod's network namespace path, from PodSandboxStatus' verbose `info`.
pub fn pod_netns_path(info: &Value) -> Option<String> {
    info["runtimeSpec"]["linux"]["namespaces"]
        .as_array()?
        .iter()
        .find(|n| n["type"] == "network")?["path"]
        .as_str()
        .map(str::to_string)
}

fn kill(pid: u32, sig: i32) {
    // SAFETY: plain syscall.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let pods = std::mem::take(&mut *self.pods.lock().unwrap());
        let mut netns_paths = vec![];
        // Never panic here (a panic while unwinding aborts and leaks everything below).
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if !pods.is_empty() && self.child.lock().unwrap().is_none() {
                self.restart();
            }
            for id in &pods {
                if let Ok((_, info)) = self.status(id) {
                    netns_paths.extend(pod_netns_path(&info));
                }
                let _ = self.stop_pod(id);
                let _ = self.remove_pod(id);
            }
        }));
        let child = self.child.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut c) = child {
            kill(c.id(), libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let holder = self.holder.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut h) = holder {
            let _ = h.kill();
            let _ = h.wait();
        }
        // Whatever is left of this containerd: shims, supervisors, QEMUs.
        let d = self.dir.display().to_string();
        for _ in 0..3 {
            for (pid, _) in pids_mentioning(&d) {
                kill(pid, libc::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let state = self.state();
        let _ = self.rt.block_on(async move {
            sandnet_runtime::api::Runtime::new(&state, "/bin/false", vec![])
                .gc()
                .await
        });
        for p in netns_paths {
            let _ = std::fs::remove_file(p);
        }
    }
}
