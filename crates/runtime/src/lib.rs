//! sandnet's runtime: configuration, the sandbox lifecycle and its persisted state.
