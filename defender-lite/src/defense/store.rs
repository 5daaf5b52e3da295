//! The runtime database, `<data_dir>/runtime.sled`: the learned models (`model.rs`) and
//! the audits (`audit.rs`), in sled. This is the one file that uses sled; the rest of the
//! agent sees [`RuntimeDb`], [`Tree`] and [`StoreError`].
//!
//! sled allows one process at a time. So that a second one (a `model` or `audits` command
//! while the monitor runs) is told so plainly, the database is opened under a lock of our
//! own, `runtime.sled.lock` beside it, taken without waiting: held by another process, it
//! is [`StoreError::Locked`], told apart by the lock's error kind rather than by the
//! wording of sled's. The lock goes with the process, however it ends.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The database's directory, under the data directory.
pub const DB_NAME: &str = "runtime.sled";

/// How long sled may take to release a database this process closed (its flusher wakes
/// every 500 ms).
const SLED_RELEASE: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "{} is locked by another process, most likely the running `defender-lite monitor` \
         (its database allows one process at a time): stop the monitor, or read its audit \
         file, to use this command",
        path.display()
    )]
    Locked { path: PathBuf },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("runtime database {}: {source}", path.display())]
    Sled {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
}

/// The open runtime database.
pub struct RuntimeDb {
    db: sled::Db,
    path: Arc<PathBuf>,
    /// Held while the database is open.
    _lock: File,
}

impl RuntimeDb {
    /// Opens (or creates) `<data_dir>/runtime.sled`, creating the data directory if need
    /// be.
    pub fn open(data_dir: &Path) -> Result<RuntimeDb, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::Io {
            path: data_dir.to_owned(),
            source,
        })?;
        Self::open_at(&data_dir.join(DB_NAME))
    }

    /// Opens (or creates) the database at `path`.
    pub fn open_at(path: &Path) -> Result<RuntimeDb, StoreError> {
        let mut lock_path = path.as_os_str().to_owned();
        lock_path.push(".lock");
        let lock_path = PathBuf::from(lock_path);
        let io = |source| StoreError::Io {
            path: lock_path.clone(),
            source,
        };
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked {
                    path: path.to_owned(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        // Holding our lock, no other RuntimeDb has this database open. sled keeps its own
        // file lock until its background flusher notices the Db was dropped (up to half a
        // second later), so a database this process has just closed can still refuse to
        // open: try again for a little while before giving its error.
        let deadline = std::time::Instant::now() + SLED_RELEASE;
        let db = loop {
            match sled::open(path) {
                Ok(db) => break db,
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(25));
                }
                Err(source) => return Err(sled_error(path, source)),
            }
        };
        Ok(RuntimeDb {
            db,
            path: Arc::new(path.to_owned()),
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tree `name`, created if it is not there.
    pub fn tree(&self, name: &str) -> Result<Tree, StoreError> {
        let tree = self.db.open_tree(name).map_err(|e| self.err(e))?;
        Ok(Tree {
            tree,
            path: Arc::clone(&self.path),
        })
    }

    /// Writes everything to disk.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(drop).map_err(|e| self.err(e))
    }

    /// [`RuntimeDb::flush`], without blocking the runtime's thread.
    pub async fn flush_async(&self) -> Result<(), StoreError> {
        self.db
            .flush_async()
            .await
            .map(drop)
            .map_err(|e| self.err(e))
    }

    fn err(&self, source: sled::Error) -> StoreError {
        sled_error(&self.path, source)
    }
}

/// A key-value tree of the database, ordered by key bytes.
#[derive(Clone)]
pub struct Tree {
    tree: sled::Tree,
    path: Arc<PathBuf>,
}

/// A key and its value.
pub type Item = (Vec<u8>, Vec<u8>);

impl Tree {
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.tree
            .get(key)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| self.err(e))
    }

    pub fn insert(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.tree
            .insert(key, value)
            .map(drop)
            .map_err(|e| self.err(e))
    }

    pub fn remove(&self, key: &[u8]) -> Result<(), StoreError> {
        self.tree.remove(key).map(drop).map_err(|e| self.err(e))
    }

    /// Every item whose key starts with `prefix`, in key order.
    pub fn scan_prefix(
        &self,
        prefix: &[u8],
    ) -> impl Iterator<Item = Result<Item, StoreError>> + '_ {
        self.items(self.tree.scan_prefix(prefix))
    }

    /// Every item whose key is `start` or after, in key order.
    pub fn from_key(&self, start: &[u8]) -> impl Iterator<Item = Result<Item, StoreError>> + '_ {
        self.items(self.tree.range(start.to_vec()..))
    }

    /// Every item, in key order.
    pub fn iter(&self) -> impl Iterator<Item = Result<Item, StoreError>> + '_ {
        self.items(self.tree.iter())
    }

    pub fn flush(&self) -> Result<(), StoreError> {
        self.tree.flush().map(drop).map_err(|e| self.err(e))
    }

    fn items(&self, iter: sled::Iter) -> impl Iterator<Item = Result<Item, StoreError>> + '_ {
        iter.map(|item| {
            item.map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(|e| self.err(e))
        })
    }

    fn err(&self, source: sled::Error) -> StoreError {
        sled_error(&self.path, source)
    }
}

fn sled_error(path: &Path, source: sled::Error) -> StoreError {
    StoreError::Sled {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_opener_is_told_the_database_is_locked_and_the_first_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = RuntimeDb::open(dir.path()).unwrap();
        let tree = db.tree("t").unwrap();
        tree.insert(b"k", b"v").unwrap();
        match RuntimeDb::open(dir.path()) {
            Err(StoreError::Locked { path }) => assert_eq!(path, dir.path().join(DB_NAME)),
            Err(e) => panic!("not Locked: {e}"),
            Ok(_) => panic!("opened twice"),
        }
        assert_eq!(tree.get(b"k").unwrap(), Some(b"v".to_vec()));
        db.flush().unwrap();
        drop(tree);
        drop(db);
        let again = RuntimeDb::open(dir.path()).unwrap();
        assert_eq!(
            again.tree("t").unwrap().get(b"k").unwrap(),
            Some(b"v".to_vec())
        );
    }

    #[test]
    fn trees_iterate_in_key_order_by_prefix_and_from_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let db = RuntimeDb::open(dir.path()).unwrap();
        let tree = db.tree("t").unwrap();
        for k in [&b"b2"[..], b"a1", b"b1", b"c1"] {
            tree.insert(k, k).unwrap();
        }
        let keys = |it: Vec<Result<Item, StoreError>>| -> Vec<Vec<u8>> {
            it.into_iter().map(|i| i.unwrap().0).collect()
        };
        assert_eq!(
            keys(tree.scan_prefix(b"b").collect()),
            vec![b"b1".to_vec(), b"b2".to_vec()]
        );
        assert_eq!(
            keys(tree.from_key(b"b2").collect()),
            vec![b"b2".to_vec(), b"c1".to_vec()]
        );
        tree.remove(b"a1").unwrap();
        assert_eq!(tree.iter().count(), 3);
    }
}
