//! CRI RunPodSandbox / StopPodSandbox / RemovePodSandbox through a private containerd,
//! runtime handler `sandnet` (this shim: a VM) against `runc` (a pause container) in the
//! same run, and `sandnet run` doing the same work (netns, CNI ADD, VM) without
//! containerd, for the shim's and containerd's overhead. Root; the guest kernel and
//! `scripts/build-agent` as for the tests. `SANDNET_BENCH_ROUNDS` (default 3) rounds after
//! one warm-up; medians in milliseconds. "RunPodSandbox - sandbox total" is, per round,
//! the CRI call's time outside the sandbox's own `total_ms` (containerd and the shim).

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Containerd, Options};
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

fn sandnet_bin() -> PathBuf {
    let p = std::path::Path::new(common::SHIM).with_file_name("sandnet");
    if !p.exists() {
        let st = Command::new(env!("CARGO"))
            .args(["build", "--release", "-p", "sandnet"])
            .status()
            .expect("cargo build sandnet");
        assert!(st.success());
    }
    p
}

fn main() {
    let rounds: usize = std::env::var("SANDNET_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    // Debian's runc shim always puts its socket and fifos under /run/containerd: remove
    // those directories again at the end if this run made them (only when empty).
    let made_run_containerd = !std::path::Path::new("/run/containerd").exists();
    let cd = Containerd::start("bench", Options::default());
    let mut rows = vec![];
    for handler in ["runc", "sandnet"] {
        let (mut runp, mut stopp, mut rmp, mut vm) = (vec![], vec![], vec![], vec![]);
        for r in 0..=rounds {
            let name = format!("bench-{handler}-{r}");
            let t = Instant::now();
            let id = cd
                .run_pod(&name, handler)
                .unwrap_or_else(|e| panic!("RunPodSandbox {handler}: {e}\n{}", cd.log()));
            let run_ms = ms(t);
            let total = std::fs::read_to_string(cd.state().join(&id).join("sandbox.json"))
                .ok()
                .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
                .and_then(|v| v["timings"]["total_ms"].as_f64());
            let t = Instant::now();
            cd.stop_pod(&id).expect("StopPodSandbox");
            let stop_ms = ms(t);
            let t = Instant::now();
            cd.remove_pod(&id).expect("RemovePodSandbox");
            let rm_ms = ms(t);
            if r > 0 {
                runp.push(run_ms);
                stopp.push(stop_ms);
                rmp.push(rm_ms);
                // Per round: RunPodSandbox outside the sandbox's own time (the VM's boot
                // time varies by hundreds of ms under TCG; the difference does not).
                vm.extend(total.map(|t| run_ms - t));
            }
        }
        rows.push((
            handler,
            median(runp),
            median(stopp),
            median(rmp),
            median(vm),
        ));
    }
    // `sandnet run` with the same network, config and state root, in containerd's netns.
    let bin = sandnet_bin();
    let (mut run_wall, mut run_total, mut rm_wall) = (vec![], vec![], vec![]);
    let cache = cd.dir.join("cni-cache");
    for r in 0..=rounds {
        let id = format!("benchrun{r}");
        let t = Instant::now();
        let o = Command::new("ip")
            .args(["netns", "exec", &cd.ns.name])
            .arg(&bin)
            .arg("--state-dir")
            .arg(cd.state())
            .args(["run", "--name", &id, "--json", "--cni-conf-dir"])
            .arg(cd.dir.join("net.d"))
            .args(["--cni-bin-dir", "/usr/lib/cni", "--cni-cache-dir"])
            .arg(&cache)
            .arg("--config")
            .arg(cd.dir.join("sandnet.toml"))
            .output()
            .unwrap();
        let wall = ms(t);
        assert!(
            o.status.success(),
            "sandnet run: {}",
            common::text(&o.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let t = Instant::now();
        let rm = Command::new("ip")
            .args(["netns", "exec", &cd.ns.name])
            .arg(&bin)
            .arg("--state-dir")
            .arg(cd.state())
            .args(["rm", &id])
            .output()
            .unwrap();
        assert!(
            rm.status.success(),
            "sandnet rm: {}",
            common::text(&rm.stderr)
        );
        if r > 0 {
            run_wall.push(wall);
            run_total.extend(v["timings"]["total_ms"].as_f64().map(|t| wall - t));
            rm_wall.push(ms(t));
        }
    }
    println!("CRI through a private containerd (medians of {rounds} rounds, ms):");
    println!(
        "{:<10} {:>14} {:>15} {:>17} {:>30}",
        "handler",
        "RunPodSandbox",
        "StopPodSandbox",
        "RemovePodSandbox",
        "RunPodSandbox - sandbox total"
    );
    for (h, a, b, c, d) in &rows {
        println!("{h:<10} {a:>14.0} {b:>15.0} {c:>17.0} {d:>30.0}");
    }
    let (rw, rt, rmw) = (median(run_wall), median(run_total), median(rm_wall));
    println!(
        "sandnet run (netns + CNI ADD + VM, no containerd): wall {rw:.0} ms, of it outside \
         its total_ms {rt:.0} ms; sandnet rm: wall {rmw:.0} ms"
    );
    println!(
        "containerd (netns, CNI ADD, snapshot) + the shim (start, Create) around the sandbox: \
         {:.0} ms; runc's whole RunPodSandbox (the same containerd work + its shim + the pause \
         container): {:.0} ms",
        rows[1].4, rows[0].1
    );
    drop(cd);
    if made_run_containerd {
        for d in ["runc/k8s.io", "runc", "fifo", "s", ""] {
            let _ = std::fs::remove_dir(std::path::Path::new("/run/containerd").join(d));
        }
    }
}
