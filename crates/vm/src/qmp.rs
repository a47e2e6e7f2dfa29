//! A QMP client: commands matched to replies by `id`, events broadcast, fds passed with
//! `SCM_RIGHTS`, and the NIC hot-plug sequence built on them.

use crate::error::{Result, VmError};
use crate::nic::{valid_id, NicSpec};
pub use crate::qmp_wire::QmpEvent;
pub use crate::qmp_wire::MAX_LINE;
use crate::qmp_wire::{parse_greeting, parse_message, LineBuffer, QmpMessage};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::Interest;
use tokio::net::UnixStream;
use tokio::sync::{broadcast, oneshot};

/// How long a command may take before [`QmpClient::execute`] gives up.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// What `query-status` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmStatus {
    /// Whether the vCPUs are running.
    pub running: bool,
    /// QEMU's run state (`running`, `paused`, `prelaunch`, …).
    pub status: String,
}

type Reply = std::result::Result<Value, (String, String)>;
type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Reply>>>>;

/// A connection to a QEMU monitor in QMP mode (capabilities already negotiated).
#[derive(Debug)]
pub struct QmpClient {
    stream: Arc<UnixStream>,
    write_lock: tokio::sync::Mutex<()>,
    pending: Pending,
    closed: Arc<std::sync::atomic::AtomicBool>,
    events: broadcast::Sender<QmpEvent>,
    next_id: AtomicU64,
    reader: tokio::task::JoinHandle<()>,
    greeting: Value,
}

impl Drop for QmpClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn proto(msg: impl Into<String>) -> VmError {
    VmError::QmpProtocol(msg.into())
}

/// Reads one `\n`-terminated line from the stream without a buffered reader (used only for the
/// greeting, before the reader task owns the stream).
async fn read_line(stream: &UnixStream, buf: &mut LineBuffer) -> Result<Vec<u8>> {
    loop {
        if let Some(line) = buf.next_line() {
            return Ok(line);
        }
        stream
            .readable()
            .await
            .map_err(|e| proto(format!("reading: {e}")))?;
        let mut chunk = [0u8; 4096];
        match stream.try_read(&mut chunk) {
            Ok(0) => return Err(proto("connection closed by QEMU")),
            Ok(n) => buf.push(&chunk[..n])?,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(proto(format!("reading: {e}"))),
        }
    }
}

fn dispatch(line: &[u8], pending: &Pending, events: &broadcast::Sender<QmpEvent>) {
    match parse_message(line) {
        QmpMessage::Unparsable => {
            let head = &line[..line.len().min(200)];
            tracing::warn!(line = %String::from_utf8_lossy(head).escape_debug(), len = line.len(), "unparsable QMP message");
        }
        QmpMessage::Event(ev) => {
            tracing::debug!(event = %ev.event, "QMP event");
            let _ = events.send(ev);
        }
        QmpMessage::Unmatched(v) => {
            tracing::warn!(msg = %v.to_string().escape_debug(), "QMP reply without our id")
        }
        QmpMessage::Reply { id, reply } => {
            let tx = pending.lock().ok().and_then(|mut p| p.remove(&id));
            if let Some(tx) = tx {
                let _ = tx.send(reply);
            }
        }
    }
}

