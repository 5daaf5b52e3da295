//! The streaming verifier: the only way to obtain a [`VerifiedBundle`].
//!
//! One pass over the input: the gzip stream is inflated under size and ratio caps, the
//! first tar entry is the manifest, the second its signature, which is checked against
//! the trust store before the manifest is even parsed; every following entry must be a
//! regular file listed in the manifest, whose size and SHA-256 are checked as it streams
//! by. The pass ends only at the end of the input, so the gzip CRC, the length and the
//! absence of trailing bytes are checked too. Any failure is one [`VerifyError`] naming
//! the rule broken; nothing is trusted before the whole input has been read.
//!
//! What a caller does with entry bytes while they stream ([`verify_with_sink`]) is
//! unverified until this function returns `Ok`; `unpack` writes them to a temp dir.

use std::cell::Cell;
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read};
use std::rc::Rc;

use sha2::Digest;

use super::keys::TrustStore;
use super::manifest::{check_path, kind_of_path};
use super::types::HashingReader;
use super::{
    FORMAT_VERSION, FeedKind, FileEntry, KeyId, MANIFEST_PATH, Manifest, SIGNATURE_PATH, Sequence,
    Sha256, Signature, Timestamp,
};

/// The gzip header `relay bundle build` writes: no flags, mtime 0, default level, OS
/// unknown. Anything else is refused, so a bundle has exactly one byte form for its
/// content and a flipped header bit cannot pass.
pub const CANONICAL_GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// `manifest.sig` is tiny; anything larger is not one.
const MAX_SIGNATURE_BYTES: u64 = 4096;

/// The compression ratio is only judged past this much output, so tiny bundles (mostly
/// tar padding) are not mistaken for bombs.
const RATIO_FLOOR: u64 = 1 << 20;

/// Caps that bound the work and memory a bundle can cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Total uncompressed bytes (tar stream).
    pub max_uncompressed: u64,
    /// Tar entries, manifest and signature included.
    pub max_entries: u64,
    /// Uncompressed bytes per compressed byte.
    pub max_ratio: u64,
    /// Size of `manifest.json`.
    pub max_manifest: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_uncompressed: 2 << 30,
            max_entries: 100_000,
            max_ratio: 200,
            max_manifest: 1 << 20,
        }
    }
}

/// Whether expiry is enforced. Skipping it has a loud name on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpiryCheck {
    Enforce,
    DangerouslySkip,
}

/// A bundle that passed every rule. Only [`verify`] makes one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedBundle {
    manifest: Manifest,
    manifest_bytes: Vec<u8>,
    signature: Signature,
    sha256: Sha256,
    size: u64,
    uncompressed: u64,
}

impl VerifiedBundle {
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The exact signed bytes of `manifest.json`.
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.manifest_bytes
    }

    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// SHA-256 of the whole `.tar.gz`: its content address.
    pub fn sha256(&self) -> Sha256 {
        self.sha256
    }

    /// Size of the `.tar.gz` in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Size of the tar stream inside.
    pub fn uncompressed_size(&self) -> u64 {
        self.uncompressed
    }
}

