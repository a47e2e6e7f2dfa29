//! The netlink messages of the guard: the HTB root qdisc on the pod link with its two
//! classes (pass, and a sink whose `pfifo limit 0` drops everything), the u32 filters that
//! classify into them, and the TBF root qdisc on the tap. netlink-packet-route has no
//! types for HTB, TBF or pfifo options, so their structs are written out here as the
//! kernel's uapi lays them out (native byte order).

use super::rules::{prio_of, Rule, Verdict};
use super::{GUARD_HANDLE, PASS_CLASS, SINK_CLASS, SINK_LEAF_HANDLE};
use netlink_packet_core::{DefaultNla, NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::tc::{
    TcAttribute, TcFilterU32Option, TcHandle, TcMessage, TcOption, TcU32Key, TcU32Selector,
    TcU32SelectorFlags,
};
use netlink_packet_route::RouteNetlinkMessage;
use sandnet_model::RateLimit;

/// One request: message, extra flags, what it does (for errors).
pub type Request = (RouteNetlinkMessage, u16, String);

const TCA_OPTIONS: u16 = 2;
const TCA_HTB_PARMS: u16 = 1;
const TCA_HTB_INIT: u16 = 2;
const TCA_HTB_RATE64: u16 = 6;
const TCA_HTB_CEIL64: u16 = 7;
const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RATE64: u16 = 4;
const TCA_TBF_BURST: u16 = 6;
/// `TC_LINKLAYER_ETHERNET`: the kernel then needs no rate table.
const LINKLAYER_ETHERNET: u8 = 1;
/// `TC_HTB_PROTOVER`.
const HTB_VERSION: u32 = 3;
/// The pass class's rate when the egress is not limited: far above any veth's.
const UNLIMITED_BPS: u64 = 100_000_000_000;
/// HTB's quantum (bytes a class sends per round), set so the kernel does not derive one.
const QUANTUM: u32 = 200_000;

fn tc(index: u32, parent: u32, handle: u32) -> TcMessage {
    let mut m = TcMessage::default();
    m.header.index = index as i32;
    m.header.parent = TcHandle::from(parent);
    m.header.handle = TcHandle::from(handle);
    m
}

/// `struct tc_ratespec` for a rate in bytes/s (saturated to 32 bits; the 64-bit attribute
/// carries the rest).
fn ratespec(bytes_per_s: u64) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[1] = LINKLAYER_ETHERNET;
    b[8..12].copy_from_slice(&(bytes_per_s.min(u32::MAX as u64) as u32).to_ne_bytes());
    b
}

/// The time, in the kernel's 64 ns scheduler ticks, that `bytes` take at `bytes_per_s`.
fn ticks(bytes: u64, bytes_per_s: u64) -> u32 {
    let ns = (bytes as u128 * 1_000_000_000) / bytes_per_s.max(1) as u128;
    (ns >> 6).min(u32::MAX as u128) as u32
}

fn u32s(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_ne_bytes()).collect()
}

/// The HTB root qdisc on the pod link; unclassified frames go to the sink when spoofing is
/// blocked, else to the pass class.
pub fn htb_qdisc(link: u32, name: &str, block: bool) -> Request {
    let mut m = tc(link, u32::from(TcHandle::ROOT), GUARD_HANDLE);
    let default = if block { SINK_CLASS } else { PASS_CLASS };
    m.attributes.push(TcAttribute::Kind("htb".into()));
    m.attributes.push(TcAttribute::Options(vec![TcOption::Other(
        DefaultNla::new(TCA_HTB_INIT, u32s(&[HTB_VERSION, 10, default, 0, 0])),
    )]));
    (
        RouteNetlinkMessage::NewQueueDiscipline(m),
        NLM_F_CREATE | NLM_F_EXCL,
        format!("add the guard (htb root qdisc) on {name}"),
    )
}

/// One HTB class of the guard at `rate` (`None`: unlimited).
pub fn htb_class(link: u32, name: &str, minor: u32, rate: Option<&RateLimit>) -> Request {
    let mut m = tc(link, GUARD_HANDLE, GUARD_HANDLE | minor);
    let (bps, burst) = match rate {
        Some(r) => (r.rate_bytes(), r.burst_bytes),
        None => (UNLIMITED_BPS / 8, 1 << 20),
    };
    let mut opt = Vec::with_capacity(44);
    opt.extend(ratespec(bps));
    opt.extend(ratespec(bps));
    let t = ticks(burst, bps);
    opt.extend(u32s(&[t, t, QUANTUM, 0, 0]));
    let mut nlas = vec![TcOption::Other(DefaultNla::new(TCA_HTB_PARMS, opt))];
    if bps > u32::MAX as u64 {
        nlas.push(TcOption::Other(DefaultNla::new(
            TCA_HTB_RATE64,
            bps.to_ne_bytes().to_vec(),
        )));
        nlas.push(TcOption::Other(DefaultNla::new(
            TCA_HTB_CEIL64,
            bps.to_ne_bytes().to_vec(),
        )));
    }
    m.attributes.push(TcAttribute::Kind("htb".into()));
    m.attributes.push(TcAttribute::Options(nlas));
    (
        RouteNetlinkMessage::NewTrafficClass(m),
        NLM_F_CREATE | NLM_F_EXCL,
        format!("add guard class {minor} on {name}"),
    )
}

