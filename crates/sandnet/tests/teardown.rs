//! Teardown keeps its record until it is really done: failed steps are errors that keep the
//! record for a retry, kills at every step of `run` (proven by the state file) leave nothing
//! once `rm`/`gc` ran, one teardown at a time per sandbox, and a record that cannot be read
//! is shown, reported, and removed with `rm --force`. These run sandnet as in production
//! (`nsenter --net`, in the caller's own mount namespace) with real CNI plugins and guests.

#[path = "common/host.rs"]
mod host;

use host::*;
use sandnet_testkit::pids_mentioning;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

/// A chained plugin that passes its prevResult on and fails DEL while `marker` exists.
/// It runs after `bridge`, so its DEL runs first and fails before anything is released.
fn failing_del_plugin(h: &Host, marker: &Path) {
    let p = h.bin().join("delfail");
    std::fs::write(
        &p,
        format!(
            r#"#!/usr/bin/python3
import json, os, sys
cmd = os.environ.get("CNI_COMMAND")
if cmd == "VERSION":
    print(json.dumps({{"cniVersion": "1.0.0", "supportedVersions": ["0.4.0", "1.0.0"]}}))
    sys.exit(0)
conf = json.load(sys.stdin)
if cmd == "ADD":
    print(json.dumps(conf.get("prevResult") or {{"cniVersion": conf["cniVersion"]}}))
elif cmd == "DEL" and os.path.exists("{m}"):
    print(json.dumps({{"cniVersion": "1.0.0", "code": 11, "msg": "injected DEL failure"}}))
    sys.exit(1)
"#,
            m = marker.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn bin_dirs(h: &Host) -> Vec<String> {
    vec![
        "--cni-bin-dir".into(),
        h.bin().display().to_string(),
        "--cni-bin-dir".into(),
        DEBIAN_BIN.into(),
    ]
}

fn ps(h: &Host) -> Value {
    serde_json::from_slice(&h.sandnet(&["ps", "--json"]).stdout).unwrap_or(Value::Null)
}

fn status_of(h: &Host, id: &str) -> String {
    ps(h)
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["id"] == id)
        .map(|e| e["status"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn failed_cni_del_keeps_the_record_and_a_later_rm_cleans_up() {
    let h = Host::production("delfail");
    h.write_conflist(&[serde_json::json!({"type": "delfail"})]);
    let marker = h.dir.join("fail-del");
    failing_del_plugin(&h, &marker);
    let id = h.new_id("delfail");
    let bins = bin_dirs(&h);
    let bins: Vec<&str> = bins.iter().map(|s| s.as_str()).collect();
    let v = h.run_ok(&id, &bins);
    let ip = h.guest_ip(&v);

    // The state is root's alone.
    assert_eq!(mode(&h.state()), 0o700, "state root");
    let dir = h.state().join(&id);
    assert_eq!(mode(&dir), 0o700, "sandbox dir");
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let ft = e.file_type().unwrap();
        if ft.is_file() {
            assert_eq!(mode(&e.path()), 0o600, "{}", e.path().display());
        }
    }

    std::fs::write(&marker, "").unwrap();
    let o = h.sandnet(&["rm", &id]);
    let err = text(&o.stderr);
    assert!(
        !o.status.success(),
        "rm must fail when CNI DEL fails: {err}"
    );
    for needle in [id.as_str(), "CNI DEL", "injected DEL failure", "retries"] {
        assert!(err.contains(needle), "{err:?} should name {needle:?}");
    }
    // The record and everything it still owns are kept: state, namespace, cache entry,
    // address reservation. QEMU is gone.
    assert!(dir.join("sandbox.json").exists(), "record dropped");
    assert!(Path::new(&format!("/run/netns/sandnet-{id}")).exists());
    assert!(
        !Host::files_under(&h.cache()).is_empty(),
        "CNI cache entry dropped"
    );
    assert!(
        Host::files_under(&h.ipam())
            .iter()
            .any(|f| f.ends_with(&ip)),
        "host-local reservation of {ip} dropped"
    );
    assert!(pids_mentioning(&format!("{}/", dir.display())).is_empty());
    let st = status_of(&h, &id);
    assert!(st.starts_with("teardown-failed: CNI DEL"), "ps: {st}");
    // gc retries, fails the same way, says so and keeps it.
    let o = h.sandnet(&["gc"]);
    assert!(!o.status.success(), "gc must report the failure");
    assert!(text(&o.stderr).contains("CNI DEL"), "{}", text(&o.stderr));
    assert!(dir.join("sandbox.json").exists());

    // Once DEL works again, rm finishes exactly what was left.
    std::fs::remove_file(&marker).unwrap();
    let o = h.sandnet(&["rm", &id]);
    assert!(o.status.success(), "rm retry: {}", text(&o.stderr));
    h.assert_clean("rm after a failed CNI DEL");
}

/// Spawns `run` for `id` with a pause after each recorded step.
fn spawn_run(h: &Host, id: &str, pause_ms: u64) -> Child {
    let mut c = h.run_cmd(id, &[]);
    c.env("SANDNET_STEP_PAUSE_MS", pause_ms.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c.spawn().unwrap()
}

const STEPS: [&str; 5] = ["netns", "cni", "attach", "image", "boot"];

/// The issue's reproduction, at every step: `run` SIGKILLed while the record names the
/// step, then at once `gc`, `rm --force`, `gc` — the supervisor's own rollback and these
/// never race, CNI DEL runs before the namespace goes, and the host is as before (the
/// bridge plugin's masquerade chain included).
#[test]
fn run_killed_at_each_step_then_gc_rm_gc_leaves_nothing() {
    let h = Host::production("runkill");
    h.write_conflist(&[]);
    for step in STEPS {
        let id = h.new_id(&format!("k{step}"));
        let mut child = spawn_run(&h, &id, 400);
        h.wait_for_step(&id, step);
        child.kill().unwrap();
        h.assert_still_at(&id, step);
        let _ = child.wait();
        let g = h.sandnet(&["gc"]);
        let r = h.sandnet(&["rm", "--force", &id]);
        assert!(
            r.status.success(),
            "rm --force after a kill at {step}: {}",
            text(&r.stderr)
        );
        let g2 = h.sandnet(&["gc"]);
        assert!(g2.status.success(), "gc: {}", text(&g2.stderr));
        eprintln!(
            "killed run at {step}; gc: {} rm: {}",
            text(&g.stdout).trim(),
            text(&r.stdout).trim()
        );
        wait_until("no process of the sandbox", Duration::from_secs(10), || {
            pids_mentioning(&id).is_empty()
        });
        h.assert_clean(&format!("run killed at step {step}"));
    }
}

/// The supervisor itself SIGKILLed while the record names each step: `run` notices and
/// cleans up from the record alone.
#[test]
fn supervisor_killed_at_each_step_run_cleans_up_from_the_record() {
    let h = Host::production("svkill");
    h.write_conflist(&[]);
    for step in STEPS {
        let id = h.new_id(&format!("s{step}"));
        let mut child = spawn_run(&h, &id, 400);
        let sup = h.wait_for_step(&id, step);
        kill9(sup);
        h.assert_still_at(&id, step);
        let o = wait_output(&mut child);
        assert!(
            !o.status.success(),
            "run should fail after a kill at {step}"
        );
        let err = text(&o.stderr);
        assert!(
            err.contains("died before the sandbox was ready"),
            "{step}: {err}"
        );
        h.assert_clean(&format!("supervisor killed at step {step}"));
    }
}

/// `rm` (and `gc` at the same time) while the guest boots: they ask the supervisor, which
/// rolls back, and wait for it; nobody tears down twice.
#[test]
fn rm_and_gc_during_boot_wait_for_the_supervisor() {
    let h = Host::production("rmboot");
    h.write_conflist(&[]);
    let id = h.new_id("rmboot");
    let mut child = spawn_run(&h, &id, 0);
    h.wait_for_step(&id, "boot");
    let (rm, gc) = std::thread::scope(|s| {
        let rm = s.spawn(|| h.sandnet(&["rm", &id]));
        let gc = s.spawn(|| h.sandnet(&["gc"]));
        (rm.join().unwrap(), gc.join().unwrap())
    });
    assert!(rm.status.success(), "rm: {}", text(&rm.stderr));
    assert!(gc.status.success(), "gc: {}", text(&gc.stderr));
    let o = wait_output(&mut child);
    assert!(!o.status.success(), "run was stopped");
    assert!(text(&o.stderr).contains("SIGTERM"), "{}", text(&o.stderr));
    h.assert_clean("rm during boot");
}

/// A corrupted record is listed as unreadable, makes `gc` fail, is refused by `rm`, and
/// `rm --force` removes what can be found: processes, taps, the CNI attachment, the
/// namespace, then the record.
#[test]
fn corrupted_record_is_shown_reported_and_removed_by_force() {
    let h = Host::production("corrupt");
    h.write_conflist(&[]);
    let id = h.new_id("corrupt");
    h.run_ok(&id, &[]);
    let state = h.state().join(&id).join("sandbox.json");
    std::fs::write(&state, r#"{"id": 5, garbage"#).unwrap();

    let st = status_of(&h, &id);
    assert!(st.starts_with("unreadable: "), "ps: {st}");
    let o = h.sandnet(&["gc"]);
    assert!(!o.status.success(), "gc must report it");
    assert!(text(&o.stderr).contains(&id), "{}", text(&o.stderr));
    let o = h.sandnet(&["rm", &id]);
    assert!(!o.status.success(), "rm without --force must refuse");
    assert!(text(&o.stderr).contains("--force"), "{}", text(&o.stderr));
    assert!(state.exists());

    let o = h.sandnet(&["rm", "--force", &id]);
    assert!(o.status.success(), "rm --force: {}", text(&o.stderr));
    h.assert_clean("rm --force of an unreadable record");
}
