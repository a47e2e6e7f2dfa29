//! A process's stdio between containerd and the guest: containerd's stdin FIFO is copied
//! to the agent (`WriteStdin`, then `CloseStdin` at its end), the agent's output
//! (`ReadStdout`/`ReadStderr`, long polls that return nothing at the end) to containerd's
//! stdout/stderr FIFOs. Output FIFOs are opened read-write, like runc's shim holds both ends:
//! the open never blocks, and output survives a containerd restart. Closing them (once the
//! copy ends) is what tells containerd the output is complete.

use crate::agent::Agent;
use std::os::unix::fs::FileTypeExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Bytes asked of the agent, or read from stdin, at a time.
const CHUNK: u32 = 32 * 1024;
/// How often a broken read is retried before the stream counts as ended.
const READ_RETRIES: u32 = 3;

/// What containerd passed for a process's stdio.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stdio {
    /// stdin FIFO (empty: none).
    pub stdin: String,
    /// stdout FIFO or file (empty: discarded).
    pub stdout: String,
    /// stderr FIFO or file (empty: discarded; unused with a terminal).
    pub stderr: String,
    /// Whether the process has a terminal (stdout carries both streams).
    pub terminal: bool,
}

/// A stdio path that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// It could not be opened.
    #[error("open {what} {path}: {source}")]
    Open {
        /// stdin, stdout or stderr.
        what: &'static str,
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Its scheme is not one sandnet copies to (`binary://` loggers).
    #[error("{what} {uri}: only FIFO and file paths (or file://) are supported")]
    Unsupported {
        /// stdin, stdout or stderr.
        what: &'static str,
        /// The URI.
        uri: String,
    },
}

enum Sink {
    Fifo(pipe::Sender),
    File(tokio::fs::File),
    Discard,
}

impl Sink {
    fn open(what: &'static str, uri: &str) -> Result<Sink, IoError> {
        if uri.is_empty() {
            return Ok(Sink::Discard);
        }
        let path = match uri.split_once("://") {
            None => uri,
            Some(("file", p)) => p,
            Some(_) => {
                return Err(IoError::Unsupported {
                    what,
                    uri: uri.to_string(),
                })
            }
        };
        let err = |source| IoError::Open {
            what,
            path: path.to_string(),
            source,
        };
        let fifo = std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo());
        if fifo {
            let tx = pipe::OpenOptions::new()
                .read_write(true)
                .open_sender(path)
                .map_err(err)?;
            return Ok(Sink::Fifo(tx));
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(err)?;
        Ok(Sink::File(tokio::fs::File::from_std(f)))
    }

    async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Fifo(p) => p.write_all(data).await,
            Sink::File(f) => f.write_all(data).await,
            Sink::Discard => Ok(()),
        }
    }
}

/// A process's stdio, opened (at Create or Exec, so a bad path fails there).
pub struct Opened {
    stdin: Option<pipe::Receiver>,
    stdout: Sink,
    stderr: Option<Sink>,
}

impl Opened {
    /// Opens `stdio`'s paths (must run inside the tokio runtime).
    pub fn open(stdio: &Stdio) -> Result<Opened, IoError> {
        let stdin = match stdio.stdin.as_str() {
            "" => None,
            p => Some(
                pipe::OpenOptions::new()
                    .open_receiver(p)
                    .map_err(|source| IoError::Open {
                        what: "stdin",
                        path: p.to_string(),
                        source,
                    })?,
            ),
        };
        Ok(Opened {
            stdin,
            stdout: Sink::open("stdout", &stdio.stdout)?,
            stderr: if stdio.terminal {
                None
            } else {
                Some(Sink::open("stderr", &stdio.stderr)?)
            },
        })
    }

    /// Starts copying for process `exec` (`""`: the init) of container `id`.
    pub fn start(self, agent: Arc<Agent>, id: &str, exec: &str) -> Copies {
        let (id, exec) = (id.to_string(), exec.to_string());
        let mut outputs = vec![tokio::spawn(copy_output(
            agent.clone(),
            false,
            id.clone(),
            exec.clone(),
            self.stdout,
        ))];
        if let Some(err) = self.stderr {
            outputs.push(tokio::spawn(copy_output(
                agent.clone(),
                true,
                id.clone(),
                exec.clone(),
                err,
            )));
        }
        let close = Arc::new(Notify::new());
        let stdin = tokio::spawn(copy_stdin(agent, id, exec, self.stdin, close.clone()));
        Copies {
            close,
            stdin: Some(stdin),
            outputs,
        }
    }
}

/// The copy tasks of a started process.
#[derive(Debug)]
pub struct Copies {
    close: Arc<Notify>,
    stdin: Option<JoinHandle<()>>,
    outputs: Vec<JoinHandle<()>>,
}

