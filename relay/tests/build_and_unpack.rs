//! `bundle::build` and `bundle::unpack` on real directories: determinism, validation with
//! file:line, layout rules, and atomic unpacking.

#![allow(clippy::unwrap_used)]

use crate::support;

use std::fs;
use std::path::{Path, PathBuf};

use relay::bundle::{
    self, BuildError, BuildOptions, Limits, Sequence, Timestamp, UnpackError, VerifyError,
};

fn options(sequence: u64) -> BuildOptions {
    BuildOptions {
        sequence: Sequence(sequence),
        origin: "test-origin".into(),
        created: support::CREATED.parse().unwrap(),
        expires: support::EXPIRES.parse().unwrap(),
    }
}

/// The repository's sample feeds: the relay's built-in sample bundle.
fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/feeds")
}

fn build_dir(dir: &Path, sequence: u64) -> Result<Vec<u8>, BuildError> {
    let mut out = Vec::new();
    bundle::build(dir, &support::origin_key(), &options(sequence), &mut out)?;
    Ok(out)
}

/// A feeds directory with one file of `kind` holding `content`.
fn one_feed(kind: &str, name: &str, content: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join(kind)).unwrap();
    fs::write(dir.path().join(kind).join(name), content).unwrap();
    dir
}

fn build_error(kind: &str, name: &str, content: &str) -> String {
    let dir = one_feed(kind, name, content);
    build_dir(dir.path(), 1).unwrap_err().to_string()
}

#[test]
fn the_sample_feeds_build_and_verify() {
    let bytes = build_dir(&samples(), 1).unwrap();
    let v = support::verify_bytes(&bytes).unwrap();
    let m = v.manifest();
    for kind in support::kinds() {
        assert!(
            m.files.iter().any(|f| f.kind == kind),
            "no {kind} feed in the samples"
        );
    }
    let apps = m
        .files
        .iter()
        .filter(|f| f.kind == bundle::FeedKind::Apps)
        .count();
    assert_eq!(apps, 14, "the 14 apps of day one");
    assert!(m.files.iter().all(|f| f.records > 0));
}

#[test]
fn builds_are_deterministic() {
    let a = build_dir(&samples(), 1).unwrap();
    let b = build_dir(&samples(), 1).unwrap();
    assert_eq!(a, b);
    let c = build_dir(&samples(), 2).unwrap();
    assert_ne!(a, c);
}

#[test]
fn entries_are_sorted_with_fixed_metadata() {
    let bytes = build_dir(&samples(), 1).unwrap();
    let mut inflated = Vec::new();
    use std::io::Read;
    flate2::read::MultiGzDecoder::new(&bytes[..])
        .read_to_end(&mut inflated)
        .unwrap();
    let mut archive = tar::Archive::new(&inflated[..]);
    let mut paths = Vec::new();
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let h = entry.header();
        assert_eq!(h.mode().unwrap(), 0o644);
        assert_eq!(h.uid().unwrap(), 0);
        assert_eq!(h.gid().unwrap(), 0);
        assert_eq!(h.mtime().unwrap(), 1_767_225_600); // --created
        paths.push(entry.path().unwrap().to_string_lossy().into_owned());
    }
    assert_eq!(paths[0], "manifest.json");
    assert_eq!(paths[1], "manifest.sig");
    let feeds = &paths[2..];
    let mut sorted = feeds.to_vec();
    sorted.sort();
    assert_eq!(feeds, sorted);
}

#[test]
fn a_bad_line_of_each_kind_is_named() {
    let osv_ok = r#"{"id":"X-1","modified":"2024-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"PyPI","name":"x"},"versions":["1.0"]}]}"#;
    let err = build_error("osv", "x.jsonl", &format!("{osv_ok}\n{{\"id\":\"X-2\"}}\n"));
    assert!(
        err.ends_with("x.jsonl:2: not an OSV record: missing field `modified` (column 12)"),
        "{err}"
    );
    // (`_` is allowed, as in `_dmarc`; `!` is not.)
    let err = build_error("domains", "d.txt", "evil.example\n\nbad!name.example\n");
    assert!(
        err.contains("d.txt:3: domain \"bad!name.example\""),
        "{err}"
    );
    let err = build_error("ips", "i.txt", "# c\n192.0.2.0/24\n10.0.0.1/8\n");
    assert!(
        err.contains("i.txt:3: \"10.0.0.1/8\" has host bits set"),
        "{err}"
    );
    let err = build_error(
        "apps",
        "redis.json",
        "{\n  \"id\": \"redis\",\n  \"nam\": \"x\"\n}",
    );
    assert!(err.contains("redis.json:3: unknown field `nam`"), "{err}");
}

