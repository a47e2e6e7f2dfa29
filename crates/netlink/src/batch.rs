//! Change requests sent many at a time over a blocking route socket: every request of a
//! chunk goes out in one `sendto` (the kernel handles them one after the other, in order,
//! within that call) and only then are their acknowledgements read. One system call and
//! one wake-up for dozens of requests, instead of a round trip each.
//!
//! For requests answered only by an acknowledgement (creations, changes, deletions), not
//! for dumps or gets. A failed request does not stop the ones after it: the caller gets
//! one result per request and decides (a filter on a qdisc that could not be added fails
//! on its own).

use crate::error::{NetlinkError, Result};
use netlink_packet_core::{NetlinkMessage, NLM_F_ACK, NLM_F_REQUEST};
use netlink_packet_route::RouteNetlinkMessage;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Requests per `sendto`: their acknowledgements must fit the socket's receive buffer
/// (the default 208 KiB holds a few hundred small ones), or the kernel drops some.
const CHUNK: usize = 64;

/// How long to wait for an acknowledgement before giving up on the socket.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// `NLMSG_ERROR`: an acknowledgement (error 0) or a refusal.
const NLMSG_ERROR: u16 = 2;

/// Sequence numbers of batched requests, unique within the process.
static SEQ: AtomicU32 = AtomicU32::new(0x5a00_0000);

/// Requests to send together (see the module documentation).
#[derive(Debug, Default)]
pub struct RequestBatch {
    /// Each request: its sequence number, its bytes and what it does (for errors).
    requests: Vec<(u32, Vec<u8>, String)>,
}

impl RequestBatch {
    /// An empty batch.
    pub fn new() -> RequestBatch {
        RequestBatch::default()
    }

    /// Adds a request (`NLM_F_REQUEST | NLM_F_ACK | flags`); returns its position, which
    /// is its place in [`RequestBatch::send`]'s results.
    pub fn push(&mut self, msg: RouteNetlinkMessage, flags: u16, what: String) -> usize {
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let mut m = NetlinkMessage::from(msg);
        m.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        m.header.sequence_number = seq;
        m.finalize();
        let mut bytes = vec![0u8; m.buffer_len()];
        m.serialize(&mut bytes);
        self.requests.push((seq, bytes, what));
        self.requests.len() - 1
    }

