//! The soak test (issue 19): `scripts/soak 30` runs 30 cycles of `sandnet run` → ping →
//! `exec` → hot plug and unplug → `rm`, then RunPodSandbox → a container → StopPodSandbox
//! → RemovePodSandbox through a private containerd, in a throw-away network namespace of
//! its own, and this test asserts from its JSON lines that nothing grows: every host count
//! (links, filters, iptables rules, host-local reservations, CNI cache, state files,
//! mounts, processes) after the last cycle equals its count before the first, and the
//! supervisor's, the shim's and the pod supervisor's fds of cycles 2..N equal cycle 2's,
//! their RSS within +2 MiB of it; the counts taken while each cycle's pod ran are above
//! those before, so they do see what a cycle makes. Needs root, containerd, the static agent and the guest
//! kernel (`scripts/test` prepares them); builds the shim and the CRI client first (same
//! profile as this test). `SANDNET_SOAK_CYCLES` changes the number of cycles.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// RSS may differ this much from cycle 2's (KiB): a new process per cycle, plus noise.
const RSS_TOLERANCE_KIB: u64 = 2048;

const HOST_COUNTS: &[&str] = &[
    "links",
    "filters",
    "iptables",
    "reservations",
    "cni_cache",
    "state_files",
    "mounts",
    "processes",
];

const FDS: &[&str] = &["sup_fds", "shim_fds", "podsup_fds"];
const RSS: &[&str] = &["sup_rss_kib", "shim_rss_kib", "podsup_rss_kib"];

/// Where this test's `sandnet` is (`target/debug` or `target/release`).
fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_sandnet"))
        .parent()
        .expect("the binary's directory")
        .to_path_buf()
}

/// Builds the shim and the CRI client beside this test's `sandnet` (cargo shows progress).
fn build_shim_and_client(bin: &Path) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut c = Command::new(cargo);
    c.args([
        "build",
        "-p",
        "sandnet-shim",
        "--bin",
        "containerd-shim-sandnet-v2",
        "--example",
        "cri",
    ])
    .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    if bin.file_name().is_some_and(|n| n == "release") {
        c.arg("--release");
    }
    let st = c.status().expect("run cargo");
    assert!(
        st.success(),
        "cargo build of the shim and the CRI client: {st}"
    );
}

fn num(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

#[test]
fn thirty_cycles_through_the_cli_and_cri_leave_nothing_growing() {
    // SAFETY: plain syscall.
    assert_eq!(unsafe { libc::geteuid() }, 0, "run this test as root");
    let cycles: u64 = std::env::var("SANDNET_SOAK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let bin = bin_dir();
    build_shim_and_client(&bin);
    let out = sandnet_testkit::TempDir::new("soak");
    let lines = out.join("soak.jsonl");
    let t = std::time::Instant::now();
    // Its progress (a line per cycle) goes to this test's stdout and stderr.
    let st = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/soak"))
        .arg(cycles.to_string())
        .arg("--json")
        .arg(&lines)
        .env("SANDNET_SOAK_BIN", &bin)
        .env("SOAK_FD_TOLERANCE", "0")
        .env("SOAK_RSS_TOLERANCE_KIB", RSS_TOLERANCE_KIB.to_string())
        .stdin(Stdio::null())
        .status()
        .expect("run scripts/soak");
    let text = std::fs::read_to_string(&lines).unwrap_or_default();
    let rows: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    println!(
        "{cycles} cycles in {:.0} s; the script exited with {st}",
        t.elapsed().as_secs_f64()
    );
    let before = rows
        .iter()
        .find(|r| r["cycle"] == 0)
        .expect("the counts before the first cycle");
    let done: Vec<&Value> = rows.iter().filter(|r| num_or_0(r, "cycle") > 0).collect();
    assert_eq!(done.len() as u64, cycles, "cycles run (script: {st})");
    let last = done[done.len() - 1];
    for k in HOST_COUNTS {
        assert_eq!(
            num(last, k),
            num(before, k),
            "{k}: before the first cycle vs after the last"
        );
    }
    // The counts see what a cycle makes: taken while its pod and container ran, they are
    // above the counts before.
    for c in &done {
        for k in HOST_COUNTS {
            assert!(
                num(&c["during"], k) > num(before, k),
                "{k} while cycle {}'s pod ran: {} (before: {})",
                c["cycle"],
                c["during"][k],
                before[k]
            );
        }
    }
    let reference = done.get(1).copied().unwrap_or(done[0]);
    for c in done.iter().skip(1) {
        for k in FDS {
            assert_eq!(
                num(c, k),
                num(reference, k),
                "{k} of cycle {} against cycle 2's",
                c["cycle"]
            );
        }
        for k in RSS {
            assert!(
                num(c, k) <= num(reference, k) + RSS_TOLERANCE_KIB,
                "{k} of cycle {}: {} KiB, cycle 2 had {} KiB",
                c["cycle"],
                num(c, k),
                num(reference, k)
            );
        }
    }
    let summary = rows
        .iter()
        .find_map(|r| r.get("summary"))
        .expect("the script's summary");
    assert_eq!(summary["ok"], true, "the script's verdict: {summary}");
    assert!(st.success(), "scripts/soak: {st}");
}

fn num_or_0(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or(0)
}
