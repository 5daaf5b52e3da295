//! `relay ping ADDRESS`: the manual connectivity troubleshooting, automated. It walks the
//! path a console's request takes (DNS, TCP, proxy CONNECT, TLS and the certificate, HTTP
//! `/api/v1/_ping`, credentials), prints one line per step, and names the step that fails
//! with a hint. Exit 0 only when every step passes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine;
use clap::Args;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Outcome;

#[derive(Debug, Args)]
pub struct PingArgs {
    /// The relay, e.g. https://relay.example:8083
    pub address: String,
    /// CA certificate(s) (PEM) to trust instead of the system's.
    #[arg(long, value_name = "PEM")]
    pub tlscacert: Option<PathBuf>,
    /// The server's public key, pinned (`sha256//BASE64` or `sha256:HEX`), as a source's
    /// `ca_pin`.
    #[arg(long, value_name = "PIN")]
    pub ca_pin: Option<crate::client::tls::KeyPins>,
    /// Check these credentials too.
    #[arg(long, value_name = "USER", requires = "password")]
    pub user: Option<String>,
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "RELAY_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
    /// Go through this HTTP proxy (CONNECT), e.g. http://proxy.example:3128 or
    /// http://user:password@proxy.example:3128.
    #[arg(long, value_name = "URL")]
    pub proxy: Option<String>,
    /// Time allowed for each step.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Print the steps as JSON.
    #[arg(long)]
    pub json: bool,
}

/// One step's outcome.
#[derive(Debug, Serialize)]
pub struct Step {
    pub step: &'static str,
    pub ok: bool,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    pub millis: u128,
}

pub fn run(args: PingArgs) -> anyhow::Result<Outcome> {
    let runtime = super::runtime()?;
    let steps = runtime.block_on(walk(&args))?;
    let ok = steps.iter().all(|s| s.ok);
    if args.json {
        crate::outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"ok": ok, "steps": steps}))?
        )?;
    } else {
        for s in &steps {
            let mark = if s.ok { "ok  " } else { "FAIL" };
            crate::outln!("{mark} {:<6} {} ({} ms)", s.step, s.detail, s.millis)?;
            if let Some(h) = &s.hint {
                crate::outln!("     hint: {h}")?;
            }
        }
    }
    Ok(if ok {
        Outcome::Success
    } else {
        Outcome::CheckFailed
    })
}

/// A parsed `scheme://host:port`.
struct Target {
    tls: bool,
    host: String,
    port: u16,
}

fn parse_target(address: &str) -> anyhow::Result<Target> {
    let (scheme, rest) = address
        .split_once("://")
        .with_context(|| format!("{address}: expected https://host[:port]"))?;
    let tls = match scheme {
        "https" => true,
        "http" => false,
        _ => anyhow::bail!("{address}: the scheme must be https or http"),
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (h, rest) = v6.split_once(']').context("unclosed [ in the address")?;
            (
                h.to_owned(),
                rest.strip_prefix(':').map(str::parse).transpose()?,
            )
        }
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (
                h.to_owned(),
                Some(p.parse().with_context(|| format!("bad port {p:?}"))?),
            ),
            None => (authority.to_owned(), None),
        },
    };
    anyhow::ensure!(!host.is_empty(), "{address}: no host");
    Ok(Target {
        tls,
        port: port.unwrap_or(if tls { 443 } else { 80 }),
        host,
    })
}

