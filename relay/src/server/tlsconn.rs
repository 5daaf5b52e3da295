//! A server-side TLS connection on rustls's unbuffered API, with buffers this module owns.
//!
//! rustls's buffered connection keeps a 4 KiB receive buffer, and the queues around it,
//! for a connection's whole life. The relay's most numerous clients are idle watchers
//! that hold a connection open for days and never send after their request, so those
//! buffers are most of what a watcher costs. Here the ciphertext and plaintext buffers
//! belong to the connection wrapper: they grow as traffic needs and
//! [`TlsConn::release_buffers`] gives them back when they are empty, which the watch
//! path does after every write. Everything else (the handshake, records, keys, key
//! updates, alerts) is rustls's own work; this module only moves bytes between the
//! socket, rustls's state machine and the caller, as tokio-rustls does for the buffered
//! API.
//!
//! What a connection holds for writing is bounded: its write queue
//! ([`TlsConn::limit_write_queue`], `listen.write_buffer_bytes`: 64 KiB of data by default,
//! in the records that carry it) is all that waits here for the socket. `poll_write` takes
//! only the plaintext whose records fit, and waits for the socket when the queue is full,
//! so a client that stops reading costs the queue and the kernel's socket buffer, never
//! the rest of a response.
//! A fast client loses nothing by it: the kernel's buffer (autotuned, `tcp_wmem`) carries
//! what is in flight, and the queue only has to hold what one write encrypts.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustls::ServerConfig;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How much ciphertext one socket read asks for.
const READ_SIZE: usize = 16 * 1024 + 512;
/// The most ciphertext held unprocessed: a handshake message rustls accepts (64 KiB)
/// plus a record header. More means a peer sending what no record can be.
const MAX_INCOMING: usize = 64 * 1024 + 16 * 1024;
/// The largest plaintext one TLS record carries.
const MAX_RECORD: usize = 16 * 1024;
/// What a record adds to its plaintext, at most: header, nonce, content type and tag make
/// 22 bytes in TLS 1.3 and 29 in TLS 1.2 with AES-GCM; rounded up.
const RECORD_OVERHEAD: usize = 64;
/// The data queued for the socket, at most, unless the server sets another limit.
const DEFAULT_WRITE_QUEUE: usize = 64 * 1024;

pub struct TlsConn {
    tcp: TcpStream,
    conn: UnbufferedServerConnection,
    /// Ciphertext received and not yet processed (its length is what is held).
    incoming: Vec<u8>,
    /// Decrypted application data the caller has not read yet, from `plain_pos`.
    plain: Vec<u8>,
    plain_pos: usize,
    /// Ciphertext for the socket: `outgoing[out_pos..out_end]` is still to be sent. The
    /// vector's length is its usable size (rustls encodes into initialised memory).
    outgoing: Vec<u8>,
    out_pos: usize,
    out_end: usize,
    /// The most ciphertext `outgoing` holds for application data (the records of
    /// `limit_write_queue`'s bytes): `poll_write` encrypts only what fits, and the vector
    /// never grows past it.
    write_limit: usize,
    /// The peer sent close_notify or closed the socket: reads see end of file.
    read_closed: bool,
    /// close_notify is queued: nothing more is written.
    write_closed: bool,
}

/// What one turn of rustls's state machine asks for.
enum Step {
    /// State advanced (records processed, handshake data queued): go on.
    Progress,
    /// rustls needs more ciphertext from the peer.
    NeedRead,
    /// The handshake is done and nothing is pending: application data may be written.
    Ready,
    /// `Some(n)`: n bytes of the caller's plaintext were encrypted and queued.
    Wrote(usize),
    /// The connection is closed in both directions.
    Closed,
}

/// What a turn is asked to do once the connection is ready for application data.
#[derive(Clone, Copy)]
enum Want<'a> {
    Nothing,
    Write(&'a [u8]),
    CloseNotify,
}

fn tls_error(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}"))
}

impl TlsConn {
    /// Runs the server side of the handshake on `tcp`.
    pub async fn accept(tcp: TcpStream, config: Arc<ServerConfig>) -> io::Result<Self> {
        let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
        let mut this = Self {
            tcp,
            conn,
            incoming: Vec::new(),
            plain: Vec::new(),
            plain_pos: 0,
            outgoing: Vec::new(),
            out_pos: 0,
            out_end: 0,
            write_limit: sealed_len(DEFAULT_WRITE_QUEUE),
            read_closed: false,
            write_closed: false,
        };
        std::future::poll_fn(|cx| this.poll_handshake(cx)).await?;
        Ok(this)
    }

