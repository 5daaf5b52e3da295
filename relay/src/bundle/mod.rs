//! The bundle: one `.tar.gz` that verifies itself (see `relay/FORMAT.md`).
//!
//! This module holds the vocabulary (digests, sequences, timestamps, the manifest);
//! `keys` loads and makes ed25519 keys, `feeds` validates feed files by kind, `build`
//! writes bundles, `verify` is the only way to obtain a [`VerifiedBundle`], and `unpack`
//! writes one into a directory atomically. Nothing here touches the network or sled.

mod apps;
mod build;
pub mod delta;
mod feeds;
mod framing;
pub mod index;
mod keys;
pub mod lines;
mod manifest;
pub mod package;
pub mod segments;
mod types;
mod unpack;
mod verify;

pub use apps::{AppSpec, ConfigSource, FlagSpec, IniPort, KeyPort, PortProtocol, XmlPort};
pub use build::{
    BuildError, BuildOptions, PROVENANCE_DIR, ProvenanceRecord, build, build_indexed,
    provenance_path,
};
pub use feeds::{
    FeedError, OsvProblem, OsvRecordKey, ValidatedFeed, check_osv_record, validate_feed,
};
pub use framing::CANONICAL_GZIP_HEADER;
pub use keys::{KeyError, PublicKey, SecretKey, TrustStore};
pub use manifest::{
    FORMAT_VERSION, FeedKind, FileEntry, ImportCounts, InputProvenance, Manifest, Payload,
    Signature,
};
// The importers and the origin (server-only) hash what they read and write.
#[cfg(feature = "server")]
pub(crate) use types::{HashingReader, HashingWriter};
pub use types::{HashingSink, KeyId, Sequence, Sha256, Timestamp};
pub use unpack::{UnpackError, unpack};
pub use verify::{
    EntrySink, ExpiryCheck, Limits, VerifiedBundle, VerifyError, inspect, verify, verify_with_sink,
};

/// Name of the first entry of every bundle.
pub const MANIFEST_PATH: &str = "manifest.json";
/// Name of the second entry of every bundle.
pub const SIGNATURE_PATH: &str = "manifest.sig";
/// Every feed file lives under this directory, in a subdirectory named after its kind.
pub const FEEDS_DIR: &str = "feeds";
