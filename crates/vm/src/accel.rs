//! Choosing the accelerator by what QEMU really does, and remembering the verdict.
//!
//! In `auto` mode KVM is used only where a guest has really run under it: the first sandbox
//! after a reboot (per QEMU binary) gets a [`KvmTrial`] — it boots under KVM with a short
//! deadline ([`KVM_TRIAL_DEADLINE`]) and records whether the guest showed a sign of life.
//! Everyone after it reads the verdict from `<cache dir>/<key>.json`, where the key hashes the
//! host's boot id and the QEMU binary's identity (canonical path, device, inode, size, mtime).
//! Deciders serialise on an `flock` of the cache directory itself, so concurrent sandboxes
//! try KVM once, not all at the same time.
//! [`start`] runs the trial and the fallback to TCG around the caller's own attempt to start
//! a VM (sandnet's boot waits for the agent; the VM tests for a console marker).

use crate::error::{Result, VmError};
use crate::kvm::{self, Accel};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// Environment variable that overrides the configured [`AccelMode`].
pub const ACCEL_ENV: &str = "SANDNET_ACCEL";
/// How long a guest under KVM may take to show a sign of life before KVM is given up.
pub const KVM_TRIAL_DEADLINE: Duration = Duration::from_secs(10);
/// How long [`choose`] waits for another decider holding the cache lock.
pub const LOCK_WAIT: Duration = Duration::from_secs(60);
/// Where the host's boot id is.
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// How the accelerator is chosen (`[hypervisor.qemu] accel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccelMode {
    /// KVM where a guest really runs under it, else TCG.
    #[default]
    Auto,
    /// Always KVM; never falls back.
    Kvm,
    /// Always TCG; KVM is never touched.
    Tcg,
}

impl FromStr for AccelMode {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(AccelMode::Auto),
            "kvm" => Ok(AccelMode::Kvm),
            "tcg" => Ok(AccelMode::Tcg),
            other => Err(format!(
                "{other:?} is not an accelerator mode (auto, kvm or tcg)"
            )),
        }
    }
}

impl fmt::Display for AccelMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AccelMode::Auto => "auto",
            AccelMode::Kvm => "kvm",
            AccelMode::Tcg => "tcg",
        })
    }
}

impl AccelMode {
    /// `$SANDNET_ACCEL` when it is set and not empty, else `self`; with a word on where the
    /// mode came from. A bad value in the variable is an error naming it.
    pub fn with_env(self) -> Result<(AccelMode, String)> {
        match std::env::var(ACCEL_ENV) {
            Ok(v) if !v.is_empty() => v
                .parse()
                .map(|m| (m, format!("{ACCEL_ENV}={v}")))
                .map_err(|e| VmError::Accel(format!("{ACCEL_ENV}: {e}"))),
            _ => Ok((self, format!("accel = \"{self}\""))),
        }
    }
}

/// A remembered decision for one host boot and QEMU binary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// The accelerator to use.
    pub accel: Accel,
    /// Why, in one line.
    pub reason: String,
    /// The host boot it holds for.
    pub boot_id: String,
    /// The QEMU binary it holds for (canonical path).
    pub qemu: PathBuf,
    /// Unix time of the decision.
    pub decided: u64,
}

/// What [`choose`] decided.
#[derive(Debug)]
pub struct Choice {
    /// The accelerator to start QEMU with.
    pub accel: Accel,
    /// Why, in one line.
    pub reason: String,
    /// Present when this is a KVM trial: the caller boots under KVM within
    /// [`KVM_TRIAL_DEADLINE`] and records the outcome (or falls back to TCG).
    pub trial: Option<KvmTrial>,
}

/// The right and duty to decide whether KVM works for this boot and QEMU binary. Holds the
/// cache lock; dropping it without a verdict records nothing and lets the next decider try.
#[derive(Debug)]
pub struct KvmTrial {
    cache: VerdictCache,
    _lock: OwnedFd,
}

impl KvmTrial {
    /// Records that a guest showed a sign of life under KVM.
    pub fn passed(self, why: &str) -> Result<()> {
        self.cache.write(Accel::Kvm, why)
    }

    /// Records that KVM does not work, and why (one line).
    pub fn failed(self, why: &str) -> Result<()> {
        self.cache.write(Accel::Tcg, why)
    }

    /// The verdict file this trial will write.
    pub fn verdict_path(&self) -> &Path {
        &self.cache.path
    }
}

/// Fault-injection knob for tests: `SANDNET_KVM_PROBE=pass` makes auto mode go straight to
/// the KVM trial (no /dev/kvm check, no probe), so the fallback can be tested with a QEMU
/// wrapper that fails under KVM on any machine. Unset in production.
pub const PROBE_ENV: &str = "SANDNET_KVM_PROBE";

