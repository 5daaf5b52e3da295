//! The streaming verifier: the only way to obtain a [`VerifiedBundle`].
//!
//! One pass over the input (layout in `framing`): the head member gives the manifest and
//! its signature, which is checked against the trust store before the manifest is even
//! parsed; the payload member is inflated under size and ratio caps, and every entry in
//! it must be a regular file listed in the manifest, whose size and SHA-256 are checked
//! as it streams by. The pass ends only at the end of the input: the payload member's
//! own size and digest must match the manifest, and no byte may follow it. Any failure is
//! one [`VerifyError`] naming the rule broken; nothing is trusted before the whole input
//! has been read.
//!
//! What a caller does with entry bytes while they stream ([`verify_with_sink`]) is
//! unverified until this function returns `Ok`; `unpack` writes them to a temp dir.

use std::cell::Cell;
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read};
use std::rc::Rc;

use sha2::Digest;

use super::framing::{self, HeadError};
use super::keys::TrustStore;
use super::manifest::{check_path, kind_of_path};
use super::types::HashingReader;
use super::{
    FORMAT_VERSION, FeedKind, FileEntry, KeyId, MANIFEST_PATH, Manifest, SIGNATURE_PATH, Sequence,
    Sha256, Signature, Timestamp,
};

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

    /// One line for operators: what was verified and who vouches for it.
    pub fn summary(&self) -> String {
        let m = &self.manifest;
        format!(
            "sequence {} from {}, {} files, signed by {}, expires {}, sha256 {}",
            m.sequence,
            m.origin,
            m.files.len(),
            m.key_id,
            m.expires,
            self.sha256
        )
    }
}

/// Every rule a bundle can break.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("reading the bundle failed: {0}")]
    Read(io::Error),
    #[error("not a gzip file")]
    NotGzip,
    #[error("not in canonical form: {0}")]
    NonCanonical(&'static str),
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
    #[error(
        "payload member does not match the manifest (size {expected_size}, sha256 {expected}; found size {actual_size}, sha256 {actual})"
    )]
    PayloadMismatch {
        expected: Sha256,
        expected_size: u64,
        actual: Sha256,
        actual_size: u64,
    },
    #[error("writing entry {path} failed: {source}")]
    Sink { path: String, source: io::Error },
}

impl VerifyError {
    /// What the operator can do about it, for a command's `hint:` line.
    pub fn next_step(&self) -> &'static str {
        use VerifyError as E;
        match self {
            E::UntrustedKey { .. } => {
                "if you trust its signer, add the signer's public-key file (what `relay keys generate --public` wrote) to the trusted keys: [trust] keys of the relay (read again on SIGHUP) or of the agent, --trust for `bundle verify`"
            }
            E::BadSignature { .. } | E::KeyIdMismatch { .. } => {
                "the bundle was changed after it was signed, or signed wrongly: do not use it; fetch it again from its origin"
            }
            E::Expired { .. } => {
                "the origin has not published for too long: get a newer bundle from it (or check this host's clock)"
            }
            E::NotNewer { .. } => {
                "nothing to do: what is held is as new; to go back to an older bundle, reset the held sequence (`relay trust reset-sequence`)"
            }
            E::TooLarge { .. } | E::CompressionRatio { .. } | E::TooManyEntries { .. } => {
                "if a bundle this large is expected, raise the limit ([limits] max_uncompressed_bytes, max_entries or max_ratio in the relay's config)"
            }
            E::ManifestTooLarge { .. } => {
                "if a manifest this large is expected, raise [limits] max_manifest_bytes in the relay's config"
            }
            E::UnknownFormat { .. } | E::UnknownKind { .. } => {
                "the bundle is newer than this build: upgrade relay and defender-lite"
            }
            E::Read(_) | E::Sink { .. } => {
                "check the file or disk named above and run the command again"
            }
            _ => {
                "the file is damaged or not a bundle: fetch it again from its source (a partial download resumes)"
            }
        }
    }
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
    let mut input = Input::new(input, &state);
    let mut run = || {
        let (manifest_bytes, signature) = read_head(&mut input, limits)?;
        let manifest = authenticate(&manifest_bytes, &signature, trust, now, held, expiry)?;
        verify_payload(&mut input, &manifest, limits, sink)?;
        input.finish()?;
        Ok((manifest, manifest_bytes, signature))
    };
    let (manifest, manifest_bytes, signature) = run().map_err(|e| state.explain(e))?;
    Ok(VerifiedBundle {
        manifest,
        manifest_bytes,
        signature,
        sha256: Sha256::from_hasher(input.file_hasher),
        size: input.file_count,
        uncompressed: state.uncompressed.get(),
    })
}

