//! The OSV record as read from a feed line: the fields matching needs (`OsvRecord`),
//! and the record as the index keeps it (`Record`).

use std::collections::HashMap;
use std::sync::Arc;

use relay::bundle::Timestamp;
use serde::{Deserialize, Deserializer};

use super::index::Vulnerability;
use super::range::Entry;
use super::severity::{from_vectors, severity_word};

/// An OSV record: the fields matching uses. Unknown fields are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct OsvRecord {
    pub id: String,
    pub modified: Timestamp,
    #[serde(default)]
    pub withdrawn: Option<String>,
    #[serde(default)]
    pub summary: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub aliases: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub severity: Vec<OsvSeverity>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub affected: Vec<OsvAffected>,
    /// Only `severity` is read.
    #[serde(default)]
    pub database_specific: Option<serde_json::Value>,
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
    /// Only `severity` is read.
    #[serde(default)]
    pub ecosystem_specific: Option<serde_json::Value>,
    /// Only `severity` is read.
    #[serde(default)]
    pub database_specific: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OsvPackage {
    pub ecosystem: String,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OsvRange {
    /// `ECOSYSTEM`, `SEMVER` or `GIT`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub events: Vec<OsvEvent>,
}

/// One event; the schema allows exactly one of the fields.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct OsvEvent {
    pub introduced: Option<String>,
    pub fixed: Option<String>,
    pub last_affected: Option<String>,
    pub limit: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OsvSeverity {
    /// `CVSS_V2`, `CVSS_V3`, `CVSS_V4`, `Ubuntu`, ...
    #[serde(rename = "type")]
    pub kind: String,
    pub score: String,
}

pub(super) fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A record as the builder holds it: versions parsed, severities resolved, the rest of
/// the JSON dropped.
#[derive(Debug)]
pub(super) struct Record {
    pub(super) vulnerability: Vulnerability,
    pub(super) entries: Vec<Entry>,
    pub(super) unreadable_versions: usize,
}

impl Record {
    pub(super) fn from_osv(
        record: OsvRecord,
        ecosystems: &mut HashMap<String, Arc<str>>,
    ) -> Record {
        let record_word = severity_word(record.database_specific.as_ref());
        let mut unreadable_versions = 0;
        let entries = record
            .affected
            .into_iter()
            .filter_map(|affected| {
                let package = affected.package?;
                // The schema's order of authority: the entry's vectors, the record's,
                // then the words databases add.
                let severity = from_vectors(&affected.severity)
                    .or_else(|| from_vectors(&record.severity))
                    .or_else(|| {
                        severity_word(affected.ecosystem_specific.as_ref())
                            .or_else(|| severity_word(affected.database_specific.as_ref()))
                            .or(record_word)
                            .map(|severity| (severity, None))
                    })
                    .unwrap_or_default();
                let ecosystem = package.ecosystem.trim();
                let ecosystem = match ecosystems.get(ecosystem) {
                    Some(interned) => interned.clone(),
                    None => {
                        let interned: Arc<str> = Arc::from(ecosystem);
                        ecosystems.insert(ecosystem.to_owned(), interned.clone());
                        interned
                    }
                };
                Some(Entry::build(
                    ecosystem,
                    &package.name,
                    affected.ranges,
                    affected.versions,
                    severity,
                    &mut unreadable_versions,
                ))
            })
            .collect();
        Record {
            vulnerability: Vulnerability {
                id: record.id,
                aliases: record.aliases,
                summary: record.summary,
                modified: record.modified,
            },
            entries,
            unreadable_versions,
        }
    }
}