/// Decides the accelerator for a VM of QEMU binary `qemu`, with verdicts kept in `cache_dir`
/// (created when missing). Blocks while another process holds the cache lock (at most
/// [`LOCK_WAIT`]); call it from a blocking context.
pub fn choose(mode: AccelMode, cache_dir: &Path, qemu: &Path) -> Result<Choice> {
    let (mode, source) = mode.with_env()?;
    let fixed = |accel, reason: String| {
        Ok(Choice {
            accel,
            reason,
            trial: None,
        })
    };
    match mode {
        AccelMode::Tcg => return fixed(Accel::Tcg, source),
        AccelMode::Kvm => return fixed(Accel::Kvm, source),
        AccelMode::Auto => {}
    }
    let skip_probe = std::env::var(PROBE_ENV).is_ok_and(|v| v == "pass");
    if !skip_probe && !Path::new("/dev/kvm").exists() {
        return fixed(Accel::Tcg, "/dev/kvm does not exist".into());
    }
    let cache = VerdictCache::new(cache_dir, qemu)?;
    let Some(lock) = lock_dir(cache_dir, LOCK_WAIT)? else {
        return fixed(
            Accel::Tcg,
            format!(
                "another sandnet held {} for {LOCK_WAIT:?} while trying KVM",
                cache_dir.display()
            ),
        );
    };
    if let Some(v) = cache.read() {
        return fixed(v.accel, format!("{} (remembered for this boot)", v.reason));
    }
    let probed = if skip_probe {
        Ok(format!("probe skipped: {PROBE_ENV}=pass"))
    } else {
        kvm::probe(Duration::from_secs(2))
    };
    match probed {
        Err(why) => {
            cache.write(Accel::Tcg, &why)?;
            fixed(Accel::Tcg, why)
        }
        Ok(why) => Ok(Choice {
            accel: Accel::Kvm,
            reason: format!("trying KVM ({why})"),
            trial: Some(KvmTrial { cache, _lock: lock }),
        }),
    }
}

/// A failed start of a VM under one accelerator (see [`start`]).
#[derive(Debug)]
pub struct StartFailure<E> {
    /// The error to report.
    pub error: E,
    /// Whether KVM may be at fault (QEMU died, hung or the guest showed no sign of life), so
    /// TCG may do better.
    pub kvm_suspect: bool,
    /// One line saying what went wrong.
    pub why: String,
}

/// A VM that showed its sign of life (see [`start`]).
#[derive(Debug)]
pub struct Started<T> {
    /// What the successful attempt returned.
    pub vm: T,
    /// The accelerator it runs under.
    pub accel: Accel,
    /// Why that accelerator, in one line.
    pub reason: String,
}

/// Starts a VM under what [`choose`] decided, the KVM trial included — the one
/// implementation of the trial. `attempt(accel, deadline, reason)` starts one VM under
/// `accel` and waits at most `deadline` for its sign of life (`reason` says why that
/// accelerator, for the caller to record); on failure it leaves no QEMU running. Without a
/// trial, one attempt under the chosen accelerator with `deadline`. With one, an attempt
/// under KVM with [`KVM_TRIAL_DEADLINE`]: success records that KVM works (`sign` names the
/// sign of life seen); a failure KVM may be at fault for records that it does not, logs
/// one line, and is followed by one attempt under TCG with `deadline`. An error comes with
/// the accelerator of the attempt that failed.
pub async fn start<T, E>(
    choice: Choice,
    deadline: Duration,
    sign: &str,
    mut attempt: impl AsyncFnMut(Accel, Duration, &str) -> std::result::Result<T, StartFailure<E>>,
) -> std::result::Result<Started<T>, (Accel, StartFailure<E>)> {
    let Some(trial) = choice.trial else {
        return match attempt(choice.accel, deadline, &choice.reason).await {
            Ok(vm) => Ok(Started {
                vm,
                accel: choice.accel,
                reason: choice.reason,
            }),
            Err(f) => Err((choice.accel, f)),
        };
    };
    let f = match attempt(Accel::Kvm, KVM_TRIAL_DEADLINE, &choice.reason).await {
        Ok(vm) => {
            if let Err(e) = trial.passed(sign) {
                tracing::error!("{e}");
            }
            return Ok(Started {
                vm,
                accel: Accel::Kvm,
                reason: sign.to_string(),
            });
        }
        Err(f) if !f.kvm_suspect => return Err((Accel::Kvm, f)),
        Err(f) => f,
    };
    let why = format!("KVM failed ({})", f.why);
    if let Err(e) = trial.failed(&why) {
        tracing::error!("{e}");
    }
    let reason = format!("{why}; using TCG");
    tracing::warn!("accelerator: {reason}");
    match attempt(Accel::Tcg, deadline, &reason).await {
        Ok(vm) => Ok(Started {
            vm,
            accel: Accel::Tcg,
            reason,
        }),
        Err(f) => Err((Accel::Tcg, f)),
    }
}