/// Reads the manifest and signature without checking them against any key: for
/// `relay bundle inspect`. Nothing returned here is trusted.
pub fn inspect(input: impl Read, limits: &Limits) -> Result<(Manifest, Signature), VerifyError> {
    let state = Rc::new(State::default());
    let mut input = Input::new(input, &state);
    let (manifest_bytes, signature) =
        read_head(&mut input, limits).map_err(|e| state.explain(e))?;
    let manifest = parse_manifest(&manifest_bytes)?;
    Ok((manifest, signature))
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

/// Reads the head member and its two entries: the manifest bytes and the signature.
fn read_head<R: Read>(
    input: &mut Input<R>,
    limits: &Limits,
) -> Result<(Vec<u8>, Signature), Failure> {
    // Two tar headers, the manifest, the signature and their padding.
    let cap = limits.max_manifest + MAX_SIGNATURE_BYTES + 4 * 512;
    let head = framing::read_head(input, cap).map_err(|e| match e {
        HeadError::NotGzip => Failure::Rule(VerifyError::NotGzip),
        HeadError::NonCanonical(why) => Failure::Rule(VerifyError::NonCanonical(why)),
        HeadError::TooLarge { size } => Failure::Rule(VerifyError::ManifestTooLarge {
            size,
            limit: limits.max_manifest,
        }),
        HeadError::Corrupt(why) => Failure::Rule(VerifyError::Corrupt(why.into())),
        HeadError::Io(e) => Failure::Io(e),
    })?;
    let head_len = head.len() as u64;
    input.count_uncompressed(head_len, limits)?;
    let mut archive = tar::Archive::new(&head[..]);
    let mut entries = archive.entries().map_err(Failure::Io)?;
    let manifest_bytes = read_manifest(&mut entries, limits)?;
    let (signature, signature_len) = read_signature(&mut entries)?;
    // The head holds exactly these two entries and nothing else, not even padding.
    let expected = 2 * 512
        + (manifest_bytes.len() as u64).next_multiple_of(512)
        + signature_len.next_multiple_of(512);
    if head_len != expected {
        return Err(VerifyError::NonCanonical(
            "head holds more than manifest.json and manifest.sig",
        )
        .into());
    }
    Ok((manifest_bytes, signature))
}

/// Checks the signature, then parses the manifest and applies the rules it alone decides.
fn authenticate(
    manifest_bytes: &[u8],
    signature: &Signature,
    trust: &TrustStore,
    now: Timestamp,
    held: Option<Sequence>,
    expiry: ExpiryCheck,
) -> Result<Manifest, Failure> {
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
        .verify_strict(manifest_bytes, &sig)
        .map_err(|_| VerifyError::BadSignature {
            key_id: signature.key_id.clone(),
        })?;

    let manifest = parse_manifest(manifest_bytes)?;
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
    Ok(manifest)
}

/// Streams the payload member: every entry listed, regular, of the listed size and
/// digest; then the end-of-archive padding, the gzip trailer and the member's own size
/// and digest.
fn verify_payload<R: Read>(
    input: &mut Input<R>,
    manifest: &Manifest,
    limits: &Limits,
    sink: &mut EntrySink<'_>,
) -> Result<(), Failure> {
    input.start_member();
    let gz = flate2::bufread::GzDecoder::new(&mut *input);
    let mut archive = tar::Archive::new(Capped {
        inner: gz,
        limits: *limits,
    });
    let mut pending: HashMap<&str, &FileEntry> = manifest
        .files
        .iter()
        .map(|f| (f.path.as_str(), f))
        .collect();
    let mut seen = 2u64;
    for entry in archive.entries().map_err(Failure::Io)? {
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
    // The rest of the tar stream must be zero padding; reading to the end also makes
    // the decoder check the gzip CRC and length.
    let mut rest = archive.into_inner();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match rest.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Failure::Io(e)),
        };
        if buf[..n].iter().any(|&b| b != 0) {
            return Err(VerifyError::TrailingData.into());
        }
    }
    drop(rest);
    let (actual, actual_size) = input.member_digest();
    if actual != manifest.payload.sha256 || actual_size != manifest.payload.size {
        return Err(VerifyError::PayloadMismatch {
            expected: manifest.payload.sha256,
            expected_size: manifest.payload.size,
            actual,
            actual_size,
        }
        .into());
    }
    Ok(())
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

