//! The CNI protocol side, one job per file: the environment ([`env`]), the configuration on
//! stdin ([`config`]), version negotiation ([`version`]) and what goes to stdout
//! ([`output`]).

pub mod config;
pub mod env;
pub mod output;
pub mod version;
