//! The accelerator `sandnet run` picks, in all four cases, with the real binary and real
//! guests: no `/dev/kvm` (a private mount namespace whose `/dev` lacks it), KVM as this
//! machine really has it, a QEMU that aborts under KVM and one that hangs under KVM (wrapper
//! scripts set as `[hypervisor.qemu] path` that misbehave only when asked for KVM and exec the
//! real QEMU otherwise). Each test has its own state root, so verdicts do not leak between
//! them. Needs root, the static agent and the guest kernel, as `scripts/test` provides.

use sandnet_testkit::{pids_mentioning, unique, Cli, PodPair, TempDir};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const REAL_QEMU: &str = "/usr/bin/qemu-system-x86_64";

/// `sandnet` with its own state root and configuration; every sandbox it ran is removed and
/// every process naming its state root killed on drop.
/// `sandnet_vm::accel::PROBE_ENV`: skip the /dev/kvm check and probe, go to the trial.
const PROBE_ENV: &str = "SANDNET_KVM_PROBE";

struct Env {
    cli: Cli,
    ids: std::sync::Mutex<Vec<String>>,
    /// Run with the probe-skipping knob (the KVM trial happens on any machine).
    force_trial: bool,
}

impl Env {
    fn new(tag: &str, config: &str) -> Env {
        let cli = Cli::new(env!("CARGO_BIN_EXE_sandnet"), tag);
        std::fs::write(&cli.config, config).unwrap();
        Env {
            cli,
            ids: Default::default(),
            force_trial: false,
        }
    }

    /// An `Env` whose runs go to the KVM trial whatever this machine's /dev/kvm is: for
    /// QEMU wrappers that fake KVM failing (they never run a real QEMU under KVM).
    fn trial_always(tag: &str, config: &str) -> Env {
        let mut env = Env::new(tag, config);
        env.force_trial = true;
        env
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.cli.cmd(args);
        c.env_remove("SANDNET_ACCEL");
        if self.force_trial {
            c.env(PROBE_ENV, "pass");
        } else {
            c.env_remove(PROBE_ENV);
        }
        c
    }

    fn sandnet(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("spawn sandnet")
    }

    /// `sandnet run --json` in `pod`, through `wrap` (a command prefix) when given.
    fn run_in(&self, pod: &PodPair, wrap: &[&str]) -> Result<Value, Output> {
        let id = unique("acc");
        self.ids.lock().unwrap().push(id.clone());
        let args = ["run", "--json", "--name", &id, "--netns", &pod.pod.name];
        let o = if wrap.is_empty() {
            self.sandnet(&args)
        } else {
            let inner = self.cmd(&args);
            let mut c = Command::new(wrap[0]);
            c.args(&wrap[1..]).arg(inner.get_program()).args(args);
            for (k, v) in inner.get_envs() {
                match v {
                    Some(v) => c.env(k, v),
                    None => c.env_remove(k),
                };
            }
            c.output().expect("spawn wrapped sandnet")
        };
        if !o.status.success() {
            return Err(o);
        }
        Ok(serde_json::from_slice(&o.stdout).expect("run --json"))
    }

    fn run_ok(&self, pod: &PodPair) -> Value {
        self.run_in(pod, &[])
            .unwrap_or_else(|o| panic!("run failed: {}", text(&o.stderr)))
    }

    fn exec(&self, id: &str, cmd: &[&str]) -> String {
        let mut args = vec!["exec", id, "--"];
        args.extend_from_slice(cmd);
        let o = self.sandnet(&args);
        assert!(o.status.success(), "exec {cmd:?}: {}", text(&o.stderr));
        text(&o.stdout)
    }

    fn rm(&self, id: &str) {
        let o = self.sandnet(&["rm", id]);
        assert!(o.status.success(), "rm {id}: {}", text(&o.stderr));
    }

    fn state(&self) -> &Path {
        &self.cli.state
    }

    /// Processes whose command line names the state root (supervisors, QEMU).
    fn processes(&self) -> Vec<(u32, String)> {
        pids_mentioning(&self.state().display().to_string())
    }

