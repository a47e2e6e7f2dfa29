//! Parsing notifications, from messages built with netlink-packet-route and from raw
//! bytes (what the kernel sends is tested against the kernel in the host crate).

use super::*;
use netlink_packet_core::NetlinkHeader;
use netlink_packet_route::address::AddressMessage;
use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::neighbour::NeighbourMessage;
use netlink_packet_route::route::RouteMessage;

fn bytes(m: RouteNetlinkMessage) -> Vec<u8> {
    let mut m = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::InnerMessage(m));
    m.finalize();
    let mut b = vec![0; m.buffer_len()];
    m.serialize(&mut b);
    b
}

fn changes(buf: &[u8]) -> Vec<NetEvent> {
    let mut out = VecDeque::new();
    parse_datagram(buf, &mut out);
    out.into()
}

#[test]
fn link_address_route_neighbour_messages() {
    let mut l = LinkMessage::default();
    l.header.index = 12;
    l.attributes.push(LinkAttribute::IfName("eth9".into()));
    l.attributes
        .push(LinkAttribute::IfAlias("sandnet:tcfilter:3".into()));
    let mut a = AddressMessage::default();
    a.header.index = 12;
    a.header.family = AddressFamily::Inet6;
    let mut r = RouteMessage::default();
    r.header.address_family = AddressFamily::Inet;
    r.attributes.push(RouteAttribute::Oif(12));
    let mut n = NeighbourMessage::default();
    n.header.ifindex = 12;
    n.header.family = AddressFamily::Inet;
    n.header.state = NeighbourState::Permanent;
    let mut buf = bytes(RouteNetlinkMessage::DelLink(l));
    buf.extend(bytes(RouteNetlinkMessage::NewAddress(a)));
    buf.extend(bytes(RouteNetlinkMessage::DelRoute(r)));
    buf.extend(bytes(RouteNetlinkMessage::NewNeighbour(n)));
    let got = changes(&buf);
    let want = |kind, op, family, permanent| {
        NetEvent::Change(Change {
            kind,
            op,
            index: 12,
            name: None,
            alias: None,
            family,
            permanent,
        })
    };
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(
        got[0],
        NetEvent::Change(Change {
            name: Some("eth9".into()),
            alias: Some("sandnet:tcfilter:3".into()),
            ..match want(ChangeKind::Link, Op::Del, None, false) {
                NetEvent::Change(c) => c,
                NetEvent::Overrun => unreachable!(),
            }
        })
    );
    assert_eq!(
        got[1],
        want(ChangeKind::Address, Op::New, Some(Family::V6), false)
    );
    assert_eq!(
        got[2],
        want(ChangeKind::Route, Op::Del, Some(Family::V4), false)
    );
    assert_eq!(
        got[3],
        want(ChangeKind::Neighbor, Op::New, Some(Family::V4), true)
    );
}

#[test]
fn other_messages_are_skipped() {
    let buf = bytes(RouteNetlinkMessage::GetLink(LinkMessage::default()));
    assert!(changes(&buf).is_empty());
    assert!(changes(&[]).is_empty());
}

#[test]
fn unreadable_messages_ask_for_a_rescan_or_fall_back_to_the_header() {
    // A length field pointing past the datagram.
    let mut buf = bytes(RouteNetlinkMessage::NewLink(LinkMessage::default()));
    buf[0] = 200;
    assert_eq!(changes(&buf), vec![NetEvent::Overrun]);

    // An RTM_NEWNEIGH with a truncated ndmsg: nothing can be read from it.
    let mut short = vec![0u8; 20];
    short[0] = 20;
    short[4..6].copy_from_slice(&libc::RTM_NEWNEIGH.to_ne_bytes());
    assert_eq!(changes(&short), vec![NetEvent::Overrun]);

    // An RTM_DELADDR whose attribute is malformed (length past the message): the header
    // still says which link.
    let mut m = vec![0u8; 16 + 8 + 4];
    let len = m.len() as u32;
    m[0..4].copy_from_slice(&len.to_ne_bytes());
    m[4..6].copy_from_slice(&libc::RTM_DELADDR.to_ne_bytes());
    m[16] = libc::AF_INET as u8;
    m[20..24].copy_from_slice(&5u32.to_ne_bytes());
    m[24..26].copy_from_slice(&40u16.to_ne_bytes()); // nla_len 40 > what is left
    let got = changes(&m);
    assert_eq!(got.len(), 1, "{got:?}");
    match &got[0] {
        NetEvent::Change(c) => {
            assert_eq!((c.kind, c.op, c.index), (ChangeKind::Address, Op::Del, 5));
            assert_eq!(c.family, Some(Family::V4));
        }
        NetEvent::Overrun => panic!("the header was readable"),
    }
    assert!(
        NetlinkMessage::<RouteNetlinkMessage>::deserialize(&m).is_err(),
        "the typed parser refuses it, so the fallback was used"
    );
}
