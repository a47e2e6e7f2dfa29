//! QEMU: the command line for a sandbox VM with cold-plugged NICs, and the child process.

use crate::console::{ConsoleDrain, DEFAULT_CONSOLE_CAP};
use crate::error::{Result, VmError};
use crate::kvm::Accel;
use crate::nic::NicSpec;
use crate::qmp::QmpClient;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// QEMU binary used unless the spec names another.
pub const DEFAULT_QEMU: &str = "/usr/bin/qemu-system-x86_64";
/// The minimal firmware shipped in Debian's QEMU package (boots in ~50 ms instead of ~120 ms).
pub const QBOOT_ROM: &str = "/usr/share/qemu/qboot.rom";
/// Name of the guest's virtio-serial port for the agent (Kata's name).
pub const AGENT_PORT_NAME: &str = "agent.channel.0";
/// Kernel arguments for a fast, quiet boot with a serial console.
pub const DEFAULT_KERNEL_ARGS: &str = "console=ttyS0 quiet loglevel=0 panic=1 \
cryptomgr.notests no_timer_check tsc=reliable pci=lastbus=0 \
i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd random.trust_cpu=on";
/// How long [`Qemu::spawn`] waits for the QMP socket.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything needed to start a sandbox VM.
#[derive(Debug)]
pub struct VmSpec {
    /// The QEMU binary.
    pub qemu: PathBuf,
    /// Machine type (`q35`).
    pub machine: String,
    /// Accelerator (see [`crate::accel::choose`]).
    pub accel: Accel,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Kernel image (ELF `vmlinux` for PVH, or bzImage).
    pub kernel: PathBuf,
    /// The initramfs.
    pub initrd: PathBuf,
    /// Kernel command line.
    pub kernel_args: String,
    /// Firmware for `-bios` (qboot when the package ships it); `None` = QEMU's default.
    pub firmware: Option<PathBuf>,
    /// NICs cold-plugged on the command line.
    pub nics: Vec<NicSpec>,
    /// Number of free `pcie-root-port`s (`rp0`, `rp1`, …) left for hot plug (q35 only).
    pub hotplug_ports: u32,
    /// Add a `vhost-vsock-pci` device with this guest CID (hosts with `/dev/vhost-vsock`).
    pub vsock_cid: Option<u32>,
    /// Extra arguments appended verbatim.
    pub extra_args: Vec<String>,
    /// Cap of `console.log` in bytes; the rotated `console.log.1` holds as much again.
    pub console_cap: u64,
}

impl VmSpec {
    /// A q35 VM with 1 vCPU, 256 MiB, the fast-boot kernel arguments, qboot if present, 4 free
    /// root ports and no NICs.
    pub fn new(kernel: impl Into<PathBuf>, initrd: impl Into<PathBuf>, accel: Accel) -> Self {
        VmSpec {
            qemu: PathBuf::from(DEFAULT_QEMU),
            machine: "q35".into(),
            accel,
            vcpus: 1,
            memory_mib: 256,
            kernel: kernel.into(),
            initrd: initrd.into(),
            kernel_args: DEFAULT_KERNEL_ARGS.into(),
            firmware: Some(PathBuf::from(QBOOT_ROM)).filter(|p| p.is_file()),
            nics: Vec::new(),
            hotplug_ports: 4,
            vsock_cid: None,
            extra_args: Vec::new(),
            console_cap: DEFAULT_CONSOLE_CAP,
        }
    }

    /// The id of hot-plug root port `i` (`rp0`, …).
    pub fn root_port_id(i: u32) -> String {
        format!("rp{i}")
    }

