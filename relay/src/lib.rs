//! Intelligence relay: moves signed intelligence bundles into networks that cannot
//! reach the internet.
//!
//! Module map:
//!
//! - [`bundle`]: the bundle format: keys, manifest, feed validation, build, the streaming
//!   verifier and atomic unpacking. No network, no storage; `now` is always an argument.
//! - [`cli`] (feature `server`): the operator CLI, one file per subcommand.
//!
//! With `default-features = false` this crate is only the format (and later the sync
//! client), which is all `defender-lite` needs.

pub mod bundle;
#[cfg(feature = "server")]
pub mod cli;
