//! `--hostile MODE`: a deliberately misbehaving agent, for testing that the host side treats
//! everything from a guest as hostile input. Reachable only through that (hidden) flag.
//!
//! Raw modes speak bytes, not ttrpc: `silent` reads and never answers, `endless` writes junk
//! forever, `oversized` answers each request with a frame claiming 64 MiB, `garbage` answers
//! with a well-framed reply whose payload is not protobuf. Service modes run the real agent
//! but lie in `ListInterfaces`/`ListRoutes` and `InterfaceStats`: `names` puts terminal
//! escapes into interface names, `huge` answers with 500 000 interfaces.
//!
//! A hostile guest, too: `/init __send-frame IFACE HEXFRAME [COUNT]` (the agent is the
//! guest's `/init`, run through `sandnet exec`) writes a raw Ethernet frame COUNT times
//! through an `AF_PACKET` socket, for frames busybox cannot make (router advertisements,
//! forged ARP); see [`send_frame_main`].
//!
//! Compiled only with the crate's `hostile` feature (off by default): the shipped agent has
//! neither the flag nor this code. `scripts/build-agent` builds a second, test-only static
//! agent with it (`sandnet-agent-hostile`).

use crate::serial;
use crate::service::Agent;
use anyhow::Context;
use async_trait::async_trait;
use sandnet_agent_proto::ttrpc::{self, r#async::TtrpcContext};
use sandnet_agent_proto::{agent, agent_ttrpc, health_ttrpc, protobuf, sandnet_ttrpc, types};
use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How the agent misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Read requests, never answer.
    Silent,
    /// Write junk bytes forever.
    Endless,
    /// Answer with a frame header claiming 64 MiB, then send that much.
    Oversized,
    /// Answer with a correct frame whose payload is not protobuf.
    Garbage,
    /// Interface names and route devices with ANSI escapes and control characters.
    Names,
    /// 500 000 interfaces in `ListInterfaces` (2.5 MB on the wire, ~90 MB decoded).
    Huge,
}

impl Mode {
    /// Whether this mode bypasses ttrpc ([`serve_raw`]) instead of serving [`services`].
    pub fn is_raw(self) -> bool {
        matches!(
            self,
            Mode::Silent | Mode::Endless | Mode::Oversized | Mode::Garbage
        )
    }
}

/// Serves a raw mode in the background: on the unix socket `listen` (already free) when
/// given, else on the guest's agent port (waiting up to `port_wait` for it).
pub async fn serve_raw_mode(
    mode: Mode,
    listen: Option<&Path>,
    port_wait: Duration,
) -> anyhow::Result<()> {
    tracing::warn!(mode = ?mode, "HOSTILE test mode: not serving the agent protocol");
    if let Some(path) = listen {
        let l = tokio::net::UnixListener::bind(path)
            .with_context(|| format!("listening on {}", path.display()))?;
        tokio::spawn(async move {
            while let Ok((c, _)) = l.accept().await {
                tokio::spawn(serve_raw(mode, c));
            }
        });
        return Ok(());
    }
    let (_, fd) = serial::open_port(serial::AGENT_PORT_NAME, port_wait).await?;
    let sessions = serial::port_sessions(fd).context("watching the agent port")?;
    tokio::spawn(async move {
        let mut sessions = std::pin::pin!(sessions);
        while let Some(s) = futures::StreamExt::next(&mut sessions).await {
            let _ = serve_raw(mode, s).await;
        }
    });
    Ok(())
}

/// ttrpc frame header: length, stream id (both big endian), type, flags.
const HEADER: usize = 10;
const TYPE_RESPONSE: u8 = 2;

