//! Helpers for the VM tests: the guest kernel, a netns guard, a tap opened inside a netns, and
//! a busybox-script guest.
#![allow(dead_code)]

use sandnet_vm::accel::{self, StartFailure};
use sandnet_vm::{
    Accel, AccelMode, GuestKernel, Initramfs, InitramfsSpec, Qemu, QemuProcess, VmError, VmSpec,
    DEBIAN_CLOUD_KERNEL,
};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs one of the repo's kernel scripts (its progress goes to the test's stderr).
fn run_script(name: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts")
        .join(name);
    eprintln!("running {}", script.display());
    let st = Command::new(&script)
        .status()
        .expect("run the kernel script");
    assert!(st.success(), "{name} failed ({st}); apt must be reachable");
}

/// The default guest kernel (sandnet's own), built with scripts/build-kernel when the cache
/// does not have it (about 8 minutes on 2 cores, with progress).
pub fn guest_kernel() -> GuestKernel {
    let dir = GuestKernel::default_dir();
    if let Ok(k) = GuestKernel::locate(&dir) {
        return k;
    }
    eprintln!("guest kernel not in {}", dir.display());
    run_script("build-kernel");
    GuestKernel::locate(&dir).expect("guest kernel after build-kernel")
}

/// Debian's cloud kernel (`debian-cloud` in the cache), fetched with scripts/guest-kernel.sh
/// when the cache does not have it.
pub fn cloud_kernel() -> GuestKernel {
    if let Ok(k) = GuestKernel::named(DEBIAN_CLOUD_KERNEL) {
        return k;
    }
    run_script("guest-kernel.sh");
    GuestKernel::named(DEBIAN_CLOUD_KERNEL).expect("cloud kernel after guest-kernel.sh")
}

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);
impl TempDir {
    pub fn new(tag: &str) -> Self {
        let d = std::env::temp_dir().join(format!("sandnet-vm-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("create temp dir");
        TempDir(d)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A named network namespace deleted on drop.
pub struct Netns {
    pub name: String,
    pub file: std::fs::File,
}
impl Netns {
    pub fn new(test: &str) -> Self {
        let name = format!("svm-{test}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("ip netns add");
        assert!(st.success(), "ip netns add {name}");
        let file = std::fs::File::open(format!("/run/netns/{name}")).expect("open netns");
        let ns = Netns { name, file };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }
    /// Runs `ip -n NAME args…` and asserts success.
    pub fn ip(&self, args: &[&str]) {
        let out = Command::new("ip")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .output()
            .expect("ip");
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    /// Runs a command inside the netns and returns whether it succeeded.
    pub fn exec_ok(&self, cmd: &[&str]) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }
    /// Creates tap `name` inside the netns (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR) and returns its fd;
    /// the tap lives as long as the fd (and QEMU's copy of it).
    pub fn open_tap(&self, name: &str) -> OwnedFd {
        self.open_tap_queues(name, 1).remove(0)
    }

    /// Like [`Netns::open_tap`] with `queues` fds (IFF_MULTI_QUEUE when more than one).
    pub fn open_tap_queues(&self, name: &str, queues: usize) -> Vec<OwnedFd> {
        let ns = self.file.try_clone().expect("dup netns fd");
        let name = name.to_string();
        std::thread::spawn(move || -> Vec<OwnedFd> {
            // SAFETY: setns on this short-lived thread only.
            let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            let mut flags = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
            if queues > 1 {
                flags |= libc::IFF_MULTI_QUEUE;
            }
            (0..queues)
                .map(|_| {
                    let tun = std::fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .open("/dev/net/tun")
                        .expect("open /dev/net/tun");
                    let mut ifr = [0u8; 40];
                    ifr[..name.len()].copy_from_slice(name.as_bytes());
                    ifr[16..18].copy_from_slice(&(flags as libc::c_short).to_ne_bytes());
                    // SAFETY: TUNSETIFF reads a 40-byte struct ifreq.
                    let r = unsafe {
                        libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF as _, ifr.as_mut_ptr())
                    };
                    assert_eq!(r, 0, "TUNSETIFF: {}", std::io::Error::last_os_error());
                    OwnedFd::from(tun)
                })
                .collect()
        })
        .join()
        .expect("tap thread")
    }
}
impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A dup of `fd` as an OwnedFd (for tests that keep their own copy).
pub fn dup(fd: &OwnedFd) -> OwnedFd {
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor we own.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    assert!(r >= 0);
    unsafe { OwnedFd::from_raw_fd(r) }
}

/// The guest /init used by the tests: mounts, loads the modules listed by the image, configures
/// eth0 from `sandnet.ip=` / `sandnet.peer=` on the kernel command line and pings the peer.
pub const TEST_INIT: &str = r#"#!/bin/busybox sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "SANDNET-INIT up $(cut -d' ' -f1 /proc/uptime)"
echo "SANDNET-UNAME $(uname -r)"
for m in $(cat /etc/sandnet/modules); do insmod /$m || echo "SANDNET-INSMOD-FAIL $m"; done
for a in $(cat /proc/cmdline); do
  case $a in
    sandnet.ip=*) IP=${a#sandnet.ip=} ;;
    sandnet.peer=*) PEER=${a#sandnet.peer=} ;;
  esac
done
ip link set lo up
if [ -n "$IP" ]; then
  i=0
  while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
  ip addr add "$IP" dev eth0
  ip link set eth0 up
  echo "SANDNET-NET $(cut -d' ' -f1 /proc/uptime) queues: $(ls /sys/class/net/eth0/queues | tr '\n' ' ')"
  i=0
  while [ $i -lt 100 ]; do
    if ping -c 1 -W 1 "$PEER" >/dev/null 2>&1; then
      echo "SANDNET-PING-OK $(cut -d' ' -f1 /proc/uptime)"
      break
    fi
    i=$((i+1))
  done
fi
for p in /sys/class/virtio-ports/*; do
  [ -e "$p/name" ] && echo "SANDNET-PORT $(cat $p/name) /dev/${p##*/} $(ls /dev/${p##*/} 2>&1)"
done
echo SANDNET-READY
# Report links appearing and disappearing (hot plug).
seen=" $(ls /sys/class/net | tr '\n' ' ')"
while true; do
  now=" $(ls /sys/class/net | tr '\n' ' ')"
  for n in $now; do
    case "$seen" in *" $n "*) ;; *) echo "SANDNET-LINK-ADD $n $(cat /sys/class/net/$n/address)" ;; esac
  done
  for n in $seen; do
    case "$now" in *" $n "*) ;; *) echo "SANDNET-LINK-DEL $n" ;; esac
  done
  seen="$now"
  sleep 0.2
done
"#;

/// Builds (cached) an initramfs with [`TEST_INIT`] as /init, the kernel's modules and busybox.
pub fn test_initramfs(kernel: &GuestKernel, scratch: &Path) -> PathBuf {
    let init = scratch.join("init.sh");
    std::fs::write(&init, TEST_INIT).expect("write init");
    let spec = InitramfsSpec::new(&init, kernel);
    let cache = std::env::temp_dir().join("sandnet-vm-test-initramfs");
    Initramfs::build_cached(&spec, &cache).expect("initramfs")
}

/// Waits until `path` contains `needle`; returns the time it took, or None on timeout.
pub async fn wait_for_text(path: &Path, needle: &str, timeout: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if std::fs::read_to_string(path).is_ok_and(|s| s.contains(needle)) {
            return Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// What the test guest prints first on its console: its sign of life.
pub const SIGN_OF_LIFE: &str = "SANDNET-INIT up";

/// How long the test guest may take to show its sign of life under KVM when no trial is
/// needed (a remembered verdict or `SANDNET_ACCEL=kvm`).
const KVM_BOOT_DEADLINE: Duration = Duration::from_secs(60);

/// Starts the VM `make(accel)` the way sandnet does: under the accelerator
/// `accel::choose(auto)` picks (verdicts cached in the temp dir, `SANDNET_ACCEL` honoured),
/// through [`accel::start`], sandnet's own KVM trial and TCG fallback. Under KVM the guest
/// first boots without NICs until its console shows [`SIGN_OF_LIFE`] (a guest that got as
/// far as its NIC driver under KVM before hanging would leave the tap's queues detached for
/// the next QEMU, which then aborts on "could not disable queue"); that QEMU is killed and
/// `make(Kvm)` started. Under TCG `make(Tcg)` is started at once. `make` is called once per
/// QEMU (give it duplicated fds).
pub async fn spawn_auto(
    mut make: impl FnMut(Accel) -> VmSpec,
    netns: Option<BorrowedFd<'_>>,
    state: &Path,
) -> (QemuProcess, Accel) {
    let cache = std::env::temp_dir().join("sandnet-vm-test-accel");
    let qemu = make(Accel::Tcg).qemu;
    let choice = tokio::task::spawn_blocking(move || accel::choose(AccelMode::Auto, &cache, &qemu))
        .await
        .unwrap()
        .expect("choose the accelerator");
    eprintln!("accelerator: {} ({})", choice.accel, choice.reason);
    let plain = |e: VmError| StartFailure {
        why: e.to_string(),
        kvm_suspect: false,
        error: e,
    };
    let started = accel::start(
        choice,
        KVM_BOOT_DEADLINE,
        "the test guest printed its marker under KVM",
        async |accel, deadline, _reason| {
            if accel == Accel::Tcg {
                return Qemu::spawn(make(accel), netns, state).await.map_err(plain);
            }
            let t0 = Instant::now();
            let mut probe = make(Accel::Kvm);
            probe.nics.clear();
            let mut q = Qemu::spawn(probe, netns, state)
                .await
                .map_err(|e| StartFailure {
                    why: accel::describe_kvm_failure(&e),
                    kvm_suspect: accel::kvm_may_be_at_fault(&e),
                    error: e,
                })?;
            let console = q.paths().console.clone();
            let left = deadline.saturating_sub(t0.elapsed());
            let alive = wait_for_text(&console, SIGN_OF_LIFE, left).await;
            let tail = accel::last_lines(&q.log_tail(3), 2);
            q.kill().await.map_err(plain)?;
            if alive.is_none() {
                let why = format!("no sign of life within {deadline:?} (qemu.log: {tail})");
                return Err(StartFailure {
                    error: VmError::Timeout {
                        what: SIGN_OF_LIFE.into(),
                        ms: deadline.as_millis(),
                    },
                    kvm_suspect: true,
                    why,
                });
            }
            Qemu::spawn(make(Accel::Kvm), netns, state)
                .await
                .map_err(plain)
        },
    )
    .await;
    match started {
        Ok(s) => {
            eprintln!("accelerator: {} ({})", s.accel, s.reason);
            (s.vm, s.accel)
        }
        Err((accel, f)) => panic!("starting the VM under {accel}: {} ({:?})", f.why, f.error),
    }
}