    /// The protocol agreed by ALPN.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    /// Caps what is queued for the socket at `bytes` of data (at least one full record),
    /// in the records that carry them: what a peer that stops reading can make this
    /// connection hold, beyond the kernel's socket buffer. A write of `bytes` fits whole
    /// in the empty queue.
    pub fn limit_write_queue(&mut self, bytes: usize) {
        self.write_limit = sealed_len(bytes.max(MAX_RECORD));
    }

    /// Gives back the memory of buffers that hold nothing. A connection that will sit
    /// idle (a watcher between events) then costs only rustls's state and the socket.
    pub fn release_buffers(&mut self) {
        if self.incoming.is_empty() {
            self.incoming = Vec::new();
        }
        if self.plain_pos >= self.plain.len() {
            self.plain = Vec::new();
            self.plain_pos = 0;
        }
        if self.out_pos >= self.out_end {
            self.outgoing = Vec::new();
            self.out_pos = 0;
            self.out_end = 0;
        }
    }

    /// Runs the handshake until application data may be written and nothing rustls
    /// queued is left unsent (for TLS 1.2, the server's Finished comes after the client's).
    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match self.step(Want::Nothing)? {
                Step::Progress | Step::Wrote(_) => {}
                Step::Ready => {
                    ready!(self.poll_send(cx))?;
                    return Poll::Ready(Ok(()));
                }
                Step::NeedRead => {
                    ready!(self.poll_send(cx))?;
                    if ready!(self.poll_receive(cx))? == 0 {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "peer closed the connection during the TLS handshake",
                        )));
                    }
                }
                Step::Closed => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "TLS connection closed during the handshake",
                    )));
                }
            }
        }
    }

    /// One turn of rustls's state machine over the ciphertext held.
    fn step(&mut self, want: Want<'_>) -> io::Result<Step> {
        let Self {
            conn,
            incoming,
            plain,
            outgoing,
            out_end,
            read_closed,
            write_closed,
            ..
        } = self;
        let UnbufferedStatus { mut discard, state } = conn.process_tls_records(&mut incoming[..]);
        let step = match state {
            Err(e) => {
                let error = tls_error(&e);
                // rustls's deframer keeps offsets into this buffer (a handshake message
                // joined across records): what it consumed goes, the rest stays for the
                // call that fetches the alert.
                incoming.drain(..discard);
                self.send_alert();
                return Err(error);
            }
            Ok(ConnectionState::ReadTraffic(mut records)) => {
                while let Some(record) = records.next_record() {
                    let record = record.map_err(tls_error)?;
                    discard += record.discard;
                    plain.extend_from_slice(record.payload);
                }
                Step::Progress
            }
            Ok(ConnectionState::ReadEarlyData(_)) => {
                // Early data is never enabled in the relay's configuration.
                return Err(tls_error("unexpected early data"));
            }
            Ok(ConnectionState::EncodeTlsData(mut data)) => {
                loop {
                    match data.encode(&mut outgoing[*out_end..]) {
                        Ok(n) => {
                            *out_end += n;
                            break;
                        }
                        Err(EncodeError::InsufficientSize(need)) => {
                            grow(outgoing, *out_end + need.required_size);
                        }
                        Err(e) => return Err(tls_error(e)),
                    }
                }
                Step::Progress
            }
            Ok(ConnectionState::TransmitTlsData(data)) => {
                // What it asks to transmit is in `outgoing`, which is always sent
                // before waiting on the peer or returning a flush.
                data.done();
                Step::Progress
            }
            Ok(ConnectionState::BlockedHandshake) => Step::NeedRead,
            Ok(ConnectionState::PeerClosed) => {
                *read_closed = true;
                Step::Progress
            }
            Ok(ConnectionState::Closed) => {
                *read_closed = true;
                Step::Closed
            }
            Ok(ConnectionState::WriteTraffic(mut traffic)) => match want {
                Want::Nothing => Step::Ready,
                Want::Write(data) => {
                    encrypt(outgoing, out_end, data.len(), |out| {
                        traffic.encrypt(data, out)
                    })?;
                    Step::Wrote(data.len())
                }
                Want::CloseNotify => {
                    encrypt(outgoing, out_end, 0, |out| traffic.queue_close_notify(out))?;
                    *write_closed = true;
                    Step::Wrote(0)
                }
            },
            Ok(_) => return Err(tls_error("unknown connection state")),
        };
        if discard > 0 {
            incoming.drain(..discard);
        }
        Ok(step)
    }

    /// After a TLS error: the alert rustls queued for the peer, if any, sent if the
    /// socket takes it now (the connection is closed next either way). rustls is given
    /// the ciphertext it has not consumed, as always: an empty buffer where it expects
    /// bytes it already looked at makes it panic.
    fn send_alert(&mut self) {
        if let Ok(ConnectionState::EncodeTlsData(mut data)) =
            self.conn.process_tls_records(&mut self.incoming[..]).state
        {
            let mut alert = [0u8; 64];
            if let Ok(n) = data.encode(&mut alert) {
                let _ = self
                    .tcp
                    .try_write(&self.outgoing[self.out_pos..self.out_end]);
                let _ = self.tcp.try_write(&alert[..n]);
            }
        }
    }

    /// Reads ciphertext from the socket; `Ready(0)` is end of file.
    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.incoming.len() >= MAX_INCOMING {
            return Poll::Ready(Err(tls_error("peer sent more than any record can hold")));
        }
        loop {
            ready!(self.tcp.poll_read_ready(cx))?;
            self.incoming.reserve(READ_SIZE);
            match self.tcp.try_read_buf(&mut self.incoming) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Sends the queued ciphertext; ready when none is left.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pos < self.out_end {
            let n = ready!(
                Pin::new(&mut self.tcp).poll_write(cx, &self.outgoing[self.out_pos..self.out_end])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_pos += n;
        }
        self.out_pos = 0;
        self.out_end = 0;
        Poll::Ready(Ok(()))
    }

    /// Copies decrypted data held to `buf`; true if any was.
    fn take_plain(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        let held = &self.plain[self.plain_pos..];
        if held.is_empty() {
            return false;
        }
        let n = held.len().min(buf.remaining());
        buf.put_slice(&held[..n]);
        self.plain_pos += n;
        if self.plain_pos == self.plain.len() {
            self.plain.clear();
            self.plain_pos = 0;
        }
        true
    }
}

