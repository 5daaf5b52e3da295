//! What a client or a supervisor reads from anyone when a bundle comes by segments
//! (`relay/FORMAT.md`, "Segments and deltas"): a segment index, a segment package's
//! header, and a delta, read against a fixed pair of small bundles' indexes and applied to
//! the old one's file.
//!
//! Input: the first byte picks the reader. 0: `SegmentIndex::decode` (an index that reads
//! must encode to the same bytes, and plan against itself). 1: `package::read_header`, and
//! the delta a version 2 package carries read against the old index.
//! 2: `Delta::read` of the rest as a delta's entries (magic, bundle digests and gzip are
//! added here, so the fuzzer spends its time on the entries), then `apply`.
#![no_main]

use std::io::{Cursor, Write};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use relay::bundle::delta::{self, Delta};
use relay::bundle::index::{self, SegmentIndex};
use relay::bundle::package;
use relay::bundle::segments::{Segment, compress_segment};
use relay::bundle::{CANONICAL_GZIP_HEADER, Sha256};

/// A bundle file of segments made of these texts, and its index.
fn bundle(texts: &[&str], tag: u8) -> (Vec<u8>, SegmentIndex) {
    let head = vec![tag; 64];
    let mut file = head.clone();
    file.extend_from_slice(&CANONICAL_GZIP_HEADER);
    let mut segments = Vec::new();
    for t in texts {
        let bytes = compress_segment(t.as_bytes()).unwrap();
        segments.push(Segment {
            size: bytes.len() as u32,
            raw_size: t.len() as u32,
            sha256: Sha256::of(&bytes),
        });
        file.extend_from_slice(&bytes);
    }
    let tail = [3, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    file.extend_from_slice(&tail);
    let index = SegmentIndex {
        bundle_sha256: Sha256::of(&file),
        head,
        segments,
        tail,
    };
    (file, index)
}

struct Pair {
    old_file: Vec<u8>,
    old: SegmentIndex,
    new: SegmentIndex,
}

fn pair() -> &'static Pair {
    static PAIR: OnceLock<Pair> = OnceLock::new();
    PAIR.get_or_init(|| {
        let (old_file, old) = bundle(
            &[
                "alpha.example\nbeta.example\n",
                "gamma.example\ndelta.example\n",
                "x\n",
            ],
            1,
        );
        let (_, new) = bundle(
            &[
                "alpha.example\nbeta2.example\n",
                "gamma.example\ndelta.example\n",
                "y\nz\n",
            ],
            2,
        );
        Pair { old_file, old, new }
    })
}

fn seeds() -> Vec<fuzz::Seed> {
    let p = pair();
    let mut out = Vec::new();
    let mut index = vec![0u8];
    index.extend(p.old.encode());
    out.push(("index".to_owned(), index));
    let mut package = vec![1u8];
    package::write(
        &p.old,
        &p.new,
        &mut Cursor::new(vec![0u8; 4096]),
        None,
        &mut package,
    )
    .ok();
    out.push(("package".to_owned(), package));
    // Entry: new segment 0 from old segment 0 (one base): copy 14, insert "beta2.example\n".
    let mut entries = vec![2u8];
    entries.extend(1u32.to_le_bytes());
    entries.extend(0u32.to_le_bytes());
    entries.extend(0u32.to_le_bytes());
    entries.push(1);
    entries.extend(2u32.to_le_bytes());
    entries.push(0);
    entries.extend(0u32.to_le_bytes());
    entries.extend(14u32.to_le_bytes());
    entries.push(1);
    entries.extend(14u32.to_le_bytes());
    entries.extend(b"beta2.example\n");
    out.push(("delta".to_owned(), entries));
    out
}

fuzz_target!(init: fuzz::seeds(seeds), |data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    match pick % 3 {
        0 => {
            if let Ok(index) = SegmentIndex::decode(rest) {
                assert_eq!(index.encode(), rest, "an index that reads encodes to itself");
                let plan = index::plan(&index, Some(&index));
                assert_eq!(plan.fetch_bytes, 0);
            }
        }
        1 => {
            if let Ok(header) = package::read_header(&mut Cursor::new(rest))
                && let Some(bytes) = &header.delta
            {
                let _ = Delta::read(&bytes[..], &pair().old, &header.new);
            }
        }
        _ => {
            let p = pair();
            let mut gz = Vec::new();
            {
                let mut w = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::fast());
                w.write_all(delta::MAGIC).unwrap();
                w.write_all(&p.old.bundle_sha256.0).unwrap();
                w.write_all(&p.new.bundle_sha256.0).unwrap();
                w.write_all(rest).unwrap();
                w.finish().unwrap();
            }
            if let Ok(d) = Delta::read(&gz[..], &p.old, &p.new) {
                let _ = d.apply(|| Ok(Cursor::new(&p.old_file)), &p.old, &p.new, |i, bytes| {
                    assert_eq!(Sha256::of(bytes), p.new.segments[i].sha256);
                    Ok(())
                });
            }
        }
    }
});
