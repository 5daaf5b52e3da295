//! Property tests: no corruption of a valid bundle verifies, and nothing panics.
//!
//! The signature binds every byte of the file (the head is byte-exact stored blocks with
//! a CRC, the payload member's digest is in the signed manifest), so "never verifies" is
//! meant literally: not even a flip that leaves the inflated content unchanged passes.

#![allow(clippy::unwrap_used)]

use crate::support;

use std::sync::LazyLock;

use proptest::prelude::*;
use support::{Fixture, verify_bytes};

static BUNDLE: LazyLock<Vec<u8>> = LazyLock::new(|| Fixture::new().bundle());

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn a_flipped_byte_never_verifies(index in any::<prop::sample::Index>(), mask in 1u8..=255) {
        let mut bytes = BUNDLE.clone();
        let i = index.index(bytes.len());
        bytes[i] ^= mask;
        prop_assert!(verify_bytes(&bytes).is_err(), "flip of byte {} by {:#04x} verified", i, mask);
    }

    #[test]
    fn several_flipped_bytes_never_verify(
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 2..8),
    ) {
        let mut bytes = BUNDLE.clone();
        for (index, mask) in &flips {
            let i = index.index(bytes.len());
            bytes[i] ^= mask;
        }
        // Two flips may cancel out; only a changed file must fail.
        prop_assume!(bytes != *BUNDLE);
        prop_assert!(verify_bytes(&bytes).is_err());
    }

    #[test]
    fn a_truncated_bundle_never_verifies(index in any::<prop::sample::Index>()) {
        let len = index.index(BUNDLE.len());
        prop_assert!(verify_bytes(&BUNDLE[..len]).is_err(), "truncation to {} verified", len);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let _ = verify_bytes(&bytes);
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_prefix_never_panic(
        cut in any::<prop::sample::Index>(),
        tail in prop::collection::vec(any::<u8>(), 0..2048),
    ) {
        let mut bytes = BUNDLE[..cut.index(BUNDLE.len())].to_vec();
        bytes.extend(tail);
        let _ = verify_bytes(&bytes);
    }
}

/// Every single byte position, flipped with every bit at once: deterministic coverage of
/// the whole file on top of the random masks above.
#[test]
fn every_byte_position_is_bound() {
    for i in 0..BUNDLE.len() {
        let mut bytes = BUNDLE.clone();
        bytes[i] ^= 0xff;
        assert!(verify_bytes(&bytes).is_err(), "flip of byte {i} verified");
        bytes[i] ^= 0xfe; // now differs by the lowest bit only
        assert!(
            verify_bytes(&bytes).is_err(),
            "bit flip in byte {i} verified"
        );
    }
}
