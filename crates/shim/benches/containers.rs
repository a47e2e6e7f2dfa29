//! Containers through CRI, runtime handler `sandnet` (inside the pod's VM) against `runc`
//! in the same run, one pod each through one private containerd:
//! - CreateContainer + StartContainer until the container's first output line is in its
//!   CRI log file;
//! - ExecSync round trip (`true`);
//! - reading a 64 MiB file of a bind-mounted host directory inside the container (a new
//!   file each round, so the guest's page cache is cold), against the same read on the
//!   host: the container's time is the ExecSync round trip less an empty one's.
//!
//! Run: `cargo bench -p sandnet-shim --bench containers` (root; the guest kernel and
//! `scripts/build-agent` as for the tests). `SANDNET_BENCH_ROUNDS` (default 5) rounds
//! after one warm-up; medians in milliseconds. Prints the accelerator the pod's VM used.

#[path = "../tests/common/mod.rs"]
mod common;

use common::containers::sh;
use common::{Containerd, Options};
use k8s_cri::v1::Mount;
use std::time::{Duration, Instant};

const BIG: usize = 64 << 20;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

struct Figures {
    start: Vec<f64>,
    exec: Vec<f64>,
    read: Vec<f64>,
    host_read: Vec<f64>,
}

fn bench(cd: &Containerd, handler: &str, rounds: usize, data: &std::path::Path) -> Figures {
    let pod_name = format!("bench-{handler}");
    let pod = cd
        .run_pod(&pod_name, handler)
        .unwrap_or_else(|e| panic!("RunPodSandbox {handler}: {e}\n{}", cd.log()));
    if handler == "sandnet" {
        let st =
            std::fs::read_to_string(cd.state().join(&pod).join("sandbox.json")).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&st).unwrap_or_default();
        println!(
            "sandnet pod's accelerator: {} ({})",
            v["accel"].as_str().unwrap_or("?"),
            v["accel_reason"].as_str().unwrap_or("?")
        );
    }
    let mut f = Figures {
        start: vec![],
        exec: vec![],
        read: vec![],
        host_read: vec![],
    };
    for r in 0..=rounds {
        let mut cfg = cd.command_config(
            &format!("c{r}"),
            sh("echo first-line; exec /bin/busybox sleep 100000"),
        );
        cfg.mounts = vec![Mount {
            container_path: "/data".into(),
            host_path: data.display().to_string(),
            readonly: true,
            ..Default::default()
        }];
        let t = Instant::now();
        let id = cd.launch(&pod, &pod_name, cfg);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !cd.container_log(&id).contains("first-line") {
            assert!(Instant::now() < deadline, "no first line from {handler}");
            std::thread::sleep(Duration::from_millis(2));
        }
        let start = ms(t);
        let mut empty = vec![];
        for _ in 0..3 {
            let t = Instant::now();
            let r = cd.exec_sync(&id, &["/bin/busybox", "true"]).expect("exec");
            assert_eq!(r.exit_code, 0);
            empty.push(ms(t));
        }
        let empty = median(empty);
        // A file of its own per round and runtime: never in the guest's cache yet.
        let name = format!("big-{handler}-{r}");
        let bytes: Vec<u8> = (0..BIG).map(|i| (i % 253) as u8).collect();
        std::fs::write(data.join(&name), &bytes).unwrap();
        let t = Instant::now();
        assert_eq!(std::fs::read(data.join(&name)).unwrap().len(), BIG);
        let host = ms(t);
        let t = Instant::now();
        let out = cd
            .exec_sync(
                &id,
                &[
                    "/bin/busybox",
                    "sh",
                    "-c",
                    &format!(
                        "/bin/busybox cat /data/{name} > /dev/null && /bin/busybox stat -c %s /data/{name}"
                    ),
                ],
            )
            .expect("exec read");
        let read = ms(t) - empty;
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            BIG.to_string(),
            "{handler}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::fs::remove_file(data.join(&name));
        let _ = cd.stop_container(&id, 0);
        let _ = cd.remove_container(&id);
        if r > 0 {
            f.start.push(start);
            f.exec.push(empty);
            f.read.push(read);
            f.host_read.push(host);
        }
    }
    cd.stop_pod(&pod).expect("StopPodSandbox");
    cd.remove_pod(&pod).expect("RemovePodSandbox");
    f
}

fn main() {
    let rounds: usize = std::env::var("SANDNET_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let cd = Containerd::start("cbench", Options::default());
    let data = cd.dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let runc = bench(&cd, "runc", rounds, &data);
    let sn = bench(&cd, "sandnet", rounds, &data);
    println!("medians of {rounds} rounds after a warm-up, ms");
    println!(
        "{:<52} {:>9} {:>9} {:>14}",
        "", "runc", "sandnet", "sandnet/runc"
    );
    let row = |label: &str, a: Vec<f64>, b: Vec<f64>| {
        let (a, b) = (median(a), median(b));
        println!("{label:<52} {a:>9.1} {b:>9.1} {:>14.2}", b / a);
    };
    row(
        "create + start until the first log line",
        runc.start,
        sn.start,
    );
    row("ExecSync round trip (true)", runc.exec, sn.exec);
    row(
        "64 MiB read in the container",
        runc.read.clone(),
        sn.read.clone(),
    );
    let host = median(sn.host_read.clone());
    println!(
        "{:<52} {:>9.1} {:>9.1} {:>14}",
        "64 MiB read on the host (same files)",
        median(runc.host_read),
        host,
        ""
    );
    println!(
        "container read / host read: runc {:.2}, sandnet {:.2}",
        median(runc.read) / host,
        median(sn.read) / host
    );
}