    /// Checks the spec against the filesystem and itself; nothing is started.
    pub fn validate(&self) -> Result<()> {
        let file = |p: &Path, what: &str| -> Result<()> {
            if p.is_file() {
                Ok(())
            } else {
                Err(VmError::InvalidSpec(format!(
                    "{what} {} does not exist or is not a file",
                    p.display()
                )))
            }
        };
        file(&self.qemu, "QEMU binary")?;
        let mode = std::fs::metadata(&self.qemu)
            .map_err(|e| VmError::io("reading", &self.qemu, e))?
            .permissions()
            .mode();
        if mode & 0o111 == 0 {
            return Err(VmError::InvalidSpec(format!(
                "QEMU binary {} is not executable",
                self.qemu.display()
            )));
        }
        file(&self.kernel, "kernel")?;
        file(&self.initrd, "initrd")?;
        if let Some(fw) = &self.firmware {
            file(fw, "firmware")?;
        }
        if self.vcpus == 0 || self.vcpus > 255 {
            return Err(VmError::InvalidSpec(format!(
                "{} vCPUs (need 1..=255)",
                self.vcpus
            )));
        }
        if self.memory_mib < 64 {
            return Err(VmError::InvalidSpec(format!(
                "{} MiB of memory (need at least 64)",
                self.memory_mib
            )));
        }
        if self.machine.is_empty() || self.machine.contains([',', ' ']) {
            return Err(VmError::InvalidSpec(format!("machine {:?}", self.machine)));
        }
        if self.hotplug_ports > 0 && self.machine != "q35" {
            return Err(VmError::InvalidSpec(
                "hot-plug root ports need machine q35".into(),
            ));
        }
        if self.hotplug_ports > 32 {
            return Err(VmError::InvalidSpec(format!(
                "{} hot-plug ports (at most 32)",
                self.hotplug_ports
            )));
        }
        let mut ids = std::collections::BTreeSet::new();
        for n in &self.nics {
            n.validate()?;
            if !ids.insert(n.id.as_str()) || n.id.starts_with("rp") {
                return Err(VmError::InvalidSpec(format!(
                    "NIC id {:?} is duplicated or reserved",
                    n.id
                )));
            }
            for fd in n.tap_fds.iter().chain(&n.vhost_fds) {
                if fd.as_raw_fd() <= 2 {
                    return Err(VmError::InvalidSpec(format!(
                        "NIC {}: fd {} would clash with the child's stdio",
                        n.id,
                        fd.as_raw_fd()
                    )));
                }
            }
        }
        Ok(())
    }

    /// The QEMU arguments (without the binary) for this spec, its state files and the NIC fds as
    /// the child will see them (the same numbers as in this process).
    pub fn qemu_args(&self, paths: &StatePaths) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
        push(&[
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ]);
        push(&["-machine", &self.machine, "-accel", self.accel.as_str()]);
        let cpu = match self.accel {
            Accel::Kvm => "host",
            Accel::Tcg => "qemu64,+rdrand",
        };
        push(&["-cpu", cpu]);
        push(&[
            "-smp",
            &self.vcpus.to_string(),
            "-m",
            &self.memory_mib.to_string(),
        ]);
        if let Some(fw) = &self.firmware {
            push(&["-bios", &path_str(fw)]);
        }
        push(&[
            "-kernel",
            &path_str(&self.kernel),
            "-initrd",
            &path_str(&self.initrd),
        ]);
        push(&["-append", &self.kernel_args]);
        push(&[
            "-chardev",
            &format!(
                "socket,id=console,path={},server=off",
                esc(&paths.console_sock)
            ),
            "-serial",
            "chardev:console",
        ]);
        push(&[
            "-chardev",
            &format!("socket,id=qmp,path={},server=on,wait=off", esc(&paths.qmp)),
            "-mon",
            "chardev=qmp,mode=control",
        ]);
        push(&[
            "-device",
            "virtio-serial-pci,id=virtio-serial0,romfile=",
            "-chardev",
            &format!(
                "socket,id=agent,path={},server=on,wait=off",
                esc(&paths.agent)
            ),
            "-device",
            &format!("virtserialport,chardev=agent,id=agent0,name={AGENT_PORT_NAME}"),
        ]);
        for i in 0..self.hotplug_ports {
            push(&[
                "-device",
                &format!(
                    "pcie-root-port,id={},bus=pcie.0,chassis={},slot={}",
                    Self::root_port_id(i),
                    i + 1,
                    i + 1
                ),
            ]);
        }
        for n in &self.nics {
            let fds = |v: &[OwnedFd]| {
                v.iter()
                    .map(|f| f.as_raw_fd().to_string())
                    .collect::<Vec<_>>()
                    .join(":")
            };
            let mut netdev = format!("tap,id={}", NicSpec::netdev_id(&n.id));
            if n.tap_fds.len() == 1 {
                netdev.push_str(&format!(",fd={}", fds(&n.tap_fds)));
            } else {
                netdev.push_str(&format!(",fds={}", fds(&n.tap_fds)));
            }
            if !n.vhost_fds.is_empty() {
                let key = if n.vhost_fds.len() == 1 {
                    "vhostfd"
                } else {
                    "vhostfds"
                };
                netdev.push_str(&format!(",vhost=on,{key}={}", fds(&n.vhost_fds)));
            }
            let mut dev = format!(
                "virtio-net-pci,id={},netdev={},mac={},romfile=",
                n.id,
                NicSpec::netdev_id(&n.id),
                n.mac
            );
            if n.queues > 1 {
                dev.push_str(&format!(",mq=on,vectors={}", 2 * n.queues + 2));
            }
            push(&["-netdev", &netdev, "-device", &dev]);
        }
        if let Some(cid) = self.vsock_cid {
            push(&[
                "-device",
                &format!("vhost-vsock-pci,id=vsock0,guest-cid={cid}"),
            ]);
        }
        push(&["-pidfile", &path_str(&paths.pid)]);
        a.extend(self.extra_args.iter().cloned());
        a
    }
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Escapes a value for QEMU's `key=value,…` option syntax (commas are doubled).
fn esc(p: &Path) -> String {
    path_str(p).replace(',', ",,")
}

