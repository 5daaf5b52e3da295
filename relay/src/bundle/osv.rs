//! The OSV record (<https://ossf.github.io/osv-schema/>): one set of types for everyone
//! who reads the `osv` feed, and the rules a record must pass to enter a bundle.
//!
//! [`OsvRecord`] holds the fields a scanner uses; the rest of a record is skipped
//! unread, and of `database_specific` and `ecosystem_specific` only a `severity` word is
//! kept ([`Specific`]). The bundle builder's and the origin importer's validation
//! ([`check_osv_record`]) and the agent's index read records with these types.
//!
//! Reading is lenient where leniency costs no meaning (a `null` where a list belongs
//! reads as an empty list; a `modified` that is not a timestamp is kept as written, for
//! the rule that names it), strict where a scanner would otherwise guess: an event is
//! exactly one of `introduced`, `fixed`, `last_affected` and `limit`. What a bundle
//! must hold beyond reading is [`check_osv_record`]'s: a range type the schema defines,
//! ranges that open with `introduced`, semantic versions in `SEMVER` ranges, and so on,
//! each refusal under a stable rule name.
//!
//! Cost, measured on the 2-core machine (release build) over the Go and RustSec
//! databases of `../shared/data` (5,497 records, 7.4 MB, read 20 times): the agent reads a
//! record in about 3.3 µs (4.6 to 6.2 with its former types of its own, which built a JSON
//! tree of every `*_specific` object); [`check_osv_record`] takes about 4.2 µs (3.5 with
//! the validator's former types, which skipped the summary, aliases and severities).

use std::fmt;

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::Timestamp;

