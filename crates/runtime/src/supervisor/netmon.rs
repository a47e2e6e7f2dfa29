//! The netns monitor's reconciliation: after a burst of netlink events in the pod
//! namespace (or lost events), the namespace is scanned again and the guest made equal to
//! it — a new endpoint is hot-plugged, a NIC whose link is gone is unplugged, and changed
//! addresses, MTU, routes and permanent neighbours are applied through the agent.
//!
//! Working from a fresh scan rather than from the events themselves means nothing is lost
//! when events arrive while a plug is in flight, or when the kernel drops some: the next
//! reconciliation sees the namespace as it is. sandnet's own taps, qdiscs and macvtaps
//! never become endpoints, so they cause no change.
//!
//! A changed address reaches the guard first (see `sandnet_host::guard`): the new address
//! is allowed before the guest gets it, the old one forbidden only after the guest let it
//! go, so the guest's traffic is never dropped half-way through a change.
//!
//! With the macvtap model a plugged link's addresses live in the guest (attach moved them
//! off the link), so only links coming and going are followed there.

use super::Supervisor;
use crate::error::{agent, host, Result};
use crate::sandbox::{NicState, Status};
use sandnet_host::endpoint::endpoints;
use sandnet_host::netlink::{Batch, DebounceConfig, Debouncer, NetEvent, NetlinkError};
use sandnet_host::{guard, scan_detail};
use sandnet_model::{GuestSpoofing, Interface, InterworkingModel, IpNet, Route};
use std::collections::BTreeSet;
use std::pin::Pin;
use std::time::Instant;

/// What one reconciliation did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Reconciled {
    /// Links hot-plugged.
    pub plugged: Vec<String>,
    /// Links unplugged.
    pub unplugged: Vec<String>,
    /// Links whose addresses or MTU were updated.
    pub updated: Vec<String>,
    /// Whether the guest's routes were replaced.
    pub routes: bool,
    /// Neighbours added.
    pub neighbors: usize,
    /// What failed (the next reconciliation tries again).
    pub errors: Vec<String>,
}

impl Reconciled {
    /// Whether the guest was changed or something failed.
    pub fn is_empty(&self) -> bool {
        self.plugged.is_empty()
            && self.unplugged.is_empty()
            && self.updated.is_empty()
            && !self.routes
            && self.neighbors == 0
            && self.errors.is_empty()
    }
}

fn addr_set(a: &[IpNet]) -> BTreeSet<IpNet> {
    a.iter().copied().collect()
}

/// The monitor's event source: the pod namespace's netlink changes, in bursts.
/// sandnet's own links (taps, macvtaps, found by their alias) are filtered out of the
/// stream before debouncing, so their events never make a batch.
pub(super) type Monitor = Debouncer<
    Pin<Box<dyn futures::Stream<Item = std::result::Result<NetEvent, NetlinkError>> + Send>>,
>;

