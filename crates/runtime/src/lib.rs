//! sandnet's runtime: configuration, the sandbox life cycle and its persisted state, and
//! the per-sandbox supervisor.

pub mod api;
pub mod boot;
pub mod config;
pub mod control;
pub mod gc;
pub mod image;
pub mod lifecycle;
pub mod lock;
pub mod podnet;
pub mod sandbox;
pub mod teardown;