/// Whether a failure to start a VM under KVM may be KVM's fault (QEMU died, hung or went
/// silent), as opposed to a bad spec that TCG would not fix either.
pub fn kvm_may_be_at_fault(e: &VmError) -> bool {
    matches!(
        e,
        VmError::QemuExited { .. } | VmError::Timeout { .. } | VmError::QmpProtocol(_)
    )
}

/// One line saying why a start under KVM failed, with QEMU's last log line(s).
pub fn describe_kvm_failure(e: &VmError) -> String {
    match e {
        VmError::QemuExited { status, tail, .. } => {
            let what = if status.contains("SIGABRT") {
                "QEMU aborted".to_string()
            } else {
                format!("QEMU exited ({status})")
            };
            match last_lines(tail, 2) {
                l if l.is_empty() => what,
                l => format!("{what}: {l}"),
            }
        }
        VmError::Timeout { what, ms } => {
            format!("QEMU showed no sign of life within {ms} ms (waiting for {what})")
        }
        other => other.to_string(),
    }
}

/// The last `n` non-empty lines of `text` joined with ` | `, at most 400 characters.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let s = lines[lines.len().saturating_sub(n)..].join(" | ");
    s.chars().take(400).collect()
}

/// The verdict file of one (boot, QEMU binary).
#[derive(Debug)]
struct VerdictCache {
    dir: PathBuf,
    path: PathBuf,
    boot_id: String,
    qemu: PathBuf,
}

impl VerdictCache {
    fn new(dir: &Path, qemu: &Path) -> Result<VerdictCache> {
        let boot_id = std::fs::read_to_string(BOOT_ID)
            .map_err(|e| VmError::io("reading", BOOT_ID, e))?
            .trim()
            .to_string();
        let canon = std::fs::canonicalize(qemu).map_err(|e| VmError::io("resolving", qemu, e))?;
        let md = std::fs::metadata(&canon).map_err(|e| VmError::io("reading", &canon, e))?;
        let key = cache_key(
            &boot_id,
            &canon,
            (md.dev(), md.ino(), md.size(), md.mtime(), md.mtime_nsec()),
        );
        std::fs::create_dir_all(dir).map_err(|e| VmError::io("creating", dir, e))?;
        Ok(VerdictCache {
            dir: dir.to_path_buf(),
            path: dir.join(format!("{key}.json")),
            boot_id,
            qemu: canon,
        })
    }

    /// The verdict, if one was written for this boot and binary (a damaged file counts as
    /// none).
    fn read(&self) -> Option<Verdict> {
        let b = std::fs::read(&self.path).ok()?;
        let v: Verdict = serde_json::from_slice(&b).ok()?;
        (v.boot_id == self.boot_id && v.qemu == self.qemu).then_some(v)
    }

    /// Writes the verdict atomically (unique temporary name, fsync, rename); temporary files
    /// of writers that were killed half-way are removed first (we hold the lock).
    fn write(&self, accel: Accel, reason: &str) -> Result<()> {
        remove_stale_tmp(&self.dir);
        let v = Verdict {
            accel,
            reason: reason.to_string(),
            boot_id: self.boot_id.clone(),
            qemu: self.qemu.clone(),
            decided: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default(),
        };
        let body = serde_json::to_vec_pretty(&v)
            .map_err(|e| VmError::io("encoding", &self.path, std::io::Error::other(e)))?;
        let tmp = self.dir.join(format!(
            ".{}.{}.{}.tmp",
            self.path
                .file_stem()
                .map(|s| s.to_string_lossy())
                .unwrap_or_default(),
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or_default()
        ));
        let r = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        })();
        if let Err(e) = r {
            let _ = std::fs::remove_file(&tmp);
            return Err(VmError::io("writing", &self.path, e));
        }
        tracing::info!(accel = accel.as_str(), reason, path = %self.path.display(), "accelerator verdict recorded");
        Ok(())
    }
}

/// The cache key: a hash of the boot id and the binary's canonical path and identity
/// `(dev, ino, size, mtime, mtime_nsec)`.
pub fn cache_key(boot_id: &str, qemu: &Path, id: (u64, u64, u64, i64, i64)) -> String {
    let mut h = Sha256::new();
    h.update(boot_id.as_bytes());
    h.update([0]);
    h.update(qemu.as_os_str().as_encoded_bytes());
    h.update([0]);
    h.update(format!("{}:{}:{}:{}.{}", id.0, id.1, id.2, id.3, id.4).as_bytes());
    h.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn remove_stale_tmp(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().ends_with(".tmp") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Takes an exclusive `flock` on the directory itself; `None` if it stays held for `wait`.
fn lock_dir(dir: &Path, wait: Duration) -> Result<Option<OwnedFd>> {
    let fd: OwnedFd = std::fs::File::open(dir)
        .map_err(|e| VmError::io("opening", dir, e))?
        .into();
    let until = Instant::now() + wait;
    loop {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(Some(fd));
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(VmError::io("locking", dir, e));
        }
        if Instant::now() >= until {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
#[path = "accel_tests.rs"]
mod tests;
