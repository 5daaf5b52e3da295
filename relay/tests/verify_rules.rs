//! One crafted bundle per verification rule: each test breaks exactly one rule of a valid
//! bundle and checks that the verifier names that rule.

#![allow(clippy::unwrap_used)]

use crate::support;

use relay::bundle::{Limits, Sequence, VerifyError};
use serde_json::json;
use support::{Entry, Fixture, assemble, verify_bytes, verify_with};

/// Asserts that `bytes` fails verification with the given variant.
macro_rules! rejects {
    ($bytes:expr, $pattern:pat) => {{
        let result = verify_bytes(&$bytes[..]);
        match result {
            Err($pattern) => {}
            other => panic!(
                "expected {}, got {:?}",
                stringify!($pattern),
                other.map(|v| v.manifest().sequence)
            ),
        }
    }};
}

#[test]
fn the_fixture_is_valid() {
    let v = verify_bytes(&Fixture::new().bundle()).unwrap();
    assert_eq!(v.manifest().sequence, Sequence(7));
    assert_eq!(v.manifest().files.len(), 3);
    assert_eq!(v.size(), Fixture::new().bundle().len() as u64);
}

#[test]
fn not_gzip() {
    rejects!(*b"PK\x03\x04 not a tarball", VerifyError::NotGzip);
    rejects!(Vec::<u8>::new(), VerifyError::NotGzip);
}

#[test]
fn non_canonical_gzip_header() {
    let mut bytes = Fixture::new().bundle();
    bytes[4] = 1; // mtime
    rejects!(bytes, VerifyError::NonCanonical(_));
}

#[test]
fn head_must_be_stored_blocks() {
    // The same head entries, deflated instead of stored: same content, other bytes.
    let f = Fixture::new();
    let entries = f.entries();
    let mut bytes = support::gzip(&support::raw_tar(&entries[..2]));
    bytes.extend(support::payload_member(&entries[2..], 6));
    rejects!(bytes, VerifyError::NonCanonical(_));
}

#[test]
fn head_holds_only_manifest_and_signature() {
    let f = Fixture::new();
    let entries = f.entries();
    let mut head = support::raw_tar(&entries[..2]);
    head.extend_from_slice(&[0; 512]);
    let mut bytes = support::stored_member(&head);
    bytes.extend(support::payload_member(&entries[2..], 6));
    rejects!(bytes, VerifyError::NonCanonical(_));
}

#[test]
fn payload_encoding_is_bound_by_the_manifest() {
    // Same files, same content, compressed at another level: every file digest matches,
    // but the payload member is not the one the origin signed.
    let f = Fixture::new();
    let entries = f.entries();
    let mut bytes = support::stored_member(&support::raw_tar(&entries[..2]));
    bytes.extend(support::payload_member(&entries[2..], 1));
    rejects!(bytes, VerifyError::PayloadMismatch { .. });
}

#[test]
fn truncated_at_several_offsets() {
    let bytes = Fixture::new().bundle();
    for cut in [
        5,
        10,
        11,
        40,
        bytes.len() / 2,
        bytes.len() - 9,
        bytes.len() - 1,
    ] {
        let result = verify_bytes(&bytes[..cut]);
        assert!(
            matches!(result, Err(VerifyError::Truncated)),
            "cut at {cut} of {}: {result:?}",
            bytes.len()
        );
    }
}

#[test]
fn trailing_data_after_gzip() {
    let mut bytes = Fixture::new().bundle();
    bytes.extend_from_slice(b"junk");
    rejects!(bytes, VerifyError::TrailingData);
}

#[test]
fn trailing_data_inside_tar() {
    let entries = Fixture::new().entries();
    let mut raw = support::raw_tar(&entries[2..]);
    raw.extend_from_slice(&[0; 1024]);
    raw.extend_from_slice(b"hidden payload after the end of the archive");
    raw.resize(raw.len().next_multiple_of(512), 0);
    rejects!(
        support::assemble_raw(&entries[..2], &raw),
        VerifyError::TrailingData
    );
}