impl Copies {
    /// containerd's CloseIO: what stdin holds goes to the process, then its stdin closes.
    pub fn close_stdin(&self) {
        self.close.notify_one();
    }

    /// Waits until the output is completely copied (the agent's streams ended), at most
    /// `limit`: a daemonized child may hold them open. Then the output FIFOs are closed;
    /// whether everything got through.
    pub async fn finish_output(&mut self, limit: Duration) -> bool {
        let all = futures_join(std::mem::take(&mut self.outputs));
        let mut all = Box::pin(all);
        match tokio::time::timeout(limit, &mut all).await {
            Ok(()) => true,
            Err(_) => {
                // Dropping the joins leaves the tasks running: abort them for real.
                drop(all);
                false
            }
        }
    }

    /// Stops every copy and closes the FIFOs.
    pub fn abort(&mut self) {
        for h in self.outputs.drain(..).chain(self.stdin.take()) {
            h.abort();
        }
    }
}

impl Drop for Copies {
    fn drop(&mut self) {
        self.abort();
    }
}

/// Waits for every handle; a timeout drop aborts the ones still running.
async fn futures_join(handles: Vec<JoinHandle<()>>) {
    struct AbortOnDrop(Vec<JoinHandle<()>>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            for h in &self.0 {
                h.abort();
            }
        }
    }
    let mut g = AbortOnDrop(handles);
    for h in g.0.iter_mut() {
        let _ = h.await;
    }
}

async fn copy_output(agent: Arc<Agent>, stderr: bool, id: String, exec: String, mut sink: Sink) {
    let what = if stderr { "stderr" } else { "stdout" };
    let mut retries = 0;
    loop {
        match agent.read(stderr, &id, &exec, CHUNK).await {
            Ok(d) if d.is_empty() => break,
            Ok(d) => {
                retries = 0;
                if let Err(e) = sink.write_all(&d).await {
                    // Keep draining the guest so the process does not block on a full pipe.
                    log::warn!("{id}/{exec} {what}: {e}; the rest is dropped");
                    sink = Sink::Discard;
                }
            }
            Err(e) if e.is_transient() && retries < READ_RETRIES => {
                retries += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                log::debug!("{id}/{exec} {what}: {e}");
                break;
            }
        }
    }
    // tokio's File writes in the background: done only once flushed.
    if let Sink::File(f) = &mut sink {
        let _ = f.flush().await;
    }
}

async fn copy_stdin(
    agent: Arc<Agent>,
    id: String,
    exec: String,
    rx: Option<pipe::Receiver>,
    close: Arc<Notify>,
) {
    if let Some(mut rx) = rx {
        let mut buf = vec![0u8; CHUNK as usize];
        loop {
            tokio::select! {
                r = rx.read(&mut buf) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if !write_stdin(&agent, &id, &exec, &buf[..n]).await {
                            break;
                        }
                    }
                },
                _ = close.notified() => {
                    // What containerd wrote before CloseIO still goes in.
                    while let Ok(n) = rx.try_read(&mut buf) {
                        if n == 0 || !write_stdin(&agent, &id, &exec, &buf[..n]).await {
                            break;
                        }
                    }
                    break;
                }
            }
        }
    }
    if let Err(e) = agent.close_stdin(&id, &exec).await {
        log::debug!("{id}/{exec} close stdin: {e}");
    }
}

async fn write_stdin(agent: &Agent, id: &str, exec: &str, mut data: &[u8]) -> bool {
    while !data.is_empty() {
        match agent.write_stdin(id, exec, data).await {
            Ok(n) if n > 0 => data = &data[n.min(data.len())..],
            Ok(_) => return false,
            Err(e) => {
                log::debug!("{id}/{exec} stdin: {e}");
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_schemes() {
        assert!(matches!(
            Sink::open("stdout", "binary:///usr/bin/logger?x=1"),
            Err(IoError::Unsupported { .. })
        ));
        assert!(matches!(Sink::open("stdout", ""), Ok(Sink::Discard)));
    }

    #[tokio::test]
    async fn fifo_opened_read_write_without_a_reader() {
        let d = sandnet_testkit::TempDir::new("io-fifo");
        let p = d.join("out");
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let mut s = Sink::open("stdout", &p.display().to_string()).unwrap();
        assert!(matches!(s, Sink::Fifo(_)));
        s.write_all(b"hello").await.unwrap();
        let f = d.join("file.log");
        let mut s = Sink::open("stdout", &format!("file://{}", f.display())).unwrap();
        s.write_all(b"x").await.unwrap();
        if let Sink::File(f) = &mut s {
            f.flush().await.unwrap();
        }
        drop(s);
        assert_eq!(std::fs::read(&f).unwrap(), b"x");
    }
}
