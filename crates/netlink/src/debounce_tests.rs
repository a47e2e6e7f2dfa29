//! The debouncer's summary and timing, with tokio's clock paused (it advances by itself
//! whenever every task is waiting, so these tests take no real time).

use super::*;
use crate::events::Family;
use futures::channel::mpsc;
use tokio::time::sleep;

fn change(kind: ChangeKind, op: Op, index: u32) -> NetEvent {
    NetEvent::Change(Change {
        kind,
        op,
        index,
        name: None,
        alias: None,
        family: (kind != ChangeKind::Link).then_some(Family::V4),
        permanent: false,
    })
}

fn link(op: Op, index: u32, name: &str, alias: Option<&str>) -> NetEvent {
    NetEvent::Change(Change {
        kind: ChangeKind::Link,
        op,
        index,
        name: Some(name.into()),
        alias: alias.map(str::to_string),
        family: None,
        permanent: false,
    })
}

type Tx = mpsc::UnboundedSender<Result<NetEvent>>;

fn debouncer(
    quiet_ms: u64,
    max_ms: u64,
) -> (Tx, Debouncer<mpsc::UnboundedReceiver<Result<NetEvent>>>) {
    let (tx, rx) = mpsc::unbounded();
    let cfg = DebounceConfig {
        quiet: Duration::from_millis(quiet_ms),
        max: Duration::from_millis(max_ms),
    };
    (tx, Debouncer::new(rx, cfg))
}

/// Sends `n` address events `gap_ms` apart from a task of its own.
fn feed(tx: &Tx, n: u32, gap_ms: u64) -> tokio::task::JoinHandle<()> {
    let tx = tx.clone();
    tokio::spawn(async move {
        for i in 0..n {
            let _ = tx.unbounded_send(Ok(change(ChangeKind::Address, Op::New, i)));
            sleep(Duration::from_millis(gap_ms)).await;
        }
    })
}

#[test]
fn summary_of_links_and_objects() {
    let mut b = Batch::default();
    assert!(b.is_empty());
    b.add(&link(Op::New, 7, "eth1", None));
    b.add(&link(Op::New, 7, "eth1", Some("x")));
    b.add(&link(Op::New, 8, "eth2", None));
    b.add(&link(Op::Del, 8, "eth2", None));
    b.add(&link(Op::Del, 9, "eth3", None));
    b.add(&link(Op::New, 9, "eth3b", None));
    b.add(&change(ChangeKind::Address, Op::New, 7));
    b.add(&change(ChangeKind::Address, Op::Del, 7));
    b.add(&change(ChangeKind::Route, Op::New, 0));
    let mut n = change(ChangeKind::Neighbor, Op::New, 7);
    b.add(&n);
    if let NetEvent::Change(c) = &mut n {
        c.index = 9;
        c.permanent = true;
    }
    b.add(&n);
    assert_eq!(b.events, 11);
    assert!(!b.overrun);
    assert_eq!(b.links_present().collect::<Vec<_>>(), vec![7, 9]);
    assert_eq!(b.links_gone().collect::<Vec<_>>(), vec![8]);
    assert_eq!(b.links[&7].alias.as_deref(), Some("x"));
    assert!(!b.links[&7].deleted);
    assert!(
        b.links[&9].deleted,
        "a link deleted then back is not the old one"
    );
    assert_eq!(b.links[&9].name.as_deref(), Some("eth3b"));
    assert_eq!(b.addresses, BTreeSet::from([7]));
    assert_eq!(b.routes, BTreeSet::from([0]));
    assert_eq!(b.neighbors, BTreeSet::from([7, 9]));
    assert_eq!(b.permanent_neighbors, BTreeSet::from([9]));
    b.add(&NetEvent::Overrun);
    assert!(b.overrun);
}

#[test]
fn summary_is_bounded() {
    let mut b = Batch::default();
    for i in 0..(Batch::MAX_ENTRIES as u32 + 100) {
        b.add(&change(ChangeKind::Route, Op::New, i));
        b.add(&link(Op::New, i, "x", None));
    }
    assert_eq!(b.routes.len(), Batch::MAX_ENTRIES);
    assert_eq!(b.links.len(), Batch::MAX_ENTRIES);
    assert!(b.overrun, "a batch past its bounds asks for a rescan");
}

