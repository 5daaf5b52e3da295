//! Python versions, ordered per PEP 440 by the `pep440_rs` crate (uv's implementation).
//!
//! Parsing normalizes as PEP 440 says (`1.0-1` is `1.0.post1`, `1.0RC1` is `1.0rc1`,
//! a leading `v` and surrounding white space are dropped); local versions sort after
//! their public version (`1.0 < 1.0+local`).

use std::fmt;
use std::str::FromStr;

/// A PEP 440 version.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pep440Version(pep440_rs::Version);

impl Pep440Version {
    /// The version as `pep440_rs` holds it.
    pub fn as_pep440(&self) -> &pep440_rs::Version {
        &self.0
    }
}

impl FromStr for Pep440Version {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        pep440_rs::Version::from_str(text.trim())
            .map(Pep440Version)
            .map_err(|e| e.to_string())
    }
}

impl fmt::Display for Pep440Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use std::cmp::Ordering;

    use super::*;

    fn v(text: &str) -> Pep440Version {
        text.parse().unwrap()
    }

    #[test]
    fn normalizes_before_ordering() {
        assert_eq!(v("1.0-1"), v("1.0.post1"));
        assert_eq!(v("1.0RC1"), v("1.0rc1"));
        assert_eq!(v("v2.31.0"), v("2.31"));
        assert_eq!(v("2015.04.28"), v("2015.4.28"));
        assert_eq!(v("1.0").cmp(&v("1.0+local")), Ordering::Less);
        assert!("1.0.0-beta-gamma".parse::<Pep440Version>().is_err());
    }
}