async fn walk(args: &PingArgs) -> anyhow::Result<Vec<Step>> {
    let target = parse_target(&args.address)?;
    let proxy = args.proxy.as_deref().map(parse_target).transpose()?;
    let proxy_auth = args.proxy.as_deref().and_then(proxy_credentials);
    let mut steps = Vec::new();
    let t = args.timeout;

    // DNS: the proxy's name when going through one (the proxy resolves the target).
    let (dns_host, dns_port) = match &proxy {
        Some(p) => (p.host.clone(), p.port),
        None => (target.host.clone(), target.port),
    };
    let started = Instant::now();
    let addrs: Vec<SocketAddr> =
        match tokio::time::timeout(t, tokio::net::lookup_host((dns_host.as_str(), dns_port))).await
        {
            Ok(Ok(a)) => a.collect(),
            Ok(Err(e)) => {
                steps.push(fail(
                    "dns",
                    started,
                    format!("{dns_host}: {e}"),
                    "check the name, /etc/hosts and the DNS servers this host uses",
                ));
                return Ok(steps);
            }
            Err(_) => {
                steps.push(fail(
                    "dns",
                    started,
                    format!("{dns_host}: no answer in {t:?}"),
                    "the DNS server does not answer",
                ));
                return Ok(steps);
            }
        };
    let Some(addr) = addrs.first().copied() else {
        steps.push(fail(
            "dns",
            started,
            format!("{dns_host}: no addresses"),
            "the name has no A or AAAA record",
        ));
        return Ok(steps);
    };
    steps.push(pass(
        "dns",
        started,
        format!(
            "{dns_host} -> {}",
            addrs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ));

    let started = Instant::now();
    let mut tcp = match tokio::time::timeout(t, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let hint = if e.kind() == std::io::ErrorKind::ConnectionRefused {
                "nothing listens there: is the relay running, on this port?"
            } else {
                "a firewall or the route drops the connection"
            };
            steps.push(fail("tcp", started, format!("{addr}: {e}"), hint));
            return Ok(steps);
        }
        Err(_) => {
            steps.push(fail(
                "tcp",
                started,
                format!("{addr}: no answer in {t:?}"),
                "a firewall drops the packets, or the host is down",
            ));
            return Ok(steps);
        }
    };
    steps.push(pass("tcp", started, format!("connected to {addr}")));

    if proxy.is_some() {
        let started = Instant::now();
        match tokio::time::timeout(t, connect_through(&mut tcp, &target, proxy_auth.as_deref()))
            .await
        {
            Ok(Ok(())) => steps.push(pass(
                "proxy",
                started,
                format!("CONNECT {}:{} accepted", target.host, target.port),
            )),
            Ok(Err(e)) => {
                steps.push(fail(
                    "proxy",
                    started,
                    e.to_string(),
                    "check the proxy's credentials and that it allows CONNECT to this port",
                ));
                return Ok(steps);
            }
            Err(_) => {
                steps.push(fail(
                    "proxy",
                    started,
                    format!("no answer to CONNECT in {t:?}"),
                    "the proxy does not answer",
                ));
                return Ok(steps);
            }
        }
    }

    if !target.tls {
        return http_steps(tcp, &target, args, steps).await;
    }
    let started = Instant::now();
    let config = match tls_config(args.tlscacert.as_ref(), args.ca_pin.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            steps.push(fail(
                "tls",
                started,
                format!("{e:#}"),
                "pass the relay's CA certificate with --tlscacert",
            ));
            return Ok(steps);
        }
    };
    let name = ServerName::try_from(target.host.clone())
        .context("the host is not a valid TLS server name")?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    match tokio::time::timeout(t, connector.connect(name, tcp)).await {
        Ok(Ok(tls)) => {
            let version = tls
                .get_ref()
                .1
                .protocol_version()
                .map_or("?".into(), |v| format!("{v:?}"));
            steps.push(pass(
                "tls",
                started,
                format!(
                    "handshake done ({version}), certificate valid for {}",
                    target.host
                ),
            ));
            http_steps(tls, &target, args, steps).await
        }
        Ok(Err(e)) => {
            let (detail, hint) = explain_tls(&e, &target.host);
            steps.push(fail("tls", started, detail, &hint));
            Ok(steps)
        }
        Err(_) => {
            steps.push(fail(
                "tls",
                started,
                format!("no handshake in {t:?}"),
                "is this port serving TLS? (plain HTTP needs http://)",
            ));
            Ok(steps)
        }
    }
}

async fn http_steps<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    target: &Target,
    args: &PingArgs,
    mut steps: Vec<Step>,
) -> anyhow::Result<Vec<Step>> {
    let t = args.timeout;
    let started = Instant::now();
    let keep = args.user.is_some();
    match tokio::time::timeout(t, request(&mut io, target, "/api/v1/_ping", None, keep)).await {
        Ok(Ok((200, body))) if body.trim() == "OK" => {
            steps.push(pass("http", started, "GET /api/v1/_ping -> 200 OK".into()))
        }
        Ok(Ok((status, _))) => {
            steps.push(fail("http", started, format!("GET /api/v1/_ping -> {status}"), "this server answers, but it is not a relay (or a proxy in between rewrites the request)"));
            return Ok(steps);
        }
        Ok(Err(e)) => {
            steps.push(fail(
                "http",
                started,
                format!("GET /api/v1/_ping: {e}"),
                "the server closed the connection: check its logs",
            ));
            return Ok(steps);
        }
        Err(_) => {
            steps.push(fail(
                "http",
                started,
                format!("no answer in {t:?}"),
                "the server accepted the connection but does not answer HTTP",
            ));
            return Ok(steps);
        }
    }
    if let (Some(user), Some(password)) = (&args.user, &args.password) {
        let started = Instant::now();
        let credential =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let auth = format!("Basic {credential}");
        match tokio::time::timeout(
            t,
            request(&mut io, target, "/api/v1/status", Some(&auth), false),
        )
        .await
        {
            Ok(Ok((200, _))) => steps.push(pass("auth", started, format!("{user} may read"))),
            Ok(Ok((401, _))) => steps.push(fail(
                "auth",
                started,
                format!("{user}: 401 Unauthorized"),
                "wrong user or password (htpasswd entries must be bcrypt)",
            )),
            Ok(Ok((403, _))) => steps.push(fail(
                "auth",
                started,
                format!("{user}: 403 Forbidden"),
                "the user has no role that may read: add it to auth.readers",
            )),
            Ok(Ok((429, _))) => steps.push(fail(
                "auth",
                started,
                format!("{user}: 429 Too Many Requests"),
                "too many failed attempts from this address: wait for the lockout to end",
            )),
            Ok(Ok((status, _))) => steps.push(fail(
                "auth",
                started,
                format!("{user}: HTTP {status}"),
                "unexpected answer",
            )),
            Ok(Err(e)) => steps.push(fail("auth", started, e.to_string(), "the connection broke")),
            Err(_) => steps.push(fail(
                "auth",
                started,
                format!("no answer in {t:?}"),
                "the server does not answer",
            )),
        }
    }
    Ok(steps)
}

