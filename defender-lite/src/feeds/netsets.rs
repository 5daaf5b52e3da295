//! The `domains` and `ips` feeds as sets the runtime checks every DNS query and
//! connection against.
//!
//! - [`DomainSet`]: known-bad names; a listed name also matches every subdomain
//!   (`evil.example` matches `a.b.evil.example`). Lookup walks the query's suffixes at
//!   label boundaries, one hash lookup each.
//! - [`IpSet`]: known-bad addresses and CIDR ranges, merged into sorted, disjoint
//!   ranges over one 128-bit space (IPv4 as `::ffff:a.b.c.d`, so an IPv4-mapped IPv6
//!   address matches its IPv4 entry). Lookup is one binary search.
//!
//! Both are written once per bundle as index files (`index/domains.txt`: one normalized
//! name per line, sorted; `index/ips.bin`: big-endian `start,end` pairs of `u128`) so an
//! agent loads them without re-reading or re-validating the feeds.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv6Addr};

use ipnet::IpNet;

/// Known-bad domain names.
#[derive(Debug, Default, Clone)]
pub struct DomainSet {
    names: HashSet<Box<str>>,
}

/// A name as the set compares it: lower case, without a trailing dot.
pub fn normalize_domain(name: &str) -> Option<String> {
    let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
    (!name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c.is_control())).then_some(name)
}

impl DomainSet {
    /// Reads feed text: one name per line, `#` starts a comment. Returns the set and the
    /// lines that were not names (line number, text), which the bundle validator should
    /// have refused already.
    pub fn from_feed_text(text: &str) -> (DomainSet, Vec<(usize, String)>) {
        let mut set = DomainSet::default();
        let mut bad = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let entry = line.split('#').next().unwrap_or("").trim();
            if entry.is_empty() {
                continue;
            }
            match normalize_domain(entry) {
                Some(name) => {
                    set.names.insert(name.into());
                }
                None => bad.push((n + 1, entry.to_owned())),
            }
        }
        (set, bad)
    }

    pub fn insert(&mut self, name: &str) {
        if let Some(name) = normalize_domain(name) {
            self.names.insert(name.into());
        }
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The listed name that `query` is, or is a subdomain of. `query` may have a trailing
    /// dot and any case.
    pub fn matches(&self, query: &str) -> Option<&str> {
        let query = query.trim_end_matches('.');
        let lowered;
        let query = if query.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = query.to_ascii_lowercase();
            lowered.as_str()
        } else {
            query
        };
        let mut rest = query;
        loop {
            if let Some(hit) = self.names.get(rest) {
                return Some(hit);
            }
            match rest.find('.') {
                Some(dot) => rest = &rest[dot + 1..],
                None => return None,
            }
        }
    }

    /// The index file: sorted names, one per line.
    pub fn to_index(&self) -> String {
        let mut names: Vec<&str> = self.names.iter().map(AsRef::as_ref).collect();
        names.sort_unstable();
        let mut out = String::with_capacity(names.iter().map(|n| n.len() + 1).sum());
        for name in names {
            out.push_str(name);
            out.push('\n');
        }
        out
    }

    pub fn from_index(text: &str) -> DomainSet {
        DomainSet {
            names: text
                .lines()
                .filter(|l| !l.is_empty())
                .map(Into::into)
                .collect(),
        }
    }
}

/// Known-bad addresses and ranges.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IpSet {
    /// Sorted, disjoint, non-adjacent inclusive ranges.
    ranges: Vec<(u128, u128)>,
}

/// An address in the set's 128-bit space.
pub fn ip_key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn net_range(net: IpNet) -> (u128, u128) {
    let (start, end) = match net {
        IpNet::V4(n) => (
            IpAddr::V4(n.network()).to_canonical(),
            IpAddr::V4(n.broadcast()),
        ),
        IpNet::V6(n) => (IpAddr::V6(n.network()), IpAddr::V6(n.broadcast())),
    };
    (ip_key(start), ip_key(end))
}