    /// The verdict files under `<state>/accel`.
    fn verdicts(&self) -> Vec<Value> {
        std::fs::read_dir(self.state().join("accel"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                assert!(name.ends_with(".json"), "stray file {name} in the cache");
                serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap()
            })
            .collect()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for id in self.ids.lock().unwrap().iter() {
            let _ = self.sandnet(&["rm", "--force", id]);
        }
        for (pid, _) in self.processes() {
            // SAFETY: kill(2) of a process of this test (it names the test's state root).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn s(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or_default().to_string()
}

fn have_kvm() -> bool {
    Path::new("/dev/kvm").exists()
}

/// Whether the guest runs under KVM (its kernel offers the KVM paravirtual clock).
fn guest_on_kvm(env: &Env, id: &str) -> bool {
    env.exec(
        id,
        &[
            "cat",
            "/sys/devices/system/clocksource/clocksource0/available_clocksource",
        ],
    )
    .contains("kvm-clock")
}

/// `run`, `ps` and `inspect` agree on the accelerator and its reason.
fn assert_reported(env: &Env, out: &Value) -> (String, String) {
    let id = s(out, "id");
    let (accel, reason) = (s(out, "accel"), s(out, "accel_reason"));
    assert!(accel == "kvm" || accel == "tcg", "{out}");
    assert!(!reason.is_empty() && !reason.contains('\n'), "{reason:?}");
    let ps: Value = serde_json::from_slice(&env.sandnet(&["ps", "--json"]).stdout).unwrap();
    let e = ps
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == id.as_str())
        .cloned()
        .expect("in ps");
    assert_eq!(
        (s(&e, "accel"), s(&e, "accel_reason")),
        (accel.clone(), reason.clone())
    );
    let ps_text = text(&env.sandnet(&["ps"]).stdout);
    assert!(
        ps_text.lines().next().unwrap_or_default().contains("ACCEL"),
        "{ps_text}"
    );
    let line = ps_text.lines().find(|l| l.contains(&id)).expect("ps line");
    assert!(line.contains(&format!(" {accel} ")), "{line}");
    let o = env.sandnet(&["inspect", &id, "--json"]);
    let i: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (s(&i, "accel"), s(&i, "accel_reason")),
        (accel.clone(), reason.clone())
    );
    let o = env.sandnet(&["inspect", &id]);
    assert!(text(&o.stdout).contains(&format!("accel        {accel}")));
    (accel, reason)
}

/// Removes `id` and checks that nothing of the state root runs any more.
fn rm_clean(env: &Env, id: &str) {
    env.rm(id);
    let left = env.processes();
    assert!(left.is_empty(), "left running: {left:?}");
}

/// A QEMU wrapper: logs `kvm PID` or `tcg PID` to `log`, runs `on_kvm` when its arguments ask
/// for KVM, and execs the real QEMU otherwise.
fn wrapper(dir: &Path, on_kvm: &str) -> (PathBuf, PathBuf) {
    let path = dir.join("qemu-wrapper");
    let log = dir.join("invocations.log");
    let script = format!(
        "#!/bin/sh\nulimit -c 0\ncase \" $* \" in\n  *\" -accel kvm \"*)\n    echo \"kvm $$\" >> {log}\n    {on_kvm}\n    ;;\nesac\necho \"tcg $$\" >> {log}\nexec {REAL_QEMU} \"$@\"\n",
        log = log.display()
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    (path, log)
}

/// Kills every wrapper logged in `log` on drop (a wrapper that `exec`s `sleep` no longer
/// names the test's directory, so nothing else would find it when an assertion fails).
struct ReapLogged(PathBuf);

impl Drop for ReapLogged {
    fn drop(&mut self) {
        for (_, pid) in invocations(&self.0) {
            // Still the wrapper that became `sleep` (not a reused pid).
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmd).starts_with("sleep\u{0}600") {
                // SAFETY: kill(2) of a wrapper process this test's QEMU path started.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
    }
}

fn invocations(log: &Path) -> Vec<(String, u32)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (what, pid) = l.split_once(' ')?;
            Some((what.to_string(), pid.parse().ok()?))
        })
        .collect()
}

