//! How `sandnet stats` shows counters: a table per NIC, and the Prometheus text format
//! (every metric a counter, labelled by sandbox, pod and interface).

use sandnet_host::guard::LinkCounters;
use sandnet_model::printable;
use sandnet_runtime::stats::{NicStats, SandboxStats};
use std::fmt::Write;

/// One link's counters as a table row.
fn row(out: &mut String, what: &str, c: Option<(u64, u64, u64, u64, u64, u64)>) {
    let _ = match c {
        Some((rb, rp, rd, tb, tp, td)) => writeln!(
            out,
            "  {what:<9} {rb:>14} {rp:>11} {rd:>9} {tb:>14} {tp:>11} {td:>9}"
        ),
        None => writeln!(out, "  {what:<9} {:>14}", "-"),
    };
}

fn six(c: &LinkCounters) -> (u64, u64, u64, u64, u64, u64) {
    (
        c.rx_bytes,
        c.rx_packets,
        c.rx_dropped,
        c.tx_bytes,
        c.tx_packets,
        c.tx_dropped,
    )
}

/// The readable table of one sandbox: per NIC, the pod link's, the tap's and the guest's
/// counters, then the guard's.
pub fn table(s: &SandboxStats) -> String {
    let mut out = format!("sandbox {}", printable(&s.id));
    if let Some(p) = &s.pod {
        let _ = write!(
            out,
            " (pod {}/{})",
            printable(&p.namespace),
            printable(&p.name)
        );
    }
    out.push('\n');
    if s.nics.is_empty() {
        out.push_str("  no NIC\n");
    }
    for n in &s.nics {
        let _ = writeln!(
            out,
            "NIC {} (tap {})",
            printable(&n.interface),
            n.tap.as_deref().map(printable).unwrap_or("-".into())
        );
        let _ = writeln!(
            out,
            "  {:<9} {:>14} {:>11} {:>9} {:>14} {:>11} {:>9}",
            "", "rx bytes", "rx packets", "rx drops", "tx bytes", "tx packets", "tx drops"
        );
        row(&mut out, "pod link", n.link.as_ref().map(six));
        row(&mut out, "tap", n.tap_counters.as_ref().map(six));
        row(
            &mut out,
            "guest",
            n.guest.as_ref().map(|g| six(&g.counters)),
        );
        let g = &n.guard;
        let _ = writeln!(
            out,
            "  guard: spoofed dropped {}; egress limit dropped {} delayed {}; ingress limit dropped {} delayed {}",
            g.spoofed_dropped,
            g.egress_limit_dropped,
            g.egress_limit_delayed,
            g.ingress_limit_dropped,
            g.ingress_limit_delayed
        );
    }
    if let Some(e) = &s.guest_error {
        let _ = writeln!(out, "  guest counters: {}", printable(e));
    }
    out
}

/// One metric: its name, its help, and its value for a NIC (`None`: no sample).
type Metric = (&'static str, &'static str, fn(&NicStats) -> Option<u64>);

/// Whose counters a metric reads.
#[derive(Clone, Copy)]
enum Part {
    Tap,
    Link,
    Guest,
}

fn counters(n: &NicStats, p: Part) -> Option<&LinkCounters> {
    match p {
        Part::Tap => n.tap_counters.as_ref(),
        Part::Link => n.link.as_ref(),
        Part::Guest => n.guest.as_ref().map(|g| &g.counters),
    }
}

macro_rules! link_metrics {
    ($($name:literal, $help:literal, $part:ident, $field:ident;)*) => {
        &[$(($name, $help, |n: &NicStats| counters(n, Part::$part).map(|c| c.$field)),)*]
    };
}

