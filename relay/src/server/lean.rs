//! The lean HTTP/1.1 path: the two requests the relay answers most, without hyper.
//!
//! Most of a relay's HTTP/1.1 traffic is two requests, and this path reads each
//! connection's request heads itself to answer them:
//!
//! - **The watch channel.** An idle watcher is the relay's most numerous client:
//!   thousands of consoles and agents each hold one connection open for days. Through
//!   hyper, each such connection keeps about 16 KiB of HTTP/1 read and header buffers for
//!   its whole life. An authorized `GET /api/v1/feeds/watch` is answered here with a
//!   close-delimited `text/event-stream` and handed back as a [`Watcher`]: the
//!   connection, two channel receivers and a sequence number, which the server runs as a
//!   task of its own so that nothing of the accept path's larger state stays allocated
//!   for the watcher's life. Events, catch-up and keep-alives come from the channel core
//!   both paths share (`watch::Channel`); this path writes its frames.
//! - **The daily check.** Every consumer asks for the manifest with the `ETag` it holds,
//!   and nearly always gets `304 Not Modified`. Through hyper, axum and the layers such a
//!   check costs a dozen allocations (request, header map, extensions, response, span
//!   and access bookkeeping); here, a `GET /api/v1/feeds/manifest` whose
//!   `If-None-Match` names the current bundle, from credentials the auth cache holds as
//!   verified for a reader, is answered `304` with the bytes hyper would send (`etag`,
//!   `last-modified`, `connection: close` when asked, `date`), and the connection is kept
//!   for its next request. `tests/bench/vs-nginx` (b) measures what that saves.
//!
//! Anything else (another route, HTTP/1.0 or HTTP/2, a body, an upgrade, credentials
//! that are not cached, a tag that does not match, a malformed or oversized head) is
//! handed to hyper with the bytes not yet answered put back in front, so every other
//! request behaves exactly as before; a connection may begin here and go on in hyper.
//! The lean path only answers what the routed path would answer the same way: a
//! credential it does not find cached is left to hyper's auth layer, so a failure is
//! verified, counted and locked out once, there.
//!
//! What the layers do for a routed request is done here too: the same span and events as
//! `TraceLayer`, the same metrics (requests by route and status, bytes served), the same
//! access line. A head is bounded as hyper bounds it: [`MAX_HEAD`] bytes (a larger one goes
//! to hyper and its own limit), `listen.header_read_timeout` to arrive (so, as in hyper,
//! an idle keep-alive connection is closed after it) and `listen.idle_timeout` between
//! reads.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::{ClientAddr, Relay, access, files, routes, watch};
use crate::auth::{Decision, Role};

/// A head this path answers is small; a larger head goes to hyper (and its limits).
const MAX_HEAD: usize = 4096;

/// What the lean path made of a connection.
pub enum Lean<I> {
    /// An authorized watch channel, answered and caught up: [`Watcher::run`] keeps it.
    Watching(Box<Watcher<I>>),
    /// Anything else, for hyper, with the bytes read and not answered put back in front.
    Other(Rewind<I>),
    /// Answered and closed (refused credentials, a client that closed or asked to, a
    /// write that failed, or the relay stopping).
    Done,
}

/// Reads request heads on `io` and answers those this path serves (see the module's
/// doc): a conditional manifest check is answered and the next head read; an authorized
/// `GET /api/v1/feeds/watch` is answered (response head and catch-up events) and handed
/// back as a [`Watcher`]; anything else is given back, with what was read and not
/// answered, for hyper.
pub async fn try_serve<I>(relay: &Arc<Relay>, mut io: I, client: ClientAddr) -> Lean<I>
where
    I: AsyncRead + AsyncWrite + ReleaseBuffers + Unpin,
{
    // Bytes read and not yet answered: the head being read (and, from a client that
    // pipelines, the start of the next).
    let mut input = Vec::with_capacity(1024);
    // A 304's bytes, made again for each check.
    let mut out = Vec::new();
    loop {
        let parsed = match read_head(relay, &mut io, &mut input).await {
            Ok(parsed) => parsed,
            // Closed, idle, too slow or broken: nothing to answer.
            Err(Gone) => return Lean::Done,
        };
        match parsed {
            Parsed::Check(check) => {
                let started = std::time::Instant::now();
                let span = request_span(files::MANIFEST_PATH, client);
                check.write(&mut out);
                let limit = relay.config.listen.idle_timeout.0;
                let sent = send(&mut io, &out, limit).await;
                check.finish(relay, client, started, &span);
                if let Err(e) = sent {
                    tracing::debug!(error = %e, "a client went away before its 304");
                    return Lean::Done;
                }
                input.drain(..check.len);
                // Asked to close, or the relay is stopping: the connection ends here, as
                // hyper ends a keep-alive connection at shutdown.
                if check.close || relay.stopping.is_cancelled() {
                    let _ = tokio::time::timeout(limit, io.shutdown()).await;
                    return Lean::Done;
                }
            }
            Parsed::Watch(request) => return open_watch(relay, io, request, client).await,
            Parsed::Other | Parsed::Partial => return Lean::Other(Rewind::new(input, io)),
        }
    }
}

