//! Intelligence relay: moves signed intelligence bundles into networks that cannot
//! reach the internet.
//!
//! Module map:
//!
//! - [`bundle`]: the bundle format: keys, manifest, feed validation, build, the streaming
//!   verifier and atomic unpacking. No network, no storage; `now` is always an argument.
//! - [`import`] (feature `server`): the origin's importers, public sources into feed files.
//! - [`archive`]: integrity checks of vendor archives (opaque, unsigned `.tar.gz`).
//! - [`client`] (feature `client`): the sync client: sources, resumable downloads.
//! - [`store`] (feature `server`): bundle files on disk, metadata in sled.
//! - [`server`]: the TLS mirror server; [`auth`] who may do what; [`config`] the TOML
//!   configuration; [`certs`] development certificates.
//! - [`cli`] (feature `server`): the operator CLI, one file per subcommand.
//!
//! With `default-features = false` this crate is only the format (and later the sync
//! client), which is all `defender-lite` needs.

pub mod archive;
#[cfg(feature = "server")]
pub mod auth;
pub mod bundle;
#[cfg(feature = "server")]
pub mod certs;
#[cfg(feature = "server")]
pub mod cli;
#[cfg(feature = "cli-docs")]
pub mod cli_docs;
#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod import;
#[cfg(feature = "logging")]
pub mod logging;
#[cfg(feature = "server")]
pub mod per_address;
#[cfg(feature = "server")]
pub mod server;
pub mod stdout;
#[cfg(feature = "server")]
pub mod store;