#[test]
fn manifest_missing_or_not_first() {
    let f = Fixture::new();
    let mut entries = f.entries();
    entries.swap(0, 2);
    rejects!(assemble(&entries), VerifyError::ManifestNotFirst { .. });
    let entries = f.entries()[1..].to_vec();
    rejects!(assemble(&entries), VerifyError::ManifestNotFirst { .. });
    rejects!(assemble(&[]), VerifyError::ManifestNotFirst { .. });
}

#[test]
fn manifest_too_large() {
    let f = Fixture::new();
    let limits = Limits {
        max_manifest: 64,
        ..Limits::default()
    };
    let result = verify_with(&f.bundle(), &limits, None);
    assert!(
        matches!(result, Err(VerifyError::ManifestTooLarge { limit: 64, .. })),
        "{result:?}"
    );
}

#[test]
fn signature_missing() {
    let f = Fixture::new();
    let mut entries = f.entries();
    entries.remove(1);
    rejects!(assemble(&entries), VerifyError::SignatureMissing { .. });
    rejects!(
        assemble(&entries[..1]),
        VerifyError::SignatureMissing { .. }
    );
}

#[test]
fn signature_malformed() {
    let f = Fixture::new();
    for bad in [
        b"not json".to_vec(),
        br#"{"algorithm":"ed25519","key_id":"00"}"#.to_vec(),
        serde_json::to_vec(&json!({
            "algorithm": "ed25519",
            "key_id": f.key().key_id().to_string(),
            "signature": "AAAA",
        }))
        .unwrap(),
        serde_json::to_vec(&json!({
            "algorithm": "rsa",
            "key_id": f.key().key_id().to_string(),
            "signature": "AAAA",
        }))
        .unwrap(),
    ] {
        let mut entries = f.entries();
        entries[1].data = bad;
        rejects!(assemble(&entries), VerifyError::SignatureMalformed(_));
    }
}

#[test]
fn signature_by_untrusted_key() {
    let mut f = Fixture::new();
    f.key = [2; 32];
    let id = f.key().key_id().to_string();
    let f = f.set("key_id", json!(id));
    rejects!(f.bundle(), VerifyError::UntrustedKey { .. });
}

#[test]
fn valid_signature_over_other_bytes() {
    let f = Fixture::new();
    let mut entries = f.entries();
    let other = Fixture::new().set("sequence", json!(8)).manifest_bytes();
    entries[1].data = f.signature_for(&other);
    rejects!(assemble(&entries), VerifyError::BadSignature { .. });
}

/// The signature is checked before the manifest's JSON is parsed: a manifest that is not
/// JSON at all is refused for its signature when that is wrong, and only once the
/// signature holds is it refused as malformed.
#[test]
fn the_signature_is_checked_before_the_manifest_is_parsed() {
    let f = Fixture::new();
    let not_json = b"{ this is not json".to_vec();
    let mut entries = f.entries();
    entries[0].data = not_json.clone();
    // Signed over other bytes: a bad signature, not a parse error.
    rejects!(assemble(&entries), VerifyError::BadSignature { .. });
    // Signed by a key nobody trusts: untrusted, not a parse error.
    let mut stranger = Fixture::new();
    stranger.key = [2; 32];
    entries[1].data = stranger.signature_for(&not_json);
    rejects!(assemble(&entries), VerifyError::UntrustedKey { .. });
    // Signed over exactly these bytes by the trusted key: now it is parsed, and refused.
    entries[1].data = f.signature_for(&not_json);
    rejects!(assemble(&entries), VerifyError::ManifestMalformed(_));
}

#[test]
fn manifest_key_id_must_match_signature() {
    let other = support::other_key().key_id().to_string();
    let f = Fixture::new().set("key_id", json!(other));
    rejects!(f.bundle(), VerifyError::KeyIdMismatch { .. });
}

#[test]
fn file_hash_mismatch() {
    let f = Fixture::new();
    let mut entries = f.entries();
    let data = &mut entries[2].data;
    data[0] ^= 1; // same size, other bytes
    rejects!(assemble(&entries), VerifyError::DigestMismatch { .. });
}

