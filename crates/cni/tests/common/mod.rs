//! Test fixtures: a "host" netns where the plugins run, a "pod" netns (CNI_NETNS), and a
//! temp dir with conf, cache, host-local data and script-plugin bin dirs. Everything is
//! removed on drop, also when the test fails.

#![allow(dead_code)]

use sandnet_cni::{CniConfig, NetworkConfigList, Runtime};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Debian's plugins.
pub const DEBIAN_BIN: &str = "/usr/lib/cni";

/// Runs a command, panicking with its output when it fails.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn require_root() {
    // SAFETY: plain syscall without arguments.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(
        uid, 0,
        "these tests create network namespaces: run them as root"
    );
}

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: String) -> Netns {
        // A leftover from an earlier crashed run with the same pid: remove it.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        run("ip", &["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// `ip -n NAME ARGS…`
    pub fn ip(&self, args: &[&str]) -> String {
        let mut a = vec!["-n", &self.name];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    /// `ip -n NAME -j ARGS…` parsed; `null` when the command fails (e.g. no such device).
    pub fn ip_json(&self, args: &[&str]) -> Value {
        let mut a = vec!["-n", self.name.as_str(), "-j"];
        a.extend_from_slice(args);
        let out = Command::new("ip").args(&a).output().unwrap();
        if !out.status.success() {
            return Value::Null;
        }
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// `ip netns exec NAME CMD…`
    pub fn exec(&self, args: &[&str]) -> String {
        let mut a = vec!["netns", "exec", &self.name];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    /// Whether a link exists.
    pub fn has_link(&self, name: &str) -> bool {
        !self.ip_json(&["link", "show", "dev", name]).is_null()
    }

    /// The global-scope addresses of a link, as `addr/prefix` strings (the kernel's IPv6
    /// link-local addresses left out).
    pub fn addrs(&self, dev: &str) -> Vec<String> {
        let v = self.ip_json(&["addr", "show", "dev", dev, "scope", "global"]);
        let mut out = Vec::new();
        for link in v.as_array().into_iter().flatten() {
            for a in link["addr_info"].as_array().into_iter().flatten() {
                if a.get("local").is_none() {
                    continue; // filtered out by `scope global` (ip prints an empty object)
                }
                out.push(format!(
                    "{}/{}",
                    a["local"].as_str().unwrap_or(""),
                    a["prefixlen"]
                ));
            }
        }
        out
    }

    /// A link's `ip -d -j link show` object.
    pub fn link(&self, dev: &str) -> Value {
        self.ip_json(&["-d", "link", "show", "dev", dev])
            .get(0)
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// `iptables -t nat -S` inside the namespace.
    pub fn nat_rules(&self) -> String {
        self.exec(&["iptables", "-t", "nat", "-S"])
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// One test's world.
pub struct Env {
    pub host: Netns,
    pub pod: Netns,
    pub dir: tempfile::TempDir,
}

impl Env {
    /// Namespaces named after the test and the pid.
    pub fn new(test: &str) -> Env {
        require_root();
        let pid = std::process::id();
        let host = Netns::new(format!("cnit-{test}-{pid}-h"));
        let pod = Netns::new(format!("cnit-{test}-{pid}-p"));
        let dir = tempfile::Builder::new()
            .prefix(&format!("cnit-{test}-"))
            .tempdir()
            .unwrap();
        for d in ["conf", "cache", "ipam", "bin"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        Env { host, pod, dir }
    }

    pub fn conf_dir(&self) -> PathBuf {
        self.dir.path().join("conf")
    }
    pub fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }
    pub fn ipam_dir(&self) -> PathBuf {
        self.dir.path().join("ipam")
    }
    pub fn bin_dir(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    /// An executor: the test's script bin dir then Debian's, the test's cache, plugins run
    /// in the host netns.
    pub fn cni(&self) -> CniConfig {
        CniConfig::new(
            vec![self.bin_dir(), PathBuf::from(DEBIAN_BIN)],
            self.cache_dir(),
        )
        .with_timeout(Duration::from_secs(30))
        .with_plugin_netns_path(&self.host.path())
        .unwrap()
    }

    /// A runtime for container `cid` in the pod netns as `eth0`.
    pub fn rt(&self, cid: &str) -> Runtime {
        Runtime::new(cid, self.pod.path(), "eth0")
    }

    /// Writes a conf file into the conf dir and loads the dir.
    pub fn load(&self, file: &str, text: &str) -> NetworkConfigList {
        std::fs::write(self.conf_dir().join(file), text).unwrap();
        NetworkConfigList::load_dir(&self.conf_dir()).unwrap()
    }

    /// The IPs host-local holds for a network (its data dir's address files).
    pub fn reservations(&self, network: &str) -> Vec<String> {
        sandnet_testkit::dir_names(&self.ipam_dir().join(network))
            .into_iter()
            .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
            .collect()
    }

    /// The cache entries' file names.
    pub fn cache_entries(&self) -> Vec<String> {
        sandnet_testkit::dir_names(&self.cache_dir().join("results"))
    }

    /// Writes an executable script plugin into the test's bin dir.
    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        write_script(&self.bin_dir(), name, body)
    }
}

/// Writes an executable `#!/bin/sh` script.
pub fn write_script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}
