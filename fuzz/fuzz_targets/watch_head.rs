//! The HTTP/1.1 head reader of the lean path (`server/lean.rs`, `try_serve`): arbitrary
//! client bytes on a real loopback connection to a relay opened in a temp dir (plain HTTP,
//! a bcrypt user and a token that may watch, the sample bundle held, the token's check
//! cached, so conditional manifest checks with it are answered there). Whatever the path
//! does not answer itself goes to hyper with the bytes put back: they must be exactly the
//! bytes sent after the requests it answered, and it answered some only if it wrote 304s.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use relay::bundle::{Sha256, TrustStore};
use relay::server::fuzzing::{Lean, try_serve};
use relay::server::{ClientAddr, Relay};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "fuzz-watch-token";

struct Harness {
    net: fuzz::Loopback,
    relay: Arc<Relay>,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let dir = fuzz::scratch_dir();
        let hash = bcrypt::hash("reader-pw", 4).unwrap();
        std::fs::write(dir.join("htpasswd"), format!("reader:{hash}\n")).unwrap();
        let digest = Sha256::of(TOKEN.as_bytes()).to_hex();
        std::fs::write(dir.join("tokens"), format!("watcher:{digest}\n")).unwrap();
        let mut config = relay::config::Config::default();
        config.storage.data_dir = dir.clone();
        config.listen.insecure_http = true;
        config.auth.htpasswd = Some(dir.join("htpasswd"));
        config.auth.tokens = Some(dir.join("tokens"));
        config.auth.readers = vec!["reader".into(), "watcher".into()];
        // Millions of refused requests from one address: none may lock the next one out.
        config.auth.max_failures = u32::MAX;
        let net = fuzz::Loopback::new();
        let key = fuzz::origin_key();
        let (relay, _notes) = net
            .rt
            .block_on(Relay::open(config, TrustStore::new([key.public()])))
            .expect("opening the relay");
        net.rt
            .block_on(relay::server::install_sample(&relay, &key))
            .expect("installing the sample bundle");
        // One watch request with the token, so its check is cached as a routed request
        // would leave it.
        net.rt.block_on(async {
            let (mut client, server) = net.pair().await;
            let peer = ClientAddr(server.peer_addr().expect("peer address"));
            let head = format!(
                "GET /api/v1/feeds/watch HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
            );
            client
                .write_all(head.as_bytes())
                .await
                .expect("writing the watch request");
            assert!(
                matches!(try_serve(&relay, server, peer).await, Lean::Watching(_)),
                "the token's watch request was not served"
            );
        });
        Harness { net, relay }
    })
}

fn seeds() -> Vec<fuzz::Seed> {
    let head = |name: &str, text: &str| (name.to_owned(), text.as_bytes().to_vec());
    vec![
        head(
            "watch-basic",
            "GET /api/v1/feeds/watch HTTP/1.1\r\nHost: relay\r\nAuthorization: Basic cmVhZGVyOnJlYWRlci1wdw==\r\nAccept: text/event-stream\r\n\r\n",
        ),
        head(
            "watch-token-last-id",
            &format!(
                "GET /api/v1/feeds/watch?x=1 HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer {TOKEN}\r\nLast-Event-ID: 42\r\n\r\n"
            ),
        ),
        head(
            "watch-bare-lf",
            "GET /api/v1/feeds/watch HTTP/1.1\nHost: relay\nAuthorization: Basic cmVhZGVyOndyb25n\n\n",
        ),
        head(
            "watch-no-auth",
            "GET /api/v1/feeds/watch HTTP/1.1\r\nHost: relay\r\n\r\n",
        ),
        head(
            "other-route-with-body",
            "POST /api/v1/feeds/bundle HTTP/1.1\r\nHost: relay\r\nContent-Length: 5\r\n\r\nhello",
        ),
        head(
            "pipelined",
            "GET /api/v1/feeds/watch HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        ),
        head("http2-preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        head(
            "checks-then-ping",
            &format!(
                "GET /api/v1/feeds/manifest HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nIf-None-Match: *\r\n\r\nGET /api/v1/feeds/manifest?a HTTP/1.1\r\nIf-None-Match: \"x\", W/\"y\", *\r\nAuthorization: Bearer {TOKEN}\r\nConnection: keep-alive\r\n\r\nGET /api/v1/_ping HTTP/1.1\r\n\r\n"
            ),
        ),
        head(
            "check-close",
            &format!(
                "GET /api/v1/feeds/manifest HTTP/1.1\nAuthorization: Bearer {TOKEN}\nIf-None-Match: *\nConnection: Close\n\nGET / HTTP/1.1\n\n"
            ),
        ),
    ]
}

fuzz_target!(init: fuzz::seeds(seeds), |data: &[u8]| {
    let h = harness();
    h.net.rt.block_on(async {
        let (mut client, server) = h.net.pair().await;
        let peer = ClientAddr(server.peer_addr().expect("peer address"));
        let send = async {
            // The server may stop reading (a refusal) and close: later writes can fail.
            let _ = client.write_all(data).await;
            let _ = client.shutdown().await;
        };
        let serve = async {
            match try_serve(&h.relay, server, peer).await {
                Lean::Other(mut rewound) => {
                    let mut back = Vec::new();
                    rewound.read_to_end(&mut back).await.expect("reading the rewound stream");
                    assert!(
                        data.ends_with(&back),
                        "hyper would not see the bytes the client sent after those answered"
                    );
                    Some(data.len() - back.len())
                }
                Lean::Watching(_) | Lean::Done => None,
            }
        };
        let ((), answered) = tokio::join!(send, serve);
        if let Some(answered) = answered {
            let mut written = Vec::new();
            let _ = client.read_to_end(&mut written).await;
            const NOT_MODIFIED: &[u8] = b"HTTP/1.1 304 Not Modified\r\n";
            let checks = written
                .windows(NOT_MODIFIED.len())
                .filter(|w| *w == NOT_MODIFIED)
                .count();
            assert_eq!(
                answered > 0,
                checks > 0,
                "{answered} bytes answered, {checks} 304s written"
            );
        }
        drop(client);
    });
});
