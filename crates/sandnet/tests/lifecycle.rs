//! The sandbox life cycle end to end, as a user runs it: the real `sandnet` binary, Debian's
//! real CNI plugins, real QEMU (TCG here). Every test makes its own "host" network namespace
//! and runs `sandnet` inside it (`ip netns exec HOST sandnet …`), so the bridge, the veth host
//! ends and the iptables rules land there, never in the root namespace; each has its own
//! state dir, CNI conf, cache and host-local data dirs, a bridge and subnet of its own, and a
//! guard that removes whatever a failing test left (`sandnet rm --force`, `sandnet gc`, the
//! namespaces).
//!
//! After every run, failed or removed, [`Host::assert_clean`] checks that the host is as it
//! was: no `sandnet-<id>` namespace, no veth in the host namespace, no ingress qdisc, no
//! host-local reservation, no CNI cache entry, NAT and filter rules as before the first run,
//! no process mentioning the sandbox, no state.
//!
//! Needs root, the static guest agent (`scripts/build-agent`) and the cached guest kernel
//! (`scripts/build-kernel`), as `scripts/test` provides.

#[path = "common/host.rs"]
mod host;

use host::*;
use sandnet_testkit::pids_mentioning;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};
// ---------------------------------------------------------------------------------------
// 1. run → ping both ways → rm leaves nothing

#[test]
fn run_ping_exec_rm_leaves_nothing() {
    let h = Host::new("basic");
    h.write_conflist(&[]);
    let id = h.new_id("basic");
    let t = Instant::now();
    let v = h.run_ok(&id, &[]);
    eprintln!(
        "run took {:.1} s, timings {}",
        t.elapsed().as_secs_f64(),
        v["timings"]
    );
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["netns"], format!("sandnet-{id}"));
    let ip = h.guest_ip(&v);
    // The address is the one host-local handed out, to this container.
    let held = std::fs::read_to_string(h.ipam().join(&h.net).join(&ip))
        .unwrap_or_else(|e| panic!("no reservation for {ip}: {e}"));
    assert!(held.starts_with(&format!("sandnet-{id}")), "{held:?}");
    // The guest's route table has the default route via the bridge.
    let routes = v["routes"].to_string();
    assert!(routes.contains(&h.gateway()), "{routes}");
    for k in [
        "netns_ms",
        "cni_add_ms",
        "attach_ms",
        "boot_ms",
        "agent_ms",
        "total_ms",
    ] {
        assert!(v["timings"][k].is_u64(), "timing {k}: {}", v["timings"]);
    }
    // The CNI cache holds the attachment in libcni's layout.
    let entry = h
        .cache()
        .join("results")
        .join(format!("{}-sandnet-{id}-eth0", h.net));
    assert!(entry.exists(), "{:?}", Host::files_under(&h.cache()));
    // The masquerade rule names the container.
    assert!(
        h.iptables("nat").contains(&format!("sandnet-{id}")),
        "{}",
        h.iptables("nat")
    );
    // ps and inspect see it.
    let o = h.sandnet(&["ps", "--json"]);
    let ps: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(ps[0]["id"], id.as_str());
    assert_eq!(ps[0]["status"], "running");
    let o = h.sandnet(&["inspect", &id, "--json"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains(&ip));

    // Host → guest.
    assert!(
        h.ping(&ip),
        "ping {ip} from the host namespace{}",
        h.log_of(&id)
    );
    // Guest → the bridge gateway.
    let gw = h.gateway();
    let o = h.sandnet(&["exec", &id, "--", "ping", "-c1", "-W3", &gw]);
    assert!(
        o.status.success(),
        "exec ping {gw}: {}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    // The exit status passes through.
    let o = h.sandnet(&["exec", &id, "--", "sh", "-c", "exit 7"]);
    assert_eq!(o.status.code(), Some(7));

    let t = Instant::now();
    let o = h.sandnet(&["rm", "--json", &id]);
    assert!(o.status.success(), "rm: {}", text(&o.stderr));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    eprintln!(
        "rm took {:.2} s, timings {}",
        t.elapsed().as_secs_f64(),
        r[0]["timings"]
    );
    assert_eq!(r[0]["id"], id.as_str());
    for k in [
        "qemu_stop_ms",
        "detach_ms",
        "cni_del_ms",
        "netns_ms",
        "total_ms",
    ] {
        assert!(r[0]["timings"][k].is_u64(), "rm timing {k}: {r}");
    }
    let actions = r[0]["actions"].to_string();
    assert!(actions.contains("CNI DEL"), "{actions}");
    h.assert_clean("rm");
    // rm again: nothing there, still success.
    let o = h.sandnet(&["rm", &id]);
    assert!(o.status.success());
    assert!(
        text(&o.stderr).contains("no sandbox"),
        "{}",
        text(&o.stderr)
    );
}

// ---------------------------------------------------------------------------------------
// 2. Failure injection: every failed run rolls back; the host is as it was.

#[test]
fn failing_plugin_after_bridge_is_rolled_back() {
    let h = Host::new("fail");
    // Prints a CNI error object on ADD; DEL (the rollback) succeeds.
    h.write_plugin(
        "failer",
        r#"case "$CNI_COMMAND" in
ADD) cat >/dev/null; echo '{"cniVersion":"1.0.0","code":11,"msg":"injected failure","details":"by the test"}'; exit 1;;
VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0"]}';;
*) cat >/dev/null; exit 0;;
esac
"#,
    );
    h.write_conflist(&[json!({"type":"failer"})]);
    let id = h.new_id("fail");
    let bin = h.bin();
    let err = h.run_fails(
        &id,
        &[
            "--cni-bin-dir",
            bin.to_str().unwrap(),
            "--cni-bin-dir",
            DEBIAN_BIN,
        ],
    );
    for needle in ["failer", "injected failure", "11"] {
        assert!(err.contains(needle), "{err:?} should mention {needle:?}");
    }
    // bridge's ADD ran (the bridge exists) and was DELeted.
    assert!(
        !h.ip_json_if_exists(&["link", "show", "dev", &h.bridge])
            .as_array()
            .unwrap()
            .is_empty(),
        "the bridge plugin should have run"
    );
    h.assert_clean("a failing plugin");
}

