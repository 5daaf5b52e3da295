//! RPM versions, `[epoch:]version[-release]`, ordered by rpm's `rpmvercmp`.
//!
//! Parsing is rpm's `parseEVR`: the epoch is the leading number before a `:` (absent:
//! 0), the release what follows the last `-`. Epochs compare as numbers, then version
//! and release with
//! `rpmvercmp`: runs of digits and runs of ASCII letters compare in turn (numbers as
//! numbers, letters as strings, a number newer than letters), anything else separates;
//! `~` sorts before everything, even the end (`1.0~rc1 < 1.0`), `^` after the end but
//! before anything else (`1.0 < 1.0^git1 < 1.0.1`). A version without a release is
//! older than the same version with one (`1.0 < 1.0-0`), as rpm 4.18's `rpm.ver`
//! order says; rpm's dependency matching instead skips a missing release, which is not
//! an order.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// A parsed RPM epoch-version-release: the text and where its parts are.
#[derive(Debug, Clone)]
pub struct RpmVersion {
    text: Box<str>,
    /// `text[..epoch_end]` are the epoch's digits (none: epoch 0); the version starts
    /// after the `:`, if any.
    epoch_end: u32,
    version_start: u32,
    /// Where the `-` before the release is, if there is one.
    release_dash: Option<u32>,
}

impl RpmVersion {
    /// The epoch's digits, `0` when there is none.
    pub fn epoch(&self) -> &str {
        match &self.text[..self.epoch_end as usize] {
            "" => "0",
            digits => digits,
        }
    }

    pub fn version(&self) -> &str {
        let end = self.release_dash.map_or(self.text.len(), |d| d as usize);
        &self.text[self.version_start as usize..end]
    }

    /// The release; `None` when there is no `-`, `Some("")` for a trailing one.
    pub fn release(&self) -> Option<&str> {
        self.release_dash.map(|d| &self.text[d as usize + 1..])
    }
}

impl FromStr for RpmVersion {
    type Err = String;

    /// rpm's `parseEVR`: an epoch only when the string starts with digits and a `:`
    /// (`x:1` is a version, with `:` as a separator); the release after the last `-`.
    /// Empty parts are allowed, as rpm allows them (`1:` is epoch 1, version ``).
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("empty version".into());
        }
        if u32::try_from(text.len()).is_err() {
            return Err("version string is too long".into());
        }
        let digits = text.bytes().take_while(u8::is_ascii_digit).count();
        let (epoch_end, version_start) = if text[digits..].starts_with(':') {
            (digits, digits + 1)
        } else {
            (0, 0)
        };
        let release_dash = text[version_start..]
            .rfind('-')
            .map(|at| version_start + at);
        // Lengths fit in u32: checked above.
        Ok(RpmVersion {
            text: text.into(),
            epoch_end: epoch_end as u32,
            version_start: version_start as u32,
            release_dash: release_dash.map(|d| d as u32),
        })
    }
}

impl Ord for RpmVersion {
    /// rpm's `rpmverCmp`: epoch, version, then release, where a version with a release
    /// (even an empty one) is newer than the same version without.
    fn cmp(&self, other: &Self) -> Ordering {
        rpmvercmp(self.epoch(), other.epoch())
            .then_with(|| rpmvercmp(self.version(), other.version()))
            .then_with(|| match (self.release(), other.release()) {
                (Some(a), Some(b)) => rpmvercmp(a, b),
                (Some(_), None) => Ordering::Greater,
                (None, Some(_)) => Ordering::Less,
                (None, None) => Ordering::Equal,
            })
    }
}

equal_by_order!(RpmVersion);

impl fmt::Display for RpmVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// rpm's `rpmvercmp`: orders one version or one release string (no epoch, no split at
/// `-`), as `rpm.vercmp()` in rpm's Lua does.
pub fn rpmvercmp(a: &str, b: &str) -> Ordering {
    vercmp(a.as_bytes(), b.as_bytes())
}

