//! `sandnet stats` with a real guest (issue 17): the real `sandnet` binary boots a guest
//! (TCG here) through Debian's bridge plugin, in a "host" namespace of the test's own (see
//! `common/host.rs`). Known traffic goes through it: pings of a known size from the host
//! namespace into the guest, and pings the guest sends from an address that is not its
//! own, which the guard (`guest_spoofing = block`, the default) drops. Then:
//!
//! - the tap's and the pod link's counters of `stats --json` lie between two readings of
//!   `ip -s -j link` (before and after), and the guard's spoofed drops between two of
//!   `tc -s class show` (its sink class `5a4e:2`); the pings show in them;
//! - the guest's own counters agree with the tap's (what the tap sent, the guest received,
//!   and the other way);
//! - `stats --prometheus` (every running sandbox, and by id) parses: every sample's metric
//!   has `# TYPE … counter`, names and labels are valid, values are numbers, and the
//!   samples carry the sandbox and interface labels and the figures of `--json`.
//!
//! Needs root, the static guest agent (`scripts/build-agent`) and the cached guest kernel,
//! as `scripts/test` provides.

#[path = "common/host.rs"]
mod host;

use host::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Echo requests sent into the guest.
const PINGS: u64 = 20;
/// Their payload (ICMP data bytes).
const SIZE: u64 = 1000;
/// Echo requests the guest sends from a foreign address.
const SPOOFED: u64 = 3;

/// `ip -s -j link show dev DEV` in namespace `ns`: the `stats64` object.
fn ip_stats(ns: &str, dev: &str) -> Value {
    let o = sh_ok("ip", &["-s", "-j", "-n", ns, "link", "show", "dev", dev]);
    let v: Value = serde_json::from_str(&o).unwrap_or_else(|e| panic!("ip -j: {e}: {o}"));
    v[0]["stats64"].clone()
}

/// The drops of the guard's sink class on `dev`, by `tc -s class show`.
fn sink_drops(ns: &str, dev: &str) -> u64 {
    let o = sh_ok("tc", &["-s", "-n", ns, "class", "show", "dev", dev]);
    sandnet_testkit::htb_class_drops(&o, "5a4e:2")
        .unwrap_or_else(|| panic!("no sink class 5a4e:2 on {dev}: {o}"))
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a counter: {v}"))
}

fn stats_json(h: &Host, id: &str) -> Value {
    let o = h.sandnet(&["stats", id, "--json"]);
    assert!(o.status.success(), "stats --json: {}", text(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o.stdout)))
}

/// Asserts `before <= got <= after` for each of `rx`/`tx` `bytes`/`packets`/`dropped`.
fn between(what: &str, got: &Value, before: &Value, after: &Value) {
    for dir in ["rx", "tx"] {
        for k in ["bytes", "packets", "dropped"] {
            let g = u(&got[format!("{dir}_{k}")]);
            let (b, a) = (u(&before[dir][k]), u(&after[dir][k]));
            assert!(
                b <= g && g <= a,
                "{what} {dir}_{k}: stats says {g}, ip -s link {b} before and {a} after"
            );
        }
    }
}

/// A sample of the Prometheus text format: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

fn valid_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

/// Parses the text format (0.0.4) strictly enough to catch what a scraper would refuse:
/// `# HELP` and `# TYPE` lines, each metric's TYPE before its samples and once, label
/// values quoted with `\\`, `\"` and `\n` escapes, values that are numbers.
fn parse_prometheus(t: &str) -> Result<(BTreeMap<String, String>, Vec<Sample>), String> {
    let mut types = BTreeMap::new();
    let mut samples = vec![];
    for line in t.lines().filter(|l| !l.is_empty()) {
        let bad = |why: &str| Err(format!("{why}: {line:?}"));
        if let Some(r) = line.strip_prefix("# TYPE ") {
            let Some((name, ty)) = r.split_once(' ') else {
                return bad("TYPE without a type");
            };
            if !valid_name(name) {
                return bad("TYPE of a bad name");
            }
            if types.insert(name.to_string(), ty.to_string()).is_some() {
                return bad("TYPE twice");
            }
            continue;
        }
        if let Some(r) = line.strip_prefix("# HELP ") {
            if !valid_name(r.split(' ').next().unwrap_or_default()) {
                return bad("HELP of a bad name");
            }
            continue;
        }
        if line.starts_with('#') {
            return bad("unknown comment line");
        }
        let Some(i) = line.find(['{', ' ']) else {
            return bad("sample without a value");
        };
        let (name, mut rest) = line.split_at(i);
        if !valid_name(name) {
            return bad("bad metric name");
        }
        let mut labels = BTreeMap::new();
        if let Some(mut r) = rest.strip_prefix('{') {
            loop {
                if let Some(after) = r.strip_prefix('}') {
                    r = after;
                    break;
                }
                let Some((k, after)) = r.split_once("=\"") else {
                    return bad("no label=\"value\"");
                };
                if !valid_name(k) || k.contains(':') {
                    return bad("bad label name");
                }
                let mut v = String::new();
                let mut chars = after.char_indices();
                let end = loop {
                    match chars.next() {
                        None => return bad("unterminated label value"),
                        Some((i, '"')) => break i,
                        Some((_, '\\')) => match chars.next().map(|c| c.1) {
                            Some('\\') => v.push('\\'),
                            Some('"') => v.push('"'),
                            Some('n') => v.push('\n'),
                            _ => return bad("bad escape"),
                        },
                        Some((_, c)) => v.push(c),
                    }
                };
                if labels.insert(k.to_string(), v).is_some() {
                    return bad("label twice");
                }
                r = &after[end + 1..];
                r = r.strip_prefix(',').unwrap_or(r);
            }
            rest = r;
        }
        let Ok(value) = rest.trim_start_matches(' ').parse::<f64>() else {
            return bad("value not a number");
        };
        if !types.contains_key(name) {
            return bad("sample before (or without) its TYPE");
        }
        samples.push((name.to_string(), labels, value));
    }
    Ok((types, samples))
}

