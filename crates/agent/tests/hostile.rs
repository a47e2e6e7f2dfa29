//! The host-side client against a hostile agent (`sandnet-agent --hostile MODE` in its own
//! netns, over a unix socket): each misbehaviour ends in one clear error line within the
//! call timeout, memory stays bounded, and guest-chosen names print escaped.

mod common;

use common::AgentNs;
use sandnet_agent_proto::{AgentClient, ClientError, MAX_INTERFACES};
use sandnet_model::printable;
use std::time::{Duration, Instant};

const CALL: Duration = Duration::from_secs(2);

/// RSS is the whole process's: the tests of this file run one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// This process's resident set (`VmRSS`) or its peak so far (`VmHWM`), in KiB.
fn status_kib(key: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

async fn hostile(test: &str, mode: &str) -> (AgentNs, AgentClient) {
    let a = AgentNs::with_args(test, &[], &["--hostile", mode]);
    let c = AgentClient::connect(&a.sock, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{e}; agent log:\n{}", a.log()));
    (a, c.with_call_timeout(CALL))
}

/// Runs `f` a few times; each must fail within the timeout with one printable line, and
/// memory must not grow by more than 32 MiB.
async fn fails_cleanly<T: std::fmt::Debug, F, Fut>(mode: &str, f: F) -> Vec<ClientError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let before = status_kib("VmRSS:");
    let mut errs = vec![];
    for _ in 0..3 {
        let t0 = Instant::now();
        let e = f().await.expect_err("a hostile agent must not succeed");
        let took = t0.elapsed();
        let line = e.to_string();
        eprintln!("[{mode}] after {took:?}: {line}");
        assert!(
            took < CALL + Duration::from_secs(1),
            "{mode}: took {took:?}"
        );
        assert!(!line.contains('\n') && line.len() < 600, "{mode}: {line:?}");
        assert_eq!(printable(&line), line, "{mode}: raw control characters");
        errs.push(e);
    }
    // The peak since the process started bounds the peak during the calls.
    let grown = status_kib("VmHWM:").saturating_sub(before);
    eprintln!("[{mode}] peak RSS {grown} KiB above the start");
    assert!(
        grown < 32 * 1024,
        "{mode}: peak RSS {grown} KiB above the start"
    );
    errs
}

#[tokio::test]
async fn silent_agent_times_out() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (_a, c) = hostile("silent", "silent").await;
    let errs = fails_cleanly("silent", || c.health_check()).await;
    assert!(
        matches!(errs[0], ClientError::Timeout { .. }),
        "{:?}",
        errs[0]
    );
}

#[tokio::test]
async fn endless_bytes_fail_the_call() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (_a, c) = hostile("endless", "endless").await;
    fails_cleanly("endless", || c.list_interfaces()).await;
}

#[tokio::test]
async fn oversized_frames_fail_the_call() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (_a, c) = hostile("oversized", "oversized").await;
    fails_cleanly("oversized", || c.list_interfaces()).await;
}

#[tokio::test]
async fn garbage_protobuf_fails_the_call() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (_a, c) = hostile("garbage", "garbage").await;
    let errs = fails_cleanly("garbage", || c.list_routes()).await;
    assert!(
        !matches!(errs[0], ClientError::Timeout { .. }),
        "{:?}",
        errs[0]
    );
}

#[tokio::test]
async fn huge_interface_lists_are_refused() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (_a, c) = hostile("huge", "huge").await;
    let errs = fails_cleanly("huge", || c.list_interfaces()).await;
    assert!(
        matches!(
            errs[0],
            ClientError::TooMany {
                count: 500_000,
                max: MAX_INTERFACES,
                ..
            }
        ),
        "{:?}",
        errs[0]
    );
    // The guest's counters too: refused from the count, before anything is decoded.
    let errs = fails_cleanly("huge stats", || c.interface_stats()).await;
    assert!(
        matches!(
            errs[0],
            ClientError::TooMany {
                count: 500_000,
                max: MAX_INTERFACES,
                ..
            }
        ),
        "{:?}",
        errs[0]
    );
}

#[tokio::test]
async fn escape_sequences_in_names_print_escaped() {
    let _one = ONE_AT_A_TIME.lock().await;
    let setup: &[&[&str]] = &[
        &[
            "link", "add", "dummy0", "type", "veth", "peer", "name", "peer0",
        ],
        &["addr", "add", "10.9.0.1/24", "dev", "dummy0"],
        &["link", "set", "dummy0", "up"],
        &["link", "set", "peer0", "up"],
        &[
            "route",
            "add",
            "10.10.0.0/24",
            "via",
            "10.9.0.2",
            "dev",
            "dummy0",
        ],
    ];
    let a = AgentNs::with_args("names", setup, &["--hostile", "names"]);
    let c = AgentClient::connect(&a.sock, Duration::from_secs(10))
        .await
        .expect("connect");
    let ifs = c.list_interfaces().await.expect("list interfaces");
    let d = ifs
        .iter()
        .find(|i| i.name.contains("dummy0"))
        .expect("dummy0");
    assert!(d.name.contains('\x1b'), "{:?}", d.name);
    assert_eq!(printable(&d.name), "\\u{1b}[2Jdummy0\\u{7}");
    let routes = c.list_routes().await.expect("list routes");
    assert!(!routes.is_empty());
    for r in &routes {
        assert!(r.device.contains('\x1b') && !printable(&r.device).contains('\x1b'));
    }
    // The guest's counters are only taken with names the host can show as they are.
    let e = c.interface_stats().await.expect_err("escapes in names");
    assert!(matches!(e, ClientError::Convert { .. }), "{e:?}");
    assert_eq!(printable(&e.to_string()), e.to_string());
}
