//! Where an attach spends its time, phase by phase (wall clock), for `attach --json` and
//! the attach benchmark.

use serde::Serialize;
use std::time::{Duration, Instant};

/// The phases of [`super::attach_timed`], in microseconds, in the order they run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AttachTimings {
    /// Opening a netlink socket in the namespace (a thread enters it).
    pub netlink_us: u64,
    /// The scan: link, address, route and neighbour dumps.
    pub scan_us: u64,
    /// The state lock, the check for a previous plan and for sandnet's marks.
    pub checks_us: u64,
    /// Planning: what each endpoint gets, the model's look at the namespace (tcfilter: one
    /// qdisc dump).
    pub plan_us: u64,
    /// Writing the plan durably (file and directory synced) before the kernel is touched.
    pub plan_write_us: u64,
    /// Creating and connecting the taps (tcfilter: one trip into the namespace, one
    /// netlink batch).
    pub connect_us: u64,
    /// Collecting the endpoints and marking the plan complete (not synced).
    pub finish_us: u64,
}

/// Measures consecutive phases: each [`Lap::lap`] returns the time since the previous one.
pub(crate) struct Lap(Instant);

impl Lap {
    /// Starts measuring now.
    pub(crate) fn start() -> Lap {
        Lap(Instant::now())
    }

    /// Microseconds since the previous lap (or the start).
    pub(crate) fn lap(&mut self) -> u64 {
        let now = Instant::now();
        let d: Duration = now - self.0;
        self.0 = now;
        d.as_micros() as u64
    }
}