impl QmpClient {
    /// Connects to the QMP socket at `path`, reads the greeting and enters command mode.
    pub async fn connect(path: &Path) -> Result<QmpClient> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|e| VmError::io("connecting to QMP socket", path, e))?;
        let mut buf = LineBuffer::new();
        let greeting_line = tokio::time::timeout(COMMAND_TIMEOUT, read_line(&stream, &mut buf))
            .await
            .map_err(|_| VmError::Timeout {
                what: "QMP greeting".into(),
                ms: COMMAND_TIMEOUT.as_millis(),
            })??;
        let greeting = parse_greeting(&greeting_line)?;
        let stream = Arc::new(stream);
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (events, _) = broadcast::channel(256);
        let reader = {
            let (stream, pending, events, closed) = (
                stream.clone(),
                pending.clone(),
                events.clone(),
                closed.clone(),
            );
            tokio::spawn(async move {
                loop {
                    while let Some(line) = buf.next_line() {
                        dispatch(&line, &pending, &events);
                    }
                    // What is left holds no newline: an unfinished message.
                    if buf.pending() > MAX_LINE {
                        tracing::warn!(
                            bytes = buf.pending(),
                            "QMP message longer than {MAX_LINE} bytes; closing the connection"
                        );
                        break;
                    }
                    if stream.readable().await.is_err() {
                        break;
                    }
                    let mut chunk = [0u8; 8192];
                    match stream.try_read(&mut chunk) {
                        Ok(0) => break,
                        Ok(n) => {
                            if let Err(e) = buf.push(&chunk[..n]) {
                                tracing::warn!(error = %e, "dropping the QMP connection");
                                break;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        Err(_) => break,
                    }
                }
                closed.store(true, Ordering::SeqCst);
                if let Ok(mut p) = pending.lock() {
                    p.clear(); // dropping the senders wakes every waiter with "closed"
                }
            })
        };
        let client = QmpClient {
            stream,
            write_lock: tokio::sync::Mutex::new(()),
            pending,
            closed,
            events,
            next_id: AtomicU64::new(1),
            reader,
            greeting,
        };
        client.execute("qmp_capabilities", None).await?;
        Ok(client)
    }

    /// The greeting QEMU sent (version and capabilities).
    pub fn greeting(&self) -> &Value {
        &self.greeting
    }

    /// Subscribes to events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<QmpEvent> {
        self.events.subscribe()
    }

    /// Whether QEMU closed the connection.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    async fn send(&self, bytes: &[u8], fd: Option<BorrowedFd<'_>>) -> Result<()> {
        let _guard = self.write_lock.lock().await;
        let mut off = 0;
        while off < bytes.len() {
            self.stream
                .writable()
                .await
                .map_err(|e| proto(format!("writing: {e}")))?;
            let rest = &bytes[off..];
            let attach = fd.filter(|_| off == 0);
            let res = self.stream.try_io(Interest::WRITABLE, || {
                let iov = [IoSlice::new(rest)];
                let raw;
                let cmsg: Vec<nix::sys::socket::ControlMessage> = match attach {
                    Some(f) => {
                        raw = [f.as_raw_fd()];
                        vec![nix::sys::socket::ControlMessage::ScmRights(&raw)]
                    }
                    None => vec![],
                };
                nix::sys::socket::sendmsg::<()>(
                    self.stream.as_raw_fd(),
                    &iov,
                    &cmsg,
                    nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
                    None,
                )
                .map_err(std::io::Error::from)
            });
            match res {
                Ok(n) => off += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(proto(format!("writing: {e}"))),
            }
        }
        Ok(())
    }

    async fn execute_inner(
        &self,
        command: &str,
        args: Option<Value>,
        fd: Option<BorrowedFd<'_>>,
        timeout: Duration,
    ) -> Result<Value> {
        if self.is_closed() {
            return Err(proto(format!("{command}: connection closed by QEMU")));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({ "execute": command, "id": id });
        if let Some(a) = args {
            msg["arguments"] = a;
        }
        let mut bytes = serde_json::to_vec(&msg).map_err(|e| proto(e.to_string()))?;
        bytes.push(b'\n');
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .map_err(|_| proto("pending table poisoned"))?
            .insert(id, tx);
        let forget = || {
            if let Ok(mut p) = self.pending.lock() {
                p.remove(&id);
            }
        };
        if let Err(e) = self.send(&bytes, fd).await {
            forget();
            return Err(e);
        }
        tracing::debug!(command, id, "QMP command sent");
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err((class, desc)))) => Err(VmError::Qmp {
                command: command.to_string(),
                class,
                desc,
            }),
            Ok(Err(_)) => Err(proto(format!("{command}: connection closed by QEMU"))),
            Err(_) => {
                forget();
                Err(VmError::Timeout {
                    what: format!("reply to QMP {command}"),
                    ms: timeout.as_millis(),
                })
            }
        }
    }

    /// Runs `command` with `args` and returns its `return` value.
    pub async fn execute(&self, command: &str, args: Option<Value>) -> Result<Value> {
        self.execute_inner(command, args, None, COMMAND_TIMEOUT)
            .await
    }

    /// `query-status`.
    pub async fn query_status(&self) -> Result<VmStatus> {
        let v = self.execute("query-status", None).await?;
        Ok(VmStatus {
            running: v.get("running").and_then(Value::as_bool).unwrap_or(false),
            status: v
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        })
    }

    /// `getfd`: hands `fd` to QEMU under `name` (sent with `SCM_RIGHTS` on the command itself).
    pub async fn getfd(&self, name: &str, fd: BorrowedFd<'_>) -> Result<()> {
        valid_id(name)?;
        self.execute_inner(
            "getfd",
            Some(json!({ "fdname": name })),
            Some(fd),
            COMMAND_TIMEOUT,
        )
        .await
        .map(|_| ())
    }

    /// `closefd`: drops an fd QEMU holds under `name`.
    pub async fn closefd(&self, name: &str) -> Result<()> {
        self.execute("closefd", Some(json!({ "fdname": name })))
            .await
            .map(|_| ())
    }

    /// `netdev_add` of a tap backend using fds already passed with [`QmpClient::getfd`].
    pub async fn netdev_add_tap(
        &self,
        id: &str,
        fd_names: &[String],
        vhost_fd_names: &[String],
    ) -> Result<()> {
        valid_id(id)?;
        let mut args = json!({ "type": "tap", "id": id });
        match fd_names {
            [] => return Err(VmError::InvalidSpec(format!("netdev {id}: no tap fds"))),
            [one] => args["fd"] = json!(one),
            many => args["fds"] = json!(many.join(":")),
        }
        match vhost_fd_names {
            [] => {}
            [one] => {
                args["vhost"] = json!(true);
                args["vhostfd"] = json!(one);
            }
            many => {
                args["vhost"] = json!(true);
                args["vhostfds"] = json!(many.join(":"));
            }
        }
        self.execute("netdev_add", Some(args)).await.map(|_| ())
    }

    /// `netdev_del`.
    pub async fn netdev_del(&self, id: &str) -> Result<()> {
        self.execute("netdev_del", Some(json!({ "id": id })))
            .await
            .map(|_| ())
    }

    /// `device_add` with arbitrary properties (`driver` and `id` among them).
    pub async fn device_add(&self, props: Value) -> Result<()> {
        self.execute("device_add", Some(props)).await.map(|_| ())
    }

    /// `device_del`, then waits up to `timeout` for `DEVICE_DELETED`; `Ok(false)` when it did not
    /// come (the guest did not release the device in time, or has no driver for it).
    pub async fn device_del(&self, id: &str, timeout: Duration) -> Result<bool> {
        let mut rx = self.subscribe();
        self.execute("device_del", Some(json!({ "id": id })))
            .await?;
        let wait = async {
            loop {
                match rx.recv().await {
                    Ok(ev)
                        if ev.event == "DEVICE_DELETED"
                            && ev.data.get("device").and_then(Value::as_str) == Some(id) =>
                    {
                        return true
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return false,
                }
            }
        };
        Ok(tokio::time::timeout(timeout, wait).await.unwrap_or(false))
    }

    /// Hot-plugs `nic` as a virtio-net-pci device on root port `bus` (see
    /// [`crate::VmSpec::root_port_id`]): `getfd` per fd, `netdev_add`, `device_add`. Undoes the
    /// steps already done when one fails. The fds stay owned by the caller (QEMU has its copies).
    pub async fn hotplug_nic(&self, nic: &NicSpec, bus: &str) -> Result<()> {
        nic.validate()?;
        valid_id(bus)?;
        let netdev = NicSpec::netdev_id(&nic.id);
        let mut passed: Vec<String> = Vec::new();
        let res = async {
            let mut taps = Vec::new();
            for (i, fd) in nic.tap_fds.iter().enumerate() {
                let name = format!("{}-fd{i}", nic.id);
                self.getfd(&name, fd.as_fd()).await?;
                passed.push(name.clone());
                taps.push(name);
            }
            let mut vhosts = Vec::new();
            for (i, fd) in nic.vhost_fds.iter().enumerate() {
                let name = format!("{}-vhostfd{i}", nic.id);
                self.getfd(&name, fd.as_fd()).await?;
                passed.push(name.clone());
                vhosts.push(name);
            }
            self.netdev_add_tap(&netdev, &taps, &vhosts).await?;
            // netdev_add consumed the named fds.
            passed.clear();
            let mut props = json!({
                "driver": "virtio-net-pci",
                "id": nic.id,
                "netdev": netdev,
                "mac": nic.mac.to_string(),
                "bus": bus,
                "romfile": "",
            });
            if nic.queues > 1 {
                props["mq"] = json!("on");
                props["vectors"] = json!((2 * nic.queues + 2).to_string());
            }
            if let Err(e) = self.device_add(props).await {
                let _ = self.netdev_del(&netdev).await;
                return Err(e);
            }
            Ok(())
        }
        .await;
        if res.is_err() {
            for name in &passed {
                let _ = self.closefd(name).await;
            }
        }
        res
    }

    /// Unplugs a NIC added by [`QmpClient::hotplug_nic`] or cold-plugged by id: `device_del`,
    /// wait for `DEVICE_DELETED` up to `timeout`, then `netdev_del`. Returns whether the guest
    /// released the device in time.
    pub async fn unplug_nic(&self, id: &str, timeout: Duration) -> Result<bool> {
        let deleted = self.device_del(id, timeout).await?;
        self.netdev_del(&NicSpec::netdev_id(id)).await?;
        Ok(deleted)
    }

    /// `quit`: QEMU exits; a connection closed before the reply counts as success.
    pub async fn quit(&self) -> Result<()> {
        match self.execute("quit", None).await {
            Ok(_) => Ok(()),
            Err(VmError::QmpProtocol(m)) if m.contains("closed") => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A fake QEMU that greets, accepts `qmp_capabilities`, then sends `tail` forever-ish.
    /// The directory is removed when the returned guard drops (also when a test fails).
    async fn hostile_qmp(tag: &str, tail: Vec<u8>) -> (QmpClient, sandnet_testkit::TempDir) {
        let dir = sandnet_testkit::TempDir::new(&format!("qmp-{tag}"));
        let path = dir.join("qmp.sock");
        let l = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            s.write_all(b"{\"QMP\":{}}\n").await.unwrap();
            let mut b = [0u8; 256];
            let _ = s.read(&mut b).await;
            s.write_all(b"{\"return\":{},\"id\":1}\n").await.unwrap();
            // Ends when the client closes its side.
            while s.write_all(&tail).await.is_ok() {}
        });
        let c = QmpClient::connect(&path).await.expect("connect");
        (c, dir)
    }

    #[tokio::test]
    async fn an_endless_line_closes_the_connection() {
        let (c, dir) = hostile_qmp("endless", vec![b'x'; 65536]).await;
        let t0 = std::time::Instant::now();
        while !c.is_closed() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "reader never gave up"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let e = c.query_status().await.unwrap_err().to_string();
        assert!(e.contains("closed"), "{e}");
        drop(dir);
    }

    #[tokio::test]
    async fn an_event_storm_does_not_queue_without_end() {
        let ev = b"{\"event\":\"GUEST_PANICKED\",\"data\":{\"x\":\"\\u001b[2J\"}}\n".repeat(1000);
        let (c, dir) = hostile_qmp("storm", ev).await;
        let mut rx = c.subscribe();
        tokio::time::sleep(Duration::from_millis(500)).await;
        // The channel keeps the newest 256 events; a slow subscriber is told it lagged.
        assert!(matches!(
            rx.recv().await,
            Err(broadcast::error::RecvError::Lagged(_))
        ));
        assert!(!c.is_closed());
        drop(c);
        drop(dir);
    }
}
