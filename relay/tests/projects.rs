//! Projects, in process: a central relay pushing to supervisor relays on loopback with
//! real TLS and stores. (`tests/tests/projects.rs` runs the same as separate processes.)

#![allow(clippy::unwrap_used)]

use crate::support;

use std::time::Duration;

use relay::client::Secret;
use relay::config::{HumanDuration, SupervisorConfig};
use support::server::{TestRelay, fresh_bundle, sequence};

fn supervisor(name: &str, relay: &TestRelay, password: &str) -> SupervisorConfig {
    SupervisorConfig {
        ca_pin: None,
        name: name.into(),
        url: relay.url.clone(),
        user: "uploader".into(),
        password: Secret::new(password),
        ca: Some(relay.ca.clone()),
        proxy: None,
        no_proxy: true,
        allow_insecure_credentials: false,
    }
}

fn fast(c: &mut relay::config::Config) {
    c.projects.retry_min = HumanDuration(Duration::from_millis(100));
    c.projects.retry_max = HumanDuration(Duration::from_millis(500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn central_pushes_each_new_bundle_and_reports_the_fleet() {
    let east = TestRelay::start().await;
    let west = TestRelay::start().await;
    let central = TestRelay::start_with(|c| {
        fast(c);
        c.supervisors = vec![
            supervisor("east", &east, "uploader-pw"),
            supervisor("west", &west, "wrong"),
        ];
    })
    .await;
    assert_eq!(central.upload(fresh_bundle(3)).await.status(), 201);
    east.until("the push", |s| sequence(s) == Some(3)).await;
    let s = central
        .until("west's refusal", |s| {
            s["supervisors"][1]["last_error_kind"] == "auth"
        })
        .await;
    assert_eq!(s["supervisors"][0]["name"], "east");
    assert_eq!(s["supervisors"][0]["sequence"], 3);
    assert_eq!(s["supervisors"][0]["behind"], false);
    assert_eq!(s["supervisors"][1]["behind"], true, "{s:#}");
    assert!(s["supervisors"][1]["next_attempt"].is_string(), "{s:#}");
    assert_eq!(s["supervisors_behind"], 1);
    assert!(sequence(&west.status().await).is_none());

    let page = central.get("/").send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Supervisors (1 of 2 behind)"), "{page}");
    let metrics = central
        .get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("relay_supervisors_behind 1"), "{metrics}");

    // The next bundle follows; a supervisor that already holds one answers 409: delivered.
    assert_eq!(east.upload(fresh_bundle(4)).await.status(), 201);
    assert_eq!(central.upload(fresh_bundle(4)).await.status(), 201);
    let s = central
        .until("east at 4", |s| s["supervisors"][0]["sequence"] == 4)
        .await;
    assert!(s["supervisors"][0]["last_error"].is_null(), "{s:#}");
    central.stop().await;
    east.stop().await;
    west.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_that_pushes_cannot_reach_catches_up_by_pulling_from_central() {
    let central = TestRelay::start_with(fast).await;
    // The supervisor also lists central as an upstream; central's pushes to it fail
    // (wrong password), so what it gets, it pulls.
    let east = TestRelay::start_with(|c| {
        c.sources = vec![relay::config::SourceConfig {
            ca_pin: None,
            kind: relay::client::SourceKind::Upstream,
            url: central.url.clone(),
            token: None,
            user: Some("reader".into()),
            password: Some(Secret::new("reader-pw")),
            ca: Some(central.ca.clone()),
            proxy: None,
            no_proxy: true,
            token_file: None,
            password_file: None,
            allow_insecure_credentials: false,
        }];
    })
    .await;
    let mut config = central.relay_config();
    config.supervisors = vec![supervisor("east", &east, "wrong")];
    let addr = central.addr;
    let stopped = central.stop_keep_dir().await;
    let central = TestRelay::start_on(stopped.dir, config, addr).await;
    assert_eq!(central.upload(fresh_bundle(5)).await.status(), 201);
    east.until("the pull from central", |s| sequence(s) == Some(5))
        .await;
    central
        .until("the push refused all the same", |s| {
            s["supervisors"][0]["last_error_kind"] == "auth"
        })
        .await;
    central.stop().await;
    east.stop().await;
}
