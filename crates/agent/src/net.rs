//! Applying the network model to the namespace the agent runs in, through netlink.

mod ipv6;

use crate::error::{AgentError, Result};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::RouteType;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use sandnet_model::{
    Family, Interface, IpNet, MacAddr, Neighbor, NeighborState, NetworkConfig, Route, IFF_NOARP,
};
use sandnet_netlink::scan::{address_of, link_detail, route_from_message, scan_detail, LinkDetail};
use sandnet_netlink::{address_message, Netlink};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// Applies interfaces, routes and neighbours to the agent's own network namespace.
///
/// Requests are applied one at a time (a lock around each), so concurrent callers see
/// each other's results whole.
pub struct NetApplier {
    nl: Netlink,
    link_wait: Duration,
    proc_root: PathBuf,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Addresses this agent added, per NIC (by MAC): only these may be removed later.
    added: HashMap<MacAddr, Vec<IpNet>>,
}

impl NetApplier {
    /// An applier on `nl`; a NIC named by MAC is waited for up to `link_wait`.
    pub fn new(nl: Netlink, link_wait: Duration) -> NetApplier {
        NetApplier {
            nl,
            link_wait,
            proc_root: PathBuf::from("/proc"),
            state: Mutex::new(State::default()),
        }
    }

    /// Whether IPv6 is usable: `/proc/sys/net/ipv6` exists and `disable_ipv6` is not set
    /// (for `device`, or for `all` when no device is named).
    pub fn ipv6_enabled(&self, device: Option<&str>) -> bool {
        let base = self.proc_root.join("sys/net/ipv6");
        if !base.exists() {
            return false;
        }
        let read = |dev: &str| {
            std::fs::read_to_string(base.join("conf").join(dev).join("disable_ipv6"))
                .map(|s| s.trim() == "1")
                .unwrap_or(false)
        };
        !(read("all") || device.is_some_and(read))
    }

