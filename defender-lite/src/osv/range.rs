//! Evaluating ranges: an `affected[]` entry with its versions parsed under its scheme
//! (`Entry`), its `ECOSYSTEM` and `SEMVER` ranges (`Range`, `Event`, `Bound`), and the
//! installed version read once per scheme (`Installed`).

use std::sync::Arc;

use crate::version::{Scheme, Version, VersionError};

use super::record::{OsvEvent, OsvRange, RangeType};
use super::scheme_for;
use super::severity::Severity;

/// The installed version, parsed under each scheme a range asks for (a `SEMVER` range
/// of a PyPI record reads it as SemVer), at most once per scheme, without allocating.
pub(super) struct Installed<'t> {
    pub(super) text: &'t str,
    /// By `Scheme as usize`: not tried yet, or the parse's outcome.
    pub(super) parsed: [Option<Option<Version>>; Scheme::ALL.len()],
}

impl<'t> Installed<'t> {
    pub(super) fn new(text: &'t str) -> Self {
        Installed {
            text: text.trim(),
            parsed: [const { None }; Scheme::ALL.len()],
        }
    }

    /// Reads the version under `scheme` now, to tell whether it can be.
    pub(super) fn read_as(&mut self, scheme: Scheme) -> Result<(), VersionError> {
        let outcome = scheme.parse(self.text);
        let result = outcome.as_ref().map(|_| ()).map_err(Clone::clone);
        self.parsed[scheme as usize] = Some(outcome.ok());
        result
    }

    pub(super) fn get(&mut self, scheme: Scheme) -> Option<&Version> {
        let text = self.text;
        self.parsed[scheme as usize]
            .get_or_insert_with(|| scheme.parse(text).ok())
            .as_ref()
    }
}

/// One `affected[]` entry with its versions parsed.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) vuln: usize,
    pub(super) ecosystem: Arc<str>,
    pub(super) package: Box<str>,
    pub(super) scheme: Scheme,
    pub(super) ranges: Vec<Range>,
    pub(super) versions: Vec<(Box<str>, Option<Version>)>,
    pub(super) severity: Severity,
    pub(super) cvss_score: Option<f64>,
}

#[derive(Debug)]
pub(super) struct Range {
    pub(super) scheme: Scheme,
    /// `introduced`, `fixed` and `last_affected`, sorted.
    pub(super) events: Vec<Event>,
    pub(super) limits: Vec<Bound>,
}

#[derive(Debug)]
pub(super) struct Event {
    pub(super) kind: EventKind,
    pub(super) bound: Bound,
    /// A `fixed` version as the record writes it, to report.
    pub(super) fixed: Option<Box<str>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum EventKind {
    // At equal versions an interval opens before it closes: `introduced: X, fixed: X`
    // is empty, `introduced: X, last_affected: X` is X alone.
    Introduced,
    Fixed,
    LastAffected,
}

#[derive(Debug)]
pub(super) enum Bound {
    /// `introduced: "0"`: before every version.
    Zero,
    At(Version),
    /// A `limit` containing `*`: after every version.
    Infinity,
}

impl Bound {
    /// Where `version` stands relative to this bound.
    pub(super) fn cmp_version(&self, version: &Version) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        match self {
            Bound::Zero => Ordering::Less,
            Bound::Infinity => Ordering::Greater,
            // Bounds are parsed under the range's scheme, as is the version they meet.
            Bound::At(bound) => bound.partial_cmp(version).unwrap_or(Ordering::Greater),
        }
    }

    pub(super) fn cmp(&self, other: &Bound) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        match (self, other) {
            (Bound::Zero, Bound::Zero) | (Bound::Infinity, Bound::Infinity) => Ordering::Equal,
            (Bound::Zero, _) | (_, Bound::Infinity) => Ordering::Less,
            (_, Bound::Zero) | (Bound::Infinity, _) => Ordering::Greater,
            (Bound::At(a), Bound::At(b)) => a.partial_cmp(b).unwrap_or(Ordering::Equal),
        }
    }
}

impl Entry {
    /// Parses an `affected[]` entry's versions; what cannot be read is counted in
    /// `unreadable` and left out.
    pub(super) fn build(
        ecosystem: Arc<str>,
        package: &str,
        raw_ranges: Vec<OsvRange>,
        raw_versions: Vec<String>,
        (severity, cvss_score): (Severity, Option<f64>),
        unreadable: &mut usize,
    ) -> Entry {
        let scheme = scheme_for(&ecosystem);
        let mut ranges = Vec::new();
        for range in raw_ranges {
            let range_scheme = match range.kind {
                RangeType::Ecosystem => scheme,
                RangeType::Semver if scheme == Scheme::Go => Scheme::Go,
                RangeType::Semver => Scheme::Semver,
                RangeType::Git | RangeType::Unknown => continue,
            };
            if let Some(range) = Range::build(range_scheme, range.events, unreadable) {
                ranges.push(range);
            }
        }
        let versions = raw_versions
            .into_iter()
            .map(|text| {
                let parsed = scheme.parse(&text).ok();
                if parsed.is_none() {
                    *unreadable += 1;
                }
                (text.trim().into(), parsed)
            })
            .collect();
        ranges.shrink_to_fit();
        Entry {
            // Set when the index is built.
            vuln: 0,
            ecosystem,
            package: package.trim().into(),
            scheme,
            ranges,
            versions,
            severity,
            cvss_score,
        }
    }

