//! The bundle: one `.tar.gz` that verifies itself (see `relay/FORMAT.md`).
//!
//! This module holds the vocabulary (digests, sequences, timestamps, the manifest);
//! `keys` loads and makes ed25519 keys, `feeds` validates feed files by kind (with the line
//! grammars of `lines` and the OSV record of `osv`, which the agent reads too), `build`
//! writes bundles, `verify` is the only way to obtain a [`VerifiedBundle`], and `unpack`
//! writes one into a directory atomically. Nothing here touches the network or sled.

mod apps;
mod build;
pub mod delta;
pub mod durable;
mod feeds;
mod framing;
pub mod index;
mod keys;
pub mod lines;
mod manifest;
pub mod osv;
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
pub use feeds::{FeedError, ValidatedFeed, validate_feed};
pub use framing::CANONICAL_GZIP_HEADER;
pub use keys::{KeyError, PublicKey, SecretKey, TrustStore};
pub use manifest::{
    FORMAT_VERSION, FeedKind, FileEntry, ImportCounts, InputProvenance, Manifest, Payload,
    Signature,
};
pub use osv::{OsvProblem, OsvRecordKey, check_osv_record};
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

#[cfg(test)]
mod boundary {
    //! The format is the one part everything compiles (the agent, the fuzz targets, the
    //! importers): it may use the standard library, itself and the crate's non-optional
    //! dependencies, nothing of the server or the client.

    use std::collections::BTreeSet;
    use std::path::Path;

    /// The names code would use for the relay's optional dependencies (`tokio-rustls` is
    /// `tokio_rustls`), read from its Cargo.toml, and the other crates of the workspace.
    fn forbidden_roots() -> BTreeSet<String> {
        let manifest =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
                .unwrap();
        let manifest: toml::Table = toml::from_str(&manifest).unwrap();
        let deps = manifest["dependencies"].as_table().unwrap();
        let mut names: BTreeSet<String> = deps
            .iter()
            .filter(|(_, spec)| spec.get("optional").and_then(|o| o.as_bool()) == Some(true))
            .map(|(name, _)| name.replace('-', "_"))
            .collect();
        assert!(
            names.contains("tokio") && names.contains("sled"),
            "{names:?}"
        );
        names.insert("defender_lite".to_owned());
        names
    }

    /// Each path root in `line` (`x` of `x::y` where `x` does not follow another `::`).
    fn path_roots(line: &str) -> Vec<(&str, &str)> {
        let mut roots = Vec::new();
        let bytes = line.as_bytes();
        let mut i = 0;
        while let Some(at) = line[i..].find("::") {
            let end = i + at;
            let start = line[..end]
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(0, |p| p + 1);
            let follows_path = start >= 2 && &bytes[start - 2..start] == b"::";
            if start < end && !follows_path {
                roots.push((&line[start..end], &line[end + 2..]));
            }
            i = end + 2;
        }
        roots
    }

    fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|x| x == "rs") {
                out.push(path);
            }
        }
    }

    /// A line of the format's code, outside comments and test modules.
    struct CodeLine {
        file: std::path::PathBuf,
        number: usize,
        /// The line as written, and without its indentation.
        line: String,
        code: String,
    }

    impl std::fmt::Display for CodeLine {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{}:{}: {}", self.file.display(), self.number, self.line)
        }
    }

    /// Every code line of `src/bundle`. Test modules (at the end of a file) may use
    /// dev-dependencies and the clock: they are not what the agent compiles.
    fn format_code() -> Vec<CodeLine> {
        let mut files = Vec::new();
        rust_files(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bundle"),
            &mut files,
        );
        assert!(files.len() >= 10, "{files:?}");
        let mut lines = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            let code = text.split("\n#[cfg(test)]").next().unwrap_or_default();
            for (n, line) in code.lines().enumerate() {
                let trimmed = line.trim_start();
                if trimmed.starts_with("//") {
                    continue;
                }
                lines.push(CodeLine {
                    file: file.clone(),
                    number: n + 1,
                    line: line.to_owned(),
                    code: trimmed.to_owned(),
                });
            }
        }
        lines
    }

    fn report(found: Vec<CodeLine>) -> String {
        found
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_format_uses_no_crate_of_the_server_or_the_client() {
        let forbidden = forbidden_roots();
        let found: Vec<CodeLine> = format_code()
            .into_iter()
            .filter(|l| {
                path_roots(&l.code).into_iter().any(|(root, rest)| {
                    forbidden.contains(root) || (root == "crate" && !rest.starts_with("bundle"))
                })
            })
            .collect();
        assert!(
            found.is_empty(),
            "the format reaches outside itself:\n{}",
            report(found)
        );
    }

    /// No clock is read in the format's logic: `now` is an argument, and only the binaries
    /// call `Timestamp::now` (whose body is the one clock read here).
    #[test]
    fn the_format_reads_no_clock() {
        let clocks = [
            "::now(",
            "now_utc(",
            "now_local(",
            "SystemTime::",
            "Instant::",
        ];
        let found: Vec<CodeLine> = format_code()
            .into_iter()
            .filter(|l| {
                let the_definition = l.file.ends_with("types.rs")
                    && l.code
                        .starts_with("Self::from_unix(OffsetDateTime::now_utc()");
                clocks.iter().any(|c| l.code.contains(c)) && !the_definition
            })
            .collect();
        assert!(
            found.is_empty(),
            "the format reads the clock:\n{}",
            report(found)
        );
    }

    #[test]
    fn path_roots_are_the_first_segment_only() {
        assert_eq!(
            path_roots("use tokio::io::{self, AsyncRead}; let x = crate::server::y;"),
            vec![
                ("tokio", "io::{self, AsyncRead}; let x = crate::server::y;"),
                ("crate", "server::y;")
            ]
        );
        assert_eq!(path_roots("a: <T as std::io::Read>::read").len(), 1);
    }
}