    /// How many requests there are.
    pub fn len(&self) -> usize {
        self.requests.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    /// Sends every request over `sock` (a blocking `NETLINK_ROUTE` socket, see
    /// [`crate::open_route_socket`]) and returns the kernel's answer to each, in order. The
    /// outer error is the socket's own failure: then some requests may have been carried
    /// out and others not.
    pub fn send(self, sock: BorrowedFd<'_>) -> Result<Vec<Result<()>>> {
        set_recv_timeout(sock, ACK_TIMEOUT).map_err(io_err("set receive timeout"))?;
        let mut out = Vec::with_capacity(self.requests.len());
        for chunk in self.requests.chunks(CHUNK) {
            let mut buf = Vec::with_capacity(chunk.iter().map(|r| r.1.len()).sum());
            for (_, bytes, _) in chunk {
                buf.extend_from_slice(bytes);
            }
            send_to_kernel(sock, &buf).map_err(io_err("send requests"))?;
            let seqs: Vec<u32> = chunk.iter().map(|r| r.0).collect();
            let mut answers: Vec<Option<i32>> = vec![None; chunk.len()];
            let mut pending = chunk.len();
            let mut rbuf = vec![0u8; 64 * 1024];
            while pending > 0 {
                let n = recv(sock, &mut rbuf).map_err(io_err("read acknowledgements"))?;
                pending -= record(&seqs, &mut answers, &acks(&rbuf[..n]));
            }
            for ((_, _, what), errno) in chunk.iter().zip(answers) {
                out.push(match errno {
                    Some(0) | None => Ok(()),
                    Some(errno) => Err(NetlinkError::Kernel {
                        what: what.clone(),
                        errno,
                    }),
                });
            }
        }
        Ok(out)
    }
}

fn io_err(what: &'static str) -> impl Fn(io::Error) -> NetlinkError {
    move |source| NetlinkError::Io {
        what: what.to_string(),
        source,
    }
}

/// Files each acknowledgement under the request of its sequence number; returns how many
/// requests got their first answer. The numbers of one batch are not consecutive when
/// other threads of the process build batches at the same time (they share the counter),
/// so a request is found by its number, not by its distance from the first.
fn record(seqs: &[u32], answers: &mut [Option<i32>], acks: &[(u32, i32)]) -> usize {
    let mut n = 0;
    for &(seq, errno) in acks {
        if let Some(i) = seqs.iter().position(|&s| s == seq) {
            if answers[i].is_none() {
                answers[i] = Some(errno);
                n += 1;
            }
        }
    }
    n
}

/// The (sequence number, positive errno or 0) of every `NLMSG_ERROR` in a datagram.
fn acks(mut b: &[u8]) -> Vec<(u32, i32)> {
    let mut out = Vec::new();
    while b.len() >= 16 {
        let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if len < 16 || len > b.len() {
            break;
        }
        let kind = u16::from_ne_bytes([b[4], b[5]]);
        let seq = u32::from_ne_bytes([b[8], b[9], b[10], b[11]]);
        if kind == NLMSG_ERROR && len >= 20 {
            let code = i32::from_ne_bytes([b[16], b[17], b[18], b[19]]);
            out.push((seq, code.saturating_neg()));
        }
        // Messages are aligned to 4 bytes.
        let step = (len + 3) & !3;
        b = &b[step.min(b.len())..];
    }
    out
}

fn send_to_kernel(sock: BorrowedFd<'_>, buf: &[u8]) -> io::Result<()> {
    // SAFETY: an all-zero sockaddr_nl is valid; family set below, pid 0 is the kernel.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    loop {
        // SAFETY: buf and addr are valid for the lengths given.
        let rc = unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn recv(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: buf is valid for its length.
        let rc = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if rc >= 0 {
            return Ok(rc as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn set_recv_timeout(sock: BorrowedFd<'_>, d: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: d.as_secs() as libc::time_t,
        tv_usec: d.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: SO_RCVTIMEO reads a timeval of the given size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(seq: u32, code: i32, extra: usize) -> Vec<u8> {
        let len = 20 + 16 + extra;
        let mut b = Vec::new();
        b.extend_from_slice(&(len as u32).to_ne_bytes());
        b.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        b.extend_from_slice(&0u16.to_ne_bytes());
        b.extend_from_slice(&seq.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&code.to_ne_bytes());
        b.resize(len, 0);
        b.resize((len + 3) & !3, 0);
        b
    }

    #[test]
    fn acknowledgements_find_their_request_when_numbers_interleave() {
        // Another thread took 101 and 103 between this batch's requests.
        let seqs = [100, 102, 104];
        let mut answers = vec![None; 3];
        assert_eq!(record(&seqs, &mut answers, &[(102, 0), (101, 0)]), 1);
        assert_eq!(
            record(
                &seqs,
                &mut answers,
                &[(104, libc::EEXIST), (100, 0), (102, 0)]
            ),
            2
        );
        assert_eq!(answers, vec![Some(0), Some(0), Some(libc::EEXIST)]);
    }

    #[test]
    fn acknowledgements_are_read_in_a_row() {
        let mut d = ack(7, 0, 0);
        d.extend(ack(8, -libc::EEXIST, 3));
        d.extend(ack(9, 0, 0));
        assert_eq!(acks(&d), vec![(7, 0), (8, libc::EEXIST), (9, 0)]);
        // A truncated tail is not read past.
        d.truncate(d.len() - 5);
        assert_eq!(acks(&d), vec![(7, 0), (8, libc::EEXIST)]);
    }
}
