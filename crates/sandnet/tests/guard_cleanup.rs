//! The guard and the shapers leave nothing behind: `rm`, and `gc` after the supervisor and
//! QEMU were killed, take the pod link's HTB (its classes and u32 rules with it) and the
//! tap's TBF out of a pod namespace the caller owns (sandnet does not delete it).

#[path = "common/guest.rs"]
mod guest;

use guest::{Env, Sandbox};
use sandnet_testkit::PodPair;
use serde_json::Value;
use std::time::{Duration, Instant};

/// What tc shows of sandnet's in the pod namespace: qdiscs other than the defaults and
/// any filter on its links.
fn tc_leftovers(p: &PodPair) -> Vec<String> {
    let mut out = vec![];
    for dev in p.pod.link_names() {
        if dev == "lo" {
            continue;
        }
        for q in p
            .pod
            .tc_json(&["qdisc", "show", "dev", &dev])
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let kind = q["kind"].as_str().unwrap_or("");
            if !matches!(kind, "noqueue" | "pfifo_fast" | "fq_codel" | "mq") {
                out.push(format!("{dev}: qdisc {kind} {}", q["handle"]));
            }
        }
        for parent in ["root", "ingress"] {
            let f = p.pod.tc_json(&["filter", "show", "dev", &dev, parent]);
            if f.as_array().is_some_and(|a| !a.is_empty()) {
                out.push(format!("{dev}: {parent} filters {f}"));
            }
        }
    }
    out
}

fn kinds(p: &PodPair, dev: &str) -> Vec<String> {
    p.pod
        .tc_json(&["qdisc", "show", "dev", dev])
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|q| q["kind"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Runs a guarded, shaped sandbox in `p` (removed by its guard, also when the test fails
/// half-way); returns it and its tap.
fn run<'a>(env: &'a Env, p: &PodPair, tag: &str) -> (Sandbox<'a>, String) {
    let (sb, v) = Sandbox::run(
        env,
        tag,
        &p.pod.name,
        &["--bandwidth", "ingressRate=8M,egressRate=8M"],
    );
    assert!(v["interfaces"].is_array(), "{v}");
    let tap = p
        .pod
        .link_names()
        .into_iter()
        .find(|l| l.starts_with("sntap"))
        .expect("a tap");
    assert!(
        kinds(p, "eth0").contains(&"htb".to_string()),
        "guard on eth0"
    );
    assert!(
        kinds(p, &tap).contains(&"tbf".to_string()),
        "shaper on {tap}"
    );
    (sb, tap)
}

fn assert_no_leftovers(p: &PodPair, tap: &str, after: &str) {
    assert!(p.pod.link(tap).is_none(), "{tap} left after {after}");
    let left = tc_leftovers(p);
    assert!(left.is_empty(), "after {after}: {left:#?}");
}

#[test]
fn rm_takes_the_guard_and_the_shapers_out_of_the_callers_netns() {
    let env = Env::new("gcl-rm");
    let p = PodPair::new("gclrm");
    let (sb, tap) = run(&env, &p, "gclrm");
    env.ok(&["rm", &sb.id]);
    assert_no_leftovers(&p, &tap, "rm");
    assert!(p.pod.link("eth0").is_some(), "the caller's link stays");
}

#[test]
fn gc_after_a_crash_takes_them_out_too() {
    let env = Env::new("gcl-gc");
    let p = PodPair::new("gclgc");
    let (sb, tap) = run(&env, &p, "gclgc");
    let rec: Value =
        serde_json::from_slice(&std::fs::read(sb.dir().join("sandbox.json")).expect("record"))
            .expect("record JSON");
    for k in ["supervisor_pid", "qemu_pid"] {
        let pid = rec[k].as_u64().unwrap_or_else(|| panic!("{k} in {rec}")) as i32;
        // SAFETY: plain kill(2) of a process this test started (through sandnet).
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    // The record still names a sandbox whose processes are gone: gc removes what it left.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let o = env.run(&["gc"]);
        if o.status.success() && !sb.dir().exists() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gc did not finish: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_no_leftovers(&p, &tap, "gc after SIGKILL");
}