fn read_signature<R: Read>(entries: &mut Entries<'_, R>) -> Result<(Signature, u64), Failure> {
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
    let signature = serde_json::from_slice(&bytes)
        .map_err(|e| VerifyError::SignatureMalformed(e.to_string()))?;
    Ok((signature, size))
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
    uncompressed: Cell<u64>,
    compressed: Cell<u64>,
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
            Failure::Rule(e) => e,
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

    /// Adds inflated bytes to the total and checks the caps.
    fn count_uncompressed(&self, n: u64, limits: &Limits) -> Result<(), Violation> {
        let total = self.uncompressed.get() + n;
        self.uncompressed.set(total);
        let violation = if total > limits.max_uncompressed {
            Violation::TooLarge(limits.max_uncompressed)
        } else if total > RATIO_FLOOR && total / self.compressed.get().max(1) > limits.max_ratio {
            Violation::Ratio(limits.max_ratio)
        } else {
            return Ok(());
        };
        self.violation.set(Some(violation));
        Err(violation)
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

impl From<Violation> for Failure {
    fn from(v: Violation) -> Self {
        Failure::Rule(v.into())
    }
}

/// The input, buffered, with every byte hashed as it is *consumed* (not as it is read
/// ahead), so member boundaries are exact: the whole file's digest, and the current
/// member's digest.
struct Input<R> {
    inner: BufReader<Source<R>>,
    state: Rc<State>,
    file_hasher: sha2::Sha256,
    file_count: u64,
    member_hasher: sha2::Sha256,
    member_count: u64,
}

impl<R: Read> Input<R> {
    fn new(input: R, state: &Rc<State>) -> Self {
        let source = Source {
            inner: input,
            state: Rc::clone(state),
        };
        Self {
            inner: BufReader::with_capacity(1 << 16, source),
            state: Rc::clone(state),
            file_hasher: sha2::Sha256::new(),
            file_count: 0,
            member_hasher: sha2::Sha256::new(),
            member_count: 0,
        }
    }

    fn start_member(&mut self) {
        self.member_hasher = sha2::Sha256::new();
        self.member_count = 0;
    }

    fn member_digest(&mut self) -> (Sha256, u64) {
        let hasher = std::mem::take(&mut self.member_hasher);
        (Sha256::from_hasher(hasher), self.member_count)
    }

    fn count_uncompressed(&self, n: u64, limits: &Limits) -> Result<(), Violation> {
        self.state.count_uncompressed(n, limits)
    }

    /// No byte may follow the payload member.
    fn finish(&mut self) -> Result<(), Failure> {
        if self.inner.fill_buf().map_err(Failure::Io)?.is_empty() {
            Ok(())
        } else {
            Err(VerifyError::TrailingData.into())
        }
    }
}

impl<R: Read> Read for Input<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: Read> BufRead for Input<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        let buffered = self.inner.buffer();
        let amt = amt.min(buffered.len());
        self.file_hasher.update(&buffered[..amt]);
        self.member_hasher.update(&buffered[..amt]);
        self.file_count += amt as u64;
        self.member_count += amt as u64;
        self.state.compressed.set(self.file_count);
        self.inner.consume(amt);
    }
}

/// The raw input: records its end and keeps its errors for the report.
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
            Ok(n) => Ok(n),
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

/// The inflated payload, counted and capped in total size and compression ratio.
struct Capped<'a, R> {
    inner: flate2::bufread::GzDecoder<&'a mut Input<R>>,
    limits: Limits,
}

impl<R: Read> Read for Capped<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.inner
            .get_ref()
            .count_uncompressed(n as u64, &self.limits)
            .map_err(|_| io::Error::other("bundle limit exceeded"))?;
        Ok(n)
    }
}
