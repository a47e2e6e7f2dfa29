//! sandnet's runtime: configuration, the sandbox life cycle and its persisted state, and
//! the per-sandbox supervisor.

#![warn(missing_docs)]

pub mod config;
pub mod control;
pub mod image;
pub mod lifecycle;
pub mod sandbox;
