//! The shim's process life: `start` (one serving daemon per pod: reuse the pod's, or spawn
//! it; print its address), `delete` (clean up after a dead shim), and the daemon's task
//! service.

use crate::bundle::{Bundle, TaskKind};
use crate::task::{bundle_dir, TaskService};
use async_trait::async_trait;
use containerd_shim::asynchronous::publisher::RemotePublisher;
use containerd_shim::asynchronous::{ExitSignal, Shim};
use containerd_shim::util::timestamp;
use containerd_shim::{Config, Error, Flags, StartOpts};
use containerd_shim_protos::api::DeleteResponse;
use containerd_shim_protos::protobuf::MessageField;
use sandnet_runtime::api::Runtime;
use sandnet_runtime::sandbox::SandboxPaths;
use std::ffi::OsString;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use tokio::io::AsyncReadExt;

/// The flag that makes this binary a sandbox supervisor:
/// `containerd-shim-sandnet-v2 -sandnet-state-dir ROOT __supervise ID`.
pub const SUPERVISE_FLAG: &str = "-sandnet-state-dir";

/// Longest path a unix socket address can hold (`sun_path` less its NUL).
const SUN_PATH_MAX: usize = 107;

/// sandnet's state root for this shim: `$SANDNET_STATE_DIR`, else `/run/sandnet`.
pub fn state_root() -> PathBuf {
    std::env::var_os("SANDNET_STATE_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(sandnet_runtime::sandbox::DEFAULT_ROOT))
}

/// The runtime whose sandbox supervisors are this binary (`-sandnet-state-dir ROOT
/// __supervise ID`), so that one file installed on containerd's PATH is all it needs.
pub fn runtime() -> std::io::Result<Runtime> {
    let root = state_root();
    let exe = std::env::current_exe()?;
    Ok(Runtime::new(
        &root,
        exe,
        vec![
            OsString::from(SUPERVISE_FLAG),
            root.clone().into_os_string(),
        ],
    ))
}

/// Where this shim serves: `<dir of containerd's socket>/s/<sha256(address/namespace/id)>`,
/// a path socket under containerd's own state (never an abstract one).
pub fn socket_path(address: &str, namespace: &str, id: &str) -> Result<PathBuf, Error> {
    use sha2::Digest;
    let containerd = Path::new(address.strip_prefix("unix://").unwrap_or(address));
    let dir = containerd
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .ok_or_else(|| Error::InvalidArgument(format!("-address {address:?} has no directory")))?;
    let hash = sha2::Sha256::digest(format!("{address}/{namespace}/{id}").as_bytes());
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    let path = dir.join("s").join(hex);
    if path.as_os_str().len() > SUN_PATH_MAX {
        return Err(Error::InvalidArgument(format!(
            "shim socket path {} is longer than {SUN_PATH_MAX} bytes; give containerd a shorter \
             socket directory",
            path.display()
        )));
    }
    Ok(path)
}

/// Whether a shim serves on `socket`.
fn serving(socket: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(socket).is_ok()
}

/// The socket of the shim that serves task `id` whose bundle is `bundle` (`None`: not
/// readable): the pod's for a container (see [`Bundle::grouping`]).
pub fn task_socket(
    address: &str,
    namespace: &str,
    id: &str,
    bundle: Option<&Bundle>,
) -> Result<PathBuf, Error> {
    let grouping = bundle.map_or_else(|| id.to_string(), |b| b.grouping(id));
    socket_path(address, namespace, &grouping)
}

/// The containerd shim of sandnet.
pub struct SandnetShim {
    namespace: String,
    id: String,
    bundle: String,
    /// The socket this daemon serves on (`-socket`; empty for the other actions).
    socket: PathBuf,
    exit: Arc<ExitSignal>,
}

#[async_trait]
impl Shim for SandnetShim {
    type T = TaskService;

    async fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        SandnetShim {
            namespace: args.namespace.clone(),
            id: args.id.clone(),
            bundle: args.bundle.clone(),
            socket: PathBuf::from(args.socket.trim_start_matches("unix://")),
            exit: Arc::new(ExitSignal::default()),
        }
    }

    async fn start_shim(&mut self, opts: StartOpts) -> Result<String, Error> {
        // containerd runs `start` in the task's bundle.
        let bundle = Bundle::load(Path::new(".")).ok();
        let socket = task_socket(&opts.address, &opts.namespace, &opts.id, bundle.as_ref())?;
        let address = format!("unix://{}", socket.display());
        let io = |what: &'static str| {
            move |e| Error::IoError {
                context: what.to_string(),
                err: e,
            }
        };
        if serving(&socket) {
            // The pod's shim serves this container too.
            std::fs::write("address", &address).map_err(io("write ./address"))?;
            return Ok(address);
        }
        if std::fs::symlink_metadata(&socket).is_ok_and(|m| m.file_type().is_socket()) {
            // A dead shim's.
            let _ = std::fs::remove_file(&socket);
        }
        // containerd hands `start` the runtime options on stdin (the runc shim reads its
        // ShimCgroup there).
        let mut options = Vec::new();
        tokio::io::stdin()
            .read_to_end(&mut options)
            .await
            .map_err(io("read the runtime options on stdin"))?;
        let exe = std::env::current_exe().map_err(io("find own binary"))?;
        let mut cmd = std::process::Command::new(exe);
        cmd.args(["-namespace", &opts.namespace, "-id", &opts.id, "-address"])
            .arg(&opts.address)
            .args(["-publish-binary", &opts.publish_binary, "-socket", &address]);
        if opts.debug {
            cmd.arg("-debug");
        }
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open("shim.stderr")
            .map_err(io("open shim.stderr in the bundle"))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: setsid is async-signal-safe. The daemon must outlive `start` and
            // containerd (a containerd restart reconnects through ./address).
            unsafe {
                cmd.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(Into::into));
            }
        }
        let mut child = tokio::process::Command::from(cmd)
            .kill_on_drop(false)
            .spawn()
            .map_err(io("spawn shim daemon"))?;
        // Placed before it serves, so the supervisors and QEMUs it starts inherit it.
        // (No pid: it has exited already, which the check below reports.)
        let placed = child
            .id()
            .map_or(Ok(()), |pid| crate::placement::place_daemon(pid, &options));
        if let Err(e) = placed {
            let _ = child.start_kill();
            let _ = child.wait().await;
            if std::fs::symlink_metadata(&socket).is_ok_and(|m| m.file_type().is_socket()) {
                let _ = std::fs::remove_file(&socket);
            }
            return Err(Error::Other(e.to_string()));
        }
        // The daemon closes its stdout once its server listens (or it exits).
        if let Some(mut out) = child.stdout.take() {
            let mut sink = Vec::new();
            let _ = out.read_to_end(&mut sink).await;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string("shim.stderr").unwrap_or_default();
            return Err(Error::Other(format!(
                "shim daemon exited ({status}) before serving: {}",
                sandnet_model::one_line(&log)
            )));
        }
        std::fs::write("address", &address).map_err(io("write ./address"))?;
        Ok(address)
    }

    async fn delete_shim(&mut self) -> Result<DeleteResponse, Error> {
        // After a task's shim connection closed (also after a normal Delete): remove what
        // the task left, and the socket of a shim that no longer serves.
        let dir = bundle_dir(&self.bundle);
        let socket = std::fs::read_to_string(dir.join("address"))
            .ok()
            .map(|a| PathBuf::from(a.trim().trim_start_matches("unix://")));
        let alive = socket.as_deref().is_some_and(serving);
        match Bundle::load(&dir) {
            Ok(b) if matches!(b.kind, TaskKind::Container { .. }) => {
                // A live pod shim owns the container's mounts (its Delete undoes them).
                if !alive {
                    sweep_container(&self.id, &dir, &b).await?;
                }
            }
            _ => {
                // The sandbox (removing it unmounts whatever is left in its share first).
                if let Ok(rt) = runtime() {
                    if let Err(e) = rt.handle(&self.id).remove(true).await {
                        return Err(Error::Other(format!("sandbox {}: {e}", self.id)));
                    }
                }
            }
        }
        if let Some(p) = socket.filter(|_| !alive) {
            if std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_socket()) {
                let _ = std::fs::remove_file(&p);
            }
        }
        Ok(DeleteResponse {
            exit_status: 128 + libc::SIGKILL as u32,
            exited_at: MessageField::from_option(timestamp().ok()),
            ..Default::default()
        })
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
        // The library would remove the socket named in ./address, but containerd may have
        // deleted the bundle (and that file) already when the pod's last task went: the
        // daemon removes its own socket.
        if std::fs::symlink_metadata(&self.socket).is_ok_and(|m| m.file_type().is_socket()) {
            let _ = std::fs::remove_file(&self.socket);
        }
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> Self::T {
        let rt = match runtime() {
            Ok(rt) => rt,
            Err(e) => {
                log::error!("cannot find the shim's own binary: {e}");
                std::process::exit(1);
            }
        };
        TaskService::new(rt, self.namespace.clone(), publisher, self.exit.clone())
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
    crate::container::blocking(f)
        .await
        .map_err(|e| Error::Other(e.to_string()))
}

