//! sandnet's agent protocol: Kata Containers' agent API (ttrpc service
//! `grpc.AgentService` and `grpc.Health`, messages of packages `types` and `grpc` with
//! Kata's field numbers) plus sandnet's own `sandnet.Exec` and `sandnet.Stats` services; the mapping between
//! those messages and sandnet's network model ([`convert`]), which also decodes Kata's
//! `kata-network` JSON objects ([`kata_json`]); and a typed async client ([`AgentClient`]).
//!
//! The `.proto` files are in this crate's `protos/` directory; the Rust code is generated
//! from them at build time (pure-Rust parser, no `protoc`).

#![warn(missing_docs)]

pub mod client;
pub mod convert;
pub mod kata_json;
pub mod requests;
pub mod stats;

pub use client::{
    AgentClient, ClientError, ExecOutput, DEFAULT_CALL_TIMEOUT, MAX_INTERFACES, MAX_MESSAGE,
    MAX_ROUTES,
};
pub use convert::ConvertError;
pub use kata_json::{KataError, KataInterface, KataIpAddress, KataRoute};
pub use stats::{interface_counters, GuestCounters};

/// Code generated from `protos/*.proto`: messages (`types`, `agent`, `health`, `sandnet`)
/// and async ttrpc clients, server traits and `create_*` registration helpers (`*_ttrpc`).
#[allow(missing_docs, clippy::all, clippy::pedantic, unused_qualifications)]
pub mod generated {
    include!(concat!(env!("OUT_DIR"), "/modules.rs"));
}

pub use generated::{agent, agent_ttrpc, health, health_ttrpc, oci, sandnet, sandnet_ttrpc, types};

/// Re-export of the protobuf crate the generated code is built against.
pub use protobuf;
/// Re-export of the ttrpc crate the generated code is built against.
pub use ttrpc;
