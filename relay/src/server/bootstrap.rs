//! The zero-config start: what `relay serve` makes when it finds nothing. A data
//! directory; a dev CA and server certificate (when no certificate is configured); a
//! `reader` and an `admin` credential, printed once and stored hashed (when there is no
//! htpasswd file); and, when no trusted keys are configured, a local signing key and a
//! sample bundle built from the embedded sample feeds, served until a real one arrives.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::auth::{self, Role};
use crate::bundle::{self, BuildOptions, SecretKey, Sequence, TrustStore};
use crate::certs;
use crate::config::Config;

use super::{Relay, ServerError};

mod samples {
    include!(concat!(env!("OUT_DIR"), "/sample_feeds.rs"));
}

/// What `prepare` found or made.
pub struct Prepared {
    pub trust: TrustStore,
    /// The local key, when the relay signs its own sample bundle.
    pub sample_key: Option<SecretKey>,
    /// Credentials made now: shown once, never again.
    pub generated_users: Vec<(String, String)>,
    /// The dev CA certificate, when one was made now or earlier.
    pub dev_ca: Option<PathBuf>,
}

/// Makes what is missing. Blocking (files, bcrypt): call before serving.
pub fn prepare(config: &Config) -> Result<Prepared, ServerError> {
    let data = config.data_dir();
    std::fs::create_dir_all(data)
        .map_err(|e| ServerError::Other(format!("creating {}: {e}", data.display())))?;

    let mut dev_ca = None;
    if !config.listen.insecure_http && config.tls.cert.is_none() {
        let dir = data.join("tls");
        let files = certs::DevFiles::in_dir(&dir);
        if !files.server_cert.exists() || !files.server_key.exists() {
            certs::init(&dir, &certs::default_names(), 825, true)
                .map_err(|e| ServerError::Tls(e.to_string()))?;
        }
        dev_ca = files.ca_cert.exists().then_some(files.ca_cert);
    }

    let mut generated_users = Vec::new();
    let htpasswd = config.htpasswd();
    if config.auth.htpasswd.is_none() && !htpasswd.exists() {
        let roles = data.join("roles.toml");
        for (user, role) in [("reader", Role::Reader), ("admin", Role::Admin)] {
            let password = auth::random_password()?;
            auth::add_user(&htpasswd, &roles, user, &password, role)?;
            generated_users.push((user.to_owned(), password));
        }
    }

    let (trust, sample_key) = if config.trust.keys.is_empty() {
        let key = local_key(&data.join("keys"))?;
        (TrustStore::new([key.public()]), Some(key))
    } else {
        let trust = TrustStore::load(&config.trust.keys)
            .map_err(|e| ServerError::Other(format!("trusted keys: {e}")))?;
        (trust, None)
    };
    Ok(Prepared {
        trust,
        sample_key,
        generated_users,
        dev_ca,
    })
}

/// Loads the local signing key, making it on first start.
fn local_key(dir: &Path) -> Result<SecretKey, ServerError> {
    let secret = dir.join("local.pem");
    let public = dir.join("local.pub");
    let err = |e: bundle::KeyError| ServerError::Other(format!("local signing key: {e}"));
    if secret.exists() {
        return SecretKey::load(&secret).map_err(err);
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| ServerError::Other(format!("creating {}: {e}", dir.display())))?;
    let key = SecretKey::generate().map_err(err)?;
    key.save(&secret, false).map_err(err)?;
    key.public().save(&public, true).map_err(err)?;
    Ok(key)
}

/// When the store holds nothing, builds the sample bundle with `key` and makes it
/// current. Its sequence is 0, so any real bundle replaces it.
pub async fn install_sample(relay: &Arc<Relay>, key: &SecretKey) -> Result<bool, ServerError> {
    if relay.store.current().is_some() {
        return Ok(false);
    }
    let other = |e: &dyn std::fmt::Display| ServerError::Other(format!("sample bundle: {e}"));
    let feeds = tempfile::tempdir().map_err(|e| other(&e))?;
    for (rel, bytes) in samples::SAMPLE_FEEDS {
        let path = feeds.path().join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| other(&e))?;
        }
        std::fs::write(&path, bytes).map_err(|e| other(&e))?;
    }
    let now = super::now();
    let options = BuildOptions {
        sequence: Sequence(0),
        origin: "relay-sample".into(),
        created: now,
        expires: now.saturating_add(std::time::Duration::from_secs(365 * 24 * 3600)),
    };
    let mut temp = relay.store.incoming_file().map_err(|e| other(&e))?;
    bundle::build(
        feeds.path(),
        key,
        &options,
        std::io::BufWriter::new(temp.as_file_mut()),
    )
    .map_err(|e| other(&e))?;
    temp.as_file().sync_all().map_err(|e| other(&e))?;
    let file = std::fs::File::open(temp.path()).map_err(|e| other(&e))?;
    let verified = bundle::verify(
        std::io::BufReader::new(file),
        &relay.trust(),
        &relay.limits,
        now,
        None,
    )
    .map_err(|e| other(&e))?;
    relay
        .store
        .commit(verified, temp.into_temp_path(), "sample", now)
        .await?;
    Ok(true)
}
