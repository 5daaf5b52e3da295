//! Crafted bundles for the verifier's tests: a valid bundle made entry by entry, so each
//! test can break exactly one rule. Entries are written with raw tar headers because the
//! tar crate (rightly) refuses to write absolute or `..` paths.

#![allow(dead_code, clippy::unwrap_used)]

pub mod process;
pub mod server;

use std::io::Write;

use flate2::{Compression, GzBuilder};
use relay::bundle::{
    FeedKind, Limits, SecretKey, Sequence, Sha256, Signature, Timestamp, TrustStore,
    VerifiedBundle, VerifyError,
};
use serde_json::{Value, json};

/// The real advisory data the project keeps beside it (see `../shared/data/README.md`).
pub fn shared_data(rel: &str) -> std::path::PathBuf {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data")
        .join(rel);
    assert!(
        path.is_file(),
        "{} is missing: the real advisory data lives in shared/data beside the repository",
        path.display()
    );
    path
}

pub const CREATED: &str = "2026-01-01T00:00:00Z";
pub const EXPIRES: &str = "2027-01-01T00:00:00Z";

pub fn now() -> Timestamp {
    "2026-06-01T00:00:00Z".parse().unwrap()
}

pub fn origin_key() -> SecretKey {
    SecretKey::from_seed([1; 32])
}

pub fn other_key() -> SecretKey {
    SecretKey::from_seed([2; 32])
}

pub fn trust() -> TrustStore {
    TrustStore::new([origin_key().public()])
}

/// One tar entry, described freely.
#[derive(Clone, Debug)]
pub struct Entry {
    pub path: Vec<u8>,
    pub kind: tar::EntryType,
    pub data: Vec<u8>,
    pub link: Option<Vec<u8>>,
    /// Size written in the header when it must differ from `data.len()`.
    pub header_size: Option<u64>,
}

impl Entry {
    pub fn file(path: &str, data: &[u8]) -> Self {
        Self {
            path: path.as_bytes().to_vec(),
            kind: tar::EntryType::Regular,
            data: data.to_vec(),
            link: None,
            header_size: None,
        }
    }
}

/// Raw tar blocks of `entries`, without the end-of-archive marker.
pub fn raw_tar(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut header = tar::Header::new_ustar();
        let name = &mut header.as_old_mut().name;
        assert!(e.path.len() <= name.len(), "test path too long");
        name[..e.path.len()].copy_from_slice(&e.path);
        header.set_entry_type(e.kind);
        header.set_mode(0o644);
        header.set_size(e.header_size.unwrap_or(e.data.len() as u64));
        if let Some(link) = &e.link {
            let field = &mut header.as_old_mut().linkname;
            field[..link.len()].copy_from_slice(link);
        }
        header.set_cksum();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(&e.data);
        out.resize(out.len().next_multiple_of(512), 0);
    }
    out
}

/// The payload member: `entries`, the end-of-archive marker, deflated at `level`.
pub fn payload_member(entries: &[Entry], level: u32) -> Vec<u8> {
    let mut tar = raw_tar(entries);
    tar.extend_from_slice(&[0; 1024]);
    gzip_level(&tar, level)
}