/// Every metric, in the order printed.
const METRICS: &[Metric] = link_metrics![
    "sandnet_nic_tap_rx_bytes_total", "Bytes the tap received (from the guest).", Tap, rx_bytes;
    "sandnet_nic_tap_rx_packets_total", "Packets the tap received (from the guest).", Tap, rx_packets;
    "sandnet_nic_tap_rx_dropped_total", "Packets from the guest the tap dropped.", Tap, rx_dropped;
    "sandnet_nic_tap_tx_bytes_total", "Bytes the tap sent (to the guest).", Tap, tx_bytes;
    "sandnet_nic_tap_tx_packets_total", "Packets the tap sent (to the guest).", Tap, tx_packets;
    "sandnet_nic_tap_tx_dropped_total", "Packets to the guest the tap dropped.", Tap, tx_dropped;
    "sandnet_nic_link_rx_bytes_total", "Bytes the pod link received.", Link, rx_bytes;
    "sandnet_nic_link_rx_packets_total", "Packets the pod link received.", Link, rx_packets;
    "sandnet_nic_link_rx_dropped_total", "Packets the pod link dropped on receive.", Link, rx_dropped;
    "sandnet_nic_link_tx_bytes_total", "Bytes the pod link sent.", Link, tx_bytes;
    "sandnet_nic_link_tx_packets_total", "Packets the pod link sent.", Link, tx_packets;
    "sandnet_nic_link_tx_dropped_total", "Packets the pod link dropped on send.", Link, tx_dropped;
    "sandnet_nic_guest_rx_bytes_total", "Bytes the guest NIC received (the guest's count).", Guest, rx_bytes;
    "sandnet_nic_guest_rx_packets_total", "Packets the guest NIC received (the guest's count).", Guest, rx_packets;
    "sandnet_nic_guest_rx_dropped_total", "Packets the guest NIC dropped on receive (the guest's count).", Guest, rx_dropped;
    "sandnet_nic_guest_tx_bytes_total", "Bytes the guest NIC sent (the guest's count).", Guest, tx_bytes;
    "sandnet_nic_guest_tx_packets_total", "Packets the guest NIC sent (the guest's count).", Guest, tx_packets;
    "sandnet_nic_guest_tx_dropped_total", "Packets the guest NIC dropped on send (the guest's count).", Guest, tx_dropped;
];

/// The guard's metrics.
const GUARD_METRICS: &[Metric] = &[
    (
        "sandnet_nic_spoofed_dropped_total",
        "Frames from the guest dropped as spoofed.",
        |n| n.guard.link_guarded.then_some(n.guard.spoofed_dropped),
    ),
    (
        "sandnet_nic_egress_limit_dropped_total",
        "Frames from the guest dropped by the egress rate limit.",
        |n| n.guard.link_guarded.then_some(n.guard.egress_limit_dropped),
    ),
    (
        "sandnet_nic_egress_limit_delayed_total",
        "Times the egress rate limit held frames from the guest back.",
        |n| n.guard.link_guarded.then_some(n.guard.egress_limit_delayed),
    ),
    (
        "sandnet_nic_ingress_limit_dropped_total",
        "Frames to the guest dropped by the ingress rate limit.",
        |n| n.guard.tap_shaped.then_some(n.guard.ingress_limit_dropped),
    ),
    (
        "sandnet_nic_ingress_limit_delayed_total",
        "Times the ingress rate limit held frames to the guest back.",
        |n| n.guard.tap_shaped.then_some(n.guard.ingress_limit_delayed),
    ),
];

/// A label value as the text format wants it: `\`, `"` and line feeds escaped.
pub fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

fn labels(s: &SandboxStats, n: &NicStats) -> String {
    let mut l = vec![("sandbox", s.id.as_str())];
    if let Some(p) = &s.pod {
        l.push(("pod_name", &p.name));
        l.push(("pod_namespace", &p.namespace));
    }
    l.push(("interface", &n.interface));
    let l: Vec<String> = l
        .into_iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
        .collect();
    l.join(",")
}

