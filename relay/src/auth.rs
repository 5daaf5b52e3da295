//! Who may do what: basic auth against an htpasswd file (bcrypt only, as `htpasswd -B`
//! writes it), bearer access tokens (stored as SHA-256 digests), roles, a cache of
//! verified credentials so bcrypt does not run per request, and a per-address limit on
//! failed attempts.
//!
//! Secrets never leave this module: the cache is keyed by a digest of the
//! `Authorization` header, and nothing here logs a credential.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use crate::bundle::Sha256;

/// What a principal may do; each role includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Reader,
    Uploader,
    Admin,
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "reader" => Ok(Self::Reader),
            "uploader" => Ok(Self::Uploader),
            "admin" => Ok(Self::Admin),
            _ => Err(format!("unknown role {s:?} (reader, uploader, admin)")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {reason}")]
    BadLine {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{0}")]
    Invalid(String),
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Option<Role>,
    pub via: Via,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Password,
    Token,
}

/// The outcome of checking a request's credentials.
#[derive(Debug)]
pub enum Decision {
    Allowed(Principal),
    /// No or wrong credentials: answer 401 with `WWW-Authenticate`.
    Unauthorized,
    /// Authenticated, but the role does not allow this.
    Forbidden(Principal),
    /// Too many failures for this user from this address, or too many checks of this
    /// address in flight: answer 429 with `Retry-After`.
    RateLimited {
        retry_after: Duration,
    },
}

/// Users from an htpasswd file, tokens, and roles: everything that a reload replaces.
#[derive(Debug, Default)]
pub struct Credentials {
    users: HashMap<String, String>,
    tokens: Vec<(String, [u8; 32])>,
    roles: BTreeMap<String, Role>,
}

impl Credentials {
    /// Loads the htpasswd and tokens files (each may be absent: no users, no tokens) and
    /// the roles: `config_roles` merged with the roles file, the higher role winning.
    pub fn load(
        htpasswd: &Path,
        tokens: &Path,
        roles_file: &Path,
        config_roles: &BTreeMap<String, Role>,
    ) -> Result<Self, AuthError> {
        let users = match read_optional(htpasswd)? {
            Some(text) => parse_htpasswd(htpasswd, &text)?,
            None => HashMap::new(),
        };
        let tokens = match read_optional(tokens)? {
            Some(text) => parse_tokens(tokens, &text)?,
            None => Vec::new(),
        };
        let mut roles = config_roles.clone();
        if let Some(text) = read_optional(roles_file)? {
            for (user, role) in parse_roles(roles_file, &text)? {
                let entry = roles.entry(user).or_insert(role);
                *entry = (*entry).max(role);
            }
        }
        Ok(Self {
            users,
            tokens,
            roles,
        })
    }
}

/// Settings of an [`Authenticator`].
#[derive(Clone, Debug)]
pub struct AuthSettings {
    pub realm: String,
    pub cache_ttl: Duration,
    pub max_failures: u32,
    pub failure_window: Duration,
    pub lockout: Duration,
}

/// Checks credentials; shared by every connection.
pub struct Authenticator {
    credentials: RwLock<Arc<Credentials>>,
    settings: AuthSettings,
    cache: Mutex<HashMap<[u8; 32], CacheEntry>>,
    /// Failures per (address, claimed user): one client's guesses lock out that user from
    /// that address, never the other users behind the same NAT or proxy.
    failures: Mutex<HashMap<(IpAddr, Box<str>), Failures>>,
    /// Credential checks (bcrypt or token) in flight per address: one client with many
    /// HTTP/2 streams cannot queue minutes of hashing ahead of everyone else.
    in_flight: Arc<crate::per_address::PerAddress>,
    /// bcrypt is slow on purpose; bound how many run at once so a burst of logins cannot
    /// starve the blocking pool.
    bcrypt_slots: Semaphore,
    /// Checks under way, by the digest of the credential's header: the second check of a
    /// credential waits for the first (see `check`).
    pending: Mutex<HashMap<[u8; 32], Arc<tokio::sync::Mutex<()>>>>,
    /// Bumped by every reload: a check that began before a reload never caches (or
    /// admits) what the reload revoked.
    generation: std::sync::atomic::AtomicU64,
}

/// Checks of one address's credentials that may run at once; more get 429.
const MAX_IN_FLIGHT_PER_ADDRESS: usize = 2;

/// A credential's turn to be checked; the next check of it may start when this drops.
struct CredentialTurn<'a> {
    auth: &'a Authenticator,
    key: [u8; 32],
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for CredentialTurn<'_> {
    fn drop(&mut self) {
        self.guard = None;
        let mut pending = lock(&self.auth.pending);
        // Only the map holds it now: nobody waits for this credential; forget it.
        if pending
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            pending.remove(&self.key);
        }
    }
}

