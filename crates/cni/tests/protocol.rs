//! The protocol as plugins see it, observed with small recording script plugins: the
//! `CNI_*` environment, the request configuration (injected `name`/`cniVersion`,
//! `prevResult`, `runtimeConfig`, unknown fields), the order of plugins, version
//! conversion, STATUS, GC, VERSION, and the failure modes (error objects, non-JSON
//! failures, hangs). These need no network namespace.

mod common;

use common::write_script;
use sandnet_cni::{CheckOutcome, CniConfig, CniError, GcAttachment, NetworkConfigList, Runtime};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Records its stdin and `CNI_*` environment per command, logs the call, and prints
/// `<name>.<COMMAND>.out` when that file exists (exiting with `<name>.<COMMAND>.rc`).
const RECORDER: &str = r#"d=$(dirname "$0"); n=$(basename "$0")
in=$(cat)
printf '%s\n' "$in" > "$d/$n.$CNI_COMMAND.stdin"
env | grep '^CNI_' | sort > "$d/$n.$CNI_COMMAND.env"
echo "$n $CNI_COMMAND" >> "$d/calls.log"
[ -f "$d/$n.$CNI_COMMAND.out" ] && cat "$d/$n.$CNI_COMMAND.out"
[ -f "$d/$n.$CNI_COMMAND.rc" ] && exit "$(cat "$d/$n.$CNI_COMMAND.rc")"
exit 0"#;

struct Fx {
    dir: tempfile::TempDir,
}

