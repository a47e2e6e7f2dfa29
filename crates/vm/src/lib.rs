//! Hypervisor side.
