//! The factory daemon (`sandnet __factory COUNT`): keeps `COUNT` VMs booting or ready by
//! starting template processes, replaces those taken or dead, and on SIGTERM stops the
//! ones not taken and removes its records.

use super::{factory_dir, vms, FactoryRecord, VmStatus};
use crate::sandbox::{create_private_dir, factory_vm_dir, new_id, write_private};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// How often the daemon looks at its VMs.
const TICK: Duration = Duration::from_millis(200);

/// The daemon's main; `program ARGS… __template VM` starts a template. Returns the exit
/// code.
pub async fn run_daemon(root: &Path, count: u32, program: PathBuf, args: Vec<OsString>) -> i32 {
    let dir = factory_dir(root);
    if let Err(e) = create_private_dir(&dir).and_then(|()| create_private_dir(&dir.join("vms"))) {
        tracing::error!("factory: {}: {e}", dir.display());
        return 1;
    }
    let me = FactoryRecord {
        version: crate::sandbox::STATE_VERSION,
        pid: std::process::id(),
        count,
    };
    let body = serde_json::to_vec_pretty(&me).unwrap_or_default();
    if let Err(e) = write_private(&dir.join("factory.json"), &body) {
        tracing::error!("factory: {e}");
        return 1;
    }
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        return 1;
    };
    let mut children: Vec<(String, tokio::process::Child)> = Vec::new();
    loop {
        // Reap templates that exited (dead VMs remove their own directory).
        children.retain_mut(|(_, c)| matches!(c.try_wait(), Ok(None)));
        let live = vms(root)
            .iter()
            .filter(|r| r.status != VmStatus::Taken && r.alive())
            .count();
        // Templates started but not recorded yet count too.
        let starting = children
            .iter()
            .filter(|(vm, _)| !factory_vm_dir(root, vm).join("vm.json").exists())
            .count();
        for _ in (live + starting)..count as usize {
            match start_template(root, &program, &args) {
                Ok(c) => children.push(c),
                Err(e) => tracing::error!("factory: start a VM: {e}"),
            }
        }
        // Its record gone (state root removed): nobody can reach this factory any more.
        if !dir.join("factory.json").exists() {
            tracing::warn!("factory: {} is gone; stopping", dir.display());
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = term.recv() => break,
        }
    }
    // Stop every VM not taken (a taken one belongs to its sandbox now).
    for r in vms(root) {
        if r.alive() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(r.pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
    for _ in 0..100 {
        children.retain_mut(|(_, c)| matches!(c.try_wait(), Ok(None)));
        if vms(root).iter().all(|r| !r.alive()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = std::fs::remove_file(dir.join("factory.json"));
    0
}

/// Starts the daemon (`program ARGS… __factory COUNT`) in a session of its own, its log in
/// `<root>/factory/factory.log`.
pub fn spawn_daemon(
    root: &Path,
    program: &Path,
    args: &[OsString],
    count: u32,
) -> std::io::Result<()> {
    let log = crate::sandbox::create_private_file(&factory_dir(root).join("factory.log"))?;
    let mut c = std::process::Command::new(program);
    c.args(args)
        .arg("__factory")
        .arg(count.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    detach(&mut c);
    c.spawn().map(drop)
}

/// Puts a child in a session of its own (it outlives its parent).
fn detach(c: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        c.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
}

fn start_template(
    root: &Path,
    program: &Path,
    args: &[OsString],
) -> std::io::Result<(String, tokio::process::Child)> {
    let vm = new_id();
    let d = factory_vm_dir(root, &vm);
    create_private_dir(&d)?;
    let log = crate::sandbox::create_private_file(&d.join("template.log"))?;
    let mut c = std::process::Command::new(program);
    c.args(args)
        .arg("__template")
        .arg(&vm)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    // A template outlives the daemon once taken.
    detach(&mut c);
    let child = tokio::process::Command::from(c)
        .kill_on_drop(false)
        .spawn()?;
    Ok((vm, child))
}