/// The ciphertext `plaintext` bytes make, at most.
fn sealed_len(plaintext: usize) -> usize {
    plaintext + (plaintext / MAX_RECORD + 1) * RECORD_OVERHEAD
}

/// The most plaintext whose ciphertext fits in `room` bytes (`sealed_len` of it does).
fn plaintext_fitting(room: usize) -> usize {
    room.saturating_sub((room / MAX_RECORD + 1) * RECORD_OVERHEAD)
}

/// Makes `buf` `len` bytes long if it is shorter, allocating no more than that: the
/// capacity is what the connection holds, and `Vec`'s doubling would overshoot the cap.
fn grow(buf: &mut Vec<u8>, len: usize) {
    if buf.len() < len {
        buf.reserve_exact(len - buf.len());
        buf.resize(len, 0);
    }
}

/// Encrypts into `outgoing` after `out_end`, growing it to the size rustls asks for.
fn encrypt(
    outgoing: &mut Vec<u8>,
    out_end: &mut usize,
    plaintext: usize,
    mut f: impl FnMut(&mut [u8]) -> Result<usize, EncryptError>,
) -> io::Result<usize> {
    // Room for the data and each record's overhead, so one try does: within the write
    // limit, since the caller took only what fits.
    grow(outgoing, *out_end + sealed_len(plaintext));
    loop {
        match f(&mut outgoing[*out_end..]) {
            Ok(n) => {
                *out_end += n;
                return Ok(n);
            }
            Err(EncryptError::InsufficientSize(need)) => {
                // More than a record's overhead: a key update rustls queued goes first.
                // Rare and small; sent before anything else is taken.
                grow(outgoing, *out_end + need.required_size);
            }
            Err(e) => return Err(tls_error(e)),
        }
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.take_plain(buf) || this.read_closed {
                return Poll::Ready(Ok(()));
            }
            match this.step(Want::Nothing)? {
                Step::Progress | Step::Wrote(_) => {}
                Step::Closed => return Poll::Ready(Ok(())),
                Step::NeedRead | Step::Ready => {
                    // Whatever rustls queued (a key update's answer, tickets) goes out
                    // before we wait; a full socket does not stop us from reading.
                    if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                        return Poll::Ready(Err(e));
                    }
                    if ready!(this.poll_receive(cx))? == 0 {
                        // The socket closed without close_notify: end of file all the
                        // same (HTTP framing tells a cut body from a whole one).
                        this.read_closed = true;
                        return Poll::Ready(Ok(()));
                    }
                }
            }
        }
    }
}

