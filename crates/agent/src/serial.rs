//! Serving ttrpc on a virtio-serial port.
//!
//! A port is a character device, not a listening socket, and it can be opened only once.
//! The agent opens it once and hands ttrpc a [`Listener`] that yields one connection per
//! host session: it waits until the host side is connected (`poll` stops reporting
//! `POLLHUP`), yields a [`PortSession`] sharing the fd, and when that session has read EOF
//! (the host disconnected) and ttrpc has dropped it, waits for the next host connection.

use futures::StreamExt;
use sandnet_agent_proto::ttrpc::r#async::transport::Listener;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

/// The name the host gives the agent's port (`-device virtserialport,name=...`), as Kata.
pub const AGENT_PORT_NAME: &str = "agent.channel.0";

/// Finds `/dev/<vportNpM>` whose `/sys/class/virtio-ports/<vportNpM>/name` is `name`.
pub fn find_port(sys_root: &Path, name: &str) -> Option<PathBuf> {
    let dir = sys_root.join("class/virtio-ports");
    let mut entries: Vec<_> = std::fs::read_dir(dir).ok()?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    entries.into_iter().find_map(|e| {
        let n = std::fs::read_to_string(e.path().join("name")).ok()?;
        (n.trim() == name).then(|| Path::new("/dev").join(e.file_name()))
    })
}

/// Waits up to `timeout` for the port named `name` to appear, then opens it.
pub async fn open_port(name: &str, timeout: Duration) -> io::Result<(PathBuf, OwnedFd)> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(dev) = find_port(Path::new("/sys"), name) {
            if dev.exists() {
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags_nonblock()
                    .open(&dev)?;
                return Ok((dev, OwnedFd::from(f)));
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no virtio-serial port named {name} within {timeout:?}"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

trait NonBlock {
    fn custom_flags_nonblock(&mut self) -> &mut Self;
}

impl NonBlock for std::fs::OpenOptions {
    fn custom_flags_nonblock(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
    }
}

/// Whether the host end of the port is connected (no `POLLHUP`).
fn host_connected(fd: &OwnedFd) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN | libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n >= 0 && p.revents & libc::POLLHUP == 0
}

/// A ttrpc listener over an open port (or any pollable, non-blocking stream fd).
pub fn port_listener(fd: OwnedFd) -> io::Result<Listener> {
    Ok(Listener::new(
        port_sessions(fd)?.map(Ok::<_, io::Error>).boxed(),
    ))
}

/// The host's sessions on an open port, one after the other: the next is yielded once the
/// previous one was dropped and the host is connected again.
pub fn port_sessions(fd: OwnedFd) -> io::Result<impl futures::Stream<Item = PortSession>> {
    // SAFETY: an OwnedFd's descriptor stays open and the same until the AsyncFd drops it.
    let fd = Arc::new(unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?);
    let stream = futures::stream::unfold(
        (fd, None::<oneshot::Receiver<()>>),
        |(fd, prev)| async move {
            if let Some(rx) = prev {
                let _ = rx.await;
            }
            while !host_connected(fd.get_ref()) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tracing::info!("host connected to the agent port");
            let (tx, rx) = oneshot::channel();
            let s = PortSession {
                fd: fd.clone(),
                eof: AtomicBool::new(false),
                done: Some(tx),
            };
            Some((s, (fd, Some(rx))))
        },
    );
    Ok(stream)
}

/// One host session on the port.
pub struct PortSession {
    fd: Arc<AsyncFd<OwnedFd>>,
    eof: AtomicBool,
    done: Option<oneshot::Sender<()>>,
}

impl Drop for PortSession {
    fn drop(&mut self) {
        if let Some(tx) = self.done.take() {
            let _ = tx.send(());
        }
    }
}

fn sys_read(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for writes of buf.len() bytes.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn sys_write(fd: &OwnedFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for reads of buf.len() bytes.
    let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

impl AsyncRead for PortSession {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.eof.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(()));
        }
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|inner| sys_read(inner.get_ref(), unfilled)) {
                Ok(Ok(0)) => {
                    // The host closed its end: this session is over.
                    self.eof.store(true, Ordering::Relaxed);
                    return Poll::Ready(Ok(()));
                }
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for PortSession {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.eof.load(Ordering::Relaxed) {
            return Poll::Ready(Err(io::Error::from(io::ErrorKind::BrokenPipe)));
        }
        loop {
            let mut guard = ready!(self.fd.poll_write_ready(cx))?;
            match guard.try_io(|inner| sys_write(inner.get_ref(), data)) {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The port stays open for the next session.
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_port_by_name() {
        let root = std::env::temp_dir().join(format!("sandnet-vports-{}", std::process::id()));
        for (dev, name) in [
            ("vport1p1", "org.qemu.guest_agent.0"),
            ("vport2p1", AGENT_PORT_NAME),
        ] {
            let d = root.join("class/virtio-ports").join(dev);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("name"), format!("{name}\n")).unwrap();
        }
        assert_eq!(
            find_port(&root, AGENT_PORT_NAME),
            Some(PathBuf::from("/dev/vport2p1"))
        );
        assert_eq!(find_port(&root, "nope"), None);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
