//! Alpine (apk-tools 3) versions: `digit{.digit}...{letter}{_suffix{number}}...{~hash}{-rN}`,
//! ordered as `apk version -t` orders them.
//!
//! A version is read as tokens, each allowed only after certain others: the initial
//! number, more `.`-numbers, one letter, `_suffix` words with an optional number
//! (`_alpha`, `_beta`, `_pre`, `_rc` sort before the release; `_cvs`, `_svn`, `_git`,
//! `_hg`, `_p` after it), a `~hash` and a `-rN` revision. Tokens compare pairwise while
//! both versions have the same kind; numbers numerically, except that a `.`-number
//! with a leading zero on either side compares as a string (Gentoo's rule). Where the
//! kinds differ, a pre-release suffix is older than anything, otherwise the version
//! that ends (or turns invalid) earlier in the grammar's order is the newer one:
//! `1.0_alpha < 1.0 < 1.0_p1`, `1.2.2 < 1.2.2-r1`.
//!
//! apk compares versions its grammar rejects (`1.0bc`) up to the first bad token; so do
//! we, and [`ApkVersion::is_valid`] tells whether apk would accept the version at all.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// An Alpine package version.
#[derive(Debug, Clone)]
pub struct ApkVersion {
    text: Box<str>,
}

impl ApkVersion {
    /// Whether apk-tools' grammar accepts the whole version.
    pub fn is_valid(&self) -> bool {
        let mut tokens = Tokens::new(self.text.as_bytes());
        loop {
            match tokens.state.kind {
                Kind::End => return true,
                Kind::Invalid => return false,
                _ => tokens.advance(),
            }
        }
    }
}

impl FromStr for ApkVersion {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("empty version".into());
        }
        Ok(ApkVersion { text: text.into() })
    }
}

impl fmt::Display for ApkVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Ord for ApkVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        compare(self.text.as_bytes(), other.text.as_bytes())
    }
}

equal_by_order!(ApkVersion);

/// Token kinds in the order the grammar allows them; the order is also the tie-break
/// when two versions part ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    InitialDigit,
    Digit,
    Letter,
    Suffix,
    SuffixNumber,
    CommitHash,
    RevisionNumber,
    End,
    Invalid,
}

/// Suffixes in their order; the release (no suffix) sits between `rc` and `cvs`.
const SUFFIXES: [&[u8]; 9] = [
    b"alpha", b"beta", b"pre", b"rc", b"cvs", b"svn", b"git", b"hg", b"p",
];
const PRE_RELEASE_SUFFIXES: usize = 4;

#[derive(Debug, Clone, Copy)]
struct State<'a> {
    kind: Kind,
    /// Index in [`SUFFIXES`] for a suffix token.
    suffix: usize,
    /// The token's text (digits, the letter, the suffix word, the hash).
    value: &'a [u8],
}

struct Tokens<'a> {
    rest: &'a [u8],
    state: State<'a>,
}

impl<'a> Tokens<'a> {
    fn new(text: &'a [u8]) -> Self {
        let mut tokens = Tokens {
            rest: text,
            state: State {
                kind: Kind::InitialDigit,
                suffix: 0,
                value: b"",
            },
        };
        tokens.digits();
        tokens
    }

    /// Takes the longest prefix of `rest` whose bytes satisfy `keep`.
    fn take(&mut self, keep: impl Fn(u8) -> bool) -> &'a [u8] {
        let n = self.rest.iter().take_while(|&&b| keep(b)).count();
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        taken
    }

    fn digits(&mut self) {
        self.state.value = self.take(|b| b.is_ascii_digit());
        if self.state.value.is_empty() {
            self.state.kind = Kind::Invalid;
        }
    }

    /// Reads the next token; the current kind decides which tokens may follow.
    fn advance(&mut self) {
        let Some(&first) = self.rest.first() else {
            self.state.kind = Kind::End;
            return;
        };
        let current = self.state.kind;
        let next = match first {
            b'a'..=b'z' if current <= Kind::Digit => {
                self.state.value = &self.rest[..1];
                self.rest = &self.rest[1..];
                Kind::Letter
            }
            b'.' | b'0'..=b'9' if first != b'.' || current <= Kind::Digit => {
                if first == b'.' {
                    self.rest = &self.rest[1..];
                }
                let kind = match current {
                    Kind::InitialDigit | Kind::Digit => Kind::Digit,
                    Kind::Suffix => Kind::SuffixNumber,
                    _ => Kind::Invalid,
                };
                if kind != Kind::Invalid {
                    self.state.kind = kind;
                    self.digits();
                    return;
                }
                kind
            }
            b'_' if current <= Kind::SuffixNumber => {
                self.rest = &self.rest[1..];
                let word = self.take(|b| b.is_ascii_lowercase());
                self.state.value = word;
                match SUFFIXES.iter().position(|s| *s == word) {
                    Some(i) => {
                        self.state.suffix = i;
                        Kind::Suffix
                    }
                    None => Kind::Invalid,
                }
            }
            b'~' if current < Kind::CommitHash => {
                self.rest = &self.rest[1..];
                self.state.value = self.take(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                if self.state.value.is_empty() {
                    Kind::Invalid
                } else {
                    Kind::CommitHash
                }
            }
            b'-' if current < Kind::RevisionNumber && self.rest.starts_with(b"-r") => {
                self.rest = &self.rest[2..];
                self.state.kind = Kind::RevisionNumber;
                self.digits();
                return;
            }
            _ => Kind::Invalid,
        };
        self.state.kind = next;
    }
}

