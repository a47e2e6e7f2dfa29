//! The steps of `run`, in order, each recorded in the sandbox's state before it acts:
//! network namespace, CNI ADD, attach, guest image, boot, guest network.

use super::{accel_dir, ms, Applied, Supervisor};
use crate::boot::{boot_vm, BootNic, BootPlan};
use crate::error::{agent, host, Result, RuntimeError};
use crate::guest::apply_network;
use crate::image::{self, GuestImage as Image};
use crate::podnet::{self, namespace_dns, owned_name};
use crate::sandbox::{GuestNic, NicState};
use crate::spec::{RunOutput, RunSpec};
use crate::teardown::attach_dir;
use sandnet_agent_proto::AgentClient;
use sandnet_host::interwork::{attach_scanned, AttachOptions, AttachedEndpoint};
use sandnet_host::{scan_detail, NetNs, NetNsRef, Netlink, ScanResult};
use sandnet_model::{Dns, Interface, NetworkConfig, IFF_UP};
use sandnet_vm::VmSpec;
use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// How long each agent call that applies the guest network may take.
const NETWORK_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Step timings in milliseconds, by name (`netns_ms`, `cni_add_ms`, …).
pub(super) type Timings = BTreeMap<String, u64>;

/// What attach hands on: the scan (routes, neighbours), the NICs for QEMU, the guest
/// interfaces they become and the sandbox's records of them.
pub(super) struct Attached {
    pub(super) scan: ScanResult,
    pub(super) nics: Vec<BootNic>,
    pub(super) guest_ifaces: Vec<Interface>,
    pub(super) records: Vec<GuestNic>,
}

impl Attached {
    /// The NICs of attached endpoints (model `none` has none); NIC `i` (in plug order)
    /// sits on root port `port(i)`.
    pub(super) fn new(
        scan: ScanResult,
        eps: Vec<AttachedEndpoint>,
        port: impl Fn(usize) -> String,
        hot: bool,
    ) -> Attached {
        let mut guest_ifaces = Vec::new();
        let mut nics = Vec::new();
        let mut records = Vec::new();
        for (i, mut e) in eps.into_iter().enumerate() {
            if e.fds.is_empty() {
                continue; // model none
            }
            records.push(GuestNic {
                link: e.endpoint.name.clone(),
                index: e.endpoint.index,
                id: format!("net{i}"),
                port: port(nics.len()),
                hot,
                state: NicState::Plugged,
            });
            nics.push(BootNic {
                id: format!("net{i}"),
                mac: e.guest_mac,
                tap_fds: std::mem::take(&mut e.fds),
            });
            guest_ifaces.push(Interface {
                name: e.endpoint.name.clone(),
                kind: e.endpoint.kind.clone(),
                mac: Some(e.guest_mac),
                mtu: e.endpoint.mtu,
                addresses: e.endpoint.addresses.clone(),
                flags: IFF_UP,
            });
        }
        Attached {
            scan,
            nics,
            guest_ifaces,
            records,
        }
    }
}

/// Scans the namespace and attaches every endpoint with the spec's model.
pub(super) async fn attach_all(
    ns: &NetNs,
    nl: &Netlink,
    root: &Path,
    spec: &RunSpec,
) -> Result<(ScanResult, Vec<AttachedEndpoint>)> {
    let scan = scan_detail(nl).await.map_err(|e| host("scan")(e.into()))?;
    let opts = AttachOptions {
        model: spec.model,
        queues: spec.queues,
        state_dir: attach_dir(root),
        policy: spec.tap_policy,
    };
    let eps = attach_scanned(ns, nl, &scan, &opts)
        .await
        .map_err(host("attach"))?;
    Ok((scan, eps))
}

