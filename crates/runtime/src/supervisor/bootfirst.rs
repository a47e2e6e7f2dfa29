//! Boot first, plug later (`[runtime] hotplug_network`, `run --hotplug`; Kata's VM-factory
//! path): QEMU starts with no NIC while CNI ADD and attach run beside it, then every
//! endpoint is hot-plugged over QMP and the guest network applied as usual — so booting
//! and preparing the network overlap instead of adding up.
//!
//! Everything is recorded before it acts, as on the cold path: the CNI attachment before
//! ADD, QEMU's pid once it runs, the attach plan before any tap exists, and each NIC
//! before its plug; a failure of either branch waits for the other before rolling back.

use super::steps::{attach_all, Attached, Timings};
use super::{ms, Preboot, Supervisor};
use crate::boot::nic_spec;
use crate::error::{vm, Result, RuntimeError};
use crate::podnet;
use crate::sandbox::NicState;
use crate::spec::RunSpec;
use sandnet_agent_proto::AgentClient;
use sandnet_model::Dns;
use sandnet_vm::{Accel, VmSpec};
use std::path::{Path, PathBuf};
use std::time::Instant;

impl Supervisor {
    /// The start of a boot-first sandbox, up to the guest network (which the caller applies).
    /// With `pre` (a factory VM) nothing is booted: the VM is adopted as it is.
    pub(super) async fn boot_then_plug(
        &mut self,
        spec: &RunSpec,
        timings: &mut Timings,
        pre: Option<Preboot>,
    ) -> Result<(Accel, AgentClient, Attached, Option<Dns>)> {
        self.step_netns(spec, timings).await?;
        // CNI ADD and attach run in a task of their own, recorded here first.
        let cni = spec.cni.clone().map(|mut c| {
            if c.host_netns.as_os_str().is_empty() {
                c.host_netns = PathBuf::from(format!("/proc/{}/ns/net", std::process::id()));
            }
            c
        });
        self.state.cni = cni.clone();
        self.begin("network-prepare").await;
        let prep = {
            let (ns, nl) = self.pod()?;
            let root = self.root.clone();
            let spec = spec.clone();
            let path = self.state.netns_path.clone();
            let cni = cni.clone();
            tokio::spawn(async move { prepare(&ns, &nl, &root, &spec, &path, cni).await })
        };
        let booted = match pre {
            Some(p) => {
                let b = p.booted;
                self.state.qemu_pid = Some(b.qemu.pid());
                self.state.accel = b.accel.to_string();
                self.state.accel_reason = format!("factory VM {}: {}", p.vm, b.reason);
                self.qemu = Some(b.qemu);
                self.save();
                timings.insert("factory_ms".into(), 0);
                Ok((b.accel, b.agent))
            }
            None => {
                async {
                    let img = self.step_image(spec, timings).await?;
                    self.step_boot(spec, &img, Vec::new(), timings).await
                }
                .await
            }
        };
        // Whatever happened to the boot, the other branch is waited for before any
        // rollback, so teardown never races a running CNI ADD.
        let prepared = prep.await.map_err(|e| RuntimeError::Task {
            step: "prepare the network",
            source: e,
        })?;
        let prepared = match prepared {
            Ok(p) => p,
            Err(e) => {
                if let (Some(c), RuntimeError::Cni(_)) = (&cni, &e) {
                    if !podnet::add_started(c) {
                        self.state.cni = None;
                        self.save();
                    }
                }
                return Err(e);
            }
        };
        let (accel, client) = booted?;
        let Prepared {
            scan,
            eps,
            dns,
            cni_ms,
            attach_ms,
        } = prepared;
        if let Some(t) = cni_ms {
            timings.insert("cni_add_ms".into(), t);
        }
        timings.insert("attach_ms".into(), attach_ms);

        let wanted = eps.iter().filter(|e| !e.fds.is_empty()).count();
        if wanted as u32 > spec.vm.hotplug_ports {
            return Err(RuntimeError::Refused(format!(
                "{wanted} endpoints to plug but only {} hot-plug ports ([hypervisor.qemu] hotplug_ports)",
                spec.vm.hotplug_ports
            )));
        }
        let mut attached = Attached::new(scan, eps, |i| VmSpec::root_port_id(i as u32), true);
        self.begin("plug").await;
        let t = Instant::now();
        for r in &mut attached.records {
            r.state = NicState::Plugging;
        }
        self.state.nics = attached.records.clone();
        self.save();
        let vhost = !spec.vm.disable_vhost_net && Path::new("/dev/vhost-net").exists();
        let nics = std::mem::take(&mut attached.nics);
        for (nic, rec) in nics.iter().zip(&attached.records) {
            let s = nic_spec(nic, vhost)?;
            let qmp = self
                .qemu
                .as_ref()
                .and_then(|q| q.qmp())
                .ok_or_else(|| RuntimeError::Refused("QEMU's QMP is not connected".into()))?;
            qmp.hotplug_nic(&s, &rec.port)
                .await
                .map_err(vm("hot-plug NIC"))?;
            if let Some(n) = self.state.nics.iter_mut().find(|n| n.id == rec.id) {
                n.state = NicState::Plugged;
            }
        }
        self.save();
        // The guest names NICs as they appear; renaming them to the pod's names while
        // later ones still appear races with the kernel's naming. Wait until all are there.
        let macs: Vec<_> = attached.guest_ifaces.iter().filter_map(|i| i.mac).collect();
        let deadline = Instant::now() + std::time::Duration::from_secs(60);
        loop {
            // A busy TCG host may be slow to answer: keep asking until the deadline, then
            // let the interface calls (with their own longer timeout) report.
            let all_there = match client.list_interfaces().await {
                Ok(have) => macs.iter().all(|m| have.iter().any(|i| i.mac == Some(*m))),
                Err(e) => {
                    tracing::info!("waiting for the guest's NICs: {e}");
                    false
                }
            };
            if all_there || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        timings.insert("plug_ms".into(), ms(t));
        Ok((accel, client, attached, dns))
    }
}

/// What the network branch produced.
struct Prepared {
    scan: sandnet_host::ScanResult,
    eps: Vec<sandnet_host::AttachedEndpoint>,
    dns: Option<Dns>,
    cni_ms: Option<u64>,
    attach_ms: u64,
}

/// CNI ADD (when asked for), then scan and attach — the network branch of a boot-first start.
async fn prepare(
    ns: &sandnet_host::NetNs,
    nl: &sandnet_host::Netlink,
    root: &Path,
    spec: &RunSpec,
    netns_path: &Path,
    cni: Option<crate::sandbox::CniAttachment>,
) -> Result<Prepared> {
    let mut dns = None;
    let mut cni_ms = None;
    if let Some(c) = &cni {
        let t = Instant::now();
        let res = podnet::cni_add(c, netns_path).await?;
        cni_ms = Some(ms(t));
        dns = podnet::cni_dns(&res);
    }
    let t = Instant::now();
    let (scan, eps) = attach_all(ns, nl, root, spec).await?;
    Ok(Prepared {
        scan,
        eps,
        dns,
        cni_ms,
        attach_ms: ms(t),
    })
}
