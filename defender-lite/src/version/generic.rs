//! A fallback ordering for ecosystems without a comparator of their own here.
//!
//! The version is read as runs of digits and runs of letters; everything else
//! separates. Digit runs compare as numbers, letter runs as case-insensitive words, a
//! number is newer than a word in the same place. When one version ends where the
//! other goes on, missing numbers read as zero (`1.0 == 1.0.0`); past them the longer
//! one is newer if it goes on with a number (`1.0 < 1.0.1`) and older if it goes on
//! with a word (`1.0-beta1 < 1.0`), which is how most
//! ecosystems treat pre-release tags. It is an approximation: Maven's qualifiers
//! (`1.0-sp1`) or RubyGems' rules differ in places.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// A version read by the fallback rules.
#[derive(Debug, Clone)]
pub struct GenericVersion {
    parts: Box<[Part]>,
    text: Box<str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// Digits without leading zeros.
    Number(String),
    /// Lower-cased letters.
    Word(String),
}

impl FromStr for GenericVersion {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find(|c: char| c.is_ascii_alphanumeric()) {
            rest = &rest[start..];
            let numeric = rest.starts_with(|c: char| c.is_ascii_digit());
            let end = rest
                .find(|c: char| {
                    if numeric {
                        !c.is_ascii_digit()
                    } else {
                        !c.is_ascii_alphabetic()
                    }
                })
                .unwrap_or(rest.len());
            let run = &rest[..end];
            parts.push(if numeric {
                let trimmed = run.trim_start_matches('0');
                Part::Number(trimmed.to_owned())
            } else {
                Part::Word(run.to_ascii_lowercase())
            });
            rest = &rest[end..];
        }
        if parts.is_empty() {
            return Err("no digits or letters".into());
        }
        Ok(GenericVersion {
            parts: parts.into(),
            text: text.into(),
        })
    }
}

impl Ord for GenericVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        let mut a = self.parts.iter();
        let mut b = other.parts.iter();
        loop {
            return match (a.next(), b.next()) {
                (None, None) => Ordering::Equal,
                // Missing numbers read as zero: `1.0 == 1.0.0`, `1.0.0-rc1 < 1.0`.
                (Some(Part::Number(x)), None) | (None, Some(Part::Number(x))) if x.is_empty() => {
                    continue;
                }
                (Some(Part::Word(_)), None) => Ordering::Less,
                (Some(Part::Number(_)), None) => Ordering::Greater,
                (None, Some(Part::Word(_))) => Ordering::Greater,
                (None, Some(Part::Number(_))) => Ordering::Less,
                (Some(Part::Number(_)), Some(Part::Word(_))) => Ordering::Greater,
                (Some(Part::Word(_)), Some(Part::Number(_))) => Ordering::Less,
                (Some(Part::Number(x)), Some(Part::Number(y))) => {
                    match x.len().cmp(&y.len()).then_with(|| x.cmp(y)) {
                        Ordering::Equal => continue,
                        order => order,
                    }
                }
                (Some(Part::Word(x)), Some(Part::Word(y))) => match x.cmp(y) {
                    Ordering::Equal => continue,
                    order => order,
                },
            };
        }
    }
}

equal_by_order!(GenericVersion);

impl fmt::Display for GenericVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_numbers_and_pre_release_words() {
        let ordered = [
            "0.9",
            "1.0-alpha",
            "1.0-beta1",
            "1.0-beta2",
            "1.0.0-RC1",
            "1.0",
            "1.0.1",
            "1.0.10",
            "1.1",
            "2",
        ];
        for (i, a) in ordered.iter().enumerate() {
            for (j, b) in ordered.iter().enumerate() {
                let va: GenericVersion = a.parse().unwrap();
                let vb: GenericVersion = b.parse().unwrap();
                assert_eq!(va.cmp(&vb), i.cmp(&j), "{a} vs {b}");
            }
        }
        let v = |s: &str| s.parse::<GenericVersion>().unwrap();
        assert_eq!(v("1.0"), v("1.00"));
        assert_eq!(v("1.0"), v("1.0.0"));
        assert!("-.-".parse::<GenericVersion>().is_err());
    }
}
