//! A lean path for the watch channel over HTTP/1.1.
//!
//! An idle watcher is the relay's most numerous client: thousands of consoles and agents
//! each hold one connection open for days. Through hyper, each such connection keeps
//! about 16 KiB of HTTP/1 read and header buffers for its whole life. This path reads the
//! request head itself; when it is an authorized `GET /api/v1/feeds/watch`, it answers
//! with a close-delimited `text/event-stream` and keeps only the connection, a watch
//! receiver and a timer. Anything else (another route, HTTP/2, a malformed or partial
//! head) is handed to hyper with the bytes already read put back in front, so every
//! other request behaves exactly as before. Events, catch-up and keep-alives are the
//! same as `watch.rs`'s.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::{ClientAddr, Relay, routes, watch};
use crate::auth::{Decision, Role};

const WATCH_PATH: &str = "/api/v1/feeds/watch";
/// A watch request's head is small; a larger head goes to hyper (and its limits).
const MAX_HEAD: usize = 4096;

/// Serves `io` as a watch channel if that is what it asks for; otherwise gives it back,
/// with what was read, for hyper.
pub async fn try_serve<I>(relay: &Arc<Relay>, mut io: I, client: ClientAddr) -> Option<Rewind<I>>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let mut head = Vec::with_capacity(1024);
    // Boxed, so its buffer is not part of the long-lived watcher's state.
    let complete = Box::pin(tokio::time::timeout(
        relay.config.listen.header_read_timeout.0,
        async {
            let mut chunk = [0u8; 1024];
            loop {
                let n = io.read(&mut chunk).await?;
                if n == 0 {
                    return Ok::<bool, io::Error>(false);
                }
                head.extend_from_slice(&chunk[..n]);
                if head.windows(4).any(|w| w == b"\r\n\r\n") {
                    return Ok(true);
                }
                if head.len() > MAX_HEAD {
                    return Ok(false);
                }
            }
        },
    ))
    .await;
    let Ok(Ok(true)) = complete else {
        // Closed, timed out, too large or cut: hyper applies its own rules to the rest.
        return Some(Rewind::new(head, io));
    };
    let request = match parse(&head) {
        Some(r) => r,
        None => return Some(Rewind::new(head, io)),
    };
    drop(head);
    let decision = relay
        .auth
        .check(
            request.authorization.as_deref(),
            client.0.ip(),
            Role::Reader,
        )
        .await;
    if !matches!(decision, Decision::Allowed(_)) {
        let response = routes::denial(relay, Role::Reader, decision);
        let status = response.status();
        let _ = write_response(&mut io, response).await;
        count(relay, status.as_str());
        return None;
    }
    count(relay, "200");
    let last_event_id = request.last_event_id;
    drop(request);
    let _ = stream_events(relay, io, last_event_id).await;
    None
}

struct WatchRequest {
    authorization: Option<Vec<u8>>,
    last_event_id: Option<u64>,
}

/// The request, if it is a plain HTTP/1.1 `GET` of the watch route.
fn parse(head: &[u8]) -> Option<WatchRequest> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(len) = req.parse(head).ok()? else {
        return None;
    };
    let path = req.path?.split('?').next()?;
    if req.method? != "GET" || path != WATCH_PATH || req.version? != 1 || len != head.len() {
        return None;
    }
    let mut authorization = None;
    let mut last_event_id = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("authorization") {
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
    })
}

async fn stream_events<I: AsyncWrite + Unpin>(
    relay: &Arc<Relay>,
    mut io: I,
    last_id: Option<u64>,
) -> io::Result<()> {
    // Subscribe before reading the backlog, so nothing falls between the two.
    let mut receiver = relay.store.subscribe();
    let backlog = watch::backlog(relay, last_id).await;
    let _guard = watch::WatcherGuard::new(Arc::clone(relay));
    io.write_all(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n",
    )
    .await?;
    let mut last_sent = backlog
        .last()
        .map(|e| e.sequence.0)
        .or(last_id)
        .unwrap_or(0);
    for e in &backlog {
        io.write_all(frame(e).as_bytes()).await?;
    }
    drop(backlog);
    io.flush().await?;
    let keepalive = relay.config.routes.watch_keepalive.0;
    loop {
        tokio::select! {
            changed = receiver.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                let current = receiver.borrow_and_update().clone();
                if let Some(c) = current
                    && c.record.sequence.0 > last_sent
                {
                    last_sent = c.record.sequence.0;
                    let e = crate::store::Event {
                        sequence: c.record.sequence,
                        sha256: c.record.sha256,
                        size: c.record.size,
                    };
                    io.write_all(frame(&e).as_bytes()).await?;
                    io.flush().await?;
                }
            }
            () = tokio::time::sleep(keepalive) => {
                io.write_all(b":keep-alive\n\n").await?;
                io.flush().await?;
            }
            () = relay.stopping.cancelled() => {
                let _ = io.shutdown().await;
                return Ok(());
            }
        }
    }
}

fn frame(e: &crate::store::Event) -> String {
    format!(
        "id: {}\nevent: bundle\ndata: {}\n\n",
        e.sequence,
        watch::event_data(e)
    )
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

fn count(relay: &Relay, status: &str) {
    relay
        .metrics
        .requests
        .with_label_values(&[WATCH_PATH, status])
        .inc();
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
