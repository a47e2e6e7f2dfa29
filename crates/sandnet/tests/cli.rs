//! The `sandnet` command line as a user runs it: exit status, one-line errors, JSON.

use sandnet_testkit::{assert_fails_with, Cli, PodPair};

/// `sandnet` with a state directory and configuration of this test's own.
fn env(tag: &str) -> Cli {
    Cli::new(env!("CARGO_BIN_EXE_sandnet"), tag)
}

#[test]
fn scan_json_is_the_contract() {
    let p = PodPair::new("cliscan");
    let env = env("cliscan");
    let v = env.ok_json(&["scan", "--netns", &p.pod.name, "--json"]);
    let i = &v["interfaces"][0];
    assert_eq!(i["name"], "eth0");
    assert_eq!(i["kind"], "veth");
    assert_eq!(i["mac"], p.pod_mac("eth0").as_str());
    assert_eq!(i["mtu"], 1500);
    assert_eq!(i["addresses"][0], "172.19.0.5/24");
    let r = &v["routes"][0];
    assert_eq!(r["dest"], "0.0.0.0/0");
    assert_eq!(r["gateway"], "172.19.0.1");
    assert_eq!(r["device"], "eth0");
    assert!(v["neighbors"].is_array());
    // The same namespace by path.
    let by_path = env.ok_json(&["scan", "--netns", &p.pod.path(), "--json"]);
    assert_eq!(by_path, v);
    // Human output names the endpoint.
    let o = env.run(&["scan", "--netns", &p.pod.name]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("endpoint"));
}

#[test]
fn attach_detach_json_tcfilter_and_macvtap() {
    for model in ["tcfilter", "macvtap"] {
        let p = PodPair::new("cliatt");
        let env = env("cliatt");
        let links = p.pod.link_names();
        let mac = p.pod_mac("eth0");
        let v = env.ok_json(&["attach", "--netns", &p.pod.name, "--model", model, "--json"]);
        let e = &v["endpoints"][0];
        assert_eq!(e["name"], "eth0");
        assert_eq!(e["kind"], "veth");
        assert_eq!(e["mac"], mac.as_str());
        assert_eq!(e["model"], model);
        let tap = e["tap"].as_str().unwrap();
        if model == "macvtap" {
            assert!(tap.starts_with('/'), "{tap}");
            assert!(std::path::Path::new(tap).exists());
        } else {
            assert!(p.pod.link(tap).is_some());
        }
        let o = env.run(&["detach", "--netns", &p.pod.name]);
        assert!(o.status.success());
        assert_eq!(p.pod.link_names(), links);
        assert_eq!(p.pod_mac("eth0"), mac);
    }
}

#[test]
fn bad_input_gets_one_clear_line() {
    let env = env("clibad");
    assert_fails_with(
        &env.run(&["scan", "--netns", "sandnet-nope-404"]),
        &["sandnet-nope-404", "does not exist"],
    );
    assert_fails_with(
        &env.run(&["attach", "--netns", "/etc/hostname"]),
        &["/etc/hostname", "not a network namespace"],
    );
    let p = PodPair::new("clibad");
    assert_fails_with(
        &env.run(&["attach", "--netns", &p.pod.name, "--model", "bridged"]),
        &["unknown interworking model", "bridged"],
    );
    assert!(env
        .run(&["attach", "--netns", &p.pod.name])
        .status
        .success());
    let links = p.pod.link_names();
    assert_fails_with(
        &env.run(&["attach", "--netns", &p.pod.name]),
        &[&p.pod.name, "already attached"],
    );
    assert_eq!(
        p.pod.link_names(),
        links,
        "a refused attach changes nothing"
    );
    assert!(env
        .run(&["detach", "--netns", &p.pod.name])
        .status
        .success());
    // Nothing attached: still success (teardown is idempotent), and it says so.
    let before = p.pod.ip_json(&["link", "show"]);
    let o = env.run(&["detach", "--netns", &p.pod.name]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("nothing attached"));
    assert_eq!(p.pod.ip_json(&["link", "show"]), before);
}

