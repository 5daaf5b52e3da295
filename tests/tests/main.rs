//! The end-to-end tests, one binary (link time on two cores): each file of this directory
//! is a module, run by `cargo test -p end-to-end --test integration`; one module's tests
//! by `cargo test -p end-to-end --test integration MODULE::`.

#![allow(clippy::unwrap_used)]

mod agent_sync;
mod bundle_flow;
mod console;
mod deltas;
mod deploy;
mod key_rotation;
mod origin;
mod projects;
mod relay_large;
mod slow_readers;
