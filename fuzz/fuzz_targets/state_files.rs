//! sandnet's own state files, as read back after a crash or by another command:
//! `sandbox.json` (`SandboxState`), `spec.json` (`RunSpec`) and a namespace's attach state
//! (`AttachState`). Whatever loads must save and load again unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sandnet_host::interwork::AttachState;
use sandnet_runtime::spec::RunSpec;
use sandnet_runtime::sandbox::SandboxState;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;

fn round_trip<T: DeserializeOwned + Serialize + PartialEq + Debug>(data: &[u8]) {
    let Ok(v) = serde_json::from_slice::<T>(data) else {
        return;
    };
    let bytes = serde_json::to_vec_pretty(&v).expect("state serializes");
    let again: T =
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("saved state does not load: {e}"));
    assert_eq!(again, v);
}

fuzz_target!(|data: &[u8]| {
    round_trip::<SandboxState>(data);
    round_trip::<RunSpec>(data);
    round_trip::<AttachState>(data);
});
