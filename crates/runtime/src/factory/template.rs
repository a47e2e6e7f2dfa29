//! One factory VM: its template process (`sandnet __template VM`) boots QEMU with no NIC,
//! waits until it is taken over `take.sock`, then becomes the taker's supervisor; and the
//! taker's side of that hand-over ([`offer`]).
//!
//! Hand-over: the taker connects and sends one line `{"id": ID}` carrying the sandbox's
//! lock descriptor (`SCM_RIGHTS`); the template answers with a `taken` progress line, marks
//! itself taken and runs the sandbox's supervisor with the connection as its stdout — so
//! `run` reads the same report lines it would read from a supervisor it started itself.

use super::{factory_dir, vm_params, VmRecord, VmStatus};
use crate::boot::{boot_vm, vm_spec, BootPlan};
use crate::image;
use crate::report::{progress, Ready};
use crate::sandbox::{factory_vm_dir, SandboxPaths};
use crate::supervisor::{supervise_with, Preboot};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use std::io::{IoSlice, IoSliceMut, Read};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// How long a hand-over may take on either side.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(5);

fn take_sock(root: &Path, vm: &str) -> std::path::PathBuf {
    factory_vm_dir(root, vm).join("take.sock")
}

/// The taker's side: offers sandbox `id` (lock descriptor `lock_fd`) to VM `vm` and waits
/// for its `taken` line. The stream then carries the supervisor's report lines.
pub fn offer(
    root: &Path,
    vm: &str,
    id: &str,
    lock_fd: RawFd,
    netns_fd: Option<RawFd>,
) -> std::io::Result<UnixStream> {
    let s = UnixStream::connect(take_sock(root, vm))?;
    s.set_read_timeout(Some(HANDOVER_TIMEOUT))?;
    s.set_write_timeout(Some(HANDOVER_TIMEOUT))?;
    let mut line = serde_json::to_vec(&serde_json::json!({ "id": id }))?;
    line.push(b'\n');
    let mut fds = vec![lock_fd];
    fds.extend(netns_fd);
    sendmsg::<()>(
        s.as_raw_fd(),
        &[IoSlice::new(&line)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(std::io::Error::from)?;
    // The first line, byte by byte so nothing after it is consumed here.
    let mut first = Vec::new();
    let mut b = [0u8; 1];
    while first.last() != Some(&b'\n') {
        if (&s).read(&mut b)? == 0 || first.len() > 4096 {
            return Err(std::io::Error::other("the template closed the hand-over"));
        }
        first.push(b[0]);
    }
    match serde_json::from_slice::<Ready>(&first) {
        Ok(Ready::Progress { step }) if step == "taken" => {}
        _ => return Err(std::io::Error::other("unexpected hand-over answer")),
    }
    s.set_read_timeout(None)?;
    s.set_write_timeout(None)?;
    Ok(s)
}

/// Receives the taker's line, lock descriptor and (when it named a namespace) the pod
/// namespace's descriptor.
fn receive(s: &UnixStream) -> std::io::Result<(String, OwnedFd, Option<OwnedFd>)> {
    s.set_read_timeout(Some(HANDOVER_TIMEOUT))?;
    let mut buf = [0u8; 1024];
    let mut cmsg = nix::cmsg_space!([RawFd; 2]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(s.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty())
        .map_err(std::io::Error::from)?;
    let mut fds = Vec::new();
    for c in msg.cmsgs().map_err(std::io::Error::from)? {
        if let ControlMessageOwned::ScmRights(v) = c {
            for f in v {
                // SAFETY: the kernel just installed this descriptor for us.
                fds.push(unsafe { OwnedFd::from_raw_fd(f) });
            }
        }
    }
    let n = msg.bytes;
    let v: serde_json::Value = serde_json::from_slice(&buf[..n]).map_err(std::io::Error::other)?;
    let id = v["id"]
        .as_str()
        .ok_or_else(|| std::io::Error::other("no id"))?
        .to_string();
    crate::sandbox::check_id(&id).map_err(std::io::Error::other)?;
    let mut fds = fds.into_iter();
    let fd = fds
        .next()
        .ok_or_else(|| std::io::Error::other("no lock descriptor"))?;
    let netns = fds.next();
    s.set_read_timeout(None)?;
    Ok((id, fd, netns))
}

/// The template process's main: boot, wait to be taken (or for QEMU to die, or SIGTERM),
/// then supervise the sandbox that took it. Returns the exit code.
pub async fn serve_template(root: &Path, vm: &str) -> i32 {
    let dir = factory_vm_dir(root, vm);
    let Some(params) = vm_params(root) else {
        tracing::error!("no factory spec in {}", factory_dir(root).display());
        return 1;
    };
    let mut rec = VmRecord {
        version: crate::sandbox::STATE_VERSION,
        vm: vm.to_string(),
        pid: std::process::id(),
        qemu_pid: None,
        status: VmStatus::Booting,
        accel: String::new(),
        sandbox: None,
    };
    let gone = |code: i32| {
        let _ = std::fs::remove_dir_all(&dir);
        code
    };
    if let Err(e) = std::fs::create_dir_all(&dir)
        .map_err(|e| e.to_string())
        .and_then(|()| rec.save(root).map_err(|e| e.to_string()))
    {
        tracing::error!("factory VM {vm}: {e}");
        return gone(1);
    }
    let img = {
        let (k, i) = (params.kernel.clone(), params.initrd.clone());
        match tokio::task::spawn_blocking(move || image::resolve(k.as_deref(), i.as_deref())).await
        {
            Ok(Ok(img)) => img,
            Ok(Err(e)) => {
                tracing::error!("factory VM {vm}: {e}");
                return gone(1);
            }
            Err(e) => {
                tracing::error!("factory VM {vm}: {e}");
                return gone(1);
            }
        }
    };
    let make_spec = |accel| vm_spec(&params, &img.kernel, &img.initrd, accel);
    let cache_dir = root.join("accel");
    let plan = BootPlan {
        mode: params.accel,
        cache_dir: &cache_dir,
        spec: &make_spec,
        vhost: false,
        netns: None,
        dir: &dir,
    };
    let mut record = |pid: Option<u32>, accel: sandnet_vm::Accel, _why: &str| {
        rec.qemu_pid = pid;
        rec.accel = accel.to_string();
        let _ = rec.save(root);
    };
    let mut booted = match boot_vm(plan, Vec::new(), &mut record).await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!("factory VM {vm}: boot: {e}");
            return gone(1);
        }
    };
    rec.qemu_pid = Some(booted.qemu.pid());
    rec.accel = booted.accel.to_string();
    rec.status = VmStatus::Ready;
    let sock = take_sock(root, vm);
    let _ = std::fs::remove_file(&sock);
    let listener = match tokio::net::UnixListener::bind(&sock) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("factory VM {vm}: bind {}: {e}", sock.display());
            let _ = booted.qemu.kill().await;
            return gone(1);
        }
    };
    if rec.save(root).is_err() {
        let _ = booted.qemu.kill().await;
        return gone(1);
    }
    tracing::info!("factory VM {vm} ready ({})", booted.accel);
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(_) => {
            let _ = booted.qemu.kill().await;
            return gone(1);
        }
    };
    let (stream, id, lock, netns) = loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                // Its directory removed (state root gone): nobody can take it any more.
                if !dir.join("vm.json").exists() {
                    tracing::warn!("factory VM {vm}: its record is gone; stopping");
                    let _ = booted.qemu.kill().await;
                    return gone(0);
                }
            }
            st = booted.qemu.wait() => {
                tracing::warn!("factory VM {vm}: QEMU exited before it was taken: {st:?}");
                return gone(0);
            }
            _ = term.recv() => {
                let _ = booted.qemu.kill().await;
                return gone(0);
            }
            conn = listener.accept() => {
                let Ok((s, _)) = conn else { continue };
                let Ok(s) = s.into_std() else { continue };
                if s.set_nonblocking(false).is_err() {
                    continue;
                }
                let r = tokio::task::spawn_blocking(move || receive(&s).map(|(id, fd, ns)| (s, id, fd, ns))).await;
                match r {
                    Ok(Ok((s, id, fd, ns))) => break (s, id, fd, ns),
                    Ok(Err(e)) => tracing::warn!("factory VM {vm}: bad hand-over: {e}"),
                    Err(e) => tracing::warn!("factory VM {vm}: hand-over: {e}"),
                }
            }
        }
    };
    drop(listener);
    let _ = std::fs::remove_file(&sock);
    rec.status = VmStatus::Taken;
    rec.sandbox = Some(id.clone());
    let _ = rec.save(root);
    // From here on this process is the sandbox's supervisor: its stdout is the taker's
    // connection, its log the sandbox's.
    if nix::unistd::dup2_stdout(stream.as_fd()).is_err() {
        let _ = booted.qemu.kill().await;
        return gone(1);
    }
    drop(stream);
    let log = SandboxPaths::new(root, &id).log;
    if let Ok(f) = std::fs::OpenOptions::new().append(true).open(&log) {
        let _ = nix::unistd::dup2_stderr(f.as_fd());
    }
    progress("taken");
    tracing::info!("factory VM {vm} taken by sandbox {id}");
    supervise_with(
        root,
        &id,
        Some(lock.into_raw_fd()),
        Some(Preboot {
            booted,
            vm: vm.to_string(),
            netns,
        }),
    )
    .await
}