/// What one verification found.
enum Verified<P = Principal> {
    Principal(P),
    Failed,
    /// The lockout began while this check waited for a bcrypt slot.
    LockedOut(Duration),
}

struct CacheEntry {
    principal: Principal,
    expires: Instant,
}

struct Failures {
    window_start: Instant,
    count: u32,
    locked_until: Option<Instant>,
}

/// Entries kept in the verified-credential cache before it is swept.
const CACHE_MAX: usize = 10_000;

impl Authenticator {
    pub fn new(credentials: Credentials, settings: AuthSettings) -> Self {
        Self {
            credentials: RwLock::new(Arc::new(credentials)),
            settings,
            cache: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            in_flight: crate::per_address::PerAddress::new(MAX_IN_FLIGHT_PER_ADDRESS),
            pending: Mutex::new(HashMap::new()),
            bcrypt_slots: Semaphore::new(4),
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn realm(&self) -> &str {
        &self.settings.realm
    }

    /// Replaces users, tokens and roles (SIGHUP) and forgets cached verifications.
    pub fn replace(&self, credentials: Credentials) {
        let mut current = self
            .credentials
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *current = Arc::new(credentials);
        // Under the write lock: a check reads the generation with the credentials it uses.
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        lock(&self.cache).clear();
    }

    /// The credentials now, and the generation they belong to.
    fn credentials(&self) -> (Arc<Credentials>, u64) {
        let current = self
            .credentials
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (
            Arc::clone(&current),
            self.generation.load(std::sync::atomic::Ordering::SeqCst),
        )
    }

    /// Decides whether a request with this `Authorization` header, from `client`, may do
    /// what `need` allows.
    ///
    /// A header verified before (cached) is admitted without looking at lockouts: it is
    /// proven, and costs nothing. Otherwise the lockout of (address, claimed user) is
    /// checked before and again after waiting for a bcrypt slot, and at most
    /// [`MAX_IN_FLIGHT_PER_ADDRESS`] checks of one address run at once.
    pub async fn check(
        &self,
        authorization: Option<&[u8]>,
        client: IpAddr,
        need: Role,
    ) -> Decision {
        let now = Instant::now();
        let Some(header) = authorization else {
            return Decision::Unauthorized;
        };
        let key = Sha256::of(header).0;
        let principal = match self.cached_principal(&key, now) {
            Some(p) => p,
            None => {
                let who = claimed_user(header);
                if let Some(retry_after) = self.locked_out(client, &who, now) {
                    return Decision::RateLimited { retry_after };
                }
                // One verification per credential at a time: a fleet behind one NAT that
                // starts at once with the same credential waits for the first check, then
                // finds it cached, instead of each one hashing (or being refused).
                let _turn = self.credential_turn(key).await;
                if let Some(p) = self.cached_principal(&key, Instant::now()) {
                    return decide(p, need);
                }
                let Some(_in_flight) = self.in_flight.enter(client) else {
                    return Decision::RateLimited {
                        retry_after: Duration::from_secs(1),
                    };
                };
                match self.verify_current(header, client, &who).await {
                    Verified::Principal(p) => {
                        self.remember(key, &p.0, p.1, now);
                        p.0
                    }
                    Verified::Failed => {
                        // The name is the peer's: logged as a string (quoted, escaped).
                        tracing::warn!(
                            target: "relay::auth",
                            %client,
                            user = who.as_str(),
                            "authentication failed"
                        );
                        self.record_failure(client, &who, Instant::now());
                        return Decision::Unauthorized;
                    }
                    Verified::LockedOut(retry_after) => {
                        return Decision::RateLimited { retry_after };
                    }
                }
            }
        };
        decide(principal, need)
    }

    /// The decision for a header verified before and still cached, made at once, without
    /// waiting, verifying or counting anything: what [`check`](Self::check) decides for
    /// it. `None` when it is not cached: only `check` can decide then.
    pub fn cached(&self, authorization: &[u8], need: Role) -> Option<Decision> {
        let key = Sha256::of(authorization).0;
        self.cached_principal(&key, Instant::now())
            .map(|p| decide(p, need))
    }

    /// The principal a cached verification of the header with digest `key` found, unless
    /// it expired by `now`.
    fn cached_principal(&self, key: &[u8; 32], now: Instant) -> Option<Principal> {
        lock(&self.cache)
            .get(key)
            .filter(|e| e.expires > now)
            .map(|e| e.principal.clone())
    }

    /// Waits for this credential's turn: checks of one credential (by the digest of its
    /// header) run one at a time.
    async fn credential_turn(&self, key: [u8; 32]) -> CredentialTurn<'_> {
        let same = Arc::clone(lock(&self.pending).entry(key).or_default());
        CredentialTurn {
            auth: self,
            key,
            guard: Some(same.lock_owned().await),
        }
    }

    /// Verifies against the credentials in force when it ends: a reload while bcrypt ran
    /// means the check is done again with the new ones.
    async fn verify_current(
        &self,
        header: &[u8],
        client: IpAddr,
        who: &str,
    ) -> Verified<(Principal, u64)> {
        loop {
            let (credentials, generation) = self.credentials();
            let result = self.verify(header, &credentials, client, who).await;
            if self.generation.load(std::sync::atomic::Ordering::SeqCst) != generation {
                continue;
            }
            return match result {
                Verified::Principal(p) => Verified::Principal((p, generation)),
                Verified::Failed => Verified::Failed,
                Verified::LockedOut(d) => Verified::LockedOut(d),
            };
        }
    }

    /// Caches a verified principal, unless a reload happened since it was verified.
    fn remember(&self, key: [u8; 32], principal: &Principal, generation: u64, now: Instant) {
        let mut cache = lock(&self.cache);
        if self.generation.load(std::sync::atomic::Ordering::SeqCst) != generation {
            return;
        }
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, e| e.expires > now);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(
            key,
            CacheEntry {
                principal: principal.clone(),
                expires: now + self.settings.cache_ttl,
            },
        );
    }

