//! The relay's routes over real TLS on loopback, with a real sled store: downloads and
//! their HTTP semantics, uploads and every refusal, the watch channel, auth, status and
//! metrics.

#![allow(clippy::unwrap_used)]

use crate::support;

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::StatusCode;
use support::server::{TestRelay, fresh_bundle};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_needs_no_credentials() {
    let relay = TestRelay::start().await;
    let r = relay
        .client()
        .get(format!("{}/api/v1/_ping", relay.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "OK");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_bundle_yet_is_404_then_an_upload_is_served() {
    let relay = TestRelay::start().await;
    assert_eq!(
        relay
            .get("/api/v1/feeds/bundle")
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let bundle = fresh_bundle(10);
    let r = relay.upload(bundle.clone()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["sequence"], 10);
    assert_eq!(relay.current_bytes().await, bundle);
    // The same bytes under the custom location and by digest.
    let r = relay
        .get("/intelligence/bundle.tar.gz")
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().to_vec(), bundle);
    let r = relay.get(&location).send().await.unwrap();
    assert_eq!(
        r.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(r.bytes().await.unwrap().to_vec(), bundle);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_headers_conditionals_and_ranges() {
    let relay = TestRelay::start().await;
    let bundle = fresh_bundle(3);
    assert_eq!(relay.upload(bundle.clone()).await.status(), 201);
    let r = relay.get("/api/v1/feeds/bundle").send().await.unwrap();
    let h = r.headers().clone();
    let etag = h["etag"].to_str().unwrap().to_owned();
    let last_modified = h["last-modified"].to_str().unwrap().to_owned();
    assert_eq!(h["content-type"], "application/gzip");
    assert_eq!(h["content-length"], bundle.len().to_string().as_str());
    assert_eq!(h["accept-ranges"], "bytes");
    assert_eq!(
        h["content-disposition"],
        "attachment; filename=\"intel_bundle_3.tar.gz\""
    );
    assert_eq!(etag, format!("\"{}\"", relay::bundle::Sha256::of(&bundle)));

    let get = |headers: &[(&str, &str)]| {
        let mut req = relay.get("/api/v1/feeds/bundle");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send()
    };
    let r = get(&[("if-none-match", &etag)]).await.unwrap();
    assert_eq!(r.status(), 304);
    assert!(r.bytes().await.unwrap().is_empty());
    let r = get(&[("if-none-match", "\"other\", W/\"x\"")])
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = get(&[("if-modified-since", &last_modified)]).await.unwrap();
    assert_eq!(r.status(), 304);
    let r = get(&[("if-modified-since", "Mon, 01 Jan 2001 00:00:00 GMT")])
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let r = get(&[("range", "bytes=10-19")]).await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes 10-19/{}", bundle.len()).as_str()
    );
    assert_eq!(r.bytes().await.unwrap().to_vec(), bundle[10..20]);
    let r = get(&[("range", "bytes=-5")]).await.unwrap();
    assert_eq!(
        r.bytes().await.unwrap().to_vec(),
        bundle[bundle.len() - 5..]
    );
    let r = get(&[("range", &format!("bytes={}-", bundle.len()))])
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes */{}", bundle.len()).as_str()
    );
    // If-Range with our tag: the range applies; with another: the whole body.
    let r = get(&[("range", "bytes=0-9"), ("if-range", &etag)])
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    let r = get(&[("range", "bytes=0-9"), ("if-range", "\"stale\"")])
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), bundle.len());

    let r = relay
        .client()
        .head(format!("{}/api/v1/feeds/bundle", relay.url))
        .basic_auth("reader", Some("reader-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-length"],
        bundle.len().to_string().as_str()
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifest_is_small_verifiable_and_conditional() {
    let relay = TestRelay::start().await;
    let bundle = fresh_bundle(5);
    relay.upload(bundle.clone()).await;
    let r = relay.get("/api/v1/feeds/manifest").send().await.unwrap();
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let body = r.bytes().await.unwrap();
    assert!(body.len() < 8 * 1024, "{} bytes", body.len());
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        doc["bundle"]["sha256"],
        relay::bundle::Sha256::of(&bundle).to_string()
    );
    // The manifest text verifies against the signature with the origin's key.
    let manifest = doc["manifest"].as_str().unwrap();
    let sig: relay::bundle::Signature = serde_json::from_value(doc["signature"].clone()).unwrap();
    let key = support::origin_key().public();
    assert_eq!(sig.key_id, key.key_id());
    assert!(key.verify(manifest.as_bytes(), &sig).is_ok());
    let r = relay
        .get("/api/v1/feeds/manifest")
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_upload_refusal_leaves_the_current_bundle() {
    let relay = TestRelay::start_with(|c| c.storage.max_upload_bytes = 64 * 1024).await;
    let good = fresh_bundle(20);
    assert_eq!(relay.upload(good.clone()).await.status(), 201);

    let r = relay.upload(fresh_bundle(20)).await;
    assert_eq!(r.status(), 409, "same sequence");
    let r = relay.upload(fresh_bundle(19)).await;
    assert_eq!(r.status(), 409, "older");
    let r = relay.upload(vec![7u8; 65 * 1024]).await;
    assert_eq!(r.status(), 413, "over the cap");
    let r = relay.upload(b"not a bundle".to_vec()).await;
    assert_eq!(r.status(), 422);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "not a gzip file");
    let mut flipped = fresh_bundle(21);
    let i = flipped.len() - 30;
    flipped[i] ^= 1;
    assert_eq!(relay.upload(flipped).await.status(), 422);
    let mut truncated = fresh_bundle(22);
    truncated.truncate(truncated.len() / 2);
    let r = relay.upload(truncated).await;
    assert_eq!(r.status(), 422);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "bundle is truncated"
    );

    assert_eq!(relay.current_bytes().await, good);
    // Nothing half-written is left behind.
    let incoming = relay.dir.path().join("store/incoming");
    assert_eq!(std::fs::read_dir(incoming).unwrap().count(), 0);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_cannot_upload_and_an_uploader_can_read() {
    let relay = TestRelay::start().await;
    let r = relay
        .client()
        .put(format!("{}/api/v1/feeds/bundle", relay.url))
        .basic_auth("reader", Some("reader-pw"))
        .body(fresh_bundle(1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = relay
        .client()
        .get(format!("{}/api/v1/status", relay.url))
        .basic_auth("uploader", Some("uploader-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_commit_one_at_a_time() {
    let relay = TestRelay::start().await;
    let uploads = (1..=8).map(|seq| relay.upload(fresh_bundle(seq)));
    let statuses: Vec<u16> = futures_util::future::join_all(uploads)
        .await
        .into_iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 409),
        "{statuses:?}"
    );
    assert!(statuses.contains(&201));
    // Whatever order they landed in, the current bundle is the highest sequence stored,
    // and the store holds it intact.
    let status: serde_json::Value = relay
        .get("/api/v1/status")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let current = status["current"]["sequence"].as_u64().unwrap();
    let held: Vec<u64> = status["held"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(held.first(), Some(&current));
    assert!(held.len() <= 3, "retention 3: {held:?}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_the_newest_three() {
    let relay = TestRelay::start().await;
    let mut digests = Vec::new();
    for seq in 1..=5 {
        let b = fresh_bundle(seq);
        digests.push(relay::bundle::Sha256::of(&b));
        assert_eq!(relay.upload(b).await.status(), 201);
    }
    for (i, d) in digests.iter().enumerate() {
        let status = relay
            .get(&format!("/api/v1/bundles/{d}"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, if i < 2 { 404 } else { 200 }, "bundle {}", i + 1);
    }
    let blobs = relay.dir.path().join("store/blobs");
    assert_eq!(std::fs::read_dir(blobs).unwrap().count(), 3);
    relay.stop().await;
}

/// Reads server-sent events until `n` `data:` lines were seen.
async fn read_events(response: reqwest::Response, n: usize) -> Vec<serde_json::Value> {
    let mut stream = response.bytes_stream();
    let mut text = String::new();
    let mut events = Vec::new();
    while events.len() < n {
        let chunk = stream.next().await.unwrap().unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            for line in block.lines() {
                if let Some(data) = line
                    .strip_prefix("data: ")
                    .or_else(|| line.strip_prefix("data:"))
                {
                    events.push(serde_json::from_str(data).unwrap());
                }
            }
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_hears_each_new_bundle_and_catches_up() {
    let relay =
        TestRelay::start_with(|c| c.routes.watch_keepalive = relay::config::HumanDuration::secs(1))
            .await;
    relay.upload(fresh_bundle(1)).await;
    let watch = relay.get("/api/v1/feeds/watch").send().await.unwrap();
    assert_eq!(watch.headers()["content-type"], "text/event-stream");
    relay.upload(fresh_bundle(2)).await;
    let events = read_events(watch, 1).await;
    assert_eq!(events[0]["sequence"], 2);

    // A client that held sequence 1 gets what it missed, in order.
    relay.upload(fresh_bundle(3)).await;
    let watch = relay
        .get("/api/v1/feeds/watch")
        .header("last-event-id", "1")
        .send()
        .await
        .unwrap();
    let events = read_events(watch, 2).await;
    assert_eq!(events[0]["sequence"], 2);
    assert_eq!(events[1]["sequence"], 3);
    assert_eq!(
        events[1]["sha256"],
        relay::bundle::Sha256::of(&fresh_bundle_digest_source(&relay).await).to_string()
    );

    // Keep-alive comments arrive while nothing happens.
    let watch = relay.get("/api/v1/feeds/watch").send().await.unwrap();
    let mut stream = watch.bytes_stream();
    let chunk = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&chunk).starts_with(':'),
        "{chunk:?}"
    );
    relay.stop().await;
}

async fn fresh_bundle_digest_source(relay: &TestRelay) -> Vec<u8> {
    relay.current_bytes().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_watchers_all_hear_one_upload() {
    // Every watcher here is 127.0.0.1: above the default per-address cap of 1,000.
    let relay = TestRelay::start_with(|c| c.listen.max_connections_per_address = 2_000).await;
    relay.upload(fresh_bundle(1)).await;
    // One connection per watcher, as a thousand consoles and agents would have.
    let ca = std::fs::read(&relay.ca).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .http1_only()
        .no_proxy()
        .build()
        .unwrap();
    let mut watchers = Vec::new();
    for _ in 0..1000 {
        let req = client
            .get(format!("{}/api/v1/feeds/watch", relay.url))
            .basic_auth("reader", Some("reader-pw"));
        watchers.push(tokio::spawn(async move {
            let response = req.send().await.unwrap();
            read_events(response, 1).await
        }));
    }
    // Wait until every watcher is registered, then upload once.
    for _ in 0..300 {
        if relay.relay_watchers() >= 1000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(relay.relay_watchers(), 1000);
    assert_eq!(relay.upload(fresh_bundle(2)).await.status(), 201);
    for w in watchers {
        let events = tokio::time::timeout(Duration::from_secs(30), w)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(events[0]["sequence"], 2);
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_guessing_cannot_lock_out_or_starve_the_others() {
    // The attacker is 127.0.0.2 (loopback too): many HTTP/2 streams of unknown users, each
    // a full-cost bcrypt. At most two checks of one address run at once; the rest are
    // refused at once instead of queueing hashing ahead of everyone.
    let relay = TestRelay::start_with(|c| c.auth.max_failures = 3).await;
    let ca = std::fs::read(&relay.ca).unwrap();
    let attacker = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .http2_prior_knowledge()
        .no_proxy()
        .build()
        .unwrap();
    let url = format!("{}/api/v1/status", relay.url);
    let guesses = (0..40).map(|i| {
        attacker
            .get(&url)
            .basic_auth(format!("user{i}"), Some("guess"))
            .send()
    });
    let answers = futures_util::future::join_all(guesses).await;
    let refused = answers
        .iter()
        .filter(|r| r.as_ref().unwrap().status() == 429)
        .count();
    assert!(refused >= 30, "only {refused} of 40 were refused at once");
    // The same user's guesses lock that user out here, not the other users behind the
    // same address, nor that user elsewhere.
    for _ in 0..3 {
        let r = attacker
            .get(&url)
            .basic_auth("uploader", Some("guess"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let as_user = |client: &reqwest::Client, user: &str| {
        client
            .get(&url)
            .basic_auth(user, Some(format!("{user}-pw")))
            .send()
    };
    assert_eq!(as_user(&attacker, "uploader").await.unwrap().status(), 429);
    assert_eq!(as_user(&attacker, "reader").await.unwrap().status(), 200);
    assert_eq!(
        as_user(&relay.client(), "uploader").await.unwrap().status(),
        200
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_connection_slot() {
    use tokio::io::AsyncReadExt;
    let relay = TestRelay::start_with(|c| c.listen.max_connections_per_address = 5).await;
    let port: u16 = relay.url.rsplit(':').next().unwrap().parse().unwrap();
    let from = |ip: &str| {
        let ip: std::net::IpAddr = ip.parse().unwrap();
        async move {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind((ip, 0).into()).unwrap();
            socket.connect(([127, 0, 0, 1], port).into()).await.unwrap()
        }
    };
    // 127.0.0.2 opens its five and leaves them idle; its sixth is closed at once.
    let mut idle = Vec::new();
    for _ in 0..5 {
        idle.push(from("127.0.0.2").await);
    }
    let mut sixth = from("127.0.0.2").await;
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(10), sixth.read(&mut byte)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the sixth connection was not closed: {read:?}"
    );
    // Another address is still served.
    let r = relay.get("/api/v1/status").send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Closed connections give their slots back.
    drop(idle);
    let ca = std::fs::read(&relay.ca).unwrap();
    let again = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .no_proxy()
        .build()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match again
            .get(format!("{}/api/v1/_ping", relay.url))
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => break,
            other => assert!(
                std::time::Instant::now() < deadline,
                "127.0.0.2 not served again: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_401_then_429() {
    let relay = TestRelay::start_with(|c| c.auth.max_failures = 5).await;
    let client = relay.client();
    let r = client
        .get(format!("{}/api/v1/status", relay.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "no credentials");
    assert_eq!(
        r.headers()["www-authenticate"],
        "Basic realm=\"intelligence-relay\", charset=\"UTF-8\""
    );
    for _ in 0..5 {
        let r = client
            .get(format!("{}/api/v1/status", relay.url))
            .basic_auth("reader", Some("wrong"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    // Locked out now, even with the right password.
    let r = relay.get("/api/v1/status").send().await.unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    // Unknown users and bad bearer tokens fail the same way.
    let metrics = relay.relay.metrics_text();
    assert!(metrics.contains("relay_auth_failures_total 6"), "{metrics}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_read() {
    let relay = TestRelay::start().await;
    relay.upload(fresh_bundle(1)).await;
    let token = relay::auth::add_token(&relay.dir.path().join("tokens"), "downstream").unwrap();
    relay.relay.reload(&[]).await.unwrap();
    let r = relay
        .client()
        .get(format!("{}/api/v1/feeds/manifest", relay.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let stored = std::fs::read_to_string(relay.dir.path().join("tokens")).unwrap();
    assert!(!stored.contains(&token), "token stored in clear");
    let r = relay
        .client()
        .get(format!("{}/api/v1/feeds/manifest", relay.url))
        .bearer_auth("rt_not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_html_and_metrics() {
    let relay = TestRelay::start().await;
    relay.upload(fresh_bundle(4)).await;
    let status: serde_json::Value = relay
        .get("/api/v1/status")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["current"]["sequence"], 4);
    assert_eq!(status["current"]["freshness"], "ok");
    assert_eq!(status["last_streams_update_source"], "upload by uploader");
    let age = status["current"]["age_seconds"].as_i64().unwrap();
    assert!((3600..3700).contains(&age), "{age}");
    let html = relay.get("/").send().await.unwrap().text().await.unwrap();
    assert!(
        html.contains("Last streams update") && html.contains("upload by uploader"),
        "{html}"
    );
    let metrics = relay
        .get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "relay_current_sequence 4",
        "relay_bundle_age_seconds",
        "relay_watchers 0",
        "relay_http_requests_total{route=\"/api/v1/status\",status=\"200\"} 1",
        "relay_http_response_bytes_total",
        "relay_auth_failures_total 0",
    ] {
        assert!(metrics.contains(needle), "{needle} missing from\n{metrics}");
    }
    let r = relay
        .client()
        .get(format!("{}/metrics", relay.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        401,
        "metrics need a reader unless configured public"
    );
    relay.stop().await;
}

/// What the console shows from outside is escaped, and its pages load only the relay's
/// own files and cannot be framed: a signed bundle whose origin is markup shows as text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_escapes_what_it_shows_and_loads_only_its_own_files() {
    let relay = TestRelay::start().await;
    let origin = "<script>alert(1)</script>&\"'";
    let bundle = support::server::fresh_fixture(7)
        .set("origin", serde_json::json!(origin))
        .bundle();
    relay.upload(bundle).await;
    let response = relay.get("/").send().await.unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let csp = header("content-security-policy");
    assert!(
        csp.contains("default-src 'none'")
            && csp.contains("script-src 'self'")
            && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(header("x-frame-options"), "DENY");
    let html = response.text().await.unwrap();
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;&amp;"),
        "the origin, escaped: {html}"
    );
    assert!(!html.contains("<script>alert"), "{html}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freshness_turns_warning_then_critical() {
    let relay = TestRelay::start().await;
    let now = relay::bundle::Timestamp::now();
    let make = |seq: u64, hours: i64| {
        support::Fixture::new()
            .set("sequence", serde_json::json!(seq))
            .set(
                "created",
                serde_json::json!(
                    relay::bundle::Timestamp::from_unix(now.unix() - hours * 3600)
                        .unwrap()
                        .to_string()
                ),
            )
            .set(
                "expires",
                serde_json::json!(now.saturating_add(Duration::from_secs(86400)).to_string()),
            )
            .bundle()
    };
    relay.upload(make(1, 25)).await;
    let s: serde_json::Value = relay
        .get("/api/v1/status")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(s["current"]["freshness"], "warning");
    relay.upload(make(2, 37)).await;
    let s: serde_json::Value = relay
        .get("/api/v1/status")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(s["current"]["freshness"], "critical");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_and_http1_both_work() {
    let relay = TestRelay::start().await;
    relay.upload(fresh_bundle(1)).await;
    let r = relay.get("/api/v1/feeds/manifest").send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let ca = std::fs::read(&relay.ca).unwrap();
    let h1 = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .http1_only()
        .no_proxy()
        .build()
        .unwrap();
    let r = h1
        .get(format!("{}/api/v1/feeds/manifest", relay.url))
        .basic_auth("reader", Some("reader-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(r.status(), 200);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_survives_a_restart() {
    let relay = TestRelay::start().await;
    let bundle = fresh_bundle(9);
    relay.upload(bundle.clone()).await;
    let config = support::server::test_config(relay.dir.path());
    // Reopen the same data dir in a second relay after stopping the first.
    let data = relay.stop_keep_dir().await.dir;
    let again = TestRelay::start_in(data, config).await;
    assert_eq!(again.current_bytes().await, bundle);
    again.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_are_refused() {
    let relay = TestRelay::start().await;
    let r = relay
        .client()
        .get(format!("{}/api/v1/_ping", relay.url))
        .header("x-padding", "a".repeat(40 * 1024))
        .send()
        .await;
    match r {
        Ok(r) => assert_eq!(r.status(), 431),
        Err(e) => assert!(
            e.is_request() || e.is_connect() || e.to_string().contains("error"),
            "{e}"
        ),
    }
    // The relay is fine afterwards.
    assert_eq!(
        relay.get("/api/v1/_ping").send().await.unwrap().status(),
        200
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lean_watch_path_reads_bare_lf_heads_as_hyper_does() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let relay = TestRelay::start().await;
    relay.upload(fresh_bundle(1)).await;
    let auth = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        "reader:reader-pw",
    );
    let mut conn = idle_tls(&relay).await.unwrap();
    let head = format!(
        "GET /api/v1/feeds/watch HTTP/1.1\nHost: localhost\nAuthorization: Basic {auth}\nLast-Event-ID: 0\n\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut text = String::new();
    let mut buf = [0u8; 1024];
    while !text.contains("\"sequence\":1") {
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
            .await
            .expect("an answer to a bare-LF head")
            .unwrap();
        assert!(n > 0, "closed without an answer: {text:?}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("text/event-stream"), "{text}");
    relay.stop().await;
}

/// A TLS connection to the relay that sends nothing.
pub(crate) async fn idle_tls(
    relay: &TestRelay,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use rustls_pki_types::pem::PemObject;
    let ca = std::fs::read(&relay.ca).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(relay.addr).await?;
    connector
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
}

/// Whether the server closes `conn` within `secs`.
pub(crate) async fn closed_within(
    conn: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    secs: u64,
) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(secs), conn.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_closes_extra_connections() {
    let relay = TestRelay::start_with(|c| c.listen.max_connections = 3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(idle_tls(&relay).await.unwrap());
    }
    // The fourth is closed at once: its handshake fails or it is closed unread.
    match idle_tls(&relay).await {
        Err(_) => {}
        Ok(mut extra) => assert!(
            closed_within(&mut extra, 5).await,
            "fourth connection kept open"
        ),
    }
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        relay.get("/api/v1/_ping").send().await.unwrap().status(),
        200
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() {
    let relay = TestRelay::start_with(|c| {
        c.listen.idle_timeout = relay::config::HumanDuration::secs(1);
        c.listen.header_read_timeout = relay::config::HumanDuration::secs(60);
    })
    .await;
    let mut conn = idle_tls(&relay).await.unwrap();
    assert!(
        closed_within(&mut conn, 10).await,
        "idle connection kept open"
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http1_watch_path_behaves_like_the_other() {
    // HTTP/1.1 watchers take the lean path (`server/lean.rs`); its answers must be the
    // same: auth, catch-up, keep-alives, events, metrics.
    let relay = TestRelay::start_with(|c| {
        c.routes.watch_keepalive = relay::config::HumanDuration::secs(1);
        c.auth.max_failures = 3;
    })
    .await;
    let client = relay.h1_client();
    let url = format!("{}/api/v1/feeds/watch", relay.url);
    let r = client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Basic realm=\"intelligence-relay\", charset=\"UTF-8\""
    );
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "credentials required"
    );
    let r = client
        .get(&url)
        .basic_auth("uploader", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    relay.upload(fresh_bundle(1)).await;
    relay.upload(fresh_bundle(2)).await;
    let watch = client
        .get(&url)
        .basic_auth("reader", Some("reader-pw"))
        .header("last-event-id", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(watch.version(), reqwest::Version::HTTP_11);
    assert_eq!(watch.headers()["content-type"], "text/event-stream");
    let mut stream = watch.bytes_stream();
    let mut text = String::new();
    // The catch-up event, then a keep-alive, then a live event.
    while !text.contains("\"sequence\":2") {
        text.push_str(&String::from_utf8_lossy(
            &stream.next().await.unwrap().unwrap(),
        ));
    }
    assert!(text.starts_with("id: 2\nevent: bundle\ndata: {"), "{text}");
    while !text.contains(":keep-alive") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert_eq!(relay.relay_watchers(), 1);
    relay.upload(fresh_bundle(3)).await;
    while !text.contains("\"sequence\":3") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(stream);
    let metrics = relay.relay.metrics_text();
    assert!(
        metrics
            .contains("relay_http_requests_total{route=\"/api/v1/feeds/watch\",status=\"200\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("relay_http_requests_total{route=\"/api/v1/feeds/watch\",status=\"401\"} 2"),
        "{metrics}"
    );

    // Other HTTP/1.1 requests on the same path of code are untouched (a GET with a body
    // goes to hyper too), and lockout applies here as anywhere.
    let r = client
        .get(format!("{}/api/v1/_ping", relay.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "OK");
    // Three failures lock out admin from this address; its right password, never verified
    // before (so not a proven, cached credential), is then refused too.
    for _ in 0..3 {
        client
            .get(&url)
            .basic_auth("admin", Some("nope"))
            .send()
            .await
            .unwrap();
    }
    let r = client
        .get(&url)
        .basic_auth("admin", Some("admin-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    relay.stop().await;
}
