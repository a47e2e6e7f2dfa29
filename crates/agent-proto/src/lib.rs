//! Kata-compatible agent protocol.