#[test]
fn hanging_plugin_is_killed_and_rolled_back() {
    let h = Host::new("hang");
    h.write_plugin(
        "hanger",
        r#"case "$CNI_COMMAND" in
ADD) exec sleep 600;;
VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["1.0.0"]}';;
*) cat >/dev/null; exit 0;;
esac
"#,
    );
    h.write_conflist(&[json!({"type":"hanger"})]);
    h.write_config(&["[cni]", "timeout = 2"]);
    let id = h.new_id("hang");
    let bin = h.bin();
    let t = Instant::now();
    let err = h.run_fails(
        &id,
        &[
            "--cni-bin-dir",
            bin.to_str().unwrap(),
            "--cni-bin-dir",
            DEBIAN_BIN,
        ],
    );
    let took = t.elapsed();
    assert!(err.contains("hanger"), "{err}");
    assert!(
        err.contains("time") || err.contains("2s") || err.contains("killed"),
        "{err}"
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
    wait_until("the plugin to be gone", Duration::from_secs(10), || {
        pids_mentioning(&format!("sandnet-{id}")).is_empty()
    });
    h.assert_clean("a hanging plugin");
}

#[test]
fn missing_plugin_binary_is_rolled_back() {
    let h = Host::new("missing");
    h.write_conflist(&[json!({"type":"no-such-plugin"})]);
    let id = h.new_id("missing");
    let err = h.run_fails(&id, &["--cni-bin-dir", DEBIAN_BIN]);
    assert!(err.contains("no-such-plugin"), "{err}");
    h.assert_clean("a missing plugin");
}

#[test]
fn invalid_conflist_names_the_file() {
    let h = Host::new("invalid");
    h.write_conf_file(
        "10-broken.conflist",
        "{\"cniVersion\": \"1.0.0\", \"name\": ",
    );
    let id = h.new_id("invalid");
    let err = h.run_fails(&id, &[]);
    assert!(err.contains("10-broken.conflist"), "{err}");
    // A conflist without plugins, too.
    h.write_conf_file(
        "20-empty.conflist",
        r#"{"cniVersion":"1.0.0","name":"x","plugins":[]}"#,
    );
    let err = h.run_fails(&id, &[]);
    assert!(err.contains("20-empty.conflist"), "{err}");
    h.assert_clean("an invalid conflist");
}

#[test]
fn missing_kernel_fails_and_rolls_back() {
    let h = Host::new("nokernel");
    h.write_conflist(&[]);
    h.write_config(&["kernel = \"/nope\""]);
    let id = h.new_id("nokernel");
    let err = h.run_fails(&id, &[]);
    assert!(err.contains("/nope"), "{err}");
    h.assert_clean("a missing kernel");
}