/// The files QEMU uses in a sandbox's state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatePaths {
    /// The state directory itself.
    pub dir: PathBuf,
    /// QMP socket (`qmp.sock`).
    pub qmp: PathBuf,
    /// Agent channel socket (`agent.sock`), the host end of the virtio-serial port.
    pub agent: PathBuf,
    /// Guest serial console (`console.log`, capped; older output in `console.log.1`).
    pub console: PathBuf,
    /// The socket QEMU sends the console to (`console.sock`); sandnet listens on it.
    pub console_sock: PathBuf,
    /// QEMU's stdout and stderr (`qemu.log`).
    pub log: PathBuf,
    /// QEMU's pid file (`qemu.pid`).
    pub pid: PathBuf,
}

impl StatePaths {
    /// The paths inside `dir`.
    pub fn new(dir: &Path) -> Self {
        StatePaths {
            dir: dir.to_path_buf(),
            qmp: dir.join("qmp.sock"),
            agent: dir.join("agent.sock"),
            console: dir.join("console.log"),
            console_sock: dir.join("console.sock"),
            log: dir.join("qemu.log"),
            pid: dir.join("qemu.pid"),
        }
    }
}

/// The fd numbers a NIC's queues have in the QEMU child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildNicFds {
    /// NIC id.
    pub id: String,
    /// Tap fds as numbered in the child.
    pub tap_fds: Vec<RawFd>,
    /// vhost fds as numbered in the child.
    pub vhost_fds: Vec<RawFd>,
}

/// Starts QEMU processes.
pub struct Qemu;

