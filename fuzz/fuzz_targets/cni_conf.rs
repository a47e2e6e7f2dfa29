//! A network configuration file as the loader reads it: as a `*.conflist` and as a legacy
//! single-plugin `*.conf`. What loads must load again, unchanged, from the bytes the loader
//! keeps for the cache.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sandnet_cni::NetworkConfigList;

fn check(list: &NetworkConfigList) {
    assert!(!list.name.is_empty());
    assert!(!list.plugins.is_empty());
    let again = NetworkConfigList::from_bytes(&list.bytes)
        .unwrap_or_else(|e| panic!("kept bytes do not load: {e}"));
    assert_eq!(again.name, list.name);
    assert_eq!(again.cni_version, list.cni_version);
    assert_eq!(again.plugins, list.plugins);
}

fuzz_target!(|data: &[u8]| {
    if let Ok(list) = NetworkConfigList::from_bytes(data) {
        check(&list);
    }
    if let Ok(list) = NetworkConfigList::from_plugin_bytes(data) {
        check(&list);
    }
});