impl IpSet {
    /// Reads feed text: one address or CIDR range per line, `#` comments. Returns the set
    /// and the lines that could not be read.
    pub fn from_feed_text(text: &str) -> (IpSet, Vec<(usize, String)>) {
        let mut ranges = Vec::new();
        let mut bad = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let entry = line.split('#').next().unwrap_or("").trim();
            if entry.is_empty() {
                continue;
            }
            if let Ok(ip) = entry.parse::<IpAddr>() {
                let k = ip_key(ip);
                ranges.push((k, k));
            } else if let Ok(net) = entry.parse::<IpNet>() {
                ranges.push(net_range(net));
            } else {
                bad.push((n + 1, entry.to_owned()));
            }
        }
        (IpSet::from_ranges(ranges), bad)
    }

    /// Sorts and merges overlapping or adjacent ranges.
    pub fn from_ranges(mut ranges: Vec<(u128, u128)>) -> IpSet {
        ranges.retain(|(a, b)| a <= b);
        ranges.sort_unstable();
        let mut merged: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
        for (start, end) in ranges {
            match merged.last_mut() {
                Some(last) if start <= last.1.saturating_add(1) => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        merged.shrink_to_fit();
        IpSet { ranges: merged }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.contains_key(ip_key(ip))
    }

    pub fn contains_key(&self, key: u128) -> bool {
        let i = self.ranges.partition_point(|&(start, _)| start <= key);
        i > 0 && self.ranges[i - 1].1 >= key
    }

    /// Disjoint ranges after merging.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn to_index(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.ranges.len() * 32);
        for (a, b) in &self.ranges {
            out.extend_from_slice(&a.to_be_bytes());
            out.extend_from_slice(&b.to_be_bytes());
        }
        out
    }

    /// Reads an index file; `None` when its length is not whole ranges.
    pub fn from_index(bytes: &[u8]) -> Option<IpSet> {
        if !bytes.len().is_multiple_of(32) {
            return None;
        }
        let mut ranges = Vec::with_capacity(bytes.len() / 32);
        for chunk in bytes.chunks_exact(32) {
            let (a, b) = chunk.split_at(16);
            ranges.push((
                u128::from_be_bytes(a.try_into().ok()?),
                u128::from_be_bytes(b.try_into().ok()?),
            ));
        }
        // Re-merge: a damaged file must not make lookups wrong.
        Some(IpSet::from_ranges(ranges))
    }
}

/// The address a key stands for (IPv4 when it is IPv4-mapped).
pub fn key_ip(key: u128) -> IpAddr {
    Ipv6Addr::from(key).to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_domain_matches_itself_and_its_subdomains_only() {
        let (set, bad) = DomainSet::from_feed_text("# c\nevil.example\n\nBad.Test. # x\n");
        assert!(bad.is_empty());
        assert_eq!(set.len(), 2);
        assert_eq!(set.matches("evil.example"), Some("evil.example"));
        assert_eq!(set.matches("A.B.Evil.Example."), Some("evil.example"));
        assert_eq!(set.matches("bad.test"), Some("bad.test"));
        assert_eq!(set.matches("notevil.example"), None);
        assert_eq!(set.matches("example"), None);
        assert_eq!(set.matches("evil.example.com"), None);
        let again = DomainSet::from_index(&set.to_index());
        assert_eq!(again.matches("x.evil.example"), Some("evil.example"));
        assert_eq!(again.len(), 2);
    }

    #[test]
    fn ranges_merge_and_match_across_families() {
        let (set, bad) = IpSet::from_feed_text(
            "192.0.2.0/25\n192.0.2.128/25\n198.51.100.7\n2001:db8::/32\nnot-an-ip\n",
        );
        assert_eq!(bad, vec![(5, "not-an-ip".to_owned())]);
        assert_eq!(set.len(), 3, "{set:?}");
        for hit in [
            "192.0.2.0",
            "192.0.2.255",
            "198.51.100.7",
            "::ffff:192.0.2.9",
            "2001:db8:ffff::1",
        ] {
            assert!(set.contains(hit.parse().unwrap()), "{hit}");
        }
        for miss in [
            "192.0.3.0",
            "198.51.100.6",
            "198.51.100.8",
            "2001:db9::",
            "::",
        ] {
            assert!(!set.contains(miss.parse().unwrap()), "{miss}");
        }
        let again = IpSet::from_index(&set.to_index()).unwrap();
        assert_eq!(again, set);
        assert!(IpSet::from_index(&[0u8; 31]).is_none());
        assert_eq!(
            key_ip(ip_key("192.0.2.1".parse().unwrap())).to_string(),
            "192.0.2.1"
        );
    }
}