/// Every rule a bundle can break.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("reading the bundle failed: {0}")]
    Read(io::Error),
    #[error("not a gzip file")]
    NotGzip,
    #[error("gzip header is not the canonical one (flags, mtime, extra fields or OS byte set)")]
    NonCanonicalGzip,
    #[error("bundle is truncated")]
    Truncated,
    #[error("bundle is corrupt: {0}")]
    Corrupt(String),
    #[error("data after the end of the bundle")]
    TrailingData,
    #[error("bundle is larger than {limit} bytes uncompressed")]
    TooLarge { limit: u64 },
    #[error("compression ratio exceeds {limit}:1 (gzip bomb?)")]
    CompressionRatio { limit: u64 },
    #[error("more than {limit} entries")]
    TooManyEntries { limit: u64 },
    #[error("first entry must be manifest.json, found {found}")]
    ManifestNotFirst { found: String },
    #[error("manifest.json is {size} bytes, the limit is {limit}")]
    ManifestTooLarge { size: u64, limit: u64 },
    #[error("second entry must be manifest.sig, found {found}")]
    SignatureMissing { found: String },
    #[error("manifest.sig is malformed: {0}")]
    SignatureMalformed(String),
    #[error("signed by key {key_id}, which is not trusted")]
    UntrustedKey { key_id: KeyId },
    #[error("signature by key {key_id} does not match manifest.json")]
    BadSignature { key_id: KeyId },
    #[error("manifest.json is malformed: {0}")]
    ManifestMalformed(String),
    #[error("unknown bundle format {format} (this build reads format {FORMAT_VERSION})")]
    UnknownFormat { format: u64 },
    #[error("file {path}: unknown feed kind {kind:?}")]
    UnknownKind { path: String, kind: String },
    #[error("manifest names key {manifest} but manifest.sig is by key {signature}")]
    KeyIdMismatch { manifest: KeyId, signature: KeyId },
    #[error("bundle expired at {expires} (now {now})")]
    Expired { expires: Timestamp, now: Timestamp },
    #[error("sequence {sequence} is not newer than the held sequence {held}")]
    NotNewer { sequence: Sequence, held: Sequence },
    #[error("entry {path:?}: unsafe path ({reason})")]
    UnsafePath { path: String, reason: &'static str },
    #[error("entry {path}: {kind} entries are not allowed, only regular files")]
    ForbiddenEntryType { path: String, kind: &'static str },
    #[error("entry {path} is not listed in the manifest")]
    NotInManifest { path: String },
    #[error("entry {path} appears more than once")]
    DuplicateEntry { path: String },
    #[error("file {path} is listed in the manifest but missing from the bundle")]
    MissingFile { path: String },
    #[error("file {path}: size mismatch (manifest {expected}, entry {actual})")]
    SizeMismatch {
        path: String,
        expected: u64,
        actual: u64,
    },
    #[error("file {path}: sha256 mismatch (manifest {expected}, content {actual})")]
    DigestMismatch {
        path: String,
        expected: Sha256,
        actual: Sha256,
    },
    #[error("writing entry {path} failed: {source}")]
    Sink { path: String, source: io::Error },
}

/// Verifies a bundle read from `input`: see the module docs for the rules. `held` is the
/// sequence already held for this origin (`None` to accept any, which an admin may
/// force).
pub fn verify(
    input: impl Read,
    trust: &TrustStore,
    limits: &Limits,
    now: Timestamp,
    held: Option<Sequence>,
) -> Result<VerifiedBundle, VerifyError> {
    verify_with_sink(
        input,
        trust,
        limits,
        now,
        held,
        ExpiryCheck::Enforce,
        &mut |_, data| io::copy(data, &mut io::sink()).map(drop),
    )
}

/// Receives each feed entry's bytes while they are verified. The bytes are unverified
/// until `verify_with_sink` returns `Ok`. The sink may leave bytes unread.
pub type EntrySink<'a> = dyn FnMut(&FileEntry, &mut dyn Read) -> io::Result<()> + 'a;

/// [`verify`], handing each feed entry's bytes to `sink` as they stream by.
pub fn verify_with_sink(
    input: impl Read,
    trust: &TrustStore,
    limits: &Limits,
    now: Timestamp,
    held: Option<Sequence>,
    expiry: ExpiryCheck,
    sink: &mut EntrySink<'_>,
) -> Result<VerifiedBundle, VerifyError> {
    let state = Rc::new(State::default());
    let mut stream = Stream::open(input, limits, &state)?;
    let result = verify_entries(&mut stream, trust, limits, now, held, expiry, sink);
    let (manifest, manifest_bytes, signature) = result.map_err(|e| state.explain(e))?;
    stream.finish().map_err(|e| state.explain(e))?;
    Ok(VerifiedBundle {
        manifest,
        manifest_bytes,
        signature,
        sha256: state.digest(),
        size: state.compressed.get(),
        uncompressed: state.uncompressed.get(),
    })
}

/// Reads the manifest and signature without checking them against any key: for
/// `relay bundle inspect`. Nothing returned here is trusted.
pub fn inspect(input: impl Read, limits: &Limits) -> Result<(Manifest, Signature), VerifyError> {
    let state = Rc::new(State::default());
    let mut stream = Stream::open(input, limits, &state)?;
    let result = (|| {
        let mut entries = stream.archive.entries().map_err(Failure::Io)?;
        let manifest_bytes = read_manifest(&mut entries, limits)?;
        let signature = read_signature(&mut entries)?;
        let manifest = parse_manifest(&manifest_bytes)?;
        Ok((manifest, signature))
    })();
    result.map_err(|e| state.explain(e))
}

/// A failure inside the pass: a rule broken, or an I/O error whose meaning depends on
/// what the reader layers recorded (see [`State::explain`]).
enum Failure {
    Rule(VerifyError),
    Io(io::Error),
}

impl From<VerifyError> for Failure {
    fn from(e: VerifyError) -> Self {
        Self::Rule(e)
    }
}

type Entries<'a, R> = tar::Entries<'a, R>;

#[allow(clippy::too_many_arguments)]
fn verify_entries<R: Read>(
    stream: &mut Stream<R>,
    trust: &TrustStore,
    limits: &Limits,
    now: Timestamp,
    held: Option<Sequence>,
    expiry: ExpiryCheck,
    sink: &mut EntrySink<'_>,
) -> Result<(Manifest, Vec<u8>, Signature), Failure> {
    let mut entries = stream.archive.entries().map_err(Failure::Io)?;
    let manifest_bytes = read_manifest(&mut entries, limits)?;
    let signature = read_signature(&mut entries)?;

    // Authenticate before parsing: untrusted JSON is never interpreted.
    let key = trust
        .get(&signature.key_id)
        .ok_or_else(|| VerifyError::UntrustedKey {
            key_id: signature.key_id.clone(),
        })?;
    let sig = signature
        .decode()
        .map_err(VerifyError::SignatureMalformed)?;
    key.verifying_key()
        .verify_strict(&manifest_bytes, &sig)
        .map_err(|_| VerifyError::BadSignature {
            key_id: signature.key_id.clone(),
        })?;

    let manifest = parse_manifest(&manifest_bytes)?;
    if manifest.key_id != signature.key_id {
        return Err(VerifyError::KeyIdMismatch {
            manifest: manifest.key_id.clone(),
            signature: signature.key_id.clone(),
        }
        .into());
    }
    if expiry == ExpiryCheck::Enforce && manifest.expires <= now {
        return Err(VerifyError::Expired {
            expires: manifest.expires,
            now,
        }
        .into());
    }
    if let Some(held) = held
        && manifest.sequence <= held
    {
        return Err(VerifyError::NotNewer {
            sequence: manifest.sequence,
            held,
        }
        .into());
    }

    let mut pending: HashMap<&str, &FileEntry> = manifest
        .files
        .iter()
        .map(|f| (f.path.as_str(), f))
        .collect();
    let mut seen = 2u64;
    for entry in entries.by_ref() {
        let mut entry = entry.map_err(Failure::Io)?;
        seen += 1;
        if seen > limits.max_entries {
            return Err(VerifyError::TooManyEntries {
                limit: limits.max_entries,
            }
            .into());
        }
        let path = entry_path(&entry)?;
        check_path(&path).map_err(|reason| VerifyError::UnsafePath {
            path: path.clone(),
            reason,
        })?;
        check_entry_type(&entry, &path)?;
        let Some(listed) = pending.remove(path.as_str()) else {
            return Err(if path == MANIFEST_PATH
                || path == SIGNATURE_PATH
                || manifest.files.iter().any(|f| f.path == path)
            {
                VerifyError::DuplicateEntry { path }
            } else {
                VerifyError::NotInManifest { path }
            }
            .into());
        };
        let size = entry.header().size().map_err(Failure::Io)?;
        if size != listed.size {
            return Err(VerifyError::SizeMismatch {
                path,
                expected: listed.size,
                actual: size,
            }
            .into());
        }
        let mut hashing = HashingReader::new(&mut entry);
        sink(listed, &mut hashing).map_err(|e| sink_failure(&path, e))?;
        io::copy(&mut hashing, &mut io::sink()).map_err(Failure::Io)?;
        if hashing.count != size {
            return Err(Failure::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        let actual = Sha256::from_hasher(hashing.hasher);
        if actual != listed.sha256 {
            return Err(VerifyError::DigestMismatch {
                path,
                expected: listed.sha256,
                actual,
            }
            .into());
        }
    }
    if let Some(missing) = manifest
        .files
        .iter()
        .find(|f| pending.contains_key(f.path.as_str()))
    {
        return Err(VerifyError::MissingFile {
            path: missing.path.clone(),
        }
        .into());
    }
    drop(pending);
    Ok((manifest, manifest_bytes, signature))
}

/// A sink's own write errors are the caller's; errors reading the entry are the bundle's.
fn sink_failure(path: &str, e: io::Error) -> Failure {
    if e.get_ref().is_some_and(|inner| inner.is::<SinkError>()) {
        Failure::Rule(VerifyError::Sink {
            path: path.to_owned(),
            source: e,
        })
    } else {
        Failure::Io(e)
    }
}

/// Wrap a sink's own I/O errors in this so they are reported as [`VerifyError::Sink`]
/// rather than as a corrupt bundle.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub io::Error);

fn read_manifest<R: Read>(
    entries: &mut Entries<'_, R>,
    limits: &Limits,
) -> Result<Vec<u8>, Failure> {
    let Some(entry) = entries.next() else {
        return Err(VerifyError::ManifestNotFirst {
            found: "an empty archive".into(),
        }
        .into());
    };
    let mut entry = entry.map_err(Failure::Io)?;
    let path = entry_path(&entry)?;
    if path != MANIFEST_PATH || entry.header().entry_type() != tar::EntryType::Regular {
        return Err(VerifyError::ManifestNotFirst { found: path }.into());
    }
    let size = entry.header().size().map_err(Failure::Io)?;
    if size > limits.max_manifest {
        return Err(VerifyError::ManifestTooLarge {
            size,
            limit: limits.max_manifest,
        }
        .into());
    }
    read_small(&mut entry, size)
}

fn read_signature<R: Read>(entries: &mut Entries<'_, R>) -> Result<Signature, Failure> {
    let Some(entry) = entries.next() else {
        return Err(VerifyError::SignatureMissing {
            found: "the end of the archive".into(),
        }
        .into());
    };
    let mut entry = entry.map_err(Failure::Io)?;
    let path = entry_path(&entry)?;
    if path != SIGNATURE_PATH || entry.header().entry_type() != tar::EntryType::Regular {
        return Err(VerifyError::SignatureMissing { found: path }.into());
    }
    let size = entry.header().size().map_err(Failure::Io)?;
    if size > MAX_SIGNATURE_BYTES {
        return Err(VerifyError::SignatureMalformed(format!("{size} bytes is too large")).into());
    }
    let bytes = read_small(&mut entry, size)?;
    Ok(serde_json::from_slice(&bytes)
        .map_err(|e| VerifyError::SignatureMalformed(e.to_string()))?)
}

fn read_small(entry: &mut impl Read, size: u64) -> Result<Vec<u8>, Failure> {
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    entry.read_to_end(&mut bytes).map_err(Failure::Io)?;
    if bytes.len() as u64 != size {
        return Err(Failure::Io(io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(bytes)
}

/// Parses signed manifest bytes: format first (so a newer format gets a clear error),
/// then kinds, then the strict structure and the path rules.
fn parse_manifest(bytes: &[u8]) -> Result<Manifest, VerifyError> {
    let malformed = |e: String| VerifyError::ManifestMalformed(e);
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
    let format = value
        .get("format")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| malformed("missing or non-numeric `format`".into()))?;
    if format != u64::from(FORMAT_VERSION) {
        return Err(VerifyError::UnknownFormat { format });
    }
    if let Some(files) = value.get("files").and_then(serde_json::Value::as_array) {
        for file in files {
            if let Some(kind) = file.get("kind").and_then(serde_json::Value::as_str)
                && kind.parse::<FeedKind>().is_err()
            {
                let path = file.get("path").and_then(serde_json::Value::as_str);
                return Err(VerifyError::UnknownKind {
                    path: path.unwrap_or("?").to_owned(),
                    kind: kind.to_owned(),
                });
            }
        }
    }
    let manifest: Manifest = serde_json::from_value(value).map_err(|e| malformed(e.to_string()))?;
    if manifest.created >= manifest.expires {
        return Err(malformed(format!(
            "expires {} is not after created {}",
            manifest.expires, manifest.created
        )));
    }
    let mut paths = std::collections::HashSet::new();
    for file in &manifest.files {
        check_path(&file.path).map_err(|reason| VerifyError::UnsafePath {
            path: file.path.clone(),
            reason,
        })?;
        if kind_of_path(&file.path) != Some(file.kind) {
            return Err(malformed(format!(
                "file {} must be at feeds/{}/<name>",
                file.path, file.kind
            )));
        }
        if !paths.insert(file.path.as_str()) {
            return Err(malformed(format!("file {} is listed twice", file.path)));
        }
    }
    Ok(manifest)
}

fn entry_path<R: Read>(entry: &tar::Entry<'_, R>) -> Result<String, VerifyError> {
    let raw = entry.path_bytes();
    String::from_utf8(raw.into_owned()).map_err(|e| VerifyError::UnsafePath {
        path: String::from_utf8_lossy(e.as_bytes()).into_owned(),
        reason: "not UTF-8",
    })
}

fn check_entry_type<R: Read>(entry: &tar::Entry<'_, R>, path: &str) -> Result<(), VerifyError> {
    use tar::EntryType as T;
    let kind = match entry.header().entry_type() {
        T::Regular => return Ok(()),
        T::Symlink => "symbolic link",
        T::Link => "hard link",
        T::Char => "character device",
        T::Block => "block device",
        T::Fifo => "fifo",
        T::Directory => "directory",
        T::Continuous => "contiguous file",
        _ => "special",
    };
    Err(VerifyError::ForbiddenEntryType {
        path: path.to_owned(),
        kind,
    })
}

/// What the reader layers observed, shared between them and the error mapping.
#[derive(Default)]
struct State {
    hasher: Cell<Option<sha2::Sha256>>,
    compressed: Cell<u64>,
    uncompressed: Cell<u64>,
    input_ended: Cell<bool>,
    violation: Cell<Option<Violation>>,
    input_error: Cell<Option<io::Error>>,
}

#[derive(Clone, Copy)]
enum Violation {
    TooLarge(u64),
    Ratio(u64),
}

impl State {
    /// Turns a failure into the rule it broke: a cap recorded by a reader layer wins,
    /// then an error of the input itself, then truncation, then corruption.
    fn explain(&self, failure: Failure) -> VerifyError {
        match failure {
            Failure::Rule(e) => {
                // A rule detected on bytes cut short by a cap reports the cap.
                match self.violation.get() {
                    Some(v) if matches!(e, VerifyError::DigestMismatch { .. }) => v.into(),
                    _ => e,
                }
            }
            Failure::Io(e) => {
                if let Some(v) = self.violation.get() {
                    return v.into();
                }
                if let Some(input) = self.input_error.take() {
                    return VerifyError::Read(input);
                }
                if self.input_ended.get() || e.kind() == io::ErrorKind::UnexpectedEof {
                    return VerifyError::Truncated;
                }
                VerifyError::Corrupt(e.to_string())
            }
        }
    }

    fn digest(&self) -> Sha256 {
        Sha256::from_hasher(self.hasher.take().unwrap_or_default())
    }
}

impl From<Violation> for VerifyError {
    fn from(v: Violation) -> Self {
        match v {
            Violation::TooLarge(limit) => VerifyError::TooLarge { limit },
            Violation::Ratio(limit) => VerifyError::CompressionRatio { limit },
        }
    }
}

/// The reader stack: input -> hash and count -> buffer -> gunzip -> count and cap -> tar.
struct Stream<R: Read> {
    archive: tar::Archive<
        Capped<flate2::bufread::GzDecoder<io::Chain<io::Cursor<[u8; 10]>, BufReader<Source<R>>>>>,
    >,
}

impl<R: Read> Stream<R> {
    fn open(input: R, limits: &Limits, state: &Rc<State>) -> Result<Self, VerifyError> {
        state.hasher.set(Some(sha2::Sha256::new()));
        let source = Source {
            inner: input,
            state: Rc::clone(state),
        };
        let mut buffered = BufReader::with_capacity(1 << 16, source);
        let mut header = [0u8; 10];
        let mut got = 0;
        while got < header.len() {
            match buffered.read(&mut header[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(state.explain(Failure::Io(e))),
            }
        }
        if got < 2 || header[..2] != CANONICAL_GZIP_HEADER[..2] {
            return Err(VerifyError::NotGzip);
        }
        if got < header.len() {
            return Err(VerifyError::Truncated);
        }
        if header != CANONICAL_GZIP_HEADER {
            return Err(VerifyError::NonCanonicalGzip);
        }
        let gz = flate2::bufread::GzDecoder::new(io::Cursor::new(header).chain(buffered));
        let capped = Capped {
            inner: gz,
            limits: *limits,
            state: Rc::clone(state),
        };
        let mut archive = tar::Archive::new(capped);
        archive.set_ignore_zeros(false);
        Ok(Self { archive })
    }

    /// Reads to the very end: the rest of the tar stream must be zero padding, the gzip
    /// trailer (CRC and length) must check, and no byte may follow it.
    fn finish(self) -> Result<(), Failure> {
        let mut capped = self.archive.into_inner();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match capped.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Failure::Io(e)),
            };
            if buf[..n].iter().any(|&b| b != 0) {
                return Err(VerifyError::TrailingData.into());
            }
        }
        let (_, mut buffered) = capped.inner.into_inner().into_inner();
        let rest = buffered.fill_buf().map_err(Failure::Io)?;
        if !rest.is_empty() {
            return Err(VerifyError::TrailingData.into());
        }
        Ok(())
    }
}

/// The input, hashed and counted as it is read.
struct Source<R> {
    inner: R,
    state: Rc<State>,
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(0) => {
                self.state.input_ended.set(true);
                Ok(0)
            }
            Ok(n) => {
                let mut hasher = self.state.hasher.take().unwrap_or_default();
                hasher.update(&buf[..n]);
                self.state.hasher.set(Some(hasher));
                self.state
                    .compressed
                    .set(self.state.compressed.get() + n as u64);
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                // Keep the real error for the report; the layers above see a generic one.
                let kind = e.kind();
                self.state.input_error.set(Some(e));
                Err(kind.into())
            }
        }
    }
}

/// The inflated stream, counted and capped in total size and compression ratio.
struct Capped<R> {
    inner: R,
    limits: Limits,
    state: Rc<State>,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let total = self.state.uncompressed.get() + n as u64;
        self.state.uncompressed.set(total);
        let violation = if total > self.limits.max_uncompressed {
            Some(Violation::TooLarge(self.limits.max_uncompressed))
        } else if total > RATIO_FLOOR
            && total / self.state.compressed.get().max(1) > self.limits.max_ratio
        {
            Some(Violation::Ratio(self.limits.max_ratio))
        } else {
            None
        };
        if let Some(v) = violation {
            self.state.violation.set(Some(v));
            return Err(io::Error::other("bundle limit exceeded"));
        }
        Ok(n)
    }
}