#[test]
fn qemu_killed_during_boot_rolls_back() {
    let h = Host::new("qkill");
    h.write_conflist(&[]);
    let id = h.new_id("qkill");
    // Under TCG: the QEMU of a KVM trial killed here would only make `run` fall back to
    // TCG (and succeed) on a machine whose KVM is broken.
    let mut child = h
        .run_cmd(&id, &[])
        .env("SANDNET_ACCEL", "tcg")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut qemu = None;
    wait_until("QEMU to start", Duration::from_secs(60), || {
        if let Some(st) = h.state_of(&id) {
            if st["status"] == "creating" {
                qemu = st["qemu_pid"].as_u64();
            }
        }
        qemu.is_some()
    });
    let qemu = qemu.unwrap() as u32;
    std::thread::sleep(Duration::from_millis(300));
    kill9(qemu);
    let o = wait_output(&mut child);
    assert!(!o.status.success(), "run should fail");
    let err = text(&o.stderr);
    assert!(err.contains("QEMU"), "{err}");
    h.assert_clean("QEMU killed during boot");
}

/// `run` killed while the record names each step (under `ip netns exec`): the supervisor
/// notices and rolls back by itself.
#[test]
fn run_killed_at_each_step_supervisor_rolls_back() {
    let h = Host::new("runkill");
    h.write_conflist(&[]);
    for step in ["netns", "cni", "attach", "image", "boot"] {
        let id = h.new_id(&format!("k{step}"));
        let mut child = h
            .run_cmd(&id, &[])
            .env("SANDNET_STEP_PAUSE_MS", "400")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        h.wait_for_step(&id, step);
        child.kill().unwrap();
        h.assert_still_at(&id, step);
        let _ = child.wait();
        wait_until(
            "the supervisor to roll back",
            Duration::from_secs(60),
            || {
                !h.state().join(&id).join("sandbox.json").exists()
                    && pids_mentioning(&id).is_empty()
            },
        );
        h.assert_clean(&format!("run killed at step {step}"));
    }
}