fn vercmp(a: &[u8], b: &[u8]) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let (mut i, mut j) = (0, 0);
    let at = |s: &[u8], k: usize| s.get(k).copied();
    let is_separator =
        |c: Option<u8>| c.is_some_and(|c| !c.is_ascii_alphanumeric() && c != b'~' && c != b'^');
    while i < a.len() || j < b.len() {
        while is_separator(at(a, i)) {
            i += 1;
        }
        while is_separator(at(b, j)) {
            j += 1;
        }
        let (ca, cb) = (at(a, i), at(b, j));
        // `~` sorts before everything, the end included.
        if ca == Some(b'~') || cb == Some(b'~') {
            if ca != Some(b'~') {
                return Ordering::Greater;
            }
            if cb != Some(b'~') {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }
        // `^` sorts before everything but the end.
        if ca == Some(b'^') || cb == Some(b'^') {
            if ca.is_none() {
                return Ordering::Less;
            }
            if cb.is_none() {
                return Ordering::Greater;
            }
            if ca != Some(b'^') {
                return Ordering::Greater;
            }
            if cb != Some(b'^') {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }
        let (Some(first), Some(_)) = (ca, cb) else {
            break;
        };
        let numeric = first.is_ascii_digit();
        let in_segment = |c: &u8| {
            if numeric {
                c.is_ascii_digit()
            } else {
                c.is_ascii_alphabetic()
            }
        };
        let seg_a = &a[i..i + a[i..].iter().take_while(|c| in_segment(c)).count()];
        let seg_b = &b[j..j + b[j..].iter().take_while(|c| in_segment(c)).count()];
        i += seg_a.len();
        j += seg_b.len();
        // Segments of different types: the number is newer.
        if seg_b.is_empty() {
            return if numeric {
                Ordering::Greater
            } else {
                Ordering::Less
            };
        }
        let order = if numeric {
            super::compare_digit_runs(seg_a, seg_b)
        } else {
            seg_a.cmp(seg_b)
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    match (i < a.len(), j < b.len()) {
        (false, false) => Ordering::Equal,
        (true, _) => Ordering::Greater,
        (false, true) => Ordering::Less,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(a: &str, b: &str, expected: Ordering) {
        let va: RpmVersion = a.parse().unwrap();
        let vb: RpmVersion = b.parse().unwrap();
        assert_eq!(va.cmp(&vb), expected, "{a} vs {b}");
        assert_eq!(vb.cmp(&va), expected.reverse(), "{b} vs {a}");
    }

    #[test]
    fn epoch_version_release() {
        check("1:1.0-1", "2.0-1", Ordering::Greater);
        check("0:1.0-1", "1.0-1", Ordering::Equal);
        check("1.0-1.el9", "1.0-1.el9_2", Ordering::Less);
        check("1.0", "1.0-1", Ordering::Less);
        check("1.0", "1.0-", Ordering::Less);
        check("1.0-", "1.0-0", Ordering::Less);
        check("3.0.7-24.el9", "3.0.7-27.el9", Ordering::Less);
        check("99999999999999999999999:1", "1:2", Ordering::Greater);
        check("x:1.0", "x.1.0", Ordering::Equal);
        let v: RpmVersion = "2:4.9.1-3.el9_2.1".parse().unwrap();
        assert_eq!(
            (v.epoch(), v.version(), v.release()),
            ("2", "4.9.1", Some("3.el9_2.1"))
        );
        let v: RpmVersion = "1:".parse().unwrap();
        assert_eq!((v.epoch(), v.version(), v.release()), ("1", "", None));
        let v: RpmVersion = "x:1-".parse().unwrap();
        assert_eq!(
            (v.epoch(), v.version(), v.release()),
            ("0", "x:1", Some(""))
        );
        assert!("".parse::<RpmVersion>().is_err());
    }
}
