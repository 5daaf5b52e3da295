//! A lean path for the watch channel over HTTP/1.1.
//!
//! An idle watcher is the relay's most numerous client: thousands of consoles and agents
//! each hold one connection open for days. Through hyper, each such connection keeps
//! about 16 KiB of HTTP/1 read and header buffers for its whole life. This path reads the
//! request head itself; when it is an authorized `GET /api/v1/feeds/watch`, it answers
//! with a close-delimited `text/event-stream` and hands back a [`Watcher`]: the
//! connection, two channel receivers and a sequence number, which the server runs as a
//! task of its own so that nothing of the accept path's larger state stays allocated for
//! the watcher's life. Anything else (another route, HTTP/2, a malformed or partial
//! head) is handed to hyper with the bytes already read put back in front, so every
//! other request behaves exactly as before. Events, catch-up and keep-alives come from
//! the channel core both paths share (`watch::Channel`); this path writes its frames.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::{ClientAddr, Relay, access, routes, watch};
use crate::auth::{Decision, Role};

/// A watch request's head is small; a larger head goes to hyper (and its limits).
const MAX_HEAD: usize = 4096;

/// What the lean path made of a connection.
pub enum Lean<I> {
    /// An authorized watch channel, answered and caught up: [`Watcher::run`] keeps it.
    Watching(Box<Watcher<I>>),
    /// Anything else, for hyper, with the bytes already read put back in front.
    Other(Rewind<I>),
    /// Answered and closed (refused credentials, or a write that failed).
    Done,
}

/// Reads the request head on `io`. An authorized `GET /api/v1/feeds/watch` is answered
/// (response head and catch-up events) and handed back as a [`Watcher`]; anything else is
/// given back, with what was read, for hyper.
pub async fn try_serve<I>(relay: &Arc<Relay>, mut io: I, client: ClientAddr) -> Lean<I>
where
    I: AsyncRead + AsyncWrite + ReleaseBuffers + Unpin,
{
    let mut head = Vec::with_capacity(1024);
    let idle = relay.config.listen.idle_timeout.0;
    // Boxed, so its buffer is not part of this future's state.
    let complete = Box::pin(tokio::time::timeout(
        relay.config.listen.header_read_timeout.0,
        async {
            let mut chunk = [0u8; 1024];
            loop {
                // Nothing for the idle timeout is idle, as on every other connection.
                let n = match tokio::time::timeout(idle, io.read(&mut chunk)).await {
                    Ok(read) => read?,
                    Err(_) => return Ok::<Head, io::Error>(Head::Gone),
                };
                if n == 0 {
                    return Ok(Head::Gone);
                }
                head.extend_from_slice(&chunk[..n]);
                // The blank line that ends a head; bare LF line ends are accepted, as
                // hyper (and httparse) accept them.
                if head.windows(4).any(|w| w == b"\r\n\r\n")
                    || head.windows(2).any(|w| w == b"\n\n")
                {
                    return Ok(Head::Complete);
                }
                if head.len() > MAX_HEAD {
                    return Ok(Head::TooLarge);
                }
            }
        },
    ))
    .await;
    match complete {
        Ok(Ok(Head::Complete)) => {}
        // Too large for a watch request: hyper applies its own limits and answers.
        Ok(Ok(Head::TooLarge)) => return Lean::Other(Rewind::new(head, io)),
        // Closed, idle, too slow or broken: nothing to answer.
        Ok(Ok(Head::Gone) | Err(_)) | Err(_) => return Lean::Done,
    }
    let request = match parse(&head) {
        Some(r) => r,
        None => return Lean::Other(Rewind::new(head, io)),
    };
    drop(head);
    let started = std::time::Instant::now();
    // The same span and events as TraceLayer gives every routed request.
    let span = tracing::debug_span!(
        "request",
        method = "GET",
        uri = watch::PATH,
        version = "HTTP/1.1",
        client = %client.0,
    );
    tracing::debug!(parent: &span, "started processing request");
    let decision = relay
        .auth
        .check(
            request.authorization.as_deref(),
            client.0.ip(),
            Role::Reader,
        )
        .await;
    let access = relay.config.listen.access_log.then(|| {
        let user = match &decision {
            Decision::Allowed(principal) => principal.name.clone(),
            _ => request
                .authorization
                .as_deref()
                .map_or_else(|| "-".to_owned(), crate::auth::claimed_user),
        };
        access::Entry::new(
            started,
            Some(client),
            "GET",
            watch::PATH,
            request.user_agent.as_ref(),
        )
        .user(&user)
    });
    if !matches!(decision, Decision::Allowed(_)) {
        let response = routes::denial(relay, Role::Reader, decision);
        let status = response.status();
        if let Some(access) = access {
            access.status(status.as_u16()).write(0, true);
        }
        // A client that does not read its refusal does not keep the task.
        let _ = tokio::time::timeout(idle, write_response(&mut io, response)).await;
        relay.metrics.answered(watch::PATH, status.as_str());
        tracing::debug!(parent: &span, status = status.as_u16(), "finished processing request");
        return Lean::Done;
    }
    relay.metrics.answered(watch::PATH, "200");
    tracing::debug!(parent: &span, status = 200, "watch channel open");
    // The watch channel's line is written when it opens, as on the routed path.
    if let Some(access) = access {
        access.status(200).write(0, true);
    }
    match Watcher::start(relay, io, request.last_event_id).await {
        Ok(w) => Lean::Watching(Box::new(w)),
        Err(e) => {
            tracing::debug!(error = %e, "a watcher went away while being caught up");
            Lean::Done
        }
    }
}

