//! The record as the index keeps it (`Record`), made from the OSV record as the format
//! library reads a feed line (`relay::bundle::osv`, the types the relay validates with).

use std::collections::HashMap;
use std::sync::Arc;

use relay::bundle::Timestamp;
pub use relay::bundle::osv::{
    OsvAffected, OsvEvent, OsvPackage, OsvRange, OsvRecord, OsvSeverity, RangeType, Specific,
};

use super::index::Vulnerability;
use super::range::Entry;
use super::severity::{from_vectors, severity_word};

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
        modified: Timestamp,
        ecosystems: &mut HashMap<String, Arc<str>>,
    ) -> Record {
        let record_word = severity_word(&record.database_specific);
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
                        severity_word(&affected.ecosystem_specific)
                            .or_else(|| severity_word(&affected.database_specific))
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
                modified,
            },
            entries,
            unreadable_versions,
        }
    }
}
