//! Runtime models, one per image: what its containers did during a learning period
//! (processes, listening ports, outbound ports and destinations, DNS names), each entry
//! marked learned or user-added. After the period the model is active and the engine
//! reports what it does not hold. Persisted in the runtime database (`store.rs`) and
//! written through on every change, so a restart neither forgets nor relearns: the `models`
//! tree holds each model's header (key = image, value = JSON: state, created), the
//! `model-entries` tree one key per entry (the image's length and bytes, the list, the
//! value; the value is the origin). Learning one more entry writes one key, whatever the
//! model's size; only the operator's commands (`model relearn`, `add`, `promote`) rewrite a
//! whole model. Models written by earlier versions, with their lists inside the header, are
//! moved to entries on load.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::store::{RuntimeDb, Tree};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model store: {0}")]
    Store(#[from] super::store::StoreError),
    #[error("model store {path}: {message}")]
    Malformed { path: String, message: String },
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

impl List {
    /// Every list, in the order they are shown and stored.
    pub const ALL: [List; 5] = [
        List::Processes,
        List::Listening,
        List::OutboundPorts,
        List::OutboundIps,
        List::Dns,
    ];
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

    /// Entries in all lists.
    pub fn len(&self) -> usize {
        self.processes.len()
            + self.listening.len()
            + self.outbound_ports.len()
            + self.outbound_ips.len()
            + self.dns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
        for list in List::ALL {
            self.list_mut(list).retain(|_, o| *o == Origin::User);
        }
        self.state = ModelState::Learning {
            until: now.saturating_add(learning_secs),
        };
    }
}

fn list_tag(list: List) -> u8 {
    match list {
        List::Processes => b'p',
        List::Listening => b'l',
        List::OutboundPorts => b'o',
        List::OutboundIps => b'i',
        List::Dns => b'd',
    }
}

fn list_of_tag(tag: u8) -> Option<List> {
    List::ALL.into_iter().find(|l| list_tag(*l) == tag)
}

/// A model's header as stored: everything but its lists.
#[derive(Serialize)]
struct Header<'a> {
    image: &'a str,
    #[serde(flatten)]
    state: ModelState,
    created: i64,
}

/// The models in the runtime database.
pub struct ModelStore {
    tree: Tree,
    entries: Tree,
    path: String,
}

impl ModelStore {
    pub fn open(db: &RuntimeDb) -> Result<ModelStore, ModelError> {
        Ok(ModelStore {
            tree: db.tree("models")?,
            entries: db.tree("model-entries")?,
            path: db.path().display().to_string(),
        })
    }

