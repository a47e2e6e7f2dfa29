//! A plugin's stdout as `CniResult::parse` reads it, in every spec version. The first byte
//! picks the configuration's version (used when the result has none); whatever parses must
//! convert to every version and parse back with its addresses, routes and DNS intact.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sandnet_cni::{CniResult, SUPPORTED_VERSIONS};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, json)) = data.split_first() else {
        return;
    };
    let default_version = SUPPORTED_VERSIONS[pick as usize % SUPPORTED_VERSIONS.len()];
    let Ok(r) = CniResult::parse(json, default_version) else {
        return;
    };
    for v in SUPPORTED_VERSIONS {
        let Ok(value) = r.to_value(v) else {
            // Only a result without addresses cannot go down to 0.1.0/0.2.0.
            assert!(r.ips.is_empty(), "{v}: {r:?}");
            continue;
        };
        let bytes = serde_json::to_vec(&value).expect("a Value serializes");
        let again = CniResult::parse(&bytes, "")
            .unwrap_or_else(|e| panic!("{v}: own output does not parse: {e}\n{value}"));
        assert_eq!(again.cni_version, *v);
        assert_eq!(again.dns, r.dns, "{v}");
        if !v.starts_with("0.1") && !v.starts_with("0.2") {
            assert_eq!(again.ips, r.ips, "{v}");
            assert_eq!(again.routes, r.routes, "{v}");
        }
    }
});
