//! Change events of a namespace against the real kernel: each test subscribes inside a
//! namespace of its own, makes changes there with `ip` and waits for the events.

use futures::StreamExt;
use sandnet_host::netlink::{
    Batch, ChangeKind, DebounceConfig, Debouncer, EventStream, Family, NetEvent, Op,
};
use sandnet_host::{NetNs, NetNsRef, OwnLinks};
use sandnet_testkit::{TempDir, TestNs};
use std::time::Duration;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

fn open(ns: &TestNs) -> NetNs {
    NetNs::open(&NetNsRef::name(&ns.name).unwrap()).unwrap()
}

/// Reads events until one satisfies `want`; returns all read (panics after [`WAIT`]).
async fn until<S>(s: &mut S, what: &str, want: impl Fn(&NetEvent) -> bool) -> Vec<NetEvent>
where
    S: futures::Stream<Item = Result<NetEvent, sandnet_host::NetlinkError>> + Unpin,
{
    let mut seen = vec![];
    loop {
        match timeout(WAIT, s.next()).await {
            Ok(Some(Ok(e))) => {
                let hit = want(&e);
                seen.push(e);
                if hit {
                    eprintln!("{what}: {}", show(&seen));
                    return seen;
                }
            }
            Ok(Some(Err(e))) => panic!("{what}: {e}"),
            Ok(None) => panic!("{what}: stream ended"),
            Err(_) => panic!("{what}: not seen within {WAIT:?}; got {}", show(&seen)),
        }
    }
}

fn show(es: &[NetEvent]) -> String {
    let one = |e: &NetEvent| match e {
        NetEvent::Overrun => "OVERRUN".to_string(),
        NetEvent::Change(c) => format!(
            "{:?}/{:?}#{}{}{}{}{}",
            c.kind,
            c.op,
            c.index,
            c.name
                .as_deref()
                .map(|n| format!(" {n}"))
                .unwrap_or_default(),
            c.alias
                .as_deref()
                .map(|a| format!(" alias={a}"))
                .unwrap_or_default(),
            c.family.map(|f| format!(" {f:?}")).unwrap_or_default(),
            if c.permanent { " permanent" } else { "" },
        ),
    };
    es.iter().map(one).collect::<Vec<_>>().join(", ")
}

/// A matcher for one change.
fn is(kind: ChangeKind, op: Op, index: u32, family: Option<Family>) -> impl Fn(&NetEvent) -> bool {
    move |e| {
        matches!(e, NetEvent::Change(c)
            if c.kind == kind && c.op == op && c.index == index
                && (family.is_none() || c.family == family))
    }
}

fn index_of(ns: &TestNs, dev: &str) -> u32 {
    ns.link(dev).expect("link")["ifindex"]
        .as_u64()
        .expect("ifindex") as u32
}

