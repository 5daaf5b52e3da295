//! Projects, end to end: real relay processes on 127.0.0.1, each with its own data
//! directory, dev CA and credentials. An origin relay takes uploads; central follows it
//! (an `upstream` source with the reader's credential) and pushes each new current bundle
//! to three supervisors, ordinary relays whose only uploader is central's credential and
//! which trust the origin's key. The tests look at every relay from outside (its status,
//! manifest, held bundles, metrics, the CLI) and wait by polling with a deadline.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use end_to_end::relays::{
    RelayConfig, RelayProcess, build_bundle, generate_key, metric, password, poll,
    projects_section, supervisor_config, supervisor_entry, upstream_source,
};
use end_to_end::{binary, workspace_root};
use relay::bundle::Sha256;
use serde_json::Value;
use tempfile::TempDir;

/// Long enough for five relays per test, several tests at once, on two busy cores.
const LIMIT: Duration = Duration::from_secs(60);
const SUPERVISORS: [&str; 3] = ["east", "west", "north"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_at_the_origin_reaches_every_supervisor() {
    let mesh = Mesh::start(Options::default());
    for sequence in 1..=2 {
        let bundle = mesh.bundle(sequence);
        let sha = Sha256::of(&bundle).to_string();
        mesh.upload_to_origin(bundle).await;
        mesh.wait_all_hold(sequence, &sha).await;
    }
    let status = mesh.central.status().await.unwrap();
    assert_eq!(
        status["supervisors"].as_array().unwrap().len(),
        3,
        "{status}"
    );
    for name in SUPERVISORS {
        let entry = entry(&status, name).unwrap();
        assert_eq!(entry["url"], mesh.supervisor(name).url.as_str(), "{entry}");
        assert!(entry["last_attempt"].is_string(), "{entry}");
        assert!(entry["last_error_kind"].is_null(), "{entry}");
    }
    let metrics = mesh.central_metrics().await.unwrap();
    assert_eq!(
        metric(&metrics, "relay_supervisors_behind"),
        Some(0.0),
        "{metrics}"
    );
    assert!(
        metric(&metrics, "relay_supervisor_oldest_bundle_age_seconds").is_some(),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_that_was_down_gets_the_bundle_when_it_is_back() {
    let mut mesh = Mesh::start(Options::default());
    mesh.upload_and_wait(1).await;

    mesh.supervisor_mut("east").kill();
    let second = mesh.bundle(2);
    let sha2 = Sha256::of(&second).to_string();
    mesh.upload_to_origin(second).await;
    mesh.wait("central shows east behind and unreachable", async || {
        let status = mesh.central.status().await?;
        let east = entry(&status, "east")?;
        expect(east, "sequence", 1)?;
        expect(east, "behind", true)?;
        expect(east, "last_error_kind", "unreachable")?;
        for field in ["last_error", "last_attempt", "next_attempt"] {
            if !east[field].is_string() {
                return Err(format!("east has no {field}: {east}"));
            }
        }
        for name in ["west", "north"] {
            let other = entry(&status, name)?;
            expect(other, "sequence", 2)?;
            expect(other, "behind", false)?;
        }
        expect(&status, "supervisors_behind", 1)?;
        let metrics = mesh.central_metrics().await?;
        match metric(&metrics, "relay_supervisors_behind") {
            Some(1.0) => Ok(()),
            other => Err(format!("relay_supervisors_behind {other:?}")),
        }
    })
    .await;

    // Back on the port central knows it by.
    mesh.supervisor_mut("east").restart();
    mesh.wait_all_hold(2, &sha2).await;
    let metrics = mesh.central_metrics().await.unwrap();
    assert_eq!(
        metric(&metrics, "relay_supervisors_behind"),
        Some(0.0),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_shows_as_an_auth_error_while_the_others_are_current() {
    let mesh = Mesh::start(Options {
        wrong_password: Some("west"),
        ..Options::default()
    });
    mesh.upload_to_origin(mesh.bundle(1)).await;
    mesh.wait(
        "west failing with auth, east and north current",
        async || {
            let status = mesh.central.status().await?;
            let west = entry(&status, "west")?;
            expect(west, "last_error_kind", "auth")?;
            expect(west, "behind", true)?;
            expect(west, "sequence", Value::Null)?;
            for name in ["east", "north"] {
                let other = entry(&status, name)?;
                expect(other, "sequence", 1)?;
                expect(other, "behind", false)?;
            }
            expect(&status, "supervisors_behind", 1)
        },
    )
    .await;
    let west = mesh.supervisor("west").status().await.unwrap();
    assert!(west["current"].is_null(), "{west}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_bundle_supersedes_the_one_waiting_for_a_retry() {
    let mut mesh = Mesh::start(Options::default());
    mesh.upload_and_wait(1).await;

    mesh.supervisor_mut("north").kill();
    let second = mesh.bundle(2);
    let sha2 = Sha256::of(&second).to_string();
    mesh.upload_to_origin(second).await;
    // Bundle 2 was pushed (east and west hold it) and north's push failed.
    mesh.wait("east and west at 2, north behind", async || {
        let status = mesh.central.status().await?;
        let north = entry(&status, "north")?;
        expect(north, "behind", true)?;
        expect(north, "last_error_kind", "unreachable")?;
        for name in ["east", "west"] {
            expect(entry(&status, name)?, "sequence", 2)?;
            held(mesh.supervisor(name), 2).await?;
        }
        Ok(())
    })
    .await;

    let third = mesh.bundle(3);
    let sha3 = Sha256::of(&third).to_string();
    mesh.upload_to_origin(third).await;
    mesh.wait("central at 3, east and west at 3", async || {
        let status = mesh.central.status().await?;
        expect(&status["current"], "sequence", 3)?;
        for name in ["east", "west"] {
            expect(entry(&status, name)?, "sequence", 3)?;
        }
        Ok(())
    })
    .await;

    mesh.supervisor_mut("north").restart();
    mesh.wait_all_hold(3, &sha3).await;
    let path = format!("/api/v1/bundles/{sha2}");
    let north = mesh.supervisor("north").get(&path, "reader").await.unwrap();
    assert_eq!(north.status(), 404, "north received bundle 2");
    let east = mesh.supervisor("east").get(&path, "reader").await.unwrap();
    assert_eq!(east.status(), 200, "east does not hold bundle 2");
    let status = mesh.supervisor("north").status().await.unwrap();
    let held: Vec<u64> = status["held"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["sequence"].as_u64())
        .collect();
    assert!(
        held.contains(&3) && !held.contains(&2),
        "north holds {held:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisors_take_only_centrals_credential_and_trusted_keys() {
    let mesh = Mesh::start(Options {
        central_trusts_rogue: true,
        ..Options::default()
    });
    let first = mesh.bundle(1);
    let sha1 = Sha256::of(&first).to_string();
    mesh.upload_to_origin(first).await;
    mesh.wait_all_hold(1, &sha1).await;

    // Another credential of the supervisor's, even one that uploads elsewhere, may not.
    let second = mesh.bundle(2);
    for supervisor in &mesh.supervisors {
        for user in ["reader", "uploader"] {
            let (status, body) = supervisor.upload(user, second.clone()).await;
            assert_eq!(status, 403, "{user} on {}: {body}", supervisor.name);
        }
    }

    // Central trusts a key the supervisors do not: its bundle is refused downstream.
    let rogue_key = mesh.root.path().join("rogue.pem");
    let rogue = build_bundle(
        &feeds(),
        &rogue_key,
        2,
        &mesh.root.path().join("rogue-2.tar.gz"),
    );
    let rogue_sha = Sha256::of(&rogue).to_string();
    let (status, body) = mesh.central.upload("uploader", rogue).await;
    assert_eq!(status, 201, "central refused the rogue bundle: {body}");
    mesh.wait("every supervisor rejecting the rogue bundle", async || {
        let status = mesh.central.status().await?;
        expect(&status["current"], "sequence", 2)?;
        for name in SUPERVISORS {
            let entry = entry(&status, name)?;
            expect(entry, "last_error_kind", "rejected")?;
            expect(entry, "behind", true)?;
            expect(entry, "sequence", 1)?;
        }
        expect(&status, "supervisors_behind", 3)
    })
    .await;
    for supervisor in &mesh.supervisors {
        let manifest = supervisor
            .get_json("/api/v1/feeds/manifest", "reader")
            .await
            .unwrap();
        assert_eq!(manifest["sequence"], 1, "{}", supervisor.name);
        assert_eq!(
            manifest["bundle"]["sha256"],
            sha1.as_str(),
            "{}",
            supervisor.name
        );
        let r = supervisor
            .get(&format!("/api/v1/bundles/{rogue_sha}"), "reader")
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            404,
            "{} holds the rogue bundle",
            supervisor.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_shows_supervisors_and_a_push_cuts_the_retry_wait_short() {
    // Retries an hour apart: only an explicit push can deliver within the test.
    let mut mesh = Mesh::start(Options {
        retry_min: "1h",
        retry_max: "2h",
        ..Options::default()
    });
    mesh.upload_and_wait(1).await;

    let (url, ca) = (
        mesh.central.url.clone(),
        mesh.central.ca().display().to_string(),
    );
    let address = ["--address", &url, "--tlscacert", &ca];
    let reader = ["--user", "reader", "--password", &password("reader")];
    let admin = ["--user", "admin", "--password", &password("admin")];

    let out = relay_cli(&[&["status"], &address[..], &reader].concat());
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for name in SUPERVISORS {
        let lines = text.lines().filter(|l| l.contains(name)).count();
        assert_eq!(lines, 1, "one line for {name}:\n{}", show(&out));
    }
    let out = relay_cli(&[&["status", "--json"], &address[..], &reader].concat());
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    for name in SUPERVISORS {
        expect(entry(&json, name).unwrap(), "sequence", 1).unwrap();
    }

    // East misses bundle 2; its next retry is an hour away.
    mesh.supervisor_mut("east").kill();
    let second = mesh.bundle(2);
    let sha2 = Sha256::of(&second).to_string();
    mesh.upload_to_origin(second).await;
    mesh.wait("east behind and unreachable", async || {
        let status = mesh.central.status().await?;
        let east = entry(&status, "east")?;
        expect(east, "behind", true)?;
        expect(east, "last_error_kind", "unreachable")
    })
    .await;
    let out = relay_cli(&[&["status"], &address[..], &reader].concat());
    let text = String::from_utf8_lossy(&out.stdout);
    let east_line = text.lines().find(|l| l.contains("east")).unwrap_or("");
    assert!(
        east_line.contains("unreachable"),
        "the east line names the error:\n{}",
        show(&out)
    );

    mesh.supervisor_mut("east").restart();
    // The route is an admin's.
    let client = mesh.central.client().clone();
    let push = |user: &'static str, query: &'static str| {
        client
            .post(format!("{url}/api/v1/projects/push{query}"))
            .basic_auth(user, Some(password(user)))
            .send()
    };
    assert_eq!(push("reader", "").await.unwrap().status(), 403);
    let out = relay_cli(
        &[
            &["projects", "push", "--supervisor", "east"],
            &address[..],
            &admin,
        ]
        .concat(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    mesh.wait_all_hold(2, &sha2).await;

    let out = relay_cli(&[&["projects", "push"], &address[..], &admin].concat());
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(push("admin", "").await.unwrap().status(), 202);
    assert_eq!(
        push("admin", "?supervisor=west").await.unwrap().status(),
        202
    );
}

/// What a test varies in the topology.
struct Options {
    retry_min: &'static str,
    retry_max: &'static str,
    /// This supervisor is configured in central with a wrong password.
    wrong_password: Option<&'static str>,
    /// Central also trusts a key the supervisors do not (`rogue.pub`).
    central_trusts_rogue: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            retry_min: "200ms",
            retry_max: "1s",
            wrong_password: None,
            central_trusts_rogue: false,
        }
    }
}

/// origin -> central -> east, west, north; each a process with its own directory.
struct Mesh {
    origin: RelayProcess,
    central: RelayProcess,
    supervisors: Vec<RelayProcess>,
    origin_key: PathBuf,
    /// Removed last, after the processes above are killed.
    root: TempDir,
}

impl Mesh {
    fn start(options: Options) -> Self {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path();
        let (origin_key, origin_pub) = generate_key(dir, "origin");
        let origin = RelayProcess::start(
            "origin",
            &dir.join("origin"),
            &RelayConfig::ordinary(&[&origin_pub]),
        );
        let supervisors: Vec<RelayProcess> = SUPERVISORS
            .iter()
            .map(|name| RelayProcess::start(name, &dir.join(name), &supervisor_config(&origin_pub)))
            .collect();

        let mut trust = vec![origin_pub.as_path()];
        let rogue_pub = dir.join("rogue.pub");
        if options.central_trusts_rogue {
            // The key is made here so central can trust it from the start.
            generate_key(dir, "rogue");
            trust.push(&rogue_pub);
        }
        let mut central_config = RelayConfig::ordinary(&trust);
        central_config.extra =
            upstream_source(&origin) + &projects_section(8, options.retry_min, options.retry_max);
        for supervisor in &supervisors {
            let pw = if options.wrong_password == Some(supervisor.name.as_str()) {
                "not-the-password".to_owned()
            } else {
                password("central")
            };
            central_config.extra += &supervisor_entry(supervisor, &pw);
        }
        let central = RelayProcess::start("central", &dir.join("central"), &central_config);
        Self {
            origin,
            central,
            supervisors,
            origin_key,
            root,
        }
    }

    /// The sample feeds, signed by the origin, as sequence `sequence`.
    fn bundle(&self, sequence: u64) -> Vec<u8> {
        let out = self.root.path().join(format!("bundle-{sequence}.tar.gz"));
        build_bundle(&feeds(), &self.origin_key, sequence, &out)
    }

    fn supervisor(&self, name: &str) -> &RelayProcess {
        self.supervisors.iter().find(|s| s.name == name).unwrap()
    }

    fn supervisor_mut(&mut self, name: &str) -> &mut RelayProcess {
        self.supervisors
            .iter_mut()
            .find(|s| s.name == name)
            .unwrap()
    }

    async fn upload_to_origin(&self, bundle: Vec<u8>) {
        let (status, body) = self.origin.upload("uploader", bundle).await;
        assert_eq!(status, 201, "origin refused the upload: {body}");
    }

    async fn upload_and_wait(&self, sequence: u64) {
        let bundle = self.bundle(sequence);
        let sha = Sha256::of(&bundle).to_string();
        self.upload_to_origin(bundle).await;
        self.wait_all_hold(sequence, &sha).await;
    }

    /// Every supervisor serves `sequence` (its own manifest), and central's status says so.
    async fn wait_all_hold(&self, sequence: u64, sha: &str) {
        self.wait(
            &format!("sequence {sequence} at every supervisor"),
            async || {
                for supervisor in &self.supervisors {
                    let manifest = supervisor
                        .get_json("/api/v1/feeds/manifest", "reader")
                        .await?;
                    expect(&manifest, "sequence", sequence)?;
                    expect(&manifest["bundle"], "sha256", sha)?;
                }
                let status = self.central.status().await?;
                for supervisor in &self.supervisors {
                    let entry = entry(&status, &supervisor.name)?;
                    expect(entry, "sequence", sequence)?;
                    expect(entry, "behind", false)?;
                    if !entry["last_success"].is_string() {
                        return Err(format!("no last_success: {entry}"));
                    }
                }
                expect(&status, "supervisors_behind", 0)
            },
        )
        .await;
    }

    async fn central_metrics(&self) -> Result<String, String> {
        let response = self.central.get("/metrics", "reader").await?;
        response.text().await.map_err(|e| e.to_string())
    }

    /// Polls `check` until it passes; on the deadline, fails with its last complaint and
    /// the end of every relay's log.
    async fn wait<T>(&self, what: &str, check: impl AsyncFnMut() -> Result<T, String>) -> T {
        match poll(LIMIT, check).await {
            Ok(value) => value,
            Err(e) => {
                let mut logs = vec![self.origin.tail(20), self.central.tail(60)];
                logs.extend(self.supervisors.iter().map(|s| s.tail(20)));
                panic!("waiting for {what}: {e}\n{}", logs.join("\n"));
            }
        }
    }
}

fn feeds() -> PathBuf {
    workspace_root().join("relay/samples/feeds")
}

/// The supervisor `name` in a central status (`supervisors[]`).
fn entry<'a>(status: &'a Value, name: &str) -> Result<&'a Value, String> {
    status["supervisors"]
        .as_array()
        .and_then(|list| list.iter().find(|s| s["name"] == name))
        .ok_or_else(|| format!("no supervisor {name} in {status}"))
}

/// `value[field] == want`, or a complaint that shows both.
fn expect(value: &Value, field: &str, want: impl Into<Value>) -> Result<(), String> {
    let want = want.into();
    if value[field] == want {
        Ok(())
    } else {
        Err(format!(
            "{field} is {} (want {want}) in {value}",
            value[field]
        ))
    }
}

/// `relay`'s own status shows bundle `sequence` current.
async fn held(relay: &RelayProcess, sequence: u64) -> Result<(), String> {
    match relay.current_sequence().await? {
        Some(s) if s == sequence => Ok(()),
        other => Err(format!("{} holds {other:?}, not {sequence}", relay.name)),
    }
}

fn relay_cli(args: &[&str]) -> Output {
    let mut command = Command::new(binary("relay"));
    command.args(args);
    // Only the arguments count: no credential or proxy from the environment.
    for var in [
        "RELAY_CONFIG",
        "RELAY_PASSWORD",
        "RELAY_TOKEN",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        command.env_remove(var);
    }
    command.output().unwrap()
}

fn show(out: &Output) -> String {
    format!(
        "status {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
