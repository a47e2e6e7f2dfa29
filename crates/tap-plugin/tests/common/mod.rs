//! Fixtures for the plugin's tests: a "host" namespace where the chain's plugins run (the
//! bridge lands there), a "pod" namespace (`CNI_NETNS`), a temp dir with the bin dir
//! (`sandnet-tap` linked in beside Debian's plugins), the CNI cache, host-local's data and
//! the plugin's state. Everything is removed on drop, also when a test fails.

#![allow(dead_code)]

use sandnet_cni::{CniConfig, NetworkConfigList, Runtime};
use sandnet_testkit::{TempDir, TestNs};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Debian's plugins.
pub const DEBIAN_BIN: &str = "/usr/lib/cni";

/// The plugin under test.
pub const PLUGIN: &str = env!("CARGO_BIN_EXE_sandnet-tap");

/// The chain's IPv4 and IPv6 ranges and gateways.
pub const V4_SUBNET: &str = "10.77.0.0/24";
/// IPv4 gateway (the bridge).
pub const V4_GW: &str = "10.77.0.1";
/// IPv6 range.
pub const V6_SUBNET: &str = "fd77::/64";
/// IPv6 gateway (the bridge).
pub const V6_GW: &str = "fd77::1";

/// One test's world.
pub struct World {
    /// Where the chain's plugins run.
    pub host: TestNs,
    /// The pod.
    pub pod: TestNs,
    /// Bin, cache, ipam and state dirs.
    pub dir: TempDir,
}

impl World {
    /// Namespaces and dirs named after `tag`.
    pub fn new(tag: &str) -> World {
        // SAFETY: plain syscall without arguments.
        assert_eq!(unsafe { libc::geteuid() }, 0, "run these tests as root");
        let host = TestNs::new(&format!("{tag}h"));
        let pod = TestNs::new(&format!("{tag}p"));
        let dir = TempDir::new(&format!("tap-{tag}"));
        for d in ["bin", "cache", "ipam", "state"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::os::unix::fs::symlink(PLUGIN, dir.join("bin").join("sandnet-tap")).unwrap();
        World { host, pod, dir }
    }

    /// The plugin's state dir.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// An executor: the test's bin dir then Debian's; plugins run in the host namespace.
    pub fn cni(&self) -> CniConfig {
        CniConfig::new(
            vec![self.dir.join("bin"), PathBuf::from(DEBIAN_BIN)],
            self.dir.join("cache"),
        )
        .with_timeout(Duration::from_secs(60))
        .with_plugin_netns_path(Path::new(&format!("/run/netns/{}", self.host.name)))
        .unwrap()
    }

    /// `bridge` + dual-stack `host-local` (two ranges), then `sandnet-tap` with `extra`
    /// options.
    pub fn conflist(&self, name: &str, tap_opts: Value) -> NetworkConfigList {
        let mut tap = json!({"type": "sandnet-tap", "stateDir": self.state_dir()});
        if let (Some(t), Some(o)) = (tap.as_object_mut(), tap_opts.as_object()) {
            t.extend(o.clone());
        }
        let list = json!({"cniVersion": "1.0.0", "name": name, "plugins": [
            {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false,
             "ipam": {"type": "host-local", "dataDir": self.dir.join("ipam"),
                      "ranges": [[{"subnet": V4_SUBNET, "gateway": V4_GW}],
                                 [{"subnet": V6_SUBNET, "gateway": V6_GW}]],
                      "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]}},
            tap]});
        NetworkConfigList::from_bytes(list.to_string().as_bytes()).unwrap()
    }

    /// A runtime for container `cid` in the pod as `eth0`.
    pub fn rt(&self, cid: &str) -> Runtime {
        Runtime::new(cid, self.pod.path(), "eth0")
    }

    /// The plugin's records (file names).
    pub fn records(&self) -> Vec<String> {
        sandnet_testkit::dir_names(&self.state_dir().join("attachments"))
    }

    /// sandnet's attach plans (file names).
    pub fn plans(&self) -> Vec<String> {
        std::fs::read_dir(self.state_dir().join("attach"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".json"))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The plugin's answer to one raw invocation.
#[derive(Debug)]
pub struct Reply {
    /// Exit status code.
    pub status: i32,
    /// stdout parsed (`null` when empty).
    pub out: Value,
    /// stderr.
    pub err: String,
}

impl Reply {
    /// The CNI error code, when it failed.
    pub fn code(&self) -> Option<u64> {
        self.out["code"].as_u64()
    }
}

/// Runs the plugin as a runtime would: `CNI_*` variables, the configuration on stdin.
pub fn raw(command: &str, conf: &Value, cid: &str, netns: &str, ifname: &str) -> Reply {
    raw_args(command, conf, cid, netns, ifname, "")
}

/// [`raw`] with `CNI_ARGS`.
pub fn raw_args(
    command: &str,
    conf: &Value,
    cid: &str,
    netns: &str,
    ifname: &str,
    args: &str,
) -> Reply {
    let mut child = Command::new(PLUGIN)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", ifname)
        .env("CNI_ARGS", args)
        .env("CNI_PATH", DEBIAN_BIN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let s = String::from_utf8_lossy(&o.stdout);
    Reply {
        status: o.status.code().unwrap_or(-1),
        out: if s.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&s).unwrap_or_else(|e| panic!("stdout {s:?}: {e}"))
        },
        err: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// The configuration one plugin of a list gets (as libcni builds it), with `prevResult`.
pub fn plugin_conf(list: &NetworkConfigList, index: usize, prev: Option<&Value>) -> Value {
    let mut c = list.plugins[index].raw.clone();
    c.insert("cniVersion".into(), json!(list.cni_version));
    c.insert("name".into(), json!(list.name));
    if let Some(p) = prev {
        c.insert("prevResult".into(), p.clone());
    }
    Value::Object(c)
}

/// The ingress filters of a device in a namespace (`tc -j filter show`), empty when it
/// has no ingress qdisc.
pub fn ingress_filters(ns: &TestNs, dev: &str) -> Vec<Value> {
    ns.tc_json(&["filter", "show", "dev", dev, "ingress"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Whether a device has an ingress qdisc.
pub fn has_ingress(ns: &TestNs, dev: &str) -> bool {
    ns.tc_json(&["qdisc", "show", "dev", dev])
        .as_array()
        .is_some_and(|a| a.iter().any(|q| q["kind"] == "ingress"))
}
