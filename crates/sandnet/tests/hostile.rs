//! End to end with a hostile guest: the real `sandnet` binary boots a real guest (TCG here)
//! whose agent runs `--hostile names` (interface names and route devices full of terminal
//! escapes), and the guest floods its serial console through `sandnet exec`. `run` and
//! `inspect` print the names escaped, `inspect` still answers promptly during the flood, the
//! console stays under its cap, and `rm` leaves nothing behind. Needs root, the guest kernel
//! and the test-only static agent with the `hostile` feature (`scripts/build-agent` builds
//! it as `sandnet-agent-hostile`; the shipped `sandnet-agent` has no hostile mode).

#[path = "common/guest.rs"]
mod guest;

use sandnet_testkit::{pids_mentioning, unique, Cli, PodPair};
use std::path::Path;
use std::time::{Duration, Instant};

/// sandnet's cap per console file (`DEFAULT_CONSOLE_CAP`); console.log.1 holds as much again.
const CAP: u64 = 1024 * 1024;

fn len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

struct Removed<'a>(&'a Cli, String);

impl Drop for Removed<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["rm", "--force", &self.1]);
        for (pid, _) in pids_mentioning(&self.0.state.display().to_string()) {
            // SAFETY: plain kill(2) of a process this test started (its command line names
            // the test's own state directory).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

/// A `sandnet` command line whose guests run the hostile agent (`$SANDNET_AGENT`).
fn hostile_cli(tag: &str) -> Cli {
    guest::use_hostile_agent();
    Cli::new(env!("CARGO_BIN_EXE_sandnet"), tag)
}

fn has_raw_escape(b: &[u8]) -> bool {
    b.iter().any(|&c| c == 0x1b || c == 0x07)
}

#[test]
fn hostile_guest_names_print_escaped_and_a_console_flood_stays_capped() {
    let p = PodPair::new("e2ehostile");
    let env = hostile_cli("e2ehostile");
    // Words after `--` on the kernel command line are the agent's (PID 1's) arguments.
    std::fs::write(
        &env.config,
        "[hypervisor.qemu]\nkernel_params = \"-- --hostile names\"\n",
    )
    .expect("write config");
    let id = unique("hostile");
    let guard = Removed(&env, id.clone());

    let o = env.ok(&["run", "--name", &id, "--netns", &p.pod.name]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        !has_raw_escape(&o.stdout),
        "run printed raw escapes: {out:?}"
    );
    assert!(out.contains("\\u{1b}[2Jeth0\\u{7}"), "run: {out}");

    let o = env.ok(&["inspect", &id]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        !has_raw_escape(&o.stdout),
        "inspect printed raw escapes: {text:?}"
    );
    assert!(text.contains("dev \\u{1b}[2Jeth0\\u{7}"), "inspect: {text}");
    // JSON keeps the real name, escaped by JSON itself.
    let j = env.ok_json(&["inspect", "--json", &id]);
    assert_eq!(j["interfaces"][0]["name"], "\x1b[2Jeth0\x07");

    // The guest floods its serial console with 3 MiB while inspect keeps answering.
    let console = env.state.join(&id).join("console.log");
    let old = console.with_file_name("console.log.1");
    let flood = {
        let mut c = env.cmd(&[
            "exec",
            &id,
            "--",
            "sh",
            "-c",
            "dd if=/dev/zero bs=65536 count=48 2>/dev/null | tr '\\0' x > /dev/ttyS0; echo flooded",
        ]);
        c.stdout(std::process::Stdio::piped());
        c.spawn().expect("spawn exec")
    };
    let t0 = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut peak = 0;
    while t0.elapsed() < Duration::from_secs(8) {
        let t = Instant::now();
        env.ok(&["inspect", &id]);
        slowest = slowest.max(t.elapsed());
        peak = peak.max(len(&console) + len(&old));
        std::thread::sleep(Duration::from_millis(300));
    }
    let o = flood.wait_with_output().expect("exec");
    assert!(o.status.success(), "flood exec failed");
    assert!(String::from_utf8_lossy(&o.stdout).contains("flooded"));
    peak = peak.max(len(&console) + len(&old));
    eprintln!(
        "flood done after {:?}; console peak {peak} bytes; slowest inspect {slowest:?}",
        t0.elapsed()
    );
    assert!(
        peak <= 2 * CAP,
        "console used {peak} bytes (cap {CAP} per file)"
    );
    assert!(
        len(&old) > 0,
        "the flood should have rotated the console log"
    );
    assert!(
        slowest < Duration::from_secs(5),
        "inspect took {slowest:?} during the flood"
    );

    env.ok(&["rm", &id]);
    assert!(!env.state.join(&id).exists(), "state directory left");
    assert!(
        pids_mentioning(&env.state.display().to_string()).is_empty(),
        "processes left"
    );
    drop(guard);
}

/// An agent that answers every call with bytes that are not protobuf: `run` gives up with
/// one line instead of waiting out the boot timeout, and leaves nothing behind.
#[test]
fn garbage_answering_agent_fails_run_with_one_line_and_leaves_nothing() {
    let p = PodPair::new("e2egarbage");
    let env = hostile_cli("e2egarbage");
    std::fs::write(
        &env.config,
        "[hypervisor.qemu]\nkernel_params = \"-- --hostile garbage\"\n",
    )
    .expect("write config");
    let id = unique("garbage");
    let guard = Removed(&env, id.clone());
    let t0 = Instant::now();
    let o = env.run(&["run", "--name", &id, "--netns", &p.pod.name]);
    let took = t0.elapsed();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    eprintln!("run failed after {took:?}: {err}");
    assert!(!o.status.success(), "run succeeded against a garbage agent");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("sandnet:")).collect();
    assert_eq!(lines.len(), 1, "one error line: {err:?}");
    assert!(lines[0].contains("wait for the guest agent"), "{err}");
    assert!(!has_raw_escape(&o.stderr), "raw escapes on stderr: {err:?}");
    assert!(took < Duration::from_secs(60), "run took {took:?}");

    let _ = env.run(&["rm", &id]);
    assert!(!env.state.join(&id).exists(), "state directory left");
    assert!(
        pids_mentioning(&env.state.display().to_string()).is_empty(),
        "processes left"
    );
    let links = p.pod.link_names();
    assert!(
        !links.iter().any(|n| n.starts_with("sntap")),
        "tap left in the pod: {links:?}"
    );
    drop(guard);
}