/// The connection closed, broke, idled or was too slow while a head was awaited.
struct Gone;

/// Reads into `input` until it holds a head this path can judge; what it is, or
/// [`Parsed::Other`] for a head too large for this path.
async fn read_head<I: AsyncRead + Unpin>(
    relay: &Arc<Relay>,
    io: &mut I,
    input: &mut Vec<u8>,
) -> Result<Parsed, Gone> {
    let listen = &relay.config.listen;
    let deadline = tokio::time::Instant::now() + listen.header_read_timeout.0;
    loop {
        match parse(relay, input) {
            Parsed::Partial if input.len() <= MAX_HEAD => {}
            // Too large for this path: hyper applies its own limit and answers.
            Parsed::Partial => return Ok(Parsed::Other),
            parsed => return Ok(parsed),
        }
        // One timer per read: the head's deadline, or the idle limit if that comes first.
        let until = deadline.min(tokio::time::Instant::now() + listen.idle_timeout.0);
        input.reserve(1024);
        match tokio::time::timeout_at(until, io.read_buf(input)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(Ok(_) | Err(_)) | Err(_) => return Err(Gone),
        }
    }
}

/// A request's span, and its first event: the same as `TraceLayer` gives a routed request
/// (only `GET` over HTTP/1.1 comes this way).
fn request_span(uri: &'static str, client: ClientAddr) -> tracing::Span {
    let span = tracing::debug_span!(
        "request",
        method = "GET",
        uri,
        version = "HTTP/1.1",
        client = %client.0,
    );
    tracing::debug!(parent: &span, "started processing request");
    span
}

/// Answers an HTTP/1.1 watch request: refused, or opened and caught up.
async fn open_watch<I>(
    relay: &Arc<Relay>,
    mut io: I,
    request: WatchRequest,
    client: ClientAddr,
) -> Lean<I>
where
    I: AsyncRead + AsyncWrite + ReleaseBuffers + Unpin,
{
    let started = std::time::Instant::now();
    let idle = relay.config.listen.idle_timeout.0;
    let span = request_span(watch::PATH, client);
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

/// What a request head asks of this path.
enum Parsed {
    /// Not all of the head yet.
    Partial,
    /// A conditional manifest check this path answers `304`.
    Check(Check),
    /// A watch request (and nothing after it).
    Watch(WatchRequest),
    /// Anything else: for hyper.
    Other,
}

struct WatchRequest {
    authorization: Option<Vec<u8>>,
    last_event_id: Option<u64>,
    user_agent: Option<axum::http::HeaderValue>,
}

/// A conditional manifest check this path answers `304 Not Modified`.
struct Check {
    /// The head's length: where the next request begins.
    len: usize,
    /// The client asked to close the connection after this response.
    close: bool,
    /// The current bundle, whose validators the response carries.
    current: Arc<crate::store::Current>,
    /// For the access line, when there is one: who asked, with what.
    user: Option<String>,
    user_agent: Option<axum::http::HeaderValue>,
}

impl Check {
    /// The response, into `out`: what hyper writes for the routed 304, byte for byte
    /// (the header order, `connection: close` when the client asked for it, the date
    /// last).
    fn write(&self, out: &mut Vec<u8>) {
        let v = files::current_validators(&self.current);
        out.clear();
        out.extend_from_slice(b"HTTP/1.1 304 Not Modified\r\netag: ");
        out.extend_from_slice(&v.etag);
        out.extend_from_slice(b"\r\nlast-modified: ");
        out.extend_from_slice(&v.last_modified);
        if self.close {
            out.extend_from_slice(b"\r\nconnection: close");
        }
        out.extend_from_slice(b"\r\ndate: ");
        http_date_now(|date| out.extend_from_slice(date));
        out.extend_from_slice(b"\r\n\r\n");
    }

    /// What the routed path's layers do once a response is sent: the span's last event,
    /// the metrics, the access line.
    fn finish(
        &self,
        relay: &Relay,
        client: ClientAddr,
        started: std::time::Instant,
        span: &tracing::Span,
    ) {
        relay.metrics.answered(files::MANIFEST_PATH, "304");
        relay.metrics.served(files::MANIFEST_PATH, 0);
        if let Some(user) = &self.user {
            access::Entry::new(
                started,
                Some(client),
                "GET",
                files::MANIFEST_PATH,
                self.user_agent.as_ref(),
            )
            .user(user)
            .status(304)
            .write(0, true);
        }
        tracing::debug!(
            parent: span,
            latency = ?started.elapsed(),
            status = 304,
            "finished processing request"
        );
    }
}

/// `date`'s value now, in the HTTP form; made once a second per thread, as hyper does.
fn http_date_now(f: impl FnOnce(&[u8])) {
    use std::cell::RefCell;
    use std::time::SystemTime;
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, text)| {
        if *at != second || text.is_empty() {
            *at = second;
            *text = httpdate::fmt_http_date(now);
        }
        f(text.as_bytes());
    });
}