/// The supervisor dies while the guest boots: `run` notices (its pipe closes without a
/// result), cleans up from the persisted state and says so.
#[test]
fn supervisor_killed_during_boot_run_cleans_up() {
    let h = Host::new("svboot");
    h.write_conflist(&[]);
    let id = h.new_id("svboot");
    let mut child = h
        .run_cmd(&id, &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut sup = None;
    wait_until("QEMU to start", Duration::from_secs(60), || {
        if let Some(st) = h.state_of(&id) {
            if st["status"] == "creating" && st["qemu_pid"].is_u64() {
                sup = st["supervisor_pid"].as_u64();
            }
        }
        sup.is_some()
    });
    kill9(sup.unwrap() as u32);
    let o = wait_output(&mut child);
    assert!(!o.status.success(), "run should fail");
    let err = text(&o.stderr);
    assert!(err.contains("died before the sandbox was ready"), "{err}");
    h.assert_clean("the supervisor killed during boot");
}

#[test]
fn supervisor_killed_mid_run_gc_cleans() {
    let h = Host::new("svkill");
    h.write_conflist(&[]);
    let id = h.new_id("svkill");
    let v = h.run_ok(&id, &[]);
    let ip = h.guest_ip(&v);
    let st = h.state_of(&id).unwrap();
    let sup = st["supervisor_pid"].as_u64().unwrap() as u32;
    let qemu = st["qemu_pid"].as_u64().unwrap() as u32;
    kill9(sup);
    wait_until("the supervisor to die", Duration::from_secs(10), || {
        !Path::new(&format!("/proc/{sup}/cmdline")).exists()
            || std::fs::read(format!("/proc/{sup}/cmdline")).is_ok_and(|b| b.is_empty())
    });
    // QEMU lives on, and the guest with it; ps says what happened.
    assert!(Path::new(&format!("/proc/{qemu}")).exists());
    let ps: Value = serde_json::from_slice(&h.sandnet(&["ps", "--json"]).stdout).unwrap();
    assert_eq!(ps[0]["status"], "supervisor-dead", "{ps}");
    // exec/inspect say so clearly.
    let o = h.sandnet(&["exec", &id, "--", "true"]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("supervisor"),
        "{}",
        text(&o.stderr)
    );
    let g = h.gc();
    assert_eq!(g["sandboxes"], json!([id]), "{g}");
    h.assert_clean("gc after the supervisor was killed");
    assert!(!h.ping(&ip));
}

// ---------------------------------------------------------------------------------------
// 3. Ten sandboxes at once

#[test]
fn ten_concurrent_sandboxes_distinct_addresses_all_removed() {
    const N: usize = 10;
    let h = Host::new("ten");
    h.write_conflist(&[]);
    h.write_config(&["default_memory = 128"]);
    let ids: Vec<String> = (0..N).map(|i| h.new_id(&format!("t{i}"))).collect();
    let t = Instant::now();
    let outs: Vec<(Output, f64)> = std::thread::scope(|s| {
        let hs: Vec<_> = ids
            .iter()
            .map(|id| {
                let h = &h;
                s.spawn(move || {
                    let t = Instant::now();
                    let o = h.run(id, &[]);
                    (o, t.elapsed().as_secs_f64())
                })
            })
            .collect();
        hs.into_iter().map(|j| j.join().unwrap()).collect()
    });
    let wall = t.elapsed().as_secs_f64();
    let mut ips = BTreeSet::new();
    let mut boots = vec![];
    for ((o, secs), id) in outs.iter().zip(&ids) {
        assert!(
            o.status.success(),
            "run {id} failed after {secs:.1} s: {}{}",
            text(&o.stderr),
            h.log_of(id)
        );
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        ips.insert(h.guest_ip(&v));
        boots.push(v["timings"]["boot_ms"].as_u64().unwrap_or(0));
    }
    boots.sort();
    eprintln!(
        "{N} concurrent runs: wall {wall:.1} s, boot_ms min {} median {} max {}",
        boots[0],
        boots[N / 2],
        boots[N - 1]
    );
    assert_eq!(ips.len(), N, "distinct addresses: {ips:?}");
    for ip in &ips {
        assert!(h.ping(ip), "ping {ip}");
    }
    let t = Instant::now();
    std::thread::scope(|s| {
        for id in &ids {
            let h = &h;
            s.spawn(move || h.rm(id));
        }
    });
    eprintln!("{N} concurrent rm: {:.2} s", t.elapsed().as_secs_f64());
    h.assert_clean("removing ten sandboxes");
}

// ---------------------------------------------------------------------------------------
// 4. The seed's configuration

/// The seed's 0.2.0 `10-mynet.conf` (bridge cni0, 172.19.0.0/24), with only host-local's
/// `dataDir` added so its reservations land in the test's dir.
#[test]
fn seed_0_2_0_conf_end_to_end() {
    let mut h = Host::new("seed");
    let mut conf: Value = serde_json::from_str(SEED_CONF).unwrap();
    conf["ipam"]["dataDir"] = json!(h.ipam());
    h.write_conf_file("10-mynet.conf", &conf.to_string());
    // The seed's bridge is cni0: private to this host namespace.
    h.bridge = "cni0".into();
    h.net = "mynet".into();
    h.prefix = "172.19.0".into();
    let id = h.new_id("seed");
    let v = h.run_ok(&id, &[]);
    let ip = h.guest_ip(&v);
    assert!(ip.starts_with("172.19.0."), "{ip}");
    let addrs = v["interfaces"].to_string();
    assert!(addrs.contains(&format!("{ip}/24")), "{addrs}");
    let routes = v["routes"].to_string();
    assert!(routes.contains("172.19.0.1"), "{routes}");
    assert!(h
        .ip_json(&["addr", "show", "dev", "cni0"])
        .to_string()
        .contains("172.19.0.1"));
    // 0.2.0's result cached in libcni's layout, `ip4` and all.
    let c: Value = serde_json::from_slice(
        &std::fs::read(
            h.cache()
                .join("results")
                .join(format!("mynet-sandnet-{id}-eth0")),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(c["kind"], "cniCacheV1");
    assert_eq!(c["result"]["cniVersion"], "0.2.0");
    assert_eq!(c["result"]["ip4"]["ip"], format!("{ip}/24"));
    assert!(h.ping(&ip), "ping {ip}{}", h.log_of(&id));
    let o = h.sandnet(&["exec", &id, "--", "ping", "-c1", "-W3", "172.19.0.1"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    h.rm(&id);
    h.assert_clean("rm (seed config)");
}

/// With an empty conf dir sandnet uses an embedded network equal to the seed's.
#[test]
fn embedded_default_network_is_the_seed_conf() {
    let embedded: Value = serde_json::from_str(sandnet_runtime::podnet::DEFAULT_NETWORK).unwrap();
    let seed: Value = serde_json::from_str(SEED_CONF).unwrap();
    assert_eq!(embedded, seed);
    // And it is what an empty (or absent) conf dir gives.
    let dir = std::env::temp_dir().join(format!("snlc-emptyconf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let l = sandnet_runtime::podnet::network_from_dir(&dir).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(l.name, "mynet");
    assert_eq!(l.cni_version, "0.2.0");
    let from_absent =
        sandnet_runtime::podnet::network_from_dir(Path::new("/nonexistent/sandnet")).unwrap();
    assert_eq!(from_absent.name, "mynet");
}
