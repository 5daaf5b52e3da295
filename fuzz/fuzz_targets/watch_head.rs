//! The HTTP/1.1 head reader of the lean watch path (`server/fastwatch.rs`, `try_serve`):
//! arbitrary client bytes on a real loopback connection to a relay opened in a temp dir
//! (plain HTTP, a bcrypt user and a token that may watch). Whatever the path does not
//! answer itself goes to hyper with the bytes put back: they must be exactly the bytes sent.
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
        let (relay, _notes) = net
            .rt
            .block_on(Relay::open(config, TrustStore::new([])))
            .expect("opening the relay");
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
                    assert!(back == data, "hyper would not see the bytes the client sent");
                }
                Lean::Watching(_) | Lean::Done => {}
            }
        };
        tokio::join!(send, serve);
        drop(client);
    });
});
