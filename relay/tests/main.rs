//! The relay's integration tests, one binary (link time on two cores): each file of
//! this directory is a module, run by `cargo test -p relay --test integration`; one
//! module's tests by `cargo test -p relay --test integration MODULE::`.

#![allow(clippy::unwrap_used)]

mod support;

mod archives;
mod build_and_unpack;
mod cli;
mod import;
mod projects;
mod segments;
mod server_http;
mod server_lean;
mod server_process;
mod store;
mod sync;
mod sync_external;
mod verify_properties;
mod verify_rules;
