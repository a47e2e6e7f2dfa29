//! Hot plug and unplug of one endpoint in a running sandbox.
//!
//! Plug: the NIC is recorded in `sandbox.json` (state `plugging`) → the link is attached
//! (its plan joins the namespace's attach state first) → `getfd`/`netdev_add`/`device_add`
//! on a free root port → the agent configures the interface, its routes and neighbours.
//! Unplug, the reverse: the guest link is taken down with its addresses → `device_del`, and
//! `DEVICE_DELETED` awaited (bounded) → `netdev_del` → the host side undone → the record
//! dropped. A step that fails undoes the steps before it; a supervisor killed half-way leaves
//! records from which `rm`/`gc` remove everything (QEMU first, then the attach plan).

use super::env::PLUG_PAUSE_ENV;
use super::{Applied, Supervisor};
use crate::boot::{nic_spec, BootNic};
use crate::error::{agent, host, vm, Result, RuntimeError};
use crate::sandbox::{GuestNic, NicState, Status};
use crate::teardown::attach_dir;
use sandnet_host::endpoint::classify;
use sandnet_host::interwork::{attach_link, detach_link, driver, AttachOptions};
use sandnet_host::{scan_detail, NetNs, Netlink, ScanResult};
use sandnet_model::{Interface, Route, IFF_UP};
use sandnet_vm::VmSpec;
use std::path::Path;
use std::time::Duration;

/// How long the guest may take to let go of an unplugged NIC (Linux's pciehp waits 5 s
/// after the attention button before it powers a slot off; TCG is slow).
pub(crate) const UNPLUG_TIMEOUT: Duration = Duration::from_secs(20);

impl Supervisor {
    /// Refuses network changes unless the guest is up.
    fn check_running(&self) -> Result<()> {
        if self.state.status != Status::Running || self.agent.is_none() || self.qemu.is_none() {
            return Err(RuntimeError::Refused(format!(
                "sandbox {} is not running (status {:?})",
                self.state.id, self.state.status
            )));
        }
        Ok(())
    }

    /// A hot-plug root port no NIC uses.
    fn free_port(&self) -> Option<String> {
        (0..self.spec.vm.hotplug_ports)
            .map(VmSpec::root_port_id)
            .find(|p| !self.state.nics.iter().any(|n| &n.port == p))
    }

    /// Plugs the pod link `link` into the guest. `want`, when given, is what the guest
    /// interface should look like (addresses, MTU); otherwise it mirrors the link. Returns
    /// the interface as the agent configured it.
    /// `scan` is a scan of the pod namespace the caller just made (else one is made here).
    pub(super) async fn plug(
        &mut self,
        link: &str,
        want: Option<&Interface>,
        scan: Option<&ScanResult>,
    ) -> Result<Interface> {
        self.check_running()?;
        if self.state.nics.iter().any(|n| n.link == link) {
            return Err(RuntimeError::Refused(format!(
                "link {link:?} is plugged already"
            )));
        }
        let port = self.free_port().ok_or_else(|| {
            RuntimeError::Refused(format!(
                "no free hot-plug port for link {link:?} (all {} in use; raise [hypervisor.qemu] hotplug_ports)",
                self.spec.vm.hotplug_ports
            ))
        })?;
        let (ns, nl) = self.pod()?;
        // What the guest gets besides the interface: the link's routes and neighbours as
        // they are now (macvtap moves the addresses off the link, and the kernel its routes).
        let fresh;
        let scan = match scan {
            Some(s) => s,
            None => {
                fresh = scan_detail(&nl).await.map_err(|e| host("scan")(e.into()))?;
                &fresh
            }
        };
        let index = scan
            .link_by_name(link)
            .map(|d| d.index)
            .ok_or_else(|| host("plug")(sandnet_host::HostError::LinkNotFound(link.into())))?;
        if let Some(e) = scan.link_by_name(link).and_then(|d| classify(d).ok()) {
            self.own_links
                .add_name(&driver(self.spec.model).tap_name(&e));
        }
        let routes = scan.routes_via(link);
        let neighbors: Vec<_> = scan
            .config
            .neighbors
            .iter()
            .filter(|n| n.device == link)
            .cloned()
            .collect();

        let id = format!("hp{index}");
        self.state.nics.push(GuestNic {
            link: link.to_string(),
            index,
            id: id.clone(),
            port: port.clone(),
            hot: true,
            state: NicState::Plugging,
        });
        self.save();
        let r = self
            .plug_steps(&ns, &nl, scan, link, &id, &port, want, routes, neighbors)
            .await;
        match &r {
            Ok(_) => self.set_nic_state(link, NicState::Plugged),
            Err(_) => self.forget_nic(link),
        }
        r
    }

