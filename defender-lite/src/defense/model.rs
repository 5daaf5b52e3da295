//! Runtime models, one per image: what its containers did during a learning period
//! (processes, listening ports, outbound ports and destinations, DNS names), each entry
//! marked learned or user-added. After the period the model is active and the engine
//! reports what it does not hold. Persisted in sled (`models` tree, key = image, value =
//! JSON), written through on every change, so a restart neither forgets nor relearns.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model store {path}: {message}")]
    Store { path: String, message: String },
    #[error("no model for image {0:?}")]
    Unknown(String),
}

/// Where an entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Learned,
    User,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "state")]
pub enum ModelState {
    /// Learning until this time (Unix seconds).
    Learning {
        until: i64,
    },
    Active,
}

/// What an image's containers are expected to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Model {
    pub image: String,
    #[serde(flatten)]
    pub state: ModelState,
    /// Unix seconds.
    pub created: i64,
    /// Executable paths.
    #[serde(default)]
    pub processes: BTreeMap<String, Origin>,
    /// `tcp/80`, `udp/53`.
    #[serde(default)]
    pub listening: BTreeMap<String, Origin>,
    /// `tcp/443`.
    #[serde(default)]
    pub outbound_ports: BTreeMap<String, Origin>,
    /// Remote addresses contacted.
    #[serde(default)]
    pub outbound_ips: BTreeMap<String, Origin>,
    #[serde(default)]
    pub dns: BTreeMap<String, Origin>,
}

/// Which list of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum List {
    Processes,
    Listening,
    OutboundPorts,
    OutboundIps,
    Dns,
}

impl Model {
    pub fn new(image: &str, now: i64, learning_secs: i64) -> Model {
        Model {
            image: image.to_owned(),
            state: ModelState::Learning {
                until: now.saturating_add(learning_secs),
            },
            created: now,
            processes: BTreeMap::new(),
            listening: BTreeMap::new(),
            outbound_ports: BTreeMap::new(),
            outbound_ips: BTreeMap::new(),
            dns: BTreeMap::new(),
        }
    }

    /// Learning at `now`? (A model whose period has passed becomes active on the next
    /// event; `tick` does the switch and says whether it happened.)
    pub fn learning(&self, now: i64) -> bool {
        matches!(self.state, ModelState::Learning { until } if now < until)
    }

    /// Makes a model whose learning period has passed active; true if it changed.
    pub fn tick(&mut self, now: i64) -> bool {
        if let ModelState::Learning { until } = self.state
            && now >= until
        {
            self.state = ModelState::Active;
            return true;
        }
        false
    }

    pub fn list(&self, list: List) -> &BTreeMap<String, Origin> {
        match list {
            List::Processes => &self.processes,
            List::Listening => &self.listening,
            List::OutboundPorts => &self.outbound_ports,
            List::OutboundIps => &self.outbound_ips,
            List::Dns => &self.dns,
        }
    }

    pub fn list_mut(&mut self, list: List) -> &mut BTreeMap<String, Origin> {
        match list {
            List::Processes => &mut self.processes,
            List::Listening => &mut self.listening,
            List::OutboundPorts => &mut self.outbound_ports,
            List::OutboundIps => &mut self.outbound_ips,
            List::Dns => &mut self.dns,
        }
    }

    pub fn holds(&self, list: List, value: &str) -> bool {
        self.list(list).contains_key(value)
    }

    /// Adds an entry; true if it was new. A user entry is never downgraded to learned.
    pub fn add(&mut self, list: List, value: &str, origin: Origin) -> bool {
        let map = self.list_mut(list);
        match map.get_mut(value) {
            Some(held) => {
                if origin == Origin::User {
                    *held = Origin::User;
                }
                false
            }
            None => {
                map.insert(value.to_owned(), origin);
                true
            }
        }
    }

    /// Starts learning again: learned entries go, user-added ones stay.
    pub fn relearn(&mut self, now: i64, learning_secs: i64) {
        for list in [
            List::Processes,
            List::Listening,
            List::OutboundPorts,
            List::OutboundIps,
            List::Dns,
        ] {
            self.list_mut(list).retain(|_, o| *o == Origin::User);
        }
        self.state = ModelState::Learning {
            until: now.saturating_add(learning_secs),
        };
    }
}

/// The models in sled.
pub struct ModelStore {
    tree: sled::Tree,
    path: String,
}

impl ModelStore {
    pub fn open(db: &sled::Db, path: &Path) -> Result<ModelStore, ModelError> {
        let path = path.display().to_string();
        let tree = db.open_tree("models").map_err(|e| ModelError::Store {
            path: path.clone(),
            message: e.to_string(),
        })?;
        Ok(ModelStore { tree, path })
    }

    fn err(&self, e: impl std::fmt::Display) -> ModelError {
        ModelError::Store {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    pub fn save(&self, model: &Model) -> Result<(), ModelError> {
        let bytes = serde_json::to_vec(model).map_err(|e| self.err(e))?;
        self.tree
            .insert(model.image.as_bytes(), bytes)
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn get(&self, image: &str) -> Result<Option<Model>, ModelError> {
        match self.tree.get(image.as_bytes()).map_err(|e| self.err(e))? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| self.err(format!("model {image:?}: {e}"))),
            None => Ok(None),
        }
    }

    pub fn all(&self) -> Result<Vec<Model>, ModelError> {
        let mut out = Vec::new();
        for item in self.tree.iter() {
            let (_, bytes) = item.map_err(|e| self.err(e))?;
            out.push(serde_json::from_slice(&bytes).map_err(|e| self.err(e))?);
        }
        Ok(out)
    }

    pub fn flush(&self) -> Result<(), ModelError> {
        self.tree.flush().map(|_| ()).map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learning_ends_user_entries_survive_relearning_and_models_persist() {
        let mut m = Model::new("nginx:1.27", 1000, 3600);
        assert!(m.learning(1000));
        assert!(m.add(List::Processes, "/usr/sbin/nginx", Origin::Learned));
        assert!(!m.add(List::Processes, "/usr/sbin/nginx", Origin::Learned));
        assert!(m.add(List::Listening, "tcp/8080", Origin::User));
        assert!(!m.add(List::Listening, "tcp/8080", Origin::Learned));
        assert_eq!(m.listening["tcp/8080"], Origin::User, "never downgraded");
        assert!(!m.tick(4599));
        assert!(m.tick(4600));
        assert!(!m.learning(4600));
        m.relearn(5000, 60);
        assert!(m.learning(5000));
        assert!(!m.holds(List::Processes, "/usr/sbin/nginx"));
        assert!(m.holds(List::Listening, "tcp/8080"));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let db = sled::open(&path).unwrap();
            let store = ModelStore::open(&db, &path).unwrap();
            store.save(&m).unwrap();
            store.flush().unwrap();
        }
        let db = sled::open(&path).unwrap();
        let store = ModelStore::open(&db, &path).unwrap();
        assert_eq!(store.get("nginx:1.27").unwrap(), Some(m));
        assert_eq!(store.all().unwrap().len(), 1);
        assert_eq!(store.get("other").unwrap(), None);
    }
}