    /// A stored model that does not read as one.
    fn err(&self, e: impl std::fmt::Display) -> ModelError {
        ModelError::Malformed {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// The key prefix of an image's entries: its length (so that no image's prefix is
    /// another's), then its bytes.
    fn prefix(image: &str) -> Vec<u8> {
        let len = u32::try_from(image.len()).unwrap_or(u32::MAX);
        let mut key = len.to_be_bytes().to_vec();
        key.extend_from_slice(image.as_bytes());
        key
    }

    fn entry_key(image: &str, list: List, value: &str) -> Vec<u8> {
        let mut key = Self::prefix(image);
        key.push(list_tag(list));
        key.extend_from_slice(value.as_bytes());
        key
    }

    /// Writes a model's header (its state); its entries are written one by one.
    pub fn save_header(&self, model: &Model) -> Result<(), ModelError> {
        let header = Header {
            image: &model.image,
            state: model.state,
            created: model.created,
        };
        let bytes = serde_json::to_vec(&header).map_err(|e| self.err(e))?;
        self.tree.insert(model.image.as_bytes(), &bytes)?;
        Ok(())
    }

    /// Writes one entry of `image`'s model.
    pub fn save_entry(
        &self,
        image: &str,
        list: List,
        value: &str,
        origin: Origin,
    ) -> Result<(), ModelError> {
        let origin: &[u8] = match origin {
            Origin::Learned => b"l",
            Origin::User => b"u",
        };
        self.entries
            .insert(&Self::entry_key(image, list, value), origin)?;
        Ok(())
    }

    /// Writes a whole model: its header, and its entries in place of those stored.
    pub fn save(&self, model: &Model) -> Result<(), ModelError> {
        let stored: Vec<Vec<u8>> = self
            .entries
            .scan_prefix(&Self::prefix(&model.image))
            .map(|item| item.map(|(key, _)| key))
            .collect::<Result<_, _>>()?;
        for key in stored {
            self.entries.remove(&key)?;
        }
        for list in List::ALL {
            for (value, origin) in model.list(list) {
                self.save_entry(&model.image, list, value, *origin)?;
            }
        }
        self.save_header(model)
    }

    /// A model from its header and its entries (moving lists that an earlier version
    /// kept in the header to entries).
    fn load(&self, bytes: &[u8]) -> Result<Model, ModelError> {
        let mut model: Model = serde_json::from_slice(bytes).map_err(|e| self.err(e))?;
        let legacy = !model.is_empty();
        for item in self.entries.scan_prefix(&Self::prefix(&model.image)) {
            let (key, origin) = item?;
            let rest = &key[Self::prefix(&model.image).len()..];
            let Some((&tag, value)) = rest.split_first() else {
                continue;
            };
            let (Some(list), Ok(value)) = (list_of_tag(tag), std::str::from_utf8(value)) else {
                return Err(self.err(format!(
                    "model {:?}: an entry that is not one: {key:?}",
                    model.image
                )));
            };
            let origin = match &origin[..] {
                b"u" => Origin::User,
                _ => Origin::Learned,
            };
            model.add(list, value, origin);
        }
        if legacy {
            self.save(&model)?;
        }
        Ok(model)
    }

    pub fn get(&self, image: &str) -> Result<Option<Model>, ModelError> {
        match self.tree.get(image.as_bytes())? {
            Some(bytes) => self
                .load(&bytes)
                .map(Some)
                .map_err(|e| self.err(format!("model {image:?}: {e}"))),
            None => Ok(None),
        }
    }

    pub fn all(&self) -> Result<Vec<Model>, ModelError> {
        let mut out = Vec::new();
        for item in self.tree.iter() {
            let (_, bytes) = item?;
            out.push(self.load(&bytes)?);
        }
        Ok(out)
    }

    pub fn flush(&self) -> Result<(), ModelError> {
        Ok(self.tree.flush()?)
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
        {
            let db = RuntimeDb::open(dir.path()).unwrap();
            let store = ModelStore::open(&db).unwrap();
            store.save(&m).unwrap();
            store.flush().unwrap();
        }
        let db = RuntimeDb::open(dir.path()).unwrap();
        let store = ModelStore::open(&db).unwrap();
        assert_eq!(store.get("nginx:1.27").unwrap(), Some(m));
        assert_eq!(store.all().unwrap().len(), 1);
        assert_eq!(store.get("other").unwrap(), None);
    }

    #[test]
    fn learning_writes_one_key_per_entry_and_old_models_are_moved_to_entries() {
        let dir = tempfile::tempdir().unwrap();
        let db = RuntimeDb::open(dir.path()).unwrap();
        let store = ModelStore::open(&db).unwrap();
        let mut m = Model::new("app:1", 1000, 3600);
        store.save_header(&m).unwrap();
        for n in 0..2_000 {
            let name = format!("host-{n}.example");
            m.add(List::Dns, &name, Origin::Learned);
            store
                .save_entry("app:1", List::Dns, &name, Origin::Learned)
                .unwrap();
        }
        // The header does not grow with the model: nothing rewrites the whole model.
        let header = store.tree.get(b"app:1").unwrap().unwrap();
        assert!(header.len() < 100, "{} bytes", header.len());
        assert_eq!(store.get("app:1").unwrap(), Some(m.clone()));
        // An image whose name is another's prefix keeps its own entries.
        let other = Model::new("app:1\0x", 1000, 3600);
        store.save(&other).unwrap();
        assert_eq!(store.get("app:1").unwrap().unwrap().dns.len(), 2_000);
        assert!(store.get("app:1\0x").unwrap().unwrap().is_empty());

        // A model as an earlier version stored it: lists inside the JSON.
        let mut old = Model::new("legacy:2", 1000, 3600);
        old.add(List::Processes, "/usr/bin/legacy", Origin::User);
        old.add(List::Listening, "tcp/80", Origin::Learned);
        store
            .tree
            .insert(b"legacy:2", &serde_json::to_vec(&old).unwrap())
            .unwrap();
        assert_eq!(store.get("legacy:2").unwrap(), Some(old.clone()));
        let header = store.tree.get(b"legacy:2").unwrap().unwrap();
        assert!(
            !String::from_utf8_lossy(&header).contains("legacy\""),
            "moved out of the header"
        );
        assert_eq!(store.get("legacy:2").unwrap(), Some(old));
        assert_eq!(store.all().unwrap().len(), 3);
    }
}