/// Serves one connection in a raw mode until the peer goes away.
pub async fn serve_raw<S: AsyncRead + AsyncWrite + Unpin>(mode: Mode, mut s: S) -> io::Result<()> {
    let junk = vec![0xa5u8; 64 * 1024];
    match mode {
        Mode::Endless => loop {
            s.write_all(&junk).await?;
        },
        Mode::Silent => {
            let mut b = vec![0u8; 64 * 1024];
            while s.read(&mut b).await? > 0 {}
            Ok(())
        }
        _ => loop {
            let mut h = [0u8; HEADER];
            s.read_exact(&mut h).await?;
            let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
            let sid = [h[4], h[5], h[6], h[7]];
            tokio::io::copy(&mut (&mut s).take(u64::from(len)), &mut tokio::io::sink()).await?;
            let (claimed, body): (u32, &[u8]) = if mode == Mode::Oversized {
                (64 << 20, &junk)
            } else {
                (GARBAGE.len() as u32, GARBAGE)
            };
            let mut out = claimed.to_be_bytes().to_vec();
            out.extend_from_slice(&sid);
            out.extend_from_slice(&[TYPE_RESPONSE, 0]);
            s.write_all(&out).await?;
            if mode == Mode::Oversized {
                for _ in 0..(claimed as usize / body.len()) {
                    s.write_all(body).await?;
                }
            } else {
                s.write_all(body).await?;
            }
        },
    }
}

/// Not protobuf: a field tag with wire type 7 (invalid) and then an escape sequence.
const GARBAGE: &[u8] = b"\xff\xff\xff\xff\x0f\x1b[2J\x1b]0;pwned\x07 not protobuf";

/// The real agent with lying list calls.
struct Liar {
    inner: Arc<Agent>,
    mode: Mode,
}

fn evil(name: &str) -> String {
    format!("\x1b[2J{}\x07", name.chars().take(8).collect::<String>())
}

#[async_trait]
impl agent_ttrpc::AgentService for Liar {
    async fn update_interface(
        &self,
        ctx: &TtrpcContext,
        req: agent::UpdateInterfaceRequest,
    ) -> ttrpc::Result<types::Interface> {
        self.inner.update_interface(ctx, req).await
    }

    async fn update_routes(
        &self,
        ctx: &TtrpcContext,
        req: agent::UpdateRoutesRequest,
    ) -> ttrpc::Result<agent::Routes> {
        self.inner.update_routes(ctx, req).await
    }

    async fn add_arp_neighbors(
        &self,
        ctx: &TtrpcContext,
        req: agent::AddARPNeighborsRequest,
    ) -> ttrpc::Result<protobuf::well_known_types::empty::Empty> {
        self.inner.add_arp_neighbors(ctx, req).await
    }

    async fn create_sandbox(
        &self,
        ctx: &TtrpcContext,
        req: agent::CreateSandboxRequest,
    ) -> ttrpc::Result<protobuf::well_known_types::empty::Empty> {
        self.inner.create_sandbox(ctx, req).await
    }

    async fn list_interfaces(
        &self,
        ctx: &TtrpcContext,
        req: agent::ListInterfacesRequest,
    ) -> ttrpc::Result<agent::Interfaces> {
        let mut r = self.inner.list_interfaces(ctx, req).await?;
        match self.mode {
            Mode::Huge => {
                let one = types::Interface {
                    name: "x".into(),
                    ..Default::default()
                };
                r.Interfaces = vec![one; 500_000];
            }
            _ => {
                for i in &mut r.Interfaces {
                    i.name = evil(&i.name);
                    i.device = i.name.clone();
                }
            }
        }
        Ok(r)
    }

    async fn list_routes(
        &self,
        ctx: &TtrpcContext,
        req: agent::ListRoutesRequest,
    ) -> ttrpc::Result<agent::Routes> {
        let mut r = self.inner.list_routes(ctx, req).await?;
        if self.mode == Mode::Names {
            for x in &mut r.Routes {
                x.device = evil(&x.device);
            }
        }
        Ok(r)
    }
}

