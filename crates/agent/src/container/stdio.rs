//! The agent's side of a container process's stdio: pipes it holds the other ends of, or
//! the master of the pty the process runs on. Reads return what is there (waiting for
//! something), an empty read is end of file; nothing is buffered in the agent, so output
//! a process wrote before it exited stays in the pipe or pty until it is read.

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use tokio::io::unix::AsyncFd;
use tokio::sync::Mutex;

/// Largest read returned at once.
pub const MAX_READ: usize = 1 << 20;
/// Read size when the request asks for 0 bytes.
pub const DEFAULT_READ: usize = 32 << 10;

/// Sets `O_NONBLOCK` on `fd`.
pub(super) fn nonblocking(fd: &OwnedFd) -> io::Result<()> {
    let fl = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(fl | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Three pipes: (the process's stdin, stdout, stderr ends; the agent's ends in the same
/// order). All are close-on-exec; the process's ends become its fds 0-2 at spawn.
pub fn pipes() -> io::Result<([OwnedFd; 3], [OwnedFd; 3])> {
    let (in_r, in_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let (out_r, out_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let (err_r, err_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    Ok(([in_r, out_w, err_w], [in_w, out_r, err_r]))
}

type Shared = Arc<AsyncFd<OwnedFd>>;

/// Registers an owned descriptor with the runtime.
pub fn async_fd(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns the descriptor, so it stays open and the same for the
    // AsyncFd's whole life.
    unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)
}

/// One output stream (stdout or stderr).
struct Output {
    fd: Mutex<Option<Shared>>,
    tty: bool,
}

impl Output {
    fn new(fd: Option<Shared>, tty: bool) -> Output {
        Output {
            fd: Mutex::new(fd),
            tty,
        }
    }

    async fn read(&self, len: usize) -> io::Result<Vec<u8>> {
        let mut st = self.fd.lock().await;
        let Some(fd) = st.clone() else {
            return Ok(Vec::new());
        };
        let mut buf = vec![0u8; len];
        loop {
            let mut g = fd.readable().await?;
            match g.try_io(|f| nix::unistd::read(f.get_ref(), &mut buf).map_err(io::Error::from)) {
                Ok(Ok(0)) => {
                    *st = None;
                    return Ok(Vec::new());
                }
                Ok(Ok(n)) => {
                    buf.truncate(n);
                    return Ok(buf);
                }
                // A pty master reads EIO once no one has the slave open any more.
                Ok(Err(e)) if self.tty && e.raw_os_error() == Some(libc::EIO) => {
                    *st = None;
                    return Ok(Vec::new());
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

/// A process's stdio as the agent holds it.
pub struct Stdio {
    stdin: Mutex<Option<Shared>>,
    stdout: Output,
    stderr: Output,
    tty: Option<Shared>,
}

/// Which stream a read is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// stdout (the pty with a terminal).
    Stdout,
    /// stderr (end of file at once with a terminal).
    Stderr,
}

impl Stdio {
    /// The agent's ends of [`pipes`].
    pub fn from_pipes([stdin, stdout, stderr]: [OwnedFd; 3]) -> io::Result<Stdio> {
        for f in [&stdin, &stdout, &stderr] {
            nonblocking(f)?;
        }
        Ok(Stdio {
            stdin: Mutex::new(Some(Arc::new(async_fd(stdin)?))),
            stdout: Output::new(Some(Arc::new(async_fd(stdout)?)), false),
            stderr: Output::new(Some(Arc::new(async_fd(stderr)?)), false),
            tty: None,
        })
    }

    /// A pty master: stdin and stdout; stderr is empty.
    pub fn from_tty(master: OwnedFd) -> io::Result<Stdio> {
        nonblocking(&master)?;
        let m = Arc::new(async_fd(master)?);
        Ok(Stdio {
            stdin: Mutex::new(Some(m.clone())),
            stdout: Output::new(Some(m.clone()), true),
            stderr: Output::new(None, true),
            tty: Some(m),
        })
    }

    /// Waits for output and returns up to `len` bytes (0: [`DEFAULT_READ`]; capped at
    /// [`MAX_READ`]); empty at end of file.
    pub async fn read(&self, which: Stream, len: u32) -> io::Result<Vec<u8>> {
        let len = match len as usize {
            0 => DEFAULT_READ,
            n => n.min(MAX_READ),
        };
        match which {
            Stream::Stdout => self.stdout.read(len).await,
            Stream::Stderr => self.stderr.read(len).await,
        }
    }

    /// Writes all of `data` to stdin; `None` when stdin was closed.
    pub async fn write(&self, data: &[u8]) -> Option<io::Result<usize>> {
        let st = self.stdin.lock().await;
        let fd = st.as_ref()?.clone();
        let mut done = 0;
        while done < data.len() {
            let mut g = match fd.writable().await {
                Ok(g) => g,
                Err(e) => return Some(Err(e)),
            };
            match g
                .try_io(|f| nix::unistd::write(f.get_ref(), &data[done..]).map_err(io::Error::from))
            {
                Ok(Ok(n)) => done += n,
                Ok(Err(e)) => return Some(Err(e)),
                Err(_would_block) => continue,
            }
        }
        Some(Ok(done))
    }

    /// Closes stdin: the pipe's write end, or with a terminal an end-of-file character
    /// (`^D`) is written (the pty stays open for output). Idempotent.
    pub async fn close_stdin(&self) {
        let open = self.stdin.lock().await.is_some();
        if open && self.tty.is_some() {
            let _ = self.write(&[0x04]).await;
        }
        self.stdin.lock().await.take();
    }

    /// Sets the pty's window size; `false` without a terminal.
    pub fn resize(&self, rows: u16, cols: u16) -> io::Result<bool> {
        let Some(m) = &self.tty else {
            return Ok(false);
        };
        set_winsize(m.get_ref().as_raw_fd(), rows, cols)?;
        Ok(true)
    }
}

/// `TIOCSWINSZ` on a terminal descriptor.
pub fn set_winsize(fd: i32, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize we own.
    if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
