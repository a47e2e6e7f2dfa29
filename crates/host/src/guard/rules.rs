//! The anti-spoofing rules of one guest NIC as u32 matches: pure data, no I/O.
//!
//! Each rule is one u32 node: a protocol (the filter's `tcm_info` protocol, so a
//! VLAN-tagged frame, whose protocol is 802.1Q, matches none), a node id (u32 runs the
//! nodes of one priority in node-id order) and keys at offsets from the network header
//! (negative ones reach into the Ethernet header). A rule either passes the frame
//! ([`Verdict::Pass`]) or drops it ([`Verdict::Drop`]); a frame no rule passes is
//! dropped by the guard's default class.
//!
//! What passes, from the guest NIC's own MAC only:
//! - IPv4 from one of its addresses; ARP whose sender MAC is its MAC and sender IP one of
//!   its addresses;
//! - IPv6 from one of its addresses or its EUI-64 link-local; `::` only for duplicate
//!   address detection (a neighbour solicitation); MLD reports behind a hop-by-hop header
//!   (the only extension header passed, as the kernel sends them); neighbour
//!   advertisements only for its own addresses.
//!
//! What is dropped before the address rules: router advertisements and redirects, the
//! routing and destination-options headers (which could hide them), and every other
//! neighbour advertisement.
//!
//! Each rule is a filter the kernel creates at attach (about 9 µs each here), so the list
//! is kept short: 9 fixed IPv6 rules, then 2 per address (IPv4: source and ARP; IPv6:
//! source and advertisement), the EUI-64 link-local included.

use ipnet::IpNet;
use sandnet_model::MacAddr;
use std::net::{IpAddr, Ipv6Addr};

/// `ETH_P_IP`.
pub const ETH_P_IP: u16 = 0x0800;
/// `ETH_P_ARP`.
pub const ETH_P_ARP: u16 = 0x0806;
/// `ETH_P_IPV6`.
pub const ETH_P_IPV6: u16 = 0x86dd;

/// The filter priority of each protocol's rules.
pub fn prio_of(proto: u16) -> u16 {
    match proto {
        ETH_P_IPV6 => 1,
        ETH_P_IP => 2,
        _ => 3,
    }
}

/// The node id of the first fixed rule (it passes MLD reports).
pub const FIRST_FIXED_NODE: u16 = node::MLD2_REPORT;

/// First node id of the per-address rules (below it are the fixed ones).
pub const FIRST_ADDRESS_NODE: u16 = 0x100;
/// Last node id u32 allows.
pub const LAST_NODE: u16 = 0xfff;

/// Node ids of the fixed IPv6 rules, in the order they run.
mod node {
    pub const MLD2_REPORT: u16 = 0x01;
    pub const MLD1_REPORT: u16 = 0x02;
    pub const MLD1_DONE: u16 = 0x03;
    pub const HOP_BY_HOP: u16 = 0x04;
    pub const ROUTING: u16 = 0x05;
    pub const DEST_OPTS: u16 = 0x06;
    pub const ROUTER_ADVERT: u16 = 0x07;
    pub const DAD: u16 = 0x09;
    /// Neighbour advertisements for the NIC's own addresses start here…
    pub const NA_FIRST: u16 = 0x10;
    /// …and every other one, and every redirect, is dropped here.
    pub const NA_OTHER: u16 = 0xff;
}

/// One 32-bit match: `(word at off) & mask == val`, in the packet's byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    /// Offset from the network header (negative: into the Ethernet header).
    pub off: i32,
    /// The value, as the four bytes read big-endian.
    pub val: u32,
    /// Which bits count.
    pub mask: u32,
}

/// What a matching rule does with the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// On to the pod's network.
    Pass,
    /// Dropped and counted as spoofed.
    Drop,
}

/// One u32 node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    /// Ethernet protocol the filter is for.
    pub proto: u16,
    /// Node id within the protocol's priority.
    pub node: u16,
    /// All must match.
    pub keys: Vec<Key>,
    /// What happens on a match.
    pub verdict: Verdict,
}

/// The two keys matching the Ethernet source address.
fn src_mac(mac: MacAddr) -> [Key; 2] {
    let m = mac.0;
    [
        Key {
            off: -8,
            val: u32::from_be_bytes([m[0], m[1], m[2], m[3]]),
            mask: 0xffff_ffff,
        },
        Key {
            off: -4,
            val: u32::from_be_bytes([m[4], m[5], 0, 0]),
            mask: 0xffff_0000,
        },
    ]
}

