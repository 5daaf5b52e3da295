//! The audit webhook against a real HTTP listener on 127.0.0.1 that fails the first
//! attempt: the audit is retried after the backoff and arrives once, as its JSON.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a panic is the report

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use defender_lite::defense::audit::Audit;
use defender_lite::defense::webhook::{Webhook, WebhookSettings, WebhookStats};
use defender_lite::defense::{Area, Effect};

/// Answers each request with the next status; sends (status, body, when) per request.
fn server(statuses: Vec<u16>) -> (String, mpsc::Receiver<(u16, String, Instant)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks/audits", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for status in statuses {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0usize;
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            assert!(
                request_line.starts_with("POST /hooks/audits "),
                "{request_line}"
            );
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.split_once(':')
                    && k.eq_ignore_ascii_case("content-length")
                {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let mut stream = stream;
            write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
            .unwrap();
            tx.send((status, String::from_utf8(body).unwrap(), Instant::now()))
                .unwrap();
        }
    });
    (url, rx)
}

fn audit() -> Audit {
    Audit {
        time: "2026-12-02T12:00:01Z".into(),
        ts: 1_796_212_801_000_000_000,
        container_id: Some("4f2a".repeat(16)),
        container_name: Some("web".into()),
        image: Some("httpd:2.4".into()),
        rule: "web tier".into(),
        area: Area::Processes,
        effect: Effect::Alert,
        action: "alerted".into(),
        message: "process /usr/bin/nc.openbsd is not in the model of httpd:2.4".into(),
        pid: Some(4300),
        suppressed: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delivery_is_retried_after_a_backoff_and_arrives_once() {
    let (url, requests) = server(vec![503, 200]);
    let mut settings = WebhookSettings::new(&url);
    settings.backoff_base = Duration::from_millis(200);
    let mut webhook = Webhook::start(settings).unwrap();
    let sent = Instant::now();
    webhook.send(&audit());
    // `send` never waits for the network.
    assert!(sent.elapsed() < Duration::from_millis(50));
    let stats = webhook.finish(Duration::from_secs(10)).await;
    assert_eq!(
        stats,
        WebhookStats {
            delivered: 1,
            ..WebhookStats::default()
        }
    );
    let (first, body1, t1) = requests.recv_timeout(Duration::from_secs(5)).unwrap();
    let (second, body2, t2) = requests.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!((first, second), (503, 200));
    assert!(
        t2 - t1 >= Duration::from_millis(200),
        "backoff {:?}",
        t2 - t1
    );
    assert_eq!(body1, body2);
    let got: Audit = serde_json::from_str(&body2).unwrap();
    assert_eq!(got, audit());
    assert!(requests.recv_timeout(Duration::from_millis(300)).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_is_down_costs_the_queue_not_the_caller() {
    // Nothing listens: every attempt fails; the queue holds 2, the rest are dropped.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut settings = WebhookSettings::new(&format!("http://127.0.0.1:{port}/"));
    settings.queue = 2;
    settings.attempts = 2;
    settings.backoff_base = Duration::from_millis(20);
    let mut webhook = Webhook::start(settings).unwrap();
    let sent = Instant::now();
    for _ in 0..10 {
        webhook.send(&audit());
    }
    assert!(sent.elapsed() < Duration::from_millis(100));
    let stats = webhook.finish(Duration::from_secs(10)).await;
    assert_eq!(stats.delivered, 0);
    assert_eq!(stats.failed + stats.dropped, 10, "{stats:?}");
    assert!(stats.dropped >= 7, "{stats:?}");
}
