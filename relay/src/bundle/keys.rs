//! ed25519 signing keys and the trust store.
//!
//! Secret keys are PKCS#8 PEM files written with mode 0600. Public keys are one line,
//! `ed25519 <key-id> <base64 raw key>`, where the key id is the first 16 hex digits of the
//! SHA-256 of the raw key. A [`TrustStore`] is a set of public keys; anything that
//! trusts keys accepts a list of public-key files.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, spki::der::pem::LineEnding};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

use super::KeyId;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} already exists (use --force to overwrite it)")]
    Exists { path: PathBuf },
    #[error("{path}: not an ed25519 PKCS#8 PEM secret key: {reason}")]
    BadSecret { path: PathBuf, reason: String },
    #[error("{path}: not an ed25519 public key line (`ed25519 <key-id> <base64>`): {reason}")]
    BadPublic { path: PathBuf, reason: String },
    #[error("could not read randomness from the operating system: {0}")]
    Random(String),
    #[error("no trusted keys given")]
    NoTrustedKeys,
}

/// A secret signing key. Its `Debug` never prints the key.
pub struct SecretKey(SigningKey);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({}, ***)", self.key_id())
    }
}

impl SecretKey {
    /// A new key from the operating system's random source.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self(SigningKey::from_bytes(&seed)))
    }

    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&seed))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    pub fn key_id(&self) -> KeyId {
        self.public().key_id()
    }

    pub fn sign(&self, message: &[u8]) -> ed25519_dalek::Signature {
        self.0.sign(message)
    }

    pub fn to_pem(&self) -> Result<String, KeyError> {
        self.0
            .to_pkcs8_pem(LineEnding::LF)
            .map(|pem| pem.to_string())
            .map_err(|e| KeyError::BadSecret {
                path: PathBuf::new(),
                reason: e.to_string(),
            })
    }

    pub fn from_pem(path: &Path, pem: &str) -> Result<Self, KeyError> {
        SigningKey::from_pkcs8_pem(pem)
            .map(Self)
            .map_err(|e| KeyError::BadSecret {
                path: path.to_owned(),
                reason: e.to_string(),
            })
    }

    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let pem = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_pem(path, &pem)
    }

    /// Writes the key as PKCS#8 PEM with mode 0600. An existing file is kept unless
    /// `overwrite` is set; then it is replaced atomically (temp file and rename), so a
    /// crash never leaves half a key.
    pub fn save(&self, path: &Path, overwrite: bool) -> Result<(), KeyError> {
        write_file(path, self.to_pem()?.as_bytes(), 0o600, overwrite)
    }
}

/// An ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.key_id())
    }
}

impl PublicKey {
    pub fn key_id(&self) -> KeyId {
        KeyId::of_public_key(self.0.as_bytes())
    }

    /// The one-line public-key file form, without the trailing newline.
    pub fn to_line(&self) -> String {
        format!(
            "ed25519 {} {}",
            self.key_id(),
            base64::engine::general_purpose::STANDARD.encode(self.0.as_bytes())
        )
    }