impl Fx {
    fn new() -> Fx {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        Fx { dir }
    }
    fn bin(&self) -> PathBuf {
        self.dir.path().join("bin")
    }
    fn cni(&self) -> CniConfig {
        CniConfig::new(vec![self.bin()], self.dir.path().join("cache"))
    }
    fn recorder(&self, name: &str) {
        write_script(&self.bin(), name, RECORDER);
    }
    fn set_out(&self, name: &str, cmd: &str, out: &Value) {
        std::fs::write(
            self.bin().join(format!("{name}.{cmd}.out")),
            out.to_string(),
        )
        .unwrap();
    }
    fn stdin(&self, name: &str, cmd: &str) -> Value {
        let p = self.bin().join(format!("{name}.{cmd}.stdin"));
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        serde_json::from_str(&text).unwrap()
    }
    fn env(&self, name: &str, cmd: &str) -> Vec<(String, String)> {
        let text = std::fs::read_to_string(self.bin().join(format!("{name}.{cmd}.env"))).unwrap();
        text.lines()
            .map(|l| {
                let (k, v) = l.split_once('=').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect()
    }
    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.bin().join("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
    fn clear_calls(&self) {
        let _ = std::fs::remove_file(self.bin().join("calls.log"));
    }
    fn cache_file(&self, name: &str) -> PathBuf {
        self.dir.path().join("cache/results").join(name)
    }
}

fn list(v: Value) -> NetworkConfigList {
    NetworkConfigList::from_bytes(v.to_string().as_bytes()).unwrap()
}

fn result_a() -> Value {
    json!({"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/run/netns/x"}],
           "ips":[{"address":"10.0.0.2/24","gateway":"10.0.0.1","interface":0}],
           "routes":[{"dst":"0.0.0.0/0"}],"x-extra":"kept"})
}

fn result_b() -> Value {
    json!({"cniVersion":"1.0.0","interfaces":[{"name":"eth0","mac":"c2:00:00:00:00:01","sandbox":"/run/netns/x"}],
           "ips":[{"address":"10.0.0.2/24","gateway":"10.0.0.1","interface":0}],
           "routes":[{"dst":"0.0.0.0/0"}],"dns":{"nameservers":["10.0.0.1"]}})
}

fn chain_rt() -> Runtime {
    Runtime::new("ctr-1", "/run/netns/x", "eth0")
        .with_arg("A", "1")
        .with_arg("B", "two")
        .with_capability(
            "portMappings",
            json!([{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]),
        )
        .with_capability("mac", json!("c2:00:00:00:00:01"))
        .with_capability("bandwidth", json!({"ingressRate":1}))
}

#[tokio::test]
async fn add_check_del_as_plugins_see_them() {
    let fx = Fx::new();
    fx.recorder("rec-a");
    fx.recorder("rec-b");
    fx.set_out("rec-a", "ADD", &result_a());
    fx.set_out("rec-b", "ADD", &result_b());
    let net = list(json!({"cniVersion":"1.0.0","name":"recnet","plugins":[
        {"type":"rec-a","name":"ignored","cniVersion":"0.0.1","custom":{"n":[1,2.5,"s"]},
         "capabilities":{"portMappings":true,"mac":false}},
        {"type":"rec-b","capabilities":{"mac":true}}]}));
    let cni = fx.cni();
    let rt = chain_rt();

    let r = cni.add(&net, &rt).await.unwrap();
    assert_eq!(fx.calls(), ["rec-a ADD", "rec-b ADD"]);
    // The final result is the last plugin's.
    assert_eq!(r.interfaces[0].mac.as_deref(), Some("c2:00:00:00:00:01"));
    assert_eq!(r.dns.nameservers, ["10.0.0.1"]);

    // The environment.
    let path = fx.bin().display().to_string();
    assert_eq!(
        fx.env("rec-a", "ADD"),
        vec![
            ("CNI_ARGS".to_string(), "A=1;B=two".to_string()),
            ("CNI_COMMAND".into(), "ADD".into()),
            ("CNI_CONTAINERID".into(), "ctr-1".into()),
            ("CNI_IFNAME".into(), "eth0".into()),
            ("CNI_NETNS".into(), "/run/netns/x".into()),
            ("CNI_PATH".into(), path),
        ]
    );
    // First plugin: name and version of the network injected over its own, unknown fields
    // unchanged, runtimeConfig only with the capabilities it declares (true), no prevResult.
    let a = fx.stdin("rec-a", "ADD");
    assert_eq!(a["name"], "recnet");
    assert_eq!(a["cniVersion"], "1.0.0");
    assert_eq!(a["custom"], json!({"n":[1,2.5,"s"]}));
    assert_eq!(
        a["runtimeConfig"],
        json!({"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]})
    );
    assert!(a.get("prevResult").is_none());
    // Second: the first one's result as prevResult (as it came, unknown fields included).
    let b = fx.stdin("rec-b", "ADD");
    assert_eq!(b["prevResult"], result_a());
    assert_eq!(b["runtimeConfig"], json!({"mac":"c2:00:00:00:00:01"}));

    // The cache holds the final result and the list's bytes.
    let c: Value =
        serde_json::from_slice(&std::fs::read(fx.cache_file("recnet-ctr-1-eth0")).unwrap())
            .unwrap();
    assert_eq!(c["result"], result_b());
    assert_eq!(c["cniArgs"], json!([["A", "1"], ["B", "two"]]));
    assert_eq!(c["capabilityArgs"]["bandwidth"], json!({"ingressRate":1}));
    let entry: sandnet_cni::CacheEntry = serde_json::from_value(c).unwrap();
    assert_eq!(entry.config, net.bytes);

    // CHECK: list order, the cached result as prevResult.
    fx.clear_calls();
    assert_eq!(cni.check(&net, &rt).await.unwrap(), CheckOutcome::Checked);
    assert_eq!(fx.calls(), ["rec-a CHECK", "rec-b CHECK"]);
    assert_eq!(fx.stdin("rec-a", "CHECK")["prevResult"], result_b());
    assert_eq!(fx.stdin("rec-b", "CHECK")["prevResult"], result_b());
    assert_eq!(
        fx.stdin("rec-a", "CHECK")["runtimeConfig"]["portMappings"][0]["hostPort"],
        8080
    );

    // DEL after a "restart", given only the container ID and interface: reverse order, the
    // cached result as prevResult, args and capabilities from the cache.
    fx.clear_calls();
    let fresh = fx.cni();
    fresh
        .del(&net, &Runtime::new("ctr-1", "", "eth0"))
        .await
        .unwrap();
    assert_eq!(fx.calls(), ["rec-b DEL", "rec-a DEL"]);
    assert_eq!(fx.stdin("rec-b", "DEL")["prevResult"], result_b());
    assert_eq!(fx.stdin("rec-a", "DEL")["prevResult"], result_b());
    assert_eq!(
        fx.stdin("rec-b", "DEL")["runtimeConfig"],
        json!({"mac":"c2:00:00:00:00:01"})
    );
    let env = fx.env("rec-a", "DEL");
    assert!(
        env.contains(&("CNI_ARGS".into(), "A=1;B=two".into())),
        "{env:?}"
    );
    assert!(
        env.contains(&("CNI_NETNS".into(), "/run/netns/x".into())),
        "{env:?}"
    );
    assert!(!fx.cache_file("recnet-ctr-1-eth0").exists());

    // A second DEL runs again, without prevResult.
    fx.clear_calls();
    fresh.del(&net, &rt).await.unwrap();
    assert_eq!(fx.calls(), ["rec-b DEL", "rec-a DEL"]);
    assert!(fx.stdin("rec-a", "DEL").get("prevResult").is_none());
}

#[tokio::test]
async fn prev_result_is_converted_to_the_network_version() {
    let fx = Fx::new();
    fx.recorder("rec-a");
    fx.recorder("rec-b");
    // The first plugin answers in 1.0.0 although the network is 0.4.0.
    fx.set_out("rec-a", "ADD", &result_a());
    fx.set_out(
        "rec-b",
        "ADD",
        &json!({"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.0.0.2/24"}]}),
    );
    let net = list(
        json!({"cniVersion":"0.4.0","name":"conv","plugins":[{"type":"rec-a"},{"type":"rec-b"}]}),
    );
    let cni = fx.cni();
    let rt = Runtime::new("c", "/run/netns/x", "eth0");
    cni.add(&net, &rt).await.unwrap();
    assert_eq!(
        fx.stdin("rec-b", "ADD")["prevResult"],
        json!({"cniVersion":"0.4.0","interfaces":[{"name":"eth0","sandbox":"/run/netns/x"}],
               "ips":[{"version":"4","interface":0,"address":"10.0.0.2/24","gateway":"10.0.0.1"}],
               "routes":[{"dst":"0.0.0.0/0"}]})
    );
    cni.del(&net, &rt).await.unwrap();

    // 0.2.0 chains get 0.2.0 prevResults; before 0.4.0 DEL gets no prevResult (libcni).
    let net = list(
        json!({"cniVersion":"0.3.1","name":"old","plugins":[{"type":"rec-a"},{"type":"rec-b"}]}),
    );
    cni.add(&net, &rt).await.unwrap();
    assert_eq!(
        fx.stdin("rec-b", "ADD")["prevResult"]["ips"][0]["version"],
        "4"
    );
    assert_eq!(
        cni.check(&net, &rt).await.unwrap(),
        CheckOutcome::Unsupported("0.3.1".into())
    );
    cni.del(&net, &rt).await.unwrap();
    assert!(fx.stdin("rec-a", "DEL").get("prevResult").is_none());

    let net = list(
        json!({"cniVersion":"0.2.0","name":"older","plugins":[{"type":"rec-a"},{"type":"rec-b"}]}),
    );
    let r = cni.add(&net, &rt).await.unwrap();
    assert_eq!(
        fx.stdin("rec-b", "ADD")["prevResult"],
        json!({"cniVersion":"0.2.0","ip4":{"ip":"10.0.0.2/24","gateway":"10.0.0.1","routes":[{"dst":"0.0.0.0/0"}]}})
    );
    assert_eq!(r.cni_version, "0.4.0");
    cni.del(&net, &rt).await.unwrap();
}

#[tokio::test]
async fn result_without_version_gets_the_network_version() {
    let fx = Fx::new();
    fx.recorder("rec-a");
    fx.set_out("rec-a", "ADD", &json!({"ips":[{"address":"10.1.0.2/16"}]}));
    let net = list(json!({"cniVersion":"1.0.0","name":"nov","plugins":[{"type":"rec-a"}]}));
    let cni = fx.cni();
    let rt = Runtime::new("c", "/run/netns/x", "eth0");
    let r = cni.add(&net, &rt).await.unwrap();
    assert_eq!(r.cni_version, "1.0.0");
    let c: Value =
        serde_json::from_slice(&std::fs::read(fx.cache_file("nov-c-eth0")).unwrap()).unwrap();
    assert_eq!(c["result"]["cniVersion"], "1.0.0");
    assert_eq!(cni.cached_result(&net, &rt).unwrap(), Some(r));
}

#[tokio::test]
async fn status_and_gc_for_1_1_0() {
    let fx = Fx::new();
    fx.recorder("rec-a");
    fx.recorder("rec-b");
    fx.set_out("rec-a", "ADD", &json!({"cniVersion":"1.1.0"}));
    fx.set_out("rec-b", "ADD", &json!({"cniVersion":"1.1.0"}));
    let v11 = list(json!({"cniVersion":"1.1.0","name":"gcnet","plugins":[
        {"type":"rec-a","capabilities":{"mac":true}},{"type":"rec-b"}]}));
    let cni = fx.cni();

    cni.status(&v11).await.unwrap();
    assert_eq!(fx.calls(), ["rec-a STATUS", "rec-b STATUS"]);
    let s = fx.stdin("rec-a", "STATUS");
    assert_eq!(s["name"], "gcnet");
    assert_eq!(s["cniVersion"], "1.1.0");
    assert!(s.get("runtimeConfig").is_none() && s.get("prevResult").is_none());
    let env = fx.env("rec-a", "STATUS");
    assert!(env.contains(&("CNI_COMMAND".into(), "STATUS".into())));
    assert!(env.contains(&("CNI_CONTAINERID".into(), String::new())));

    // Three attachments, one of them valid: GC deletes the other two, then asks each
    // plugin to GC with the valid list.
    for cid in ["keep", "stale1", "stale2"] {
        cni.add(
            &v11,
            &Runtime::new(cid, "/run/netns/x", "eth0")
                .with_capability("mac", json!("c2:00:00:00:00:09")),
        )
        .await
        .unwrap();
    }
    fx.clear_calls();
    let valid = [GcAttachment {
        container_id: "keep".into(),
        ifname: "eth0".into(),
    }];
    cni.gc(&v11, &valid).await.unwrap();
    assert_eq!(
        fx.calls(),
        [
            "rec-b DEL",
            "rec-a DEL",
            "rec-b DEL",
            "rec-a DEL",
            "rec-a GC",
            "rec-b GC"
        ]
    );
    // The stale DELs used the cached capability arguments.
    assert_eq!(
        fx.stdin("rec-a", "DEL")["runtimeConfig"]["mac"],
        "c2:00:00:00:00:09"
    );
    let g = fx.stdin("rec-b", "GC");
    assert_eq!(
        g["cni.dev/valid-attachments"],
        json!([{"containerID":"keep","ifname":"eth0"}])
    );
    assert_eq!(g["name"], "gcnet");
    assert!(fx.cache_file("gcnet-keep-eth0").exists());
    assert!(!fx.cache_file("gcnet-stale1-eth0").exists());
    let atts = cni.cached_attachments(None).unwrap();
    assert_eq!(atts.len(), 1);
    assert_eq!(atts[0].container_id, "keep");

    // STATUS failing: the plugin's error object.
    fx.set_out(
        "rec-b",
        "STATUS",
        &json!({"cniVersion":"1.1.0","code":50,"msg":"no more addresses"}),
    );
    std::fs::write(fx.bin().join("rec-b.STATUS.rc"), "1").unwrap();
    let e = cni.status(&v11).await.unwrap_err();
    assert_eq!(
        e.plugin_code(),
        Some(sandnet_cni::error_code::PLUGIN_NOT_AVAILABLE),
        "{e}"
    );
    // GC failing in one plugin: the others still run, the error is returned.
    fx.set_out("rec-a", "GC", &json!({"code":999,"msg":"gc broke"}));
    std::fs::write(fx.bin().join("rec-a.GC.rc"), "1").unwrap();
    fx.clear_calls();
    let e = cni.gc(&v11, &valid).await.unwrap_err();
    assert!(e.to_string().contains("gc broke"), "{e}");
    assert_eq!(fx.calls(), ["rec-a GC", "rec-b GC"]);

    // Before 1.1.0 there is no STATUS and no plugin GC (stale attachments are still deleted).
    let v10 = list(
        json!({"cniVersion":"1.0.0","name":"gcnet","plugins":[{"type":"rec-a"},{"type":"rec-b"}]}),
    );
    fx.clear_calls();
    cni.status(&v10).await.unwrap();
    cni.gc(&v10, &[]).await.unwrap();
    assert_eq!(fx.calls(), ["rec-b DEL", "rec-a DEL"]);
    assert!(cni.cached_attachments(None).unwrap().is_empty());
}

#[tokio::test]
async fn version_command() {
    let fx = Fx::new();
    write_script(
        &fx.bin(),
        "modern",
        r#"cat >/dev/null; [ "$CNI_COMMAND" = VERSION ] || exit 1
echo '{"cniVersion":"1.1.0","supportedVersions":["0.4.0","1.0.0","1.1.0"]}'"#,
    );
    write_script(
        &fx.bin(),
        "ancient",
        r#"cat >/dev/null; echo '{"code":4,"msg":"unknown CNI_COMMAND: VERSION"}'; exit 1"#,
    );
    write_script(
        &fx.bin(),
        "bare020",
        r#"cat >/dev/null; echo '{"cniVersion":"0.2.0"}'"#,
    );
    let cni = fx.cni();
    let v = cni.version("modern").await.unwrap();
    assert_eq!(v.cni_version, "1.1.0");
    assert_eq!(v.supported_versions, ["0.4.0", "1.0.0", "1.1.0"]);
    assert_eq!(
        cni.version("ancient").await.unwrap().supported_versions,
        ["0.1.0"]
    );
    assert_eq!(
        cni.version("bare020").await.unwrap().supported_versions,
        ["0.1.0", "0.2.0"]
    );
}

#[tokio::test]
async fn failures_are_reported_clearly() {
    let fx = Fx::new();
    let cni = fx.cni();
    let rt = Runtime::new("c", "/run/netns/x", "eth0");
    let one = |t: &str| list(json!({"cniVersion":"1.0.0","name":"f","plugins":[{"type":t}]}));

    // Not JSON on stdout: exit status and stderr tail.
    write_script(
        &fx.bin(),
        "crasher",
        "cat >/dev/null; echo 'panic: runtime error' >&2; exit 2",
    );
    let e = cni.add(&one("crasher"), &rt).await.unwrap_err();
    match &e {
        CniError::PluginFailed {
            plugin,
            status,
            stderr,
            ..
        } => {
            assert_eq!(plugin, "crasher");
            assert_eq!(status, "exit status 2");
            assert_eq!(stderr, "panic: runtime error");
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("panic: runtime error"), "{e}");
    cni.del(&one("crasher"), &rt).await.unwrap_err();

    // Success with garbage on stdout.
    write_script(&fx.bin(), "garbage", "cat >/dev/null; echo 'hello'");
    let e = cni.add(&one("garbage"), &rt).await.unwrap_err();
    assert!(
        matches!(e, CniError::BadResult { .. }) && e.to_string().contains("hello"),
        "{e}"
    );
    // A result of a version that does not exist.
    write_script(
        &fx.bin(),
        "future",
        r#"cat >/dev/null; echo '{"cniVersion":"7.0.0"}'"#,
    );
    let e = cni.add(&one("future"), &rt).await.unwrap_err();
    assert!(e.to_string().contains("unsupported result version"), "{e}");

    // A plugin that is not executable.
    std::fs::write(fx.bin().join("noexec"), "#!/bin/sh\n").unwrap();
    let e = cni.add(&one("noexec"), &rt).await.unwrap_err();
    assert!(matches!(e, CniError::Spawn { .. }), "{e}");

    // Bad runtime parameters are refused before anything runs.
    for bad in [
        Runtime::new("", "/x", "eth0"),
        Runtime::new("a/b", "/x", "eth0"),
        Runtime::new("c", "/x", "an-interface-name-too-long"),
        Runtime::new("c", "/x", "eth:0"),
        Runtime::new("c", "/x", "eth0").with_arg("K", "a;b"),
    ] {
        let e = cni.add(&one("garbage"), &bad).await.unwrap_err();
        assert!(matches!(e, CniError::InvalidParameter { .. }), "{e}");
    }
}

#[tokio::test]
async fn hanging_plugin_is_killed_with_its_children() {
    let fx = Fx::new();
    let pidfile = fx.bin().join("child.pid");
    write_script(
        &fx.bin(),
        "hanger",
        &format!(
            "echo started >&2; sleep 1000 & echo $! > {}; wait",
            pidfile.display()
        ),
    );
    let cni = fx.cni().with_timeout(Duration::from_millis(1500));
    let net = list(json!({"cniVersion":"1.0.0","name":"h","plugins":[{"type":"hanger"}]}));
    let rt = Runtime::new("c", "/run/netns/x", "eth0");
    let t0 = Instant::now();
    let e = cni.add(&net, &rt).await.unwrap_err();
    let took = t0.elapsed();
    assert!(
        matches!(e, CniError::Timeout { ref stderr, .. } if stderr == "started"),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("hanger") && e.to_string().contains("killed"),
        "{e}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // The plugin's own child (think: an IPAM plugin it delegated to) is gone too.
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(gone_soon(pid), "child {pid} still alive");
    // The attachment is still in the cache so that DEL (here also hanging) can be retried.
    assert_eq!(cni.cached_attachments(Some("c")).unwrap().len(), 1);
}

fn gone_soon(pid: i32) -> bool {
    let proc = Path::new("/proc").join(pid.to_string());
    for _ in 0..40 {
        let state = std::fs::read_to_string(proc.join("stat")).unwrap_or_default();
        // Gone, or a zombie waiting for init to reap it.
        if state.is_empty() || state.split_whitespace().nth(2) == Some("Z") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}