impl TlsConn {
    /// Encrypts as much of `buf` as the write queue has room for into it; the count
    /// taken. When the room left holds neither all of `buf` nor a full record, first waits
    /// for the socket to take everything queued (rather than cut small records).
    fn poll_encrypt(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.write_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let mut take = self.plaintext_room().min(buf.len());
        if take < buf.len().min(MAX_RECORD) {
            ready!(self.poll_send(cx))?;
            take = self.plaintext_room().min(buf.len());
        }
        if self.out_pos > 0 {
            // Keep what is still to be sent at the front, so the queue does not creep
            // along the buffer and grow it on a socket that never drains completely.
            self.outgoing.copy_within(self.out_pos..self.out_end, 0);
            self.out_end -= self.out_pos;
            self.out_pos = 0;
        }
        let data = &buf[..take];
        loop {
            match self.step(Want::Write(data))? {
                Step::Wrote(n) => return Poll::Ready(Ok(n)),
                Step::Progress | Step::Ready => {}
                Step::NeedRead => {
                    ready!(self.poll_send(cx))?;
                    if ready!(self.poll_receive(cx))? == 0 {
                        return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                    }
                }
                Step::Closed => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            }
        }
    }

    /// The plaintext whose records fit in what the write queue has left.
    fn plaintext_room(&self) -> usize {
        plaintext_fitting(self.write_limit.saturating_sub(self.out_end - self.out_pos))
    }

    /// Starts sending what is queued; what the socket cannot take now goes with the
    /// next write or the flush.
    fn start_send(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.poll_send(cx) {
            Poll::Ready(Err(e)) => Err(e),
            Poll::Ready(Ok(())) | Poll::Pending => Ok(()),
        }
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(this.poll_encrypt(cx, buf))?;
        this.start_send(cx)?;
        Poll::Ready(Ok(n))
    }

