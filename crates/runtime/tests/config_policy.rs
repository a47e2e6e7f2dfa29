//! The keys of what the host enforces on a guest NIC: `[runtime] guest_spoofing` and Kata's
//! `[hypervisor.qemu] rx_rate_limiter_max_rate` / `tx_rate_limiter_max_rate`, and how a
//! request's `--guest-spoofing` and `--bandwidth` combine with them.

use sandnet_model::{GuestSpoofing, RateLimit, TapPolicy};
use sandnet_runtime::api::{BandwidthEntry, PodNetns, Runtime, SandboxRequest};
use sandnet_runtime::config::Config;

mod common;
use common::{parse, parse_err};

#[test]
fn guest_spoofing_is_block_unless_allowed() {
    assert_eq!(
        Config::default().runtime.guest_spoofing,
        GuestSpoofing::Block
    );
    assert_eq!(Config::default().tap_policy(), TapPolicy::default());
    for (v, want) in [
        ("block", GuestSpoofing::Block),
        ("allow", GuestSpoofing::Allow),
    ] {
        let (c, w) = parse(&format!("[runtime]\nguest_spoofing = \"{v}\"\n")).unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.runtime.guest_spoofing, want);
        assert_eq!(c.tap_policy().spoofing, want);
    }
}

/// The example file (`etc/sandnet.toml`) sets the keys to their defaults.
#[test]
fn example_file_has_the_policy_keys() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../etc/sandnet.toml");
    let text = std::fs::read_to_string(path).expect("reading the example");
    for key in [
        "guest_spoofing = \"block\"",
        "rx_rate_limiter_max_rate = 0",
        "tx_rate_limiter_max_rate = 0",
    ] {
        assert!(text.contains(key), "example lacks {key:?}");
    }
}

#[test]
fn bad_guest_spoofing_names_the_key() {
    for bad in ["\"off\"", "\"Block\"", "\"\"", "false"] {
        let e = parse_err(&format!("[runtime]\nguest_spoofing = {bad}\n"));
        assert_eq!(e.key(), Some("runtime.guest_spoofing"), "{bad}: {e}");
        assert!(e.to_string().contains("runtime.guest_spoofing"), "{e}");
    }
    let e = parse_err("[runtime]\nguest_spoofing = \"off\"\n");
    assert!(e.to_string().contains("\"block\" or \"allow\""), "{e}");
}

#[test]
fn kata_rate_limits_are_read_not_ignored() {
    let (c, w) = parse(
        "[hypervisor.qemu]\nrx_rate_limiter_max_rate = 8000000\ntx_rate_limiter_max_rate = 4000000\n",
    )
    .unwrap();
    assert!(w.is_empty(), "no 'not used' warning any more: {w:?}");
    assert_eq!(c.qemu.rx_rate_limiter_max_rate, 8_000_000);
    assert_eq!(c.qemu.tx_rate_limiter_max_rate, 4_000_000);
    let p = c.tap_policy();
    // rx is into the guest (ingress), tx out of it (egress); bursts are 100 ms of the rate.
    assert_eq!(p.bandwidth.ingress, RateLimit::new(8_000_000, None));
    assert_eq!(p.bandwidth.ingress.unwrap().burst_bytes, 100_000);
    assert_eq!(p.bandwidth.egress, RateLimit::new(4_000_000, None));
    assert_eq!(p.spoofing, GuestSpoofing::Block);
}

#[test]
fn kata_rate_zero_is_no_limit() {
    let (c, w) =
        parse("[hypervisor.qemu]\nrx_rate_limiter_max_rate = 0\ntx_rate_limiter_max_rate = 0\n")
            .unwrap();
    assert!(w.is_empty());
    assert!(c.tap_policy().bandwidth.is_unlimited());
}

#[test]
fn bad_kata_rates_name_the_key() {
    for (k, v) in [
        ("rx_rate_limiter_max_rate", "-1"),
        ("tx_rate_limiter_max_rate", "\"8M\""),
        ("rx_rate_limiter_max_rate", "1.5"),
    ] {
        let e = parse_err(&format!("[hypervisor.qemu]\n{k} = {v}\n"));
        assert_eq!(
            e.key(),
            Some(format!("hypervisor.qemu.{k}").as_str()),
            "{e}"
        );
    }
}

