//! sandnet's runtime: the sandbox life cycle behind one API ([`api`]), the per-sandbox
//! supervisor, teardown and gc, pod networking (netns, CNI, DNS), the configuration and
//! the persisted state.
#![warn(missing_docs)]

pub mod api;
pub mod boot;
pub mod client;
pub mod config;
pub mod control;
pub mod error;
pub mod factory;
pub mod gc;
pub mod guest;
pub mod image;
pub mod launch;
pub mod lock;
pub mod netapi;
pub mod pod;
pub mod podnet;
pub mod report;
pub mod rm;
pub mod sandbox;
pub mod shared;
pub mod spec;
pub mod stats;
pub mod supervisor;
pub mod teardown;
