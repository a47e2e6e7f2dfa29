//! The guest's serial console, bounded: QEMU connects as a client to a unix socket this side
//! listens on, and a thread drains it into `console.log`, rotating to `console.log.1` when the
//! file reaches its cap. A flooding guest can therefore use at most twice the cap on the host;
//! when the drain falls behind, QEMU's socket buffer fills and the guest's serial port stalls,
//! not the host.
//!
//! The drain runs on its own thread so a flood never takes time from the supervisor's async
//! tasks, whatever runtime they run on.

use crate::error::{Result, VmError};
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Default cap of `console.log` (the rotated `console.log.1` holds at most as much again).
pub const DEFAULT_CONSOLE_CAP: u64 = 1024 * 1024;
/// How often the drain thread looks at its stop flag while idle.
const POLL: Duration = Duration::from_millis(100);
/// Bytes read from the socket at a time.
const CHUNK: usize = 64 * 1024;

/// The path `console.log` is rotated to.
pub fn rotated_path(console: &Path) -> PathBuf {
    let mut s = console.as_os_str().to_os_string();
    s.push(".1");
    PathBuf::from(s)
}

/// A capped file: appends until `cap` bytes, then renames itself to `<path>.1` (replacing the
/// previous one) and starts over.
#[derive(Debug)]
pub struct CappedLog {
    path: PathBuf,
    cap: u64,
    file: File,
    len: u64,
}

impl CappedLog {
    /// Creates (truncates) `path`; removes a stale rotated file. `cap` is at least 1 byte.
    pub fn create(path: &Path, cap: u64) -> Result<CappedLog> {
        let file = create_private(path).map_err(|e| VmError::io("creating", path, e))?;
        let old = rotated_path(path);
        match std::fs::remove_file(&old) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(VmError::io("removing stale", &old, e)),
        }
        Ok(CappedLog {
            path: path.to_path_buf(),
            cap: cap.max(1),
            file,
            len: 0,
        })
    }

    /// Appends `data`, rotating whenever the current file is full.
    pub fn write(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            if self.len >= self.cap {
                self.rotate()?;
            }
            let room = usize::try_from(self.cap - self.len).unwrap_or(usize::MAX);
            let n = room.min(data.len());
            self.file.write_all(&data[..n])?;
            self.len += n as u64;
            data = &data[n..];
        }
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        std::fs::rename(&self.path, rotated_path(&self.path))?;
        self.file = create_private(&self.path)?;
        self.len = 0;
        Ok(())
    }
}

/// The listening console socket and, once started, the thread draining it. Dropping it stops
/// the thread (within its poll interval) and removes the socket.
#[derive(Debug)]
pub struct ConsoleDrain {
    socket: PathBuf,
    stop: Arc<AtomicBool>,
}

impl ConsoleDrain {
    /// Listens on `socket` (replacing a stale one) and starts the thread that accepts QEMU's
    /// connection and writes what it sends to `log`, capped at `cap` bytes per file.
    pub fn start(socket: &Path, log: &Path, cap: u64) -> Result<ConsoleDrain> {
        match std::fs::remove_file(socket) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(VmError::io("removing stale", socket, e)),
        }
        let listener = UnixListener::bind(socket).map_err(|e| VmError::io("binding", socket, e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| VmError::io("configuring", socket, e))?;
        let out = CappedLog::create(log, cap)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("console-drain".into())
            .spawn(move || drain(listener, out, &flag))
            .map_err(|e| VmError::io("starting the drain thread for", socket, e))?;
        Ok(ConsoleDrain {
            socket: socket.to_path_buf(),
            stop,
        })
    }
}

impl Drop for ConsoleDrain {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn drain(listener: UnixListener, mut out: CappedLog, stop: &AtomicBool) {
    let Some(mut stream) = accept(&listener, stop) else {
        return;
    };
    drop(listener);
    let mut buf = vec![0u8; CHUNK];
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if let Err(e) = out.write(&buf[..n]) {
                    tracing::warn!(path = %out.path.display(), error = %e, "console log write failed; dropping console output");
                    return;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::debug!(error = %e, "console socket read failed");
                return;
            }
        }
    }
}

/// Waits for QEMU's connection, looking at `stop` every [`POLL`].
fn accept(listener: &UnixListener, stop: &AtomicBool) -> Option<UnixStream> {
    let step = Duration::from_millis(10);
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((s, _)) => {
                if s.set_nonblocking(false).is_err() || s.set_read_timeout(Some(POLL)).is_err() {
                    return None;
                }
                return Some(s);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(step),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::debug!(error = %e, "console socket accept failed");
                return None;
            }
        }
    }
    None
}

/// Creates (truncating) a file only root can read: it holds guest output.
pub(crate) fn create_private(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory, removed on drop (also when a test fails).
    fn scratch(tag: &str) -> sandnet_testkit::TempDir {
        sandnet_testkit::TempDir::new(&format!("console-{tag}"))
    }

    #[test]
    fn capped_log_rotates_and_keeps_at_most_two_caps() {
        let d = scratch("rotate");
        let p = d.join("console.log");
        let mut log = CappedLog::create(&p, 1000).unwrap();
        for i in 0..50u8 {
            log.write(&[b'a' + (i % 26); 333]).unwrap();
        }
        log.write(b"END").unwrap();
        let cur = std::fs::read(&p).unwrap();
        let old = std::fs::read(rotated_path(&p)).unwrap();
        assert!(
            cur.len() <= 1000 && old.len() == 1000,
            "{} {}",
            cur.len(),
            old.len()
        );
        assert!(cur.ends_with(b"END"));
    }

    #[test]
    fn drain_caps_a_flood_and_stops_on_eof() {
        let d = scratch("drain");
        let (sock, p) = (d.join("console.sock"), d.join("console.log"));
        let drain = ConsoleDrain::start(&sock, &p, 4096).unwrap();
        let mut c = UnixStream::connect(&sock).unwrap();
        for _ in 0..1000 {
            c.write_all(&[b'x'; 1000]).unwrap();
        }
        c.write_all(b"TAIL").unwrap();
        drop(c);
        let t0 = std::time::Instant::now();
        while !std::fs::read(&p).unwrap_or_default().ends_with(b"TAIL") {
            assert!(t0.elapsed() < Duration::from_secs(5), "tail never drained");
            std::thread::sleep(Duration::from_millis(10));
        }
        let total = std::fs::metadata(&p).unwrap().len()
            + std::fs::metadata(rotated_path(&p)).unwrap().len();
        assert!(total <= 8192, "{total}");
        drop(drain);
        assert!(!sock.exists());
    }
}
