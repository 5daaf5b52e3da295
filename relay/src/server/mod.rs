//! The TLS mirror server: accept -> TLS -> hyper (HTTP/1.1 and HTTP/2) -> tower layers ->
//! routes. Routes and layers are listed once, in `routes.rs`.
//!
//! [`Relay::open`] prepares everything that can fail before a socket is touched (store,
//! credentials, certificate); [`Relay::serve`] runs the accept loop on a listener the
//! caller bound, until `shutdown` resolves, so tests run relays on `127.0.0.1:0`.
//! Storage is `store`, credentials `auth`, the format `bundle`.

mod access;
mod bootstrap;
mod console;
mod files;
mod idle;
mod lean;
mod metrics;
pub mod origin;
mod projects;
mod routes;
mod status;
mod sync;
mod tls;
mod tlsconn;
mod upload;
mod watch;

/// The connection-level entry points the fuzz targets (`fuzz/`) drive with arbitrary
/// client bytes: the lean HTTP/1.1 path's head reader and the TLS connection driver, with
/// the relay's own TLS configuration. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    pub use super::lean::{Lean, Rewind, try_serve};
    pub use super::tls::Reloadable as TlsConfig;
    pub use super::tlsconn::TlsConn;
}

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::{debug, info, warn};

use crate::auth::{AuthSettings, Authenticator, Credentials};
use crate::bundle::{Limits, Timestamp, TrustStore};
use crate::config::{self, Config};
use crate::store::{Store, StoreSettings};

pub use bootstrap::{Prepared, install_sample, prepare};
pub use metrics::Metrics;
pub use projects::SupervisorStatus;
pub use sync::{SourceStatus, SyncStatus};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("{0}")]
    Other(String),
}

/// Everything a request handler needs.
pub struct Relay {
    pub(crate) config: Config,
    pub(crate) store: Arc<Store>,
    pub(crate) auth: Authenticator,
    /// The keys whose bundles this relay accepts; SIGHUP re-reads them.
    trust: std::sync::RwLock<TrustStore>,
    pub(crate) limits: Limits,
    pub(crate) metrics: Metrics,
    pub(crate) tls: Option<tls::Reloadable>,
    /// Cancelled at shutdown: ends the open watch channels so connections can drain.
    pub(crate) stopping: CancellationToken,
    pub(crate) sync: sync::SyncState,
    /// Ticks every `routes.watch_keepalive`: one clock for every lean watcher, rather
    /// than a timer each.
    pub(crate) keepalive: tokio::sync::watch::Sender<u64>,
    /// Central's side of projects: what each supervisor holds.
    pub(crate) projects: projects::ProjectsState,
    /// The origin service's state (`[origin]`).
    pub(crate) origin: origin::OriginState,
}

/// A lean watcher's life, once its connection has been answered.
type Watching = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// The address a connection came from, for per-client limits and logs.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

impl Relay {
    /// Opens the store, loads credentials and the certificate. `trust` are the keys
    /// whose bundles this relay accepts.
    pub async fn open(
        config: Config,
        trust: TrustStore,
    ) -> Result<(Arc<Self>, Vec<String>), ServerError> {
        let limits = config.limits.limits();
        // An origin trusts its own signing key, for what it publishes and at every start.
        let trust = match &config.origin {
            Some(origin) => trust.with(origin_public_key(origin)?),
            None => trust,
        };
        let settings = StoreSettings {
            dir: config.data_dir().join("store"),
            retention: config.storage.retention,
            memory_cache_bytes: config.storage.memory_cache_bytes,
            sled_cache_bytes: config.storage.sled_cache_bytes,
        };
        let store_trust = trust.clone();
        let (store, notes) =
            tokio::task::spawn_blocking(move || Store::open(settings, &store_trust, &limits))
                .await
                .map_err(|e| ServerError::Other(e.to_string()))??;
        let credentials = load_credentials(&config)?;
        let auth = Authenticator::new(
            credentials,
            AuthSettings {
                realm: config.auth.realm.clone(),
                cache_ttl: config.auth.cache_ttl.0,
                max_failures: config.auth.max_failures,
                failure_window: config.auth.failure_window.0,
                lockout: config.auth.lockout.0,
            },
        );
        let tls = if config.listen.insecure_http {
            None
        } else {
            Some(tls::Reloadable::load(config.tls_cert(), config.tls_key())?)
        };
        let projects = projects::ProjectsState::new(&config.supervisors, &store);
        let relay = Arc::new(Self {
            projects,
            origin: origin::OriginState::new(config.origin.as_ref()),
            metrics: Metrics::new(),
            store: Arc::new(store),
            auth,
            trust: std::sync::RwLock::new(trust),
            limits,
            tls,
            stopping: CancellationToken::new(),
            sync: sync::SyncState::new(&config.sources, &config.archives),
            keepalive: tokio::sync::watch::Sender::new(0),
            config,
        });
        Ok((relay, notes))
    }

