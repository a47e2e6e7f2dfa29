//! The environment a supervisor is started with: how `run` hands over the sandbox's lock,
//! and the fault-injection knobs tests set. Kept here, below both `launch` (which sets
//! them) and the supervisor (which reads them), so neither imports the other's module.

/// Fault-injection knob for kill-point tests: the supervisor waits this many milliseconds
/// after recording each step of `run` (so a test can kill it while the record names the
/// step for certain). Unset in production.
pub const STEP_PAUSE_ENV: &str = "SANDNET_STEP_PAUSE_MS";
/// Fault-injection knob like [`STEP_PAUSE_ENV`]: a hot plug pauses this many milliseconds
/// once the host side is attached and before QEMU is asked for the device (the record
/// then says `plugging`), so a test can kill the supervisor there for certain.
pub const PLUG_PAUSE_ENV: &str = "SANDNET_PLUG_PAUSE_MS";

/// The environment variable through which `run` hands the sandbox's lock to its
/// supervisor (a descriptor number).
pub const LOCK_FD_ENV: &str = "SANDNET_LOCK_FD";