    async fn verify(
        &self,
        header: &[u8],
        credentials: &Credentials,
        client: IpAddr,
        who: &str,
    ) -> Verified {
        match self.verify_inner(header, credentials, client, who).await {
            Ok(Some(p)) => Verified::Principal(p),
            Ok(None) => Verified::Failed,
            Err(retry_after) => Verified::LockedOut(retry_after),
        }
    }

    /// `Ok(None)` when the credential is wrong; `Err` when a lockout began while waiting.
    async fn verify_inner(
        &self,
        header: &[u8],
        credentials: &Credentials,
        client: IpAddr,
        who: &str,
    ) -> Result<Option<Principal>, Duration> {
        let Some((scheme, value)) = std::str::from_utf8(header)
            .ok()
            .and_then(|h| h.split_once(' '))
        else {
            return Ok(None);
        };
        if scheme.eq_ignore_ascii_case("bearer") {
            let digest = Sha256::of(value.trim().as_bytes()).0;
            // Compare with every token, in constant time, without stopping early.
            let mut found = None;
            for (name, stored) in &credentials.tokens {
                if bool::from(stored.ct_eq(&digest)) {
                    found = Some(name.clone());
                }
            }
            return Ok(found.map(|name| Principal {
                name,
                role: Some(Role::Reader),
                via: Via::Token,
            }));
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return Ok(None);
        }
        let Some((user, password)) = decode_basic(value) else {
            return Ok(None);
        };
        // An unknown user costs a bcrypt run too, so timing does not reveal which
        // users exist.
        let hash = credentials
            .users
            .get(&user)
            .cloned()
            .unwrap_or_else(|| UNKNOWN_USER_HASH.to_owned());
        let known = credentials.users.contains_key(&user);
        let Ok(_slot) = self.bcrypt_slots.acquire().await else {
            return Ok(None);
        };
        // The wait may have been long: guesses that failed meanwhile count now.
        if let Some(retry_after) = self.locked_out(client, who, Instant::now()) {
            return Err(retry_after);
        }
        let ok =
            tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false);
        Ok((ok && known).then(|| Principal {
            role: credentials.roles.get(&user).copied(),
            name: user,
            via: Via::Password,
        }))
    }

    fn locked_out(&self, client: IpAddr, who: &str, now: Instant) -> Option<Duration> {
        let failures = lock(&self.failures);
        let until = failures.get(&(client, Box::from(who)))?.locked_until?;
        (until > now).then(|| until - now)
    }

    fn record_failure(&self, client: IpAddr, who: &str, now: Instant) {
        let mut failures = lock(&self.failures);
        if failures.len() > 100_000 {
            failures.retain(|_, f| {
                f.locked_until.is_some_and(|u| u > now)
                    || now.duration_since(f.window_start) < self.settings.failure_window
            });
        }
        let f = failures
            .entry((client, Box::from(who)))
            .or_insert(Failures {
                window_start: now,
                count: 0,
                locked_until: None,
            });
        if now.duration_since(f.window_start) >= self.settings.failure_window {
            f.window_start = now;
            f.count = 0;
        }
        f.count += 1;
        if f.count >= self.settings.max_failures {
            tracing::warn!(
                target: "relay::auth",
                %client,
                user = who,
                failures = f.count,
                lockout_s = self.settings.lockout.as_secs(),
                "locked out: too many failed attempts for this user from this address"
            );
            f.locked_until = Some(now + self.settings.lockout);
            f.count = 0;
            f.window_start = now;
        }
    }
}