    /// Parses the one-line form. The key id written in the line must match the key.
    pub fn from_line(path: &Path, text: &str) -> Result<Self, KeyError> {
        let bad = |reason: String| KeyError::BadPublic {
            path: path.to_owned(),
            reason,
        };
        let mut fields = text.split_whitespace();
        let (Some(alg), Some(id), Some(b64), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(bad("expected exactly three fields".into()));
        };
        if alg != "ed25519" {
            return Err(bad(format!("unknown algorithm {alg:?}")));
        }
        let id: KeyId = id.parse().map_err(bad)?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| bad(format!("key is not base64: {e}")))?;
        let raw: [u8; 32] = raw
            .try_into()
            .map_err(|v: Vec<u8>| bad(format!("key is {} bytes, expected 32", v.len())))?;
        let key = VerifyingKey::from_bytes(&raw).map_err(|e| bad(e.to_string()))?;
        let key = Self(key);
        if key.key_id() != id {
            return Err(bad(format!(
                "key id {id} does not match the key (its id is {})",
                key.key_id()
            )));
        }
        Ok(key)
    }

    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_line(path, &text)
    }

    /// Writes the one-line form (mode 0644).
    pub fn save(&self, path: &Path, overwrite: bool) -> Result<(), KeyError> {
        write_file(
            path,
            format!("{}\n", self.to_line()).as_bytes(),
            0o644,
            overwrite,
        )
    }

    /// Checks `signature` over `message` (strict ed25519), e.g. a manifest served on its
    /// own by a relay.
    pub fn verify(&self, message: &[u8], signature: &super::Signature) -> Result<(), String> {
        if signature.key_id != self.key_id() {
            return Err(format!(
                "signed by key {}, not {}",
                signature.key_id,
                self.key_id()
            ));
        }
        let sig = signature.decode()?;
        self.0
            .verify_strict(message, &sig)
            .map_err(|_| "signature does not match".to_owned())
    }

    pub(crate) fn verifying_key(&self) -> &VerifyingKey {
        &self.0
    }
}

/// The keys whose signatures are accepted.
#[derive(Clone, Debug, Default)]
pub struct TrustStore {
    keys: BTreeMap<KeyId, PublicKey>,
}

impl TrustStore {
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> Self {
        Self {
            keys: keys.into_iter().map(|k| (k.key_id(), k)).collect(),
        }
    }

    /// Loads public-key files; at least one is required.
    pub fn load<P: AsRef<Path>>(paths: &[P]) -> Result<Self, KeyError> {
        if paths.is_empty() {
            return Err(KeyError::NoTrustedKeys);
        }
        let keys = paths
            .iter()
            .map(|p| PublicKey::load(p.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::new(keys))
    }

    pub fn get(&self, id: &KeyId) -> Option<&PublicKey> {
        self.keys.get(id)
    }

    /// These keys and `key` (an origin trusts its own signing key).
    pub fn with(&self, key: PublicKey) -> Self {
        let mut keys = self.keys.clone();
        keys.insert(key.key_id(), key);
        Self { keys }
    }
}

/// Writes `bytes` to `path` through a temp file in the same directory: the result is
/// either the whole new file or (on failure) nothing new.
fn write_file(path: &Path, bytes: &[u8], mode: u32, overwrite: bool) -> Result<(), KeyError> {
    use super::durable::{Access, Existing};

    if !overwrite && path.exists() {
        return Err(KeyError::Exists {
            path: path.to_owned(),
        });
    }
    let existing = if overwrite {
        Existing::Replace
    } else {
        Existing::Keep
    };
    super::durable::write_with(path, Access::Exactly(mode), existing, |out| {
        out.write_all(bytes)
    })
    .map_err(|source| {
        // Keep fails if another process created the file meanwhile.
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            KeyError::Exists {
                path: path.to_owned(),
            }
        } else {
            KeyError::Io {
                path: path.to_owned(),
                source,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_line_round_trip_and_id_check() {
        let key = SecretKey::from_seed([7; 32]);
        let line = key.public().to_line();
        let p = Path::new("k.pub");
        assert_eq!(PublicKey::from_line(p, &line).unwrap(), key.public());
        let other = SecretKey::from_seed([8; 32]).public().to_line();
        let mixed = format!(
            "ed25519 {} {}",
            key.key_id(),
            other.split(' ').nth(2).unwrap()
        );
        let err = PublicKey::from_line(p, &mixed).unwrap_err().to_string();
        assert!(err.contains("does not match"), "{err}");
        assert!(PublicKey::from_line(p, "rsa x y").is_err());
    }

    #[test]
    fn pem_round_trip() {
        let key = SecretKey::from_seed([9; 32]);
        let pem = key.to_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let back = SecretKey::from_pem(Path::new("k"), &pem).unwrap();
        assert_eq!(back.public(), key.public());
        assert!(format!("{key:?}").contains("***"));
    }
}
