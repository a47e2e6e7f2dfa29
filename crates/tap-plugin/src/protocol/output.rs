//! What goes to stdout: a result (or nothing) on success, the CNI error object on failure,
//! and the exit status that goes with it.

use crate::error::PluginError;
use serde_json::Value;
use std::io::Write;

/// Writes a command's outcome to `out` and returns the exit status (0 or 1).
pub fn emit(
    out: &mut impl Write,
    cni_version: &str,
    r: &Result<Option<Value>, PluginError>,
) -> i32 {
    let (body, status) = match r {
        Ok(Some(v)) => (Some(v.clone()), 0),
        Ok(None) => (None, 0),
        Err(e) => (Some(e.to_json(cni_version)), 1),
    };
    if let Some(b) = body {
        // A closed stdout leaves the status to tell.
        let _ = writeln!(out, "{b}");
        let _ = out.flush();
    }
    status
}