#[test]
fn subscribing_outside_a_runtime_is_a_clear_error() {
    let pod = TestNs::new("ev-nort");
    let e = open(&pod).subscribe().unwrap_err().to_string();
    assert!(e.contains("tokio runtime"), "{e}");
    assert_eq!(e.lines().count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_change_shows_up_as_its_event() {
    let pod = TestNs::new("ev-pod");
    let other = TestNs::new("ev-oth");
    let mut s = open(&pod).subscribe().unwrap();
    assert!(s.rcvbuf().unwrap() >= 1 << 20, "a large receive buffer");

    // A veth end moved into the namespace, as a CNI plugin does.
    other.ip(&["link", "add", "evA", "type", "veth", "peer", "name", "evB"]);
    other.ip(&["link", "set", "evB", "netns", &pod.name]);
    let i = index_of(&pod, "evB");
    let seen = until(
        &mut s,
        "veth moved in",
        is(ChangeKind::Link, Op::New, i, None),
    )
    .await;
    let NetEvent::Change(c) = seen.last().unwrap() else {
        unreachable!()
    };
    assert_eq!(c.name.as_deref(), Some("evB"));
    other.ip(&["link", "set", "evA", "up"]);
    pod.ip(&["link", "set", "evB", "up"]);

    pod.ip(&["addr", "add", "10.9.0.2/24", "dev", "evB"]);
    until(
        &mut s,
        "v4 address",
        is(ChangeKind::Address, Op::New, i, Some(Family::V4)),
    )
    .await;
    pod.ip(&["addr", "add", "fd00:9::2/64", "dev", "evB", "nodad"]);
    until(
        &mut s,
        "v6 address",
        is(ChangeKind::Address, Op::New, i, Some(Family::V6)),
    )
    .await;
    pod.ip(&[
        "route",
        "add",
        "10.10.0.0/24",
        "via",
        "10.9.0.1",
        "dev",
        "evB",
    ]);
    until(
        &mut s,
        "v4 route",
        is(ChangeKind::Route, Op::New, i, Some(Family::V4)),
    )
    .await;
    pod.ip(&[
        "route",
        "add",
        "fd00:10::/64",
        "via",
        "fd00:9::1",
        "dev",
        "evB",
    ]);
    until(
        &mut s,
        "v6 route",
        is(ChangeKind::Route, Op::New, i, Some(Family::V6)),
    )
    .await;
    let lladdr = ["lladdr", "02:00:00:00:00:07", "nud", "permanent"];
    pod.ip(&[&["neigh", "add", "10.9.0.7", "dev", "evB"][..], &lladdr[..]].concat());
    let seen = until(
        &mut s,
        "permanent neighbour",
        is(ChangeKind::Neighbor, Op::New, i, None),
    )
    .await;
    assert!(
        matches!(seen.last(), Some(NetEvent::Change(c)) if c.permanent && c.family == Some(Family::V4))
    );

    pod.ip(&["neigh", "del", "10.9.0.7", "dev", "evB"]);
    until(
        &mut s,
        "neighbour gone",
        is(ChangeKind::Neighbor, Op::Del, i, Some(Family::V4)),
    )
    .await;
    pod.ip(&["route", "del", "10.10.0.0/24"]);
    until(
        &mut s,
        "v4 route gone",
        is(ChangeKind::Route, Op::Del, i, Some(Family::V4)),
    )
    .await;
    pod.ip(&["addr", "del", "fd00:9::2/64", "dev", "evB"]);
    until(
        &mut s,
        "v6 address gone",
        is(ChangeKind::Address, Op::Del, i, Some(Family::V6)),
    )
    .await;
    pod.ip(&["addr", "del", "10.9.0.2/24", "dev", "evB"]);
    until(
        &mut s,
        "v4 address gone",
        is(ChangeKind::Address, Op::Del, i, Some(Family::V4)),
    )
    .await;

    pod.ip(&["link", "del", "evB"]);
    let seen = until(
        &mut s,
        "link deleted",
        is(ChangeKind::Link, Op::Del, i, None),
    )
    .await;
    let NetEvent::Change(c) = seen.last().unwrap() else {
        unreachable!()
    };
    assert_eq!(
        c.name.as_deref(),
        Some("evB"),
        "a deleted link's message still names it"
    );
    assert!(!seen.contains(&NetEvent::Overrun));
}

/// Collects batches until none came for a second (the first may take [`WAIT`]).
async fn batches_until_idle<S>(d: &mut Debouncer<S>) -> Vec<Batch>
where
    S: futures::Stream<Item = Result<NetEvent, sandnet_host::NetlinkError>> + Unpin,
{
    let mut out: Vec<Batch> = vec![];
    loop {
        let wait = if out.is_empty() {
            WAIT
        } else {
            Duration::from_secs(1)
        };
        match timeout(wait, d.next_batch()).await {
            Ok(b) => out.push(b.unwrap().expect("not ended")),
            Err(_) if out.is_empty() => panic!("no batch within {WAIT:?}"),
            Err(_) => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_50_addresses_comes_as_few_batches() {
    let pod = TestNs::new("ev-burst");
    pod.ip(&["tuntap", "add", "d0", "mode", "tap"]);
    let nn = open(&pod);
    let dir = TempDir::new("ev-burst");
    let script = dir.join("batch");
    let lines: String = (1..=50)
        .map(|k| format!("addr add 10.50.{k}.1/32 dev d0\n"))
        .collect();
    std::fs::write(&script, lines).unwrap();
    let mut d = Debouncer::new(nn.subscribe().unwrap(), DebounceConfig::default());
    let t0 = std::time::Instant::now();
    pod.ip(&["-batch", script.to_str().unwrap()]);
    let batches = batches_until_idle(&mut d).await;
    let sizes: Vec<_> = batches.iter().map(|b| b.events).collect();
    eprintln!(
        "50 addresses: batches of {sizes:?} events, {:?}",
        t0.elapsed()
    );
    assert!(batches.len() <= 3, "{sizes:?}");
    // Each /32 brings its address and its local route, even on a link that is down.
    assert_eq!(sizes.iter().sum::<usize>(), 100, "{sizes:?}");
    let i = index_of(&pod, "d0");
    for b in &batches {
        assert!(!b.overrun, "no overrun with the default buffer");
        assert_eq!(b.addresses, [i].into(), "{b:?}");
        assert!(b.links.is_empty(), "{b:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandnet_links_are_filtered() {
    let pod = TestNs::new("ev-own");
    let own = OwnLinks::new();
    own.add_name("sntap77"); // as the monitor does before creating a tap
    let mut s = own.filter(open(&pod).subscribe().unwrap());

    // A tap-like link named in advance, marked after creation as sandnet does, with an
    // address and up (IPv6 link-local, routes): nothing of it passes.
    pod.ip(&["tuntap", "add", "sntap77", "mode", "tap"]);
    pod.ip(&[
        "link",
        "set",
        "sntap77",
        "alias",
        "sandnet:tcfilter:2",
        "up",
    ]);
    pod.ip(&["addr", "add", "10.77.0.1/24", "dev", "sntap77"]);
    // A link only the alias marks: its events pass until one shows the alias. (An alias
    // change on a link that is down sends no event at all, so mark it while up.)
    pod.ip(&["tuntap", "add", "mark0", "mode", "tap"]);
    pod.ip(&["link", "set", "mark0", "up"]);
    pod.ip(&["link", "set", "mark0", "alias", "sandnet:macvtap:5"]);
    pod.ip(&["addr", "add", "10.78.0.1/24", "dev", "mark0"]);
    let tap = index_of(&pod, "sntap77");
    let mark = index_of(&pod, "mark0");
    pod.ip(&["link", "del", "sntap77"]);
    pod.ip(&["link", "del", "mark0"]);
    // Someone else's link does pass; it ends the test.
    pod.ip(&["tuntap", "add", "other0", "mode", "tap"]);
    let other = index_of(&pod, "other0");
    let seen = until(
        &mut s,
        "other link",
        is(ChangeKind::Link, Op::New, other, None),
    )
    .await;
    let of = |i: u32| {
        seen.iter()
            .filter(|e| matches!(e, NetEvent::Change(c) if c.index == i))
            .count()
    };
    assert_eq!(of(tap), 0, "{}", show(&seen));
    let of_mark: Vec<_> = seen
        .iter()
        .filter_map(|e| match e {
            NetEvent::Change(c) if c.index == mark => Some((c.kind, c.op)),
            _ => None,
        })
        .collect();
    assert!(
        !of_mark.is_empty(),
        "mark0's unmarked events pass: {}",
        show(&seen)
    );
    assert!(
        of_mark.iter().all(|k| *k == (ChangeKind::Link, Op::New)),
        "nothing after the alias shows (address, route, delete): {}",
        show(&seen)
    );
    assert!(own.contains_index(tap) && own.contains_index(mark));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_receive_buffer_is_reported_as_an_overrun() {
    let pod = TestNs::new("ev-ovr");
    pod.ip(&["tuntap", "add", "d0", "mode", "tap"]);
    let mut s: EventStream = open(&pod).subscribe_with(0).unwrap();
    eprintln!("receive buffer granted: {} bytes", s.rcvbuf().unwrap());
    // Nobody reads while 500 changes happen.
    let dir = TempDir::new("ev-ovr");
    let script = dir.join("batch");
    let lines: String = (1..=250)
        .map(|k| format!("addr add 10.60.{}.{}/32 dev d0\n", k / 200, k % 200 + 1))
        .collect::<String>()
        + &(1..=250)
            .map(|k| format!("addr del 10.60.{}.{}/32 dev d0\n", k / 200, k % 200 + 1))
            .collect::<String>();
    std::fs::write(&script, lines).unwrap();
    pod.ip(&["-batch", script.to_str().unwrap()]);
    let seen = until(&mut s, "overrun", |e| *e == NetEvent::Overrun).await;
    eprintln!("{} events read before the overrun", seen.len() - 1);
    assert!(seen.len() < 500, "events were lost");
    // Once the overrun is reported, no later change is lost: the kernel drops
    // notifications silently while its queue stays congested, so the stream emptied it.
    pod.ip(&["tuntap", "add", "after0", "mode", "tap"]);
    let after = index_of(&pod, "after0");
    let seen = until(&mut s, "after", is(ChangeKind::Link, Op::New, after, None)).await;
    assert_eq!(seen.len(), 1, "only the new change: {}", show(&seen));
}
