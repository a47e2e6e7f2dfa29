//! The "host" a lifecycle test runs sandnet in: a network namespace of its own with its own
//! state dir, CNI conf, cache and host-local data dirs, a bridge and subnet of its own, and a
//! guard that removes whatever a failing test left. [`Host::assert_clean`] checks the host
//! is as it was.
#![allow(dead_code)]

use sandnet_testkit::pids_mentioning;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Debian's plugins.
pub const DEBIAN_BIN: &str = "/usr/lib/cni";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The seed's `10-mynet.conf`, field for field (`../shared/seed/`).
pub const SEED_CONF: &str = r#"{
    "cniVersion": "0.2.0",
    "name": "mynet",
    "type": "bridge",
    "bridge": "cni0",
    "isGateway": true,
    "ipMasq": true,
    "ipam":{
        "type": "host-local",
        "subnet": "172.19.0.0/24",
        "routes":[
            { "dst": "0.0.0.0/0" }
        ]
    }
}"#;

pub fn sh(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

pub fn sh_ok(cmd: &str, args: &[&str]) -> String {
    let o = sh(cmd, args);
    assert!(
        o.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn kill9(pid: u32) {
    // SAFETY: plain syscall.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
}

pub fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A host network namespace with its own sandnet state, CNI conf/cache/IPAM dirs, bridge
/// and subnet. Dropping it removes every sandbox it ran and the namespace.
pub struct Host {
    pub ns: String,
    pub dir: PathBuf,
    pub bridge: String,
    /// Network name (also the host-local data subdirectory).
    pub net: String,
    /// `a.b.c` of the /24.
    pub prefix: String,
    pub ids: Mutex<Vec<String>>,
    pub nat_baseline: String,
    pub filter_baseline: String,
    /// Run sandnet as in production: only the network namespace entered (`nsenter
    /// --net`), in the caller's own mount namespace; otherwise under `ip netns exec`
    /// (which gives it a private mount namespace).
    pub production: bool,
}

impl Host {
    pub fn new(tag: &str) -> Host {
        // SAFETY: plain syscall.
        assert_eq!(unsafe { libc::geteuid() }, 0, "run these tests as root");
        let pid = std::process::id();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let ns = format!("snlc-{tag}-{pid}-{n}");
        let dir = std::env::temp_dir().join(&ns);
        let _ = std::fs::remove_dir_all(&dir);
        for d in ["state", "conf", "cache", "ipam", "bin"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let _ = sh("ip", &["netns", "del", &ns]);
        sh_ok("ip", &["netns", "add", &ns]);
        let mut h = Host {
            bridge: format!("sb{pid:x}x{n}"),
            net: format!("lc{n}"),
            prefix: format!("10.{}.{}", 100 + n % 100, pid % 250),
            ns,
            dir,
            ids: Mutex::new(vec![]),
            nat_baseline: String::new(),
            filter_baseline: String::new(),
            production: false,
        };
        h.exec(&["ip", "link", "set", "lo", "up"]);
        h.nat_baseline = h.iptables("nat");
        h.filter_baseline = h.iptables("filter");
        h.write_config(&[]);
        h
    }

    /// A host whose sandnet runs in the caller's own mount namespace (see `production`).
    pub fn production(tag: &str) -> Host {
        let mut h = Host::new(tag);
        h.production = true;
        h
    }

    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }
    pub fn conf(&self) -> PathBuf {
        self.dir.join("conf")
    }
    pub fn cache(&self) -> PathBuf {
        self.dir.join("cache")
    }
    pub fn ipam(&self) -> PathBuf {
        self.dir.join("ipam")
    }
    pub fn bin(&self) -> PathBuf {
        self.dir.join("bin")
    }
    pub fn config(&self) -> PathBuf {
        self.dir.join("sandnet.toml")
    }
    pub fn gateway(&self) -> String {
        format!("{}.1", self.prefix)
    }

    /// A sandbox id unique to this test (and remembered for the guard).
    pub fn new_id(&self, tag: &str) -> String {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let id = format!("lc-{tag}-{}-{n}", std::process::id());
        self.ids.lock().unwrap().push(id.clone());
        id
    }

    /// Writes sandnet.toml: `lines` appended to a base that keeps memory modest.
    pub fn write_config(&self, lines: &[&str]) {
        let mut s = String::from("[hypervisor.qemu]\n");
        if !lines.iter().any(|l| l.contains("default_memory")) {
            s += "default_memory = 256\n";
        }
        for l in lines {
            s += l;
            s += "\n";
        }
        std::fs::write(self.config(), s).unwrap();
    }

    /// The bridge plugin with host-local on this host's subnet and data dir.
    pub fn bridge_plugin(&self) -> Value {
        json!({"type":"bridge","bridge":self.bridge,"isGateway":true,"ipMasq":true,
               "ipam":{"type":"host-local","subnet":format!("{}.0/24", self.prefix),
                       "routes":[{"dst":"0.0.0.0/0"}],
                       "dataDir":self.ipam()}})
    }

    /// Writes `10-<net>.conflist`: bridge + host-local, then `extra` plugins.
    pub fn write_conflist(&self, extra: &[Value]) {
        let mut plugins = vec![self.bridge_plugin()];
        plugins.extend_from_slice(extra);
        let list = json!({"cniVersion":"1.0.0","name":self.net,"plugins":plugins});
        self.write_conf_file(&format!("10-{}.conflist", self.net), &list.to_string());
    }

    pub fn write_conf_file(&self, name: &str, body: &str) {
        for e in std::fs::read_dir(self.conf()).unwrap().flatten() {
            std::fs::remove_file(e.path()).unwrap();
        }
        std::fs::write(self.conf().join(name), body).unwrap();
    }

    /// A script plugin in this host's bin dir.
    pub fn write_plugin(&self, name: &str, script: &str) {
        let p = self.bin().join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{script}")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// `ip netns exec HOST sandnet ARGS…` (or `nsenter --net=… sandnet ARGS…` for a
    /// production host), with this host's state dir.
    pub fn sandnet_cmd(&self, args: &[&str]) -> Command {
        let mut c = if self.production {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{}", self.ns))
                .arg("--")
                .arg(env!("CARGO_BIN_EXE_sandnet"));
            c
        } else {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &self.ns, env!("CARGO_BIN_EXE_sandnet")]);
            c
        };
        c.args(args)
            .env("SANDNET_STATE_DIR", self.state())
            .env_remove("SANDNET_CONFIG")
            .stdin(Stdio::null());
        c
    }

    pub fn sandnet(&self, args: &[&str]) -> Output {
        self.sandnet_cmd(args).output().unwrap()
    }

    /// `sandnet run --name ID --json` with this host's CNI dirs and config, plus `extra`.
    pub fn run_cmd(&self, id: &str, extra: &[&str]) -> Command {
        let conf = self.conf();
        let cache = self.cache();
        let config = self.config();
        let mut args = vec![
            "run",
            "--name",
            id,
            "--json",
            "--cni-conf-dir",
            conf.to_str().unwrap(),
            "--cni-cache-dir",
            cache.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        self.sandnet_cmd(&args)
    }

    pub fn run(&self, id: &str, extra: &[&str]) -> Output {
        self.run_cmd(id, extra).output().unwrap()
    }

    /// Runs a sandbox that must come up; returns its JSON.
    pub fn run_ok(&self, id: &str, extra: &[&str]) -> Value {
        let o = self.run(id, extra);
        assert!(
            o.status.success(),
            "sandnet run {id}: {}{}",
            text(&o.stderr),
            self.log_of(id)
        );
        serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("run JSON: {e}: {}", text(&o.stdout)))
    }

    /// Runs a sandbox that must fail; returns its stderr (one line, checked).
    pub fn run_fails(&self, id: &str, extra: &[&str]) -> String {
        let o = self.run(id, extra);
        let err = text(&o.stderr);
        assert!(!o.status.success(), "sandnet run {id} should fail: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        err
    }

    pub fn log_of(&self, id: &str) -> String {
        std::fs::read_to_string(self.state().join(id).join("supervisor.log"))
            .map(|s| format!("\nsupervisor log:\n{s}"))
            .unwrap_or_default()
    }

    pub fn rm(&self, id: &str) {
        let o = self.sandnet(&["rm", id]);
        assert!(o.status.success(), "sandnet rm {id}: {}", text(&o.stderr));
    }

    pub fn gc(&self) -> Value {
        let o = self.sandnet(&["gc", "--json"]);
        assert!(o.status.success(), "sandnet gc: {}", text(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// `ip netns exec HOST ARGS…`, which must succeed.
    pub fn exec(&self, args: &[&str]) -> String {
        let mut a = vec!["netns", "exec", &self.ns];
        a.extend_from_slice(args);
        sh_ok("ip", &a)
    }

    pub fn iptables(&self, table: &str) -> String {
        self.exec(&["iptables", "-t", table, "-S"])
    }

    /// `ip -j` in the host namespace; a failing `ip` fails the test (so a check of what
    /// is left cannot pass because nothing could be listed).
    pub fn ip_json(&self, args: &[&str]) -> Value {
        self.ip_json_inner(args, false)
    }

    /// Like [`Host::ip_json`], but a device that does not exist lists as nothing.
    pub fn ip_json_if_exists(&self, args: &[&str]) -> Value {
        self.ip_json_inner(args, true)
    }

    fn ip_json_inner(&self, args: &[&str], absent_ok: bool) -> Value {
        let mut a = vec!["-j", "-n", &self.ns];
        a.extend_from_slice(args);
        let o = sh("ip", &a);
        if !o.status.success() {
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                absent_ok && err.contains("does not exist"),
                "ip {a:?} failed: {err}"
            );
            return Value::Array(vec![]);
        }
        if o.stdout.iter().all(u8::is_ascii_whitespace) {
            return Value::Array(vec![]);
        }
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("ip {a:?}: not JSON ({e})"))
    }

    /// Pings `ip` from the host namespace (a few tries: the guest's ARP may be cold).
    pub fn ping(&self, ip: &str) -> bool {
        (0..5).any(|_| {
            sh(
                "ip",
                &["netns", "exec", &self.ns, "ping", "-c1", "-W2", "-q", ip],
            )
            .status
            .success()
        })
    }

    /// The sandbox's persisted state (`sandbox.json`), if any.
    /// Waits until the sandbox's record names `step`; returns its supervisor's pid.
    pub fn wait_for_step(&self, id: &str, step: &str) -> u32 {
        let t = Instant::now();
        loop {
            if let Some(st) = self.state_of(id) {
                if st["step"] == step {
                    return st["supervisor_pid"].as_u64().unwrap() as u32;
                }
            }
            assert!(
                t.elapsed() < Duration::from_secs(90),
                "step {step} never recorded; state: {:?}",
                self.state_of(id)
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Asserts the record still names `step` (a kill just now hit it).
    pub fn assert_still_at(&self, id: &str, step: &str) {
        if let Some(st) = self.state_of(id) {
            assert_eq!(st["step"], step, "the kill missed step {step}: {st}");
        }
    }

    pub fn state_of(&self, id: &str) -> Option<Value> {
        let b = std::fs::read(self.state().join(id).join("sandbox.json")).ok()?;
        serde_json::from_slice(&b).ok()
    }

    pub fn files_under(dir: &Path) -> Vec<String> {
        let mut out = vec![];
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(Self::files_under(&p));
            } else {
                out.push(p.display().to_string());
            }
        }
        out
    }

    /// Everything that shows the host is not as it was, for the sandboxes this test ran.
    pub fn leftovers(&self) -> Vec<String> {
        let mut bad = vec![];
        let ids = self.ids.lock().unwrap().clone();
        for id in &ids {
            let netns = format!("/run/netns/sandnet-{id}");
            if Path::new(&netns).exists() {
                bad.push(format!("namespace {netns}"));
            }
            if self.state().join(id).exists() {
                bad.push(format!(
                    "state dir {}: {:?}",
                    self.state().join(id).display(),
                    Self::files_under(&self.state().join(id))
                ));
            }
            for (pid, cmd) in pids_mentioning(id) {
                bad.push(format!("process {pid}: {cmd}"));
            }
            for table in ["nat", "filter"] {
                for l in self.iptables(table).lines() {
                    if l.contains(&format!("sandnet-{id}")) {
                        bad.push(format!("iptables -t {table}: {l}"));
                    }
                }
            }
        }
        for l in self
            .ip_json(&["link", "show", "type", "veth"])
            .as_array()
            .into_iter()
            .flatten()
        {
            bad.push(format!("veth {} ({})", l["ifname"], l["master"]));
        }
        for l in self
            .ip_json_if_exists(&["link", "show", "master", &self.bridge])
            .as_array()
            .into_iter()
            .flatten()
        {
            bad.push(format!("port {} on {}", l["ifname"], self.bridge));
        }
        let q = sh(
            "ip",
            &["netns", "exec", &self.ns, "tc", "-j", "qdisc", "show"],
        );
        assert!(
            q.status.success(),
            "tc qdisc show: {}",
            String::from_utf8_lossy(&q.stderr)
        );
        let q: Value = serde_json::from_slice(&q.stdout).expect("tc -j qdisc show: JSON");
        for d in q.as_array().into_iter().flatten() {
            if d["kind"] == "ingress" || d["kind"] == "clsact" {
                bad.push(format!("qdisc {} on {}", d["kind"], d["dev"]));
            }
        }
        for f in Self::files_under(&self.ipam()) {
            let name = Path::new(&f).file_name().unwrap().to_string_lossy();
            if !name.starts_with("last_reserved_ip") && name != "lock" {
                bad.push(format!("host-local reservation {f}"));
            }
        }
        for f in Self::files_under(&self.cache()) {
            bad.push(format!("CNI cache entry {f}"));
        }
        for f in Self::files_under(&self.state().join("attach")) {
            bad.push(format!("attach state {f}"));
        }
        for (table, base) in [
            ("nat", &self.nat_baseline),
            ("filter", &self.filter_baseline),
        ] {
            let now = self.iptables(table);
            let before: BTreeSet<&str> = base.lines().collect();
            for l in now.lines().filter(|l| !before.contains(l)) {
                bad.push(format!("iptables -t {table}: {l}"));
            }
        }
        bad
    }

    /// [`Host::leftovers`] that `keep` selects, once the kernel has had time to finish: a
    /// namespace whose last reference went is torn down asynchronously (its veths, and so
    /// their peers here, go a little later), so this waits up to 10 s for the list to empty.
    pub fn settled_leftovers(&self, keep: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let bad: Vec<String> = self.leftovers().into_iter().filter(|l| keep(l)).collect();
            if bad.is_empty() || Instant::now() >= deadline {
                return bad;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Asserts that nothing of this test's sandboxes is left on the host.
    pub fn assert_clean(&self, after: &str) {
        let bad = self.settled_leftovers(|_| true);
        assert!(
            bad.is_empty(),
            "after {after}, left behind:\n  {}",
            bad.join("\n  ")
        );
    }

    /// The sandbox's guest IPv4 address in this host's subnet, from `run --json`.
    pub fn guest_ip(&self, v: &Value) -> String {
        guest_ips(v)
            .into_iter()
            .find(|a| a.starts_with(&format!("{}.", self.prefix)))
            .unwrap_or_else(|| panic!("no address in {}.0/24: {v}", self.prefix))
    }
}

/// Every address of every guest interface (without prefix length) in `run --json`.
pub fn guest_ips(v: &Value) -> Vec<String> {
    v["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|i| i["addresses"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a.as_str().map(|s| s.split('/').next().unwrap().to_string()))
        .filter(|a| a != "127.0.0.1" && a != "::1")
        .collect()
}

impl Drop for Host {
    fn drop(&mut self) {
        let ids = self.ids.lock().map(|g| g.clone()).unwrap_or_default();
        for id in &ids {
            let _ = self.sandnet(&["rm", "--force", id]);
        }
        let _ = self.sandnet(&["gc"]);
        for id in &ids {
            // Last resort, for what this test started: its supervisors and QEMUs.
            for (pid, cmd) in pids_mentioning(id) {
                if cmd.contains("__supervise") || cmd.contains("qemu") || cmd.contains(" run ") {
                    kill9(pid);
                }
            }
            let _ = sh("ip", &["netns", "del", &format!("sandnet-{id}")]);
        }
        let _ = sh("ip", &["netns", "del", &self.ns]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn wait_output(child: &mut Child) -> Output {
    let mut stdout = vec![];
    let mut stderr = vec![];
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_end(&mut stdout);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_end(&mut stderr);
    }
    Output {
        status: child.wait().unwrap(),
        stdout,
        stderr,
    }
}
