//! defender-lite: the agent that applies mirrored intelligence bundles.
//!
//! For now it verifies bundles with the same library the relay uses
//! (`relay::bundle`, built without the server); feed sync, scanning, app knowledge and
//! runtime defense follow.

pub mod cli;
pub mod config;
pub mod defense;
pub mod feeds;
pub mod osv;
pub mod scan;
pub mod sync;
pub mod version;

// Scanning: an image's filesystem, and the packages installed in it.
pub mod image;
pub mod inventory;

// App knowledge: the apps an image holds and the ports their configuration gives.
pub mod apps;

// Runtime defense: events from the host (processes, sockets, DNS, SYNs) and from other sensors.
pub mod monitor;
