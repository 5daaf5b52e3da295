//! rpm: `rpmdb.sqlite` (RHEL 9, Fedora 33+, Amazon Linux 2023, Rocky/Alma 9...), at
//! `var/lib/rpm/` or `usr/lib/sysimage/rpm/`. Its `Packages` table holds one rpm header
//! blob per installed package; the header is parsed here: an index of (tag, type, offset,
//! count) entries and a data store, big-endian. NAME, VERSION, RELEASE, EPOCH, ARCH and
//! SOURCERPM are read; `gpg-pubkey` pseudo-packages are skipped.
//!
//! The database is streamed from the image into SQLite's memory (`sqlite3_deserialize`),
//! never written to disk, and opened read-only with defensive settings; a WAL-mode header
//! is presented as rollback mode, which a read-only in-memory database needs. Frames still
//! in an `rpmdb.sqlite-wal` file are not applied (noted). The Berkeley DB (`Packages`,
//! RHEL 8 and older) and NDB (`Packages.db`, SUSE) formats are found and reported as
//! unreadable, never silently skipped.

use std::io::{self, Read};

use rusqlite::{Connection, OpenFlags, config::DbConfig};

use super::{Collector, DatabaseKind, Package};
use crate::image::{FileStream, ImageError};

const SQLITE_PATHS: [&str; 2] = [
    "var/lib/rpm/rpmdb.sqlite",
    "usr/lib/sysimage/rpm/rpmdb.sqlite",
];
const LEGACY_PATHS: [(&str, &str); 4] = [
    ("var/lib/rpm/Packages", "Berkeley DB"),
    ("usr/lib/sysimage/rpm/Packages", "Berkeley DB"),
    ("var/lib/rpm/Packages.db", "NDB"),
    ("usr/lib/sysimage/rpm/Packages.db", "NDB"),
];
const MAX_DB: u64 = 1 << 30;
const MAX_HEADER: usize = 64 << 20;
const MAX_ROWS: usize = 1_000_000;

const TAG_NAME: u32 = 1000;
const TAG_VERSION: u32 = 1001;
const TAG_RELEASE: u32 = 1002;
const TAG_EPOCH: u32 = 1003;
const TAG_ARCH: u32 = 1022;
const TAG_SOURCERPM: u32 = 1044;

const TYPE_INT32: u32 = 4;
const TYPE_STRING: u32 = 6;
const TYPE_I18NSTRING: u32 = 9;

pub(crate) fn read(c: &mut Collector<'_>) -> Result<(), ImageError> {
    let ecosystem =
        c.os.as_ref()
            .map_or_else(|| "rpm".to_owned(), |os| os.rpm_ecosystem());
    let mut seen: Vec<String> = Vec::new();
    for path in SQLITE_PATHS {
        let Some(entry) = c.image.metadata(path)? else {
            continue;
        };
        let resolved = entry.path.to_owned();
        if seen.contains(&resolved) {
            continue; // var/lib/rpm is often a link to usr/lib/sysimage/rpm
        }
        seen.push(resolved.clone());
        let mut outcome: Option<Result<Vec<Header>, String>> = None;
        c.image.stream_each(&[path], |_, stream| {
            outcome = Some(match stream {
                Ok(stream) => read_sqlite(stream),
                Err(e) => Err(e.to_string()),
            });
        })?;
        match outcome {
            Some(Ok(headers)) => {
                let packages = headers
                    .into_iter()
                    .filter(|h| h.name != "gpg-pubkey")
                    .map(|h| h.into_package(&ecosystem, &resolved))
                    .collect();
                c.read_ok(DatabaseKind::Rpm, &resolved, packages);
            }
            Some(Err(reason)) => c.unreadable(DatabaseKind::Rpm, &resolved, reason),
            None => c.unreadable(DatabaseKind::Rpm, &resolved, "not a regular file".into()),
        }
        let wal = format!("{resolved}-wal");
        if let Some(wal_entry) = c.image.metadata(&wal)?
            && wal_entry.size > 0
        {
            c.note(format!(
                "{wal}: {} bytes of write-ahead log not applied; packages changed by the \
                 last rpm transaction may be missing",
                wal_entry.size
            ));
        }
    }
    for (path, format) in LEGACY_PATHS {
        let Some(entry) = c.image.metadata(path)? else {
            continue;
        };
        let resolved = entry.path.to_owned();
        if seen.contains(&resolved) {
            continue;
        }
        seen.push(resolved.clone());
        c.unreadable(
            DatabaseKind::Rpm,
            &resolved,
            format!("{format} rpm databases are not supported; its packages are not listed"),
        );
    }
    Ok(())
}

/// The fields of an rpm header the inventory uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub name: String,
    pub version: String,
    pub release: String,
    pub epoch: Option<u32>,
    pub arch: Option<String>,
    pub source_rpm: Option<String>,
}

impl Header {
    /// `[epoch:]version-release`.
    pub fn evr(&self) -> String {
        let vr = if self.release.is_empty() {
            self.version.clone()
        } else {
            format!("{}-{}", self.version, self.release)
        };
        match self.epoch {
            Some(epoch) => format!("{epoch}:{vr}"),
            None => vr,
        }
    }

