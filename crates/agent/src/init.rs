//! What the agent does as PID 1 in a guest before serving: mount the pseudo file systems,
//! send its output to the console, load the kernel modules shipped in the initramfs.

use nix::mount::{mount, MsFlags};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// The file listing the modules to load, one path relative to `/` per line, in order.
pub const MODULES_LIST: &str = "/etc/sandnet/modules";

/// Mounts `/proc`, `/sys`, `/dev` (devtmpfs), `/dev/pts`, `/run`, `/tmp`; a target that is
/// already mounted (`EBUSY`) is fine. Failures are logged, not fatal.
pub fn mount_pseudo_fs() {
    let nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let table: [(&str, &str, &str, MsFlags, Option<&str>); 6] = [
        ("proc", "/proc", "proc", nodev, None),
        ("sysfs", "/sys", "sysfs", nodev, None),
        (
            "devtmpfs",
            "/dev",
            "devtmpfs",
            MsFlags::MS_NOSUID,
            Some("mode=0755"),
        ),
        (
            "devpts",
            "/dev/pts",
            "devpts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("gid=5,mode=620,ptmxmode=666"),
        ),
        (
            "tmpfs",
            "/run",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        ),
        (
            "tmpfs",
            "/tmp",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=1777"),
        ),
    ];
    for (src, target, fstype, flags, data) in table {
        if let Err(e) = std::fs::create_dir_all(target) {
            eprintln!("sandnet-agent: mkdir {target}: {e}");
            continue;
        }
        match mount(Some(src), target, Some(fstype), flags, data) {
            Ok(()) | Err(nix::errno::Errno::EBUSY) => {}
            Err(e) => eprintln!("sandnet-agent: mount {fstype} on {target}: {e}"),
        }
    }
}

/// Milliseconds since the kernel started (`CLOCK_BOOTTIME`, the clock of the console's
/// printk timestamps); 0 if it cannot be read.
pub fn uptime_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// Points stdin, stdout and stderr at `/dev/console` (the kernel may have started init
/// without them when the initramfs has no `/dev/console`).
pub fn use_console() {
    let Ok(c) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    else {
        return;
    };
    for fd in 0..3 {
        // SAFETY: dup2 onto the standard descriptors; `c` stays open until the end.
        unsafe { libc::dup2(c.as_raw_fd(), fd) };
    }
}

/// Loads the modules listed in `list` (paths relative to `root`) with `finit_module(2)`,
/// in order; an already loaded module (`EEXIST`) is fine. A module whose dependencies are
/// not loaded yet (`ENOENT`: unknown symbol) is retried after the others, pass after pass
/// while some progress is made, so a list in the wrong order still loads. Returns how many
/// were loaded; failures are logged and the rest are still tried.
pub fn load_modules(root: &Path, list: &Path) -> usize {
    let text = match std::fs::read_to_string(list) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return 0,
        Err(e) => {
            tracing::warn!(list = %list.display(), error = %e, "cannot read module list");
            return 0;
        }
    };
    let mut pending: Vec<std::path::PathBuf> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| root.join(l.trim_start_matches('/')))
        .collect();
    let mut n = 0;
    loop {
        let mut retry = Vec::new();
        let mut progress = false;
        let mut last_err = Vec::new();
        for path in pending {
            match load_module(&path) {
                Ok(true) => {
                    n += 1;
                    progress = true;
                }
                Ok(false) => tracing::debug!(module = %path.display(), "already loaded"),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) && path.exists() => {
                    last_err.push((path.clone(), e));
                    retry.push(path);
                }
                Err(e) => {
                    tracing::warn!(module = %path.display(), error = %e, "module not loaded")
                }
            }
        }
        if retry.is_empty() || !progress {
            for (p, e) in last_err {
                tracing::warn!(module = %p.display(), error = %e,
                    "module not loaded (missing dependency?)");
            }
            return n;
        }
        pending = retry;
    }
}

/// Loads one module file; `Ok(false)` if it was already loaded.
pub fn load_module(path: &Path) -> io::Result<bool> {
    let f = std::fs::File::open(path)?;
    let params = c"";
    // SAFETY: a valid fd and a NUL-terminated parameter string; flags 0.
    let r = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            f.as_raw_fd(),
            params.as_ptr(),
            0 as libc::c_int,
        )
    };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EEXIST) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Powers the VM off (PID 1 must not exit: the kernel would panic).
pub fn power_off() -> ! {
    // SAFETY: sync then reboot(2) with RB_POWER_OFF; both take no pointers.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