#[test]
fn stats_match_ip_and_tc_and_prometheus_parses() {
    let h = Host::new("stats");
    h.write_conflist(&[]);
    let id = h.new_id("stats");
    let v = h.run_ok(&id, &[]);
    let ip = h.guest_ip(&v);
    let pod = format!("sandnet-{id}");

    // An unknown sandbox is one line on stderr, exit 1.
    let o = h.sandnet(&["stats", "no-such-sandbox", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stdout));
    assert_eq!(text(&o.stderr).trim_end().lines().count(), 1);

    let s0 = stats_json(&h, &id);
    assert_eq!(s0["id"], id.as_str());
    let nics = s0["nics"].as_array().unwrap();
    assert_eq!(nics.len(), 1, "{s0}");
    assert_eq!(nics[0]["interface"], "eth0");
    let tap = nics[0]["tap"].as_str().expect("a tap").to_string();
    assert!(nics[0]["guard"]["link_guarded"] == true, "{s0}");

    // Known traffic: pings into the guest, spoofed pings out of it.
    sh_ok(
        "ip",
        &[
            "netns",
            "exec",
            &h.ns,
            "ping",
            "-q",
            "-c",
            &PINGS.to_string(),
            "-i",
            "0.05",
            "-W",
            "3",
            "-s",
            &SIZE.to_string(),
            &ip,
        ],
    );
    let foreign = format!("{}.99", h.prefix);
    let spoof = format!(
        "ip addr add {foreign}/24 dev eth0; ping -c {SPOOFED} -W 1 -I {foreign} {}; exit 0",
        h.gateway()
    );
    let o = h.sandnet(&["exec", &id, "--", "sh", "-c", &spoof]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));

    // stats between two readings of ip and tc.
    let (link0, tap0, sink0) = (
        ip_stats(&pod, "eth0"),
        ip_stats(&pod, &tap),
        sink_drops(&pod, "eth0"),
    );
    let s1 = stats_json(&h, &id);
    let (link1, tap1, sink1) = (
        ip_stats(&pod, "eth0"),
        ip_stats(&pod, &tap),
        sink_drops(&pod, "eth0"),
    );
    let n0 = &s0["nics"][0];
    let n1 = &s1["nics"][0];
    between("pod link", &n1["link"], &link0, &link1);
    between("tap", &n1["tap_counters"], &tap0, &tap1);
    let spoofed = u(&n1["guard"]["spoofed_dropped"]);
    assert!(
        sink0 <= spoofed && spoofed <= sink1,
        "spoofed_dropped {spoofed}, tc says {sink0} before and {sink1} after"
    );
    let delta = |n: &str, k: &str| u(&n1[n][k]) - u(&n0[n][k]);
    assert!(
        spoofed - u(&n0["guard"]["spoofed_dropped"]) >= SPOOFED,
        "{n0} → {n1}"
    );
    // The pings into the guest: through the pod link's receive side and out of the tap.
    // Each echo request is 14 + 20 + 8 + SIZE bytes on the wire.
    let frame = 14 + 20 + 8 + SIZE;
    for (n, k) in [("link", "rx"), ("tap_counters", "tx")] {
        assert!(
            delta(n, &format!("{k}_packets")) >= PINGS,
            "{n} {k}: {n0} → {n1}"
        );
        assert!(
            delta(n, &format!("{k}_bytes")) >= PINGS * frame,
            "{n} {k}: {n0} → {n1}"
        );
    }
    // The replies and the spoofed pings came out of the guest into the tap.
    assert!(delta("tap_counters", "rx_packets") >= PINGS + SPOOFED);

    // The guest's own view: over the test, what the tap sent it received and what it sent
    // the tap received (frames sent before the guest's driver was up never count in the
    // guest, so the totals may differ by those; a frame or two may pass between the
    // host's and the guest's readings).
    assert_eq!(n1["guest"]["name"], "eth0", "{s1}");
    assert!(delta("guest", "rx_packets") >= PINGS, "{n0} → {n1}");
    for (guest, tap, slack) in [
        ("rx_packets", "tx_packets", 3),
        ("tx_packets", "rx_packets", 3),
        ("rx_bytes", "tx_bytes", 3 * 1500),
        ("tx_bytes", "rx_bytes", 3 * 1500),
    ] {
        let (g, t) = (delta("guest", guest), delta("tap_counters", tap));
        assert!(
            g.abs_diff(t) <= slack,
            "guest {guest} grew by {g}, tap {tap} by {t}: {n0} → {n1}"
        );
    }

    // The table names the NIC, its tap and the guard's figures.
    let o = h.sandnet(&["stats", &id]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let table = text(&o.stdout);
    eprintln!("sandnet stats {id}:\n{table}");
    assert!(table.contains(&format!("NIC eth0 (tap {tap})")), "{table}");
    assert!(table.contains("spoofed dropped"), "{table}");

    // What a reading costs (the whole `sandnet` process, TCG guest).
    let mut ms: Vec<u128> = (0..5)
        .map(|_| {
            let t = std::time::Instant::now();
            stats_json(&h, &id);
            t.elapsed().as_millis()
        })
        .collect();
    ms.sort();
    eprintln!("stats --json: {ms:?} ms (median {} ms)", ms[2]);

    // Prometheus: every running sandbox of the state root, and this one by id.
    for args in [
        vec!["stats", "--prometheus"],
        vec!["stats", "--prometheus", &id],
    ] {
        let o = h.sandnet(&args);
        assert!(o.status.success(), "{args:?}: {}", text(&o.stderr));
        let t = text(&o.stdout);
        let (types, samples) = parse_prometheus(&t).unwrap_or_else(|e| panic!("{e}\n{t}"));
        assert!(types.values().all(|t| t == "counter"), "{types:?}");
        let mine: Vec<&Sample> = samples
            .iter()
            .filter(|(_, l, _)| l.get("sandbox") == Some(&id))
            .collect();
        let names: BTreeSet<&str> = mine.iter().map(|(n, _, _)| n.as_str()).collect();
        for want in [
            "sandnet_nic_tap_rx_bytes_total",
            "sandnet_nic_tap_tx_packets_total",
            "sandnet_nic_link_rx_bytes_total",
            "sandnet_nic_guest_rx_bytes_total",
            "sandnet_nic_spoofed_dropped_total",
        ] {
            assert!(names.contains(want), "{want} missing:\n{t}");
        }
        for (name, labels, value) in &mine {
            assert_eq!(labels.get("interface").map(String::as_str), Some("eth0"));
            // `sandnet run` made this sandbox, no shim: no pod labels.
            assert!(!labels.contains_key("pod_name"), "{name} {labels:?}");
            assert!(*value >= 0.0 && value.fract() == 0.0, "{name} {value}");
        }
        // Counters only grow: the scrape is at least the earlier JSON reading.
        let at = |name: &str| {
            mine.iter()
                .find(|(n, _, _)| n == name)
                .map(|(_, _, v)| *v as u64)
                .unwrap()
        };
        assert!(at("sandnet_nic_tap_tx_bytes_total") >= u(&n1["tap_counters"]["tx_bytes"]));
        assert!(at("sandnet_nic_spoofed_dropped_total") >= spoofed);
    }

    h.rm(&id);
    h.assert_clean("stats and rm");
    // With nothing running there is nothing to show, and that is no error.
    let o = h.sandnet(&["stats", "--prometheus"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "");
}

#[test]
fn prometheus_parser_refuses_what_a_scraper_would() {
    let ok = "# HELP a_total x\n# TYPE a_total counter\na_total{l=\"q\\\"\\\\\\n\",m=\"\"} 3\n";
    let (t, s) = parse_prometheus(ok).unwrap();
    assert_eq!(t["a_total"], "counter");
    assert_eq!(s[0].1["l"], "q\"\\\n");
    for bad in [
        "a_total 1\n",                          // no TYPE
        "# TYPE a counter\na{l=\"x} 1\n",       // unterminated
        "# TYPE a counter\na{l=\"\\t\"} 1\n",   // bad escape
        "# TYPE a counter\na 1x\n",             // not a number
        "# TYPE 1a counter\n",                  // bad name
        "# TYPE a counter\n# TYPE a counter\n", // twice
    ] {
        assert!(parse_prometheus(bad).is_err(), "{bad:?} parsed");
    }
}
