//! The store on its own: start-up repair (damaged current file, orphans, missing files)
//! and the rebuild of unreadable metadata from the bundle files.

#![allow(clippy::unwrap_used)]

use crate::support;

use std::fs;
use std::path::Path;
use std::sync::Arc;

use relay::bundle::{self, Limits, Sha256, Timestamp};
use relay::store::{Store, StoreSettings};
use support::server::fresh_bundle;

fn settings(dir: &Path) -> StoreSettings {
    StoreSettings {
        dir: dir.to_owned(),
        retention: 3,
        memory_cache_bytes: 1 << 20,
        sled_cache_bytes: 1 << 20,
    }
}

fn open(dir: &Path) -> (Arc<Store>, Vec<String>) {
    let (store, notes) = Store::open(settings(dir), &support::trust(), &Limits::default()).unwrap();
    (Arc::new(store), notes)
}

async fn commit(store: &Arc<Store>, bytes: &[u8]) {
    let mut temp = store.incoming_file().unwrap();
    std::io::Write::write_all(temp.as_file_mut(), bytes).unwrap();
    let v = bundle::verify(
        bytes,
        &support::trust(),
        &Limits::default(),
        Timestamp::now(),
        None,
    )
    .unwrap();
    store
        .commit(v, temp.into_temp_path(), "test", Timestamp::now())
        .await
        .unwrap();
}

fn current(store: &Store) -> Option<Sha256> {
    store.current().map(|c| c.record.sha256)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_current_file_falls_back_to_the_newest_intact_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (fresh_bundle(1), fresh_bundle(2));
    {
        let (store, _) = open(dir.path());
        commit(&store, &a).await;
        commit(&store, &b).await;
        assert_eq!(current(&store), Some(Sha256::of(&b)));
    }
    // Damage the current file in place, same size.
    let path = dir.path().join("blobs").join(Sha256::of(&b).to_hex());
    let mut bytes = fs::read(&path).unwrap();
    bytes[100] ^= 0xff;
    fs::write(&path, bytes).unwrap();
    let (store, notes) = open(dir.path());
    assert_eq!(current(&store), Some(Sha256::of(&a)));
    assert!(
        notes.iter().any(|n| n.contains("missing or damaged")),
        "{notes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_and_leftovers_are_removed_and_lost_files_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (fresh_bundle(1), fresh_bundle(2));
    {
        let (store, _) = open(dir.path());
        commit(&store, &a).await;
        commit(&store, &b).await;
    }
    fs::write(dir.path().join("blobs/deadbeef"), b"orphan").unwrap();
    fs::write(dir.path().join("incoming/bundle-half"), b"half an upload").unwrap();
    fs::remove_file(dir.path().join("blobs").join(Sha256::of(&a).to_hex())).unwrap();
    let (store, notes) = open(dir.path());
    assert!(!dir.path().join("blobs/deadbeef").exists());
    assert_eq!(
        fs::read_dir(dir.path().join("incoming")).unwrap().count(),
        0
    );
    assert!(
        notes.iter().any(|n| n.contains("lost its file")),
        "{notes:?}"
    );
    assert_eq!(store.held_all().unwrap().len(), 1);
    assert_eq!(current(&store), Some(Sha256::of(&b)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_metadata_is_rebuilt_from_the_bundle_files() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (fresh_bundle(1), fresh_bundle(2));
    {
        let (store, _) = open(dir.path());
        commit(&store, &a).await;
        commit(&store, &b).await;
    }
    // Replace the sled directory with something sled cannot open.
    fs::remove_dir_all(dir.path().join("meta")).unwrap();
    fs::write(dir.path().join("meta"), b"not a database").unwrap();
    let (store, notes) = open(dir.path());
    assert!(
        notes
            .iter()
            .any(|n| n.contains("rebuilt from the bundle files")),
        "{notes:?}"
    );
    assert_eq!(current(&store), Some(Sha256::of(&b)));
    assert_eq!(store.held_all().unwrap().len(), 2);
    assert_eq!(fs::read(&store.current().unwrap().path).unwrap(), b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_refuse_older_sequences() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    commit(&store, &fresh_bundle(5)).await;
    let older = fresh_bundle(4);
    let mut temp = store.incoming_file().unwrap();
    std::io::Write::write_all(temp.as_file_mut(), &older).unwrap();
    let v = bundle::verify(
        &older[..],
        &support::trust(),
        &Limits::default(),
        Timestamp::now(),
        None,
    )
    .unwrap();
    let err = store
        .commit(v, temp.into_temp_path(), "t", Timestamp::now())
        .await
        .unwrap_err();
    assert!(
        matches!(err, relay::store::StoreError::NotNewer { .. }),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_in_use_is_refused_not_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    commit(&store, &fresh_bundle(1)).await;
    fs::write(
        dir.path().join("incoming/bundle-in-flight"),
        b"an upload in progress",
    )
    .unwrap();
    let err = Store::open(settings(dir.path()), &support::trust(), &Limits::default())
        .err()
        .unwrap();
    assert!(
        matches!(err, relay::store::StoreError::InUse { .. }),
        "{err}"
    );
    // Nothing of the live store was touched.
    assert!(dir.path().join("incoming/bundle-in-flight").exists());
    assert!(dir.path().join("meta").is_dir());
    assert_eq!(
        current(&store),
        Some(Sha256::of(&fresh_bundle_digest_of(&store)))
    );
}

fn fresh_bundle_digest_of(store: &Store) -> Vec<u8> {
    fs::read(&store.current().unwrap().path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_keeps_vendor_archives() {
    let dir = tempfile::tempdir().unwrap();
    let archive = {
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        tar.append_data(&mut h, "feed.json", &b"{}\n"[..]).unwrap();
        support::gzip(&tar.into_inner().unwrap())
    };
    {
        let (store, _) = open(dir.path());
        commit(&store, &fresh_bundle(1)).await;
        let info = relay::archive::check(&archive[..], &Limits::default(), None).unwrap();
        let mut temp = store.incoming_file().unwrap();
        std::io::Write::write_all(temp.as_file_mut(), &archive).unwrap();
        store
            .commit_archive(
                "vendor",
                &info,
                temp.into_temp_path(),
                "test",
                Timestamp::now(),
            )
            .await
            .unwrap();
    }
    fs::remove_dir_all(dir.path().join("meta")).unwrap();
    fs::write(dir.path().join("meta"), b"not a database").unwrap();
    let (store, notes) = open(dir.path());
    assert!(notes.iter().any(|n| n.contains("rebuilt")), "{notes:?}");
    let (record, path) = store.archive("vendor").unwrap().unwrap();
    assert_eq!(record.sha256, Sha256::of(&archive));
    assert_eq!(fs::read(path).unwrap(), archive);
    assert!(store.current().is_some());
}