impl Supervisor {
    /// Runs every step of `run`; on error the caller rolls back from the record.
    pub(super) async fn start(&mut self, spec: &RunSpec) -> Result<RunOutput> {
        let t0 = Instant::now();
        let mut timings = Timings::new();
        let (accel, client, attached, cni_dns) = if let Some(pre) = self.preboot.take() {
            self.boot_then_plug(spec, &mut timings, Some(pre)).await?
        } else if spec.hotplug_network {
            self.boot_then_plug(spec, &mut timings, None).await?
        } else {
            let ns = self.step_netns(spec, &mut timings).await?;
            let cni_dns = self.step_cni(spec, &mut timings).await?;
            let mut attached = self.step_attach(spec, &ns, &mut timings).await?;
            let img = self.step_image(spec, &mut timings).await?;
            let nics = std::mem::take(&mut attached.nics);
            let (accel, client) = self.step_boot(spec, &img, nics, &mut timings).await?;
            self.state.nics = std::mem::take(&mut attached.records);
            self.save();
            (accel, client, attached, cni_dns)
        };
        let dns = spec.dns.clone().or(cni_dns);
        let (interfaces, routes) = self
            .step_network(
                spec,
                &client,
                &attached.scan,
                attached.guest_ifaces,
                dns,
                &mut timings,
            )
            .await?;
        self.agent = Some(client);
        let network = timings.get("attach_ms").copied().unwrap_or_default()
            + timings.get("agent_ms").copied().unwrap_or_default();
        timings.insert("network_ms".into(), network);
        timings.insert("total_ms".into(), ms(t0));
        self.state.timings = timings.clone();
        self.state.step = None;
        self.save();
        Ok(RunOutput {
            id: spec.id.clone(),
            netns: self.state.netns.clone(),
            interfaces,
            routes,
            timings,
            accel: accel.as_str().to_string(),
            accel_reason: self.state.accel_reason.clone(),
        })
    }

    /// Opens the given namespace, or creates `sandnet-<id>` (recorded before it exists, so
    /// that a crash right after leaves a trace). The namespace is held from here on:
    /// teardown reaches it through this descriptor, so CNI DEL runs in it whatever happens
    /// to its mount point.
    pub(super) async fn step_netns(
        &mut self,
        spec: &RunSpec,
        timings: &mut Timings,
    ) -> Result<NetNs> {
        let ns = match (&spec.netns, self.handed_netns.take()) {
            (Some(n), Some(fd)) => {
                NetNs::from_fd(fd, PathBuf::from(n)).map_err(host("open network namespace"))?
            }
            (Some(n), None) => n
                .parse::<NetNsRef>()
                .and_then(|r| NetNs::open(&r))
                .map_err(host("open network namespace"))?,
            (None, _) => {
                let name = owned_name(&spec.id);
                self.state.netns = name.clone();
                self.state.netns_path = Path::new(sandnet_host::netns::NETNS_RUN_DIR).join(&name);
                self.state.netns_created = true;
                self.begin("netns").await;
                let t = Instant::now();
                let ns = NetNs::create(&name).map_err(host("create network namespace"))?;
                timings.insert("netns_ms".into(), ms(t));
                ns
            }
        };
        self.state.netns_path = ns.path().to_path_buf();
        self.state.netns_id = Some(ns.id().map_err(host("network namespace"))?);
        self.ns = Some(ns.try_clone().map_err(host("network namespace"))?);
        self.nl = Some(ns.netlink().map_err(host("netlink"))?);
        self.save();
        Ok(ns)
    }

    /// CNI ADD, when the spec asks for it (recorded before it runs); returns the DNS of its
    /// result.
    pub(super) async fn step_cni(
        &mut self,
        spec: &RunSpec,
        timings: &mut Timings,
    ) -> Result<Option<Dns>> {
        let Some(c) = &spec.cni else {
            return Ok(None);
        };
        let mut c = c.clone();
        if c.host_netns.as_os_str().is_empty() {
            c.host_netns = PathBuf::from(format!("/proc/{}/ns/net", std::process::id()));
        }
        self.state.cni = Some(c.clone());
        self.begin("cni").await;
        let t = Instant::now();
        match podnet::cni_add(&c, &self.state.netns_path).await {
            Ok(res) => {
                timings.insert("cni_add_ms".into(), ms(t));
                Ok(podnet::cni_dns(&res))
            }
            Err(e) => {
                if !podnet::add_started(&c) {
                    // Refused before any plugin ran (e.g. one is missing): no DEL owed.
                    self.state.cni = None;
                    self.save();
                }
                Err(e.into())
            }
        }
    }

    /// Scans the namespace and connects every endpoint with the spec's model.
    async fn step_attach(
        &mut self,
        spec: &RunSpec,
        ns: &NetNs,
        timings: &mut Timings,
    ) -> Result<Attached> {
        self.begin("attach").await;
        let t = Instant::now();
        let (_, nl) = self.pod()?;
        let (scan, eps) = attach_all(ns, &nl, &self.root, spec).await?;
        timings.insert("attach_ms".into(), ms(t));
        Ok(Attached::new(scan, eps, VmSpec::nic_port_id, false))
    }

