//! `GET /api/v1/feeds/watch`: the persistent channel. A `text/event-stream` with one event
//! per new current bundle (`id` = sequence; data: sequence, sha256, size), a keep-alive
//! comment every `routes.watch_keepalive`, and catch-up from the store's event log for a
//! client that sends `Last-Event-ID` (the sequence it holds).
//!
//! An idle watcher costs one task's state and a `watch::Receiver`: no buffer per watcher,
//! so thousands are cheap. Every watcher ends when the relay shuts down.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::stream::{self, Stream, StreamExt};

use super::Relay;
use crate::store::Event;

pub async fn watch(State(relay): State<Arc<Relay>>, headers: HeaderMap) -> impl IntoResponse {
    // Subscribe before reading the backlog, so nothing falls between the two.
    let receiver = relay.store.subscribe();
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    let backlog = backlog(&relay, last_id).await;
    let last_sent = backlog
        .last()
        .map(|e| e.sequence.0)
        .or(last_id)
        .unwrap_or(0);
    let guard = WatcherGuard::new(Arc::clone(&relay));
    let live = stream::unfold(
        (receiver, last_sent, guard),
        |(mut receiver, mut last_sent, guard)| async move {
            loop {
                let stopping = guard.relay.stopping.clone();
                tokio::select! {
                    changed = receiver.changed() => changed.ok()?,
                    () = stopping.cancelled() => return None,
                }
                let current = receiver.borrow_and_update().clone();
                if let Some(c) = current
                    && c.record.sequence.0 > last_sent
                {
                    last_sent = c.record.sequence.0;
                    let event = Event {
                        sequence: c.record.sequence,
                        sha256: c.record.sha256,
                        size: c.record.size,
                    };
                    return Some((event, (receiver, last_sent, guard)));
                }
            }
        },
    );
    let events: std::pin::Pin<Box<dyn Stream<Item = Result<SseEvent, Infallible>> + Send>> =
        Box::pin(stream::iter(backlog).chain(live).map(|e| Ok(to_sse(&e))));
    Sse::new(events).keep_alive(
        KeepAlive::new()
            .interval(relay.config.routes.watch_keepalive.0)
            .text("keep-alive"),
    )
}

fn to_sse(e: &Event) -> SseEvent {
    SseEvent::default()
        .id(e.sequence.to_string())
        .event("bundle")
        .data(event_data(e))
}

/// The `data:` of an event, the same on both paths (this one and `fastwatch`).
pub fn event_data(e: &Event) -> String {
    serde_json::json!({"sequence": e.sequence, "sha256": e.sha256, "size": e.size}).to_string()
}

/// Events after `last_id` from the store's log.
pub async fn backlog(relay: &Arc<Relay>, last_id: Option<u64>) -> Vec<Event> {
    let Some(id) = last_id else {
        return Vec::new();
    };
    let store = Arc::clone(&relay.store);
    tokio::task::spawn_blocking(move || store.events_after(id))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default()
}

/// Counts open watchers in the metrics for as long as the stream lives.
pub struct WatcherGuard {
    pub(super) relay: Arc<Relay>,
}

impl WatcherGuard {
    pub fn new(relay: Arc<Relay>) -> Self {
        relay.metrics.watchers.inc();
        Self { relay }
    }
}

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        self.relay.metrics.watchers.dec();
    }
}
