//! A CNI executor: runs CNI plugins the way libcni does (spec 1.1.0), so that real plugins
//! (Debian's `containernetworking-plugins`, or any other) work unchanged.
//!
//! - [`NetworkConfigList`] loads a network from a conf dir (`*.conflist`, legacy `*.conf` /
//!   `*.json`), selecting the highest supported version from `cniVersion`/`cniVersions`.
//! - [`CniConfig`] finds plugins in its bin dirs and runs ADD (in list order, chaining
//!   `prevResult`), DEL (in reverse order, with the cached result as `prevResult`), CHECK,
//!   STATUS, GC and VERSION, each plugin a child process with a timeout, optionally inside a
//!   given network namespace.
//! - [`CniResult`] holds a result of any spec version; conversion back to any version gives
//!   the `prevResult` a plugin expects.
//! - Results are cached in libcni's layout (`<cache>/results/<net>-<cid>-<ifname>`,
//!   `cniCacheV1`), so a DEL after a restart, or by another CNI tool, has its `prevResult`.
//!
//! **Every ADD must eventually be followed by a DEL**, also when the ADD fails: when a plugin
//! in the chain fails, [`CniConfig::add`] returns the error without undoing what the plugins
//! before it did; the caller then runs [`CniConfig::del`] (DEL is idempotent and works with or
//! without a cache entry). The cache entry is written *before* the first plugin runs, so an
//! ADD interrupted by a crash is still listed by [`CniConfig::cached_attachments`] and
//! cleaned up by [`CniConfig::gc`].
//!
//! The operations are `async` and need a Tokio runtime with the I/O and time drivers
//! (`#[tokio::main]` / `Runtime::new()` enable them); a [`CniConfig`] is cheap to clone and
//! may run operations for different attachments concurrently. The spec forbids concurrent
//! operations on the *same* attachment, and GC concurrently with ADD/DEL of its network:
//! that ordering is the caller's.
//!
//! To run the plugins in the network namespace the program was started in (where the
//! `bridge` plugin should put `cni0`) whatever thread calls, open it once at start-up:
//! `CniConfig::default().with_plugin_netns_path(Path::new("/proc/self/ns/net"))`.

#![warn(missing_docs)]

mod attachments;
mod bandwidth;
mod cache;
mod conf;
mod error;
mod exec;
mod executor;
mod ops;
mod plugin_version;
mod release;
mod request;
mod result;
mod runtime;
mod version;

pub use attachments::{CachedAttachment, GcAttachment};
pub use bandwidth::{quantity, BandwidthEntry, BandwidthParseError, BANDWIDTH_CAPABILITY};
pub use cache::{CacheEntry, CACHE_KIND};
pub use conf::{ConfFile, NetworkConfigList, PluginConf};
pub use error::CniError;
pub use executor::CniConfig;
pub use ops::CheckOutcome;
pub use plugin_version::PluginVersionInfo;
pub use result::{CniResult, ResultDns, ResultInterface, ResultIp, ResultRoute};
pub use runtime::Runtime;
pub use version::{SpecVersion, CURRENT_VERSION, SUPPORTED_VERSIONS};

use std::time::Duration;

/// Well-known CNI error codes (spec section 5).
pub mod error_code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid environment variables.
    pub const INVALID_ENVIRONMENT: u32 = 4;
    /// I/O failure.
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content.
    pub const DECODING_FAILURE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    /// Try again later.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// The plugin is not available.
    pub const PLUGIN_NOT_AVAILABLE: u32 = 50;
    /// The plugin is not available, existing containers may have limited connectivity.
    pub const LIMITED_CONNECTIVITY: u32 = 51;
}

/// The bin dirs searched by default: the upstream location, then Debian's.
pub const DEFAULT_BIN_DIRS: &[&str] = &["/opt/cni/bin", "/usr/lib/cni"];
/// libcni's default cache dir.
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/cni";
/// How long a plugin may run by default before it is killed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
