//! Segmented payloads and their index (`relay/FORMAT.md`, "Segments and deltas"): a
//! bundle's index describes it exactly; a new bundle is built from the held one's
//! segments plus the fetched ones, byte for byte; and every way a fetched piece or an
//! index can be wrong is caught before anything is trusted.

#![allow(clippy::unwrap_used)]

use crate::support;

use std::io::{Cursor, Read, Write};
use std::path::Path;

use relay::bundle::index::{self, IndexError, RebuildError, SegmentIndex};
use relay::bundle::{self, BuildOptions, Sequence};
use relay::import::{self, ImportLimits, Input};

fn options(sequence: u64) -> BuildOptions {
    BuildOptions {
        sequence: Sequence(sequence),
        origin: "test-origin".into(),
        created: support::CREATED.parse().unwrap(),
        expires: support::EXPIRES.parse().unwrap(),
    }
}

fn build(dir: &Path, sequence: u64) -> (Vec<u8>, SegmentIndex) {
    let mut out = Vec::new();
    let (_, index) =
        bundle::build_indexed(dir, &support::origin_key(), &options(sequence), &mut out).unwrap();
    (out, index)
}

/// The real Go database of `date`, imported into a feeds directory.
fn go_feeds(date: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let zip = support::shared_data(&format!("osv/go/{date}/all.zip"));
    import::osv::import(
        &[Input::local(&zip)],
        dir.path(),
        "go",
        &ImportLimits::default(),
    )
    .unwrap();
    dir
}

/// Builds `new` from `held` as a client would, the missing ranges cut out of `new`'s own
/// bytes (what a server sends).
fn rebuild(
    new: &[u8],
    new_index: &SegmentIndex,
    held: &[u8],
    held_index: &SegmentIndex,
) -> Vec<u8> {
    let plan = index::plan(new_index, Some(held_index));
    let fetched: Vec<u8> = plan
        .fetch
        .iter()
        .flat_map(|&(a, b)| new[a as usize..b as usize].to_vec())
        .collect();
    let mut out = Vec::new();
    index::assemble(
        new_index,
        &plan,
        Some(&mut Cursor::new(held)),
        &mut Cursor::new(fetched),
        &mut out,
    )
    .unwrap();
    out
}

#[test]
fn a_bundle_and_its_index_agree_and_the_index_round_trips() {
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/feeds");
    let (bytes, idx) = build(&samples, 1);
    support::verify_bytes(&bytes).unwrap();
    idx.check_against(&mut Cursor::new(&bytes)).unwrap();
    assert_eq!(idx.bundle_size(), bytes.len() as u64);
    assert_eq!(SegmentIndex::decode(&idx.encode()).unwrap(), idx);
    // The same inputs give the same bytes and the same index.
    let (again, idx_again) = build(&samples, 1);
    assert_eq!(again, bytes);
    assert_eq!(idx_again, idx);
}

#[test]
fn a_day_of_real_go_changes_is_built_from_the_held_bundle_and_a_few_segments() {
    let (old, old_idx) = build(go_feeds("2026-08-18").path(), 1);
    let (new, new_idx) = build(go_feeds("2026-08-21").path(), 2);
    let plan = index::plan(&new_idx, Some(&old_idx));
    eprintln!(
        "{} segments; {} of {} bytes to fetch ({:.1} %), {} ranges; index {} bytes",
        new_idx.segments.len(),
        plan.fetch_bytes,
        new.len(),
        100.0 * plan.fetch_bytes as f64 / new.len() as f64,
        plan.fetch.len(),
        new_idx.encode().len()
    );
    // One record added and nine changed, of 4,291: most segments are held already.
    assert!(plan.reused_bytes > 4 * plan.fetch_bytes, "{plan:?}");
    assert_eq!(rebuild(&new, &new_idx, &old, &old_idx), new);
    support::verify_bytes(&new).unwrap();
}

#[test]
fn a_flipped_byte_a_short_range_or_another_bundles_segment_is_caught() {
    let (old, old_idx) = build(go_feeds("2026-08-18").path(), 1);
    let (new, new_idx) = build(go_feeds("2026-08-21").path(), 2);
    let plan = index::plan(&new_idx, Some(&old_idx));
    let fetched: Vec<u8> = plan
        .fetch
        .iter()
        .flat_map(|&(a, b)| new[a as usize..b as usize].to_vec())
        .collect();
    let assemble = |fetched: Vec<u8>, held: &[u8]| {
        index::assemble(
            &new_idx,
            &plan,
            Some(&mut Cursor::new(held)),
            &mut Cursor::new(fetched),
            &mut Vec::new(),
        )
    };
    // A flipped byte in what the server sent.
    let mut flipped = fetched.clone();
    flipped[fetched.len() / 2] ^= 0x40;
    assert!(
        matches!(
            assemble(flipped, &old),
            Err(RebuildError::BadSegment {
                origin: "fetched",
                ..
            })
        ),
        "a flipped byte"
    );
    // A range cut short.
    let short = fetched[..fetched.len() - 100].to_vec();
    assert!(matches!(
        assemble(short, &old),
        Err(RebuildError::Missing { .. })
    ));
    // The held file is not the bundle its index describes (another bundle's bytes where
    // the held segments should be).
    let (other, _) = build(go_feeds("2026-07-23").path(), 1);
    assert!(matches!(
        assemble(fetched.clone(), &other),
        Err(RebuildError::BadSegment { origin: "held", .. })
    ));
    // Which a client finds before offering any held segment: the index does not match.
    assert!(matches!(
        old_idx.check_against(&mut Cursor::new(&other)),
        Err(IndexError::Mismatch(_))
    ));
    assert!(assemble(fetched, &old).is_ok());
}