/// Keys matching 16 bytes at `off`.
fn bytes16(off: i32, b: [u8; 16]) -> [Key; 4] {
    std::array::from_fn(|i| Key {
        off: off + 4 * i as i32,
        val: u32::from_be_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]),
        mask: 0xffff_ffff,
    })
}

/// The IPv6 next-header byte (offset 6).
fn next_header(nh: u8) -> Key {
    Key {
        off: 4,
        val: u32::from(nh) << 8,
        mask: 0x0000_ff00,
    }
}

/// An ICMPv6 type right after the fixed header (offset 40).
fn icmp6_type(t: u8) -> Key {
    Key {
        off: 40,
        val: u32::from(t) << 24,
        mask: 0xff00_0000,
    }
}

const NH_HOP_BY_HOP: u8 = 0;
const NH_ROUTING: u8 = 43;
const NH_DEST_OPTS: u8 = 60;
const NH_ICMPV6: u8 = 58;
const ICMP6_MLD1_REPORT: u8 = 131;
const ICMP6_MLD1_DONE: u8 = 132;
const ICMP6_ROUTER_ADVERT: u8 = 134;
const ICMP6_NEIGH_SOLICIT: u8 = 135;
const ICMP6_NEIGH_ADVERT: u8 = 136;
const ICMP6_MLD2_REPORT: u8 = 143;

/// The EUI-64 link-local address the guest's kernel derives from its MAC.
pub fn link_local(mac: MacAddr) -> Ipv6Addr {
    let m = mac.0;
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        m[0] ^ 0x02,
        m[1],
        m[2],
        0xff,
        0xfe,
        m[3],
        m[4],
        m[5],
    ])
}

/// The addresses a NIC may send from: its own, and for IPv6 its EUI-64 link-local
/// (sorted, no duplicates).
pub fn allowed_addresses(mac: MacAddr, addrs: &[IpNet]) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = addrs.iter().map(|a| a.addr()).collect();
    v.push(IpAddr::V6(link_local(mac)));
    v.sort();
    v.dedup();
    v
}

/// The rules that do not depend on the NIC's addresses (IPv6 only).
pub fn fixed_rules(mac: MacAddr) -> Vec<Rule> {
    let mld = |node, t| {
        let mut keys = src_mac(mac).to_vec();
        keys.push(next_header(NH_HOP_BY_HOP));
        // The hop-by-hop header's own next header (ICMPv6) and length (8 bytes).
        keys.push(Key {
            off: 40,
            val: u32::from(NH_ICMPV6) << 24,
            mask: 0xffff_0000,
        });
        keys.push(Key {
            off: 48,
            val: u32::from(t) << 24,
            mask: 0xff00_0000,
        });
        Rule {
            proto: ETH_P_IPV6,
            node,
            keys,
            verdict: Verdict::Pass,
        }
    };
    let drop = |node, keys: Vec<Key>| Rule {
        proto: ETH_P_IPV6,
        node,
        keys,
        verdict: Verdict::Drop,
    };
    let mut dad = src_mac(mac).to_vec();
    dad.extend(bytes16(8, [0; 16]));
    dad.push(next_header(NH_ICMPV6));
    dad.push(icmp6_type(ICMP6_NEIGH_SOLICIT));
    vec![
        mld(node::MLD2_REPORT, ICMP6_MLD2_REPORT),
        mld(node::MLD1_REPORT, ICMP6_MLD1_REPORT),
        mld(node::MLD1_DONE, ICMP6_MLD1_DONE),
        drop(node::HOP_BY_HOP, vec![next_header(NH_HOP_BY_HOP)]),
        drop(node::ROUTING, vec![next_header(NH_ROUTING)]),
        drop(node::DEST_OPTS, vec![next_header(NH_DEST_OPTS)]),
        drop(
            node::ROUTER_ADVERT,
            vec![next_header(NH_ICMPV6), icmp6_type(ICMP6_ROUTER_ADVERT)],
        ),
        Rule {
            proto: ETH_P_IPV6,
            node: node::DAD,
            keys: dad,
            verdict: Verdict::Pass,
        },
        // 136 and 137 (a redirect) differ in the last bit only: one rule for both.
        drop(
            node::NA_OTHER,
            vec![
                next_header(NH_ICMPV6),
                Key {
                    off: 40,
                    val: u32::from(ICMP6_NEIGH_ADVERT) << 24,
                    mask: 0xfe00_0000,
                },
            ],
        ),
    ]
}

