//! CNI executor.