#[test]
fn an_index_that_lies_or_is_cut_is_refused() {
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/feeds");
    let (bytes, idx) = build(&samples, 1);
    let encoded = idx.encode();
    // Cut anywhere: refused, never a panic.
    for cut in [0, 10, 16, 50, encoded.len() / 2, encoded.len() - 1] {
        assert!(
            SegmentIndex::decode(&encoded[..cut]).is_err(),
            "cut at {cut}"
        );
    }
    assert!(matches!(
        SegmentIndex::decode(b"not an index at all, but long enough to read a magic"),
        Err(IndexError::Magic)
    ));
    // Sizes that lie: a segment longer than it is, out of range, or a count past the cap.
    let mut lying = idx.clone();
    lying.segments[0].size += 1;
    let err = lying.check_against(&mut Cursor::new(&bytes)).unwrap_err();
    assert!(matches!(err, IndexError::Mismatch(_)), "{err}");
    let mut huge = idx.clone();
    huge.segments[0].size = u32::MAX;
    assert!(matches!(
        SegmentIndex::decode(&huge.encode()),
        Err(IndexError::Invalid(_))
    ));
    let mut count = encoded.clone();
    let at = 16 + 32 + 4 + idx.head.len();
    count[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(SegmentIndex::decode(&count).is_err());
    // Trailing bytes.
    let mut long = encoded;
    long.push(0);
    assert!(matches!(
        SegmentIndex::decode(&long),
        Err(IndexError::Invalid(_))
    ));
}

#[test]
fn an_index_is_derived_from_the_bundle_alone_and_only_from_this_builders_bundles() {
    let (bytes, idx) = build(go_feeds("2026-08-21").path(), 1);
    let derived = index::derive(&mut Cursor::new(&bytes)).unwrap();
    assert_eq!(derived.as_ref(), Some(&idx));
    // A bundle whose payload was compressed otherwise (one ordinary deflate stream, as
    // before segments) verifies, but has no segments to offer.
    let plain = support::Fixture::new().bundle();
    support::verify_bytes(&plain).unwrap();
    assert_eq!(index::derive(&mut Cursor::new(&plain)).unwrap(), None);
    // Garbage is no bundle.
    assert_eq!(
        index::derive(&mut Cursor::new(b"no gzip here".to_vec())).unwrap(),
        None
    );
}

/// The receiving side of a central relay's push by segments: a package builds the new
/// bundle from the held one, with a delta for the changed segments (version 2) or with
/// them whole (version 1, what an older central sends); a flipped byte, a delta that
/// rebuilds a segment wrong, bytes after the last segment or a cut package are refused
/// (422), a package built on a bundle this relay does not hold asks for the whole file
/// (412), and none of them touches what is held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_package_builds_the_bundle_and_a_bad_one_changes_nothing() {
    use relay::bundle::{delta, package};
    use support::server::TestRelay;
    let (old, old_idx) = build(go_feeds("2026-08-18").path(), 1);
    let (new, new_idx) = build(go_feeds("2026-08-21").path(), 2);
    let relay = TestRelay::start().await;
    assert_eq!(relay.upload(old.clone()).await.status(), 201);
    let package = |base: &SegmentIndex, delta: Option<&[u8]>| {
        let mut out = Vec::new();
        package::write(base, &new_idx, &mut Cursor::new(&new), delta, &mut out).unwrap();
        out
    };
    let put = async |body: Vec<u8>| {
        let r = relay
            .client()
            .put(format!("{}/api/v1/feeds/bundle", relay.url))
            .basic_auth("uploader", Some("uploader-pw"))
            .header(reqwest::header::CONTENT_TYPE, package::CONTENT_TYPE)
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    let good = package(&old_idx, None);
    assert_eq!(&good[..16], package::MAGIC_V1);
    assert!(good.len() * 5 < new.len(), "{} bytes", good.len());
    let mut made = Vec::new();
    delta::make(
        &mut Cursor::new(&old),
        &old_idx,
        &mut Cursor::new(&new),
        &new_idx,
        &mut made,
    )
    .unwrap();
    let with_delta = package(&old_idx, Some(&made));
    assert_eq!(&with_delta[..16], package::MAGIC);
    assert!(
        with_delta.len() * 2 < good.len(),
        "with its delta {} bytes, the segments whole {}",
        with_delta.len(),
        good.len()
    );

    let mut flipped = good.clone();
    let last = flipped.len() - 20;
    flipped[last] ^= 1;
    let (status, body) = put(flipped).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("does not hash"), "{body}");

    // A delta that parses but inserts a wrong byte: the segment it rebuilds does not hash.
    let wrong_delta = {
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&made[..])
            .read_to_end(&mut raw)
            .unwrap();
        // A changed record's new date is inserted bytes: a digit of it, changed.
        let at = raw
            .windows(11)
            .position(|w| w == b"\"modified\":")
            .expect("an inserted date in the delta");
        raw[at + 13] ^= 1;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&raw).unwrap();
        gz.finish().unwrap()
    };
    let (status, body) = put(package(&old_idx, Some(&wrong_delta))).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("rebuilds 1 segment(s) wrong"), "{body}");

    let mut trailing = with_delta.clone();
    trailing.extend_from_slice(b"more");
    let (status, body) = put(trailing).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("after the last segment"), "{body}");

    let (status, body) = put(package(&new_idx, None)).await;
    assert_eq!(status, 412, "{body}");
    assert!(body.contains("not held here"), "{body}");

    let (status, body) = put(good[..good.len() / 2].to_vec()).await;
    assert_eq!(status, 422, "a cut package: {body}");
    assert_eq!(relay.current_bytes().await, old, "nothing changed");

    // Version 1 builds the same file (checked here; one of them can be uploaded).
    let held = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(held.path(), &old).unwrap();
    let mut input = Cursor::new(&good);
    let header = package::read_header(&mut input).unwrap();
    let mut built = Vec::new();
    package::build(
        &header,
        &old_idx,
        held.path(),
        &mut input,
        &mut tempfile::tempfile().unwrap(),
        &mut built,
    )
    .unwrap();
    assert_eq!(built, new);

    let (status, body) = put(with_delta).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(relay.current_bytes().await, new);
    relay.stop().await;
}

