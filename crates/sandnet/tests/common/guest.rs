//! What the guest-booting CLI tests share: a `sandnet` with its own state directory
//! ([`Env`]), a sandbox removed on drop ([`Sandbox`], at most two guests at a time per
//! test binary) and pings in both directions.
#![allow(dead_code)]

use sandnet_testkit::{pids_mentioning, unique, Cli, TestNs};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Condvar, Mutex};

/// At most this many guests of this test binary boot at the same time.
const MAX_GUESTS: usize = 2;

static GUESTS: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

/// A slot for one guest; released on drop (also when the test panics).
pub struct GuestSlot;

impl GuestSlot {
    pub fn take() -> GuestSlot {
        let (m, cv) = &GUESTS;
        let mut n = m.lock().unwrap_or_else(|e| e.into_inner());
        while *n >= MAX_GUESTS {
            n = cv.wait(n).unwrap_or_else(|e| e.into_inner());
        }
        *n += 1;
        GuestSlot
    }
}

impl Drop for GuestSlot {
    fn drop(&mut self) {
        let (m, cv) = &GUESTS;
        let mut n = m.lock().unwrap_or_else(|e| e.into_inner());
        *n -= 1;
        cv.notify_one();
    }
}

/// `sandnet` with a state directory and configuration of this test's own.
pub struct Env(pub Cli);

impl std::ops::Deref for Env {
    type Target = Cli;

    fn deref(&self) -> &Cli {
        &self.0
    }
}

impl Env {
    pub fn new(tag: &str) -> Env {
        Env(Cli::new(env!("CARGO_BIN_EXE_sandnet"), tag))
    }

    pub fn sandnet(&self, args: &[&str]) -> Output {
        self.run(args)
    }

    /// Pids of every process whose command line names this state directory (supervisors
    /// run with `--state-dir`, QEMU with sockets under it).
    pub fn processes(&self) -> Vec<u32> {
        pids_mentioning(&self.state.display().to_string())
            .into_iter()
            .map(|(pid, _)| pid)
            .collect()
    }

    /// `sandnet ps --json` entry of `id`.
    pub fn ps_entry(&self, id: &str) -> Option<Value> {
        let v = self.ok_json(&["ps", "--json"]);
        v.as_array()?.iter().find(|e| e["id"] == id).cloned()
    }
}

/// One sandbox: removed with `sandnet rm --force` on drop, and whatever process of this
/// state directory survives that is killed by pid (also when the test panics).
pub struct Sandbox<'a> {
    pub env: &'a Env,
    pub id: String,
    _slot: GuestSlot,
}

impl<'a> Sandbox<'a> {
    /// A sandbox started by other means, removed like the others on drop.
    pub fn adopt(env: &'a Env, id: &str) -> Sandbox<'a> {
        Sandbox {
            env,
            id: id.to_string(),
            _slot: GuestSlot::take(),
        }
    }

    /// `sandnet run --json --name <unique> --netns NS EXTRA…`; the guard exists before
    /// `run` starts, so a failing or hanging run is cleaned up too.
    pub fn run(env: &'a Env, tag: &str, netns: &str, extra: &[&str]) -> (Sandbox<'a>, Value) {
        Sandbox::run_with(env, tag, netns, extra, &[])
    }

    /// As [`Sandbox::run`], with extra environment variables for `run` (and so its
    /// supervisor).
    pub fn run_with(
        env: &'a Env,
        tag: &str,
        netns: &str,
        extra: &[&str],
        vars: &[(&str, &str)],
    ) -> (Sandbox<'a>, Value) {
        let sb = Sandbox {
            env,
            id: unique(tag),
            _slot: GuestSlot::take(),
        };
        let mut args = vec!["run", "--json", "--name", &sb.id, "--netns", netns];
        args.extend_from_slice(extra);
        let mut c = env.cmd(&args);
        c.envs(vars.iter().copied());
        let o = c.output().expect("spawn sandnet run");
        assert!(
            o.status.success(),
            "sandnet {args:?} failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        let out = serde_json::from_slice(&o.stdout).expect("run --json");
        (sb, out)
    }

    pub fn exec(&self, cmd: &[&str]) -> Output {
        let mut args = vec!["exec", &self.id, "--"];
        args.extend_from_slice(cmd);
        self.env.sandnet(&args)
    }

    /// Asserts that the guest runs `cmd` successfully.
    pub fn exec_ok(&self, cmd: &[&str]) -> String {
        let o = self.exec(cmd);
        assert!(
            o.status.success(),
            "in the guest, {cmd:?} failed ({}): {}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    pub fn dir(&self) -> PathBuf {
        self.env.state.join(&self.id)
    }
}

impl Drop for Sandbox<'_> {
    fn drop(&mut self) {
        let _ = self.env.sandnet(&["rm", "--force", &self.id]);
        // Only this sandbox's own processes (its QEMU's command line names its directory,
        // its supervisor's its id): others of the same state root, a factory among them,
        // are the test's to check and `Env`'s to sweep.
        let dir = self.dir().display().to_string();
        for (pid, cmd) in pids_mentioning(&self.id) {
            if cmd.contains(&dir) || cmd.contains("__supervise") {
                // SAFETY: plain kill(2) of a process of this test's sandbox.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for pid in self.processes() {
            // SAFETY: plain kill(2) of a process this test started (its command line
            // names the test's own state directory).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

/// Pings `addr` from inside `ns` (a few tries: the first ARP round trip through a TCG
/// guest can be slow).
pub fn ping_from(ns: &TestNs, addr: &str) {
    let mut last = String::new();
    for _ in 0..5 {
        let o = Command::new("ip")
            .args(["netns", "exec", &ns.name, "ping", "-c1", "-W3", addr])
            .output()
            .unwrap();
        if o.status.success() {
            return;
        }
        last = String::from_utf8_lossy(&o.stdout).into_owned();
    }
    panic!("{} cannot ping {addr}: {last}", ns.name);
}

/// Pings `addr` from the guest (a few tries, as above).
pub fn guest_ping(sb: &Sandbox<'_>, addr: &str) {
    let mut last = None;
    for _ in 0..5 {
        let o = sb.exec(&["ping", "-c1", "-W3", addr]);
        if o.status.success() {
            return;
        }
        last = Some(o);
    }
    let o = last.unwrap();
    panic!(
        "the guest cannot ping {addr} ({}): {}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Makes every guest this test binary boots run the test-only agent with the `hostile`
/// feature (`$SANDNET_AGENT`, inherited by `sandnet` and its supervisors), in whatever
/// mode the kernel command line asks (none: it serves as the shipped one does, plus the
/// raw-frame sender `/init __send-frame`). `scripts/build-agent` builds it.
pub fn use_hostile_agent() {
    static AGENT: std::sync::Once = std::sync::Once::new();
    AGENT.call_once(|| {
        // target/debug/sandnet → target/x86_64-unknown-linux-gnu/release/
        let agent = std::path::Path::new(env!("CARGO_BIN_EXE_sandnet"))
            .ancestors()
            .nth(2)
            .expect("the target directory")
            .join("x86_64-unknown-linux-gnu/release/sandnet-agent-hostile");
        assert!(
            agent.is_file(),
            "{} is missing: build it with scripts/build-agent",
            agent.display()
        );
        // The same value for every test of the binary.
        std::env::set_var("SANDNET_AGENT", &agent);
    });
}