    pub(super) fn into_package(self, ecosystem: &str, declared_in: &str) -> Package {
        let version = self.evr();
        let (source_name, source_version) =
            match self.source_rpm.as_deref().and_then(split_source_rpm) {
                Some((name, vr)) => (
                    name.to_owned(),
                    match self.epoch {
                        Some(epoch) => format!("{epoch}:{vr}"),
                        None => vr.to_owned(),
                    },
                ),
                None => (self.name.clone(), version.clone()),
            };
        Package {
            ecosystem: ecosystem.to_owned(),
            name: self.name,
            version,
            source_name: Some(source_name),
            source_version: Some(source_version),
            declared_in: declared_in.to_owned(),
            found_by: DatabaseKind::Rpm,
        }
    }
}

/// `openssl-3.0.7-24.el9.src.rpm` -> ("openssl", "3.0.7-24.el9").
fn split_source_rpm(file: &str) -> Option<(&str, &str)> {
    let stem = file
        .strip_suffix(".src.rpm")
        .or_else(|| file.strip_suffix(".nosrc.rpm"))?;
    let (name_version, _release) = stem.rsplit_once('-')?;
    let (name, _version) = name_version.rsplit_once('-')?;
    let vr = &stem[name.len() + 1..];
    (!name.is_empty()).then_some((name, vr))
}

/// Streams an rpmdb.sqlite into an in-memory, read-only SQLite database and parses every
/// header in its `Packages` table.
fn read_sqlite(stream: &mut FileStream<'_>) -> Result<Vec<Header>, String> {
    let len = stream.len();
    if len > MAX_DB {
        return Err(format!("{len} bytes, over the {MAX_DB}-byte cap"));
    }
    if len < 100 {
        return Err("too short to be an SQLite database".into());
    }
    let mut head = vec![0u8; 100];
    stream
        .read_exact(&mut head)
        .map_err(|e| format!("reading: {e}"))?;
    if !head.starts_with(b"SQLite format 3\0") {
        return Err("not an SQLite database".into());
    }
    // Bytes 18 and 19 are the write and read format versions: 2 means WAL, which an
    // in-memory database cannot use. 1 (rollback journal) reads the same pages.
    for byte in &mut head[18..20] {
        if *byte == 2 {
            *byte = 1;
        }
    }
    let size = usize::try_from(len).map_err(|_| "too large".to_owned())?;
    let sql_err = |e: rusqlite::Error| format!("sqlite: {e}");
    let mut conn = Connection::open_with_flags(
        ":memory:",
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql_err)?;
    // Defensive settings for a database that may be hostile: no schema-defined functions,
    // no writes to the schema.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)
        .map_err(sql_err)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)
        .map_err(sql_err)?;
    let reader = io::Cursor::new(head).chain(stream);
    conn.deserialize_read_exact("main", reader, size, true)
        .map_err(sql_err)?;
    // Only a real table: a view could make the query below run without end.
    let kind: String = conn
        .query_row(
            "SELECT type FROM sqlite_schema WHERE name = 'Packages'",
            [],
            |row| row.get(0),
        )
        .map_err(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => "no Packages table".to_owned(),
            e => sql_err(e),
        })?;
    if kind != "table" {
        return Err(format!("Packages is a {kind}, not a table"));
    }
    let mut statement = conn
        .prepare("SELECT hnum, blob FROM Packages")
        .map_err(sql_err)?;
    let mut rows = statement.query([]).map_err(sql_err)?;
    let mut headers = Vec::new();
    let mut count = 0usize;
    while let Some(row) = rows.next().map_err(sql_err)? {
        count += 1;
        if count > MAX_ROWS {
            return Err(format!("more than {MAX_ROWS} packages"));
        }
        let hnum: i64 = row.get(0).map_err(sql_err)?;
        let blob = row.get_ref(1).map_err(sql_err)?;
        let bytes = blob
            .as_blob()
            .map_err(|_| format!("package {hnum}: header is not a blob"))?;
        headers.push(parse_header(bytes).map_err(|e| format!("package {hnum}: {e}"))?);
    }
    Ok(headers)
}