    async fn find_by_mac(&self, mac: MacAddr) -> Result<LinkDetail> {
        let deadline = Instant::now() + self.link_wait;
        loop {
            let links = self.nl.links().await?;
            if let Some(d) = links
                .iter()
                .map(link_detail)
                .find(|d| d.interface.mac == Some(mac))
            {
                return Ok(d);
            }
            if Instant::now() >= deadline {
                return Err(AgentError::NotFound(format!(
                    "no network interface with MAC {mac} appeared within {:?}",
                    self.link_wait
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn link_named(&self, name: &str) -> Result<Option<LinkDetail>> {
        Ok(self.nl.link_by_name(name).await?.as_ref().map(link_detail))
    }

    async fn rename(&self, index: u32, from: &str, to: &str) -> Result<()> {
        self.nl
            .set_link(
                index,
                vec![LinkAttribute::IfName(to.to_string())],
                None,
                || format!("rename link {from} to {to}"),
            )
            .await?;
        Ok(())
    }

    /// Adds (replaces) an address; an IPv6 one with `IFA_F_NODAD`, so it is never
    /// `tentative` and is usable at once.
    async fn add_address(&self, index: u32, addr: IpNet, dev: &str) -> Result<()> {
        let mut msg = address_message(index, addr);
        if addr.addr().is_ipv6() {
            msg.header.flags = AddressHeaderFlags::Nodad;
            msg.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        self.nl
            .ack(
                RouteNetlinkMessage::NewAddress(msg),
                NLM_F_CREATE | NLM_F_REPLACE,
                || format!("add address {addr} to {dev}"),
            )
            .await?;
        Ok(())
    }

    /// `UpdateInterface`: finds the NIC by MAC (waiting for it), takes it down, writes its
    /// IPv6 settings (no DAD, no router advertisements or autoconf, EUI-64 link-local; see
    /// `net/ipv6.rs`), adds the requested addresses (replace; IPv6 ones without DAD),
    /// removes addresses this agent added before that are no longer requested, renames it
    /// (swapping names with a link that holds the requested name), sets MTU and ARP, and
    /// brings it up. Returns the interface as it now is.
    pub async fn update_interface(&self, want: &Interface) -> Result<Interface> {
        let mac = want.mac.ok_or_else(|| {
            AgentError::Invalid(format!(
                "interface {}: hwAddr is required to find the NIC",
                want.name
            ))
        })?;
        let mut state = self.state.lock().await;
        let link = self.find_by_mac(mac).await?;
        let index = link.index;
        let cur = &link.interface;

        // A link must be down to be renamed; otherwise it stays up (no flap).
        let renaming = cur.name != want.name;
        if cur.is_up() && renaming {
            self.nl.set_up(index, false, &cur.name).await?;
        }

        // Before any address and before the link goes up, so no DAD, RA or autoconf runs.
        ipv6::prepare(&self.proc_root, &cur.name)?;
        let v6_ok = self.ipv6_enabled(Some(&cur.name));
        let wanted: Vec<IpNet> = want
            .addresses
            .iter()
            .copied()
            .filter(|a| {
                let ok = a.addr().is_ipv4() || v6_ok;
                if !ok {
                    tracing::info!(addr = %a, dev = %want.name, "IPv6 disabled: address skipped");
                }
                ok
            })
            .collect();
        let before = state.added.get(&mac).cloned().unwrap_or_default();
        for old in before.iter().filter(|a| !wanted.contains(a)) {
            self.nl.del_address(index, *old, &cur.name).await?;
        }
        let mut added = Vec::new();
        for a in &wanted {
            if let Err(e) = self.add_address(index, *a, &cur.name).await {
                state.added.insert(mac, added);
                return Err(e);
            }
            added.push(*a);
        }
        state.added.insert(mac, added);

        // Name, MTU, ARP and up go in one request where they can.
        let mut attrs = Vec::new();
        if renaming {
            match self.link_named(&want.name).await? {
                Some(clash) => {
                    // Swap names: the clashing link goes to a temporary name, ours takes
                    // the requested one, the other gets ours. Renaming needs the link down.
                    let tmp = format!("sntmp{}", clash.index);
                    let was_up = clash.interface.is_up();
                    if was_up {
                        self.nl.set_up(clash.index, false, &want.name).await?;
                    }
                    self.rename(clash.index, &want.name, &tmp).await?;
                    self.rename(index, &cur.name, &want.name).await?;
                    self.rename(clash.index, &tmp, &cur.name).await?;
                    if was_up {
                        self.nl.set_up(clash.index, true, &cur.name).await?;
                    }
                }
                None => attrs.push(LinkAttribute::IfName(want.name.clone())),
            }
        }
        if want.mtu != 0 && want.mtu != cur.mtu {
            attrs.push(LinkAttribute::Mtu(want.mtu));
        }
        let noarp = if want.flags & IFF_NOARP != 0 {
            LinkFlags::Noarp
        } else {
            LinkFlags::empty()
        };
        self.nl
            .set_link(
                index,
                attrs,
                Some((noarp | LinkFlags::Up, LinkFlags::Noarp | LinkFlags::Up)),
                || format!("configure link {} (name, MTU, up)", want.name),
            )
            .await?;
        drop(state);
        self.interface_now(index, &want.name).await
    }

    /// One link as the scan sees it (same mapping, only that link's messages).
    async fn interface_now(&self, index: u32, name: &str) -> Result<Interface> {
        let link = self
            .nl
            .link_by_index(index)
            .await?
            .ok_or_else(|| AgentError::NotFound(format!("link {name} vanished")))?;
        let mut iface = link_detail(&link).interface;
        for a in self.nl.addresses().await? {
            if a.header.index == index {
                if let Some(net) = address_of(&a) {
                    if !iface.addresses.contains(&net) {
                        iface.addresses.push(net);
                    }
                }
            }
        }
        Ok(iface)
    }

    /// The main-table routes as the scan sees them (only the route dump).
    async fn routes_now(&self, index: &HashMap<String, u32>) -> Result<Vec<Route>> {
        let names: HashMap<u32, String> = index
            .iter()
            .filter(|(n, _)| n.as_str() != "lo")
            .map(|(n, i)| (*i, n.clone()))
            .collect();
        Ok(self
            .nl
            .routes()
            .await?
            .iter()
            .filter_map(|r| route_from_message(r, &names))
            .collect())
    }

    async fn index_of(&self) -> Result<HashMap<String, u32>> {
        Ok(self
            .nl
            .links()
            .await?
            .iter()
            .map(|l: &LinkMessage| {
                let d = link_detail(l);
                (d.interface.name, d.index)
            })
            .collect())
    }

    /// `UpdateRoutes`: the request is the complete set of routes for the NICs this agent
    /// configured (with `UpdateInterface`) and for any other device it names. Routes on
    /// those devices that are not requested are removed (Kata's agent removes every route
    /// of the namespace; sandnet leaves devices it neither configured nor was named alone,
    /// such as `lo`); the requested ones are installed with replace semantics, routes
    /// without a gateway first. IPv6 routes are skipped where IPv6 is disabled. Returns the
    /// namespace's resulting routes.
    pub async fn update_routes(&self, routes: &[Route]) -> Result<Vec<Route>> {
        let state = self.state.lock().await;
        // One dump gives both the names' indexes and the NICs this agent configured.
        let links: Vec<_> = self.nl.links().await?.iter().map(link_detail).collect();
        let index: HashMap<String, u32> = links
            .iter()
            .map(|d| (d.interface.name.clone(), d.index))
            .collect();
        let managed: HashSet<String> = links
            .into_iter()
            .filter(|d| {
                d.interface
                    .mac
                    .is_some_and(|m| state.added.contains_key(&m))
            })
            .map(|d| d.interface.name)
            .collect();
        for r in routes {
            if !index.contains_key(&r.device) {
                return Err(AgentError::NotFound(format!(
                    "route {}: device {:?} does not exist",
                    sandnet_netlink::route_text(r),
                    r.device
                )));
            }
            if r.gateway.is_some_and(|g| Family::of(&g) != r.family)
                || Family::of(&r.dest.addr()) != r.family
            {
                return Err(AgentError::Invalid(format!(
                    "route {}: mixed address families",
                    sandnet_netlink::route_text(r)
                )));
            }
        }
        let wanted: Vec<&Route> = routes
            .iter()
            .filter(|r| {
                let ok = r.family == Family::V4 || self.ipv6_enabled(Some(&r.device));
                if !ok {
                    tracing::info!(route = %sandnet_netlink::route_text(r), dev = %r.device,
                        "IPv6 disabled: route skipped");
                }
                ok
            })
            .collect();
        let devices: HashSet<&str> = routes
            .iter()
            .map(|r| r.device.as_str())
            .chain(managed.iter().map(String::as_str))
            .collect();
        let same = |a: &Route, b: &Route| {
            a.dest == b.dest && a.gateway == b.gateway && a.device == b.device
        };

        let existing = self.routes_now(&index).await?;
        // Remove gateway routes before link routes, the reverse of installing.
        let mut stale: Vec<&Route> = existing
            .iter()
            .filter(|e| devices.contains(e.device.as_str()))
            .filter(|e| !wanted.iter().any(|w| same(e, w)))
            .collect();
        stale.sort_by_key(|r| !r.has_gateway());
        for r in stale {
            if let Some(i) = index.get(&r.device) {
                self.nl.del_route(r, *i).await?;
            }
        }

        let cfg = NetworkConfig {
            routes: wanted.into_iter().cloned().collect(),
            ..Default::default()
        };
        for r in cfg.routes_in_apply_order() {
            let i = index[&r.device];
            match self.nl.replace_route(r, i).await {
                Ok(()) => {}
                Err(e) if e.is_exists() => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.routes_now(&index).await
    }

    /// `AddARPNeighbors`: installs each entry (replace), with its state or permanent when
    /// none is given.
    pub async fn add_neighbors(&self, neighbors: &[Neighbor]) -> Result<()> {
        let _state = self.state.lock().await;
        let index = self.index_of().await?;
        for n in neighbors {
            let Some(&ifindex) = index.get(&n.device) else {
                return Err(AgentError::NotFound(format!(
                    "neighbour {}: device {:?} does not exist",
                    n.ip, n.device
                )));
            };
            if n.ip.is_ipv6() && !self.ipv6_enabled(Some(&n.device)) {
                tracing::info!(ip = %n.ip, "IPv6 disabled: neighbour skipped");
                continue;
            }
            let state = match n.state {
                NeighborState::None => NeighborState::Permanent,
                s => s,
            };
            let mut msg = NeighbourMessage::default();
            msg.header.family = match n.ip {
                IpAddr::V4(_) => AddressFamily::Inet,
                IpAddr::V6(_) => AddressFamily::Inet6,
            };
            msg.header.ifindex = ifindex;
            msg.header.state = NeighbourState::from(state.to_raw());
            msg.header.flags = NeighbourFlags::from_bits_retain(n.flags);
            msg.header.kind = RouteType::Unspec;
            msg.attributes
                .push(NeighbourAttribute::Destination(NeighbourAddress::from(
                    n.ip,
                )));
            msg.attributes.push(NeighbourAttribute::LinkLayerAddress(
                n.mac.octets().to_vec(),
            ));
            self.nl
                .ack(
                    RouteNetlinkMessage::NewNeighbour(msg),
                    NLM_F_CREATE | NLM_F_REPLACE,
                    || format!("add neighbour {} lladdr {} dev {}", n.ip, n.mac, n.device),
                )
                .await?;
        }
        Ok(())
    }

    /// What the namespace has now: interfaces (without `lo`) and main-table routes, by
    /// the same scan the host side uses.
    pub async fn list(&self) -> Result<NetworkConfig> {
        Ok(scan_detail(&self.nl).await?.config)
    }

    /// The netlink connection of the agent's namespace.
    pub fn netlink(&self) -> &Netlink {
        &self.nl
    }

    /// Brings `lo` up (a guest's init must).
    pub async fn loopback_up(&self) -> Result<()> {
        if let Some(lo) = self.link_named("lo").await? {
            self.nl.set_up(lo.index, true, "lo").await?;
        }
        Ok(())
    }
}
