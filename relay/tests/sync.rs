//! A relay that pulls from sources: an upstream relay followed over its watch channel, a
//! custom location, and upstreams that fail or lie. Every test runs real relays over real
//! TLS on loopback; the lying upstream is a small server of the test's own (no real relay
//! would serve such answers).

#![allow(clippy::unwrap_used)]

use crate::support;

use std::time::Duration;

use relay::client::{Secret, SourceKind};
use relay::config::{Config, HumanDuration, SourceConfig};
use support::server::{TestRelay, fresh_bundle, sequence};

/// An upstream source entry for `upstream`, as its reader.
fn upstream_source(upstream: &TestRelay) -> SourceConfig {
    SourceConfig {
        ca_pin: None,
        kind: SourceKind::Upstream,
        url: upstream.url.clone(),
        token: None,
        user: Some("reader".into()),
        password: Some(Secret::new("reader-pw")),
        ca: Some(upstream.ca.clone()),
        proxy: None,
        no_proxy: true,
        token_file: None,
        password_file: None,
        allow_insecure_credentials: false,
    }
}

/// Fast schedules for tests: retry every second, poll every second.
fn fast(config: &mut Config) {
    config.schedule.retry = "* * * * * *".into();
    config.schedule.backoff_base = HumanDuration(Duration::from_millis(100));
    config.schedule.backoff_max = HumanDuration(Duration::from_millis(400));
    config.schedule.poll_interval = HumanDuration::secs(1);
    config.schedule.jitter = HumanDuration::secs(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_upstream_is_served_downstream_at_once() {
    let a = TestRelay::start().await;
    assert_eq!(a.upload(fresh_bundle(1)).await.status(), 201);
    let source = upstream_source(&a);
    let b = TestRelay::start_with(|c| c.sources = vec![source]).await;
    b.until("the first pull", |s| sequence(s) == Some(1)).await;
    b.until("the watch channel", |s| {
        s["sources"][0]["watch"] == "connected"
    })
    .await;

    // No schedule fires within the test (daily check); the watch channel brings it.
    let bundle = fresh_bundle(2);
    assert_eq!(a.upload(bundle.clone()).await.status(), 201);
    let s = b.until("the new bundle", |s| sequence(s) == Some(2)).await;
    assert_eq!(b.current_bytes().await, bundle);
    assert!(
        s["last_streams_update_source"]
            .as_str()
            .unwrap()
            .starts_with("upstream https://127.0.0.1:")
    );
    assert!(s["next_check"].is_string(), "{s:#}");
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_upstream_leaves_the_bundle_served_and_is_caught_up_at_the_retry() {
    let a = TestRelay::start().await;
    a.upload(fresh_bundle(1)).await;
    let a_addr = a.addr;
    let a_dir = a.stop_keep_dir().await.dir;
    let source = SourceConfig {
        url: format!("https://127.0.0.1:{}", a_addr.port()),
        ca: Some(a_dir.path().join("tls/ca.pem")),
        ..upstream_source_placeholder()
    };
    let b = TestRelay::start_with(|c| {
        c.sources = vec![source];
        fast(c);
    })
    .await;
    b.upload(fresh_bundle(1)).await; // B holds something of its own
    let s = b
        .until("the failure in status", |s| {
            s["failing"] == true || s["last_error"].is_string()
        })
        .await;
    assert_eq!(s["sources"][0]["last_error_kind"], "connect", "{s:#}");
    assert!(s["next_check"].is_string(), "{s:#}");
    assert_eq!(
        b.get("/api/v1/feeds/bundle").send().await.unwrap().status(),
        200
    );

    // A comes back on the same port with a newer bundle: B catches up at a retry.
    let config = support::server::test_config(a_dir.path());
    let mut config = config;
    config.listen.address = a_addr;
    let a = TestRelay::start_on(a_dir, config, a_addr).await;
    a.upload(fresh_bundle(3)).await;
    b.until("catching up", |s| sequence(s) == Some(3)).await;
    let s = b.status().await;
    assert!(s["last_error"].is_null(), "{s:#}");
    b.stop().await;
    a.stop().await;
}

fn upstream_source_placeholder() -> SourceConfig {
    SourceConfig {
        ca_pin: None,
        kind: SourceKind::Upstream,
        url: String::new(),
        token: None,
        user: Some("reader".into()),
        password: Some(Secret::new("reader-pw")),
        ca: None,
        proxy: None,
        no_proxy: true,
        token_file: None,
        password_file: None,
        allow_insecure_credentials: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_source_is_used_when_the_first_fails() {
    let a = TestRelay::start().await;
    a.upload(fresh_bundle(4)).await;
    let dead = SourceConfig {
        url: "https://127.0.0.1:9".into(), // discard port: nothing listens
        ..upstream_source_placeholder()
    };
    let custom = SourceConfig {
        kind: SourceKind::CustomLocation,
        url: format!("{}/intelligence/bundle.tar.gz", a.url),
        ..upstream_source(&a)
    };
    let b = TestRelay::start_with(|c| {
        c.sources = vec![dead, custom];
        fast(c);
    })
    .await;
    // The store holds the bundle a moment before the source's status says where from.
    let s = b
        .until("the fallback", |s| {
            sequence(s) == Some(4) && s["sources"][1]["last_success"].is_string()
        })
        .await;
    assert_eq!(s["sources"][0]["last_error_kind"], "connect", "{s:#}");
    assert!(
        s["last_streams_update_source"]
            .as_str()
            .unwrap()
            .starts_with("custom location")
    );
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_reported_as_such() {
    let a = TestRelay::start().await;
    a.upload(fresh_bundle(1)).await;
    let source = SourceConfig {
        password: Some(Secret::new("wrong")),
        ..upstream_source(&a)
    };
    let b = TestRelay::start_with(|c| {
        c.sources = vec![source];
        fast(c);
    })
    .await;
    let s = b
        .until("the auth error", |s| {
            s["sources"][0]["last_error_kind"].is_string()
        })
        .await;
    assert_eq!(s["sources"][0]["last_error_kind"], "unauthorized", "{s:#}");
    assert!(s["current"].is_null());
    b.stop().await;
    a.stop().await;
}

/// What the lying upstream serves.
#[derive(Clone)]
struct Lie {
    sequence: u64,
    bundle: Vec<u8>,
    /// Bytes per 100 ms, when dripping.
    drip: Option<usize>,
}

/// A plain-HTTP server that speaks the upstream API but serves whatever `lie` says.
async fn lying_upstream(lie: Lie) -> String {
    use axum::extract::State;
    use axum::routing::get;
    let state = std::sync::Arc::new(lie);
    let app = axum::Router::new()
        .route(
            "/api/v1/feeds/manifest",
            get(|State(l): State<std::sync::Arc<Lie>>| async move {
                axum::Json(serde_json::json!({
                    "bundle": {"sha256": relay::bundle::Sha256::of(&l.bundle).to_string(), "size": l.bundle.len()},
                    "sequence": l.sequence,
                }))
            }),
        )
        .route(
            "/api/v1/bundles/{sha}",
            get(|State(l): State<std::sync::Arc<Lie>>| async move {
                match l.drip {
                    None => axum::body::Body::from(l.bundle.clone()),
                    Some(n) => {
                        let chunks: Vec<Vec<u8>> = l.bundle.chunks(n).map(<[u8]>::to_vec).collect();
                        let stream = futures_util::stream::iter(chunks).then(|c| async move {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            Ok::<_, std::io::Error>(c)
                        });
                        axum::body::Body::from_stream(stream)
                    }
                }
            }),
        )
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

use futures_util::StreamExt;

/// A relay whose only source is `app`, served on 127.0.0.1 as a plain-HTTP upstream,
/// with the quick retries of `fast`.
async fn following(app: axum::Router) -> TestRelay {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    following_url(url).await
}

/// A relay whose only source is the upstream at `url`, with the quick retries of `fast`.
async fn following_url(url: String) -> TestRelay {
    let source = SourceConfig {
        url,
        user: None,
        password: None,
        ..upstream_source_placeholder()
    };
    TestRelay::start_with(|c| {
        c.sources = vec![source];
        fast(c);
    })
    .await
}

/// B holds sequence 5, follows a lying upstream, and must refuse what it serves.
/// Starts a relay holding a bundle, with `lie` as its only source; checks the pull fails
/// as `expected_kind` and the held bundle is kept. Returns the relay's status.
async fn refuses(
    lie: Lie,
    expected_kind: &str,
    tweak: impl FnOnce(&mut Config),
) -> serde_json::Value {
    let url = lying_upstream(lie).await;
    let source = SourceConfig {
        url,
        user: None,
        password: None,
        ..upstream_source_placeholder()
    };
    let b = TestRelay::start_with(|c| {
        c.sources = vec![source];
        fast(c);
        tweak(c);
    })
    .await;
    let held = fresh_bundle(5);
    b.upload(held.clone()).await;
    let s = b
        .until(expected_kind, |s| {
            s["sources"][0]["last_error_kind"].is_string()
        })
        .await;
    assert_eq!(s["sources"][0]["last_error_kind"], expected_kind, "{s:#}");
    assert!(s["failing"].as_bool().unwrap(), "{s:#}");
    assert_eq!(b.current_bytes().await, held, "the held bundle is kept");
    let downloads = b.dir.path().join("store/downloads");
    let leftovers: Vec<_> = std::fs::read_dir(downloads)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    if expected_kind != "timeout" {
        assert!(
            leftovers
                .iter()
                .all(|n| n.to_string_lossy().ends_with(".etag")),
            "{leftovers:?}"
        );
    }
    b.stop().await;
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_refused() {
    refuses(
        Lie {
            sequence: 9,
            bundle: b"<html>proxy error</html>".to_vec(),
            drip: None,
        },
        "verification",
        |_| {},
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_bundle_is_refused() {
    let mut bundle = fresh_bundle(9);
    bundle.truncate(bundle.len() / 2);
    refuses(
        Lie {
            sequence: 9,
            bundle,
            drip: None,
        },
        "verification",
        |_| {},
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrongly_signed_bundle_is_refused() {
    let mut f = support::Fixture::new();
    f.key = [2; 32];
    let now = relay::bundle::Timestamp::now();
    let key_id = f.key().key_id().to_string();
    let f = f
        .set("sequence", serde_json::json!(9))
        .set("key_id", serde_json::json!(key_id))
        .set(
            "created",
            serde_json::json!(
                relay::bundle::Timestamp::from_unix(now.unix() - 60)
                    .unwrap()
                    .to_string()
            ),
        )
        .set(
            "expires",
            serde_json::json!(now.saturating_add(Duration::from_secs(86400)).to_string()),
        );
    refuses(
        Lie {
            sequence: 9,
            bundle: f.bundle(),
            drip: None,
        },
        "verification",
        |_| {},
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_sequence_is_refused() {
    refuses(
        Lie {
            sequence: 3,
            bundle: fresh_bundle(3),
            drip: None,
        },
        "older",
        |_| {},
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dripping_body_is_cut_at_the_floor() {
    refuses(
        Lie {
            sequence: 9,
            bundle: fresh_bundle(9),
            drip: Some(8),
        },
        "timeout",
        |c| {
            c.schedule.min_transfer_rate = 1000;
            c.schedule.transfer_floor_window = HumanDuration::secs(1);
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_in_a_source_url_is_never_shown() {
    // Nothing listens on port 1: the check fails, and the error quotes the URL.
    let b = following_url("https://relay:s3cret-pw@127.0.0.1:1/".into()).await;
    let s = b
        .until("the failed check", |s| {
            s["sources"][0]["last_error_kind"].is_string()
        })
        .await;
    let text = s.to_string();
    assert!(!text.contains("s3cret-pw"), "{text}");
    assert_eq!(s["sources"][0]["url"], "https://***@127.0.0.1:1/", "{s:#}");
    assert!(
        s["sources"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("https://***@127.0.0.1:1/"),
        "{s:#}"
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_manifest_is_cut_off_at_the_cap() {
    // No Content-Length, and bytes without end: the cap must apply while reading.
    let app = axum::Router::new().route(
        "/api/v1/feeds/manifest",
        axum::routing::get(|| async {
            let chunk = vec![b' '; 64 * 1024];
            let stream = futures_util::stream::repeat(chunk).map(Ok::<_, std::io::Error>);
            axum::body::Body::from_stream(stream)
        }),
    );
    let b = following(app).await;
    let held = fresh_bundle(5);
    b.upload(held.clone()).await;
    let s = b
        .until("the cut-off", |s| {
            s["sources"][0]["last_error_kind"].is_string()
        })
        .await;
    assert_eq!(s["sources"][0]["last_error_kind"], "too_large", "{s:#}");
    assert_eq!(b.current_bytes().await, held, "the held bundle is kept");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_force_refresh_checks_at_once() {
    let a = TestRelay::start().await;
    a.upload(fresh_bundle(1)).await;
    // A custom location has no watch channel: only the schedule or an admin brings news.
    let custom = SourceConfig {
        kind: SourceKind::CustomLocation,
        url: format!("{}/intelligence/bundle.tar.gz", a.url),
        ..upstream_source(&a)
    };
    let b = TestRelay::start_with(|c| c.sources = vec![custom]).await;
    b.until("the first pull", |s| sequence(s) == Some(1)).await;
    a.upload(fresh_bundle(2)).await;
    let refresh = |user: &str, pw: &str| {
        b.client()
            .put(format!("{}/api/v1/feeds/force-refresh", b.url))
            .basic_auth(user, Some(pw))
            .send()
    };
    assert_eq!(refresh("reader", "reader-pw").await.unwrap().status(), 403);
    assert_eq!(refresh("admin", "admin-pw").await.unwrap().status(), 202);
    b.until("the forced check", |s| sequence(s) == Some(2))
        .await;
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&hits);
    let app = axum::Router::new().route(
        "/api/v1/feeds/manifest",
        axum::routing::get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async {
                (
                    axum::http::StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", "3600")],
                    "slow down",
                )
            }
        }),
    );
    let b = following(app).await;
    let s = b
        .until("the 429", |s| {
            s["sources"][0]["last_error_kind"].is_string()
        })
        .await;
    assert_eq!(s["sources"][0]["last_error_kind"], "rate_limited", "{s:#}");
    let not_before: relay::bundle::Timestamp = s["sources"][0]["not_before"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        not_before.unix() - relay::bundle::Timestamp::now().unix() > 3000,
        "{s:#}"
    );
    // Retries run every second, yet the source is not asked again before its time.
    let asked = hits.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        hits.load(Ordering::SeqCst),
        asked,
        "asked again before Retry-After"
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_retry_after_is_capped_and_a_force_refresh_overrides_it() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&hits);
    let app = axum::Router::new().route(
        "/api/v1/feeds/manifest",
        axum::routing::get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async {
                (
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    // Thirty years.
                    [("retry-after", "946080000")],
                    "come back later",
                )
            }
        }),
    );
    let b = following(app).await;
    let s = b
        .until("the 503", |s| {
            s["sources"][0]["last_error_kind"].is_string()
        })
        .await;
    let not_before: relay::bundle::Timestamp = s["sources"][0]["not_before"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let wait = not_before.unix() - relay::bundle::Timestamp::now().unix();
    assert!(wait <= 6 * 3600, "Retry-After not capped: {wait} s");
    // An admin's force-refresh asks again at once, Retry-After or not.
    let asked = hits.load(Ordering::SeqCst);
    let r = b
        .client()
        .put(format!("{}/api/v1/feeds/force-refresh", b.url))
        .basic_auth("admin", Some("admin-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while hits.load(Ordering::SeqCst) == asked {
        assert!(
            std::time::Instant::now() < deadline,
            "not asked after force-refresh"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_ends_the_failure_backoff() {
    // B starts before A holds anything: its first check fails (404) and backs off for an
    // hour. A's first bundle must still reach B at once, by the watch channel.
    let a = TestRelay::start().await;
    let source = upstream_source(&a);
    let b = TestRelay::start_with(|c| {
        c.sources = vec![source];
        c.schedule.backoff_base = HumanDuration::secs(3600);
    })
    .await;
    b.until("the first failure", |s| {
        s["sources"][0]["last_error_kind"] == "not_found"
    })
    .await;
    b.until("the watch channel", |s| {
        s["sources"][0]["watch"] == "connected"
    })
    .await;
    a.upload(fresh_bundle(1)).await;
    b.until("the bundle despite the backoff", |s| sequence(s) == Some(1))
        .await;
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_cut_halfway_resumes_where_it_stopped() {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    // An upstream that cuts the first transfer of the bundle halfway, then serves ranges.
    let bundle = fresh_bundle(9);
    let sent = std::sync::Arc::new(AtomicUsize::new(0));
    let ranges = std::sync::Arc::new(Mutex::new(Vec::<String>::new()));
    let app = {
        let (b1, b2) = (bundle.clone(), bundle.clone());
        let (sent, ranges) = (std::sync::Arc::clone(&sent), std::sync::Arc::clone(&ranges));
        let first = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        axum::Router::new()
            .route(
                "/api/v1/feeds/manifest",
                axum::routing::get(move || {
                    let b = b1.clone();
                    async move {
                        axum::Json(serde_json::json!({
                            "bundle": {"sha256": relay::bundle::Sha256::of(&b).to_string(), "size": b.len()},
                            "sequence": 9,
                        }))
                    }
                }),
            )
            .route(
                "/api/v1/bundles/{sha}",
                axum::routing::get(move |headers: axum::http::HeaderMap| {
                    let (b, sent, ranges, first) = (b2.clone(), sent.clone(), ranges.clone(), first.clone());
                    async move {
                        let etag = "\"v1\"";
                        if first.swap(false, Ordering::SeqCst) {
                            // Promise the whole file, send half, then break the connection.
                            let half = b[..b.len() / 2].to_vec();
                            sent.fetch_add(half.len(), Ordering::SeqCst);
                            // The half goes out first; the connection breaks a moment later.
                            let stream = futures_util::stream::iter(vec![Some(half), None]).then(
                                |chunk| async move {
                                    match chunk {
                                        Some(c) => Ok::<_, std::io::Error>(c),
                                        None => {
                                            tokio::time::sleep(Duration::from_millis(300)).await;
                                            Err(std::io::Error::other("cut"))
                                        }
                                    }
                                },
                            );
                            return axum::response::Response::builder()
                                .header("etag", etag)
                                .header("content-length", b.len())
                                .body(axum::body::Body::from_stream(stream))
                                .unwrap();
                        }
                        let range = headers.get("range").map(|v| v.to_str().unwrap().to_owned());
                        ranges.lock().unwrap().push(range.clone().unwrap_or_default());
                        let start: usize = range
                            .as_deref()
                            .and_then(|r| r.strip_prefix("bytes=")?.strip_suffix('-')?.parse().ok())
                            .unwrap_or(0);
                        sent.fetch_add(b.len() - start, Ordering::SeqCst);
                        axum::response::Response::builder()
                            .status(if start > 0 { 206 } else { 200 })
                            .header("etag", etag)
                            .header("content-range", format!("bytes {start}-{}/{}", b.len() - 1, b.len()))
                            .body(axum::body::Body::from(b[start..].to_vec()))
                            .unwrap()
                    }
                }),
            )
    };
    let b = following(app).await;
    b.until("the resumed bundle", |s| sequence(s) == Some(9))
        .await;
    assert_eq!(b.current_bytes().await, bundle);
    let ranges = ranges.lock().unwrap().clone();
    assert_eq!(
        ranges,
        vec![format!("bytes={}-", bundle.len() / 2)],
        "the second request resumes at the cut"
    );
    assert_eq!(
        sent.load(Ordering::SeqCst),
        bundle.len(),
        "no byte was sent twice"
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_just_above_the_floor_is_cut_at_the_whole_transfer_deadline() {
    let bundle = fresh_bundle(9);
    // 100 bytes every 100 ms: twice the floor of 500 B/s, so only the deadline (1 s,
    // plus the size at 256 KiB/s) can end it before the last byte, seconds later.
    assert!(bundle.len() > 2_000, "{} bytes", bundle.len());
    let s = refuses(
        Lie {
            sequence: 9,
            bundle,
            drip: Some(100),
        },
        "timeout",
        |c| {
            c.schedule.min_transfer_rate = 500;
            c.schedule.transfer_floor_window = HumanDuration::secs(1);
            c.schedule.transfer_deadline = HumanDuration::secs(1);
        },
    )
    .await;
    let error = s["sources"][0]["last_error"].as_str().unwrap();
    assert!(error.contains("not complete within"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_downloads_of_other_bundles_are_removed() {
    let a = TestRelay::start().await;
    let source = upstream_source(&a);
    let b = TestRelay::start_with(|c| {
        c.sources = vec![source];
        fast(c);
    })
    .await;
    // Left by an interrupted download of a bundle the upstream no longer offers, and
    // files that are not bundle partials.
    let downloads = b.dir.path().join("store/downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let stale = downloads.join(format!("partial-{}", "ab".repeat(32)));
    std::fs::write(&stale, vec![7u8; 4096]).unwrap();
    std::fs::write(stale.with_extension("etag"), "\"old\"").unwrap();
    let custom = downloads.join("partial-custom-0123456789abcdef");
    let archive = downloads.join("partial-archive-twistlock");
    std::fs::write(&custom, b"kept").unwrap();
    std::fs::write(&archive, b"kept").unwrap();

    assert_eq!(a.upload(fresh_bundle(1)).await.status(), 201);
    b.until("the bundle", |s| sequence(s) == Some(1)).await;
    assert!(!stale.exists(), "the stale partial is removed");
    assert!(!stale.with_extension("etag").exists());
    assert!(
        custom.exists() && archive.exists(),
        "other partials are not"
    );
    b.stop().await;
    a.stop().await;
}
