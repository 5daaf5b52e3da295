//! Forwards audits to a webhook: each audit is POSTed as its JSON document (the same
//! object as a line of the audit file), in order, one at a time, with retries.
//!
//! Evaluation must never wait for the network, so `send` only puts the audit on a
//! bounded queue; a background task delivers it. A failed attempt (no connection, a
//! timeout, a status other than 2xx) is retried after `backoff_base`, doubling up to
//! `backoff_max`, `attempts` times in all. When the queue is full (the receiver is down
//! and audits keep coming) new audits are dropped for the webhook only, counted, and
//! said on stderr: the audit file and sled still hold every one of them.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::audit::Audit;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook {url}: {message}")]
    Client { url: String, message: String },
}

#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub url: String,
    /// Audits waiting for delivery at most.
    pub queue: usize,
    /// Attempts per audit, the first included.
    pub attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Per attempt.
    pub timeout: Duration,
}

impl WebhookSettings {
    pub fn new(url: &str) -> WebhookSettings {
        WebhookSettings {
            url: url.to_owned(),
            queue: 1024,
            attempts: 6,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
        }
    }
}

/// What the webhook did, when it stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebhookStats {
    pub delivered: u64,
    /// Given up after every attempt failed.
    pub failed: u64,
    /// Not queued: the queue was full.
    pub dropped: u64,
    /// Still queued when `finish` ran out of time.
    pub abandoned: u64,
}

pub struct Webhook {
    tx: mpsc::Sender<Audit>,
    dropped: u64,
    task: JoinHandle<WebhookStats>,
    url: String,
}

impl Webhook {
    /// Starts the delivery task (on the current tokio runtime).
    pub fn start(settings: WebhookSettings) -> Result<Webhook, WebhookError> {
        let mut endpoint = relay::client::Endpoint::new(&settings.url);
        endpoint.request_timeout = settings.timeout;
        let client = endpoint.client().map_err(|e| WebhookError::Client {
            url: settings.url.clone(),
            message: e.to_string(),
        })?;
        let (tx, rx) = mpsc::channel(settings.queue.max(1));
        let url = settings.url.clone();
        let task = tokio::spawn(deliver(client, settings, rx));
        Ok(Webhook {
            tx,
            dropped: 0,
            task,
            url,
        })
    }

    /// Queues an audit; never waits.
    pub fn send(&mut self, audit: &Audit) {
        if let Err(e) = self.tx.try_send(audit.clone()) {
            self.dropped += 1;
            // Once, then every 100th: the reason is the same each time.
            if self.dropped % 100 == 1 {
                let why = match e {
                    mpsc::error::TrySendError::Full(_) => "queue full",
                    mpsc::error::TrySendError::Closed(_) => "delivery task ended",
                };
                tracing::warn!(
                    "webhook {}: {why}: {} audit(s) not forwarded so far (they are in the audit file)",
                    self.url,
                    self.dropped
                );
            }
        }
    }

    /// Stops taking audits, and delivers what is queued within `grace`.
    pub async fn finish(self, grace: Duration) -> WebhookStats {
        let Webhook {
            tx, dropped, task, ..
        } = self;
        let queued = tx.max_capacity() - tx.capacity();
        drop(tx);
        let abort = task.abort_handle();
        let mut stats = match tokio::time::timeout(grace, task).await {
            Ok(Ok(stats)) => stats,
            Ok(Err(e)) => {
                tracing::error!("webhook delivery task failed: {e}");
                WebhookStats::default()
            }
            Err(_) => {
                abort.abort();
                WebhookStats {
                    abandoned: queued as u64,
                    ..WebhookStats::default()
                }
            }
        };
        stats.dropped += dropped;
        stats
    }
}

async fn deliver(
    client: reqwest::Client,
    settings: WebhookSettings,
    mut rx: mpsc::Receiver<Audit>,
) -> WebhookStats {
    let mut stats = WebhookStats::default();
    while let Some(audit) = rx.recv().await {
        let mut delay = settings.backoff_base;
        let mut last_error = String::new();
        let mut delivered = false;
        for attempt in 1..=settings.attempts.max(1) {
            match client.post(&settings.url).json(&audit).send().await {
                Ok(resp) if resp.status().is_success() => {
                    delivered = true;
                    break;
                }
                Ok(resp) => last_error = format!("HTTP {}", resp.status()),
                Err(e) => last_error = relay::client::error_chain(&e),
            }
            if attempt < settings.attempts {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(settings.backoff_max);
            }
        }
        if delivered {
            stats.delivered += 1;
        } else {
            stats.failed += 1;
            tracing::warn!(
                "webhook {}: audit at {} not delivered after {} attempts: {last_error}",
                settings.url,
                audit.time,
                settings.attempts
            );
        }
    }
    stats
}