impl Qemu {
    /// Starts QEMU for `spec` inside `netns` (when given), with exactly the NIC fds inherited,
    /// stdout/stderr in `state_dir/qemu.log`, and waits until QEMU answers on its QMP socket
    /// (the connection is kept: [`QemuProcess::qmp`]). The NIC fds are closed in this process
    /// once the child has them. QEMU is killed if this fails.
    pub async fn spawn(
        spec: VmSpec,
        netns: Option<BorrowedFd<'_>>,
        state_dir: &Path,
    ) -> Result<QemuProcess> {
        spec.validate()?;
        std::fs::create_dir_all(state_dir).map_err(|e| VmError::io("creating", state_dir, e))?;
        let paths = StatePaths::new(state_dir);
        for stale in [&paths.qmp, &paths.agent, &paths.pid] {
            match std::fs::remove_file(stale) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(VmError::io("removing stale", stale, e)),
            }
        }
        let console = ConsoleDrain::start(&paths.console_sock, &paths.console, spec.console_cap)?;
        let log = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&paths.log)
                .map_err(|e| VmError::io("creating", &paths.log, e))?
        };
        let log2 = log
            .try_clone()
            .map_err(|e| VmError::io("duplicating", &paths.log, e))?;
        let args = spec.qemu_args(&paths);
        let inherit: Vec<RawFd> = spec
            .nics
            .iter()
            .flat_map(|n| n.tap_fds.iter().chain(&n.vhost_fds))
            .map(|f| f.as_raw_fd())
            .collect();
        let child_fds = spec
            .nics
            .iter()
            .map(|n| ChildNicFds {
                id: n.id.clone(),
                tap_fds: n.tap_fds.iter().map(|f| f.as_raw_fd()).collect(),
                vhost_fds: n.vhost_fds.iter().map(|f| f.as_raw_fd()).collect(),
            })
            .collect();
        let netns_raw = netns.map(|f| f.as_raw_fd());
        let mut cmd = tokio::process::Command::new(&spec.qemu);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .kill_on_drop(true);
        // SAFETY: the closure only makes async-signal-safe system calls (umask, setns, fcntl) on fds
        // that stay open in the parent until `spawn` returns.
        unsafe {
            cmd.pre_exec(move || {
                // What QEMU creates (console, pid file, sockets) is root's alone: the
                // console carries guest output.
                libc::umask(0o077);
                if let Some(ns) = netns_raw {
                    if libc::setns(ns, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                for &fd in &inherit {
                    let flags = libc::fcntl(fd, libc::F_GETFD);
                    if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        tracing::debug!(qemu = %spec.qemu.display(), ?args, "starting QEMU");
        let child = cmd.spawn().map_err(|e| VmError::Spawn {
            qemu: spec.qemu.clone(),
            source: e,
        })?;
        let started = Instant::now();
        // The child holds its copies now; ours close here.
        drop(spec);
        let pid = child.id().unwrap_or(0);
        let mut proc = QemuProcess {
            child,
            pid,
            paths,
            child_fds,
            started,
            qmp: None,
            _console: console,
        };
        match proc.wait_ready(READY_TIMEOUT).await {
            Ok(q) => proc.qmp = Some(q),
            Err(e) => {
                let _ = proc.kill().await;
                return Err(e);
            }
        }
        tracing::info!(pid, ms = started.elapsed().as_millis() as u64, "QEMU up");
        Ok(proc)
    }
}

/// A running QEMU child. Dropping it kills QEMU.
#[derive(Debug)]
pub struct QemuProcess {
    child: tokio::process::Child,
    pid: u32,
    paths: StatePaths,
    child_fds: Vec<ChildNicFds>,
    started: Instant,
    qmp: Option<QmpClient>,
    /// Drains the console while QEMU runs; stops when dropped.
    _console: ConsoleDrain,
}

impl QemuProcess {
    /// QEMU's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The state files (sockets, logs).
    pub fn paths(&self) -> &StatePaths {
        &self.paths
    }

    /// The NIC fd numbers as the child sees them.
    pub fn child_fds(&self) -> &[ChildNicFds] {
        &self.child_fds
    }

    /// When QEMU was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The last `lines` lines of QEMU's stdout/stderr log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.paths.log, lines)
    }

    /// Waits for the QMP socket, then connects and negotiates: QEMU answers only once its
    /// devices exist and its main loop runs, so a bad device argument shows up here as an exit.
    async fn wait_ready(&mut self, timeout: Duration) -> Result<QmpClient> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait()? {
                return Err(self.exited_error(st));
            }
            if std::fs::symlink_metadata(&self.paths.qmp).is_ok() {
                break;
            }
            if Instant::now() >= deadline {
                return Err(VmError::Timeout {
                    what: format!("QMP socket {}", self.paths.qmp.display()),
                    ms: timeout.as_millis(),
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let qmp_path = self.paths.qmp.clone();
        tokio::select! {
            st = self.child.wait() => {
                let st = st.map_err(|e| VmError::io("waiting for", &self.paths.log, e))?;
                Err(self.exited_error(st))
            }
            r = tokio::time::timeout(left, connect_qmp_listening(&qmp_path)) => match r {
                Ok(Ok(c)) => Ok(c),
                Ok(Err(e)) => {
                    // Connection dropped: most likely QEMU is exiting; prefer that story.
                    if let Ok(Some(st)) = self.wait_timeout(Duration::from_millis(500)).await {
                        return Err(self.exited_error(st));
                    }
                    Err(e)
                }
                Err(_) => Err(VmError::Timeout {
                    what: format!("QMP greeting on {}", qmp_path.display()),
                    ms: timeout.as_millis(),
                }),
            }
        }
    }

    fn exited_error(&self, st: ExitStatus) -> VmError {
        VmError::QemuExited {
            status: st.to_string(),
            log: self.paths.log.clone(),
            tail: self.log_tail(20),
        }
    }

    /// The QMP connection made while starting (QEMU's monitor serves one client at a time).
    pub fn qmp(&self) -> Option<&QmpClient> {
        self.qmp.as_ref()
    }

    /// Takes the QMP connection out, e.g. to hand it to another task.
    pub fn take_qmp(&mut self) -> Option<QmpClient> {
        self.qmp.take()
    }

    /// Connects a new QMP client; only works once the previous one was dropped.
    pub async fn connect_qmp(&self) -> Result<QmpClient> {
        QmpClient::connect(&self.paths.qmp).await
    }

    /// Whether QEMU has exited (reaps it if so).
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        self.child
            .try_wait()
            .map_err(|e| VmError::io("waiting for", &self.paths.log, e))
    }

    /// Waits for QEMU to exit.
    pub async fn wait(&mut self) -> Result<ExitStatus> {
        self.child
            .wait()
            .await
            .map_err(|e| VmError::io("waiting for", &self.paths.log, e))
    }

    /// Waits at most `timeout` for QEMU to exit; `None` if it is still running.
    pub async fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        match tokio::time::timeout(timeout, self.wait()).await {
            Ok(r) => r.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Kills QEMU (SIGKILL) and reaps it; does nothing if it already exited.
    pub async fn kill(&mut self) -> Result<()> {
        if self.try_wait()?.is_some() {
            return Ok(());
        }
        match self.child.kill().await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => Ok(()),
            Err(e) => Err(VmError::io("killing QEMU, log", &self.paths.log, e)),
        }
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let Ok(data) = std::fs::read(path) else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&data);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Connects to QMP, retrying while the socket exists but is not listening yet: QEMU binds it
/// and calls listen() a moment later, and on a loaded host (ten VMs starting on two cores)
/// a connect in between is refused.
async fn connect_qmp_listening(path: &Path) -> Result<QmpClient> {
    loop {
        match QmpClient::connect(path).await {
            Err(VmError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::ConnectionRefused =>
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd() -> OwnedFd {
        std::fs::File::open("/dev/null").unwrap().into()
    }

    #[test]
    fn command_line_for_nics() {
        let mut s = VmSpec::new("/k", "/i,x", Accel::Tcg);
        s.firmware = None;
        let (a, b, c) = (fd(), fd(), fd());
        let (ra, rb, rc) = (a.as_raw_fd(), b.as_raw_fd(), c.as_raw_fd());
        s.nics.push(NicSpec::new(
            "eth0",
            "02:00:00:00:00:01".parse().unwrap(),
            a,
        ));
        s.nics.push(NicSpec {
            id: "eth1".into(),
            mac: "02:00:00:00:00:02".parse().unwrap(),
            tap_fds: vec![b, c],
            vhost_fds: vec![],
            queues: 2,
        });
        let args = s.qemu_args(&StatePaths::new(Path::new("/run/s,1")));
        let joined = args.join(" ");
        assert!(
            joined.contains(&format!("-netdev tap,id=eth0-netdev,fd={ra} ")),
            "{joined}"
        );
        assert!(
            joined.contains(&format!("tap,id=eth1-netdev,fds={rb}:{rc} ")),
            "{joined}"
        );
        assert!(joined.contains("virtio-net-pci,id=eth1,netdev=eth1-netdev,mac=02:00:00:00:00:02,romfile=,mq=on,vectors=6"));
        assert!(joined
            .contains("virtio-net-pci,id=eth0,netdev=eth0-netdev,mac=02:00:00:00:00:01,romfile= "));
        assert!(joined.contains("socket,id=qmp,path=/run/s,,1/qmp.sock,server=on,wait=off"));
        assert!(joined.contains("pcie-root-port,id=rp3,bus=pcie.0,chassis=4,slot=4"));
        assert!(joined.contains("name=agent.channel.0"));
        assert!(joined.contains("socket,id=console,path=/run/s,,1/console.sock,server=off"));
        assert!(args.windows(2).any(|w| w[0] == "-initrd" && w[1] == "/i,x"));
        assert!(args
            .windows(2)
            .any(|w| w[0] == "-cpu" && w[1] == "qemu64,+rdrand"));
    }

    #[test]
    fn bad_specs_are_rejected() {
        let mut s = VmSpec::new("/nonexistent/vmlinuz", "/dev/null", Accel::Tcg);
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("kernel /nonexistent/vmlinuz"), "{e}");
        s.kernel = "/bin/sh".into();
        s.initrd = "/bin/sh".into();
        s.nics.push(NicSpec {
            id: "eth0".into(),
            mac: "02:00:00:00:00:01".parse().unwrap(),
            tap_fds: vec![fd()],
            vhost_fds: vec![],
            queues: 2,
        });
        assert!(s.validate().unwrap_err().to_string().contains("queues=2"));
        s.nics[0].queues = 1;
        s.nics[0].id = "0bad,id".into();
        assert!(s.validate().is_err());
        s.nics[0].id = "eth0".into();
        s.nics[0].mac = "01:00:5e:00:00:01".parse().unwrap();
        assert!(s.validate().unwrap_err().to_string().contains("unicast"));
    }
}