/// The services for a non-raw mode: the real health and exec services, lying agent and
/// stats services.
pub fn services(mode: Mode, inner: Arc<Agent>) -> HashMap<String, ttrpc::r#async::Service> {
    let mut s = agent_ttrpc::create_agent_service(Arc::new(Liar {
        inner: inner.clone(),
        mode,
    }));
    s.extend(health_ttrpc::create_health(inner.clone()));
    s.extend(sandnet_ttrpc::create_exec(inner.clone()));
    s.extend(sandnet_ttrpc::create_stats(Arc::new(Liar { inner, mode })));
    s
}

#[async_trait]
impl sandnet_ttrpc::Stats for Liar {
    /// `huge`: 500 000 entries; `names`: every name with terminal escapes.
    async fn interface_stats(
        &self,
        ctx: &TtrpcContext,
        req: sandnet_agent_proto::sandnet::InterfaceStatsRequest,
    ) -> ttrpc::Result<sandnet_agent_proto::sandnet::InterfaceStatsResponse> {
        let mut r = sandnet_ttrpc::Stats::interface_stats(&*self.inner, ctx, req).await?;
        match self.mode {
            Mode::Huge => {
                let one = sandnet_agent_proto::sandnet::InterfaceCounters {
                    name: "x".into(),
                    ..Default::default()
                };
                r.interfaces = vec![one; 500_000];
            }
            _ => {
                for i in &mut r.interfaces {
                    i.name = evil(&i.name);
                }
            }
        }
        Ok(r)
    }
}

/// The hidden first argument that makes the agent a raw-frame sender ([`send_frame_main`]).
pub const SEND_FRAME_ARG: &str = "__send-frame";

/// Parses `a1b2…` (whitespace and `:` ignored) into bytes.
fn parse_hex(s: &str) -> anyhow::Result<Vec<u8>> {
    let digits: Vec<u8> = s
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b':')
        .collect();
    if !digits.len().is_multiple_of(2) {
        anyhow::bail!("odd number of hex digits");
    }
    digits
        .chunks(2)
        .map(|p| {
            let t = std::str::from_utf8(p).context("hex digits")?;
            u8::from_str_radix(t, 16).with_context(|| format!("{t:?} is not hex"))
        })
        .collect()
}

/// Sends `frame` `count` times on `iface` through an `AF_PACKET` socket; returns how many
/// were sent.
fn send_frames(iface: &str, frame: &[u8], count: u32) -> anyhow::Result<u32> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    if frame.len() < 14 {
        anyhow::bail!("a frame has at least 14 bytes, got {}", frame.len());
    }
    let index = nix::net::if_::if_nametoindex(iface).with_context(|| format!("no link {iface}"))?;
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error()).context("AF_PACKET socket");
    }
    // SAFETY: fd was just created and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid start.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_ifindex = index as i32;
    sa.sll_halen = 6;
    sa.sll_addr[..6].copy_from_slice(&frame[..6]);
    for i in 0..count {
        // SAFETY: sending from a valid buffer to a correctly sized sockaddr_ll.
        let n = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sa as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error()).with_context(|| format!("frame {i}"));
        }
    }
    Ok(count)
}

/// `__send-frame IFACE HEXFRAME [COUNT]`: sends the frame (COUNT times, default 1), prints
/// `sent N` and exits 0; prints the error and exits 1 otherwise. Never returns.
pub fn send_frame_main() -> ! {
    let args: Vec<String> = std::env::args().skip(2).collect();
    let run = || -> anyhow::Result<u32> {
        let [iface, hex, rest @ ..] = args.as_slice() else {
            anyhow::bail!("usage: {SEND_FRAME_ARG} IFACE HEXFRAME [COUNT]");
        };
        let count = match rest {
            [] => 1,
            [n] => n.parse().with_context(|| format!("count {n:?}"))?,
            _ => anyhow::bail!("usage: {SEND_FRAME_ARG} IFACE HEXFRAME [COUNT]"),
        };
        send_frames(iface, &parse_hex(hex)?, count)
    };
    match run() {
        Ok(n) => {
            println!("sent {n}");
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("{SEND_FRAME_ARG}: {e:#}");
            std::process::exit(1)
        }
    }
}