#[tokio::test(start_paused = true)]
async fn a_burst_is_one_batch_closed_by_quiet() {
    let (tx, mut d) = debouncer(50, 500);
    let t0 = Instant::now();
    let f = feed(&tx, 50, 1);
    let b = d.next_batch().await.unwrap().unwrap();
    // 50 events 1 ms apart: the last at 49 ms, then 50 ms of quiet.
    assert_eq!(b.events, 50);
    assert_eq!(b.addresses.len(), 50);
    assert_eq!(t0.elapsed(), Duration::from_millis(99));
    f.await.unwrap();
    // Another event later is a batch of its own.
    sleep(Duration::from_secs(1)).await;
    tx.unbounded_send(Ok(NetEvent::Overrun)).unwrap();
    let b = d.next_batch().await.unwrap().unwrap();
    assert_eq!(b.events, 1);
    assert!(b.overrun);
}

#[tokio::test(start_paused = true)]
async fn a_storm_is_cut_at_max() {
    let (tx, mut d) = debouncer(50, 500);
    let f = feed(&tx, 100, 20); // 2 s of events, never 50 ms quiet
    let mut sizes = vec![];
    let mut last = Instant::now();
    let mut waits = vec![];
    while sizes.iter().sum::<usize>() < 100 {
        let b = d.next_batch().await.unwrap().unwrap();
        sizes.push(b.events);
        waits.push(last.elapsed());
        last = Instant::now();
    }
    f.await.unwrap();
    assert!((4..=5).contains(&sizes.len()), "{sizes:?}");
    for w in &waits[..3] {
        assert!(*w <= Duration::from_millis(520), "{waits:?}");
    }
    assert!(sizes[..3].iter().all(|n| *n >= 24), "{sizes:?}");
}

#[tokio::test(start_paused = true)]
async fn waits_for_the_first_event_without_limit() {
    let (tx, mut d) = debouncer(50, 500);
    let t0 = Instant::now();
    tokio::spawn(async move {
        sleep(Duration::from_secs(3600)).await;
        tx.unbounded_send(Ok(change(ChangeKind::Route, Op::Del, 3)))
            .unwrap();
        // The sender stays open a little, then the source ends.
        sleep(Duration::from_secs(1)).await;
    });
    let b = d.next_batch().await.unwrap().unwrap();
    assert_eq!(t0.elapsed(), Duration::from_millis(3_600_050));
    assert_eq!(b.routes, BTreeSet::from([3]));
    assert!(d.next_batch().await.unwrap().is_none(), "source ended");
    assert!(d.next_batch().await.unwrap().is_none());
}

#[tokio::test(start_paused = true)]
async fn an_error_comes_after_the_batch_it_interrupted() {
    let (tx, mut d) = debouncer(50, 500);
    tx.unbounded_send(Ok(change(ChangeKind::Address, Op::New, 1)))
        .unwrap();
    tx.unbounded_send(Err(NetlinkError::Transport("gone".into())))
        .unwrap();
    let b = d.next_batch().await.unwrap().unwrap();
    assert_eq!(b.events, 1);
    let e = d.next_batch().await.unwrap_err();
    assert!(e.to_string().contains("gone"), "{e}");
    drop(tx);
    assert!(d.next_batch().await.unwrap().is_none());
}

#[tokio::test(start_paused = true)]
async fn cancelling_keeps_what_was_collected() {
    let (tx, mut d) = debouncer(50, 500);
    let f = feed(&tx, 30, 10); // 300 ms of events
                               // Give up after 100 ms, twice; nothing is lost.
    for _ in 0..2 {
        let r = tokio::time::timeout(Duration::from_millis(100), d.next_batch()).await;
        assert!(r.is_err(), "the batch is still open");
    }
    let b = d.next_batch().await.unwrap().unwrap();
    assert_eq!(b.events, 30);
    f.await.unwrap();
}