/// A request's choices over the configuration's, through the spec its supervisor runs (an
/// existing namespace: `/proc/self/ns/net` is this process's, allowed explicitly; no CNI
/// runs and nothing starts).
fn policy_of(config: Config, f: impl FnOnce(&mut SandboxRequest)) -> TapPolicy {
    let dir = std::env::temp_dir().join(format!("sandnet-config-policy-{}", std::process::id()));
    let rt = Runtime::new(&dir, "/bin/false", vec![]);
    let mut req = SandboxRequest::new(config);
    req.netns = PodNetns::Existing("/proc/self/ns/net".into());
    req.allow_host_netns = true;
    f(&mut req);
    rt.spec(&req).expect("spec").tap_policy
}

#[test]
fn request_overrides_the_configuration() {
    let (c, _) = parse(
        "[runtime]\nguest_spoofing = \"allow\"\n[hypervisor.qemu]\nrx_rate_limiter_max_rate = 8000000\ntx_rate_limiter_max_rate = 4000000\n",
    )
    .unwrap();
    assert_eq!(policy_of(c.clone(), |_| {}), c.tap_policy());
    let p = policy_of(c.clone(), |r| r.guest_spoofing = Some(GuestSpoofing::Block));
    assert_eq!(p.spoofing, GuestSpoofing::Block);
    // Only the direction given replaces the configuration's; containerd's 2^32-1 bit burst
    // is clamped to 100 ms of the rate.
    let p = policy_of(c.clone(), |r| {
        r.bandwidth = Some("egressRate=2M,egressBurst=4294967295".parse().unwrap())
    });
    assert_eq!(p.bandwidth.ingress, RateLimit::new(8_000_000, None));
    let e = p.bandwidth.egress.unwrap();
    assert_eq!((e.rate_bps, e.burst_bytes), (2_000_000, 25_000));
    let p = policy_of(Config::default(), |r| {
        r.bandwidth = Some(BandwidthEntry {
            ingress_rate: 1_000_000,
            ingress_burst: 800,
            ..Default::default()
        })
    });
    assert_eq!(p.bandwidth.ingress.unwrap().burst_bytes, 16 * 1024);
    assert_eq!(p.bandwidth.egress, None);
    assert_eq!(p.spoofing, GuestSpoofing::Block);
}

/// With sandnet running CNI, a request's bandwidth goes to the chain when a plugin declares
/// the capability (with a burst for every rate, as the reference plugin wants), and to the
/// tap otherwise: never both.
#[test]
fn cni_bandwidth_goes_to_a_capable_chain_or_to_the_tap() {
    let dir =
        std::env::temp_dir().join(format!("sandnet-config-policy-cni-{}", std::process::id()));
    let (with, without) = (dir.join("with"), dir.join("without"));
    for (d, bw) in [(&with, true), (&without, false)] {
        std::fs::create_dir_all(d).unwrap();
        let mut plugins = vec![serde_json::json!({"type": "bridge", "bridge": "cni0",
            "ipam": {"type": "host-local", "subnet": "10.99.0.0/24"}})];
        if bw {
            plugins.push(
                serde_json::json!({"type": "bandwidth", "capabilities": {"bandwidth": true}}),
            );
        }
        let list = serde_json::json!({"cniVersion": "1.0.0", "name": "n", "plugins": plugins});
        std::fs::write(d.join("10-n.conflist"), list.to_string()).unwrap();
    }
    let (cfg, _) = parse("[hypervisor.qemu]\nrx_rate_limiter_max_rate = 9000000\n").unwrap();
    let rt = Runtime::new(dir.join("state"), "/bin/false", vec![]);
    let spec = |conf_dir: &std::path::Path| {
        let mut req = SandboxRequest::new(cfg.clone());
        req.cni.conf_dir = Some(conf_dir.to_path_buf());
        req.bandwidth = Some("ingressRate=8M,egressRate=4M".parse().unwrap());
        rt.spec(&req).expect("spec")
    };
    let s = spec(&with);
    let args = &s.cni.as_ref().expect("CNI runs").capability_args;
    assert_eq!(
        args["bandwidth"],
        serde_json::json!({"ingressRate": 8_000_000, "ingressBurst": 800_000,
                           "egressRate": 4_000_000, "egressBurst": 400_000})
    );
    // The plugin shapes the request's limits; the configuration's stay on the tap.
    assert_eq!(s.tap_policy.bandwidth, cfg.tap_policy().bandwidth);
    let s = spec(&without);
    assert!(s.cni.as_ref().expect("CNI runs").capability_args.is_empty());
    assert_eq!(
        s.tap_policy.bandwidth.ingress,
        RateLimit::new(8_000_000, None)
    );
    assert_eq!(
        s.tap_policy.bandwidth.egress,
        RateLimit::new(4_000_000, None)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