/// An OSV record: the fields a scanner uses. Unknown fields are skipped.
#[derive(Debug, Clone, Deserialize)]
pub struct OsvRecord {
    pub id: String,
    /// The record's `modified`, or the text that is not an RFC 3339 timestamp.
    #[serde(deserialize_with = "modified")]
    pub modified: Result<Timestamp, String>,
    /// Present (any value but `null`): the record is withdrawn and matches nothing.
    #[serde(default)]
    pub withdrawn: Option<IgnoredAny>,
    #[serde(default)]
    pub summary: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub aliases: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub severity: Vec<OsvSeverity>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub affected: Vec<OsvAffected>,
    #[serde(default)]
    pub database_specific: Specific,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OsvAffected {
    #[serde(default)]
    pub package: Option<OsvPackage>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub severity: Vec<OsvSeverity>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub ranges: Vec<OsvRange>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub versions: Vec<String>,
    #[serde(default)]
    pub ecosystem_specific: Specific,
    #[serde(default)]
    pub database_specific: Specific,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OsvPackage {
    pub ecosystem: String,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OsvRange {
    #[serde(rename = "type")]
    pub kind: RangeType,
    #[serde(default, deserialize_with = "null_as_default")]
    pub events: Vec<OsvEvent>,
    /// The repository of a `GIT` range.
    #[serde(default)]
    pub repo: Option<String>,
}

/// A range's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum RangeType {
    Ecosystem,
    Semver,
    Git,
    /// A type the schema does not define: refused in a bundle, ignored when matching.
    #[serde(other)]
    Unknown,
}

/// One event of a range: exactly one of the schema's four fields.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum OsvEvent {
    Introduced(String),
    Fixed(String),
    LastAffected(String),
    Limit(String),
}

impl OsvEvent {
    /// The version the event names.
    pub fn version(&self) -> &str {
        match self {
            OsvEvent::Introduced(v)
            | OsvEvent::Fixed(v)
            | OsvEvent::LastAffected(v)
            | OsvEvent::Limit(v) => v,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct OsvSeverity {
    /// `CVSS_V2`, `CVSS_V3`, `CVSS_V4`, `Ubuntu`, ...
    #[serde(rename = "type")]
    pub kind: String,
    pub score: String,
}

/// What is read of a `database_specific` or `ecosystem_specific` value: its `severity`,
/// when it is an object whose `severity` is a string. Any other value reads as empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Specific {
    pub severity: Option<String>,
}

impl<'de> Deserialize<'de> for Specific {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SpecificVisitor)
    }
}

struct SpecificVisitor;

impl<'de> Visitor<'de> for SpecificVisitor {
    type Value = Specific;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Specific, A::Error> {
        let mut specific = Specific::default();
        #[derive(Deserialize)]
        #[serde(field_identifier, rename_all = "lowercase")]
        enum Field {
            Severity,
            #[serde(other)]
            Other,
        }
        while let Some(key) = map.next_key::<Field>()? {
            match key {
                Field::Severity => {
                    specific.severity = match map.next_value::<Word>()? {
                        Word::Text(text) => Some(text),
                        Word::Other(_) => None,
                    }
                }
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(specific)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Specific, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Specific::default())
    }

    fn visit_bool<E>(self, _: bool) -> Result<Specific, E> {
        Ok(Specific::default())
    }
    fn visit_i64<E>(self, _: i64) -> Result<Specific, E> {
        Ok(Specific::default())
    }
    fn visit_u64<E>(self, _: u64) -> Result<Specific, E> {
        Ok(Specific::default())
    }
    fn visit_f64<E>(self, _: f64) -> Result<Specific, E> {
        Ok(Specific::default())
    }
    fn visit_str<E>(self, _: &str) -> Result<Specific, E> {
        Ok(Specific::default())
    }
    fn visit_unit<E>(self) -> Result<Specific, E> {
        Ok(Specific::default())
    }
}

/// A severity word: a string, or any other JSON value, which says nothing.
#[derive(Deserialize)]
#[serde(untagged)]
enum Word {
    Text(String),
    Other(IgnoredAny),
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

fn modified<'de, D: Deserializer<'de>>(d: D) -> Result<Result<Timestamp, String>, D::Error> {
    let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
    Ok(text.parse::<Timestamp>().map_err(|_| text.into_owned()))
}

/// Why an OSV record is refused: the rule (a stable name, for counting) and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsvProblem {
    pub rule: &'static str,
    pub message: String,
}

impl fmt::Display for OsvProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// What a good OSV record is known by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsvRecordKey {
    pub id: String,
    pub modified: Timestamp,
    /// `withdrawn` is set: the record must not match anything.
    pub withdrawn: bool,
}

/// Checks one OSV record (one line of JSON) against the rules a scanner relies on; the
/// builder's validation and the origin's importer both call this.
pub fn check_osv_record(line: &str) -> Result<OsvRecordKey, OsvProblem> {
    let problem = |rule: &'static str, message: String| OsvProblem { rule, message };
    if line.trim().is_empty() {
        return Err(problem(
            "empty-line",
            "empty line (one OSV record per line)".into(),
        ));
    }
    let rec: OsvRecord = serde_json::from_str(line).map_err(|e| {
        // The record is one line: its column is what locates the fault.
        let message = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        let message = message.strip_suffix(&suffix).unwrap_or(&message);
        problem(
            "not-osv",
            format!("not an OSV record: {message} (column {})", e.column()),
        )
    })?;
    if rec.id.trim().is_empty() {
        return Err(problem("empty-id", "OSV record with an empty id".into()));
    }
    let id = &rec.id;
    let modified = match &rec.modified {
        Ok(modified) => *modified,
        Err(text) => {
            return Err(problem(
                "modified-not-rfc3339",
                format!("{id}: modified {text:?} is not an RFC 3339 timestamp"),
            ));
        }
    };
    if rec.affected.is_empty() {
        return Err(problem(
            "no-affected",
            format!("{id}: no affected packages"),
        ));
    }
    for (i, affected) in rec.affected.iter().enumerate() {
        let Some(pkg) = &affected.package else {
            return Err(problem(
                "affected-without-package",
                format!("{id}: affected[{i}] has no package"),
            ));
        };
        if pkg.ecosystem.trim().is_empty() || pkg.name.trim().is_empty() {
            return Err(problem(
                "package-without-ecosystem-or-name",
                format!("{id}: affected[{i}].package needs an ecosystem and a name"),
            ));
        }
        if affected.ranges.is_empty() && affected.versions.is_empty() {
            return Err(problem(
                "affected-without-ranges-or-versions",
                format!("{id}: affected[{i}] has neither ranges nor versions"),
            ));
        }
        for (j, range) in affected.ranges.iter().enumerate() {
            check_osv_range(range).map_err(|(rule, reason)| {
                problem(rule, format!("{id}: affected[{i}].ranges[{j}]: {reason}"))
            })?;
        }
    }
    Ok(OsvRecordKey {
        id: rec.id,
        modified,
        withdrawn: rec.withdrawn.is_some(),
    })
}

fn check_osv_range(range: &OsvRange) -> Result<(), (&'static str, String)> {
    if range.kind == RangeType::Unknown {
        return Err((
            "unknown-range-type",
            "the type must be ECOSYSTEM, SEMVER or GIT".into(),
        ));
    }
    if !matches!(range.events.first(), Some(OsvEvent::Introduced(_))) {
        return Err((
            "range-not-starting-with-introduced",
            "the first event must be `introduced`".into(),
        ));
    }
    if range.kind == RangeType::Git && range.repo.as_deref().is_none_or(str::is_empty) {
        return Err(("git-range-without-repo", "a GIT range needs a repo".into()));
    }
    for event in &range.events {
        let v = event.version();
        if v.trim().is_empty() {
            return Err(("empty-event-version", "empty version in an event".into()));
        }
        if range.kind == RangeType::Semver && v != "0" && semver::Version::parse(v).is_err() {
            return Err((
                "semver-range-invalid-version",
                format!("{v:?} is not a semantic version"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"{"id":"GHSA-x","modified":"2024-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"npm","name":"lodash"},"ranges":[{"type":"SEMVER","events":[{"introduced":"0"},{"fixed":"4.17.21"}]}]}]}"#;

    fn read(line: &str) -> Result<OsvRecord, String> {
        serde_json::from_str(line).map_err(|e| e.to_string())
    }

    fn rule(line: &str) -> Result<OsvRecordKey, &'static str> {
        check_osv_record(line).map_err(|p| p.rule)
    }

    #[test]
    fn a_record_reads_the_fields_a_scanner_uses() {
        let rec = read(&OK.replace(
            r#""affected""#,
            r#""aliases":["CVE-1"],"summary":"s","severity":[{"type":"CVSS_V3","score":"CVSS:3.1/AV:N"}],"database_specific":{"severity":"HIGH","other":[1,{"a":2}]},"affected""#,
        ))
        .unwrap();
        assert_eq!(
            rec.modified,
            Ok(Timestamp::from_unix(1_704_067_200).unwrap())
        );
        assert_eq!(rec.aliases, ["CVE-1"]);
        assert_eq!(rec.severity[0].kind, "CVSS_V3");
        assert_eq!(rec.database_specific.severity.as_deref(), Some("HIGH"));
        let range = &rec.affected[0].ranges[0];
        assert_eq!(range.kind, RangeType::Semver);
        assert_eq!(
            range.events,
            [
                OsvEvent::Introduced("0".into()),
                OsvEvent::Fixed("4.17.21".into())
            ]
        );
        assert!(rec.withdrawn.is_none());
    }

    #[test]
    fn reading_is_lenient_where_no_meaning_is_lost() {
        // `null` lists, a non-string withdrawn, odd `*_specific` values, an unknown type.
        let rec = read(r#"{"id":"X","modified":"yesterday","withdrawn":true,"aliases":null,"severity":null,"database_specific":[1],"affected":[{"package":{"ecosystem":"npm","name":"a"},"versions":null,"ecosystem_specific":{"severity":7},"database_specific":"text","ranges":[{"type":"SOMEDAY","events":null}]}]}"#).unwrap();
        assert_eq!(rec.modified, Err("yesterday".into()));
        assert!(rec.withdrawn.is_some());
        assert!(rec.aliases.is_empty() && rec.severity.is_empty());
        assert_eq!(rec.database_specific, Specific::default());
        let affected = &rec.affected[0];
        assert_eq!(affected.ecosystem_specific, Specific::default());
        assert_eq!(affected.database_specific, Specific::default());
        assert_eq!(affected.ranges[0].kind, RangeType::Unknown);
        assert!(affected.ranges[0].events.is_empty());
    }

    #[test]
    fn an_event_is_exactly_one_of_four() {
        for bad in [
            r#"{"fixed":"1.0.0","limit":"2.0.0"}"#,
            r#"{"fixed":"1.0.0","note":"x"}"#,
            r#"{}"#,
        ] {
            assert!(serde_json::from_str::<OsvEvent>(bad).is_err(), "{bad}");
        }
        assert_eq!(
            serde_json::from_str::<OsvEvent>(r#"{"last_affected":"1"}"#).unwrap(),
            OsvEvent::LastAffected("1".into())
        );
    }

    /// One row per rule: what breaks it, and the rule named.
    #[test]
    fn each_rule_has_its_case() {
        assert!(rule(OK).is_ok());
        for (from, to, expected) in [
            (r#""id":"GHSA-x""#, r#""id":" ""#, "empty-id"),
            ("2024-01-01T00:00:00Z", "yesterday", "modified-not-rfc3339"),
            (r#""SEMVER""#, r#""RANGE""#, "unknown-range-type"),
            (
                r#"{"introduced":"0"},"#,
                "",
                "range-not-starting-with-introduced",
            ),
            (r#""SEMVER""#, r#""GIT""#, "git-range-without-repo"),
            ("4.17.21", " ", "empty-event-version"),
            ("4.17.21", "4.17", "semver-range-invalid-version"),
            (
                r#""name":"lodash""#,
                r#""name":"""#,
                "package-without-ecosystem-or-name",
            ),
            (
                r#"{"fixed":"4.17.21"}"#,
                r#"{"fixed":"1.0.0","limit":"2.0.0"}"#,
                "not-osv",
            ),
        ] {
            let line = OK.replace(from, to);
            assert_eq!(rule(&line).map(drop), Err(expected), "{line}");
        }
        assert_eq!(rule("").map(drop), Err("empty-line"));
        assert_eq!(
            rule(r#"{"id":"X","modified":"2024-01-01T00:00:00Z"}"#).map(drop),
            Err("no-affected")
        );
        assert_eq!(
            rule(r#"{"id":"X","modified":"2024-01-01T00:00:00Z","affected":[{"versions":["1"]}]}"#)
                .map(drop),
            Err("affected-without-package")
        );
        assert_eq!(
            rule(r#"{"id":"X","modified":"2024-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"npm","name":"a"}}]}"#).map(drop),
            Err("affected-without-ranges-or-versions")
        );
        let key = rule(&OK.replace(
            r#""affected""#,
            r#""withdrawn":"2024-02-01T00:00:00Z","affected""#,
        ))
        .unwrap();
        assert!(key.withdrawn);
        assert_eq!(key.id, "GHSA-x");
    }
}
