//! sandnet's TOML configuration (Kata-style `configuration.toml`) as `Config::from_toml_str`
//! reads it. Errors must be one line, as the CLI prints them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sandnet_runtime::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_toml_str(text, "fuzz.toml") {
        Ok((_config, warnings)) => {
            for w in warnings {
                let _ = w.to_string();
            }
        }
        Err(e) => {
            let line = e.to_string();
            assert!(!line.contains('\n'), "error is not one line: {line:?}");
        }
    }
});
