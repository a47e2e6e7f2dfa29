//! Test harness: a throwaway network namespace with the real `sandnet-agent --listen`
//! running inside it, removed (agent killed, netns deleted, scratch dir removed) on drop,
//! also when the test fails.

#![allow(dead_code)]

pub mod containers;
pub mod net;

use sandnet_agent_proto::AgentClient;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Runs a command, panicking with its stderr when it fails; returns stdout.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Where the host's cgroup2 hierarchy is mounted (`/sys/fs/cgroup` on a unified host,
/// `/sys/fs/cgroup/unified` on a hybrid one).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            (f.get(sep + 1) == Some(&"cgroup2") && f.get(3) == Some(&"/"))
                .then(|| PathBuf::from(f[4]))
        })
        .collect();
    found.sort_by_key(|p| p != Path::new("/sys/fs/cgroup"));
    found.into_iter().next()
}

/// A test's own cgroup, the agent's `--cgroup-root`: removed (with whatever the agent
/// left in it) on drop.
pub struct TestCgroup {
    /// The directory as the test sees it.
    pub host: PathBuf,
    /// The same directory as the agent sees it: it runs under `ip netns exec`, which
    /// remounts `/sys`, so the agent mounts cgroup2 at `/sys/fs/cgroup` itself.
    pub agent: PathBuf,
}

impl TestCgroup {
    /// `<cgroup2 mount>/<name>`.
    pub fn new(name: &str) -> TestCgroup {
        let mount = cgroup2_mount().expect("no cgroup2 file system on this host");
        let host = mount.join(name);
        Self::remove_dir(&host);
        std::fs::create_dir(&host).unwrap_or_else(|e| panic!("{}: {e}", host.display()));
        TestCgroup {
            host,
            agent: Path::new("/sys/fs/cgroup").join(name),
        }
    }

    /// Whether the controller can be used below this cgroup.
    pub fn offers(&self, controller: &str) -> bool {
        let parent = self.host.parent().unwrap_or(Path::new("/"));
        std::fs::read_to_string(parent.join("cgroup.controllers"))
            .unwrap_or_default()
            .split_whitespace()
            .any(|c| c == controller)
    }

    fn remove_dir(dir: &Path) {
        if !dir.exists() {
            return;
        }
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                if e.path().is_dir() {
                    Self::remove_dir(&e.path());
                }
            }
        }
        if std::fs::write(dir.join("cgroup.kill"), "1").is_err() {
            for pid in std::fs::read_to_string(dir.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
            {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        for _ in 0..100 {
            if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        Self::remove_dir(&self.host);
    }
}

/// A netns with an agent serving in it.
pub struct AgentNs {
    /// The netns name.
    pub ns: String,
    /// Scratch directory: the agent's `--root` and its socket.
    pub dir: PathBuf,
    /// The agent's socket.
    pub sock: PathBuf,
    /// The agent's `--cgroup-root`, when the test asked for one.
    pub cgroup: Option<TestCgroup>,
    child: Option<Child>,
}

impl AgentNs {
    /// Creates netns `sna-<test>-<pid>`; `setup` runs `ip -n NS ...` commands (one argv
    /// per entry) before the agent starts.
    pub fn new(test: &str, setup: &[&[&str]]) -> AgentNs {
        AgentNs::with_args(test, setup, &[])
    }

    /// Like [`AgentNs::new`], with a cgroup of the test's own as the agent's
    /// `--cgroup-root` (for containers).
    pub fn with_cgroup(test: &str) -> AgentNs {
        let cg = TestCgroup::new(&sandnet_testkit::unique(&format!("sna-{test}")));
        let root = cg.agent.to_string_lossy().into_owned();
        let mut me = AgentNs::with_args(test, &[], &["--cgroup-root", &root]);
        me.cgroup = Some(cg);
        me
    }

    /// Like [`AgentNs::new`] with extra agent arguments (e.g. `--hostile MODE`).
    pub fn with_args(test: &str, setup: &[&[&str]], extra: &[&str]) -> AgentNs {
        let ns = sandnet_testkit::unique(&format!("sna-{test}"));
        let dir = std::env::temp_dir().join(&ns);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("agent.sock");
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        run("ip", &["netns", "add", &ns]);
        let mut me = AgentNs {
            ns,
            dir,
            sock,
            cgroup: None,
            child: None,
        };
        for s in setup {
            let mut a = vec!["-n", me.ns.as_str()];
            a.extend_from_slice(s);
            run("ip", &a);
        }
        let child = Command::new("ip")
            .args(["netns", "exec", &me.ns, env!("CARGO_BIN_EXE_sandnet-agent")])
            .arg("--listen")
            .arg(format!("unix:{}", me.sock.display()))
            .arg("--root")
            .arg(&me.dir)
            .args(["--link-wait-ms", "600", "--log", "debug"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(me.dir.join("agent.log")).unwrap(),
            ))
            .spawn()
            .expect("starting sandnet-agent");
        me.child = Some(child);
        me
    }

    /// Connects a client (waiting for the socket) and checks health.
    pub async fn client(&self) -> AgentClient {
        let c = AgentClient::connect(&self.sock, Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("{e}; agent log:\n{}", self.log()));
        c.health_check().await.expect("health check");
        c.with_call_timeout(Duration::from_secs(5))
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// `ip -n NS -j ARGS` parsed.
    pub fn ip_json(&self, args: &[&str]) -> Value {
        let mut a = vec!["-n", self.ns.as_str(), "-j"];
        a.extend_from_slice(args);
        let s = run("ip", &a);
        if s.trim().is_empty() {
            return Value::Array(vec![]);
        }
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("ip {args:?}: {e}: {s}"))
    }

    /// `ip -n NS ARGS`.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut a = vec!["-n", self.ns.as_str()];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    /// The link named `name` as `ip -j addr show` reports it.
    pub fn link(&self, name: &str) -> Value {
        let v = self.ip_json(&["addr", "show", "dev", name]);
        v[0].clone()
    }

    /// `addr/prefix` strings of a link.
    pub fn addrs(&self, name: &str) -> Vec<String> {
        self.link(name)["addr_info"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
            .collect()
    }

    /// The agent's `--root`.
    pub fn root(&self) -> &Path {
        &self.dir
    }

    /// The agent's pid (`ip netns exec` execs it).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for AgentNs {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // `ip netns exec` execs the agent, so this is the agent's pid.
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            for _ in 0..40 {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        if std::thread::panicking() {
            eprintln!("agent log:\n{}", self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