fn qemu_config(path: &Path) -> String {
    format!(
        "[hypervisor.qemu]\npath = \"{}\"\naccel = \"auto\"\n",
        path.display()
    )
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn without_dev_kvm_it_is_tcg() {
    let env = Env::new("acc-nokvm", "[hypervisor.qemu]\naccel = \"auto\"\n");
    let pod = PodPair::new("acc-nokvm");
    let scratch = TempDir::new("acc-nokvm-dev");
    let newdev = scratch.join("dev");
    std::fs::create_dir_all(&newdev).unwrap();
    // A /dev with what sandnet and QEMU need, but no kvm: bind-mounted nodes on a tmpfs,
    // moved over /dev in a private mount namespace that only this run (and the supervisor it
    // starts) lives in.
    let setup = format!(
        "set -e; d={d}; mount -t tmpfs sandnet-test-dev $d; \
         for n in null zero full random urandom tty; do touch $d/$n; mount --bind /dev/$n $d/$n; done; \
         mkdir $d/net; touch $d/net/tun; mount --bind /dev/net/tun $d/net/tun; \
         ln -s /proc/self/fd $d/fd; mount --move $d /dev; test ! -e /dev/kvm; exec \"$@\"",
        d = newdev.display()
    );
    let wrap = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &setup,
        "sh",
    ];
    let out = env
        .run_in(&pod, &wrap)
        .unwrap_or_else(|o| panic!("run without /dev/kvm: {}", text(&o.stderr)));
    let (accel, reason) = assert_reported(&env, &out);
    assert_eq!(accel, "tcg");
    assert!(reason.contains("/dev/kvm"), "{reason}");
    assert!(!guest_on_kvm(&env, &s(&out, "id")));
    rm_clean(&env, &s(&out, "id"));
    assert!(
        env.verdicts().is_empty(),
        "nothing to remember without /dev/kvm"
    );
}

#[test]
fn kvm_as_this_machine_has_it() {
    let env = Env::new("acc-real", "[hypervisor.qemu]\naccel = \"auto\"\n");
    let pod = PodPair::new("acc-real");
    let out = env.run_ok(&pod);
    let id = s(&out, "id");
    let (accel, reason) = assert_reported(&env, &out);
    eprintln!("auto: {accel} ({reason})");
    let on_kvm = guest_on_kvm(&env, &id);
    rm_clean(&env, &id);
    let forced = Env::new("acc-real-kvm", "[hypervisor.qemu]\naccel = \"kvm\"\n");
    if accel == "kvm" {
        assert!(on_kvm, "verdict kvm, yet the guest has no kvm-clock");
        let out = forced.run_ok(&pod);
        assert_eq!(s(&out, "accel"), "kvm");
        assert!(s(&out, "accel_reason").contains("accel = \"kvm\""), "{out}");
        assert!(guest_on_kvm(&forced, &s(&out, "id")));
        rm_clean(&forced, &s(&out, "id"));
    } else {
        assert!(!on_kvm, "verdict tcg, yet the guest runs on kvm-clock");
        assert!(
            ["KVM failed", "/dev/kvm", "KVM probe", "KVM test vCPU"]
                .iter()
                .any(|w| reason.contains(w)),
            "the reason must say why KVM is not used: {reason}"
        );
        if have_kvm() {
            // Forced KVM never falls back: a clear one-line error and nothing left.
            let o = forced
                .run_in(&pod, &[])
                .expect_err("forced kvm must fail here");
            let err = text(&o.stderr);
            assert_eq!(err.trim_end().lines().count(), 1, "{err}");
            assert!(err.contains("QEMU"), "{err}");
            let left = forced.processes();
            assert!(left.is_empty(), "left running: {left:?}");
            let ps: Value =
                serde_json::from_slice(&forced.sandnet(&["ps", "--json"]).stdout).unwrap();
            assert_eq!(ps, Value::Array(vec![]));
        }
    }
}