/// The Prometheus text format (0.0.4) of every sandbox's counters: one `# HELP` and
/// `# TYPE … counter` per metric, then its samples.
pub fn prometheus(all: &[SandboxStats]) -> String {
    let mut out = String::new();
    for (name, help, value) in METRICS.iter().chain(GUARD_METRICS) {
        let samples: Vec<String> = all
            .iter()
            .flat_map(|s| s.nics.iter().map(move |n| (s, n)))
            .filter_map(|(s, n)| Some(format!("{name}{{{}}} {}\n", labels(s, n), value(n)?)))
            .collect();
        if samples.is_empty() {
            continue;
        }
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        out.extend(samples);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandnet_agent_proto::GuestCounters;
    use sandnet_host::guard::GuardCounters;
    use sandnet_runtime::pod::PodRef;

    fn nic(name: &str) -> NicStats {
        NicStats {
            interface: name.into(),
            link_index: 2,
            link: Some(LinkCounters {
                rx_bytes: 1000,
                tx_packets: 7,
                ..Default::default()
            }),
            tap: Some("sntap2".into()),
            tap_counters: Some(LinkCounters {
                tx_bytes: 98,
                ..Default::default()
            }),
            guard: GuardCounters {
                link_guarded: true,
                spoofed_dropped: 3,
                ..Default::default()
            },
            guest: Some(GuestCounters {
                name: name.into(),
                counters: LinkCounters {
                    rx_bytes: 98,
                    ..Default::default()
                },
                ..Default::default()
            }),
        }
    }

    fn sample() -> Vec<SandboxStats> {
        vec![
            SandboxStats {
                id: "sb1".into(),
                pod: PodRef::new(Some("we\"b\\0\u{1}"), Some("de\\fault")),
                nics: vec![nic("eth0")],
                guest_error: None,
            },
            SandboxStats {
                id: "sb2".into(),
                pod: None,
                nics: vec![NicStats {
                    guest: None,
                    ..nic("eth1")
                }],
                guest_error: Some("no answer".into()),
            },
        ]
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(escape_label("eth0"), "eth0");
    }

    #[test]
    fn prometheus_text() {
        let mut s = sample();
        // A pod name with a line feed is not recorded; one with quotes and backslashes is.
        assert!(s[0].pod.is_none());
        s[0].pod = PodRef::new(Some("we\"b\\0"), Some("default"));
        let t = prometheus(&s);
        assert!(t.contains(
            "# TYPE sandnet_nic_tap_tx_bytes_total counter\n\
             sandnet_nic_tap_tx_bytes_total{sandbox=\"sb1\",pod_name=\"we\\\"b\\\\0\",pod_namespace=\"default\",interface=\"eth0\"} 98\n\
             sandnet_nic_tap_tx_bytes_total{sandbox=\"sb2\",interface=\"eth1\"} 98\n"
        ), "{t}");
        assert!(
            t.contains("sandnet_nic_spoofed_dropped_total{sandbox=\"sb2\",interface=\"eth1\"} 3\n")
        );
        // The guest's samples only where it answered; no family without samples.
        assert!(t.contains("sandnet_nic_guest_rx_bytes_total{sandbox=\"sb1\""));
        assert!(!t.contains("sandnet_nic_guest_rx_bytes_total{sandbox=\"sb2\""));
        assert!(!t.contains("ingress_limit"), "{t}");
        // Every family: HELP, then TYPE counter, then its samples, each name once.
        let mut seen = std::collections::BTreeSet::new();
        let mut current = "";
        for l in t.lines() {
            if let Some(r) = l.strip_prefix("# HELP ") {
                current = r.split(' ').next().unwrap();
                assert!(seen.insert(current.to_string()), "{current} twice");
            } else if let Some(r) = l.strip_prefix("# TYPE ") {
                assert_eq!(r, format!("{current} counter"));
            } else {
                assert!(l.starts_with(&format!("{current}{{")), "{l}");
                assert!(current.ends_with("_total"));
                l.rsplit(' ').next().unwrap().parse::<u64>().unwrap();
            }
        }
        assert_eq!(prometheus(&[]), "");
    }

    #[test]
    fn table_shows_every_part() {
        let t = table(&sample()[1]);
        assert!(t.starts_with("sandbox sb2\nNIC eth1 (tap sntap2)\n"), "{t}");
        assert!(t.contains("pod link"));
        assert!(t.contains("spoofed dropped 3"));
        assert!(t.contains("guest counters: no answer"));
    }
}