#[test]
fn size_mismatch() {
    let f = Fixture::new();
    let mut entries = f.entries();
    entries[3].data.push(b'\n');
    rejects!(assemble(&entries), VerifyError::SizeMismatch { .. });
}

#[test]
fn entry_not_in_manifest() {
    let f = Fixture::new();
    let mut entries = f.entries();
    entries.push(Entry::file("feeds/ips/extra.txt", b"192.0.2.9\n"));
    rejects!(assemble(&entries), VerifyError::NotInManifest { .. });
}

#[test]
fn listed_file_missing() {
    let f = Fixture::new();
    let mut entries = f.entries();
    entries.pop();
    rejects!(assemble(&entries), VerifyError::MissingFile { .. });
}

#[test]
fn duplicate_entry() {
    let f = Fixture::new();
    let mut entries = f.entries();
    entries.push(entries[2].clone());
    rejects!(assemble(&entries), VerifyError::DuplicateEntry { .. });
    let mut entries = f.entries();
    entries.push(entries[0].clone());
    rejects!(assemble(&entries), VerifyError::DuplicateEntry { .. });
}

#[test]
fn absolute_path() {
    let f = Fixture::new();
    let mut entries = f.entries();
    entries.push(Entry::file("/etc/cron.d/evil", b"* * * * * root sh\n"));
    rejects!(
        assemble(&entries),
        VerifyError::UnsafePath {
            reason: "absolute path",
            ..
        }
    );
}

#[test]
fn dot_dot_path() {
    let f = Fixture::new();
    let mut entries = f.entries();
    entries.push(Entry::file("feeds/../../evil", b"x"));
    rejects!(assemble(&entries), VerifyError::UnsafePath { .. });
}

#[test]
fn unsafe_path_listed_in_manifest() {
    // Even a signed manifest cannot name a path outside the bundle.
    let mut f = Fixture::new();
    f.files[0].path = b"feeds/domains/../../x".to_vec();
    let files = f.describe_files();
    let f = f.set("files", files);
    rejects!(f.bundle(), VerifyError::UnsafePath { .. });
}

/// A listed path whose entry has another type.
fn with_entry_type(kind: tar::EntryType, link: Option<&[u8]>) -> Vec<u8> {
    let f = Fixture::new();
    let mut entries = f.entries();
    entries[2].kind = kind;
    entries[2].link = link.map(<[u8]>::to_vec);
    entries[2].header_size = Some(0);
    entries[2].data.clear();
    assemble(&entries)
}

#[test]
fn symlink() {
    rejects!(
        with_entry_type(tar::EntryType::Symlink, Some(b"/etc/shadow")),
        VerifyError::ForbiddenEntryType {
            kind: "symbolic link",
            ..
        }
    );
}

#[test]
fn hardlink() {
    rejects!(
        with_entry_type(tar::EntryType::Link, Some(b"manifest.json")),
        VerifyError::ForbiddenEntryType {
            kind: "hard link",
            ..
        }
    );
}

#[test]
fn device_and_fifo() {
    rejects!(
        with_entry_type(tar::EntryType::Char, None),
        VerifyError::ForbiddenEntryType {
            kind: "character device",
            ..
        }
    );
    rejects!(
        with_entry_type(tar::EntryType::Block, None),
        VerifyError::ForbiddenEntryType {
            kind: "block device",
            ..
        }
    );
    rejects!(
        with_entry_type(tar::EntryType::Fifo, None),
        VerifyError::ForbiddenEntryType { kind: "fifo", .. }
    );
    rejects!(
        with_entry_type(tar::EntryType::Directory, None),
        VerifyError::ForbiddenEntryType {
            kind: "directory",
            ..
        }
    );
}

#[test]
fn too_many_entries() {
    let limits = Limits {
        max_entries: 4,
        ..Limits::default()
    };
    let result = verify_with(&Fixture::new().bundle(), &limits, None);
    assert!(
        matches!(result, Err(VerifyError::TooManyEntries { limit: 4 })),
        "{result:?}"
    );
    let limits = Limits {
        max_entries: 5,
        ..Limits::default()
    };
    verify_with(&Fixture::new().bundle(), &limits, None).unwrap();
}