impl Supervisor {
    /// Subscribes to the pod namespace's changes when the monitor is on, and catches up
    /// once with what changed while the sandbox started.
    pub(super) async fn start_monitor(&mut self) -> Option<Monitor> {
        if !self.spec.netmon {
            return None;
        }
        let stream = match self.ns.as_ref()?.subscribe() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("netmon: cannot follow the pod namespace: {e}");
                return None;
            }
        };
        let m = Debouncer::new(
            Box::pin(self.own_links.filter(stream)) as Pin<Box<_>>,
            DebounceConfig::default(),
        );
        self.reconcile_and_log(Instant::now(), 0).await;
        Some(m)
    }

    /// Handles one burst of events; `false` when the event source is gone.
    pub(super) async fn on_batch(
        &mut self,
        b: sandnet_host::netlink::Result<Option<Batch>>,
    ) -> bool {
        match b {
            Ok(Some(b)) => {
                // A batch of nothing but learnt neighbour entries (ARP traffic) is not a
                // change of the pod's configuration.
                let ours_only = !b.overrun
                    && b.links.is_empty()
                    && b.addresses.is_empty()
                    && b.routes.is_empty()
                    && b.permanent_neighbors.is_empty();
                if !ours_only {
                    self.reconcile_and_log(Instant::now(), b.events).await;
                }
                true
            }
            Ok(None) => {
                tracing::error!("netmon: the pod namespace's event stream ended");
                false
            }
            Err(e) => {
                tracing::error!("netmon: reading the pod namespace's events failed: {e}");
                false
            }
        }
    }

    async fn reconcile_and_log(&mut self, t: Instant, events: usize) {
        match self.reconcile().await {
            Ok(r) if r.is_empty() => {}
            Ok(r) => {
                tracing::info!(
                    "netmon ({events} events): plugged {:?}, unplugged {:?}, updated {:?}, routes {}, neighbours {}{}",
                    r.plugged,
                    r.unplugged,
                    r.updated,
                    r.routes,
                    r.neighbors,
                    if r.errors.is_empty() { String::new() } else { format!("; failed: {}", r.errors.join("; ")) }
                );
                self.state
                    .timings
                    .insert("netmon_last_ms".into(), t.elapsed().as_millis() as u64);
                self.save();
            }
            Err(e) => tracing::error!("netmon: {e}"),
        }
    }

    /// Makes the guest equal to the pod namespace (see the module's doc).
    pub(super) async fn reconcile(&mut self) -> Result<Reconciled> {
        let mut done = Reconciled::default();
        if self.state.status != Status::Running
            || self.agent.is_none()
            || self.spec.model == InterworkingModel::None
        {
            return Ok(done);
        }
        let Some(nl) = self.nl.clone() else {
            return Ok(done);
        };
        let scan = scan_detail(&nl).await.map_err(|e| host("scan")(e.into()))?;

        // NICs whose link is gone (or is another link now): unplug.
        let gone: Vec<String> = self
            .state
            .nics
            .iter()
            .filter(|n| n.state == NicState::Plugged)
            .filter(|n| {
                !scan
                    .links
                    .iter()
                    .any(|d| d.index == n.index && d.interface.name == n.link)
            })
            .map(|n| n.link.clone())
            .collect();
        for link in gone {
            match self.unplug(&link).await {
                Ok(()) => done.unplugged.push(link),
                Err(e) => done.errors.push(format!("unplug {link}: {e}")),
            }
        }

        // New endpoints: plug.
        let new: Vec<String> = endpoints(&scan)
            .into_iter()
            .filter(|e| !self.state.nics.iter().any(|n| n.index == e.index))
            .map(|e| e.name)
            .collect();
        for link in new {
            match self.plug(&link, None, Some(&scan)).await {
                Ok(_) => done.plugged.push(link),
                Err(e) => done.errors.push(format!("plug {link}: {e}")),
            }
        }
        if self.spec.model == InterworkingModel::Macvtap {
            return Ok(done);
        }

        // Plugged links that changed: addresses, MTU, then routes, then neighbours.
        let Some(client) = self.agent.clone() else {
            return Ok(done);
        };
        let plugged: Vec<String> = self
            .state
            .nics
            .iter()
            .filter(|n| n.state == NicState::Plugged)
            .map(|n| n.link.clone())
            .collect();
        let mut wanted_routes: Vec<Route> = Vec::new();
        for link in &plugged {
            let Some(d) = scan.link_by_name(link) else {
                continue;
            };
            wanted_routes.extend(scan.routes_via(link));
            let Some(a) = self.applied.get(link) else {
                continue;
            };
            let now = &d.interface;
            if addr_set(&now.addresses) != addr_set(&a.iface.addresses) || now.mtu != a.iface.mtu {
                let want = Interface {
                    addresses: now.addresses.clone(),
                    mtu: now.mtu,
                    ..a.iface.clone()
                };
                // The guard allows a new address before the guest has it, and forgets an
                // old one only after the guest dropped it (only a blocking guard has
                // address rules, and only a changed set needs them changed).
                let guarded = self.spec.tap_policy.spoofing == GuestSpoofing::Block
                    && addr_set(&now.addresses) != addr_set(&a.iface.addresses);
                let mac = d.interface.mac.filter(|_| guarded);
                let both: Vec<IpNet> = addr_set(&a.iface.addresses)
                    .union(&addr_set(&now.addresses))
                    .copied()
                    .collect();
                if let Some(mac) = mac {
                    if let Err(e) = guard::sync_addresses(&nl, d.index, link, mac, &both).await {
                        done.errors
                            .push(format!("allow the new addresses of {link}: {e}"));
                        continue;
                    }
                }
                match client.update_interface(&want).await {
                    Ok(_) => {
                        if let Some(a) = self.applied.get_mut(link) {
                            a.iface = want;
                        }
                        done.updated.push(link.clone());
                        if let Some(mac) = mac {
                            if let Err(e) =
                                guard::sync_addresses(&nl, d.index, link, mac, &now.addresses).await
                            {
                                done.errors
                                    .push(format!("forget the old addresses of {link}: {e}"));
                            }
                        }
                    }
                    Err(e) => done.errors.push(format!("update {link}: {e}")),
                }
            }
        }
        let applied_routes: Vec<Route> = self
            .applied
            .values()
            .flat_map(|a| a.routes.iter().cloned())
            .collect();
        let same = |a: &[Route], b: &[Route]| {
            a.len() == b.len() && a.iter().all(|r| b.contains(r)) && b.iter().all(|r| a.contains(r))
        };
        if !same(&wanted_routes, &applied_routes) {
            match client
                .update_routes(&wanted_routes)
                .await
                .map_err(agent("configure guest routes"))
            {
                Ok(_) => {
                    for (link, a) in self.applied.iter_mut() {
                        a.routes = wanted_routes
                            .iter()
                            .filter(|r| &r.device == link)
                            .cloned()
                            .collect();
                    }
                    done.routes = true;
                }
                Err(e) => done.errors.push(e.to_string()),
            }
        }
        let mut new_neighbors = Vec::new();
        for n in &scan.config.neighbors {
            if let Some(a) = self.applied.get(&n.device) {
                if !a.neighbors.contains(n) {
                    new_neighbors.push(n.clone());
                }
            }
        }
        if !new_neighbors.is_empty() {
            match client.add_arp_neighbors(&new_neighbors).await {
                Ok(()) => {
                    done.neighbors = new_neighbors.len();
                    for n in new_neighbors {
                        if let Some(a) = self.applied.get_mut(&n.device) {
                            a.neighbors.push(n);
                        }
                    }
                }
                Err(e) => done.errors.push(format!("add neighbours: {e}")),
            }
        }
        Ok(done)
    }
}
