//! The relay console in a real browser: Debian's Chromium, headless, driven over WebDriver
//! (Debian's chromedriver on a loopback port, the `fantoccini` client), against real relay
//! processes: an origin taking uploads; central following it, with a second source that is
//! down (an erroring source), pushing to two supervisors, one of them stopped (a lagging
//! supervisor). The pages load with a reader's credentials, show that state, and follow a
//! new upload without a reload. With `CONSOLE_SCREENSHOTS=DIR` the test saves its
//! screenshots there (the README's come from it). `tests/run` installs chromium and
//! chromium-driver; the test fails, never skips, without them.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use end_to_end::relays::{
    RelayConfig, RelayProcess, build_bundle, generate_key, password, poll, projects_section,
    supervisor_config, supervisor_entry, upstream_source,
};
use end_to_end::{free_port, workspace_root};
use fantoccini::{Client, ClientBuilder, Locator};
use tempfile::TempDir;

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_a_running_fleet_and_follows_a_new_bundle_without_a_reload() {
    let top = TempDir::new().unwrap();
    let (key, public) = generate_key(top.path(), "origin");
    let feeds = workspace_root().join("relay/samples/feeds");
    let bundle = |sequence: u64| {
        build_bundle(
            &feeds,
            &key,
            sequence,
            &top.path().join(format!("bundle-{sequence}.tar.gz")),
        )
    };

    let origin = RelayProcess::start(
        "origin",
        &top.path().join("origin"),
        &RelayConfig::ordinary(&[&public]),
    );
    let east = RelayProcess::start(
        "east",
        &top.path().join("east"),
        &supervisor_config(&public),
    );
    let mut west = RelayProcess::start(
        "west",
        &top.path().join("west"),
        &supervisor_config(&public),
    );
    // A source nobody answers on: a port that was free a moment ago.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("https://127.0.0.1:{}", dead.local_addr().unwrap().port());
    drop(dead);
    let mut central_config = RelayConfig::ordinary(&[&public]);
    // The dead source first: each check tries it, fails, and takes the origin.
    central_config.extra = format!(
        "[[sources]]\nkind = \"upstream\"\nurl = \"{dead_url}\"\nuser = \"reader\"\n\
         password = \"reader-pw\"\nno_proxy = true\n\n{}{}{}{}",
        upstream_source(&origin),
        projects_section(2, "200ms", "1s"),
        supervisor_entry(&east, &password("central")),
        supervisor_entry(&west, &password("central")),
    );
    let central = RelayProcess::start("central", &top.path().join("central"), &central_config);
    west.kill();

    let (status, body) = origin.upload("uploader", bundle(1)).await;
    assert_eq!(status.as_u16(), 201, "{body}");
    poll(LIMIT, async || {
        let s = central.status().await?;
        let ok = s["current"]["sequence"] == 1
            && s["supervisors_behind"] == 1
            && s["sources"][0]["last_error"].is_string();
        ok.then_some(()).ok_or_else(|| format!("{s:#}"))
    })
    .await
    .unwrap();

    let browser = Browser::start().await;
    let shots = std::env::var_os("CONSOLE_SCREENSHOTS").map(PathBuf::from);
    let base = central.url.replace("https://", "https://reader:reader-pw@");

    // The overview: the current bundle, its feeds and signer, the erroring source, the fleet.
    browser.client.goto(&format!("{base}/")).await.unwrap();
    let text = browser.text_of("main").await;
    for expected in [
        "Current bundle",
        "Last streams update",
        "Signed by",
        "osv",
        "Freshness",
        "24 h",
        "36 h",
        &dead_url,
        "connect",
        "2 supervisors, 1 behind",
        "Supervisors (1 of 2 behind)",
        "Watchers",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} not on the overview:\n{text}"
        );
    }
    assert_eq!(browser.text_of("#sequence").await, "1");
    let chart = browser
        .client
        .find(Locator::Css("svg.chart polyline.age"))
        .await
        .unwrap();
    assert!(chart.attr("points").await.unwrap().is_some());
    browser
        .screenshot(shots.as_deref(), "console-overview.png")
        .await;

    // The fleet: west holds nothing and is unreachable; east holds sequence 1.
    browser
        .client
        .goto(&format!("{base}/console/fleet"))
        .await
        .unwrap();
    let fleet = browser.text_of("main").await;
    assert!(
        fleet.contains("holds none") && fleet.contains("unreachable") && fleet.contains("east"),
        "{fleet}"
    );
    browser
        .screenshot(shots.as_deref(), "console-fleet.png")
        .await;

    // History, then back to the overview to watch a new bundle arrive.
    browser
        .client
        .goto(&format!("{base}/console/history"))
        .await
        .unwrap();
    let history = browser.text_of("main").await;
    assert!(
        history.contains("Bundle history") && history.contains("current"),
        "{history}"
    );
    browser.client.goto(&format!("{base}/")).await.unwrap();
    // A mark on this page's window: a reload would drop it.
    browser
        .client
        .execute("window.stillThisPage = 42; return 1;", vec![])
        .await
        .unwrap();
    let (status, body) = origin.upload("uploader", bundle(2)).await;
    assert_eq!(status.as_u16(), 201, "{body}");
    poll(LIMIT, async || {
        let sequence = browser.try_text_of("#sequence").await?;
        (sequence == "2")
            .then_some(())
            .ok_or_else(|| format!("the page shows sequence {sequence}"))
    })
    .await
    .unwrap();
    let mark = browser
        .client
        .execute("return window.stillThisPage;", vec![])
        .await
        .unwrap();
    assert_eq!(mark, serde_json::json!(42), "the page was reloaded");
    browser
        .screenshot(shots.as_deref(), "console-updated.png")
        .await;
    browser.stop().await;
    drop((central, east, west, origin));
}

/// Chromium under chromedriver, headless, and a WebDriver session on it.
struct Browser {
    client: Client,
    driver: Child,
    _profile: TempDir,
}

impl Browser {
    async fn start() -> Self {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (tests/run installs chromium-driver)");
        let profile = TempDir::new().unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert("acceptInsecureCerts".into(), serde_json::json!(true));
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--window-size=1200,1400",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = poll(Duration::from_secs(30), async || {
            ClientBuilder::new(connector.clone())
                .capabilities(caps.clone())
                .connect(&url)
                .await
                .map_err(|e| e.to_string())
        })
        .await
        .unwrap();
        Self {
            client,
            driver,
            _profile: profile,
        }
    }

    async fn try_text_of(&self, css: &str) -> Result<String, String> {
        let element = self
            .client
            .find(Locator::Css(css))
            .await
            .map_err(|e| e.to_string())?;
        element.text().await.map_err(|e| e.to_string())
    }

    async fn text_of(&self, css: &str) -> String {
        self.try_text_of(css).await.unwrap()
    }

    /// The page as a PNG in `dir/name`, when screenshots were asked for.
    async fn screenshot(&self, dir: Option<&Path>, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join(name), png).unwrap();
        }
    }

    async fn stop(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
    }
}
