//! Debian versions, `[epoch:]upstream[-revision]`, ordered as dpkg orders them.
//!
//! Parsing follows dpkg's `parseversion`: blanks around the version are dropped; the
//! epoch is the number before the first `:`; the revision is what follows the last `-`.
//! What dpkg refuses (`dpkg --compare-versions` exits 2: an empty or non-numeric or
//! too big epoch, nothing after the colon, an empty upstream version or revision,
//! embedded spaces) is an error here; what it only warns about (an upstream version
//! not starting with a digit, characters outside the policy's set) it still orders,
//! and so do we. Comparison is dpkg's `verrevcmp`, byte for byte.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// A parsed Debian version: the text and where its parts are (one allocation, as an
/// index holds hundreds of thousands).
#[derive(Debug, Clone)]
pub struct DpkgVersion {
    /// The version as written, blanks trimmed.
    text: Box<str>,
    epoch: u32,
    /// `text[upstream_start..upstream_end]` is the upstream version; the revision
    /// starts after the `-` at `upstream_end`, if any.
    upstream_start: u32,
    upstream_end: u32,
}

impl DpkgVersion {
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    pub fn upstream(&self) -> &str {
        &self.text[self.upstream_start as usize..self.upstream_end as usize]
    }

    /// The Debian revision; empty when the version has none.
    pub fn revision(&self) -> &str {
        self.text
            .get(self.upstream_end as usize + 1..)
            .unwrap_or_default()
    }
}

impl FromStr for DpkgVersion {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        // dpkg trims blanks (space and tab) only; any other white space is "embedded".
        let text = text.trim_matches([' ', '\t']);
        if text.is_empty() {
            return Err("version string is empty".into());
        }
        if text.bytes().any(|b| b.is_ascii_whitespace() || b == 0x0b) {
            return Err("version string has embedded spaces".into());
        }
        if u32::try_from(text.len()).is_err() {
            return Err("version string is too long".into());
        }
        let (epoch, upstream_start) = match text.split_once(':') {
            Some((epoch, rest)) => {
                let epoch = parse_epoch(epoch)?;
                if rest.is_empty() {
                    return Err("nothing after colon in version number".into());
                }
                (epoch, text.len() - rest.len())
            }
            None => (0, 0),
        };
        let upstream_end = match text[upstream_start..].rfind('-') {
            Some(_) if text.ends_with('-') => return Err("revision number is empty".into()),
            Some(at) => upstream_start + at,
            None => text.len(),
        };
        if upstream_end == upstream_start {
            return Err("version number is empty".into());
        }
        // Lengths fit in u32: checked above.
        Ok(DpkgVersion {
            text: text.into(),
            epoch,
            upstream_start: upstream_start as u32,
            upstream_end: upstream_end as u32,
        })
    }
}

/// dpkg reads the epoch with `strtol`: an optional sign, then digits, up to `INT_MAX`.
fn parse_epoch(epoch: &str) -> Result<u32, String> {
    let (negative, digits) = match epoch.as_bytes().first() {
        Some(b'-') => (true, &epoch[1..]),
        Some(b'+') => (false, &epoch[1..]),
        _ => (false, epoch),
    };
    if digits.is_empty() {
        return Err(if epoch.is_empty() {
            "epoch in version is empty".into()
        } else {
            "epoch in version is not number".into()
        });
    }
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        // strtol stops at the first non-digit, which is then not the colon.
        return Err(if digits.as_bytes()[0].is_ascii_digit() {
            "epoch in version is not number".into()
        } else {
            "epoch in version is empty".into()
        });
    }
    let value = digits
        .bytes()
        .try_fold(0u64, |n, d| {
            n.checked_mul(10)?
                .checked_add(u64::from(d - b'0'))
                .filter(|&n| n <= i32::MAX as u64 + 1)
        })
        .filter(|&n| n <= i32::MAX as u64);
    match value {
        None => Err("epoch in version is too big".into()),
        Some(0) => Ok(0),
        Some(_) if negative => Err("epoch in version is negative".into()),
        Some(n) => u32::try_from(n).map_err(|_| "epoch in version is too big".into()),
    }
}