/// A sorted list of names with a little churn spread all over it: every segment changes a
/// little, so fetching the changed segments costs most of the file, and their edits a
/// few bytes each. The delta rebuilds every one of them, byte for byte.
#[test]
fn scattered_churn_costs_a_delta_of_its_own_size() {
    use relay::bundle::delta::{self, Delta};
    let names = |churned: bool| {
        let mut v: Vec<String> = (0..60_000u32)
            .map(|i| {
                let changed = churned && i % 170 == 3;
                format!(
                    "n{:08x}{}.example",
                    i.wrapping_mul(2_654_435_761),
                    if changed { "x" } else { "" }
                )
            })
            .collect();
        if churned {
            v.extend((0..60u32).map(|i| format!("added{i:04}.example")));
        }
        v.sort();
        v.join("\n") + "\n"
    };
    let feeds = |churned: bool| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("domains")).unwrap();
        std::fs::write(dir.path().join("domains/list.txt"), names(churned)).unwrap();
        dir
    };
    let (old, old_idx) = build(feeds(false).path(), 1);
    let (new, new_idx) = build(feeds(true).path(), 2);
    let plan = index::plan(&new_idx, Some(&old_idx));
    assert!(
        plan.fetch_bytes * 2 > new.len() as u64,
        "scattered churn touches most segments: {} of {}",
        plan.fetch_bytes,
        new.len()
    );
    let mut d = Vec::new();
    let covered = delta::make(
        &mut Cursor::new(&old),
        &old_idx,
        &mut Cursor::new(&new),
        &new_idx,
        &mut d,
    )
    .unwrap();
    eprintln!(
        "{} segments changed, {covered} in the delta of {} bytes; ranges would be {} of {} bytes",
        plan.sources.iter().filter(|s| s.is_none()).count(),
        d.len(),
        plan.fetch_bytes,
        new.len()
    );
    assert!(d.len() * 20 < new.len(), "{} bytes of delta", d.len());
    let delta = Delta::read(&d[..], &old_idx, &new_idx).unwrap();
    let mut rebuilt = std::collections::HashMap::new();
    let failed = delta
        .apply(
            || Ok(Cursor::new(&old)),
            &old_idx,
            &new_idx,
            |i, bytes| {
                rebuilt.insert(i, bytes.to_vec());
                Ok(())
            },
        )
        .unwrap();
    assert!(failed.is_empty(), "{failed:?}");
    for (at, s) in new_idx.placed() {
        let i = new_idx.segments.iter().position(|x| x == s).unwrap();
        if let Some(bytes) = rebuilt.get(&i) {
            assert_eq!(&new[at as usize..at as usize + s.size as usize], &bytes[..]);
        }
    }
    // A delta for another pair, or cut, or changed, is refused or rebuilds nothing wrong.
    assert!(matches!(
        Delta::read(&d[..], &new_idx, &old_idx),
        Err(delta::DeltaError::OtherBundles)
    ));
    assert!(Delta::read(&d[..d.len() / 2], &old_idx, &new_idx).is_err());
}
