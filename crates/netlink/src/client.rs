//! A thin netlink client: one request → its answers, kernel errors as [`NetlinkError::Kernel`]
//! naming what was being done, and the link / address / route / neighbour operations the
//! host side and the guest agent need.

use crate::error::{NetlinkError, Result};
use futures::StreamExt;
use ipnet::IpNet;
use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::neighbour::NeighbourMessage;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteMetric,
    RouteProtocol, RouteScope as NlRouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::Handle;
use sandnet_model::{MacAddr, Route};
use std::net::IpAddr;
use std::os::fd::{IntoRawFd, OwnedFd};

/// How often an interrupted dump (`EBUSY`) is asked again.
const DUMP_RETRIES: u64 = 5;

/// A netlink route client bound to the namespace its socket was opened in.
#[derive(Clone, Debug)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Wraps an existing rtnetlink handle.
    pub fn from_handle(handle: Handle) -> Netlink {
        Netlink { handle }
    }

    /// Opens a socket in the calling thread's namespace and spawns its connection task on
    /// the current tokio runtime.
    pub fn connect_current() -> Result<Netlink> {
        let fd = crate::socket::open_route_socket()
            .map_err(|e| NetlinkError::Transport(format!("open socket: {e}")))?;
        Netlink::from_fd(fd)
    }

    /// Builds a client on a socket opened elsewhere (e.g. inside another namespace).
    /// Must be called within a tokio runtime (the connection task is spawned on it).
    pub fn from_fd(fd: OwnedFd) -> Result<Netlink> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(NetlinkError::Transport(
                "a netlink client needs a tokio runtime".into(),
            ));
        }
        // SAFETY: `fd` is an open netlink socket; its ownership moves into the TokioSocket
        // (which makes it non-blocking and registers it with the current runtime).
        let tsock = unsafe {
            <netlink_sys::TokioSocket as std::os::fd::FromRawFd>::from_raw_fd(fd.into_raw_fd())
        };
        let (conn, handle, _) = rtnetlink::from_socket(tsock);
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// The underlying rtnetlink handle.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Sends one request and collects the answers; a kernel error becomes
    /// [`NetlinkError::Kernel`] with `what` as its description.
    pub async fn request(
        &self,
        msg: RouteNetlinkMessage,
        flags: u16,
        what: impl FnOnce() -> String,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = NLM_F_REQUEST | flags;
        let mut h = self.handle.clone();
        let mut stream = match h.request(req) {
            Ok(s) => s,
            Err(e) => return Err(NetlinkError::Transport(format!("{}: {e}", what()))),
        };
        let mut out = Vec::new();
        let mut what = Some(what);
        while let Some(m) = stream.next().await {
            match m.payload {
                NetlinkPayload::InnerMessage(inner) => out.push(inner),
                NetlinkPayload::Error(e) => {
                    if let Some(code) = e.code {
                        let w = what.take().map(|f| f()).unwrap_or_default();
                        return Err(NetlinkError::Kernel {
                            what: w,
                            errno: -code.get(),
                        });
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// A request that expects only an acknowledgement.
    pub async fn ack(
        &self,
        msg: RouteNetlinkMessage,
        flags: u16,
        what: impl FnOnce() -> String,
    ) -> Result<()> {
        self.request(msg, NLM_F_ACK | flags, what).await.map(|_| ())
    }

    /// A dump request. A dump the kernel interrupted because the table changed under it
    /// (`EBUSY`) is asked again, a few times.
    pub async fn dump(
        &self,
        msg: RouteNetlinkMessage,
        what: impl FnOnce() -> String,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        let what = what();
        let mut tries = 0;
        loop {
            match self.request(msg.clone(), NLM_F_DUMP, || what.clone()).await {
                Err(e) if e.errno() == Some(libc::EBUSY) && tries < DUMP_RETRIES => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(5 * tries)).await;
                }
                r => return r,
            }
        }
    }

    /// All links.
    pub async fn links(&self) -> Result<Vec<LinkMessage>> {
        let msgs = self
            .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()), || {
                "list links".into()
            })
            .await?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(l),
                _ => None,
            })
            .collect())
    }

    /// One link by index; `None` if there is no such link.
    pub async fn link_by_index(&self, index: u32) -> Result<Option<LinkMessage>> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.get_link(msg, || format!("get link {index}")).await
    }

    /// One link by name; `None` if there is no such link.
    pub async fn link_by_name(&self, name: &str) -> Result<Option<LinkMessage>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.get_link(msg, || format!("get link {name}")).await
    }

    async fn get_link(
        &self,
        msg: LinkMessage,
        what: impl FnOnce() -> String,
    ) -> Result<Option<LinkMessage>> {
        match self
            .request(RouteNetlinkMessage::GetLink(msg), 0, what)
            .await
        {
            Ok(v) => Ok(v.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(l),
                _ => None,
            })),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Changes a link with `RTM_NEWLINK` (no create): attributes and flags as given.
    pub async fn set_link(
        &self,
        index: u32,
        attrs: Vec<LinkAttribute>,
        flags: Option<(LinkFlags, LinkFlags)>,
        what: impl FnOnce() -> String,
    ) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        if let Some((f, mask)) = flags {
            msg.header.flags = f;
            msg.header.change_mask = mask;
        }
        msg.attributes = attrs;
        self.ack(RouteNetlinkMessage::SetLink(msg), 0, what).await
    }

    /// Brings a link up or down.
    pub async fn set_up(&self, index: u32, up: bool, name: &str) -> Result<()> {
        let f = if up {
            LinkFlags::Up
        } else {
            LinkFlags::empty()
        };
        self.set_link(index, vec![], Some((f, LinkFlags::Up)), || {
            format!("set link {name} {}", if up { "up" } else { "down" })
        })
        .await
    }

    /// Sets a link's hardware address.
    pub async fn set_mac(&self, index: u32, mac: MacAddr, name: &str) -> Result<()> {
        self.set_link(
            index,
            vec![LinkAttribute::Address(mac.octets().to_vec())],
            None,
            || format!("set MAC {mac} on {name}"),
        )
        .await
    }

    /// Deletes a link; a link that is already gone is not an error.
    pub async fn del_link(&self, index: u32, name: &str) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        match self
            .ack(RouteNetlinkMessage::DelLink(msg), 0, || {
                format!("delete link {name}")
            })
            .await
        {
            Err(e) if e.is_not_found() => Ok(()),
            r => r,
        }
    }

    /// Deletes every link of a link group in one request (one unregister for all of them,
    /// which is far cheaper than one request per link).
    pub async fn del_link_group(&self, group: u32) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::Group(group));
        match self
            .ack(RouteNetlinkMessage::DelLink(msg), 0, || {
                format!("delete link group {group}")
            })
            .await
        {
            Err(e) if e.is_not_found() => Ok(()),
            r => r,
        }
    }

    /// Creates a link from a complete `RTM_NEWLINK` message (fails if the name exists).
    pub async fn add_link(&self, msg: LinkMessage, what: impl FnOnce() -> String) -> Result<()> {
        self.ack(
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            what,
        )
        .await
    }

    /// Creates a veth pair `name` (here) ↔ `peer`, the peer placed in `peer_ns` when given
    /// (by fd, so the pair never exists anywhere else).
    pub async fn add_veth(
        &self,
        name: &str,
        peer: &str,
        peer_ns: Option<std::os::fd::BorrowedFd<'_>>,
    ) -> Result<()> {
        use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth, LinkInfo};
        use std::os::fd::AsRawFd;
        let mut peer_msg = LinkMessage::default();
        peer_msg
            .attributes
            .push(LinkAttribute::IfName(peer.to_string()));
        if let Some(fd) = peer_ns {
            peer_msg
                .attributes
                .push(LinkAttribute::NetNsFd(fd.as_raw_fd()));
        }
        let mut msg = LinkMessage::default();
        msg.attributes = vec![
            LinkAttribute::IfName(name.to_string()),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
            ]),
        ];
        self.add_link(msg, || format!("create veth pair {name}/{peer}"))
            .await
    }

    /// All addresses of all families.
    pub async fn addresses(&self) -> Result<Vec<AddressMessage>> {
        let msgs = self
            .dump(
                RouteNetlinkMessage::GetAddress(AddressMessage::default()),
                || "list addresses".into(),
            )
            .await?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => Some(a),
                _ => None,
            })
            .collect())
    }

    /// Adds (or with `replace`, replaces) an address on a link.
    pub async fn add_address(
        &self,
        index: u32,
        addr: IpNet,
        replace: bool,
        name: &str,
    ) -> Result<()> {
        let msg = address_message(index, addr);
        let flags = NLM_F_CREATE | if replace { NLM_F_REPLACE } else { NLM_F_EXCL };
        self.ack(RouteNetlinkMessage::NewAddress(msg), flags, || {
            format!("add address {addr} to {name}")
        })
        .await
    }

    /// Removes an address from a link; one that is not there is not an error.
    pub async fn del_address(&self, index: u32, addr: IpNet, name: &str) -> Result<()> {
        let msg = address_message(index, addr);
        match self
            .ack(RouteNetlinkMessage::DelAddress(msg), 0, || {
                format!("remove address {addr} from {name}")
            })
            .await
        {
            Err(e) if e.is_not_found() || e.errno() == Some(libc::EADDRNOTAVAIL) => Ok(()),
            r => r,
        }
    }

    /// All routes of all families and tables.
    pub async fn routes(&self) -> Result<Vec<RouteMessage>> {
        let mut all = Vec::new();
        for fam in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut msg = RouteMessage::default();
            msg.header.address_family = fam;
            let msgs = self
                .dump(RouteNetlinkMessage::GetRoute(msg), || "list routes".into())
                .await?;
            all.extend(msgs.into_iter().filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => Some(r),
                _ => None,
            }));
        }
        Ok(all)
    }

    /// Installs a route in the main table with replace semantics; `index` is the device
    /// `route.device` names.
    pub async fn replace_route(&self, route: &Route, index: u32) -> Result<()> {
        let msg = route_message(route, index);
        self.ack(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
            || format!("add route {} on {}", route_text(route), route.device),
        )
        .await
    }

    /// Deletes a route; one that is not there is not an error.
    pub async fn del_route(&self, route: &Route, index: u32) -> Result<()> {
        let msg = route_message(route, index);
        match self
            .ack(RouteNetlinkMessage::DelRoute(msg), 0, || {
                format!("delete route {} on {}", route_text(route), route.device)
            })
            .await
        {
            Err(e) if e.is_not_found() => Ok(()),
            r => r,
        }
    }

    /// All neighbour entries.
    pub async fn neighbours(&self) -> Result<Vec<NeighbourMessage>> {
        let msgs = self
            .dump(
                RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default()),
                || "list neighbours".into(),
            )
            .await?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n) => Some(n),
                _ => None,
            })
            .collect())
    }
}