impl Ord for DpkgVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| verrevcmp(self.upstream().as_bytes(), other.upstream().as_bytes()))
            .then_with(|| verrevcmp(self.revision().as_bytes(), other.revision().as_bytes()))
    }
}

equal_by_order!(DpkgVersion);

impl fmt::Display for DpkgVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The weight of a byte in a non-digit run: `~` before the end of the string, the end
/// before letters, letters before everything else.
fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(b'~') => -1,
        Some(c) => i32::from(c) + 256,
    }
}

/// dpkg's `verrevcmp`: alternate non-digit runs (compared by [`order`]) and digit runs
/// (compared as numbers of any length).
fn verrevcmp(a: &[u8], b: &[u8]) -> Ordering {
    let (mut i, mut j) = (0, 0);
    let digit_at = |s: &[u8], k: usize| s.get(k).is_some_and(u8::is_ascii_digit);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !digit_at(a, i)) || (j < b.len() && !digit_at(b, j)) {
            let ac = order(a.get(i).copied());
            let bc = order(b.get(j).copied());
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while digit_at(a, i) && digit_at(b, j) {
            if first_diff == Ordering::Equal {
                first_diff = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if digit_at(a, i) {
            return Ordering::Greater;
        }
        if digit_at(b, j) {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(a: &str, b: &str, expected: Ordering) {
        let va: DpkgVersion = a.parse().unwrap();
        let vb: DpkgVersion = b.parse().unwrap();
        assert_eq!(va.cmp(&vb), expected, "{a} vs {b}");
        assert_eq!(vb.cmp(&va), expected.reverse(), "{b} vs {a}");
    }

    #[test]
    fn tilde_sorts_before_everything_even_the_end() {
        check("1.0~rc1", "1.0", Ordering::Less);
        check("1.0~~", "1.0~", Ordering::Less);
        check("1.0~", "1.0", Ordering::Less);
        check("1.0", "1.0+b1", Ordering::Less);
        check("3.0.11-1~deb12u2", "3.0.11-1", Ordering::Less);
    }

    #[test]
    fn letters_sort_before_other_characters() {
        check("1.0a", "1.0+", Ordering::Less);
        check("1.0a", "1.0.", Ordering::Less);
        check("1.0", "1.0a", Ordering::Less);
    }

    #[test]
    fn digits_compare_as_numbers() {
        check("2.36-9+deb12u10", "2.36-9+deb12u9", Ordering::Greater);
        check("1.010", "1.10", Ordering::Equal);
        check("1.0-0", "1.0", Ordering::Equal);
        check(
            "1.99999999999999999999999999",
            "1.100000000000000000000000000",
            Ordering::Less,
        );
    }

    #[test]
    fn epoch_and_revision() {
        check("1:1.0", "2.0", Ordering::Greater);
        check("0:2.0", "2.0", Ordering::Equal);
        let v: DpkgVersion = "1:9.2p1-2+deb12u2".parse().unwrap();
        assert_eq!(
            (v.epoch(), v.upstream(), v.revision()),
            (1, "9.2p1", "2+deb12u2")
        );
        let v: DpkgVersion = "0:0-0-0".parse().unwrap();
        assert_eq!((v.upstream(), v.revision()), ("0-0", "0"));
        let v: DpkgVersion = "0:0:0-0".parse().unwrap();
        assert_eq!((v.epoch(), v.upstream()), (0, "0:0"));
    }

    #[test]
    fn refuses_what_dpkg_refuses() {
        for bad in [
            "",
            "0:",
            ":1",
            "a:1",
            "1 0",
            "1.0-",
            "1:-1",
            "-0",
            "1.0-1:2",
            "2147483648:1",
            "999999999999999999999999:0-1",
        ] {
            assert!(bad.parse::<DpkgVersion>().is_err(), "{bad:?}");
        }
        for warned in ["abc", "1:abc", "0:0a!-0", "1.0-é", " \t0:0-1  "] {
            assert!(warned.parse::<DpkgVersion>().is_ok(), "{warned:?}");
        }
        assert_eq!(
            "2147483647:1".parse::<DpkgVersion>().unwrap().epoch(),
            i32::MAX as u32
        );
    }
}