fn compare(a: &[u8], b: &[u8]) -> Ordering {
    let mut ta = Tokens::new(a);
    let mut tb = Tokens::new(b);
    while ta.state.kind == tb.state.kind && ta.state.kind < Kind::End {
        let order = compare_tokens(&ta.state, &tb.state);
        if order != Ordering::Equal {
            return order;
        }
        ta.advance();
        tb.advance();
    }
    let (a, b) = (ta.state, tb.state);
    if a.kind == b.kind {
        return Ordering::Equal;
    }
    if a.kind == Kind::Suffix && a.suffix < PRE_RELEASE_SUFFIXES {
        return Ordering::Less;
    }
    if b.kind == Kind::Suffix && b.suffix < PRE_RELEASE_SUFFIXES {
        return Ordering::Greater;
    }
    // The version whose grammar goes on further is the greater: `b.kind.cmp(&a.kind)`.
    b.kind.cmp(&a.kind)
}

/// Compares two tokens of the same kind.
fn compare_tokens(a: &State<'_>, b: &State<'_>) -> Ordering {
    match a.kind {
        Kind::Digit if a.value.first() == Some(&b'0') || b.value.first() == Some(&b'0') => {
            a.value.cmp(b.value)
        }
        Kind::InitialDigit | Kind::Digit | Kind::SuffixNumber | Kind::RevisionNumber => {
            super::compare_digit_runs(a.value, b.value)
        }
        Kind::Letter => a.value.cmp(b.value),
        Kind::Suffix => a.suffix.cmp(&b.suffix),
        _ => a.value.cmp(b.value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(a: &str, b: &str, expected: Ordering) {
        let va: ApkVersion = a.parse().unwrap();
        let vb: ApkVersion = b.parse().unwrap();
        assert_eq!(va.cmp(&vb), expected, "{a} vs {b}");
        assert_eq!(vb.cmp(&va), expected.reverse(), "{b} vs {a}");
    }

    #[test]
    fn suffixes_around_the_release() {
        let ordered = [
            "1.0_alpha",
            "1.0_alpha2",
            "1.0_beta",
            "1.0_pre",
            "1.0_rc1",
            "1.0",
            "1.0-r1",
            "1.0_cvs",
            "1.0_svn",
            "1.0_git",
            "1.0_hg",
            "1.0_p1",
            "1.0_p2",
            "1.0a",
            "1.0.1",
        ];
        for (i, a) in ordered.iter().enumerate() {
            for (j, b) in ordered.iter().enumerate() {
                check(a, b, i.cmp(&j));
            }
        }
    }

    #[test]
    fn revisions_hashes_and_leading_zeros() {
        check("3.1.4-r0", "3.1.4-r10", Ordering::Less);
        check("8.4.0-r0", "8.4.0-r0", Ordering::Equal);
        check("1.0~abc-r0", "1.0-r0", Ordering::Greater);
        check("1.0_alpha~1234-r0", "1.0-r0", Ordering::Less);
        check("1.01", "1.001", Ordering::Greater);
        check("1.10", "1.9", Ordering::Greater);
        check("01", "1", Ordering::Equal);
    }

    #[test]
    fn validity_follows_the_grammar() {
        for ok in [
            "1",
            "1.2.3",
            "1.2a",
            "1.0_rc1_p2",
            "1.0~deadbeef-r3",
            "20240101-r0",
        ] {
            assert!(ok.parse::<ApkVersion>().unwrap().is_valid(), "{ok}");
        }
        for bad in [
            "a1", "1.0bc", "1.0_foo", "1.0-1", "1.0-r", "1..2", "1.0~", "1.0-r1a",
        ] {
            assert!(!bad.parse::<ApkVersion>().unwrap().is_valid(), "{bad}");
        }
    }
}
