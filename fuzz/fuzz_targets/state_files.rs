//! sandnet's own state files, as read back after a crash or by another command:
//! `sandbox.json` (`SandboxState`), `spec.json` (`RunSpec`) and a namespace's attach state
//! (`AttachState`), each through the loader that checks its format version first. Whatever
//! loads must save and load again unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sandnet_host::interwork::AttachState;
use sandnet_runtime::sandbox::{parse_state, SandboxState};
use sandnet_runtime::spec::RunSpec;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;
use std::path::Path;

fn round_trip<T: DeserializeOwned + Serialize + PartialEq + Debug>(
    data: &[u8],
    load: fn(&[u8]) -> Option<T>,
) {
    let Some(v) = load(data) else {
        return;
    };
    let bytes = serde_json::to_vec_pretty(&v).expect("state serializes");
    let again: T = load(&bytes).expect("saved state loads");
    assert_eq!(again, v);
}

fuzz_target!(|data: &[u8]| {
    round_trip::<SandboxState>(data, |b| parse_state(Path::new("sandbox.json"), b).ok());
    round_trip::<RunSpec>(data, |b| parse_state(Path::new("spec.json"), b).ok());
    round_trip::<AttachState>(data, |b| sandnet_host::interwork::parse_state(b).ok());
});
