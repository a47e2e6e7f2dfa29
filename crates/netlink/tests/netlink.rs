//! The netlink crate against the real kernel, in namespaces of its own: a socket opened
//! inside a namespace scans and edits that namespace only; results checked with `ip -j`.

use sandnet_netlink::{open_route_socket, scan_detail, Netlink, NetlinkError};
use sandnet_testkit::PodPair;

/// A client whose socket was opened on a thread inside the pod namespace.
fn client_in(p: &PodPair) -> Netlink {
    let fd = p.pod.enter(open_route_socket).expect("open socket");
    Netlink::from_fd(fd).expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_opened_in_a_namespace_scans_that_namespace() {
    let p = PodPair::new("nlscan");
    let nl = client_in(&p);
    let s = scan_detail(&nl).await.unwrap();
    let names: Vec<_> = s.links.iter().map(|l| l.interface.name.as_str()).collect();
    assert_eq!(names, ["lo", "eth0"]);
    let eth0 = s.link_by_name("eth0").unwrap();
    assert_eq!(
        eth0.interface.mac.unwrap().to_string(),
        p.pod_mac("eth0"),
        "the MAC ip reports"
    );
    assert_eq!(
        eth0.interface.addresses,
        vec!["172.19.0.5/24".parse().unwrap()]
    );
    let r = &s.config.routes;
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0].gateway, Some("172.19.0.1".parse().unwrap()));
    assert_eq!(r[0].device, "eth0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_land_in_the_namespace_and_kernel_refusals_name_the_object() {
    let p = PodPair::new("nledit");
    let nl = client_in(&p);
    let idx = nl.link_by_name("eth0").await.unwrap().unwrap().header.index;
    nl.add_address(idx, "10.9.0.2/24".parse().unwrap(), false, "eth0")
        .await
        .unwrap();
    let addrs = p.pod.ip_json(&["-4", "addr", "show", "dev", "eth0"]);
    let shown: Vec<_> = addrs[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["local"].as_str().unwrap().to_string())
        .collect();
    assert!(shown.contains(&"10.9.0.2".to_string()), "{shown:?}");
    let e = nl
        .add_address(idx, "10.9.0.2/24".parse().unwrap(), false, "eth0")
        .await
        .unwrap_err();
    assert!(e.is_exists(), "{e}");
    assert!(matches!(e, NetlinkError::Kernel { .. }));
    assert!(
        e.to_string()
            .starts_with("add address 10.9.0.2/24 to eth0: "),
        "{e}"
    );
    nl.del_address(idx, "10.9.0.2/24".parse().unwrap(), "eth0")
        .await
        .unwrap();
    // Removing what is not there, and a link that does not exist, are not errors.
    nl.del_address(idx, "10.9.0.2/24".parse().unwrap(), "eth0")
        .await
        .unwrap();
    assert!(nl.link_by_name("nosuch0").await.unwrap().is_none());
}
