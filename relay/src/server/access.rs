//! The access log: one line per request, at info, under the target `relay::access`.
//!
//! The line is written when the response is over (its body sent, or the client gone), so
//! `bytes` is what was really sent and `complete` says whether all of it was; the watch
//! channel, which stays open for days, gets its line when it opens. Fields (stable; the
//! README lists them): `client` (address and port), `user` (the one authenticated, or the
//! one a refused request claimed; `-` for none), `method`, `path` (no query), `status`,
//! `bytes`, `duration_ms`, `complete`, `user_agent`. The event's timestamp is the time.
//! Text fields come from the peer: they are logged as strings (quoted and escaped in text
//! logs, JSON strings in `--log-format json`) and cut to a bound, never raw.
//! `[listen] access_log = false` turns it off (or `RUST_LOG=info,relay::access=off`).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, header};
use axum::response::Response;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use super::{ClientAddr, Relay};

/// Who the request was from, as the auth layer found it: put in the response's extensions.
#[derive(Clone, Debug)]
pub struct AccessUser(pub String);

/// Longest user name and user agent logged, in characters; longer ones are cut.
const MAX_FIELD_CHARS: usize = 200;

/// What is known of a request when its response starts.
pub struct Entry {
    start: Instant,
    client: String,
    user: String,
    method: String,
    path: String,
    status: u16,
    user_agent: String,
}

impl Entry {
    /// A request's entry, up to its status (`user` from the response's [`AccessUser`]).
    pub fn new(
        start: Instant,
        client: Option<ClientAddr>,
        method: &str,
        path: &str,
        user_agent: Option<&HeaderValue>,
    ) -> Self {
        Self {
            start,
            client: client.map_or_else(|| "-".to_owned(), |c| c.0.to_string()),
            user: "-".to_owned(),
            method: method.to_owned(),
            path: bounded(path),
            status: 0,
            user_agent: user_agent.map_or_else(
                || "-".to_owned(),
                |v| bounded(&String::from_utf8_lossy(v.as_bytes())),
            ),
        }
    }

    pub fn user(mut self, user: &str) -> Self {
        self.user = bounded(user);
        self
    }

    pub fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// Writes the line: `bytes` sent, `complete` when all of the response was.
    pub fn write(&self, bytes: u64, complete: bool) {
        let duration_ms = self.start.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(
            target: "relay::access",
            client = %self.client,
            user = self.user.as_str(),
            method = self.method.as_str(),
            path = self.path.as_str(),
            status = self.status,
            bytes,
            duration_ms = (duration_ms * 1000.0).round() / 1000.0,
            complete,
            user_agent = self.user_agent.as_str(),
            "access"
        );
    }
}

/// `text` cut to [`MAX_FIELD_CHARS`] characters (marked with `…` when cut).
fn bounded(text: &str) -> String {
    match text.char_indices().nth(MAX_FIELD_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// The access line of `req`, begun before the request is handled; `None` when the
/// access log is off. [`finish`] ends it with the response.
pub fn begin(relay: &Relay, req: &Request) -> Option<Begun> {
    if !relay.config.listen.access_log {
        return None;
    }
    Some(Begun {
        head: req.method() == Method::HEAD,
        entry: Entry::new(
            Instant::now(),
            req.extensions().get::<ClientAddr>().copied(),
            req.method().as_str(),
            req.uri().path(),
            req.headers().get(header::USER_AGENT),
        ),
    })
}

/// An access line waiting for its response.
pub struct Begun {
    head: bool,
    entry: Entry,
}

/// Ends the access line of `begun` with `response`: written now for a stream or a HEAD,
/// else when the body is over (the bytes really sent).
pub fn finish(begun: Begun, response: Response) -> Response {
    let Begun { head, entry } = begun;
    let mut entry = entry.status(response.status().as_u16());
    if let Some(user) = response.extensions().get::<AccessUser>() {
        entry = entry.user(&user.0);
    }
    let streaming = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    // A HEAD response's body is never sent (hyper drops it): all of it is the head.
    if streaming || head {
        entry.write(0, true);
        return response;
    }
    let (parts, body) = response.into_parts();
    Response::from_parts(
        parts,
        Body::new(Counted {
            inner: body,
            entry: Some(entry),
            bytes: 0,
        }),
    )
}

/// A response body that counts what it yields and writes the access line when it ends,
/// fails or is dropped unfinished (the client went away).
struct Counted {
    inner: Body,
    entry: Option<Entry>,
    bytes: u64,
}

impl Counted {
    fn finish(&mut self, complete: bool) {
        if let Some(entry) = self.entry.take() {
            entry.write(self.bytes, complete);
        }
    }
}

impl HttpBody for Counted {
    type Data = <Body as HttpBody>::Data;
    type Error = <Body as HttpBody>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
            }
            Poll::Ready(Some(Err(_))) => self.finish(false),
            Poll::Ready(None) => self.finish(true),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        // An empty body (304, an error) is never polled: it ended, all of it sent.
        let complete = self.inner.is_end_stream();
        self.finish(complete);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_peer_fields_are_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_FIELD_CHARS + 5);
        let cut = bounded(&long);
        assert_eq!(cut.chars().count(), MAX_FIELD_CHARS + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(bounded("curl/8.14.1"), "curl/8.14.1");
    }
}