/// Parses an rpm header blob as rpmdb stores it: entry count and data length (big-endian
/// u32 each), then 16-byte index entries, then the data store. A leading header magic
/// (8e ad e8 01 + 4 reserved bytes), as in package files, is accepted too.
pub(crate) fn parse_header(blob: &[u8]) -> Result<Header, String> {
    if blob.len() > MAX_HEADER {
        return Err("header too large".into());
    }
    let blob = match blob {
        [0x8e, 0xad, 0xe8, 0x01, _, _, _, _, rest @ ..] => rest,
        _ => blob,
    };
    let count = be32(blob, 0).ok_or("truncated header")? as usize;
    let data_len = be32(blob, 4).ok_or("truncated header")? as usize;
    let index_end = count
        .checked_mul(16)
        .and_then(|n| n.checked_add(8))
        .filter(|&n| n <= blob.len())
        .ok_or("header index runs past the blob")?;
    let data = blob
        .get(index_end..index_end.checked_add(data_len).ok_or("bad data length")?)
        .ok_or("header data runs past the blob")?;
    let mut header = Header {
        name: String::new(),
        version: String::new(),
        release: String::new(),
        epoch: None,
        arch: None,
        source_rpm: None,
    };
    for i in 0..count {
        let at = 8 + i * 16;
        let (Some(tag), Some(kind), Some(offset), Some(n)) = (
            be32(blob, at),
            be32(blob, at + 4),
            be32(blob, at + 8),
            be32(blob, at + 12),
        ) else {
            return Err("truncated index entry".into());
        };
        let offset = offset as usize;
        match (tag, kind) {
            (
                TAG_NAME | TAG_VERSION | TAG_RELEASE | TAG_ARCH | TAG_SOURCERPM,
                TYPE_STRING | TYPE_I18NSTRING,
            ) => {
                let value = c_string(data, offset)
                    .ok_or_else(|| format!("tag {tag}: string outside the data"))?;
                match tag {
                    TAG_NAME => header.name = value,
                    TAG_VERSION => header.version = value,
                    TAG_RELEASE => header.release = value,
                    TAG_ARCH => header.arch = Some(value),
                    _ => header.source_rpm = Some(value),
                }
            }
            (TAG_EPOCH, TYPE_INT32) if n >= 1 => {
                header.epoch = Some(be32(data, offset).ok_or("tag 1003: epoch outside the data")?);
            }
            _ => {}
        }
    }
    if header.name.is_empty() || header.version.is_empty() {
        return Err("header has no name or version".into());
    }
    Ok(header)
}

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    let raw = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(raw.try_into().ok()?))
}

/// The NUL-terminated UTF-8 string at `offset` (lossy: rpm headers are not always UTF-8).
fn c_string(data: &[u8], offset: usize) -> Option<String> {
    let rest = data.get(offset..)?;
    let end = rest.iter().position(|b| *b == 0)?;
    Some(String::from_utf8_lossy(&rest[..end]).into_owned())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a header blob as rpmdb stores it, from (tag, type, data) entries.
    pub(crate) fn header_blob(entries: &[(u32, u32, Vec<u8>)]) -> Vec<u8> {
        let mut index = Vec::new();
        let mut data = Vec::new();
        for (tag, kind, bytes) in entries {
            if *kind == TYPE_INT32 {
                while data.len() % 4 != 0 {
                    data.push(0);
                }
            }
            index.extend_from_slice(&tag.to_be_bytes());
            index.extend_from_slice(&kind.to_be_bytes());
            index.extend_from_slice(&(data.len() as u32).to_be_bytes());
            index.extend_from_slice(&1u32.to_be_bytes());
            data.extend_from_slice(bytes);
        }
        let mut blob = Vec::new();
        blob.extend_from_slice(&(entries.len() as u32).to_be_bytes());
        blob.extend_from_slice(&(data.len() as u32).to_be_bytes());
        blob.extend(index);
        blob.extend(data);
        blob
    }

    fn string(tag: u32, value: &str) -> (u32, u32, Vec<u8>) {
        let mut bytes = value.as_bytes().to_vec();
        bytes.push(0);
        (tag, TYPE_STRING, bytes)
    }

    #[test]
    fn headers() {
        let blob = header_blob(&[
            string(TAG_NAME, "openssl-libs"),
            string(TAG_VERSION, "3.0.7"),
            string(TAG_RELEASE, "24.el9"),
            (TAG_EPOCH, TYPE_INT32, 1u32.to_be_bytes().to_vec()),
            string(TAG_SOURCERPM, "openssl-3.0.7-24.el9.src.rpm"),
        ]);
        let header = parse_header(&blob).unwrap();
        assert_eq!(header.evr(), "1:3.0.7-24.el9");
        let package = header.into_package("Red Hat", "var/lib/rpm/rpmdb.sqlite");
        assert_eq!(package.source_name.as_deref(), Some("openssl"));
        assert_eq!(package.source_version.as_deref(), Some("1:3.0.7-24.el9"));

        // Truncations and lies about offsets are errors, never panics.
        for cut in 0..blob.len() {
            let _ = parse_header(&blob[..cut]);
        }
        let mut lying = blob.clone();
        lying[8 + 8..8 + 12].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(parse_header(&lying).is_err());
        assert!(parse_header(&header_blob(&[string(TAG_NAME, "x")])).is_err());
    }

    #[test]
    fn source_rpm_names() {
        assert_eq!(
            split_source_rpm("openssl-3.0.7-24.el9.src.rpm"),
            Some(("openssl", "3.0.7-24.el9"))
        );
        assert_eq!(
            split_source_rpm("python3.11-pip-22.3.1-4.el9.nosrc.rpm"),
            Some(("python3.11-pip", "22.3.1-4.el9"))
        );
        assert_eq!(split_source_rpm("nodash.src.rpm"), None);
        assert_eq!(split_source_rpm("a-1.src"), None);
    }
}
