//! Recovering from a stolen or retired signing key, with a real relay process: a bundle a
//! stolen key signed with a huge sequence blocks every legitimate upload until the key
//! leaves `trust.keys`; then SIGHUP (or a restart) demotes what it signed, and the
//! legitimate sequence is accepted again. An admin's explicit reset of the held sequence
//! does the same for a trusted key's mistake, and both acts are in the audit log.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use end_to_end::relays::{
    RelayConfig, RelayProcess, build_bundle, generate_key, password, poll, run_relay,
};
use end_to_end::workspace_root;

async fn wait_sequence(relay: &RelayProcess, expected: Option<u64>) {
    poll(Duration::from_secs(30), async || {
        match relay.current_sequence().await? {
            s if s == expected => Ok(()),
            other => Err(format!("holds {other:?}, expected {expected:?}")),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", relay.tail(30)));
}

/// An agent trusting `keys`, following `relay`: its config file.
fn agent_config(dir: &Path, relay: &RelayProcess, keys: &[&Path]) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let keys: Vec<String> = keys
        .iter()
        .map(|k| end_to_end::relays::quote(&k.display().to_string()))
        .collect();
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"data\"\n[trust]\nkeys = [{}]\n\
             [[sources]]\nkind = \"upstream\"\nurl = {}\nuser = \"reader\"\npassword = {}\nca = {}\nno_proxy = true\n",
            keys.join(", "),
            end_to_end::relays::quote(&relay.url),
            end_to_end::relays::quote(&password("reader")),
            end_to_end::relays::quote(&relay.ca().display().to_string()),
        ),
    )
    .unwrap();
    config.display().to_string()
}

fn agent_sync(config: &str, extra: &[&str]) -> String {
    let out = Command::new(end_to_end::binary("defender-lite"))
        .args(["sync", "--once", "--config", config])
        .args(extra)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    text
}

fn agent_state(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("data/state.json")).unwrap()).unwrap()
}

fn audit(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("data/store/audit.jsonl")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_key_is_demoted_and_a_reset_is_audited() {
    let tmp = tempfile::tempdir().unwrap();
    let (good_secret, good_public) = generate_key(tmp.path(), "origin");
    let (stolen_secret, stolen_public) = generate_key(tmp.path(), "stolen");
    let dir = tmp.path().join("relay");
    let mut relay = RelayProcess::start(
        "relay",
        &dir,
        &RelayConfig::ordinary(&[&good_public, &stolen_public]),
    );
    let feeds = workspace_root().join("relay/samples/feeds");
    let bundle = |secret: &Path, sequence: u64, name: &str| {
        build_bundle(&feeds, secret, sequence, &tmp.path().join(name))
    };
    assert_eq!(
        relay
            .upload("uploader", bundle(&good_secret, 5, "b5"))
            .await
            .0,
        201
    );
    // The attacker's bundle, signed with the stolen key, far ahead.
    let ahead = 1_000_000_000_000_000_000;
    let (code, _) = relay
        .upload("uploader", bundle(&stolen_secret, ahead, "evil"))
        .await;
    assert_eq!(code, 201);
    let (code, body) = relay
        .upload("uploader", bundle(&good_secret, 6, "b6"))
        .await;
    assert_eq!(code, 409, "stuck behind the stolen sequence: {body}");
    // An agent that trusted both keys applied the stolen bundle too.
    let agent = tmp.path().join("agent");
    let both = agent_config(&agent, &relay, &[&good_public, &stolen_public]);
    agent_sync(&both, &[]);
    assert_eq!(agent_state(&agent)["current"]["sequence"], ahead);

    // The operator removes the stolen key from trust.keys and sends SIGHUP.
    let config = dir.join("relay.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let stolen = stolen_public.display().to_string();
    let text = text.replace(&format!(", \"{stolen}\""), "");
    assert!(!text.contains(&stolen), "{text}");
    std::fs::write(&config, text).unwrap();
    let status = Command::new("kill")
        .args(["-HUP", &relay.pid().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_sequence(&relay, Some(5)).await;
    assert_eq!(
        relay
            .upload("uploader", bundle(&good_secret, 6, "b6"))
            .await
            .0,
        201
    );
    let log = audit(&dir);
    assert!(log.contains("\"action\":\"demote-untrusted\""), "{log}");
    assert!(log.contains("no longer in the trust list"), "{log}");
    let quarantined = std::fs::read_dir(dir.join("data/store/quarantine"))
        .unwrap()
        .count();
    assert_eq!(quarantined, 1, "the demoted file is kept as evidence");
    // The agent, its trust.keys without the stolen key: demotes, then takes sequence 6.
    let good_only = agent_config(&agent, &relay, &[&good_public]);
    let out = agent_sync(&good_only, &[]);
    assert!(out.contains("applied bundle sequence 6"), "{out}");
    let state = agent_state(&agent);
    assert!(
        state["demoted"][0]
            .as_str()
            .unwrap()
            .contains("no longer in trust.keys"),
        "{state}"
    );
    assert!(agent.join("data/quarantine").is_dir());

    // A trusted key's mistake: an admin resets the held sequence, explicitly and audited.
    assert_eq!(
        relay
            .upload("uploader", bundle(&good_secret, ahead, "oops"))
            .await
            .0,
        201
    );
    let out = run_relay(&[
        "trust",
        "reset-sequence",
        "--to",
        "6",
        "--reason",
        "origin published a wrong sequence",
        "--address",
        &relay.url,
        "--user",
        "admin",
        "--password",
        &password("admin"),
        "--tlscacert",
        &relay.ca().display().to_string(),
    ]);
    assert!(out.contains("current bundle: sequence 6"), "{out}");
    let log = audit(&dir);
    assert!(log.contains("\"action\":\"reset-sequence\""), "{log}");
    assert!(log.contains("\"user\":\"admin\""), "{log}");
    assert!(log.contains("origin published a wrong sequence"), "{log}");
    assert_eq!(
        relay
            .upload("uploader", bundle(&good_secret, 7, "b7"))
            .await
            .0,
        201
    );
    // A reader may not reset anything.
    let r = relay
        .client()
        .post(format!("{}/api/v1/admin/reset-sequence", relay.url))
        .basic_auth("reader", Some(password("reader")))
        .json(&serde_json::json!({"to": 0, "reason": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // At start too: the good key retired (only the other one trusted), everything it
    // signed is demoted before anything is served.
    let text = std::fs::read_to_string(&config).unwrap();
    let good = good_public.display().to_string();
    std::fs::write(&config, text.replace(&good, &stolen)).unwrap();
    relay.restart();
    wait_sequence(&relay, None).await;
    assert!(audit(&dir).contains("\"when\":\"start\""));
}