    /// Re-reads the certificate, key, credentials and trusted keys (SIGHUP). Open
    /// connections keep the certificate they started with; a file that does not load
    /// leaves the old one in use and is reported. A key removed from `trust.keys` demotes
    /// the held bundles it signed (returned, one line each, for the log).
    ///
    /// `trust_keys` is `[trust] keys` as the configuration file says now (empty: the
    /// zero-config local key stays).
    pub async fn reload(
        &self,
        trust_keys: &[std::path::PathBuf],
    ) -> Result<Vec<String>, ServerError> {
        if let Some(tls) = &self.tls {
            tls.reload()?;
        }
        self.auth.replace(load_credentials(&self.config)?);
        if trust_keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut trust = TrustStore::load(trust_keys)
            .map_err(|e| ServerError::Other(format!("trusted keys: {e}")))?;
        if let Some(origin) = &self.config.origin {
            trust = trust.with(origin_public_key(origin)?);
        }
        *self
            .trust
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = trust.clone();
        let notes = self
            .store
            .demote_untrusted(&trust)
            .await
            .map_err(|e| ServerError::Other(format!("demoting untrusted bundles: {e}")))?;
        Ok(notes)
    }

    /// The keys whose bundles this relay accepts now.
    pub(crate) fn trust(&self) -> TrustStore {
        self.trust
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The Prometheus text `/metrics` serves.
    pub fn metrics_text(&self) -> String {
        self.metrics.render()
    }

    /// What the sources last did.
    pub fn sync_status(&self) -> SyncStatus {
        self.sync.snapshot()
    }

    /// Open watch channels.
    pub fn metrics_watchers(&self) -> i64 {
        self.metrics.watchers.get()
    }

    /// Serves connections from `listener` until `shutdown` resolves, then stops
    /// accepting, tells watchers to go, and waits up to `listen.shutdown_grace` for open
    /// requests.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let listen = &self.config.listen;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(listen.header_read_timeout.0)
            .max_buf_size(listen.max_header_bytes.max(8192));
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(listen.max_header_bytes).unwrap_or(u32::MAX))
            .keep_alive_interval(Some(listen.keep_alive_timeout.0))
            .keep_alive_timeout(listen.keep_alive_timeout.0)
            // Per stream: what a client that stops reading leaves queued (hyper's 400 KiB
            // by default).
            .max_send_buf_size(listen.write_buffer_bytes)
            .max_concurrent_streams(256);
        let sync_tasks = match sync::start(&self).await {
            Ok(tasks) => tasks,
            Err(e) => {
                warn!(error = %e, "sources not started; serving what is held");
                Vec::new()
            }
        };
        let mut sync_tasks = sync_tasks;
        sync_tasks.extend(projects::start(&self));
        match origin::start(&self).await {
            Ok(tasks) => sync_tasks.extend(tasks),
            Err(e) => warn!(error = %e, "origin not started; serving what is held"),
        }
        sync_tasks.push(tokio::spawn(index_warmer(Arc::clone(&self))));
        tokio::spawn(keepalive_clock(Arc::clone(&self)));
        tokio::spawn(rate_sampler(Arc::clone(&self)));
        let router = routes::router(Arc::clone(&self));
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let slots = Arc::new(Semaphore::new(listen.max_connections));
        let per_address = crate::per_address::PerAddress::new(listen.max_connections_per_address);
        let handshake_timeout = listen.tls_handshake_timeout.0;
        let write_buffer = listen.write_buffer_bytes;
        let idle_timeout = listen.idle_timeout.0;
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let Some(address_slot) = per_address.enter(peer.ip()) else {
                self.metrics.connections_refused.inc();
                debug!(%peer, "per-address connection cap reached; closing");
                continue;
            };
            let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                self.metrics.connections_refused.inc();
                debug!(%peer, "connection cap reached; closing");
                continue;
            };
            let slot = ConnectionSlot {
                _permit: permit,
                _address: address_slot,
            };
            let _ = stream.set_nodelay(true);
            let client = ClientAddr(peer);
            let service = hyper::service::service_fn({
                let router = router.clone();
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(client);
                    router.clone().oneshot(req)
                }
            });
            let builder = builder.clone();
            let watcher = graceful.watcher();
            let tls_config = self.tls.as_ref().map(tls::Reloadable::config);
            let relay = Arc::clone(&self);
            // The connection's work up to the point where it is known to be a lean
            // watcher is boxed, and freed when that point is reached: a watcher's task
            // then keeps only the watcher.
            let accept = Box::pin(async move {
                let slot = slot;
                let result = match tls_config {
                    Some(tls_config) => {
                        let handshake = Box::pin(tokio::time::timeout(
                            handshake_timeout,
                            tlsconn::TlsConn::accept(stream, tls_config),
                        ));
                        let mut tls = match handshake.await {
                            Ok(Ok(tls)) => tls,
                            Ok(Err(e)) => {
                                debug!(%peer, error = %e, "TLS handshake failed");
                                return None;
                            }
                            Err(_) => {
                                debug!(%peer, "TLS handshake timed out");
                                return None;
                            }
                        };
                        tls.limit_write_queue(write_buffer);
                        let io = if tls.alpn_protocol() == Some(b"h2".as_slice()) {
                            lean::Rewind::new(Vec::new(), tls)
                        } else {
                            match Box::pin(lean::try_serve(&relay, tls, client)).await {
                                lean::Lean::Other(io) => io,
                                lean::Lean::Watching(watcher) => {
                                    return Some(Box::pin(watcher.run(slot)) as Watching);
                                }
                                lean::Lean::Done => return None,
                            }
                        };
                        let io = idle::IdleTimeout::new(io, idle_timeout);
                        // Boxed: the hyper connection's state is large, and the task's
                        // other states should not carry room for it.
                        let conn =
                            builder.serve_connection_with_upgrades(TokioIo::new(io), service);
                        Box::pin(watcher.watch(conn.into_owned())).await
                    }
                    None => {
                        let io = match Box::pin(lean::try_serve(&relay, stream, client)).await {
                            lean::Lean::Other(io) => io,
                            lean::Lean::Watching(watcher) => {
                                return Some(Box::pin(watcher.run(slot)) as Watching);
                            }
                            lean::Lean::Done => return None,
                        };
                        let io = idle::IdleTimeout::new(io, idle_timeout);
                        let conn =
                            builder.serve_connection_with_upgrades(TokioIo::new(io), service);
                        Box::pin(watcher.watch(conn.into_owned())).await
                    }
                };
                drop(slot);
                if let Err(e) = result {
                    debug!(%peer, error = %e, "connection ended with an error");
                }
                None
            });
            tokio::spawn(async move {
                if let Some(watching) = accept.await {
                    watching.await;
                }
            });
        }
        drop(listener);
        info!("shutting down: no new connections; draining open ones");
        self.stopping.cancel();
        let drain = async {
            graceful.shutdown().await;
            // A check in progress finishes its step (a commit is never cut in half).
            for task in sync_tasks {
                let _ = task.await;
            }
        };
        tokio::select! {
            () = drain => info!("all connections closed"),
            () = tokio::time::sleep(self.config.listen.shutdown_grace.0) => {
                warn!("shutdown grace period over; closing the remaining connections");
            }
        }
        Ok(())
    }
}

