//! Atomic, durable file writes, the one way the workspace replaces a file whole: a temp file
//! in the target's directory is written, fsynced, renamed over the target, and the directory
//! fsynced. A reader sees the old file or the new one, never part of one; a failure before the
//! rename leaves the old file and no temp file (tempfile removes it).
//!
//! Used for keys, built bundles and their indexes and deltas, feed files and provenance,
//! certificates, credentials and tokens, the store's sidecars, the origin's state and the
//! agent's `state.json`.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Who may read the file written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Exactly this mode. The temp file is 0600 from its creation, so a secret (0600) is
    /// never readable by others, not even for an instant.
    Exactly(u32),
    /// 0666 less the umask, as a plain create makes it: what is no secret (bundles, feeds,
    /// indexes), so that a web server running as another user can serve it.
    Public,
}

/// Whether an existing file at the target may be replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    Replace,
    /// Refuse with [`io::ErrorKind::AlreadyExists`], even when another process creates the
    /// file while this one writes (the rename is a link that fails if the name is taken).
    Keep,
}

/// Replaces (or creates) `path` with `bytes`.
pub fn write(path: &Path, bytes: &[u8], access: Access) -> io::Result<()> {
    write_with(path, access, Existing::Replace, |out| out.write_all(bytes))
}

/// Creates `path` with what `fill` writes to it, buffered; `fill`'s error (or any I/O
/// error, converted) leaves nothing behind: no temp file, and no directory this call made
/// (the directory is made if missing).
pub fn write_with<T, E: From<io::Error>>(
    path: &Path,
    access: Access,
    existing: Existing,
    fill: impl FnOnce(&mut BufWriter<&mut File>) -> Result<T, E>,
) -> Result<T, E> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // The directories this call makes, deepest first, to take back on failure.
    let made: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
    let written = std::fs::create_dir_all(dir)
        .map_err(E::from)
        .and_then(|()| write_in(dir, path, access, existing, fill));
    if written.is_err() {
        for d in made {
            // Only an empty directory goes; one another process filled meanwhile stays.
            let _ = std::fs::remove_dir(d);
        }
    }
    written
}

fn write_in<T, E: From<io::Error>>(
    dir: &Path,
    path: &Path,
    access: Access,
    existing: Existing,
    fill: impl FnOnce(&mut BufWriter<&mut File>) -> Result<T, E>,
) -> Result<T, E> {
    let mut builder = tempfile::Builder::new();
    if access == Access::Public {
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let mut tmp = builder.tempfile_in(dir)?;
    let value = {
        let mut out = BufWriter::with_capacity(1 << 16, tmp.as_file_mut());
        let value = fill(&mut out)?;
        out.into_inner().map_err(|e| e.into_error())?;
        value
    };
    if let Access::Exactly(mode) = access {
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    tmp.as_file().sync_all()?;
    match existing {
        Existing::Replace => tmp.persist(path).map(drop),
        Existing::Keep => tmp.persist_noclobber(path).map(drop),
    }
    .map_err(|e| e.error)?;
    sync_dir(dir)?;
    Ok(value)
}

/// fsyncs a directory, making renames inside it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_file_is_replaced_whole_with_the_mode_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/key.pem");
        write(&path, b"one", Access::Exactly(0o600)).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        assert_eq!(mode(&path), 0o600);
        write(&path, b"two", Access::Exactly(0o644)).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(mode(&path), 0o644);
        // Nothing else is left in the directory.
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }

    #[test]
    fn public_files_are_0666_less_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bundle.tar.gz");
        write(&path, b"x", Access::Public).unwrap();
        // The umask of the test process is unknown; a plain create shows what it allows.
        let plain = dir.path().join("plain");
        File::create(&plain).unwrap();
        assert_eq!(mode(&path), mode(&plain));
    }

    #[test]
    fn keep_refuses_an_existing_file_and_a_failed_fill_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, b"held").unwrap();
        let refused = write_with(&path, Access::Exactly(0o600), Existing::Keep, |out| {
            out.write_all(b"new")
        })
        .unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::AlreadyExists);
        let failed: io::Result<()> = write_with(&path, Access::Public, Existing::Replace, |out| {
            out.write_all(b"half")?;
            Err(io::Error::other("the source broke"))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"held");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_failed_fill_takes_back_the_directories_it_made_and_only_those() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("held")).unwrap();
        let path = dir.path().join("held/new/deeper/bundle.tar.gz");
        let failed: io::Result<()> = write_with(&path, Access::Public, Existing::Replace, |_| {
            Err(io::Error::other("the feeds did not validate"))
        });
        assert!(failed.is_err());
        assert!(
            dir.path().join("held").is_dir(),
            "a directory it found stays"
        );
        assert!(!dir.path().join("held/new").exists(), "the ones it made go");
        write(&path, b"ok", Access::Public).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"ok");
    }
}
