//! Many pods through one containerd at once: RunPodSandbox and Stop+Remove from one thread
//! per pod, the host processes of a pod and their memory, and how fast CRI sees a VM die.

use super::Containerd;
use std::time::{Duration, Instant};

/// RunPodSandbox of every name at once (one thread each, handler `sandnet`); each result
/// with how long its call took.
pub fn run_pods(
    cd: &Containerd,
    names: &[String],
) -> Vec<(Result<String, tonic::Status>, Duration)> {
    std::thread::scope(|s| {
        let handles: Vec<_> = names
            .iter()
            .map(|n| {
                s.spawn(move || {
                    let t = Instant::now();
                    (cd.run_pod(n, "sandnet"), t.elapsed())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("RunPodSandbox thread"))
            .collect()
    })
}

/// StopPodSandbox then RemovePodSandbox of every pod at once (one thread each); the first
/// error of each.
pub fn stop_remove_pods(cd: &Containerd, ids: &[String]) -> Vec<Result<(), tonic::Status>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = ids
            .iter()
            .map(|id| s.spawn(move || cd.stop_pod(id).and_then(|()| cd.remove_pod(id))))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("Stop/RemovePodSandbox thread"))
            .collect()
    })
}

/// The parent pid of `pid` (`None`: gone).
fn ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].split(' ').nth(1)?.parse().ok()
}

/// `root` and every process below it.
pub fn with_descendants(root: u32) -> Vec<u32> {
    let all: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| Some((p, ppid(p)?)))
        .collect();
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(all.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    out
}

/// The host processes of sandnet pod `id`: its shim, its supervisor and everything below
/// the supervisor (QEMU, virtiofsd).
pub fn pod_processes(cd: &Containerd, id: &str) -> Vec<u32> {
    let st = std::fs::read_to_string(cd.state().join(id).join("sandbox.json")).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&st).unwrap_or_default();
    let mut pids: Vec<u32> = cd.shim_pid(id).into_iter().collect();
    if let Some(sup) = v["supervisor_pid"].as_u64() {
        pids.extend(with_descendants(sup as u32));
    }
    pids
}

/// RSS and PSS of `pid` in KiB (from `/proc/PID/smaps_rollup`; zeros when gone).
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|r| r.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("Rss:"), field("Pss:"))
}

/// How long after its QEMU was killed a pod's end was seen.
#[derive(Debug, Clone, Copy)]
pub struct DeathSeen {
    /// Until the shim's TaskExit for the pod reached containerd's event stream.
    pub task_exit: Duration,
    /// Until PodSandboxStatus said NOTREADY (CRI deletes the task first).
    pub not_ready: Duration,
}

/// Kills pod `id`'s QEMU (SIGKILL); how long until `ctr events` shows the pod's
/// `/tasks/exit`, and until the pod is NOTREADY in CRI (`None`: not within `limit`).
pub fn qemu_death_seen_after(cd: &Containerd, id: &str, limit: Duration) -> Option<DeathSeen> {
    use std::io::BufRead;
    let qemu = cd.qemu_pid(id)?;
    let mut events = std::process::Command::new("ctr")
        .arg("--address")
        .arg(cd.sock())
        .arg("events")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    let out = events.stdout.take()?;
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    // `ctr events` subscribes before it prints anything: give it time to.
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    // SAFETY: plain syscall.
    unsafe {
        libc::kill(qemu as i32, libc::SIGKILL);
    }
    let mut task_exit = None;
    let mut not_ready = None;
    while t.elapsed() < limit && (task_exit.is_none() || not_ready.is_none()) {
        while let Ok((at, line)) = rx.try_recv() {
            if task_exit.is_none() && line.contains("/tasks/exit") && line.contains(id) {
                task_exit = Some(at.duration_since(t));
            }
        }
        if not_ready.is_none() && !cd.ready(id) {
            not_ready = Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = events.kill();
    let _ = events.wait();
    let _ = reader.join();
    Some(DeathSeen {
        task_exit: task_exit?,
        not_ready: not_ready?,
    })
}