/// One HTTP/1.1 request on an open connection; returns the status and a short body.
async fn request<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    target: &Target,
    path: &str,
    authorization: Option<&str>,
    keep_alive: bool,
) -> anyhow::Result<(u16, String)> {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: relay-ping\r\n",
        target.host, target.port
    );
    if let Some(a) = authorization {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    req.push_str(if keep_alive {
        "\r\n"
    } else {
        "Connection: close\r\n\r\n"
    });
    io.write_all(req.as_bytes()).await?;
    io.flush().await?;
    // Read the head, then the body by Content-Length (bounded).
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = io.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "connection closed before a response");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        anyhow::ensure!(buf.len() < 64 * 1024, "response head too large");
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("not an HTTP response")?;
    let length = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0)
        .min(64 * 1024);
    while buf.len() < head_end + length {
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body =
        String::from_utf8_lossy(&buf[head_end..(head_end + length).min(buf.len())]).into_owned();
    Ok((status, body))
}

async fn connect_through(
    tcp: &mut TcpStream,
    target: &Target,
    auth: Option<&str>,
) -> anyhow::Result<()> {
    let mut req = format!(
        "CONNECT {0}:{1} HTTP/1.1\r\nHost: {0}:{1}\r\n",
        target.host, target.port
    );
    if let Some(a) = auth {
        let encoded = base64::engine::general_purpose::STANDARD.encode(a);
        req.push_str(&format!("Proxy-Authorization: Basic {encoded}\r\n"));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    // Read the proxy's answer head byte by byte: what follows belongs to the tunnel.
    while !buf.ends_with(b"\r\n\r\n") {
        let n = tcp.read(&mut byte).await?;
        anyhow::ensure!(n > 0, "the proxy closed the connection");
        buf.push(byte[0]);
        anyhow::ensure!(buf.len() < 16 * 1024, "proxy answer too large");
    }
    let head = String::from_utf8_lossy(&buf);
    let status = head.split_whitespace().nth(1).unwrap_or("?");
    anyhow::ensure!(
        status == "200",
        "the proxy refused CONNECT: {}",
        head.lines().next().unwrap_or("")
    );
    Ok(())
}

fn proxy_credentials(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    Some(authority.rsplit_once('@')?.0.to_owned())
}

fn tls_config(
    ca: Option<&PathBuf>,
    pins: Option<&crate::client::tls::KeyPins>,
) -> anyhow::Result<rustls::ClientConfig> {
    if ca.is_some() || pins.is_some() {
        // As the sources and downloads trust it: the file's certificates, a server
        // presenting one of them pinned, and the key pins.
        let mut certs = Vec::new();
        if let Some(path) = ca {
            certs = CertificateDer::pem_file_iter(path)
                .with_context(|| format!("reading {}", path.display()))?
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("parsing {}", path.display()))?;
            anyhow::ensure!(
                !certs.is_empty(),
                "{}: no PEM certificate in it",
                path.display()
            );
        }
        let mut config =
            crate::client::tls::client_config(certs, pins.cloned()).map_err(anyhow::Error::msg)?;
        config.alpn_protocols.clear();
        return Ok(config);
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Turns a handshake error into what the operator can act on.
fn explain_tls(e: &std::io::Error, host: &str) -> (String, String) {
    match crate::client::tls::rustls_error_in(e) {
        Some(tls) => crate::client::tls::explain(tls, host, "--tlscacert"),
        None => (
            format!("TLS: {e}"),
            "is this port serving TLS? (plain HTTP needs http://)".into(),
        ),
    }
}

fn pass(step: &'static str, started: Instant, detail: String) -> Step {
    Step {
        step,
        ok: true,
        detail,
        hint: None,
        millis: started.elapsed().as_millis(),
    }
}

fn fail(step: &'static str, started: Instant, detail: String, hint: &str) -> Step {
    Step {
        step,
        ok: false,
        detail,
        hint: Some(hint.to_owned()),
        millis: started.elapsed().as_millis(),
    }
}