/// An open watch channel on its connection. This is all an idle watcher keeps, for as
/// long as it stays connected, so it is kept small: no buffers, no timer of its own (the
/// channel's keep-alive clock is shared by every watcher; a write gets a deadline only
/// while it waits).
pub struct Watcher<I> {
    io: I,
    channel: watch::Channel,
}

/// A connection that can give back the memory of its empty buffers while it waits.
pub trait ReleaseBuffers {
    fn release_buffers(&mut self);
}

impl ReleaseBuffers for tokio::net::TcpStream {
    fn release_buffers(&mut self) {}
}

impl ReleaseBuffers for super::tlsconn::TlsConn {
    fn release_buffers(&mut self) {
        super::tlsconn::TlsConn::release_buffers(self);
    }
}

impl<I: AsyncWrite + ReleaseBuffers + Unpin> Watcher<I> {
    /// Sends the response head and the events after `last_id`.
    async fn start(relay: &Arc<Relay>, mut io: I, last_id: Option<u64>) -> io::Result<Self> {
        let (channel, catch_up) = watch::Channel::open(relay, last_id).await;
        let limit = relay.config.listen.idle_timeout.0;
        let mut out = String::from(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n",
        );
        out.push_str(&catch_up);
        send(&mut io, out.as_bytes(), limit).await?;
        io.release_buffers();
        Ok(Self { io, channel })
    }

    /// Sends each new current bundle's event and the keep-alives until the client goes,
    /// a write stalls for `listen.idle_timeout`, or the relay shuts down. `slot` is the
    /// connection's place under the connection cap, held for as long as this runs.
    pub(crate) async fn run(mut self: Box<Self>, slot: super::ConnectionSlot) {
        let _slot = slot;
        let relay = Arc::clone(self.channel.relay());
        let limit = relay.config.listen.idle_timeout.0;
        while let Some(out) = self.channel.next_frame().await {
            if let Err(e) = send(&mut self.io, out.as_bytes(), limit).await {
                tracing::debug!(error = %e, "watcher gone");
                return;
            }
            self.io.release_buffers();
        }
        if relay.stopping.is_cancelled() {
            let _ = tokio::time::timeout(limit, self.io.shutdown()).await;
        }
    }
}

/// Writes and flushes `bytes`, or fails if the client has not taken them within `limit`
/// (a watcher that stopped reading).
async fn send<I: AsyncWrite + Unpin>(io: &mut I, bytes: &[u8], limit: Duration) -> io::Result<()> {
    match tokio::time::timeout(limit, async {
        io.write_all(bytes).await?;
        io.flush().await
    })
    .await
    {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the watcher took nothing for the idle timeout",
        )),
    }
}

/// How reading a request head ended.
enum Head {
    Complete,
    TooLarge,
    Gone,
}

struct WatchRequest {
    authorization: Option<Vec<u8>>,
    last_event_id: Option<u64>,
    user_agent: Option<axum::http::HeaderValue>,
}

/// The request, if it is a plain HTTP/1.1 `GET` of the watch route.
fn parse(head: &[u8]) -> Option<WatchRequest> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(len) = req.parse(head).ok()? else {
        return None;
    };
    let path = req.path?.split('?').next()?;
    if req.method? != "GET" || path != watch::PATH || req.version? != 1 || len != head.len() {
        return None;
    }
    let mut authorization = None;
    let mut last_event_id = None;
    let mut user_agent = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("user-agent") {
            user_agent = axum::http::HeaderValue::from_bytes(h.value).ok();
        } else if h.name.eq_ignore_ascii_case("authorization") {
            authorization = Some(h.value.to_vec());
        } else if h.name.eq_ignore_ascii_case("last-event-id") {
            last_event_id = std::str::from_utf8(h.value).ok()?.trim().parse().ok();
        } else if h.name.eq_ignore_ascii_case("upgrade")
            || h.name.eq_ignore_ascii_case("expect")
            || h.name.eq_ignore_ascii_case("content-length")
            || h.name.eq_ignore_ascii_case("transfer-encoding")
        {
            return None;
        }
    }
    Some(WatchRequest {
        authorization,
        last_event_id,
        user_agent,
    })
}

async fn write_response<I: AsyncWrite + Unpin>(
    io: &mut I,
    response: axum::response::Response,
) -> io::Result<()> {
    let (parts, body) = response.into_parts();
    let body: Body = body;
    let bytes = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        parts.status.as_u16(),
        parts.status.canonical_reason().unwrap_or("")
    );
    for (name, value) in &parts.headers {
        if let Ok(v) = value.to_str() {
            out.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    out.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        bytes.len()
    ));
    io.write_all(out.as_bytes()).await?;
    io.write_all(&bytes).await?;
    io.shutdown().await
}

/// A connection with bytes already read put back in front of it.
pub struct Rewind<I> {
    prefix: Vec<u8>,
    offset: usize,
    inner: I,
}

impl<I> Rewind<I> {
    pub fn new(prefix: Vec<u8>, inner: I) -> Self {
        Self {
            prefix,
            offset: 0,
            inner,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.offset < self.prefix.len() {
            let rest = &self.prefix[self.offset..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            self.offset += n;
            if self.offset == self.prefix.len() {
                // Give the memory back: a long-lived connection should not keep it.
                self.prefix = Vec::new();
                self.offset = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
