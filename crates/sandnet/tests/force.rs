//! Removal that converges (issue 19): a pod namespace that outlives `ip netns exec`'s
//! mount namespace, a stale `/run/netns` file taken for a gone namespace, and
//! `rm --force` ending with the record gone whatever is left — one line per step it could
//! not undo, non-zero only while something is still held on the host. Real `sandnet`,
//! Debian's CNI plugins, real guests.

#[path = "common/host.rs"]
mod host;

use host::*;
use sandnet_testkit::pids_mentioning;
use std::path::Path;
use std::time::Duration;

fn bin_dirs(h: &Host) -> Vec<String> {
    vec![
        "--cni-bin-dir".into(),
        h.bin().display().to_string(),
        "--cni-bin-dir".into(),
        DEBIAN_BIN.into(),
    ]
}

/// Runs a sandbox with this host's own bin dir searched before Debian's (so that a
/// `bridge` script put there later shadows the real one); returns its guest address.
fn run_shadowable(h: &Host, id: &str) -> String {
    let bins = bin_dirs(h);
    let bins: Vec<&str> = bins.iter().map(|s| s.as_str()).collect();
    let v = h.run_ok(id, &bins);
    h.guest_ip(&v)
}

/// Makes the `bridge` plugin fail DEL with a CNI error (ADD and the rest go to Debian's).
fn break_bridge(h: &Host) {
    h.write_plugin(
        "bridge",
        &format!(
            "if [ \"$CNI_COMMAND\" = DEL ]; then\n\
             echo '{{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"injected bridge DEL failure\"}}'\n\
             exit 1\nfi\nexec {DEBIAN_BIN}/bridge\n"
        ),
    );
}

fn restore_bridge(h: &Host) {
    std::fs::remove_file(h.bin().join("bridge")).unwrap();
}

fn netns_file(id: &str) -> String {
    format!("/run/netns/sandnet-{id}")
}

/// Whether `path` is a mount point in this (the test's, the host's) mount namespace.
fn mounted_here(path: &str) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(path))
}

fn reservation_of(h: &Host, ip: &str) -> bool {
    h.ipam().join(&h.net).join(ip).exists()
}

fn cache_entries(h: &Host) -> Vec<String> {
    Host::files_under(&h.cache())
}

fn kill_sandbox_processes(h: &Host, id: &str) {
    let st = h.state_of(id).expect("record");
    for k in ["supervisor_pid", "qemu_pid"] {
        if let Some(pid) = st[k].as_u64() {
            kill9(pid as u32);
        }
    }
    wait_until(
        "the sandbox's processes gone",
        Duration::from_secs(10),
        || {
            pids_mentioning(&format!("{}/", h.state().join(id).display())).is_empty()
                && pids_mentioning(&format!("__supervise {id}")).is_empty()
        },
    );
}

/// The reproduction, step by step, under `ip netns exec H` (a private mount
/// namespace per command). The pod namespace's mount outlives the `run`'s mount
/// namespace, so the last `rm` finds it and finishes; before, it failed for good with
/// "unknown FS magic" on the file the dead mount left.
#[test]
fn ip_netns_exec_run_failed_rm_gc_then_rm_converges() {
    let h = Host::new("repro");
    assert!(!h.production, "the reproduction runs under `ip netns exec`");
    h.write_conflist(&[]);
    let id = h.new_id("repro");
    let ip = run_shadowable(&h, &id);
    // Seen by the host, not only by the (now gone) mount namespace of `run`.
    let seen_by_host = mounted_here(&netns_file(&id));

    break_bridge(&h);
    let o = h.sandnet(&["rm", &id]);
    assert!(!o.status.success(), "rm with a failing bridge must fail");
    assert!(
        text(&o.stderr).contains("injected bridge DEL failure"),
        "{}",
        text(&o.stderr)
    );
    assert!(h.state_of(&id).is_some(), "the record must be kept");
    // The supervisor answers, then exits (and its mount namespace with it).
    wait_until("the supervisor gone", Duration::from_secs(10), || {
        pids_mentioning(&format!("__supervise {id}")).is_empty()
    });
    let g = h.sandnet(&["gc"]);
    assert!(!g.status.success(), "gc with a failing bridge must fail");
    restore_bridge(&h);

    let o = h.sandnet(&["rm", &id]);
    assert!(
        o.status.success(),
        "rm after the plugin is back: {}",
        text(&o.stderr)
    );
    assert!(!reservation_of(&h, &ip), "reservation of {ip} left");
    let g = h.sandnet(&["gc"]);
    assert!(g.status.success(), "gc: {}", text(&g.stderr));
    h.assert_clean("the reproduction");
    assert!(
        seen_by_host,
        "the pod namespace was not mounted in the host's mount namespace"
    );
}