/// What the head at the start of `input` asks of this path.
fn parse(relay: &Relay, input: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(input) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    let (Some("GET"), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Parsed::Other;
    };
    let path = target.split('?').next().unwrap_or_default();
    // A request with a body, an upgrade or an expectation is hyper's.
    let plain = req.headers.iter().all(|h| {
        !["upgrade", "expect", "content-length", "transfer-encoding"]
            .iter()
            .any(|name| h.name.eq_ignore_ascii_case(name))
    });
    if !plain {
        return Parsed::Other;
    }
    if path == watch::PATH && len == input.len() {
        return watch_request(req.headers).map_or(Parsed::Other, Parsed::Watch);
    }
    if path == files::MANIFEST_PATH {
        return check(relay, req.headers, len).map_or(Parsed::Other, Parsed::Check);
    }
    Parsed::Other
}

fn watch_request(headers: &[httparse::Header<'_>]) -> Option<WatchRequest> {
    let mut request = WatchRequest {
        authorization: None,
        last_event_id: None,
        user_agent: None,
    };
    for h in headers {
        // The first of each, as the routed path reads them.
        if h.name.eq_ignore_ascii_case("user-agent") && request.user_agent.is_none() {
            request.user_agent = axum::http::HeaderValue::from_bytes(h.value).ok();
        } else if h.name.eq_ignore_ascii_case("authorization") && request.authorization.is_none() {
            request.authorization = Some(h.value.to_vec());
        } else if h.name.eq_ignore_ascii_case("last-event-id") {
            request.last_event_id = std::str::from_utf8(h.value).ok()?.trim().parse().ok();
        }
    }
    Some(request)
}

/// The check, if this path answers it: its `If-None-Match` names the current bundle, and
/// its credentials are cached as a reader's (or better). Anything else — no bundle, no
/// match, credentials to verify, a role that does not allow it — is hyper's to answer.
fn check(relay: &Relay, headers: &[httparse::Header<'_>], len: usize) -> Option<Check> {
    let current = relay.store.current()?;
    let etag = files::etag_text(files::current_validators(&current));
    let mut matched = false;
    let mut authorization = None;
    let mut close = false;
    let mut user_agent = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("if-none-match") {
            // As `HeaderValue::to_str` reads it on the routed path: visible ASCII only.
            matched |= header_text(h.value).is_some_and(|v| files::tag_list_matches(v, etag));
        } else if h.name.eq_ignore_ascii_case("authorization") {
            // The first, as the routed path reads it.
            authorization = authorization.or(Some(h.value));
        } else if h.name.eq_ignore_ascii_case("connection") {
            close |= header_text(h.value).is_some_and(|v| {
                v.split(',')
                    .any(|token| token.trim().eq_ignore_ascii_case("close"))
            });
        } else if h.name.eq_ignore_ascii_case("user-agent") {
            user_agent = user_agent.or(Some(h.value));
        }
    }
    if !matched {
        return None;
    }
    let Some(Decision::Allowed(principal)) = relay.auth.cached(authorization?, Role::Reader) else {
        return None;
    };
    let (user, user_agent) = if relay.config.listen.access_log {
        (
            Some(principal.name),
            user_agent.and_then(|v| axum::http::HeaderValue::from_bytes(v).ok()),
        )
    } else {
        (None, None)
    };
    Some(Check {
        len,
        close,
        current,
        user,
        user_agent,
    })
}

/// A header value as text, if it is visible ASCII (and tabs), as `HeaderValue::to_str`
/// requires.
fn header_text(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
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
