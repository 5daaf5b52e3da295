//! The lean HTTP/1.1 path (`server/lean.rs`) for conditional manifest checks: what it
//! answers itself, what it leaves to hyper, and that both answer alike, over real TLS on
//! loopback and on a bare loopback connection driven through `try_serve`.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use relay::server::ClientAddr;
use relay::server::fuzzing::{Lean, try_serve};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::server_http::{closed_within, idle_tls};
use crate::support::server::{TestRelay, fresh_bundle};

fn basic(user: &str, password: &str) -> String {
    base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{user}:{password}"),
    )
}

/// A conditional manifest check as a daily consumer sends it.
fn check(method: &str, auth: &str, etag: &str, extra: &str) -> String {
    format!(
        "{method} /api/v1/feeds/manifest HTTP/1.1\r\nHost: localhost\r\nUser-Agent: daily/1.0\r\nAuthorization: Basic {auth}\r\nIf-None-Match: {etag}\r\n{extra}\r\n"
    )
}

/// The current manifest's validators, asked for (and the reader's credentials verified,
/// so cached) through the routed path.
async fn validators(relay: &TestRelay) -> (String, String) {
    let r = relay.get("/api/v1/feeds/manifest").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let header = |name: &str| r.headers()[name].to_str().unwrap().to_owned();
    (header("etag"), header("last-modified"))
}

/// Reads one response from `conn` (`pending` holds what was read beyond it): its head,
/// and its body when it declares a length.
async fn response(conn: &mut (impl AsyncRead + Unpin), pending: &mut Vec<u8>) -> (String, Vec<u8>) {
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
            .await
            .expect("a response within 10 s")
            .unwrap();
        assert!(n > 0, "closed before a whole response: {pending:?}");
        pending.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8(pending.drain(..end).collect()).unwrap();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map_or(0, |n| n.trim().parse::<usize>().unwrap());
    while pending.len() < length {
        let n = conn.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed within a body");
        pending.extend_from_slice(&buf[..n]);
    }
    (head, pending.drain(..length).collect())
}

/// A response head without its `date` line, which must be there once, in the HTTP form.
fn without_date(head: &str) -> String {
    let dates: Vec<&str> = head.lines().filter(|l| l.starts_with("date: ")).collect();
    assert_eq!(dates.len(), 1, "{head}");
    assert!(
        httpdate::parse_http_date(&dates[0]["date: ".len()..]).is_ok(),
        "{head}"
    );
    head.split_inclusive("\r\n")
        .filter(|l| !l.starts_with("date: "))
        .collect()
}

