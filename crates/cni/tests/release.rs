//! DEL when namespaces are gone, against Debian's real plugins (as root): DEL without a
//! container namespace although the cache entry names one, and the address release alone.
//! The plugins run in the test's own "host" netns.

mod common;

use common::Env;
use serde_json::json;

fn conflist(env: &Env, name: &str) -> String {
    let bridge = json!({"type":"bridge","bridge":"cni0","isGateway":true,
        "ipam":{"type":"host-local","subnet":"10.89.0.0/24","dataDir": env.ipam_dir()}});
    json!({"cniVersion":"1.0.0","name":name,"plugins":[bridge]}).to_string()
}

#[tokio::test]
async fn del_without_netns_ignores_the_cached_namespace() {
    let env = Env::new("delnons");
    let list = env.load("10-net.conflist", &conflist(&env, "nonet"));
    let rt = env.rt("nonsc0").with_arg("IgnoreUnknown", "1");
    let cni = env.cni();
    cni.add(&list, &rt).await.unwrap();
    assert_eq!(env.reservations("nonet").len(), 1);
    cni.del_without_netns(&list, &rt).await.unwrap();
    // bridge got no namespace: it released the address and left the pod alone.
    assert!(env.reservations("nonet").is_empty());
    assert!(env.cache_entries().is_empty());
    assert!(
        env.pod.has_link("eth0"),
        "bridge entered the cached namespace"
    );
}

#[tokio::test]
async fn release_addresses_runs_only_the_ipam_plugins() {
    let env = Env::new("relipam");
    let list = env.load("10-net.conflist", &conflist(&env, "relnet"));
    let rt = env.rt("relc0").with_arg("IgnoreUnknown", "1");
    let cni = env.cni();
    cni.add(&list, &rt).await.unwrap();
    assert_eq!(env.reservations("relnet").len(), 1);
    let ran = cni.release_addresses(&list, &rt).await.unwrap();
    assert_eq!(ran, vec!["host-local".to_string()]);
    assert!(env.reservations("relnet").is_empty());
    assert!(env.cache_entries().is_empty());
    // bridge itself did not run: its links are where ADD put them.
    assert!(env.pod.has_link("eth0"));
    assert!(env.host.has_link("cni0"));
}