/// What one allowed address needs, without node ids: for IPv4 a source rule and an ARP
/// rule, for IPv6 a neighbour-advertisement rule (`true`) and a source rule (`false`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AddressRule {
    /// The address.
    pub addr: IpAddr,
    /// Ethernet protocol.
    pub proto: u16,
    /// IPv6: the neighbour-advertisement rule (node below [`FIRST_ADDRESS_NODE`]).
    pub advert: bool,
    /// The keys.
    pub keys: Vec<Key>,
}

/// The rules of one allowed address (see [`AddressRule`]).
pub fn address_rules(mac: MacAddr, addr: IpAddr) -> Vec<AddressRule> {
    let m = src_mac(mac);
    match addr {
        IpAddr::V4(a) => {
            let o = a.octets();
            let mut ip = m.to_vec();
            ip.push(Key {
                off: 12,
                val: u32::from_be_bytes(o),
                mask: 0xffff_ffff,
            });
            let mut arp = m.to_vec();
            let h = mac.0;
            arp.extend([
                // Ethernet/IPv4, 6-byte and 4-byte addresses.
                Key {
                    off: 0,
                    val: 0x0001_0800,
                    mask: 0xffff_ffff,
                },
                Key {
                    off: 4,
                    val: 0x0604_0000,
                    mask: 0xffff_0000,
                },
                // Sender MAC, then sender IP.
                Key {
                    off: 8,
                    val: u32::from_be_bytes([h[0], h[1], h[2], h[3]]),
                    mask: 0xffff_ffff,
                },
                Key {
                    off: 12,
                    val: u32::from_be_bytes([h[4], h[5], o[0], o[1]]),
                    mask: 0xffff_ffff,
                },
                Key {
                    off: 16,
                    val: u32::from_be_bytes([o[2], o[3], 0, 0]),
                    mask: 0xffff_0000,
                },
            ]);
            vec![
                AddressRule {
                    addr,
                    proto: ETH_P_IP,
                    advert: false,
                    keys: ip,
                },
                AddressRule {
                    addr,
                    proto: ETH_P_ARP,
                    advert: false,
                    keys: arp,
                },
            ]
        }
        IpAddr::V6(a) => {
            let mut na = m.to_vec();
            na.push(next_header(NH_ICMPV6));
            na.push(icmp6_type(ICMP6_NEIGH_ADVERT));
            // The advertisement's target address.
            na.extend(bytes16(48, a.octets()));
            let mut src = m.to_vec();
            src.extend(bytes16(8, a.octets()));
            vec![
                AddressRule {
                    addr,
                    proto: ETH_P_IPV6,
                    advert: true,
                    keys: na,
                },
                AddressRule {
                    addr,
                    proto: ETH_P_IPV6,
                    advert: false,
                    keys: src,
                },
            ]
        }
    }
}

/// The range of node ids an address rule may take.
pub fn node_range(r: &AddressRule) -> std::ops::RangeInclusive<u16> {
    if r.advert {
        node::NA_FIRST..=node::NA_OTHER - 1
    } else {
        FIRST_ADDRESS_NODE..=LAST_NODE
    }
}

/// Every rule of a NIC with these addresses, node ids given in order.
pub fn all_rules(mac: MacAddr, addrs: &[IpNet]) -> Vec<Rule> {
    let mut out = fixed_rules(mac);
    let mut next: std::collections::HashMap<(u16, bool), u16> = Default::default();
    for a in allowed_addresses(mac, addrs) {
        for r in address_rules(mac, a) {
            let range = node_range(&r);
            let n = next.entry((r.proto, r.advert)).or_insert(*range.start());
            out.push(Rule {
                proto: r.proto,
                node: *n,
                keys: r.keys,
                verdict: Verdict::Pass,
            });
            *n += 1;
        }
    }
    out
}