#[test]
fn layout_rules() {
    let err = build_error("yara", "x.yar", "rule x {}");
    assert!(err.contains("unknown feed kind \"yara\""), "{err}");
    let err = build_error("ips", "bad name.txt", "192.0.2.1\n");
    assert!(err.contains("file name not allowed"), "{err}");

    let dir = one_feed("ips", "a.txt", "192.0.2.1\n");
    fs::create_dir(dir.path().join("ips/nested")).unwrap();
    let err = build_dir(dir.path(), 1).unwrap_err().to_string();
    assert!(err.contains("must be regular files"), "{err}");

    let dir = one_feed("ips", "a.txt", "192.0.2.1\n");
    std::os::unix::fs::symlink("/etc/hostname", dir.path().join("ips/link.txt")).unwrap();
    let err = build_dir(dir.path(), 1).unwrap_err().to_string();
    assert!(err.contains("must be regular files"), "{err}");

    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        build_dir(empty.path(), 1),
        Err(BuildError::Empty { .. })
    ));

    // Documentation beside the feeds is skipped, not validated.
    let dir = one_feed("ips", "a.txt", "192.0.2.1\n");
    fs::write(dir.path().join("README.md"), "# feeds").unwrap();
    fs::write(dir.path().join("ips/README.md"), "not an address").unwrap();
    build_dir(dir.path(), 1).unwrap();
}

#[test]
fn expires_must_follow_created() {
    let dir = one_feed("ips", "a.txt", "192.0.2.1\n");
    let mut opts = options(1);
    opts.expires = opts.created;
    let err = bundle::build(dir.path(), &support::origin_key(), &opts, Vec::new()).unwrap_err();
    assert!(
        matches!(err, BuildError::ExpiresBeforeCreated { .. }),
        "{err}"
    );
}

#[test]
fn unpack_writes_the_verified_files() {
    let bytes = build_dir(&samples(), 3).unwrap();
    let parent = tempfile::tempdir().unwrap();
    let dest = parent.path().join("bundle-3");
    let v = bundle::unpack(
        &bytes[..],
        &dest,
        &support::trust(),
        &Limits::default(),
        support::now(),
        None,
    )
    .unwrap();
    for f in &v.manifest().files {
        let on_disk = fs::read(dest.join(&f.path)).unwrap();
        assert_eq!(relay::bundle::Sha256::of(&on_disk), f.sha256, "{}", f.path);
    }
    assert_eq!(
        fs::read(dest.join("manifest.json")).unwrap(),
        v.manifest_bytes()
    );
    assert!(dest.join("manifest.sig").is_file());
    // Nothing but the destination is left in the parent.
    assert_eq!(fs::read_dir(parent.path()).unwrap().count(), 1);
}

#[test]
fn a_failed_unpack_leaves_nothing() {
    let mut bytes = build_dir(&samples(), 3).unwrap();
    let last_byte = bytes.len() - 20;
    bytes[last_byte] ^= 0x55;
    let parent = tempfile::tempdir().unwrap();
    let dest = parent.path().join("bundle");
    let err = bundle::unpack(
        &bytes[..],
        &dest,
        &support::trust(),
        &Limits::default(),
        support::now(),
        None,
    )
    .unwrap_err();
    assert!(matches!(err, UnpackError::Verify(_)), "{err}");
    assert_eq!(
        fs::read_dir(parent.path()).unwrap().count(),
        0,
        "temp files left behind"
    );
}

#[test]
fn unpack_refuses_an_existing_destination() {
    let bytes = build_dir(&samples(), 3).unwrap();
    let parent = tempfile::tempdir().unwrap();
    fs::create_dir(parent.path().join("bundle")).unwrap();
    fs::write(parent.path().join("bundle/keep"), "old").unwrap();
    let err = bundle::unpack(
        &bytes[..],
        &parent.path().join("bundle"),
        &support::trust(),
        &Limits::default(),
        support::now(),
        None,
    )
    .unwrap_err();
    assert!(matches!(err, UnpackError::Exists { .. }), "{err}");
    assert_eq!(
        fs::read_to_string(parent.path().join("bundle/keep")).unwrap(),
        "old"
    );
}

#[test]
fn unpack_checks_the_held_sequence() {
    let bytes = build_dir(&samples(), 3).unwrap();
    let parent = tempfile::tempdir().unwrap();
    let err = bundle::unpack(
        &bytes[..],
        &parent.path().join("b"),
        &support::trust(),
        &Limits::default(),
        support::now(),
        Some(Sequence(3)),
    )
    .unwrap_err();
    assert!(
        matches!(err, UnpackError::Verify(VerifyError::NotNewer { .. })),
        "{err}"
    );
}

#[test]
fn created_is_kept_to_the_second() {
    let t: Timestamp = "2026-01-01T00:00:00.999Z".parse().unwrap();
    assert_eq!(t.to_string(), "2026-01-01T00:00:00Z");
}
