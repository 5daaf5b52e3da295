//! defender-lite's integration tests, one binary (link time on two cores): each file of
//! this directory is a module, run by `cargo test -p defender-lite --test integration`;
//! one module's tests by `cargo test -p defender-lite --test integration MODULE::`.

#![allow(clippy::unwrap_used)]

mod docker_engine;
mod image_fixtures;
mod monitor_support;

mod apps;
mod cli;
mod defense_events;
mod defense_host;
mod defense_webhook;
mod docker_block;
mod docker_network;
mod example_apache_takeover;
mod image_sources;
mod inventory_go;
mod inventory_images;
mod monitor_cli;
mod monitor_host;
mod osv_index;
mod osv_matching;
mod osv_samples;
mod scan;
mod sync_config;
mod version_dpkg;
mod version_vectors;