/// The address an address rule's keys allow, read back from a dumped node (`None` for
/// the fixed rules and anything else).
pub fn address_of(proto: u16, node: u16, keys: &[Key]) -> Option<IpAddr> {
    let word = |off: i32| keys.iter().find(|k| k.off == off && k.mask == 0xffff_ffff);
    let v6 = |off: i32| -> Option<IpAddr> {
        let mut b = [0u8; 16];
        for i in 0..4 {
            b[4 * i..4 * i + 4].copy_from_slice(&word(off + 4 * i as i32)?.val.to_be_bytes());
        }
        Some(IpAddr::V6(Ipv6Addr::from(b)))
    };
    match proto {
        ETH_P_IP if node >= FIRST_ADDRESS_NODE => {
            Some(IpAddr::V4(word(12)?.val.to_be_bytes().into()))
        }
        ETH_P_ARP if node >= FIRST_ADDRESS_NODE => {
            let hi = word(12)?.val.to_be_bytes();
            let lo = keys.iter().find(|k| k.off == 16)?.val.to_be_bytes();
            Some(IpAddr::V4([hi[2], hi[3], lo[0], lo[1]].into()))
        }
        ETH_P_IPV6 if node >= FIRST_ADDRESS_NODE => v6(8),
        ETH_P_IPV6 if (node::NA_FIRST..node::NA_OTHER).contains(&node) => v6(48),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac() -> MacAddr {
        "02:42:ac:13:00:05".parse().unwrap()
    }

    #[test]
    fn link_local_is_eui64() {
        let m: MacAddr = "52:54:00:12:34:56".parse().unwrap();
        assert_eq!(
            link_local(m),
            "fe80::5054:ff:fe12:3456".parse::<Ipv6Addr>().unwrap()
        );
    }

    #[test]
    fn source_mac_keys() {
        let k = src_mac(mac());
        assert_eq!(k[0].val, 0x0242_ac13);
        assert_eq!(k[1].val, 0x0005_0000);
        assert_eq!(k[1].mask, 0xffff_0000);
    }

    #[test]
    fn every_address_is_read_back_from_its_keys() {
        let addrs: Vec<IpNet> = vec![
            "172.19.0.5/24".parse().unwrap(),
            "fd00::5/64".parse().unwrap(),
        ];
        let rules = all_rules(mac(), &addrs);
        let mut seen: Vec<(u16, IpAddr)> = rules
            .iter()
            .filter_map(|r| Some((r.proto, address_of(r.proto, r.node, &r.keys)?)))
            .collect();
        seen.sort();
        let v4: IpAddr = "172.19.0.5".parse().unwrap();
        let v6: IpAddr = "fd00::5".parse().unwrap();
        let ll = IpAddr::V6(link_local(mac()));
        let mut want = vec![
            (ETH_P_IP, v4),
            (ETH_P_ARP, v4),
            (ETH_P_IPV6, v6),
            (ETH_P_IPV6, v6),
            (ETH_P_IPV6, ll),
            (ETH_P_IPV6, ll),
        ];
        want.sort();
        assert_eq!(seen, want);
    }

    #[test]
    fn node_ids_are_unique_per_protocol_and_ordered_by_role() {
        let addrs: Vec<IpNet> = vec![
            "10.0.0.2/24".parse().unwrap(),
            "10.0.0.3/24".parse().unwrap(),
            "fd00::2/64".parse().unwrap(),
        ];
        let rules = all_rules(mac(), &addrs);
        let mut ids: Vec<(u16, u16)> = rules.iter().map(|r| (r.proto, r.node)).collect();
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n);
        // Drops of RAs and redirects come before any IPv6 address rule.
        let ra = rules
            .iter()
            .find(|r| r.node == node::ROUTER_ADVERT)
            .unwrap();
        assert_eq!(ra.verdict, Verdict::Drop);
        assert!(rules
            .iter()
            .filter(|r| r.proto == ETH_P_IPV6 && r.verdict == Verdict::Pass && r.node > 0x0f)
            .all(|r| r.node > ra.node));
        // An advertisement for the NIC's own address runs before the drop of all others.
        assert!(
            rules
                .iter()
                .filter(
                    |r| r.proto == ETH_P_IPV6 && (node::NA_FIRST..node::NA_OTHER).contains(&r.node)
                )
                .count()
                == 2
        );
    }

    #[test]
    fn arp_rule_checks_sender_mac_and_ip() {
        let a: IpAddr = "172.19.0.5".parse().unwrap();
        let r = address_rules(mac(), a);
        let arp = r.iter().find(|r| r.proto == ETH_P_ARP).unwrap();
        // sender MAC 02:42:ac:13 at 8; 00:05 + 172.19 at 12; 0.5 at 16.
        assert!(arp.keys.contains(&Key {
            off: 8,
            val: 0x0242_ac13,
            mask: 0xffff_ffff
        }));
        assert!(arp.keys.contains(&Key {
            off: 12,
            val: 0x0005_ac13,
            mask: 0xffff_ffff
        }));
        assert!(arp.keys.contains(&Key {
            off: 16,
            val: 0x0005_0000,
            mask: 0xffff_0000
        }));
    }
}