/// Whether `principal` may do what `need` allows.
fn decide(principal: Principal, need: Role) -> Decision {
    if principal.role.is_some_and(|r| r >= need) {
        Decision::Allowed(principal)
    } else {
        Decision::Forbidden(principal)
    }
}

/// The user a header claims to be, read without verifying anything: the lockout's key.
/// Tokens share one name (a token names no user until it verifies). Also what the logs
/// name a refused request by: never its secret.
pub fn claimed_user(header: &[u8]) -> String {
    let text = std::str::from_utf8(header).unwrap_or("");
    match text.split_once(' ') {
        Some((scheme, value)) if scheme.eq_ignore_ascii_case("basic") => decode_basic(value)
            .map(|(user, _)| user)
            .unwrap_or_else(|| "(malformed)".to_owned()),
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("bearer") => "(token)".to_owned(),
        _ => "(malformed)".to_owned(),
    }
}

/// `user:password` from a Basic credential's base64.
fn decode_basic(value: &str) -> Option<(String, String)> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// A bcrypt hash of a random string: verifying any password against it fails after the
/// same work as a real check.
const UNKNOWN_USER_HASH: &str = "$2b$12$C6UzMDM.H6dfI/f/IKxGhuwIXMsUCRdBRgK1LEDe1.XRPHQBbD9oS";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read_optional(path: &Path) -> Result<Option<String>, AuthError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AuthError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Parses an htpasswd file: `user:hash` lines, `#` comments; only bcrypt hashes
/// (`$2y$`, `$2b$`, `$2a$`) are accepted: others are refused with their line named.
pub fn parse_htpasswd(path: &Path, text: &str) -> Result<HashMap<String, String>, AuthError> {
    let mut users = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let bad = |reason: &str| AuthError::BadLine {
            path: path.to_owned(),
            line: i + 1,
            reason: reason.to_owned(),
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (user, hash) = line
            .split_once(':')
            .ok_or_else(|| bad("expected user:hash"))?;
        if user.is_empty() {
            return Err(bad("empty user name"));
        }
        if !(hash.starts_with("$2y$") || hash.starts_with("$2b$") || hash.starts_with("$2a$")) {
            return Err(bad(
                "only bcrypt hashes are accepted (make them with `htpasswd -B` or `relay users add`)",
            ));
        }
        if hash.len() != 60 {
            return Err(bad("malformed bcrypt hash"));
        }
        if users.insert(user.to_owned(), hash.to_owned()).is_some() {
            return Err(bad("user listed twice"));
        }
    }
    Ok(users)
}