/// Derives each new current bundle's segment index as it arrives, so the first client
/// asking for it does not wait (seconds for a large bundle). Given up at shutdown.
async fn index_warmer(relay: Arc<Relay>) {
    let mut current = relay.store.subscribe();
    loop {
        let sha = current
            .borrow_and_update()
            .as_ref()
            .map(|c| c.record.sha256);
        if let Some(sha) = sha {
            let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let store = Arc::clone(&relay.store);
            let flag = Arc::clone(&cancel);
            let mut work =
                tokio::task::spawn_blocking(move || store.segment_index_until(&sha, &flag));
            tokio::select! {
                done = &mut work => match done {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => warn!(error = %e, bundle = %sha, "deriving the segment index"),
                    Err(e) => warn!(error = %e, "the segment index task failed"),
                },
                () = relay.stopping.cancelled() => {
                    cancel.store(true, std::sync::atomic::Ordering::Relaxed);
                    let _ = work.await;
                    return;
                }
            }
        }
        tokio::select! {
            changed = current.changed() => if changed.is_err() { return },
            () = relay.stopping.cancelled() => return,
        }
    }
}

/// Samples the request count for the console's request rates until shutdown.
async fn rate_sampler(relay: Arc<Relay>) {
    let mut interval = tokio::time::interval(metrics::RATE_SAMPLE);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = interval.tick() => relay.metrics.sample_requests(),
            () = relay.stopping.cancelled() => return,
        }
    }
}

/// Ticks `Relay::keepalive` every `routes.watch_keepalive` until shutdown.
async fn keepalive_clock(relay: Arc<Relay>) {
    let period = relay.config.routes.watch_keepalive.0;
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = interval.tick() => relay.keepalive.send_modify(|n| *n = n.wrapping_add(1)),
            () = relay.stopping.cancelled() => return,
        }
    }
}

fn load_credentials(config: &Config) -> Result<Credentials, ServerError> {
    Ok(Credentials::load(
        &config.htpasswd(),
        &config.tokens(),
        &config.data_dir().join("roles.toml"),
        &config::roles(&config.auth),
    )?)
}

/// The public half of the origin's signing key.
fn origin_public_key(
    origin: &crate::config::OriginConfig,
) -> Result<crate::bundle::PublicKey, ServerError> {
    crate::bundle::SecretKey::load(&origin.key)
        .map(|k| k.public())
        .map_err(|e| ServerError::Other(format!("origin.key: {e}")))
}

/// What an open connection holds until it ends: its place under `listen.max_connections`
/// and under its address's `listen.max_connections_per_address`.
pub(crate) struct ConnectionSlot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    _address: crate::per_address::AddressSlot,
}

/// `now`, for handlers. Kept in one place so the clock is easy to find.
pub(crate) fn now() -> Timestamp {
    Timestamp::now()
}