    /// Each slice is encrypted in turn (records do not span slices) while the write
    /// queue has room, and sent together. Saying yes to vectored writes spares hyper from
    /// copying each body chunk into a flat buffer first.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut taken = 0;
        for buf in bufs.iter().filter(|b| !b.is_empty()) {
            match this.poll_encrypt(cx, buf) {
                Poll::Ready(Ok(n)) => {
                    taken += n;
                    if n < buf.len() {
                        break;
                    }
                }
                Poll::Ready(Err(e)) if taken == 0 => return Poll::Ready(Err(e)),
                Poll::Pending if taken == 0 => return Poll::Pending,
                // What was taken is reported; the error or the wait comes next call.
                Poll::Ready(Err(_)) | Poll::Pending => break,
            }
        }
        this.start_send(cx)?;
        Poll::Ready(Ok(taken))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while !this.write_closed {
            match this.step(Want::CloseNotify) {
                Ok(Step::Wrote(_)) => {}
                Ok(Step::Progress | Step::Ready) => {}
                // Nothing more can be said to a peer that is gone or mid-handshake.
                Ok(Step::Closed | Step::NeedRead) | Err(_) => this.write_closed = true,
            }
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::TlsConn;

    struct Pair {
        server: TlsConn,
        client: tokio_rustls::client::TlsStream<TcpStream>,
    }

    /// A `TlsConn` and a tokio-rustls client talking over loopback, with `versions`.
    async fn pair(versions: &[&'static rustls::SupportedProtocolVersion]) -> Pair {
        let pki = crate::certs::generate(
            &["127.0.0.1".to_owned()],
            time::OffsetDateTime::now_utc(),
            2,
        )
        .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = vec![CertificateDer::from_pem_slice(pki.server_cert.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(pki.server_key.as_bytes()).unwrap();
        let server_config = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(versions)
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(pki.ca_cert.as_bytes()).unwrap())
            .unwrap();
        let client_config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            TlsConn::accept(tcp, Arc::new(server_config)).await.unwrap()
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let client = tokio_rustls::TlsConnector::from(Arc::new(client_config))
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap();
        Pair {
            server: server.await.unwrap(),
            client,
        }
    }

    fn held(conn: &TlsConn) -> usize {
        conn.incoming.capacity() + conn.plain.capacity() + conn.outgoing.capacity()
    }

    async fn round_trips(versions: &[&'static rustls::SupportedProtocolVersion]) {
        let Pair {
            mut server,
            mut client,
        } = pair(versions).await;

        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut request = [0u8; 18];
        server.read_exact(&mut request).await.unwrap();
        assert_eq!(&request, b"GET / HTTP/1.1\r\n\r\n");

        // Larger than a record and than one write's chunk: split, encrypted and joined.
        let big: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
        let (mut read_half, _write_half) = tokio::io::split(&mut client);
        let reader = async {
            let mut got = vec![0u8; big.len()];
            read_half.read_exact(&mut got).await.unwrap();
            got
        };
        let writer = async {
            server.write_all(&big).await.unwrap();
            server.flush().await.unwrap();
        };
        let (got, ()) = tokio::join!(reader, writer);
        assert_eq!(got, big);

        // Nothing in flight: the buffers go back, and the connection still works.
        assert!(held(&server) > 0);
        server.release_buffers();
        assert_eq!(held(&server), 0);
        client.write_all(b"more").await.unwrap();
        let mut more = [0u8; 4];
        server.read_exact(&mut more).await.unwrap();
        assert_eq!(&more, b"more");

        // close_notify from the server is the client's end of file, and the reverse.
        server.shutdown().await.unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        client.shutdown().await.unwrap();
        let mut tail = [0u8; 8];
        assert_eq!(server.read(&mut tail).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn tls13_round_trips_and_gives_buffers_back() {
        round_trips(&[&rustls::version::TLS13]).await;
    }

    #[tokio::test]
    async fn tls12_round_trips_and_gives_buffers_back() {
        round_trips(&[&rustls::version::TLS12]).await;
    }

    /// What the outgoing queue holds: its capacity (the memory), and the ciphertext in it
    /// still to be sent.
    fn queue(conn: &TlsConn) -> (usize, usize) {
        (conn.outgoing.capacity(), conn.out_end - conn.out_pos)
    }

    /// The byte at `offset` of the stream the server writes in `a_peer_that_stops_reading`.
    fn pattern(offset: usize) -> u8 {
        (offset % 251) as u8
    }

    /// The server writes to a client that reads nothing, one poll at a time (plain and
    /// vectored writes in turn), until the write is pending: the kernel's buffers and
    /// then the queue are full. The queue never holds more than the records of `limit`
    /// bytes, whatever the writes offer; then the client reads everything, in order.
    async fn a_peer_that_stops_reading(
        versions: &[&'static rustls::SupportedProtocolVersion],
        limit: Option<usize>,
    ) {
        use std::pin::Pin;
        use std::task::Poll;

        use tokio::io::AsyncWrite;

        let Pair {
            mut server,
            mut client,
        } = pair(versions).await;
        if let Some(limit) = limit {
            server.limit_write_queue(limit);
        }
        let limit = super::sealed_len(limit.unwrap_or(super::DEFAULT_WRITE_QUEUE));
        // Each write offers 1 MiB, far more than the queue may hold.
        let source: Vec<u8> = (0..(1 << 20) + 251).map(pattern).collect();
        let mut written = 0usize;
        let mut most_held = 0;
        for round in 0.. {
            let at = written % 251;
            let polled = std::future::poll_fn(|cx| {
                let server = Pin::new(&mut server);
                Poll::Ready(if round % 2 == 0 {
                    server.poll_write(cx, &source[at..at + (1 << 20)])
                } else {
                    let bufs = [
                        std::io::IoSlice::new(&source[at..at + 37]),
                        std::io::IoSlice::new(&source[at + 37..at + (1 << 20)]),
                    ];
                    server.poll_write_vectored(cx, &bufs)
                })
            })
            .await;
            let (capacity, queued) = queue(&server);
            most_held = most_held.max(capacity);
            assert!(
                capacity <= limit && queued <= limit,
                "the queue holds {queued} bytes in {capacity}, over its limit of {limit}"
            );
            match polled {
                Poll::Ready(n) => written += n.unwrap(),
                Poll::Pending => break,
            }
            assert!(written < 1 << 30, "the socket never filled");
        }
        // The queue was used up to its limit, less than one record.
        let (_, queued) = queue(&server);
        assert!(
            queued + super::sealed_len(super::MAX_RECORD) > limit,
            "only {queued} of {limit} bytes queued when the write waited"
        );
        assert!(most_held <= limit);

        let (mut read_half, _write_half) = tokio::io::split(&mut client);
        let reader = async {
            let mut got = vec![0u8; written];
            read_half.read_exact(&mut got).await.unwrap();
            got
        };
        let (got, flushed) = tokio::join!(reader, server.flush());
        flushed.unwrap();
        assert!(
            got.iter().enumerate().all(|(i, &b)| b == pattern(i)),
            "the stream came out of order"
        );
    }

    #[tokio::test]
    async fn tls13_a_peer_that_stops_reading_holds_at_most_the_write_queue() {
        a_peer_that_stops_reading(&[&rustls::version::TLS13], None).await;
        a_peer_that_stops_reading(&[&rustls::version::TLS13], Some(24 * 1024)).await;
        a_peer_that_stops_reading(&[&rustls::version::TLS13], Some(256 * 1024)).await;
    }

    #[tokio::test]
    async fn tls12_a_peer_that_stops_reading_holds_at_most_the_write_queue() {
        a_peer_that_stops_reading(&[&rustls::version::TLS12], None).await;
        a_peer_that_stops_reading(&[&rustls::version::TLS12], Some(24 * 1024)).await;
    }

    #[tokio::test]
    async fn the_write_queue_holds_at_least_one_record() {
        let Pair { mut server, .. } = pair(&[&rustls::version::TLS13]).await;
        server.limit_write_queue(100);
        assert_eq!(server.write_limit, super::sealed_len(super::MAX_RECORD));
        // A write of the limit's size fits whole in the empty queue: a full record, and
        // a 64 KiB body chunk in the default queue.
        for bytes in [super::MAX_RECORD, super::DEFAULT_WRITE_QUEUE] {
            assert_eq!(super::plaintext_fitting(super::sealed_len(bytes)), bytes);
        }
        for room in [0, 1, 64, 100, 16_447, 16_448, 65_536, 1 << 20] {
            let p = super::plaintext_fitting(room);
            assert!(
                super::sealed_len(p) <= room.max(super::RECORD_OVERHEAD),
                "{room}"
            );
        }
    }

    /// Sends `bytes` to a `TlsConn` being accepted; the handshake's error, and what the
    /// server sent back before closing.
    async fn refused(bytes: &[u8]) -> (std::io::Error, Vec<u8>) {
        let pki = crate::certs::generate(
            &["127.0.0.1".to_owned()],
            time::OffsetDateTime::now_utc(),
            2,
        )
        .unwrap();
        let chain = vec![CertificateDer::from_pem_slice(pki.server_cert.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(pki.server_key.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            TlsConn::accept(tcp, Arc::new(config)).await.map(|_| ())
        });
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(bytes).await.unwrap();
        let _ = tcp.shutdown().await;
        // A panic in the server task fails here.
        let err = server.await.unwrap().unwrap_err();
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer).await;
        (err, answer)
    }

    #[tokio::test]
    async fn a_peer_that_is_not_tls_is_refused() {
        let (err, answer) = refused(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(err.to_string().contains("TLS"), "{err}");
        // The peer is told (an alert) or at least closed on.
        assert!(answer.len() < 64, "{answer:?}");
    }

    /// Found by the `tls_conn` fuzz target: a handshake message longer than rustls
    /// accepts, whose header fits in one record. rustls refuses it without an alert; the
    /// call that looked for one gave rustls an empty buffer where it held offsets into
    /// the record, and rustls panicked (slice index out of range).
    #[tokio::test]
    async fn an_oversized_handshake_message_is_refused_without_a_panic() {
        let record = [0x16, 0x03, 0x01, 0x00, 0x04, 0x00, 0x03, 0x04, 0x32];
        let (err, answer) = refused(&record).await;
        assert!(err.to_string().contains("TLS"), "{err}");
        assert!(answer.len() < 64, "{answer:?}");
    }
}