fn parse_tokens(path: &Path, text: &str) -> Result<Vec<(String, [u8; 32])>, AuthError> {
    let mut tokens = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parsed = line
            .split_once(':')
            .and_then(|(name, hex)| Some((name, hex.parse::<Sha256>().ok()?)));
        let Some((name, digest)) = parsed else {
            return Err(AuthError::BadLine {
                path: path.to_owned(),
                line: i + 1,
                reason: "expected name:sha256-of-token".into(),
            });
        };
        tokens.push((name.to_owned(), digest.0));
    }
    Ok(tokens)
}

#[derive(Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
struct RolesFile {
    #[serde(default)]
    users: BTreeMap<String, Role>,
}

fn parse_roles(path: &Path, text: &str) -> Result<BTreeMap<String, Role>, AuthError> {
    toml::from_str::<RolesFile>(text)
        .map(|f| f.users)
        .map_err(|e| AuthError::Invalid(format!("{}: {e}", path.display())))
}

/// Adds or replaces `user` in the htpasswd file with a bcrypt hash of `password`, and
/// records its role in the roles file. Both files are rewritten atomically.
pub fn add_user(
    htpasswd: &Path,
    roles_file: &Path,
    user: &str,
    password: &str,
    role: Role,
) -> Result<(), AuthError> {
    if user.is_empty() || user.contains(':') || user.chars().any(char::is_whitespace) {
        return Err(AuthError::Invalid(format!(
            "user name {user:?} must be non-empty, without ':' or white space"
        )));
    }
    if password.is_empty() {
        return Err(AuthError::Invalid("empty password".into()));
    }
    let hash = bcrypt::hash(password, bcrypt::DEFAULT_COST)
        .map_err(|e| AuthError::Invalid(format!("hashing the password: {e}")))?;
    let existing = read_optional(htpasswd)?.unwrap_or_default();
    parse_htpasswd(htpasswd, &existing)?;
    let mut out: Vec<String> = existing
        .lines()
        .filter(|l| l.split_once(':').is_none_or(|(u, _)| u.trim() != user))
        .map(str::to_owned)
        .collect();
    out.push(format!("{user}:{hash}"));
    write(htpasswd, &(out.join("\n") + "\n"), 0o600)?;

    let mut roles = RolesFile {
        users: match read_optional(roles_file)? {
            Some(text) => parse_roles(roles_file, &text)?,
            None => BTreeMap::new(),
        },
    };
    roles.users.insert(user.to_owned(), role);
    let text = toml::to_string(&roles).map_err(|e| AuthError::Invalid(e.to_string()))?;
    write(
        roles_file,
        &format!("# Roles of htpasswd users, managed by `relay users add`.\n{text}"),
        0o644,
    )
}

/// Makes a new access token for `name`, stores its SHA-256 in the tokens file, and
/// returns the token (shown once).
pub fn add_token(tokens_file: &Path, name: &str) -> Result<String, AuthError> {
    if name.is_empty() || name.contains(':') || name.chars().any(char::is_whitespace) {
        return Err(AuthError::Invalid(format!(
            "token name {name:?} must be non-empty, without ':' or white space"
        )));
    }
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| AuthError::Invalid(e.to_string()))?;
    let token = format!(
        "rt_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    );
    let existing = read_optional(tokens_file)?.unwrap_or_default();
    parse_tokens(tokens_file, &existing)?;
    let mut text = existing;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!("{name}:{}\n", Sha256::of(token.as_bytes())));
    write(tokens_file, &text, 0o600)?;
    Ok(token)
}

