//! The supervisor's control socket: inspect and exec through the guest agent, halt the VM,
//! stop (tear down and exit); QEMU exiting on its own is recorded.

use super::Supervisor;
use crate::control::{ExecResult, GuestNetwork, Request, Response};
use crate::sandbox::Status;
use sandnet_agent_proto::AgentClient;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

impl Supervisor {
    /// Serves the control socket until told to stop; QEMU exiting on its own is recorded.
    pub(super) async fn serve(&mut self, listener: tokio::net::UnixListener) -> i32 {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let mut qemu_done = false;
        let mut monitor = self.start_monitor().await;
        // Clients are read concurrently, each with its own deadline: a silent one holds
        // nobody. Read-only requests are answered beside the loop (a plug in flight does
        // not hold them); the rest come to the loop in order.
        let agent = std::sync::Arc::new(std::sync::Mutex::new(self.agent.clone()));
        let (tx, mut requests) = tokio::sync::mpsc::channel(32);
        let acceptor = tokio::spawn(accept_loop(listener, tx, agent.clone()));
        let _acceptor = AbortOnDrop(acceptor);
        loop {
            let batch = async {
                match monitor.as_mut() {
                    Some(m) => m.next_batch().await,
                    None => std::future::pending().await,
                }
            };
            let qemu_exit = async {
                match (self.qemu.as_mut(), qemu_done) {
                    (Some(q), false) => q.wait().await.ok(),
                    _ => std::future::pending().await,
                }
            };
            let sigterm = async {
                match term.as_mut() {
                    Some(t) => t.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                b = batch => {
                    if !self.on_batch(b).await {
                        monitor = None;
                    }
                }
                st = qemu_exit => {
                    qemu_done = true;
                    tracing::warn!("QEMU exited on its own: {st:?}");
                    self.state.status = Status::QemuExited;
                    self.save();
                }
                _ = sigterm => {
                    return match self.teardown(false).await {
                        Ok(_) => 0,
                        Err(e) => {
                            tracing::error!("{e}");
                            1
                        }
                    };
                }
                next = requests.recv() => {
                    let Some((req, mut wr)) = next else { continue };
                    match req {
                        Request::Stop { force } => {
                            let (resp, code) = match self.teardown(force).await {
                                Ok(rep) => (Response::Stopped { actions: rep.actions, timings: rep.timings, error: None }, 0),
                                Err(e) => (Response::Stopped { actions: vec![], timings: BTreeMap::new(), error: Some(e.to_string()) }, 1),
                            };
                            let _ = write_response(&mut wr, &resp).await;
                            let _ = std::fs::remove_file(&self.paths.ctl);
                            return code;
                        }
                        Request::Halt { force } => {
                            if let Some(q) = self.qemu.as_mut() {
                                let resp = match super::stop_qemu(q, force).await {
                                    Ok(()) => Response::Halted,
                                    Err(e) => Response::Error { message: format!("stop QEMU: {e}") },
                                };
                                if !qemu_done {
                                    qemu_done = true;
                                    self.state.status = Status::QemuExited;
                                    self.save();
                                }
                                self.agent = None;
                                *agent.lock().unwrap_or_else(|p| p.into_inner()) = None;
                                let _ = write_response(&mut wr, &resp).await;
                            } else {
                                let _ = write_response(&mut wr, &Response::Halted).await;
                            }
                        }
                        Request::AddIface { link, want } => {
                            let resp = match self.plug(&link, want.as_ref(), None).await {
                                Ok(interface) => Response::Interface { interface },
                                Err(e) => Response::Error { message: e.to_string() },
                            };
                            let _ = write_response(&mut wr, &resp).await;
                        }
                        Request::DelIface { link } => {
                            let resp = match self.unplug(&link).await {
                                Ok(()) => Response::Removed { link },
                                Err(e) => Response::Error { message: e.to_string() },
                            };
                            let _ = write_response(&mut wr, &resp).await;
                        }
                        Request::UpdateRoutes { routes } => {
                            let resp = match self.set_routes(routes).await {
                                Ok(routes) => Response::Routes { routes },
                                Err(e) => Response::Error { message: e.to_string() },
                            };
                            let _ = write_response(&mut wr, &resp).await;
                        }
                        req => {
                            let client = self.agent.clone();
                            tokio::spawn(async move {
                                let resp = answer(client, req).await;
                                let _ = write_response(&mut wr, &resp).await;
                            });
                        }
                    }
                }
            }
        }
    }
}

/// How long a client may take to send its request line.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

/// Aborts a task when dropped (the acceptor ends with the loop).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Whether the loop must see `req` (it changes the sandbox); the others only ask the
/// agent.
fn needs_loop(req: &Request) -> bool {
    !matches!(
        req,
        Request::Inspect
            | Request::Exec { .. }
            | Request::ListIfaces
            | Request::ListRoutes
            | Request::GuestStats
    )
}

type Queued = (Request, tokio::net::unix::OwnedWriteHalf);

/// Accepts clients, each read in a task of its own (at most [`REQUEST_DEADLINE`]).
async fn accept_loop(
    listener: tokio::net::UnixListener,
    to_loop: tokio::sync::mpsc::Sender<Queued>,
    agent: std::sync::Arc<std::sync::Mutex<Option<AgentClient>>>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let to_loop = to_loop.clone();
        let agent = agent.clone();
        tokio::spawn(async move {
            let (rd, mut wr) = stream.into_split();
            let mut line = String::new();
            let mut rd = BufReader::new(rd);
            let req = match tokio::time::timeout(REQUEST_DEADLINE, rd.read_line(&mut line)).await {
                Ok(Ok(n)) if n > 0 => serde_json::from_str::<Request>(&line),
                _ => return,
            };
            match req {
                Ok(req) if needs_loop(&req) => {
                    let _ = to_loop.send((req, wr)).await;
                }
                Ok(req) => {
                    let client = agent.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    let resp = answer(client, req).await;
                    let _ = write_response(&mut wr, &resp).await;
                }
                Err(e) => {
                    let resp = Response::Error {
                        message: format!("bad request: {e}"),
                    };
                    let _ = write_response(&mut wr, &resp).await;
                }
            }
        });
    }
}