/// Describes a route for messages.
pub fn route_text(r: &Route) -> String {
    match r.gateway {
        Some(gw) => format!("{} via {gw}", r.dest),
        None => r.dest.to_string(),
    }
}

fn family_of(ip: &IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// An `RTM_NEWADDR`/`RTM_DELADDR` message for `addr` on link `index`.
pub fn address_message(index: u32, addr: IpNet) -> AddressMessage {
    let ip = addr.addr();
    let mut msg = AddressMessage::default();
    msg.header.family = family_of(&ip);
    msg.header.prefix_len = addr.prefix_len();
    msg.header.index = index;
    msg.attributes.push(AddressAttribute::Local(ip));
    msg.attributes.push(AddressAttribute::Address(ip));
    if let IpNet::V4(v4) = addr {
        if v4.prefix_len() < 31 {
            msg.attributes
                .push(AddressAttribute::Broadcast(v4.broadcast()));
        }
    }
    msg
}

/// An `RTM_NEWROUTE`/`RTM_DELROUTE` message for the main table.
pub fn route_message(route: &Route, index: u32) -> RouteMessage {
    let mut msg = RouteMessage::default();
    let dest = route.dest.trunc();
    msg.header.address_family = family_of(&dest.addr());
    msg.header.destination_prefix_length = dest.prefix_len();
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RouteProtocol::Boot;
    msg.header.scope = NlRouteScope::from(route.scope.to_raw());
    msg.header.kind = RouteType::Unicast;
    msg.header.flags = RouteFlags::from_bits_retain(route.flags & RouteFlags::Onlink.bits());
    if dest.prefix_len() > 0 {
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(dest.addr())));
    }
    if let Some(gw) = route.gateway {
        msg.attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
    }
    if let Some(src) = route.source {
        msg.attributes
            .push(RouteAttribute::PrefSource(RouteAddress::from(src)));
    }
    msg.attributes.push(RouteAttribute::Oif(index));
    if let Some(mtu) = route.mtu {
        msg.attributes
            .push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(mtu)]));
    }
    msg
}
