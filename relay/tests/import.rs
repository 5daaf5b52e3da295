//! The origin's importers through the `relay` binary, as an operator runs them: each
//! published form of each feed kind, odd and hostile inputs, provenance signed into the
//! bundle, and the real advisory data under `../shared/data/`.

#![allow(clippy::unwrap_used)]

use crate::support;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use relay::import::{self, ImportLimits, Input};

fn relay(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(args: &[&str]) -> String {
    let out = relay(args);
    assert!(out.status.success(), "relay {args:?}: {}", text(&out));
    text(&out)
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn record(id: &str, modified: &str, extra: &str) -> String {
    format!(
        r#"{{"id":"{id}","modified":"{modified}","summary":"s {id}","affected":[{{"package":{{"ecosystem":"Go","name":"example.com/{id}"}},"ranges":[{{"type":"SEMVER","events":[{{"introduced":"0"}},{{"fixed":"1.2.3"}}]}}],"ecosystem_specific":{{"imports":[{{"path":"x"}}]}}}}]{extra}}}"#
    )
}

/// A zip of `(name, content)` entries, deflated as osv.dev's are.
fn write_zip(path: &Path, entries: &[(&str, &[u8])]) {
    let file = fs::File::create(path).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, content) in entries {
        zip.start_file(*name, options).unwrap();
        zip.write_all(content).unwrap();
    }
    zip.finish().unwrap();
}

fn keys(dir: &Path) -> (String, String) {
    let (secret, public) = (dir.join("k.pem"), dir.join("k.pub"));
    ok(&[
        "keys",
        "generate",
        "--secret",
        &s(&secret),
        "--public",
        &s(&public),
    ]);
    (s(&secret), s(&public))
}

fn build_and_verify(dir: &Path, feeds: &Path) -> PathBuf {
    let (secret, public) = keys(dir);
    let bundle = dir.join("b.tar.gz");
    ok(&[
        "bundle",
        "build",
        "--feeds",
        &s(feeds),
        "--key",
        &secret,
        "--sequence",
        "1",
        "--origin",
        "test-origin",
        "-o",
        &s(&bundle),
    ]);
    let verified = ok(&["bundle", "verify", &s(&bundle), "--trust", &public]);
    assert!(verified.starts_with("OK "), "{verified}");
    bundle
}

#[test]
fn osv_tree_zip_and_lines_merge_into_one_record_per_id() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("vulndb/data/osv");
    fs::create_dir_all(tree.join("nested")).unwrap();
    fs::write(
        tree.join("GO-2024-0001.json"),
        record("GO-2024-0001", "2024-01-01T00:00:00Z", ""),
    )
    .unwrap();
    // Pretty-printed, as the databases publish: kept, compacted to one line.
    let pretty: serde_json::Value =
        serde_json::from_str(&record("GO-2024-0002", "2024-02-01T00:00:00Z", "")).unwrap();
    fs::write(
        tree.join("nested/GO-2024-0002.json"),
        serde_json::to_string_pretty(&pretty).unwrap(),
    )
    .unwrap();
    // The PYSEC-2022-15 shape: an affected entry with neither ranges nor versions.
    fs::write(
        tree.join("PYSEC-2022-15.json"),
        r#"{"id":"PYSEC-2022-15","modified":"2022-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"PyPI","name":"x"}}]}"#,
    )
    .unwrap();
    fs::write(
        tree.join("GO-2024-0003.json"),
        record(
            "GO-2024-0003",
            "2024-03-01T00:00:00Z",
            r#","withdrawn":"2024-03-01T00:00:00Z""#,
        ),
    )
    .unwrap();
    fs::write(tree.join("broken.json"), "{\"id\": ").unwrap();
    fs::write(tree.join("README.md"), "not a record").unwrap();
    // The zip has a newer GO-2024-0001 and an older GO-2024-0002.
    let zip = dir.path().join("go/all.zip");
    fs::create_dir_all(zip.parent().unwrap()).unwrap();
    let newer = record("GO-2024-0001", "2024-06-01T00:00:00Z", "");
    let older = record("GO-2024-0002", "2023-01-01T00:00:00Z", "");
    write_zip(
        &zip,
        &[
            ("GO-2024-0001.json", newer.as_bytes()),
            ("GO-2024-0002.json", older.as_bytes()),
        ],
    );
    let feeds = dir.path().join("feeds");
    let out = ok(&[
        "feeds",
        "import",
        "osv",
        &s(&dir.path().join("vulndb")),
        &s(&zip),
        "-o",
        &s(&feeds),
        "--name",
        "go",
        "--license",
        "CC-BY-4.0",
    ]);
    assert!(out.contains("wrote "), "{out}");
    assert!(
        out.contains("vulndb: read 5, kept 1, merged 1, refused 2, withdrawn 1"),
        "{out}"
    );
    assert!(
        out.contains("all.zip: read 2, kept 1, merged 1, refused 0, withdrawn 0"),
        "{out}"
    );
    assert!(
        out.contains("refused 1 by affected-without-ranges-or-versions"),
        "{out}"
    );
    assert!(out.contains("refused 1 by not-json"), "{out}");
    assert!(out.contains("e.g. data/osv/PYSEC-2022-15.json: PYSEC-2022-15: affected[0] has neither ranges nor versions"), "{out}");

    let written = fs::read_to_string(feeds.join("osv/go.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = written
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<&str> = lines.iter().map(|v| v["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["GO-2024-0001", "GO-2024-0002"]);
    assert_eq!(lines[0]["modified"], "2024-06-01T00:00:00Z");
    assert_eq!(lines[1]["modified"], "2024-02-01T00:00:00Z");
    // Kept as published: fields a matcher does not read are still there.
    assert_eq!(
        lines[0]["affected"][0]["ecosystem_specific"]["imports"][0]["path"],
        "x"
    );
    assert_eq!(written.lines().count(), 2, "one line per record: {written}");

    // The provenance is signed into the bundle and shown by inspect.
    let bundle = build_and_verify(dir.path(), &feeds);
    let inspect = ok(&["bundle", "inspect", &s(&bundle), "--json"]);
    let json: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    let inputs = &json["manifest"]["files"][0]["inputs"];
    assert_eq!(inputs[0]["name"], "vulndb");
    assert_eq!(inputs[0]["license"], "CC-BY-4.0");
    assert_eq!(inputs[0]["counts"]["refused"], 2);
    assert_eq!(inputs[1]["name"], "all.zip");
    assert_eq!(inputs[1]["size"], fs::metadata(&zip).unwrap().len());
    let zip_sha = relay::bundle::Sha256::of(&fs::read(&zip).unwrap());
    assert_eq!(inputs[1]["sha256"], zip_sha.to_string());
    let plain = ok(&["bundle", "inspect", &s(&bundle)]);
    assert!(plain.contains("from all.zip"), "{plain}");
    assert!(
        plain.contains("read 2, kept 1, merged 1, withdrawn 0, refused 0"),
        "{plain}"
    );
}

#[test]
fn the_same_inputs_give_the_same_feed_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("records.jsonl");
    let mut text = String::new();
    for i in (0..50).rev() {
        text.push_str(&record(
            &format!("GO-2024-{i:04}"),
            "2024-01-01T00:00:00Z",
            "",
        ));
        text.push('\n');
    }
    fs::write(&input, &text).unwrap();
    let mut digests = Vec::new();
    for out in ["a", "b"] {
        let feeds = dir.path().join(out);
        ok(&[
            "feeds",
            "import",
            "osv",
            &s(&input),
            "-o",
            &s(&feeds),
            "--retrieved",
            "2026-01-01T00:00:00Z",
        ]);
        digests.push((
            fs::read(feeds.join("osv/records.jsonl")).unwrap(),
            fs::read(feeds.join(".provenance/osv/records.jsonl.json")).unwrap(),
        ));
    }
    assert_eq!(digests[0], digests[1]);
}

#[test]
fn a_feed_edited_after_import_does_not_carry_its_old_provenance() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("list.txt");
    fs::write(&input, "evil.example\n").unwrap();
    let feeds = dir.path().join("feeds");
    ok(&[
        "feeds",
        "import",
        "domains",
        "--format",
        "list",
        &s(&input),
        "-o",
        &s(&feeds),
    ]);
    fs::write(feeds.join("domains/list.txt"), "other.example\n").unwrap();
    let (secret, _) = keys(dir.path());
    let out = relay(&[
        "bundle",
        "build",
        "--feeds",
        &s(&feeds),
        "--key",
        &secret,
        "--sequence",
        "1",
        "--origin",
        "o",
        "-o",
        &s(&dir.path().join("b.tgz")),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("the feed file was changed after it was imported"),
        "{}",
        text(&out)
    );
    assert!(!dir.path().join("b.tgz").exists());
}

#[test]
fn domain_formats_normalize_merge_and_name_what_they_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    fs::write(
        &hosts,
        "# StevenBlack-style hosts\n127.0.0.1 localhost\n0.0.0.0 Ads.Tracker.Example.\n0.0.0.0 tracker.example cdn.evil.example # two\n",
    )
    .unwrap();
    let adblock = dir.path().join("filter.txt");
    fs::write(
        &adblock,
        "[Adblock Plus 2.0]\n! Title: DNS filter\n||evil.example^\n||bücher.example^$important\n@@||good.example^\n##.banner\n",
    )
    .unwrap();
    let rpz = dir.path().join("rpz.zone");
    fs::write(
        &rpz,
        "$TTL 300\n$ORIGIN rpz.local.\n@ SOA ns.rpz.local. admin.rpz.local. 1 3600 600 86400 300\n@ NS ns.rpz.local.\n*.wild.example CNAME .\nx.wild.example CNAME .\nok.example CNAME rpz-passthru.\n",
    )
    .unwrap();
    let feeds = dir.path().join("feeds");
    let out = ok(&[
        "feeds",
        "import",
        "domains",
        "--format",
        "hosts",
        &s(&hosts),
        "-o",
        &s(&feeds),
    ]);
    assert!(out.contains("read 4, kept 2, merged 1, refused 1"), "{out}");
    assert!(out.contains("refused 1 by local-name"), "{out}");
    ok(&[
        "feeds",
        "import",
        "domains",
        "--format",
        "adblock",
        &s(&adblock),
        "-o",
        &s(&feeds),
    ]);
    ok(&[
        "feeds",
        "import",
        "domains",
        "--format",
        "rpz",
        &s(&rpz),
        "-o",
        &s(&feeds),
    ]);
    let read = |name: &str| fs::read_to_string(feeds.join("domains").join(name)).unwrap();
    // Sorted by reversed labels; ads.tracker.example folds into tracker.example.
    assert_eq!(read("hosts.txt"), "cdn.evil.example\ntracker.example\n");
    assert_eq!(read("filter.txt"), "evil.example\nxn--bcher-kva.example\n");
    // x.wild.example is under *.wild.example: merged.
    assert_eq!(read("rpz.txt"), "*.wild.example\n");
    // What was written passes the builder's validation.
    build_and_verify(dir.path(), &feeds);

    let missing = relay(&["feeds", "import", "domains", &s(&hosts), "-o", &s(&feeds)]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        text(&missing).contains("domains need --format"),
        "{}",
        text(&missing)
    );
}

#[test]
fn ip_lists_aggregate_into_the_fewest_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let netset = dir.path().join("firehol_level1.netset");
    fs::write(
        &netset,
        "#\n# firehol_level1\n#\n192.0.2.0/25\n192.0.2.128/25\n198.51.100.7\n198.51.100.0/24\n2001:db8::/33\n2001:db8:8000::/33\n",
    )
    .unwrap();
    let drop = dir.path().join("drop.txt");
    fs::write(
        &drop,
        "; Spamhaus DROP List\n203.0.113.0/26 ; SBL1\n203.0.113.64-203.0.113.127\n10.0.0.1/8 ; host bits\n",
    )
    .unwrap();
    let drop_json = dir.path().join("drop_v4.json");
    fs::write(
        &drop_json,
        "{\"cidr\":\"100.64.0.0/24\",\"sblid\":\"SBL2\",\"rir\":\"arin\"}\n{\"type\":\"metadata\",\"timestamp\":1,\"size\":1}\n",
    )
    .unwrap();
    let feeds = dir.path().join("feeds");
    let out = ok(&[
        "feeds",
        "import",
        "ips",
        &s(&netset),
        &s(&drop),
        &s(&drop_json),
        "-o",
        &s(&feeds),
        "--name",
        "blocklist",
    ]);
    assert!(
        out.contains("firehol_level1.netset: read 6, kept 3, merged 3, refused 0"),
        "{out}"
    );
    assert!(
        out.contains("drop.txt: read 3, kept 1, merged 1, refused 1"),
        "{out}"
    );
    assert!(out.contains("refused 1 by host-bits"), "{out}");
    assert_eq!(
        fs::read_to_string(feeds.join("ips/blocklist.txt")).unwrap(),
        "100.64.0.0/24\n192.0.2.0/24\n198.51.100.0/24\n203.0.113.0/25\n2001:db8::/32\n"
    );
    build_and_verify(dir.path(), &feeds);
}

#[test]
fn hostile_inputs_are_capped_and_a_broken_input_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let feeds = dir.path().join("feeds");
    let good = dir.path().join("good.jsonl");
    fs::write(&good, record("GO-1", "2024-01-01T00:00:00Z", "") + "\n").unwrap();
    let input = |p: &Path| Input::local(p);
    import::osv::import(&[input(&good)], &feeds, "go", &ImportLimits::default()).unwrap();
    let before = fs::read(feeds.join("osv/go.jsonl")).unwrap();

    // A zip cut in the middle: a clear error, and the earlier feed file is untouched.
    let zip = dir.path().join("all.zip");
    let big = record("GO-2", "2024-01-01T00:00:00Z", "");
    write_zip(&zip, &[("GO-2.json", big.as_bytes())]);
    let bytes = fs::read(&zip).unwrap();
    let cut = dir.path().join("cut.zip");
    fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = import::osv::import(&[input(&cut)], &feeds, "go", &ImportLimits::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a readable zip file"), "{err}");
    assert_eq!(fs::read(feeds.join("osv/go.jsonl")).unwrap(), before);

    // An entry that inflates past the record cap (a zip bomb's shape) is refused by rule,
    // however small its declared size; a total past the inflate cap stops the input.
    let bomb = dir.path().join("bomb.zip");
    let zeros = vec![b' '; 200_000];
    write_zip(&bomb, &[("a.json", &zeros), ("GO-2.json", big.as_bytes())]);
    let limits = ImportLimits {
        max_record: 10_000,
        ..ImportLimits::default()
    };
    let report = import::osv::import(&[input(&bomb)], &feeds, "bomb", &limits).unwrap();
    let r = &report.inputs[0];
    assert_eq!(
        r.refusals.by_rule.get("record-too-large"),
        Some(&1),
        "{r:?}"
    );
    assert_eq!(report.records, 1);
    let limits = ImportLimits {
        max_inflated: 50_000,
        ..ImportLimits::default()
    };
    let err = import::osv::import(&[input(&bomb)], &feeds, "bomb2", &limits)
        .unwrap_err()
        .to_string();
    assert!(err.contains("inflates to more than 50000 bytes"), "{err}");
    assert!(!feeds.join("osv/bomb2.jsonl").exists());

    // An endless line in a list is one refused record, not memory.
    let long = dir.path().join("long.txt");
    let mut text = "a".repeat(100_000);
    text.push_str("\nevil.example\n");
    fs::write(&long, text).unwrap();
    let limits = ImportLimits {
        max_record: 1000,
        ..ImportLimits::default()
    };
    let report = import::domains::import(
        &[input(&long)],
        import::domains::DomainFormat::List,
        &feeds,
        "long",
        &limits,
    )
    .unwrap();
    assert_eq!(report.records, 1);
    assert_eq!(
        report.inputs[0].refusals.by_rule.get("line-too-long"),
        Some(&1)
    );

    // A name that would escape the feeds directory is refused before anything is read.
    let err = import::osv::import(&[input(&good)], &feeds, "../x", &ImportLimits::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("output name"), "{err}");
}

#[test]
fn the_real_go_and_rust_databases_import_build_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let feeds = dir.path().join("feeds");
    let go = support::shared_data("osv/go/2026-08-21/all.zip");
    let rust = support::shared_data("osv/rust/2026-08-21/all.zip");
    let out = ok(&["feeds", "import", "osv", &s(&go), "-o", &s(&feeds)]);
    // 4,291 records in that snapshot (shared/data/README.md); every one is accounted for.
    let counts = |out: &str, name: &str| -> Vec<u64> {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{name}: read")))
            .unwrap_or_else(|| panic!("no counts for {name} in {out}"));
        line.split(',')
            .map(|part| part.split_whitespace().last().unwrap().parse().unwrap())
            .collect()
    };
    let go_counts = counts(&out, "all.zip");
    assert_eq!(go_counts[0], 4291, "{out}");
    assert_eq!(go_counts[1..].iter().sum::<u64>(), go_counts[0], "{out}");
    assert!(
        feeds.join("osv/go.jsonl").is_file(),
        "named after its directory: {out}"
    );
    let out = ok(&["feeds", "import", "osv", &s(&rust), "-o", &s(&feeds)]);
    let rust_counts = counts(&out, "all.zip");
    assert_eq!(rust_counts[0], 1206, "{out}");
    assert_eq!(
        rust_counts[1..].iter().sum::<u64>(),
        rust_counts[0],
        "{out}"
    );
    let bundle = build_and_verify(dir.path(), &feeds);
    let inspect = ok(&["bundle", "inspect", &s(&bundle), "--json"]);
    let json: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    let records: u64 = json["manifest"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["records"].as_u64().unwrap())
        .sum();
    assert_eq!(records, go_counts[1] + rust_counts[1]);
}
