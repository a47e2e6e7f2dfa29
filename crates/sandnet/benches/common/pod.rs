//! What the sandbox benches share: pod namespaces of veths, and `sandnet` with a state
//! root and configuration of its own (gc'd and removed on drop).
#![allow(dead_code)]

use sandnet_testkit::{unique, TestNs};
use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

/// The runtime library driving this build's `sandnet`, with its state root at `state`.
pub fn runtime(state: &std::path::Path) -> sandnet_runtime::api::Runtime {
    sandnet_runtime::api::Runtime::new(
        state.to_path_buf(),
        env!("CARGO_BIN_EXE_sandnet"),
        vec!["--state-dir".into(), state.as_os_str().to_owned()],
    )
}

/// The accelerator `run --json` reported, with its reason shortened for a summary line.
pub fn accel_label(out: &Value) -> String {
    let why = out["accel_reason"].as_str().unwrap_or("");
    // A factory VM's reason names the VM first: one line for all of them.
    let (vm, why) = match why.split_once(": ") {
        Some((p, rest)) if p.starts_with("factory VM") => ("factory VM: ", rest),
        _ => ("", why),
    };
    let why = why
        .trim_end_matches(" (remembered for this boot)")
        .trim_end_matches("; using TCG");
    format!("{} ({vm}{why})", out["accel"].as_str().unwrap_or("?"))
}

/// The median (0 for no values).
pub fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

pub fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

pub fn ip_batch(ns: &TestNs, batch: &str) {
    let f = std::env::temp_dir().join(unique("hpbench-batch"));
    std::fs::File::create(&f)
        .and_then(|mut w| w.write_all(batch.as_bytes()))
        .expect("batch file");
    ns.ip(&["-batch", f.to_str().expect("path")]);
    let _ = std::fs::remove_file(f);
}

/// `n` veths `{prefix}{i}` in `pod` with peers in `host`, addressed `10.{base+i}.0.2/24`.
pub fn veths(pod: &TestNs, host: &TestNs, prefix: &str, base: usize, n: usize) {
    let mut b = String::new();
    let mut hb = String::new();
    for i in 0..n {
        b += &format!(
            "link add {prefix}{i} type veth peer name h{prefix}{i} netns {}\n\
             addr add 10.{}.0.2/24 dev {prefix}{i}\nlink set {prefix}{i} up\n",
            host.name,
            base + i
        );
        hb += &format!(
            "addr add 10.{}.0.1/24 dev h{prefix}{i}\nlink set h{prefix}{i} up\n",
            base + i
        );
    }
    ip_batch(pod, &b);
    ip_batch(host, &hb);
}

pub struct Sandnet {
    pub state: PathBuf,
    pub config: PathBuf,
}

impl Sandnet {
    pub fn new(config: &str) -> Sandnet {
        let state = std::env::temp_dir().join(unique("hpbench-state"));
        let config_path = std::env::temp_dir().join(format!("{}.toml", unique("hpbench")));
        std::fs::write(&config_path, config).expect("config");
        Sandnet {
            state,
            config: config_path,
        }
    }

    pub fn cmd(&self, args: &[&str]) -> Result<Value, String> {
        let o = Command::new(env!("CARGO_BIN_EXE_sandnet"))
            .args(args)
            .env("SANDNET_STATE_DIR", &self.state)
            .env("SANDNET_CONFIG", &self.config)
            .output()
            .map_err(|e| e.to_string())?;
        if !o.status.success() {
            return Err(String::from_utf8_lossy(&o.stderr).into_owned());
        }
        Ok(serde_json::from_slice(&o.stdout).unwrap_or(Value::Null))
    }

    pub fn record(&self, id: &str) -> Value {
        std::fs::read(self.state.join(id).join("sandbox.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null)
    }
}

impl Drop for Sandnet {
    fn drop(&mut self) {
        // A panicking bench may leave a factory and live sandboxes: the factory first,
        // then every sandbox (gc leaves live ones alone), then whatever process still
        // names this state root — before the root itself goes.
        let _ = self.cmd(&["factory", "destroy"]);
        if let Ok(ps) = self.cmd(&["ps", "--json"]) {
            for e in ps.as_array().into_iter().flatten() {
                if let Some(id) = e["id"].as_str() {
                    let _ = self.cmd(&["rm", "--force", id]);
                }
            }
        }
        let _ = self.cmd(&["gc"]);
        for (pid, _) in sandnet_testkit::pids_mentioning(&self.state.display().to_string()) {
            // SAFETY: plain kill(2) of a process of this bench's own state root.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let _ = std::fs::remove_dir_all(&self.state);
        let _ = std::fs::remove_file(&self.config);
    }
}

/// Runs `sh -c script` in the sandbox's guest; the round trip in ms (panics unless it exits 0).
pub async fn exec_ms(sb: &sandnet_runtime::api::Sandbox, script: &str) -> u64 {
    let t = std::time::Instant::now();
    let out = sb
        .exec(
            &["sh".into(), "-c".into(), script.into()],
            std::time::Duration::from_secs(300),
        )
        .await
        .expect("exec");
    assert_eq!(
        out.exit_code,
        0,
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed().as_millis() as u64
}

/// `Key:` of `/proc/<pid>/smaps_rollup` (or `status`) in KiB.
pub fn proc_kib(pid: u32, file: &str, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