    /// Finds the guest kernel and builds (or reuses) the initramfs.
    pub(super) async fn step_image(
        &mut self,
        spec: &RunSpec,
        timings: &mut Timings,
    ) -> Result<Image> {
        self.begin("image").await;
        let t = Instant::now();
        let img = tokio::task::spawn_blocking({
            let k = spec.vm.kernel.clone();
            let i = spec.vm.initrd.clone();
            move || image::resolve(k.as_deref(), i.as_deref())
        })
        .await
        .map_err(|e| RuntimeError::Task {
            step: "guest image",
            source: e,
        })??;
        timings.insert("image_ms".into(), ms(t));
        Ok(img)
    }

    /// Boots QEMU inside the pod namespace with every endpoint cold-plugged, under KVM
    /// only where a guest really runs under it (see `boot.rs`), until the agent answers.
    pub(super) async fn step_boot(
        &mut self,
        spec: &RunSpec,
        img: &Image,
        nics: Vec<BootNic>,
        timings: &mut Timings,
    ) -> Result<(sandnet_vm::Accel, AgentClient)> {
        let share = self.prepare_share(spec)?;
        let make_spec = |accel| {
            let mut vs = crate::boot::vm_spec(&spec.vm, &img.kernel, &img.initrd, accel);
            vs.share = share.clone();
            vs
        };
        let vhost = !spec.vm.disable_vhost_net && Path::new("/dev/vhost-net").exists();
        self.begin("boot").await;
        let cache_dir = accel_dir(&self.root);
        let plan = BootPlan {
            mode: spec.vm.accel,
            cache_dir: &cache_dir,
            spec: &make_spec,
            vhost,
            netns: self.ns.as_ref().map(|n| n.as_fd()),
            dir: &self.paths.dir,
        };
        let (state, paths) = (&mut self.state, &self.paths);
        let mut record = |pid: Option<u32>, accel: sandnet_vm::Accel, why: &str| {
            state.qemu_pid = pid;
            state.accel = accel.to_string();
            if !why.is_empty() {
                state.accel_reason = why.to_string();
            }
            if let Err(e) = state.save(paths) {
                tracing::error!("{e}");
            }
        };
        let booted = boot_vm(plan, nics, &mut record).await?;
        timings.insert("qemu_ms".into(), booted.qemu_ms);
        timings.insert("boot_ms".into(), booted.boot_ms);
        self.state.qemu_pid = Some(booted.qemu.pid());
        self.state.accel_reason = booted.reason;
        self.qemu = Some(booted.qemu);
        self.save();
        Ok((booted.accel, booted.agent))
    }

    /// Applies the pod's network in the guest, in Kata's order, and lists what the guest
    /// then has.
    pub(super) async fn step_network(
        &mut self,
        spec: &RunSpec,
        client: &AgentClient,
        scan: &ScanResult,
        guest_ifaces: Vec<Interface>,
        dns: Option<Dns>,
        timings: &mut Timings,
    ) -> Result<(Vec<Interface>, Vec<sandnet_model::Route>)> {
        self.begin("network").await;
        let t = Instant::now();
        let devices: Vec<&str> = guest_ifaces.iter().map(|i| i.name.as_str()).collect();
        let wanted = NetworkConfig {
            routes: scan
                .config
                .routes
                .iter()
                .filter(|r| devices.contains(&r.device.as_str()))
                .cloned()
                .collect(),
            neighbors: scan
                .config
                .neighbors
                .iter()
                .filter(|n| devices.contains(&n.device.as_str()))
                .cloned()
                .collect(),
            dns: Some(dns.unwrap_or_else(|| namespace_dns(&self.state.netns))),
            interfaces: guest_ifaces,
        };
        for i in &wanted.interfaces {
            self.applied.insert(
                i.name.clone(),
                Applied {
                    iface: i.clone(),
                    routes: wanted
                        .routes
                        .iter()
                        .filter(|r| r.device == i.name)
                        .cloned()
                        .collect(),
                    neighbors: wanted
                        .neighbors
                        .iter()
                        .filter(|n| n.device == i.name)
                        .cloned()
                        .collect(),
                },
            );
        }
        // A TCG guest among many on a loaded host can take a while to find its NICs.
        let slow = client.clone().with_call_timeout(NETWORK_CALL_TIMEOUT);
        let hostname = spec.hostname.as_deref().unwrap_or(&spec.id);
        apply_network(&slow, hostname, &wanted).await?;
        timings.insert("agent_ms".into(), ms(t));
        let interfaces = client
            .list_interfaces()
            .await
            .map_err(agent("list interfaces"))?;
        let routes = client.list_routes().await.map_err(agent("list routes"))?;
        Ok((interfaces, routes))
    }
}
