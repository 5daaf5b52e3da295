//! `manifest.json` and `manifest.sig`: what a bundle holds and who vouches for it.
//! Parsing here is strict (unknown fields are refused) and is only ever done on bytes
//! whose signature `verify` has already checked.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::{FEEDS_DIR, KeyId, Sequence, Sha256, Timestamp};

/// The only bundle format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// The signed description of a bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub sequence: Sequence,
    pub created: Timestamp,
    pub expires: Timestamp,
    pub origin: String,
    pub key_id: KeyId,
    pub files: Vec<FileEntry>,
    /// The exact bytes of the payload gzip member (feeds and end of archive), so that
    /// the signature covers every byte of the bundle file, not only its content.
    pub payload: Payload,
}

/// Size and digest of the payload gzip member, header and trailer included.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    pub sha256: Sha256,
    pub size: u64,
}

/// One feed file of a bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub path: String,
    pub sha256: Sha256,
    pub size: u64,
    pub kind: FeedKind,
    pub records: u64,
    /// Where the file's records came from, when an importer made it (`relay feeds
    /// import`, the origin service); absent for feed files written by hand.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<InputProvenance>,
}

/// One input of an imported feed file: what it was, where it came from, when, its
/// digest as read, and what the importer made of its records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputProvenance {
    /// The operator's name for the input (`go-vulndb`, `firehol-level1`).
    pub name: String,
    /// The URL it was fetched from, or the file it was read from.
    pub location: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    /// When it was fetched (or read).
    pub retrieved: Timestamp,
    /// SHA-256 of the input as read (a directory: of its sorted `path sha256` lines).
    pub sha256: Sha256,
    pub size: u64,
    pub counts: ImportCounts,
}

/// What an importer did with an input's records. Every record read is counted once: as
/// kept, merged, refused or withdrawn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportCounts {
    /// Records (entries, lines that hold one) read from the input.
    pub read: u64,
    /// Written to the feed file.
    pub kept: u64,
    /// Folded into another record: a duplicate, an older version of the same id, a name
    /// or range that another entry already covers.
    pub merged: u64,
    /// Set aside by a named rule (the importer's report lists them).
    pub refused: u64,
    /// OSV records withdrawn by their publisher (newest version): kept out of the feed.
    #[serde(default)]
    pub withdrawn: u64,
}

/// The feed kinds of format version 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeedKind {
    Osv,
    Domains,
    Ips,
    Apps,
}

impl FeedKind {
    pub const ALL: [FeedKind; 4] = [Self::Osv, Self::Domains, Self::Ips, Self::Apps];

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Osv => "osv",
            Self::Domains => "domains",
            Self::Ips => "ips",
            Self::Apps => "apps",
        }
    }
}

impl fmt::Display for FeedKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FeedKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown feed kind {s:?} (known: osv, domains, ips, apps)"))
    }
}

/// `manifest.sig`: the signing key's id and an ed25519 signature over the exact bytes of
/// `manifest.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    pub algorithm: String,
    pub key_id: KeyId,
    /// Standard base64 of the 64-byte signature.
    pub signature: String,
}

impl Signature {
    pub const ALGORITHM: &'static str = "ed25519";

    pub fn new(key_id: KeyId, sig: &ed25519_dalek::Signature) -> Self {
        Self {
            algorithm: Self::ALGORITHM.to_owned(),
            key_id,
            signature: base64::engine::general_purpose::STANDARD.encode(sig.to_bytes()),
        }
    }

    /// The raw signature, if well-formed.
    pub fn decode(&self) -> Result<ed25519_dalek::Signature, String> {
        if self.algorithm != Self::ALGORITHM {
            return Err(format!(
                "unsupported signature algorithm {:?}",
                self.algorithm
            ));
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&self.signature)
            .map_err(|e| format!("signature is not base64: {e}"))?;
        let raw: [u8; 64] = raw
            .try_into()
            .map_err(|v: Vec<u8>| format!("signature is {} bytes, expected 64", v.len()))?;
        Ok(ed25519_dalek::Signature::from_bytes(&raw))
    }
}

/// Checks an entry path against the format's rules: relative, `/`-separated, no empty,
/// `.` or `..` components, and only the characters `A-Z a-z 0-9 . _ -`. Returns the
/// reason when the path is not acceptable.
pub(crate) fn check_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("empty path");
    }
    if path.starts_with('/') {
        return Err("absolute path");
    }
    if path.len() > 255 {
        return Err("path longer than 255 bytes");
    }
    for component in path.split('/') {
        match component {
            "" => return Err("empty path component"),
            "." | ".." => return Err("path component `.` or `..`"),
            _ => {}
        }
        if !component
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err("character outside A-Z a-z 0-9 . _ -");
        }
    }
    Ok(())
}

/// The kind a feed path belongs to: `feeds/<kind>/<name>`, with exactly one name
/// component.
pub(crate) fn kind_of_path(path: &str) -> Option<FeedKind> {
    let mut parts = path.split('/');
    let (Some(dir), Some(kind), Some(_name), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    if dir != FEEDS_DIR {
        return None;
    }
    kind.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(check_path("feeds/osv/a.jsonl"), Ok(()));
        assert_eq!(check_path("/etc/passwd"), Err("absolute path"));
        assert_eq!(check_path("feeds/../x"), Err("path component `.` or `..`"));
        assert_eq!(check_path("feeds//x"), Err("empty path component"));
        assert!(check_path("feeds/osv/a b").is_err());
        assert!(check_path("feeds\\osv").is_err());
        assert_eq!(kind_of_path("feeds/ips/x.txt"), Some(FeedKind::Ips));
        assert_eq!(kind_of_path("feeds/nope/x.txt"), None);
        assert_eq!(kind_of_path("feeds/ips/sub/x.txt"), None);
        assert_eq!(kind_of_path("other/ips/x.txt"), None);
    }
}