/// A `/run/netns` file whose mount died (what a mount namespace's end leaves) is a gone
/// namespace: DEL runs without it, the plugins release what they hold, the file goes.
#[test]
fn stale_netns_file_is_a_gone_namespace() {
    let h = Host::production("stale");
    h.write_conflist(&[]);
    let id = h.new_id("stale");
    let ip = run_shadowable(&h, &id);
    kill_sandbox_processes(&h, &id);
    let file = netns_file(&id);
    // A killed process closes its files only after it has left /proc's command lines, and
    // its open namespace fd keeps the mount busy until then.
    wait_until("the netns mount unmounted", Duration::from_secs(10), || {
        sh("umount", &[&file]).status.success()
    });
    assert!(Path::new(&file).is_file(), "a plain file is left at {file}");
    assert!(reservation_of(&h, &ip));

    let o = h.sandnet(&["rm", &id]);
    assert!(
        o.status.success(),
        "rm over a stale namespace file: {}",
        text(&o.stderr)
    );
    assert!(!Path::new(&file).exists(), "{file} left");
    assert!(h.state_of(&id).is_none(), "record left");
    assert!(!reservation_of(&h, &ip), "reservation of {ip} left");
    assert!(cache_entries(&h).is_empty(), "{:?}", cache_entries(&h));
    // Debian's bridge (1.1.1) finds the addresses whose masquerade rules it removes on the
    // pod's link: without the namespace it cannot, and those rules stay in H.
    let left = h.settled_leftovers(|l| !l.starts_with("iptables -t nat"));
    assert!(left.is_empty(), "left behind:\n  {}", left.join("\n  "));
}

/// The host namespace H the plugins ran in is deleted after a failed `rm`: `rm --force`
/// releases the address (host-local runs anywhere) and forgets the attachment without
/// running `bridge` elsewhere, says what it could not undo in one line, exits 0 (nothing
/// is held: what bridge made went with H), and `gc` is clean afterwards.
#[test]
fn rm_force_after_the_host_namespace_is_gone() {
    let h = Host::production("hostgone");
    h.write_conflist(&[]);
    let id = h.new_id("hostgone");
    let ip = run_shadowable(&h, &id);
    break_bridge(&h);
    let o = h.sandnet(&["rm", &id]);
    assert!(!o.status.success(), "rm with a failing bridge must fail");
    assert!(h.state_of(&id).is_some());

    // H goes; a new namespace of the same name takes its place (where sandnet runs now).
    sh_ok("ip", &["netns", "del", &h.ns]);
    sh_ok("ip", &["netns", "add", &h.ns]);
    h.exec(&["ip", "link", "set", "lo", "up"]);

    let o = h.sandnet(&["rm", "--force", &id]);
    let err = text(&o.stderr);
    eprintln!("rm --force said: {err}");
    assert!(o.status.success(), "rm --force: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("not undone")).collect();
    assert_eq!(lines.len(), 1, "one line per step not undone: {err}");
    for needle in ["not undone", "CNI DEL", "is gone", "host-local", &id] {
        assert!(lines[0].contains(needle), "{err:?} should name {needle:?}");
    }
    assert!(
        !err.contains("injected"),
        "bridge must not run outside H: {err}"
    );
    assert!(h.state_of(&id).is_none(), "record left");
    assert!(!reservation_of(&h, &ip), "reservation of {ip} left");
    assert!(cache_entries(&h).is_empty(), "{:?}", cache_entries(&h));
    let g = h.sandnet(&["gc"]);
    assert!(g.status.success(), "gc: {}", text(&g.stderr));
    restore_bridge(&h);
    h.assert_clean("rm --force after H is gone");
}

/// `rm --force` with H alive and the bridge failing: the record goes and the address is
/// released (host-local, in H), but what bridge made in H (its masquerade rules) is
/// still held, so it says so and exits non-zero.
#[test]
fn rm_force_with_a_failing_plugin_ends_without_the_record_and_says_what_is_held() {
    let h = Host::production("forcefail");
    h.write_conflist(&[]);
    let id = h.new_id("forcefail");
    let ip = run_shadowable(&h, &id);
    break_bridge(&h);
    let o = h.sandnet(&["rm", "--force", &id]);
    let err = text(&o.stderr);
    eprintln!("rm --force said ({}): {err}", o.status);
    assert!(!o.status.success(), "something is held: {err}");
    let not_undone: Vec<&str> = err.lines().filter(|l| l.contains("not undone")).collect();
    assert_eq!(not_undone.len(), 1, "{err}");
    for needle in [
        "CNI DEL",
        "injected bridge DEL failure",
        "released its addresses",
    ] {
        assert!(
            not_undone[0].contains(needle),
            "{err:?} should name {needle:?}"
        );
    }
    assert!(h.state_of(&id).is_none(), "record left");
    assert!(!Path::new(&netns_file(&id)).exists(), "namespace left");
    assert!(!reservation_of(&h, &ip), "reservation of {ip} left");
    assert!(cache_entries(&h).is_empty(), "{:?}", cache_entries(&h));
    let g = h.sandnet(&["gc"]);
    assert!(g.status.success(), "gc: {}", text(&g.stderr));
    restore_bridge(&h);
}