    #[allow(clippy::too_many_arguments)]
    async fn plug_steps(
        &mut self,
        ns: &NetNs,
        nl: &Netlink,
        scan: &ScanResult,
        link: &str,
        id: &str,
        port: &str,
        want: Option<&Interface>,
        routes: Vec<Route>,
        neighbors: Vec<sandnet_model::Neighbor>,
    ) -> Result<Interface> {
        let opts = AttachOptions {
            model: self.spec.model,
            queues: self.spec.queues,
            state_dir: attach_dir(&self.root),
            policy: self.spec.tap_policy,
        };
        let state_dir = opts.state_dir.clone();
        let mut a = attach_link(ns, nl, scan, &opts, link)
            .await
            .map_err(host("attach"))?;
        if let Some(ms) = std::env::var(PLUG_PAUSE_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let nic = BootNic {
            id: id.to_string(),
            mac: a.guest_mac,
            tap_fds: std::mem::take(&mut a.fds),
        };
        let state_dir = &state_dir;
        let undo_host = |why: RuntimeError| async move {
            if let Err(e) = detach_link(ns, nl, state_dir, link).await {
                tracing::error!("rollback of {link}: detach: {e}");
            }
            why
        };
        let vhost = !self.spec.vm.disable_vhost_net && Path::new("/dev/vhost-net").exists();
        let spec = match nic_spec(&nic, vhost) {
            Ok(s) => s,
            Err(e) => return Err(undo_host(e).await),
        };
        let qmp = match self.qemu.as_ref().and_then(|q| q.qmp()) {
            Some(q) => q,
            None => {
                return Err(
                    undo_host(RuntimeError::Refused("QEMU's QMP is not connected".into())).await,
                )
            }
        };
        if let Err(e) = qmp.hotplug_nic(&spec, port).await {
            return Err(undo_host(vm("hot-plug NIC")(e)).await);
        }
        drop(spec);
        drop(nic);
        let mut iface = Interface {
            name: a.endpoint.name.clone(),
            kind: a.endpoint.kind.clone(),
            mac: Some(a.guest_mac),
            mtu: a.endpoint.mtu,
            addresses: a.endpoint.addresses.clone(),
            flags: IFF_UP,
        };
        if let Some(w) = want {
            if !w.addresses.is_empty() {
                iface.addresses = w.addresses.clone();
            }
            if w.mtu != 0 {
                iface.mtu = w.mtu;
            }
        }
        let client = self
            .agent
            .clone()
            .ok_or_else(|| RuntimeError::Refused("the guest agent is not connected".into()))?;
        let configured = async {
            let got = client
                .update_interface(&iface)
                .await
                .map_err(agent("configure guest interface"))?;
            // A route request is the whole set for every NIC the agent configured.
            let mut all: Vec<Route> = self
                .applied
                .iter()
                .filter(|(l, _)| l.as_str() != link)
                .flat_map(|(_, a)| a.routes.iter().cloned())
                .collect();
            all.extend(routes.iter().cloned());
            if !routes.is_empty() {
                client
                    .update_routes(&all)
                    .await
                    .map_err(agent("configure guest routes"))?;
            }
            if !neighbors.is_empty() {
                client
                    .add_arp_neighbors(&neighbors)
                    .await
                    .map_err(agent("configure guest neighbours"))?;
            }
            Ok::<_, RuntimeError>(got)
        }
        .await;
        match configured {
            Ok(got) => {
                self.applied.insert(
                    link.to_string(),
                    Applied {
                        iface: iface.clone(),
                        routes,
                        neighbors,
                    },
                );
                Ok(got)
            }
            Err(e) => {
                if let Some(q) = self.qemu.as_ref().and_then(|q| q.qmp()) {
                    if let Err(u) = q.unplug_nic(id, UNPLUG_TIMEOUT).await {
                        tracing::error!("rollback of {link}: unplug: {u}");
                    }
                }
                Err(undo_host(e).await)
            }
        }
    }

    /// Unplugs the guest NIC of pod link `link` (the link itself may be gone already).
    pub(super) async fn unplug(&mut self, link: &str) -> Result<()> {
        self.check_running()?;
        let Some(nic) = self.state.nics.iter().find(|n| n.link == link).cloned() else {
            return Err(RuntimeError::Refused(format!(
                "link {link:?} is not plugged into the guest"
            )));
        };
        self.set_nic_state(link, NicState::Unplugging);
        // The guest link down and without addresses first: its routes go with them, and
        // nothing in the guest keeps using a NIC that is about to vanish.
        if let (Some(c), Some(a)) = (self.agent.clone(), self.applied.get(link)) {
            let down = Interface {
                addresses: vec![],
                flags: 0,
                ..a.iface.clone()
            };
            if let Err(e) = c.update_interface(&down).await {
                tracing::warn!("unplug {link}: taking the guest link down: {e}");
            }
        }
        let qmp = self
            .qemu
            .as_ref()
            .and_then(|q| q.qmp())
            .ok_or_else(|| RuntimeError::Refused("QEMU's QMP is not connected".into()))?;
        let released = qmp
            .unplug_nic(&nic.id, UNPLUG_TIMEOUT)
            .await
            .map_err(vm("unplug NIC"))?;
        if !released {
            return Err(RuntimeError::UnplugTimeout {
                link: link.to_string(),
                secs: UNPLUG_TIMEOUT.as_secs(),
            });
        }
        let (ns, nl) = self.pod()?;
        detach_link(&ns, &nl, &attach_dir(&self.root), link)
            .await
            .map_err(host("detach"))?;
        self.applied.remove(link);
        self.forget_nic(link);
        Ok(())
    }

    /// The pod namespace and the netlink client in it that the supervisor holds.
    pub(super) fn pod(&self) -> Result<(NetNs, Netlink)> {
        match (&self.ns, &self.nl) {
            (Some(ns), Some(nl)) => Ok((
                ns.try_clone().map_err(host("network namespace"))?,
                nl.clone(),
            )),
            _ => Err(RuntimeError::Refused(
                "the pod namespace is not held".into(),
            )),
        }
    }

    fn set_nic_state(&mut self, link: &str, state: NicState) {
        if let Some(n) = self.state.nics.iter_mut().find(|n| n.link == link) {
            n.state = state;
        }
        self.save();
    }

    fn forget_nic(&mut self, link: &str) {
        self.state.nics.retain(|n| n.link != link);
        self.save();
    }

    /// Replaces the routes of the guest's NICs with the set (each route must name a
    /// plugged NIC); returns the guest's routes afterwards. A route naming another device
    /// is refused and nothing changes.
    pub(super) async fn set_routes(&mut self, routes: Vec<Route>) -> Result<Vec<Route>> {
        self.check_running()?;
        for r in &routes {
            if !self.state.nics.iter().any(|n| n.link == r.device) {
                return Err(RuntimeError::Refused(format!(
                    "route {}: device {:?} is not a NIC of this sandbox",
                    sandnet_host::netlink::route_text(r),
                    sandnet_model::printable(&r.device)
                )));
            }
        }
        let c = self
            .agent
            .clone()
            .ok_or_else(|| RuntimeError::Refused("the guest agent is not connected".into()))?;
        let now = c
            .update_routes(&routes)
            .await
            .map_err(agent("configure guest routes"))?;
        for (link, a) in self.applied.iter_mut() {
            a.routes = routes
                .iter()
                .filter(|r| &r.device == link)
                .cloned()
                .collect();
        }
        Ok(now)
    }
}
