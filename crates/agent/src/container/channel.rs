//! The channel between the agent and a container helper: a `SOCK_SEQPACKET` socket pair,
//! one short text record per message, a pty master riding along as `SCM_RIGHTS`.
//!
//! Helper → agent: `pid <n>` (the process in the agent's pid namespace), `ready` (set up;
//! carries the pty master with a terminal), `error <code> <message>`. Agent → child:
//! `start`. The child's end is close-on-exec, so the agent reads end-of-file once the
//! process has been exec'd (or everyone holding the other end is gone).

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use tokio::io::unix::AsyncFd;

/// Longest record.
const MAX_RECORD: usize = 8192;

/// A record's error class, mapped to a ttrpc code by the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A bad value in the request (INVALID_ARGUMENT).
    Invalid,
    /// Something the request names is missing (the executable; INVALID_ARGUMENT too).
    NotFound,
    /// Anything else (INTERNAL).
    Internal,
}

impl ErrorKind {
    fn word(self) -> &'static str {
        match self {
            ErrorKind::Invalid => "invalid",
            ErrorKind::NotFound => "notfound",
            ErrorKind::Internal => "internal",
        }
    }
}

/// One message.
#[derive(Debug)]
pub enum Record {
    /// The process's pid in the agent's pid namespace.
    Pid(i32),
    /// Setup is done; the pty master when the process has a terminal.
    Ready(Option<OwnedFd>),
    /// Setup or exec failed.
    Error(ErrorKind, String),
    /// Start the process.
    Start,
}

fn encode(r: &Record) -> String {
    match r {
        Record::Pid(p) => format!("pid {p}"),
        Record::Ready(_) => "ready".into(),
        Record::Error(k, m) => {
            let mut m = m.replace('\n', " ");
            if m.len() > MAX_RECORD - 32 {
                let mut cut = MAX_RECORD - 32;
                while !m.is_char_boundary(cut) {
                    cut -= 1;
                }
                m.truncate(cut);
            }
            format!("error {} {m}", k.word())
        }
        Record::Start => "start".into(),
    }
}

fn decode(text: &str, fd: Option<OwnedFd>) -> Record {
    let (word, rest) = text.split_once(' ').unwrap_or((text, ""));
    match word {
        "pid" => match rest.parse() {
            Ok(p) => Record::Pid(p),
            Err(_) => Record::Error(ErrorKind::Internal, format!("bad record {text:?}")),
        },
        "ready" => Record::Ready(fd),
        "start" => Record::Start,
        "error" => {
            let (k, m) = rest.split_once(' ').unwrap_or((rest, ""));
            let k = match k {
                "invalid" => ErrorKind::Invalid,
                "notfound" => ErrorKind::NotFound,
                _ => ErrorKind::Internal,
            };
            Record::Error(k, m.to_string())
        }
        _ => Record::Error(ErrorKind::Internal, format!("bad record {text:?}")),
    }
}

/// A new socket pair, both ends close-on-exec: (the agent's, the helper's).
pub fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(io::Error::from)
}

/// Sends one record (blocking unless the socket is non-blocking).
pub fn send(fd: RawFd, r: &Record) -> io::Result<()> {
    let text = encode(r);
    let iov = [IoSlice::new(text.as_bytes())];
    let fds;
    let cmsgs: Vec<ControlMessage> = match r {
        Record::Ready(Some(f)) => {
            fds = [f.as_raw_fd()];
            vec![ControlMessage::ScmRights(&fds)]
        }
        _ => Vec::new(),
    };
    loop {
        match sendmsg::<()>(fd, &iov, &cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Receives one record; `None` at end of file.
pub fn recv(fd: RawFd) -> io::Result<Option<Record>> {
    let mut buf = vec![0u8; MAX_RECORD];
    let mut cmsg = nix::cmsg_space!([RawFd; 4]);
    let (n, got_fd) = loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        match recvmsg::<()>(fd, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC) {
            Ok(m) => {
                let mut got: Option<OwnedFd> = None;
                if let Ok(cms) = m.cmsgs() {
                    for c in cms {
                        if let ControlMessageOwned::ScmRights(fds) = c {
                            for f in fds {
                                // SAFETY: the kernel just installed these descriptors for us.
                                let owned = unsafe { OwnedFd::from_raw_fd(f) };
                                if got.is_none() {
                                    got = Some(owned);
                                }
                            }
                        }
                    }
                }
                break (m.bytes, got);
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    if n == 0 {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&buf[..n]);
    Ok(Some(decode(&text, got_fd)))
}

/// The agent's end, non-blocking on the runtime.
pub struct AgentEnd {
    fd: AsyncFd<OwnedFd>,
}

impl AgentEnd {
    /// Wraps the agent's end of [`pair`].
    pub fn new(fd: OwnedFd) -> io::Result<AgentEnd> {
        super::stdio::nonblocking(&fd)?;
        Ok(AgentEnd {
            fd: super::stdio::async_fd(fd)?,
        })
    }

    /// The next record; `None` at end of file.
    pub async fn recv(&self) -> io::Result<Option<Record>> {
        loop {
            let mut g = self.fd.readable().await?;
            match g.try_io(|fd| recv(fd.as_raw_fd())) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Sends one record.
    pub async fn send(&self, r: &Record) -> io::Result<()> {
        loop {
            let mut g = self.fd.writable().await?;
            match g.try_io(|fd| send(fd.as_raw_fd(), r)) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_with_a_descriptor() {
        let (a, b) = pair().unwrap();
        send(a.as_raw_fd(), &Record::Pid(42)).unwrap();
        send(
            a.as_raw_fd(),
            &Record::Error(ErrorKind::NotFound, "x\ny".into()),
        )
        .unwrap();
        let f = std::fs::File::open("/dev/null").unwrap();
        send(a.as_raw_fd(), &Record::Ready(Some(f.into()))).unwrap();
        drop(a);
        assert!(matches!(
            recv(b.as_raw_fd()).unwrap(),
            Some(Record::Pid(42))
        ));
        match recv(b.as_raw_fd()).unwrap() {
            Some(Record::Error(ErrorKind::NotFound, m)) => assert_eq!(m, "x y"),
            r => panic!("{r:?}"),
        }
        assert!(matches!(
            recv(b.as_raw_fd()).unwrap(),
            Some(Record::Ready(Some(_)))
        ));
        assert!(recv(b.as_raw_fd()).unwrap().is_none());
    }
}
