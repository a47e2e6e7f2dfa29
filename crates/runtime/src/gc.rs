//! `ps` and `gc`: what the state root records, and cleaning up what dead sandboxes left.
//!
//! Both look only at what their own state root recorded: other roots (another deployment,
//! another test) are never touched.

use crate::lock::SandboxLock;
use crate::sandbox::{self, Health, SandboxPaths};
use crate::teardown::{self, attach_dir, RemoveReport};
use sandnet_host::{NetNs, NetNsRef};
use sandnet_model::InterworkingModel as Model;
use serde::Serialize;
use std::path::Path;

/// One line of `ps`.
#[derive(Debug, Clone, Serialize)]
pub struct PsEntry {
    /// Sandbox id.
    pub id: String,
    /// `running`, `creating`, `qemu-exited`, `supervisor-dead`, `dead`,
    /// `teardown-failed: …`, `unreadable: …`
    pub status: String,
    /// The pod namespace.
    pub netns: String,
    /// Interworking model (none when the record is unreadable).
    pub model: Option<Model>,
    /// QEMU's pid.
    pub qemu_pid: Option<u32>,
    /// Supervisor's pid.
    pub supervisor_pid: Option<u32>,
    /// Unix time of creation.
    pub created: u64,
    /// The accelerator QEMU runs with (empty until chosen).
    pub accel: String,
    /// Why that accelerator.
    pub accel_reason: String,
}

/// Every sandbox under the root with its health, unreadable records included.
pub fn ps(root: &Path) -> Result<Vec<PsEntry>, sandbox::SandboxError> {
    let mut out = vec![];
    for id in sandbox::list(root)? {
        let (st, health) = teardown::health_of(root, &id);
        out.push(PsEntry {
            status: health.to_string(),
            netns: st.as_ref().map(|s| s.netns.clone()).unwrap_or_default(),
            model: st.as_ref().map(|s| s.model),
            qemu_pid: st.as_ref().and_then(|s| s.qemu_pid),
            supervisor_pid: st.as_ref().and_then(|s| s.supervisor_pid),
            created: st.as_ref().map(|s| s.created).unwrap_or_default(),
            accel: st.as_ref().map(|s| s.accel.clone()).unwrap_or_default(),
            accel_reason: st
                .as_ref()
                .map(|s| s.accel_reason.clone())
                .unwrap_or_default(),
            id,
        });
    }
    Ok(out)
}

/// What `gc` did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct GcReport {
    /// Sandboxes whose supervisor or QEMU was gone, and were cleaned up.
    pub sandboxes: Vec<String>,
    /// What was done, one line per action.
    pub actions: Vec<String>,
    /// What could not be cleaned up (the records are kept for a retry).
    pub failures: Vec<String>,
}

/// Finds what dead sandboxes of this state root left behind and removes it: sandboxes
/// whose supervisor is gone (from their persisted state), those whose QEMU exited (through
/// their supervisor), directories that never got a record, attach plans of namespaces that
/// no longer exist. Live sandboxes are left alone; a sandbox that cannot be cleaned up, or
/// whose record is unreadable, is reported in `failures`.
pub async fn gc(root: &Path) -> Result<GcReport, sandbox::SandboxError> {
    let mut rep = GcReport::default();
    // VMs of a factory whose daemon is gone (taken ones belong to their sandboxes).
    rep.actions
        .extend(crate::factory::remove_orphans(root).await);
    for id in sandbox::list(root)? {
        let paths = SandboxPaths::new(root, &id);
        // The lock first: with it held, the record read next cannot change under us.
        let free = SandboxLock::try_acquire(&paths.dir).ok().flatten();
        let (st, health) = teardown::health_of(root, &id);
        let mut r = RemoveReport::default();
        let outcome = match (free, st, health) {
            // Held: its supervisor is at work. Only a supervisor whose VM is gone is told
            // to clean up; the others are alive.
            (_, _, Health::Unreadable(why)) => Err(teardown::TeardownError::Unreadable {
                id: id.clone(),
                why,
            }),
            (None, _, Health::QemuExited) => crate::rm::remove(root, &id, true).await.map(|x| {
                r.actions.extend(x.actions);
                r.not_undone.extend(x.not_undone);
                r.still_held |= x.still_held;
            }),
            (None, _, _) => continue,
            (Some(lock), Some(mut st), _) => {
                let x = teardown::cleanup_locked(root, &mut st, &mut r).await;
                drop(lock);
                x
            }
            (Some(_), None, _) => continue,
        };
        // Steps only partly undone are said; what they leave held is a failure.
        let left = r
            .not_undone
            .iter()
            .map(|l| format!("sandbox {id}: not undone: {l}"));
        if r.still_held {
            rep.failures.extend(left);
        } else {
            rep.actions.extend(left);
        }
        match outcome {
            Ok(()) => {
                rep.actions.extend(r.actions);
                rep.sandboxes.push(id);
            }
            Err(e) => {
                rep.actions.extend(r.actions);
                rep.failures.push(e.to_string());
            }
        }
    }
    // Directories of sandboxes that never got a record, whose `run` and supervisor are
    // gone (they hold the lock from the moment the directory exists).
    if let Ok(rd) = std::fs::read_dir(root) {
        for e in rd.filter_map(|e| e.ok()) {
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            let p = SandboxPaths::new(root, &name);
            if sandbox::check_id(&name).is_err() || p.state.exists() || !p.dir.is_dir() {
                continue;
            }
            if let Ok(Some(_lock)) = SandboxLock::try_acquire(&p.dir) {
                if !p.state.exists() && crate::shared::remove_sandbox_dir(&p).is_ok() {
                    rep.actions
                        .push(format!("removed incomplete {}", p.dir.display()));
                }
            }
        }
    }
    rep.actions
        .extend(forget_vanished_attachments(&attach_dir(root)));
    Ok(rep)
}

/// Forgets attach plans whose namespace is gone (or is another one by now).
fn forget_vanished_attachments(dir: &Path) -> Vec<String> {
    let mut actions = vec![];
    let Ok(rd) = std::fs::read_dir(dir) else {
        return actions;
    };
    for e in rd.filter_map(|e| e.ok()) {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let Some(st) = std::fs::read(&p)
            .ok()
            .and_then(|b| sandnet_host::interwork::parse_state(&b).ok())
        else {
            continue;
        };
        let alive = st
            .netns
            .parse::<NetNsRef>()
            .and_then(|r| NetNs::open(&r))
            .and_then(|ns| ns.id())
            .is_ok_and(|id| id == st.netns_id);
        if !alive && sandnet_host::interwork::forget_state(dir, st.netns_id).is_ok() {
            actions.push(format!(
                "forgot attach state of vanished namespace {}",
                st.netns
            ));
        }
    }
    actions
}