#[test]
fn too_large() {
    let limits = Limits {
        max_uncompressed: 2048,
        ..Limits::default()
    };
    let result = verify_with(&Fixture::new().bundle(), &limits, None);
    assert!(
        matches!(result, Err(VerifyError::TooLarge { limit: 2048 })),
        "{result:?}"
    );
}

#[test]
fn gzip_bomb() {
    // A correctly signed and listed file of 32 MiB of zeros: it inflates about 1000:1.
    let mut f = Fixture::new();
    f.files
        .push(Entry::file("feeds/ips/zeros.txt", &vec![0u8; 32 << 20]));
    let files = f.describe_files();
    let bundle = f.set("files", files).bundle();
    let limits = Limits::default();
    let result = verify_with(&bundle, &limits, None);
    assert!(
        matches!(result, Err(VerifyError::CompressionRatio { limit: 200 })),
        "{result:?}"
    );
    // The same bundle passes when the ratio cap allows it: the cap is the only reason.
    let lax = Limits {
        max_ratio: 10_000,
        ..limits
    };
    verify_with(&bundle, &lax, None).unwrap();
}

#[test]
fn expired() {
    let f = Fixture::new()
        .set("created", json!("2025-01-01T00:00:00Z"))
        .set("expires", json!("2026-05-31T23:59:59Z"));
    rejects!(f.bundle(), VerifyError::Expired { .. });
}

#[test]
fn expiry_can_only_be_skipped_by_name() {
    let f = Fixture::new()
        .set("created", json!("2025-01-01T00:00:00Z"))
        .set("expires", json!("2026-05-31T23:59:59Z"));
    let v = relay::bundle::verify_with_sink(
        &f.bundle()[..],
        &support::trust(),
        &Limits::default(),
        support::now(),
        None,
        relay::bundle::ExpiryCheck::DangerouslySkip,
        &mut |_, _| Ok(()),
    );
    assert!(v.is_ok(), "{v:?}");
}

#[test]
fn sequence_not_newer_than_held() {
    let bundle = Fixture::new().bundle();
    for held in [7, 8] {
        let result = verify_with(&bundle, &Limits::default(), Some(Sequence(held)));
        assert!(
            matches!(result, Err(VerifyError::NotNewer { .. })),
            "{held}: {result:?}"
        );
    }
    verify_with(&bundle, &Limits::default(), Some(Sequence(6))).unwrap();
}

#[test]
fn unknown_format() {
    rejects!(
        Fixture::new().set("format", json!(2)).bundle(),
        VerifyError::UnknownFormat { format: 2 }
    );
}

#[test]
fn unknown_kind() {
    let mut f = Fixture::new();
    let mut files = f.describe_files();
    files[0]["kind"] = json!("yara");
    f = f.set("files", files);
    rejects!(f.bundle(), VerifyError::UnknownKind { .. });
}

#[test]
fn manifest_malformed() {
    let f = Fixture::new().set("surprise", json!(true));
    rejects!(f.bundle(), VerifyError::ManifestMalformed(_));
    let f = Fixture::new().set("expires", json!(support::CREATED));
    rejects!(f.bundle(), VerifyError::ManifestMalformed(_));
    let mut f = Fixture::new();
    let mut files = f.describe_files();
    files[0]["kind"] = json!("ips"); // feeds/domains/... declared as ips
    f = f.set("files", files);
    rejects!(f.bundle(), VerifyError::ManifestMalformed(_));
}

#[test]
fn corrupt_deflate_stream() {
    let mut bytes = Fixture::new().bundle();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    let result = verify_bytes(&bytes);
    assert!(result.is_err(), "flipped byte verified");
}

#[test]
fn input_read_errors_are_reported_as_such() {
    struct Failing;
    impl std::io::Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "peer went away",
            ))
        }
    }
    let result = relay::bundle::verify(
        Failing,
        &support::trust(),
        &Limits::default(),
        support::now(),
        None,
    );
    assert!(matches!(result, Err(VerifyError::Read(_))), "{result:?}");
}
