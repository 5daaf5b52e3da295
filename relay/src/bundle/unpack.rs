//! Unpacks a bundle into a directory atomically: entries stream into a temp directory
//! beside the destination while they are verified, and only a bundle that verified in
//! full is renamed into place. The destination must not exist yet; callers that keep a
//! "current" directory unpack to a fresh path and switch a pointer to it.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::keys::TrustStore;
use super::verify::{
    ExpiryCheck, Limits, SinkError, VerifiedBundle, VerifyError, verify_with_sink,
};
use super::{MANIFEST_PATH, SIGNATURE_PATH, Sequence, Timestamp};

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error("{path} already exists")]
    Exists { path: PathBuf },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// Verifies `input` and writes its files (and `manifest.json`, `manifest.sig`) under
/// `dest`, which must not exist. On any failure nothing is left at `dest`.
pub fn unpack(
    input: impl Read,
    dest: &Path,
    trust: &TrustStore,
    limits: &Limits,
    now: Timestamp,
    held: Option<Sequence>,
) -> Result<VerifiedBundle, UnpackError> {
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| UnpackError::Io { path, source }
    };
    if fs::symlink_metadata(dest).is_ok() {
        return Err(UnpackError::Exists {
            path: dest.to_owned(),
        });
    }
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(parent)
        .map_err(io_err(parent))?;
    let root = tmp.path().to_owned();
    let verified = verify_with_sink(
        input,
        trust,
        limits,
        now,
        held,
        ExpiryCheck::Enforce,
        &mut |entry, data| {
            // `entry.path` passed the format's path rules (relative, no `..`), so it
            // cannot leave `root`.
            let path = root.join(&entry.path);
            write_entry(&path, data)
        },
    )?;
    write_file(&root.join(MANIFEST_PATH), verified.manifest_bytes()).map_err(io_err(&root))?;
    let signature = serde_json::to_vec_pretty(verified.signature()).map_err(io::Error::other);
    write_file(
        &root.join(SIGNATURE_PATH),
        &signature.map_err(io_err(&root))?,
    )
    .map_err(io_err(&root))?;
    sync_dirs(&root).map_err(io_err(&root))?;
    let kept = tmp.keep();
    fs::rename(&kept, dest).map_err(|e| {
        let _ = fs::remove_dir_all(&kept);
        UnpackError::Io {
            path: dest.to_owned(),
            source: e,
        }
    })?;
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(io_err(parent))?;
    Ok(verified)
}

fn write_entry(path: &Path, data: &mut dyn Read) -> io::Result<()> {
    let sink = |e: io::Error| io::Error::other(SinkError(e));
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(sink)?;
    }
    let mut file = File::create_new(path).map_err(sink)?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        // Errors reading `data` are the bundle's; errors writing are ours.
        let n = match data.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        file.write_all(&buf[..n]).map_err(sink)?;
    }
    file.sync_all().map_err(sink)
}

fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = File::create_new(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// fsyncs every directory under `root`, so the renamed tree is durable.
fn sync_dirs(root: &Path) -> io::Result<()> {
    for entry in fs::read_dir(root)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            sync_dirs(&entry.path())?;
        }
    }
    File::open(root)?.sync_all()
}