/// Unmounts what container `id` (bundle `dir`) left on its bundle's root and in its pod's
/// share, and removes its directory there.
async fn sweep_container(id: &str, dir: &Path, b: &Bundle) -> Result<(), Error> {
    let TaskKind::Container { sandbox } = &b.kind else {
        return Ok(());
    };
    let root = crate::rootfs::bundle_root(dir, &b.root_path);
    let r = if sandbox.is_empty() {
        blocking(move || crate::mounts::unmount_under(&root).map_err(|e| e.to_string())).await?
    } else {
        let share = SandboxPaths::new(&state_root(), sandbox).shared;
        let id = id.to_string();
        blocking(move || crate::rootfs::sweep(&id, Some(&root), &share).map_err(|e| e.to_string()))
            .await?
    };
    r.map_err(Error::Other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_under_containerds_dir() {
        let p = socket_path("/run/containerd/containerd.sock", "k8s.io", "abc").unwrap();
        assert!(p.starts_with("/run/containerd/s/"));
        assert_eq!(p.file_name().unwrap().len(), 64);
        let q = socket_path("unix:///run/containerd/containerd.sock", "k8s.io", "abd").unwrap();
        assert_ne!(p, q);
    }

    #[test]
    fn a_container_is_served_by_its_pods_shim() {
        let addr = "/run/containerd/containerd.sock";
        let pod = Bundle::parse(
            br#"{"annotations":{"io.kubernetes.cri.container-type":"sandbox",
                "io.kubernetes.cri.sandbox-id":"pod1"}}"#,
        )
        .unwrap();
        let ctr = Bundle::parse(
            br#"{"annotations":{"io.kubernetes.cri.container-type":"container",
                "io.kubernetes.cri.sandbox-id":"pod1"}}"#,
        )
        .unwrap();
        let p = task_socket(addr, "k8s.io", "pod1", Some(&pod)).unwrap();
        assert_eq!(p, socket_path(addr, "k8s.io", "pod1").unwrap());
        assert_eq!(task_socket(addr, "k8s.io", "c1", Some(&ctr)).unwrap(), p);
        assert_ne!(task_socket(addr, "k8s.io", "c1", None).unwrap(), p);
        assert_ne!(task_socket(addr, "other", "c1", Some(&ctr)).unwrap(), p);
    }

    #[test]
    fn nothing_serves_on_a_missing_socket() {
        assert!(!serving(Path::new("/nonexistent/sandnet.sock")));
    }

    #[test]
    fn too_long_socket_path_is_refused() {
        let dir = "/x".repeat(30);
        let e = socket_path(&format!("{dir}/containerd.sock"), "k8s.io", "a").unwrap_err();
        assert!(e.to_string().contains("longer than 107"), "{e}");
        assert!(socket_path("containerd.sock", "k8s.io", "a").is_err());
    }
}
