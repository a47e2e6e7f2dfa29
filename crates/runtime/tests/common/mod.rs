//! Helpers shared by the configuration tests: parsing a text as the file
//! `/etc/sandnet/sandnet.toml`, a scratch directory and the example file's path.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use sandnet_runtime::config::{Config, ConfigError, Warning};

/// Parses `text` as if it were `/etc/sandnet/sandnet.toml`.
pub fn parse(text: &str) -> Result<(Config, Vec<Warning>), ConfigError> {
    Config::from_toml_str(text, "/etc/sandnet/sandnet.toml")
}

/// The error `text` must give; panics when it parses.
pub fn parse_err(text: &str) -> ConfigError {
    match parse(text) {
        Ok(c) => panic!("expected an error for {text:?}, got {c:?}"),
        Err(e) => e,
    }
}

/// A fresh directory for one test, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// `<tmp>/sandnet-config-<test>-<pid>`, emptied first.
    pub fn new(test: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("sandnet-config-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating temp dir");
        TempDir(dir)
    }

    /// Writes `text` to the file `name` in the directory and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("writing test file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The example configuration file shipped in `etc/sandnet.toml`.
pub fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../etc/sandnet.toml")
}
