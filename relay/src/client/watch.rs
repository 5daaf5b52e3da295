//! Following an upstream's watch channel (`GET /api/v1/feeds/watch`, server-sent
//! events): the caller hears at once when the upstream has a new bundle, and when the
//! channel comes up or goes down (so it can poll while it is down).

use std::time::Duration;

use futures_util::StreamExt;

use super::Endpoint;
use super::sse::{SseItem, SseParser};

/// What the channel says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchSignal {
    /// Connected (again): events may have been missed meanwhile, so check once.
    Connected,
    /// An event: the upstream has a new bundle.
    Event,
    /// The channel is down (refused, unreachable, or cut), with why.
    Down(String),
}

/// Follows the channel for ever: reconnects with exponential backoff (from 1 s, or the
/// server's `retry:` time within 1 s to 10 min, doubling to 60 s or that time, plus up to
/// half again at random), sending `held()` as `Last-Event-ID` so nothing is missed while it
/// was away. Any event is news (the relay's are `bundle`); comments keep it alive. Stop it by
/// dropping the future.
pub async fn follow(
    endpoint: &Endpoint,
    client: &reqwest::Client,
    held: impl Fn() -> Option<u64>,
    mut signal: impl FnMut(WatchSignal),
) {
    let url = format!("{}/api/v1/feeds/watch", endpoint.base());
    let mut first = Duration::from_secs(1);
    let mut backoff = first;
    loop {
        let mut request = endpoint.authorize(client.get(&url));
        if let Some(seq) = held() {
            request = request.header("last-event-id", seq.to_string());
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => {
                signal(WatchSignal::Connected);
                let mut stream = response.bytes_stream();
                let mut parser = SseParser::default();
                let mut items = Vec::new();
                let why = loop {
                    let chunk = match stream.next().await {
                        Some(Ok(chunk)) => chunk,
                        Some(Err(e)) => break format!("watch channel cut: {e}"),
                        None => break "watch channel closed by the upstream".to_owned(),
                    };
                    if let Err(e) = parser.feed(&chunk, &mut items) {
                        break e.to_string();
                    }
                    for item in items.drain(..) {
                        match item {
                            SseItem::Event { .. } => signal(WatchSignal::Event),
                            SseItem::Retry(time) => {
                                first =
                                    time.clamp(Duration::from_secs(1), Duration::from_secs(600));
                            }
                        }
                    }
                };
                backoff = first;
                signal(WatchSignal::Down(why));
            }
            Ok(response) => signal(WatchSignal::Down(format!(
                "watch channel refused: HTTP {}",
                response.status()
            ))),
            Err(e) => signal(WatchSignal::Down(format!("watch channel unreachable: {e}"))),
        }
        tokio::time::sleep(backoff + super::random_below(backoff / 2)).await;
        backoff = (backoff * 2).min(Duration::from_secs(60).max(first));
    }
}