/// A random password of 24 URL-safe characters.
pub fn random_password() -> Result<String, AuthError> {
    let mut raw = [0u8; 18];
    getrandom::fill(&mut raw).map_err(|e| AuthError::Invalid(e.to_string()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), AuthError> {
    crate::bundle::durable::write(
        path,
        text.as_bytes(),
        crate::bundle::durable::Access::Exactly(mode),
    )
    .map_err(|source| AuthError::Io {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn htpasswd_accepts_bcrypt_only_and_names_the_line() {
        let p = Path::new("htpasswd");
        let ok = "# users\nalice:$2y$05$abcdefghijklmnopqrstuuN9u5C1Db0aWBI6vOe2xJ6rDIHmH3F4e\n";
        assert_eq!(parse_htpasswd(p, ok).unwrap().len(), 1);
        let md5 = format!("{ok}bob:$apr1$x$yyyyyyyyyyyyyyyyyyyyyy\n");
        let err = parse_htpasswd(p, &md5).unwrap_err().to_string();
        assert!(err.starts_with("htpasswd:3: only bcrypt"), "{err}");
        let sha = "carol:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n";
        assert!(parse_htpasswd(p, sha).is_err());
    }

    #[test]
    fn unknown_user_hash_is_bcrypt() {
        assert!(!bcrypt::verify("x", UNKNOWN_USER_HASH).unwrap());
    }

    fn alice(present: bool) -> Credentials {
        let mut users = HashMap::new();
        if present {
            users.insert("alice".to_owned(), bcrypt::hash("alice-pw", 4).unwrap());
        }
        Credentials {
            users,
            tokens: Vec::new(),
            roles: BTreeMap::from([("alice".to_owned(), Role::Admin)]),
        }
    }

    fn settings() -> AuthSettings {
        AuthSettings {
            realm: "r".into(),
            cache_ttl: Duration::from_secs(60),
            max_failures: 3,
            failure_window: Duration::from_secs(60),
            lockout: Duration::from_secs(60),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reload_during_a_check_is_not_undone_by_it() {
        // alice is revoked (SIGHUP) while her check waits for bcrypt: the check must not
        // admit her, nor cache her, with the credentials it read before the reload.
        let auth = Arc::new(Authenticator::new(alice(true), settings()));
        let held = auth.bcrypt_slots.acquire_many(4).await.unwrap();
        let header = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:alice-pw")
        );
        let client: IpAddr = "127.0.0.1".parse().unwrap();
        let check = tokio::spawn({
            let (auth, header) = (Arc::clone(&auth), header.clone());
            async move {
                auth.check(Some(header.as_bytes()), client, Role::Reader)
                    .await
            }
        });
        // In flight means it read the credentials and waits for a slot.
        while auth.in_flight.held(client) == 0 {
            tokio::task::yield_now().await;
        }
        auth.replace(alice(false));
        drop(held);
        assert!(matches!(check.await.unwrap(), Decision::Unauthorized));
        assert!(lock(&auth.cache).is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failures_lock_out_a_user_at_an_address_not_everyone_there() {
        let mut credentials = alice(true);
        credentials
            .users
            .insert("bob".into(), bcrypt::hash("bob-pw", 4).unwrap());
        credentials.roles.insert("bob".into(), Role::Reader);
        let auth = Authenticator::new(credentials, settings());
        let basic = |user: &str, pw: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
            )
        };
        let here: IpAddr = "127.0.0.1".parse().unwrap();
        let there: IpAddr = "127.0.0.2".parse().unwrap();
        let check = |h: String, c: IpAddr| {
            let auth = &auth;
            async move { auth.check(Some(h.as_bytes()), c, Role::Reader).await }
        };
        // alice verified once: cached.
        assert!(matches!(
            check(basic("alice", "alice-pw"), here).await,
            Decision::Allowed(_)
        ));
        for _ in 0..3 {
            let d = check(basic("alice", "guess"), here).await;
            assert!(matches!(d, Decision::Unauthorized));
        }
        // alice from here, not cached (another header): locked.
        assert!(matches!(
            check(format!("basic {}", &basic("alice", "alice-pw")[6..]), here).await,
            Decision::RateLimited { .. }
        ));
        // Her proven, cached credential still works; bob here, and alice elsewhere, too.
        assert!(matches!(
            check(basic("alice", "alice-pw"), here).await,
            Decision::Allowed(_)
        ));
        assert!(matches!(
            check(basic("bob", "bob-pw"), here).await,
            Decision::Allowed(_)
        ));
        auth.replace(alice(true)); // forget the cache
        assert!(matches!(
            check(basic("alice", "alice-pw"), there).await,
            Decision::Allowed(_)
        ));
    }
}
