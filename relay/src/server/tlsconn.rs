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
/// Plaintext taken per `poll_write`; the caller writes the rest in the next call.
const WRITE_CHUNK: usize = 256 * 1024;
/// Ciphertext queued for the socket above which `poll_write` waits for it to drain.
const MAX_OUTGOING: usize = 512 * 1024;

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
                            outgoing.resize(*out_end + need.required_size, 0);
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
    /// socket takes it now (the connection is closed next either way).
    fn send_alert(&mut self) {
        if let Ok(ConnectionState::EncodeTlsData(mut data)) =
            self.conn.process_tls_records(&mut []).state
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

/// Encrypts into `outgoing` after `out_end`, growing it to the size rustls asks for.
fn encrypt(
    outgoing: &mut Vec<u8>,
    out_end: &mut usize,
    plaintext: usize,
    mut f: impl FnMut(&mut [u8]) -> Result<usize, EncryptError>,
) -> io::Result<usize> {
    // Room for the data and a record's overhead per 16 KiB, so one try usually does.
    let guess = *out_end + plaintext + (plaintext / 16384 + 1) * 64;
    if outgoing.len() < guess {
        outgoing.resize(guess, 0);
    }
    loop {
        match f(&mut outgoing[*out_end..]) {
            Ok(n) => {
                *out_end += n;
                return Ok(n);
            }
            Err(EncryptError::InsufficientSize(need)) => {
                outgoing.resize(*out_end + need.required_size, 0);
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
    /// Encrypts up to `WRITE_CHUNK` bytes of `buf` into the outgoing queue, first waiting
    /// for the socket if the queue is full; the count taken.
    fn poll_encrypt(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.write_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if self.out_end - self.out_pos >= MAX_OUTGOING {
            ready!(self.poll_send(cx))?;
        }
        if self.out_pos > 0 {
            // Keep what is still to be sent at the front, so the queue does not creep
            // along the buffer and grow it on a socket that never drains completely.
            self.outgoing.copy_within(self.out_pos..self.out_end, 0);
            self.out_end -= self.out_pos;
            self.out_pos = 0;
        }
        let data = &buf[..buf.len().min(WRITE_CHUNK)];
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

    /// Each slice is encrypted in turn (records do not span slices), up to the same
    /// amount per call as `poll_write`, and sent together. Saying yes to vectored writes
    /// spares hyper from copying each body chunk into a flat buffer first.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut taken = 0;
        for buf in bufs.iter().filter(|b| !b.is_empty()) {
            if taken >= WRITE_CHUNK {
                break;
            }
            let slice = &buf[..buf.len().min(WRITE_CHUNK - taken)];
            match this.poll_encrypt(cx, slice) {
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

    #[tokio::test]
    async fn a_peer_that_is_not_tls_is_refused() {
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
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let err = server.await.unwrap().unwrap_err();
        assert!(err.to_string().contains("TLS"), "{err}");
        // The peer is told (an alert) or at least closed on.
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer).await;
        assert!(answer.len() < 64, "{answer:?}");
    }
}
