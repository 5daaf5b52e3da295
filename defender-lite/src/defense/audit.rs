//! Audits: one record per violation, in the runtime database (`store.rs`; `audits` tree,
//! key = time and a counter, so they list in order), appended to a JSON-lines file, and
//! optionally POSTed to a webhook (by the runner, with retries). A per-container, per-area
//! throttle keeps a storm from drowning the log: past `burst` audits in `window`,
//! violations are counted and the next audit that gets through says how many were
//! suppressed.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::store::{RuntimeDb, Tree};
use super::{Area, Effect};

/// The tree audits are kept in.
const TREE: &str = "audits";
use crate::monitor::event::short_id;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit store: {0}")]
    Store(#[from] super::store::StoreError),
    #[error("audit store: an audit that does not encode: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("audit log {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One violation, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Audit {
    /// RFC 3339, UTC.
    pub time: String,
    /// Unix time, nanoseconds (for ordering and `--since`).
    pub ts: i128,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    pub rule: String,
    pub area: Area,
    pub effect: Effect,
    /// What was done: `alerted`, `killed process 4242`, `blocked container web`, or why
    /// the effect could not be carried out.
    pub action: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Violations of this container and area that the throttle held back before this one.
    #[serde(default)]
    pub suppressed: u64,
}

impl Audit {
    /// One line for people.
    pub fn line(&self) -> String {
        let who = match (&self.container_name, &self.container_id, &self.image) {
            (Some(n), _, Some(i)) => format!("container {n} ({i})"),
            (None, Some(id), Some(i)) => format!("container {} ({i})", short_id(id)),
            (Some(n), _, None) => format!("container {n}"),
            (None, Some(id), None) => format!("container {}", short_id(id)),
            (None, None, _) => "host".to_owned(),
        };
        let mut line = format!(
            "{} {} {} [{}] {}: {} ({})",
            self.time,
            self.effect.as_str().to_uppercase(),
            self.area,
            self.rule,
            who,
            self.message,
            self.action
        );
        if self.suppressed > 0 {
            line += &format!(" [{} similar suppressed]", self.suppressed);
        }
        line
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ThrottleSettings {
    pub window: Duration,
    pub burst: u32,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        ThrottleSettings {
            window: Duration::from_secs(60),
            burst: 10,
        }
    }
}

/// Per (container, area): at most `burst` audits per `window`.
#[derive(Default)]
pub struct Throttle {
    settings: ThrottleSettings,
    slots: HashMap<(String, Area), (i128, u32, u64)>,
}

impl Throttle {
    pub fn new(settings: ThrottleSettings) -> Throttle {
        Throttle {
            settings,
            slots: HashMap::new(),
        }
    }

    /// `Some(suppressed before)` if this violation may be audited, `None` if held back.
    pub fn admit(&mut self, container: &str, area: Area, ts: i128) -> Option<u64> {
        let window = self.settings.window.as_nanos() as i128;
        let slot = self
            .slots
            .entry((container.to_owned(), area))
            .or_insert((ts, 0, 0));
        if ts - slot.0 >= window {
            slot.0 = ts;
            slot.1 = 0;
        }
        if slot.1 < self.settings.burst {
            slot.1 += 1;
            let suppressed = slot.2;
            slot.2 = 0;
            Some(suppressed)
        } else {
            slot.2 += 1;
            None
        }
    }
}

/// Where audits are kept.
pub struct AuditLog {
    tree: Tree,
    file: Option<(PathBuf, std::fs::File)>,
    counter: u64,
}

impl AuditLog {
    pub fn open(db: &RuntimeDb, file: Option<&Path>) -> Result<AuditLog, AuditError> {
        let tree = db.tree(TREE)?;
        let file = match file {
            Some(path) => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| AuditError::File {
                        path: path.to_owned(),
                        source,
                    })?;
                Some((path.to_owned(), f))
            }
            None => None,
        };
        Ok(AuditLog {
            tree,
            file,
            counter: 0,
        })
    }

    pub fn record(&mut self, audit: &Audit) -> Result<(), AuditError> {
        let json = serde_json::to_vec(audit)?;
        self.counter += 1;
        let mut key = Vec::with_capacity(24);
        key.extend_from_slice(&audit.ts.to_be_bytes());
        key.extend_from_slice(&self.counter.to_be_bytes());
        self.tree.insert(&key, &json)?;
        if let Some((path, f)) = &mut self.file {
            let mut line = json;
            line.push(b'\n');
            f.write_all(&line).map_err(|source| AuditError::File {
                path: path.clone(),
                source,
            })?;
        }
        Ok(())
    }

    pub fn flush(&self) -> Result<(), AuditError> {
        Ok(self.tree.flush()?)
    }

    /// The audits in `db` at or after `since` (ns), oldest first.
    pub fn since(db: &RuntimeDb, since: i128) -> Result<Vec<Audit>, AuditError> {
        let mut out = Vec::new();
        for item in db.tree(TREE)?.from_key(&since.to_be_bytes()) {
            let (_, v) = item?;
            out.push(serde_json::from_slice(&v)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audit(ts: i128) -> Audit {
        Audit {
            time: "2026-12-02T00:00:00Z".into(),
            ts,
            container_id: Some("4f2a".repeat(16)),
            container_name: Some("web".into()),
            image: Some("httpd:2.4".into()),
            rule: "Default".into(),
            area: Area::Processes,
            effect: Effect::Alert,
            action: "alerted".into(),
            message: "process /usr/bin/nc is not in the model of httpd:2.4".into(),
            pid: Some(42),
            suppressed: 0,
        }
    }

    #[test]
    fn the_throttle_holds_a_storm_back_and_counts_it() {
        let mut t = Throttle::new(ThrottleSettings {
            window: Duration::from_secs(60),
            burst: 3,
        });
        let s = 1_000_000_000i128;
        let admitted: Vec<Option<u64>> = (0..6).map(|i| t.admit("c", Area::Dns, i * s)).collect();
        assert_eq!(admitted, [Some(0), Some(0), Some(0), None, None, None]);
        assert_eq!(t.admit("c", Area::Processes, 7 * s), Some(0), "per area");
        assert_eq!(t.admit("d", Area::Dns, 7 * s), Some(0), "per container");
        assert_eq!(
            t.admit("c", Area::Dns, 61 * s),
            Some(3),
            "the next says what was held back"
        );
    }

    #[test]
    fn audits_are_kept_in_order_in_the_database_and_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = RuntimeDb::open(dir.path()).unwrap();
        let file = dir.path().join("audits.jsonl");
        let mut log = AuditLog::open(&db, Some(&file)).unwrap();
        for ts in [30, 10, 20] {
            log.record(&audit(ts)).unwrap();
        }
        log.flush().unwrap();
        let all = AuditLog::since(&db, 0).unwrap();
        assert_eq!(all.iter().map(|a| a.ts).collect::<Vec<_>>(), [10, 20, 30]);
        assert_eq!(AuditLog::since(&db, 15).unwrap().len(), 2);
        let lines = std::fs::read_to_string(&file).unwrap();
        assert_eq!(lines.lines().count(), 3);
        let first: Audit = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
        assert_eq!(first, audit(30));
        assert!(
            first
                .line()
                .contains("ALERT processes [Default] container web (httpd:2.4)")
        );
    }
}