#[test]
fn sigkill_during_attach_then_detach_leaves_nothing() {
    let p = PodPair::new("clikill");
    for i in 1..24 {
        p.add_veth(
            &format!("eth{i}"),
            &format!("vh{i}"),
            &format!("10.{i}.0.5/24"),
            &format!("10.{i}.0.1/24"),
        );
    }
    let env = env("clikill");
    let links = p.pod.link_names();
    for delay_ms in [2u64, 8, 20] {
        let mut child = env
            .cmd(&["attach", "--netns", &p.pod.name, "--model", "tcfilter"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        let o = env.run(&["detach", "--netns", &p.pod.name]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(p.pod.link_names(), links, "after a kill at {delay_ms} ms");
        let left: Vec<_> = std::fs::read_dir(env.state.join("attach"))
            .into_iter()
            .flatten()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            left.is_empty(),
            "{left:?} left after a kill at {delay_ms} ms"
        );
        for l in &links {
            let q = p.pod.tc_json(&["qdisc", "show", "dev", l]);
            assert!(
                !q.as_array().unwrap().iter().any(|q| q["kind"] == "ingress"),
                "qdisc left on {l} after a kill at {delay_ms} ms"
            );
        }
    }
}

#[test]
fn gc_forgets_attach_state_of_vanished_namespaces() {
    let env = env("cligc");
    let json_files = || {
        std::fs::read_dir(env.state.join("attach"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                    .count()
            })
            .unwrap_or(0)
    };
    let keep = PodPair::new("cligck");
    {
        let p = PodPair::new("cligc");
        assert!(env
            .run(&["attach", "--netns", &p.pod.name])
            .status
            .success());
        assert!(env
            .run(&["attach", "--netns", &keep.pod.name])
            .status
            .success());
        assert_eq!(json_files(), 2);
    } // the first pod namespace is deleted here, taps and all
    let o = env.run(&["gc"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("forgot attach state"));
    assert_eq!(json_files(), 1, "the live namespace's attachment is kept");
    assert!(env
        .run(&["detach", "--netns", &keep.pod.name])
        .status
        .success());
    assert_eq!(json_files(), 0);
}

/// `sandnet ARGS` run inside `ns` (`ip netns exec`), so that the caller's own network
/// namespace is a test namespace, never the root one.
fn run_inside(env: &Cli, ns: &str, args: &[&str]) -> std::process::Output {
    let mut full = vec!["netns", "exec", ns, env!("CARGO_BIN_EXE_sandnet")];
    full.extend_from_slice(args);
    std::process::Command::new("ip")
        .args(&full)
        .env("SANDNET_STATE_DIR", &*env.state)
        .env("SANDNET_CONFIG", &env.config)
        .output()
        .expect("spawn ip netns exec")
}

/// What attach may have changed in the pod namespace: links, their MACs, ingress qdiscs.
fn pod_view(p: &PodPair) -> (serde_json::Value, serde_json::Value) {
    (
        p.pod.ip_json(&["link", "show"]),
        p.pod.tc_json(&["qdisc", "show"]),
    )
}

#[test]
fn the_callers_own_netns_is_refused_unless_allowed() {
    let p = PodPair::new("clihost");
    let env = env("clihost");
    let before = pod_view(&p);
    for args in [
        &["attach", "--netns", "/proc/self/ns/net"][..],
        &["run", "--netns", "/proc/self/ns/net"][..],
    ] {
        assert_fails_with(
            &run_inside(&env, &p.pod.name, args),
            &[
                "refusing network namespace /proc/self/ns/net",
                "caller's own",
                "--allow-host-netns",
            ],
        );
        assert_eq!(pod_view(&p), before, "{args:?} changed nothing");
    }
    let attach_dir = env.state.join("attach");
    assert!(std::fs::read_dir(&attach_dir).map_or(true, |mut d| d.next().is_none()));
    // Scanning is read-only: allowed.
    let o = run_inside(&env, &p.pod.name, &["scan", "--netns", "/proc/self/ns/net"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("eth0"));
    // Said explicitly, it works, and detach (not guarded) undoes it.
    let mac = p.pod_mac("eth0");
    let o = run_inside(
        &env,
        &p.pod.name,
        &[
            "attach",
            "--netns",
            "/proc/self/ns/net",
            "--allow-host-netns",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let tap = v["endpoints"][0]["tap"].as_str().unwrap().to_string();
    assert_eq!(v["endpoints"][0]["name"], "eth0");
    assert!(p.pod.link(&tap).is_some());
    let o = run_inside(
        &env,
        &p.pod.name,
        &["detach", "--netns", "/proc/self/ns/net"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(pod_view(&p), before);
    assert_eq!(p.pod_mac("eth0"), mac);
}

#[test]
fn init_netns_is_refused() {
    let p = PodPair::new("cliinit");
    let env = env("cliinit");
    // `--model none` so that even a broken guard could not change anything there.
    for ns in ["/proc/1/ns/net", "/proc/1/task/1/ns/net"] {
        for args in [
            &["attach", "--netns", ns, "--model", "none"][..],
            &["run", "--netns", ns, "--model", "none"][..],
        ] {
            assert_fails_with(
                &run_inside(&env, &p.pod.name, args),
                &["refusing network namespace", "PID 1", "--allow-host-netns"],
            );
        }
    }
    assert_fails_with(
        &env.run(&["attach", "--netns", "/proc/1/ns/net", "--model", "none"]),
        &["refusing network namespace /proc/1/ns/net", "host's"],
    );
}

/// `gc` touches only what its own state root recorded: a `sandnet-…` namespace that no
/// record of this root names (another root's, or a live deployment's) stays.
#[test]
fn gc_leaves_namespaces_it_did_not_record() {
    struct Ns(String);
    impl Drop for Ns {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &self.0])
                .status();
        }
    }
    let env = env("cligcother");
    let ns = Ns(format!("sandnet-gcother-{}", std::process::id()));
    assert!(std::process::Command::new("ip")
        .args(["netns", "add", &ns.0])
        .status()
        .unwrap()
        .success());
    let o = env.run(&["gc"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        std::path::Path::new("/run/netns").join(&ns.0).exists(),
        "gc deleted a namespace its state root never recorded"
    );
}

/// A record of a state format version this build does not read (a newer sandnet's) is
/// listed as unreadable naming the file and both versions, `rm` refuses it saying so, and
/// `rm --force` removes what it can (here: the record).
#[test]
fn a_record_of_an_unknown_format_version_is_named_by_ps_and_rm() {
    let env = env("cliversion");
    let id = format!("v99-{}", std::process::id());
    let dir = env.state.join(&id);
    std::fs::create_dir_all(&dir).unwrap();
    let record = serde_json::json!({
        "version": 99, "id": id, "netns": "elsewhere", "netns_path": "/nonexistent",
        "netns_id": null, "model": "tcfilter", "status": "running", "supervisor_pid": null,
        "qemu_pid": null, "created": 1
    });
    std::fs::write(dir.join("sandbox.json"), record.to_string()).unwrap();
    std::fs::write(dir.join("spec.json"), r#"{"version": 99, "id": "x"}"#).unwrap();
    let state = dir.join("sandbox.json").display().to_string();
    let why = format!("{state}: state format version 99, this sandnet reads 1");

    let ps = env.ok_json(&["ps", "--json"]);
    let entry = ps
        .as_array()
        .and_then(|a| a.iter().find(|e| e["id"] == id.as_str()))
        .unwrap_or_else(|| panic!("ps --json lists {id}: {ps}"));
    assert_eq!(entry["status"], format!("unreadable: {why}"), "{entry}");
    let text = String::from_utf8_lossy(&env.ok(&["ps"]).stdout).into_owned();
    assert!(text.contains(&format!("unreadable: {why}")), "{text}");

    let o = env.run(&["rm", &id]);
    assert_fails_with(&o, &[&id, &why, "--force"]);
    assert!(dir.join("sandbox.json").exists(), "rm kept the record");

    let o = env.ok(&["rm", "--force", &id]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(!dir.exists(), "rm --force left {}: {out}", dir.display());
    assert!(
        env.ok_json(&["ps", "--json"]) == serde_json::json!([]),
        "ps after rm --force"
    );
}
