//! Containers through CRI: configs running busybox from the test image, create/start,
//! status, ExecSync, stop/remove, and reading their CRI log files.

use super::{image, text, wait_until, Containerd};
use k8s_cri::v1::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `/bin/busybox sh -c SCRIPT` (the image has busybox alone; its shell runs applets by
/// name).
pub fn sh(script: &str) -> Vec<String> {
    vec![
        "/bin/busybox".into(),
        "sh".into(),
        "-c".into(),
        script.into(),
    ]
}

impl Containerd {
    /// A container config running `command` in the test image (busybox).
    pub fn command_config(&self, name: &str, command: Vec<String>) -> ContainerConfig {
        let mut c = self.container_config(name);
        c.image = Some(ImageSpec {
            image: image::PAUSE_IMAGE.into(),
            ..Default::default()
        });
        c.command = command;
        c
    }

    /// CreateContainer in pod `pod` (named `pod_name`).
    pub fn create_container(
        &self,
        pod: &str,
        pod_name: &str,
        config: ContainerConfig,
    ) -> Result<String, tonic::Status> {
        let mut c = self.client();
        Ok(self
            .rt
            .block_on(c.create_container(CreateContainerRequest {
                pod_sandbox_id: pod.into(),
                config: Some(config),
                sandbox_config: Some(self.pod_config(pod_name)),
            }))?
            .into_inner()
            .container_id)
    }

    /// StartContainer.
    pub fn start_container(&self, id: &str) -> Result<(), tonic::Status> {
        let mut c = self.client();
        self.rt.block_on(c.start_container(StartContainerRequest {
            container_id: id.into(),
        }))?;
        Ok(())
    }

    /// CreateContainer + StartContainer; panics (with containerd's log) on failure.
    pub fn launch(&self, pod: &str, pod_name: &str, config: ContainerConfig) -> String {
        let id = self
            .create_container(pod, pod_name, config)
            .unwrap_or_else(|e| panic!("CreateContainer: {e}\ncontainerd log:\n{}", self.log()));
        if let Err(e) = self.start_container(&id) {
            panic!("StartContainer: {e}\ncontainerd log:\n{}", self.log());
        }
        id
    }

    /// ContainerStatus.
    pub fn container_status(&self, id: &str) -> Result<ContainerStatus, tonic::Status> {
        let mut c = self.client();
        Ok(self
            .rt
            .block_on(c.container_status(ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            }))?
            .into_inner()
            .status
            .unwrap_or_default())
    }

    /// Waits until container `id` has exited; its status.
    pub fn wait_exited(&self, id: &str, limit: Duration) -> ContainerStatus {
        let mut last = ContainerStatus::default();
        wait_until(&format!("container {id} to exit"), limit, || {
            last = self.container_status(id).expect("ContainerStatus");
            last.state == ContainerState::ContainerExited as i32
        });
        last
    }

    /// ExecSync of `cmd` in container `id`.
    pub fn exec_sync(&self, id: &str, cmd: &[&str]) -> Result<ExecSyncResponse, tonic::Status> {
        let mut c = self.client();
        Ok(self
            .rt
            .block_on(c.exec_sync(ExecSyncRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout: 60,
            }))?
            .into_inner())
    }

    /// ContainerStats.
    pub fn container_stats(&self, id: &str) -> Result<ContainerStats, tonic::Status> {
        let mut c = self.client();
        Ok(self
            .rt
            .block_on(c.container_stats(ContainerStatsRequest {
                container_id: id.into(),
            }))?
            .into_inner()
            .stats
            .unwrap_or_default())
    }

    /// StopContainer with `timeout` seconds of grace; how long it took.
    pub fn stop_container(&self, id: &str, timeout: i64) -> Result<Duration, tonic::Status> {
        let mut c = self.client();
        let t = Instant::now();
        self.rt.block_on(c.stop_container(StopContainerRequest {
            container_id: id.into(),
            timeout,
        }))?;
        Ok(t.elapsed())
    }

    /// RemoveContainer.
    pub fn remove_container(&self, id: &str) -> Result<(), tonic::Status> {
        let mut c = self.client();
        self.rt
            .block_on(c.remove_container(RemoveContainerRequest {
                container_id: id.into(),
            }))?;
        Ok(())
    }

    /// The text of container `id`'s CRI log (each line's message, without the timestamp
    /// and stream columns).
    pub fn container_log(&self, id: &str) -> String {
        let path = self.container_status(id).expect("ContainerStatus").log_path;
        log_messages(&std::fs::read(&path).unwrap_or_default())
    }

    /// Mount points in containerd's mount namespace below `dir`.
    pub fn mounts_under(&self, dir: &Path) -> Vec<PathBuf> {
        let pid = self.containerd_pid();
        let table = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
        sandnet_runtime::shared::mounts_below_in(&table, dir)
    }

    /// The pod's IP, from PodSandboxStatus.
    pub fn pod_ip(&self, pod: &str) -> String {
        self.status(pod)
            .expect("PodSandboxStatus")
            .0
            .network
            .map(|n| n.ip)
            .unwrap_or_default()
    }

    /// `cmd` run in containerd's network namespace: its stdout, or its stderr as error.
    pub fn in_netns(&self, cmd: &[&str]) -> Result<String, String> {
        let o = std::process::Command::new("ip")
            .args(["netns", "exec", &self.ns.name])
            .args(cmd)
            .output()
            .map_err(|e| e.to_string())?;
        if o.status.success() {
            Ok(text(&o.stdout))
        } else {
            Err(text(&o.stderr))
        }
    }

    /// What is in sandbox `pod`'s shared directory.
    pub fn share_entries(&self, pod: &str) -> Vec<String> {
        std::fs::read_dir(self.state().join(pod).join("shared"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }
}

/// The messages of a CRI log (`<time> <stream> <P|F> <message>` lines), joined with
/// newlines.
pub fn log_messages(log: &[u8]) -> String {
    text(log)
        .lines()
        .map(|l| l.splitn(4, ' ').nth(3).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}