async fn write_response(
    w: &mut tokio::net::unix::OwnedWriteHalf,
    r: &Response,
) -> std::io::Result<()> {
    let mut b = serde_json::to_vec(r).map_err(std::io::Error::other)?;
    b.push(b'\n');
    w.write_all(&b).await
}

async fn answer(client: Option<AgentClient>, req: Request) -> Response {
    let Some(c) = client else {
        return Response::Error {
            message: "the guest agent is not connected".into(),
        };
    };
    let r = match req {
        Request::Inspect => match (c.list_interfaces().await, c.list_routes().await) {
            (Ok(interfaces), Ok(routes)) => {
                Ok(Response::Network(GuestNetwork { interfaces, routes }))
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
        },
        Request::Exec { args, timeout_ms } => c
            .exec(&args, Duration::from_millis(timeout_ms))
            .await
            .map(|o| {
                Response::Exec(ExecResult {
                    exit_code: o.exit_code,
                    stdout: o.stdout,
                    stderr: o.stderr,
                })
            }),
        Request::ListIfaces => c
            .list_interfaces()
            .await
            .map(|interfaces| Response::Interfaces { interfaces }),
        Request::ListRoutes => c
            .list_routes()
            .await
            .map(|routes| Response::Routes { routes }),
        Request::GuestStats => c
            .interface_stats()
            .await
            .map(|interfaces| Response::GuestStats { interfaces }),
        Request::Stop { .. }
        | Request::Halt { .. }
        | Request::AddIface { .. }
        | Request::DelIface { .. }
        | Request::UpdateRoutes { .. } => {
            return Response::Error {
                message: "handled by the supervisor loop".into(),
            }
        }
    };
    r.unwrap_or_else(|e| Response::Error {
        message: e.to_string(),
    })
}