    pub(super) fn affects(&self, installed: &mut Installed<'_>) -> bool {
        for range in &self.ranges {
            if let Some(version) = installed.get(range.scheme)
                && range.contains(version)
            {
                return true;
            }
        }
        if self.versions.is_empty() {
            return false;
        }
        // The schema's test is the exact string, which holds whether or not the scheme
        // reads the version; equal versions written differently (PEP 440's `1.0` and
        // `1.0.0`) match too.
        let text = installed.text;
        let own = installed.get(self.scheme);
        self.versions.iter().any(|(listed, parsed)| {
            **listed == *text || matches!((own, parsed), (Some(own), Some(parsed)) if own == parsed)
        })
    }

    /// The smallest `fixed` above the installed version, in any of the entry's ranges.
    pub(super) fn fixed_above(&self, installed: &mut Installed<'_>) -> Option<(&Version, &str)> {
        let mut best: Option<(&Version, &str)> = None;
        for range in &self.ranges {
            let Some(version) = installed.get(range.scheme) else {
                continue;
            };
            for event in &range.events {
                if let (Bound::At(fixed), Some(text)) = (&event.bound, &event.fixed)
                    && fixed > version
                    && best.is_none_or(|(held, _)| fixed < held)
                {
                    best = Some((fixed, text));
                }
            }
        }
        best
    }
}

impl Range {
    pub(super) fn build(
        scheme: Scheme,
        raw: Vec<OsvEvent>,
        unreadable: &mut usize,
    ) -> Option<Range> {
        let mut events = Vec::new();
        let mut limits = Vec::new();
        let mut read = |text: &str| {
            let parsed = scheme.parse(text).ok();
            if parsed.is_none() {
                *unreadable += 1;
            }
            parsed
        };
        for event in raw {
            match event {
                OsvEvent::Introduced(text) => {
                    let bound = if text.trim() == "0" {
                        Some(Bound::Zero)
                    } else {
                        read(&text).map(Bound::At)
                    };
                    if let Some(bound) = bound {
                        events.push(Event {
                            kind: EventKind::Introduced,
                            bound,
                            fixed: None,
                        });
                    }
                }
                OsvEvent::Fixed(text) => {
                    if let Some(version) = read(&text) {
                        events.push(Event {
                            kind: EventKind::Fixed,
                            bound: Bound::At(version),
                            fixed: Some(text.trim().into()),
                        });
                    }
                }
                OsvEvent::LastAffected(text) => {
                    if let Some(version) = read(&text) {
                        events.push(Event {
                            kind: EventKind::LastAffected,
                            bound: Bound::At(version),
                            fixed: None,
                        });
                    }
                }
                OsvEvent::Limit(text) => {
                    if text.contains('*') {
                        limits.push(Bound::Infinity);
                    } else if let Some(version) = read(&text) {
                        limits.push(Bound::At(version));
                    }
                }
            }
        }
        if !events.iter().any(|e| e.kind == EventKind::Introduced) {
            return None;
        }
        events.sort_by(|a, b| a.bound.cmp(&b.bound).then(a.kind.cmp(&b.kind)));
        events.shrink_to_fit();
        limits.shrink_to_fit();
        Some(Range {
            scheme,
            events,
            limits,
        })
    }

    /// The OSV schema's `IncludedInRanges` for one range.
    pub(super) fn contains(&self, version: &Version) -> bool {
        use std::cmp::Ordering;
        let below_limits = self.limits.is_empty()
            || self
                .limits
                .iter()
                .any(|limit| limit.cmp_version(version) == Ordering::Greater);
        if !below_limits {
            return false;
        }
        let mut vulnerable = false;
        for event in &self.events {
            let bound = event.bound.cmp_version(version);
            match event.kind {
                EventKind::Introduced if bound != Ordering::Greater => vulnerable = true,
                EventKind::Fixed if bound != Ordering::Greater => vulnerable = false,
                EventKind::LastAffected if bound == Ordering::Less => vulnerable = false,
                _ => {}
            }
        }
        vulnerable
    }
}