#[test]
fn qemu_aborting_under_kvm_falls_back_once() {
    let scratch = TempDir::new("acc-abort");
    let (qemu, log) = wrapper(&scratch, "kill -ABRT $$");
    let env = Env::trial_always("acc-abort", &qemu_config(&qemu));
    let pod = PodPair::new("acc-abort");
    let out = env.run_ok(&pod);
    let id = s(&out, "id");
    let (accel, reason) = assert_reported(&env, &out);
    assert_eq!(accel, "tcg");
    assert!(reason.contains("KVM failed (QEMU aborted"), "{reason}");
    let calls = invocations(&log);
    assert_eq!(
        calls.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(),
        ["kvm", "tcg"],
        "{calls:?}"
    );
    // One QEMU runs (the TCG one), and the network works through the re-used taps.
    let qemus: Vec<_> = env
        .processes()
        .into_iter()
        .filter(|(_, c)| !c.contains("__supervise"))
        .collect();
    assert_eq!(qemus.len(), 1, "{qemus:?}");
    assert!(qemus[0].1.contains("-accel tcg"), "{qemus:?}");
    env.exec(&id, &["ping", "-c1", "-W5", "172.19.0.1"]);
    let o = Command::new("ip")
        .args([
            "netns",
            "exec",
            &pod.host.name,
            "ping",
            "-c1",
            "-W5",
            "172.19.0.5",
        ])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "host cannot ping the guest: {}",
        text(&o.stdout)
    );
    let v = env.verdicts();
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(s(&v[0], "accel"), "tcg");
    assert!(s(&v[0], "reason").contains("aborted"), "{v:?}");
    rm_clean(&env, &id);

    // The next sandbox of this boot does not try KVM again.
    let out = env.run_ok(&pod);
    let (accel, reason) = assert_reported(&env, &out);
    assert_eq!(accel, "tcg");
    assert!(reason.contains("remembered"), "{reason}");
    assert_eq!(invocations(&log).len(), 3, "{:?}", invocations(&log));
    assert_eq!(invocations(&log)[2].0, "tcg");
    rm_clean(&env, &s(&out, "id"));
}

#[test]
fn concurrent_runs_try_kvm_once() {
    let scratch = TempDir::new("acc-conc");
    let (qemu, log) = wrapper(&scratch, "sleep 1; kill -ABRT $$");
    let env = Env::trial_always("acc-conc", &qemu_config(&qemu));
    let pods = [PodPair::new("acc-conc1"), PodPair::new("acc-conc2")];
    let outs: Vec<Value> = std::thread::scope(|sc| {
        let hs: Vec<_> = pods.iter().map(|p| sc.spawn(|| env.run_ok(p))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for o in &outs {
        assert_eq!(s(o, "accel"), "tcg", "{o}");
    }
    let kvm_calls = invocations(&log)
        .into_iter()
        .filter(|c| c.0 == "kvm")
        .count();
    assert_eq!(kvm_calls, 1, "{:?}", invocations(&log));
    for o in &outs {
        env.rm(&s(o, "id"));
    }
    let left = env.processes();
    assert!(left.is_empty(), "left running: {left:?}");
}

#[test]
fn qemu_hanging_under_kvm_is_killed_and_tcg_used() {
    let scratch = TempDir::new("acc-hang");
    let (qemu, log) = wrapper(&scratch, "exec sleep 600");
    let _reap = ReapLogged(log.clone());
    let env = Env::trial_always("acc-hang", &qemu_config(&qemu));
    let pod = PodPair::new("acc-hang");
    let t0 = Instant::now();
    let out = env.run_ok(&pod);
    let took = t0.elapsed();
    let (accel, reason) = assert_reported(&env, &out);
    assert_eq!(accel, "tcg");
    assert!(reason.contains("no sign of life"), "{reason}");
    let calls = invocations(&log);
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0].0, "kvm");
    assert!(
        !pid_alive(calls[0].1),
        "the sleeping wrapper was left running"
    );
    // The trial gives up after about 10 s; a TCG boot takes seconds more.
    assert!(took < Duration::from_secs(60), "run took {took:?}");
    assert!(
        out["timings"]["total_ms"].as_u64().unwrap() >= 10_000,
        "{out}"
    );
    rm_clean(&env, &s(&out, "id"));
}

#[test]
fn a_bad_accel_is_refused_before_anything_starts() {
    let env = Env::new("acc-bad", "[hypervisor.qemu]\naccel = \"auto\"\n");
    let pod = PodPair::new("acc-bad");
    let args = ["run", "--name", "never", "--netns", &pod.pod.name];
    let o = env
        .cmd(&args)
        .env("SANDNET_ACCEL", "fast")
        .output()
        .unwrap();
    sandnet_testkit::assert_fails_with(&o, &["SANDNET_ACCEL", "\"fast\"", "auto, kvm or tcg"]);
    std::fs::write(&env.cli.config, "[hypervisor.qemu]\naccel = \"fast\"\n").unwrap();
    let o = env.sandnet(&args);
    sandnet_testkit::assert_fails_with(&o, &["hypervisor.qemu.accel", "\"fast\""]);
    assert!(!env.state().join("never").exists());
    assert!(env.processes().is_empty());
}