fn count(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_answered_lean_reads_as_the_routed_answer_and_the_connection_goes_on() {
    let relay = TestRelay::start().await;
    relay.upload(fresh_bundle(1)).await;
    let (etag, last_modified) = validators(&relay).await;
    let auth = basic("reader", "reader-pw");
    let mut conn = idle_tls(&relay).await.unwrap();
    let mut pending = Vec::new();

    // The reader's check (cached: lean) and the admin's (never verified: hyper's),
    // pipelined: the same answer, in order.
    let both =
        check("GET", &auth, &etag, "") + &check("GET", &basic("admin", "admin-pw"), &etag, "");
    conn.write_all(both.as_bytes()).await.unwrap();
    let (lean, _) = response(&mut conn, &mut pending).await;
    let (routed, _) = response(&mut conn, &mut pending).await;
    assert_eq!(
        without_date(&lean),
        format!(
            "HTTP/1.1 304 Not Modified\r\netag: {etag}\r\nlast-modified: {last_modified}\r\n\r\n"
        )
    );
    assert_eq!(without_date(&lean), without_date(&routed));

    // A tag that is not the current one: the manifest, on the same connection.
    conn.write_all(check("GET", &auth, "\"old\"", "").as_bytes())
        .await
        .unwrap();
    let (head, body) = response(&mut conn, &mut pending).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    let manifest: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        format!("\"{}\"", manifest["bundle"]["sha256"].as_str().unwrap()),
        etag
    );

    // A weak tag in a list matches as on the routed path; asked to close, it closes.
    let list = format!("\"old\", W/{etag}");
    conn.write_all(check("GET", &auth, &list, "Connection: close\r\n").as_bytes())
        .await
        .unwrap();
    let (closing, _) = response(&mut conn, &mut pending).await;
    assert_eq!(
        without_date(&closing),
        format!(
            "HTTP/1.1 304 Not Modified\r\netag: {etag}\r\nlast-modified: {last_modified}\r\nconnection: close\r\n\r\n"
        )
    );
    assert!(closed_within(&mut conn, 5).await, "kept open after close");

    // Each counted once, by route and status.
    let metrics = relay.relay.metrics_text();
    let series = |status: &str| {
        format!("relay_http_requests_total{{route=\"/api/v1/feeds/manifest\",status=\"{status}\"}}")
    };
    assert_eq!(count(&metrics, &series("304")), 3, "{metrics}");
    assert_eq!(count(&metrics, &series("200")), 2, "{metrics}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_the_cache_does_not_hold_are_checked_once_by_the_routed_path() {
    let relay = TestRelay::start_with(|c| c.auth.max_failures = 3).await;
    relay.upload(fresh_bundle(1)).await;
    let r = relay
        .client()
        .get(format!("{}/api/v1/feeds/manifest", relay.url))
        .basic_auth("uploader", Some("uploader-pw"))
        .send()
        .await
        .unwrap();
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let mut pending = Vec::new();

    // A wrong password with the right tag: 401 with the challenge, counted once.
    let mut conn = idle_tls(&relay).await.unwrap();
    let wrong = check("GET", &basic("reader", "wrong"), &etag, "");
    conn.write_all(wrong.as_bytes()).await.unwrap();
    let (head, _) = response(&mut conn, &mut pending).await;
    assert!(head.starts_with("HTTP/1.1 401 "), "{head}");
    assert!(head.contains("www-authenticate: Basic realm="), "{head}");
    let metrics = relay.relay.metrics_text();
    assert_eq!(count(&metrics, "relay_auth_failures_total"), 1, "{metrics}");

    // The reader, never verified yet: verified by the routed path, then cached.
    let reader = check("GET", &basic("reader", "reader-pw"), &etag, "");
    conn.write_all(format!("{reader}{reader}").as_bytes())
        .await
        .unwrap();
    for _ in 0..2 {
        let (head, _) = response(&mut conn, &mut pending).await;
        assert!(head.starts_with("HTTP/1.1 304 "), "{head}");
    }
    let metrics = relay.relay.metrics_text();
    assert_eq!(count(&metrics, "relay_auth_failures_total"), 1, "{metrics}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lean_path_answers_cached_checks_itself_and_gives_the_rest_back_untouched() {
    let relay = TestRelay::start().await;
    relay.upload(fresh_bundle(1)).await;
    let (etag, _) = validators(&relay).await;
    let auth = basic("reader", "reader-pw");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let serve = |sent: String| {
        let relay = std::sync::Arc::clone(&relay.relay);
        let listener = &listener;
        async move {
            let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
                .await
                .unwrap();
            let (server, peer) = listener.accept().await.unwrap();
            client.write_all(sent.as_bytes()).await.unwrap();
            let lean = try_serve(&relay, server, ClientAddr(peer)).await;
            (client, lean)
        }
    };

    // Two cached checks and a ping, pipelined: the checks are answered here, the ping's
    // bytes (and only they) are what hyper gets.
    let ping = "GET /api/v1/_ping HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let one = check("GET", &auth, &etag, "");
    let (mut client, lean) = serve(format!("{one}{one}{ping}")).await;
    let Lean::Other(mut rewound) = lean else {
        panic!("the ping was not handed on");
    };
    let mut back = vec![0u8; ping.len()];
    rewound.read_exact(&mut back).await.unwrap();
    assert_eq!(back, ping.as_bytes());
    let mut pending = Vec::new();
    for _ in 0..2 {
        let (head, _) = response(&mut client, &mut pending).await;
        assert!(head.starts_with("HTTP/1.1 304 Not Modified\r\n"), "{head}");
    }
    assert!(pending.is_empty(), "more than two answers: {pending:?}");

    // What the lean path does not answer is given back whole, nothing written: a tag
    // that does not match, credentials not cached, HTTP/1.0, a body, a HEAD.
    for sent in [
        check("GET", &auth, "\"old\"", ""),
        check("GET", &basic("reader", "wrong"), &etag, ""),
        check("GET", &basic("admin", "admin-pw"), &etag, ""),
        check("GET", &auth, &etag, "").replace("HTTP/1.1", "HTTP/1.0"),
        check("GET", &auth, &etag, "Content-Length: 0\r\n"),
        check("HEAD", &auth, &etag, ""),
    ] {
        let (mut client, lean) = serve(sent.clone()).await;
        let Lean::Other(mut rewound) = lean else {
            panic!("answered by the lean path: {sent}");
        };
        let mut back = vec![0u8; sent.len()];
        rewound.read_exact(&mut back).await.unwrap();
        assert_eq!(back, sent.as_bytes());
        drop(rewound);
        let mut written = Vec::new();
        client.read_to_end(&mut written).await.unwrap();
        assert!(written.is_empty(), "{sent}: wrote {written:?}");
    }
    let metrics = relay.relay.metrics_text();
    assert_eq!(count(&metrics, "relay_auth_failures_total"), 0, "{metrics}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_read_timeout() {
    let relay = TestRelay::start_with(|c| {
        c.listen.header_read_timeout = relay::config::HumanDuration::secs(1);
    })
    .await;
    relay.upload(fresh_bundle(1)).await;
    let (etag, _) = validators(&relay).await;
    let mut conn = idle_tls(&relay).await.unwrap();
    conn.write_all(check("GET", &basic("reader", "reader-pw"), &etag, "").as_bytes())
        .await
        .unwrap();
    let (head, _) = response(&mut conn, &mut Vec::new()).await;
    assert!(head.starts_with("HTTP/1.1 304 "), "{head}");
    assert!(
        closed_within(&mut conn, 10).await,
        "an idle keep-alive connection kept open"
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relays_own_client_speaks_http1_so_its_checks_and_watch_take_the_lean_path() {
    let relay = TestRelay::start().await;
    relay.upload(fresh_bundle(1)).await;
    // As a source, `relay download` and the agent build it.
    let mut endpoint = relay::client::Endpoint::new(&relay.url);
    endpoint.ca = Some(relay.ca.clone());
    endpoint.no_env_proxy = true;
    endpoint.credential = relay::client::Credential::Basic {
        user: "reader".into(),
        password: relay::client::Secret::new("reader-pw"),
    };
    let client = endpoint.client().unwrap();
    let manifest = format!("{}/api/v1/feeds/manifest", relay.url);
    let first = endpoint
        .authorize(client.get(&manifest))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (first.status().as_u16(), first.version()),
        (200, reqwest::Version::HTTP_11)
    );
    let etag = first.headers()["etag"].clone();
    let check = endpoint
        .authorize(client.get(&manifest))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(
        (check.status().as_u16(), check.version()),
        (304, reqwest::Version::HTTP_11)
    );
    let watch = endpoint
        .authorize(client.get(format!("{}/api/v1/feeds/watch", relay.url)))
        .send()
        .await
        .unwrap();
    assert_eq!(watch.version(), reqwest::Version::HTTP_11);
    assert_eq!(watch.headers()["content-type"], "text/event-stream");
    drop(watch);
    relay.stop().await;
}