/// The sink class's leaf: a `pfifo` holding nothing, so every frame put in it is dropped
/// (and counted).
pub fn sink_leaf(link: u32, name: &str) -> Request {
    let mut m = tc(link, GUARD_HANDLE | SINK_CLASS, SINK_LEAF_HANDLE);
    m.attributes.push(TcAttribute::Kind("pfifo".into()));
    m.attributes
        .push(TcAttribute::Other(DefaultNla::new(TCA_OPTIONS, u32s(&[0]))));
    (
        RouteNetlinkMessage::NewQueueDiscipline(m),
        NLM_F_CREATE | NLM_F_EXCL,
        format!("add the guard's sink on {name}"),
    )
}

/// A u32 filter node on the guard classifying into the sink class, or for a passing rule
/// into `pass` (the pass class's id, or the qdisc's own `5a4e:0`: HTB's direct queue, which
/// sends without shaping).
pub fn rule_filter(link: u32, name: &str, r: &Rule, pass: u32) -> Request {
    let mut m = tc(link, GUARD_HANDLE, u32::from(r.node));
    m.header.info = (u32::from(prio_of(r.proto)) << 16) | u32::from(r.proto.to_be());
    let mut sel = TcU32Selector::default();
    sel.flags = TcU32SelectorFlags::Terminal;
    sel.nkeys = r.keys.len() as u8;
    sel.keys = r
        .keys
        .iter()
        .map(|k| {
            let mut x = TcU32Key::default();
            x.off = k.off;
            x.val = k.val;
            x.mask = k.mask;
            x
        })
        .collect();
    let class = match r.verdict {
        Verdict::Pass => pass,
        Verdict::Drop => GUARD_HANDLE | SINK_CLASS,
    };
    m.attributes.push(TcAttribute::Kind("u32".into()));
    m.attributes.push(TcAttribute::Options(vec![
        TcOption::U32(TcFilterU32Option::ClassId(TcHandle::from(class))),
        TcOption::U32(TcFilterU32Option::Selector(sel)),
    ]));
    (
        RouteNetlinkMessage::NewTrafficFilter(m),
        NLM_F_CREATE | NLM_F_EXCL,
        format!("add guard rule {:#x}/{:#x} on {name}", r.proto, r.node),
    )
}

/// Deletes one guard rule by its full u32 handle.
pub fn del_rule(link: u32, name: &str, proto: u16, handle: u32) -> Request {
    let mut m = tc(link, GUARD_HANDLE, handle);
    m.header.info = (u32::from(prio_of(proto)) << 16) | u32::from(proto.to_be());
    m.attributes.push(TcAttribute::Kind("u32".into()));
    (
        RouteNetlinkMessage::DelTrafficFilter(m),
        0,
        format!("remove guard rule {handle:#x} on {name}"),
    )
}

/// The TBF root qdisc on the tap that shapes traffic into the guest.
pub fn tbf_qdisc(tap: u32, name: &str, r: &RateLimit) -> Request {
    let bps = r.rate_bytes();
    // Room for the burst plus 100 ms of traffic at the rate.
    let limit = (r.burst_bytes + bps / 10).min(u32::MAX as u64) as u32;
    let mut opt = Vec::with_capacity(36);
    opt.extend(ratespec(bps));
    opt.extend([0u8; 12]);
    opt.extend(u32s(&[limit, ticks(r.burst_bytes, bps), 0]));
    let mut nlas = vec![
        TcOption::Other(DefaultNla::new(TCA_TBF_PARMS, opt)),
        TcOption::Other(DefaultNla::new(
            TCA_TBF_BURST,
            (r.burst_bytes.min(u32::MAX as u64) as u32)
                .to_ne_bytes()
                .to_vec(),
        )),
    ];
    if bps > u32::MAX as u64 {
        nlas.push(TcOption::Other(DefaultNla::new(
            TCA_TBF_RATE64,
            bps.to_ne_bytes().to_vec(),
        )));
    }
    let mut m = tc(tap, u32::from(TcHandle::ROOT), GUARD_HANDLE);
    m.attributes.push(TcAttribute::Kind("tbf".into()));
    m.attributes.push(TcAttribute::Options(nlas));
    (
        RouteNetlinkMessage::NewQueueDiscipline(m),
        NLM_F_CREATE | NLM_F_EXCL,
        format!("add the ingress shaper (tbf) on {name}"),
    )
}

/// Deletes sandnet's root qdisc of a device (and with it every class and filter under it).
pub fn del_root(index: u32, name: &str) -> Request {
    let m = tc(index, u32::from(TcHandle::ROOT), GUARD_HANDLE);
    (
        RouteNetlinkMessage::DelQueueDiscipline(m),
        0,
        format!("remove sandnet's root qdisc on {name}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_64ns_units() {
        // 1000 bytes at 1 MB/s take 1 ms = 15625 ticks.
        assert_eq!(ticks(1000, 1_000_000), 15_625);
        assert_eq!(ticks(u64::MAX, 1), u32::MAX);
    }

    #[test]
    fn ratespec_saturates_and_says_ethernet() {
        let r = ratespec(u64::MAX);
        assert_eq!(r[1], LINKLAYER_ETHERNET);
        assert_eq!(&r[8..12], &u32::MAX.to_ne_bytes());
    }
}