/// The head member: `data` as canonical stored blocks (an independent implementation of
/// the layout in FORMAT.md).
pub fn stored_member(data: &[u8]) -> Vec<u8> {
    let mut out = relay::bundle::CANONICAL_GZIP_HEADER.to_vec();
    let chunks: Vec<&[u8]> = if data.is_empty() {
        vec![&[]]
    } else {
        data.chunks(65535).collect()
    };
    for (i, chunk) in chunks.iter().enumerate() {
        let len = chunk.len() as u16;
        out.push(u8::from(i + 1 == chunks.len()));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    let mut crc = flate2::Crc::new();
    crc.update(data);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// A bundle file of `entries`: the first two in the head member, the rest in the payload.
pub fn assemble(entries: &[Entry]) -> Vec<u8> {
    let split = entries.len().min(2);
    let mut out = stored_member(&raw_tar(&entries[..split]));
    out.extend(payload_member(&entries[split..], 6));
    out
}

/// A bundle file whose payload member inflates to `payload_tar` exactly.
pub fn assemble_raw(head: &[Entry], payload_tar: &[u8]) -> Vec<u8> {
    let mut out = stored_member(&raw_tar(head));
    out.extend(gzip_level(payload_tar, 6));
    out
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    gzip_level(data, 6)
}

pub fn gzip_level(data: &[u8], level: u32) -> Vec<u8> {
    let mut gz = GzBuilder::new().write(Vec::new(), Compression::new(level));
    gz.write_all(data).unwrap();
    let mut out = gz.finish().unwrap();
    // flate2 marks the fastest and best levels in the header's XFL byte; bundles always
    // carry the canonical header.
    out[8] = 0;
    out
}

/// A valid bundle, kept as parts so a test can change one.
#[derive(Clone)]
pub struct Fixture {
    pub manifest: Value,
    pub files: Vec<Entry>,
    pub key: [u8; 32],
}

impl Fixture {
    pub fn new() -> Self {
        let files = vec![
            Entry::file("feeds/domains/bad.txt", b"# test\nevil.example\nc2.test\n"),
            Entry::file("feeds/ips/bad.txt", b"192.0.2.1\n198.51.100.0/24\n"),
            Entry::file(
                "feeds/osv/npm.jsonl",
                br#"{"id":"GHSA-35jh-r3h4-6jhm","modified":"2024-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"npm","name":"lodash"},"ranges":[{"type":"SEMVER","events":[{"introduced":"0"},{"fixed":"4.17.21"}]}]}]}
"#,
            ),
        ];
        let mut fixture = Self {
            manifest: Value::Null,
            files,
            key: [1; 32],
        };
        fixture.manifest = json!({
            "format": 1,
            "sequence": 7,
            "created": CREATED,
            "expires": EXPIRES,
            "origin": "test-origin",
            "key_id": origin_key().key_id().to_string(),
            "files": fixture.describe_files(),
        });
        fixture
    }

    /// Manifest `files` entries matching `self.files`.
    pub fn describe_files(&self) -> Value {
        Value::Array(
            self.files
                .iter()
                .map(|f| {
                    let path = String::from_utf8(f.path.clone()).unwrap();
                    let kind = path.split('/').nth(1).unwrap().to_owned();
                    json!({
                        "path": path,
                        "sha256": Sha256::of(&f.data).to_string(),
                        "size": f.data.len(),
                        "kind": kind,
                        "records": 1,
                    })
                })
                .collect(),
        )
    }

    pub fn key(&self) -> SecretKey {
        SecretKey::from_seed(self.key)
    }

    /// The manifest with `payload` describing the payload member of `self.files`.
    pub fn manifest_bytes(&self) -> Vec<u8> {
        let mut manifest = self.manifest.clone();
        if manifest.get("payload").is_none() {
            let payload = payload_member(&self.files, 6);
            manifest["payload"] = json!({
                "sha256": Sha256::of(&payload).to_string(),
                "size": payload.len(),
            });
        }
        serde_json::to_vec_pretty(&manifest).unwrap()
    }

    pub fn signature_for(&self, bytes: &[u8]) -> Vec<u8> {
        let key = self.key();
        serde_json::to_vec(&Signature::new(key.key_id(), &key.sign(bytes))).unwrap()
    }

    /// The entries in bundle order: manifest, signature, files.
    pub fn entries(&self) -> Vec<Entry> {
        let manifest = self.manifest_bytes();
        let sig = self.signature_for(&manifest);
        let mut entries = vec![
            Entry::file("manifest.json", &manifest),
            Entry::file("manifest.sig", &sig),
        ];
        entries.extend(self.files.iter().cloned());
        entries
    }

    pub fn bundle(&self) -> Vec<u8> {
        assemble(&self.entries())
    }

    pub fn set(mut self, key: &str, value: Value) -> Self {
        self.manifest[key] = value;
        self
    }
}

pub fn verify_bytes(bytes: &[u8]) -> Result<VerifiedBundle, VerifyError> {
    verify_with(bytes, &Limits::default(), None)
}

pub fn verify_with(
    bytes: &[u8],
    limits: &Limits,
    held: Option<Sequence>,
) -> Result<VerifiedBundle, VerifyError> {
    relay::bundle::verify(bytes, &trust(), limits, now(), held)
}

pub fn kinds() -> [FeedKind; 4] {
    FeedKind::ALL
}

/// A loopback port free a moment ago, for a program that takes a fixed port (nginx, a proxy,
/// a relay's config). Another process may take it before it is used: callers that can,
/// bind port 0 instead.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}
