//! `GET /api/v1/feeds/watch`: the persistent channel. A `text/event-stream` with one event
//! per new current bundle (`id` = sequence; data: sequence, sha256, size), a keep-alive
//! comment every `routes.watch_keepalive`, and catch-up from the store's event log for a
//! client that sends `Last-Event-ID` (the sequence it holds).
//!
//! The channel's core is [`Channel`]: subscription, catch-up, the last sequence sent and
//! the frames written. Both paths run it: [`watch`], the routed handler (HTTP/2, and
//! HTTP/1.1 requests the lean path hands to hyper), and `lean.rs`, the lean HTTP/1.1
//! path most watchers take. They differ only in how the bytes reach the socket.
//!
//! An idle watcher costs its task's state and two `watch::Receiver`s: no buffer per
//! watcher, and no timer (the keep-alive clock, `Relay::keepalive`, is shared by all), so
//! thousands are cheap. Every watcher ends when the relay shuts down.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use futures_util::stream::{self, StreamExt};

use super::Relay;
use crate::store::{Current, Event};

/// The watch channel's path, routed in `routes.rs` and read by the lean path.
pub const PATH: &str = "/api/v1/feeds/watch";
/// The keep-alive frame: a comment.
const KEEPALIVE: &str = ":keep-alive\n\n";

/// The routed handler: the response head, then the channel's frames as the body.
pub async fn watch(State(relay): State<Arc<Relay>>, headers: HeaderMap) -> impl IntoResponse {
    let (channel, catch_up) = Channel::open(&relay, last_event_id(&headers)).await;
    let catch_up = (!catch_up.is_empty()).then(|| Ok::<_, Infallible>(Bytes::from(catch_up)));
    let live = stream::unfold(channel, |mut channel| async move {
        let frame = channel.next_frame().await?;
        Some((Ok(Bytes::from(frame)), channel))
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream::iter(catch_up).chain(live)),
    )
}

/// The sequence a client says it holds (`Last-Event-ID`), if it says one.
fn last_event_id(headers: &HeaderMap) -> Option<u64> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
}

/// One open watch channel: what either path keeps for as long as a watcher stays.
pub struct Channel {
    current: tokio::sync::watch::Receiver<Option<Arc<Current>>>,
    ticks: tokio::sync::watch::Receiver<u64>,
    last_sent: u64,
    guard: WatcherGuard,
}

impl Channel {
    /// Opens a channel for a client holding `last_id`, and the catch-up frames: the
    /// events after it in the store's log. Subscribes before reading the log, so that
    /// nothing falls between the two.
    pub async fn open(relay: &Arc<Relay>, last_id: Option<u64>) -> (Channel, String) {
        let current = relay.store.subscribe();
        let ticks = relay.keepalive.subscribe();
        let backlog = backlog(relay, last_id).await;
        let last_sent = backlog
            .last()
            .map(|e| e.sequence.0)
            .or(last_id)
            .unwrap_or(0);
        let catch_up = backlog.iter().map(frame).collect();
        let channel = Channel {
            current,
            ticks,
            last_sent,
            guard: WatcherGuard::new(Arc::clone(relay)),
        };
        (channel, catch_up)
    }

    /// The next frame to send: a newer current bundle's event, or a keep-alive; `None`
    /// when the relay is stopping (or its store or clock is gone).
    pub async fn next_frame(&mut self) -> Option<String> {
        let stopping = self.guard.relay.stopping.clone();
        loop {
            tokio::select! {
                changed = self.current.changed() => {
                    changed.ok()?;
                    let current = self.current.borrow_and_update().clone();
                    if let Some(c) = current
                        && c.record.sequence.0 > self.last_sent
                    {
                        self.last_sent = c.record.sequence.0;
                        return Some(frame(&Event {
                            sequence: c.record.sequence,
                            sha256: c.record.sha256,
                            size: c.record.size,
                        }));
                    }
                }
                changed = self.ticks.changed() => {
                    changed.ok()?;
                    return Some(KEEPALIVE.to_owned());
                }
                () = stopping.cancelled() => return None,
            }
        }
    }

    pub fn relay(&self) -> &Arc<Relay> {
        &self.guard.relay
    }
}

/// An event's frame, the same on both paths.
fn frame(e: &Event) -> String {
    let data =
        serde_json::json!({"sequence": e.sequence, "sha256": e.sha256, "size": e.size}).to_string();
    format!("id: {}\nevent: bundle\ndata: {data}\n\n", e.sequence)
}

/// Events after `last_id` from the store's log.
async fn backlog(relay: &Arc<Relay>, last_id: Option<u64>) -> Vec<Event> {
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

/// Counts open watchers in the metrics for as long as the channel lives.
struct WatcherGuard {
    relay: Arc<Relay>,
}

impl WatcherGuard {
    fn new(relay: Arc<Relay>) -> Self {
        relay.metrics.watchers.inc();
        Self { relay }
    }
}

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        self.relay.metrics.watchers.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::{Sequence, Sha256};

    #[test]
    fn a_frame_is_one_event_of_the_stream() {
        let e = Event {
            sequence: Sequence(42),
            sha256: Sha256([0xab; 32]),
            size: 7,
        };
        let mut items = Vec::new();
        crate::client::sse::SseParser::default()
            .feed(frame(&e).as_bytes(), &mut items)
            .unwrap();
        assert_eq!(
            items,
            vec![crate::client::sse::SseItem::Event {
                event: "bundle".into(),
                data: format!(
                    "{{\"sequence\":42,\"sha256\":\"{}\",\"size\":7}}",
                    "ab".repeat(32)
                ),
                id: Some("42".into()),
            }]
        );
    }
}
