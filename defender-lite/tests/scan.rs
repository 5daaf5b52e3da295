//! `defender-lite scan`, run as the operator runs it: the binary, on a root filesystem
//! directory, a flat tar and a `docker save` archive built here, against the sample
//! feeds (real Debian OSV records) and against an applied bundle with its index.

#![allow(clippy::unwrap_used)]

use crate::image_fixtures;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use defender_lite::feeds::{self, Feeds};
use image_fixtures::{Item, dir, docker_save, file, fixture, tar, write_rootfs};
use relay::bundle::{BuildOptions, SecretKey, Sequence, Timestamp, TrustStore};
use serde_json::Value;

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../relay/samples/feeds")
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_defender-lite"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A Debian 12 image whose glibc predates the Looney Tunables fix (DEBIAN-CVE-2023-4911,
/// fixed in 2.36-9+deb12u3), and a Python package.
fn debian_items() -> Vec<Item> {
    let status = String::from_utf8(fixture("debian/status")).unwrap();
    let status = status.replace("Version: 2.36-9+deb12u14", "Version: 2.36-9+deb12u2");
    assert!(status.contains("2.36-9+deb12u2"), "fixture changed");
    vec![
        dir("etc"),
        file("etc/os-release", fixture("debian/os-release")),
        dir("var/lib/dpkg"),
        file("var/lib/dpkg/status", status),
        dir("usr/lib/python3/dist-packages/PyYAML-6.0.dist-info"),
        file(
            "usr/lib/python3/dist-packages/PyYAML-6.0.dist-info/METADATA",
            fixture("python/PyYAML-6.0.METADATA"),
        ),
    ]
}

fn json_scan(path: &Path, feeds: &Path) -> Value {
    let out = run(&[
        "scan",
        path.to_str().unwrap(),
        "--feeds",
        feeds.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn glibc_finding(report: &Value) -> &Value {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "DEBIAN-CVE-2023-4911")
        .unwrap_or_else(|| panic!("no Looney Tunables finding in {report:#}"))
}

#[test]
fn a_vulnerable_debian_package_is_found_in_every_image_form() {
    let tmp = tempfile::tempdir().unwrap();
    let items = debian_items();
    let rootfs = tmp.path().join("rootfs");
    write_rootfs(&rootfs, &items);
    let flat = tmp.path().join("export.tar");
    std::fs::write(&flat, tar(&items)).unwrap();
    let saved = tmp.path().join("save.tar");
    // Two layers: the second replaces dpkg's status with the vulnerable one.
    let base: Vec<Item> = items
        .iter()
        .filter(|i| !format!("{i:?}").contains("dpkg/status"))
        .cloned()
        .collect();
    let top: Vec<Item> = items
        .iter()
        .filter(|i| format!("{i:?}").contains("var/lib/dpkg"))
        .cloned()
        .collect();
    std::fs::write(
        &saved,
        docker_save(&[tar(&base), tar(&top)], "{}", &["app:1"]),
    )
    .unwrap();

    let mut packages = None;
    for (path, kind) in [
        (&rootfs, "directory"),
        (&flat, "tar"),
        (&saved, "docker-save"),
    ] {
        let report = json_scan(path, &samples());
        assert_eq!(report["schema"], "defender-lite.scan/1");
        assert_eq!(report["image"]["kind"], kind);
        assert_eq!(report["coverage"], "complete");
        assert_eq!(report["os"]["id"], "debian");
        let f = glibc_finding(&report);
        assert_eq!(f["package"], "libc6");
        assert_eq!(f["version"], "2.36-9+deb12u2");
        assert_eq!(f["fixed"], "2.36-9+deb12u3");
        assert_eq!(f["matched_by"], "source");
        assert_eq!(f["advisory_package"], "glibc");
        assert_eq!(f["severity"], "high");
        assert_eq!(f["aliases"][0], "CVE-2023-4911");
        assert_eq!(f["declared_in"], "var/lib/dpkg/status");
        assert_eq!(f["found_by"], "dpkg");
        // Every form sees the same packages, the Python one included.
        let names: Vec<String> = report["packages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| format!("{} {} {}", p["found_by"], p["name"], p["version"]))
            .collect();
        assert!(
            names.iter().any(|n| n == "\"python\" \"PyYAML\" \"6.0\""),
            "{names:?}"
        );
        match &packages {
            None => packages = Some(names),
            Some(first) => assert_eq!(first, &names, "{kind}"),
        }
    }
    // The fixed version is not reported.
    let fixed = tmp.path().join("fixed");
    write_rootfs(
        &fixed,
        &debian_items()
            .into_iter()
            .map(|i| {
                if format!("{i:?}").contains("dpkg/status") {
                    let s = String::from_utf8(fixture("debian/status")).unwrap();
                    file("var/lib/dpkg/status", s)
                } else {
                    i
                }
            })
            .collect::<Vec<_>>(),
    );
    let report = json_scan(&fixed, &samples());
    assert!(
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["id"] != "DEBIAN-CVE-2023-4911"),
        "{report:#}"
    );
}

#[test]
fn table_sarif_and_fail_on() {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    write_rootfs(&rootfs, &debian_items());
    let root = rootfs.to_str().unwrap();
    let feeds = samples();
    let feeds = feeds.to_str().unwrap();

    let out = run(&["scan", root, "--feeds", feeds]);
    assert!(out.status.success(), "{out:?}");
    let table = stdout(&out);
    assert!(table.contains("Debian GNU/Linux 12 (bookworm)"), "{table}");
    assert!(table.contains("PACKAGE"), "{table}");
    let row = table
        .lines()
        .find(|l| l.contains("DEBIAN-CVE-2023-4911"))
        .unwrap_or_else(|| panic!("{table}"));
    for cell in [
        "libc6",
        "2.36-9+deb12u2",
        "2.36-9+deb12u3",
        "HIGH",
        "CVE-2023-4911",
        "var/lib/dpkg/status",
    ] {
        assert!(row.contains(cell), "{cell} missing in {row:?}");
    }
    assert!(table.contains("findings: "), "{table}");

    let report = json_scan(&rootfs, &samples());
    let worst = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            f["severity"]
                .as_str()
                .unwrap()
                .parse::<defender_lite::osv::Severity>()
                .unwrap()
        })
        .max()
        .unwrap();
    let above = ["low", "medium", "high", "critical"]
        .into_iter()
        .find(|s| s.parse::<defender_lite::osv::Severity>().unwrap() > worst);
    assert_eq!(
        run(&["scan", root, "--feeds", feeds, "--fail-on", worst.as_str()])
            .status
            .code(),
        Some(1)
    );
    if let Some(above) = above {
        assert_eq!(
            run(&["scan", root, "--feeds", feeds, "--fail-on", above])
                .status
                .code(),
            Some(0)
        );
    }
    let bad = run(&["scan", root, "--feeds", feeds, "--fail-on", "severe"]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");

    let out = run(&["scan", root, "--feeds", feeds, "--format", "sarif"]);
    assert!(out.status.success());
    let sarif: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    let run0 = &sarif["runs"][0];
    assert_eq!(run0["tool"]["driver"]["name"], "defender-lite");
    let result = run0["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["ruleId"] == "DEBIAN-CVE-2023-4911")
        .unwrap();
    assert_eq!(result["level"], "error");
    assert_eq!(
        result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
        "var/lib/dpkg/status"
    );
    assert!(
        run0["tool"]["driver"]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == "DEBIAN-CVE-2023-4911")
    );
    assert_eq!(
        run0["results"].as_array().unwrap().len(),
        report["findings"].as_array().unwrap().len()
    );
}

#[test]
fn no_package_database_is_said_never_a_silent_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("scratch");
    write_rootfs(
        &rootfs,
        &[dir("bin"), file("bin/app", b"\x7fELF not really")],
    );
    let root = rootfs.to_str().unwrap();
    let feeds = samples();
    let feeds = feeds.to_str().unwrap();

    let out = run(&["scan", root, "--feeds", feeds]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).contains("NO PACKAGE DATABASE FOUND"),
        "{out:?}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("no package database found"));
    let report = json_scan(&rootfs, &samples());
    assert_eq!(report["coverage"], "no_database");
    assert!(report["notes"][0].as_str().unwrap().contains("looked for"));
    // A policy cannot pass on an image nobody could read.
    let out = run(&["scan", root, "--feeds", feeds, "--fail-on", "critical"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let out = run(&["scan", root, "--feeds", feeds, "--format", "sarif"]);
    let sarif: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        sarif["runs"][0]["invocations"][0]["toolExecutionNotifications"][0]["level"],
        "error"
    );
}

#[test]
fn errors_are_clear_and_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let feeds = samples();
    let feeds = feeds.to_str().unwrap();
    let missing = tmp.path().join("missing.tar");
    let out = run(&["scan", missing.to_str().unwrap(), "--feeds", feeds]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("missing.tar"),
        "{out:?}"
    );

    let garbage = tmp.path().join("garbage.tar");
    std::fs::write(
        &garbage,
        b"this is not a tar archive at all, not even close",
    )
    .unwrap();
    let out = run(&["scan", garbage.to_str().unwrap(), "--feeds", feeds]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    // No bundle applied and no --feeds: say what to do.
    let config = tmp.path().join("agent.toml");
    write_config(&config, &tmp.path().join("data"));
    let rootfs = tmp.path().join("rootfs");
    write_rootfs(&rootfs, &debian_items());
    let out = run(&[
        "scan",
        rootfs.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no bundle applied yet") && err.contains("defender-lite sync"),
        "{err}"
    );

    let empty = tmp.path().join("empty-feeds");
    std::fs::create_dir(&empty).unwrap();
    let out = run(&[
        "scan",
        rootfs.to_str().unwrap(),
        "--feeds",
        empty.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no feeds here"),
        "{out:?}"
    );
}

/// An agent configuration with `data_dir` and a trusted key.
fn write_config(config: &Path, data: &Path) {
    let key = config.with_file_name("origin.pub");
    SecretKey::generate()
        .unwrap()
        .public()
        .save(&key, true)
        .unwrap();
    std::fs::write(
        config,
        format!("data_dir = {data:?}\n[trust]\nkeys = [{key:?}]\n"),
    )
    .unwrap();
}

/// The bundle as `sync` applies it: verified, unpacked, indexed, recorded in state.json.
fn apply_sample_bundle(data: &Path) -> feeds::IndexSummary {
    let key = SecretKey::generate().unwrap();
    let now = Timestamp::now();
    let mut bytes = Vec::new();
    relay::bundle::build(
        &samples(),
        &key,
        &BuildOptions {
            sequence: Sequence(7),
            origin: "test-origin".into(),
            created: now,
            expires: Timestamp::from_unix(now.unix() + 86_400).unwrap(),
        },
        &mut bytes,
    )
    .unwrap();
    let dir = PathBuf::from("bundles/7-test");
    let dest = data.join(&dir);
    std::fs::create_dir_all(data.join("bundles")).unwrap();
    let verified = relay::bundle::unpack(
        bytes.as_slice(),
        &dest,
        &TrustStore::new([key.public()]),
        &relay::bundle::Limits::default(),
        now,
        None,
    )
    .unwrap();
    let summary = feeds::build_indexes(&dest).unwrap();
    let m = verified.manifest();
    let state = defender_lite::sync::State {
        current: Some(defender_lite::sync::Applied {
            sequence: m.sequence,
            sha256: verified.sha256(),
            created: m.created,
            expires: m.expires,
            origin: m.origin.clone(),
            source: "test".into(),
            applied_at: now,
            dir,
            transfer: None,
        }),
        ..Default::default()
    };
    state.save(data).unwrap();
    summary
}

#[test]
fn the_applied_bundle_index_gives_the_same_findings_as_the_raw_feeds() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let summary = apply_sample_bundle(&data);
    assert!(
        summary.osv.records > 0 && summary.osv.packages > 0,
        "{summary:?}"
    );
    assert!(
        summary.domains > 0 && summary.ip_ranges > 0 && summary.apps > 0,
        "{summary:?}"
    );
    assert_eq!(summary.unreadable, 0, "{summary:?}");

    let applied = Feeds::applied(&data).unwrap();
    assert!(
        applied.description.contains("sequence 7"),
        "{}",
        applied.description
    );
    assert_eq!(applied.summary().unwrap(), summary);
    let raw = Feeds::open_dir(&samples()).unwrap();
    assert_eq!(applied.apps().unwrap(), raw.apps().unwrap());
    assert_eq!(applied.ips().unwrap(), raw.ips().unwrap());
    assert_eq!(
        applied.domains().unwrap().len(),
        raw.domains().unwrap().len()
    );

    let config = tmp.path().join("agent.toml");
    write_config(&config, &data);
    let rootfs = tmp.path().join("rootfs");
    write_rootfs(&rootfs, &debian_items());
    let out = run(&[
        "scan",
        rootfs.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{out:?}");
    let from_index: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(from_index["feeds"].as_str().unwrap().contains("sequence 7"));
    let from_raw = json_scan(&rootfs, &samples());
    assert_eq!(from_index["findings"], from_raw["findings"]);
    assert_eq!(from_index["packages"], from_raw["packages"]);
    glibc_finding(&from_index);

    // A damaged index is refused with its path, not misread.
    let idx = data.join("bundles/7-test/index/osv.idx");
    let bytes = std::fs::read(&idx).unwrap();
    std::fs::write(&idx, &bytes[..bytes.len() / 2]).unwrap();
    let out = run(&[
        "scan",
        rootfs.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("damaged OSV index"),
        "{out:?}"
    );
}

/// A `Cargo.lock` listing crates.io packages (name, version).
fn cargo_lock(crates: &[(&str, &str)]) -> String {
    let mut lock = String::from("version = 3\n");
    for (name, version) in crates {
        lock += &format!(
            "\n[[package]]\nname = \"{name}\"\nversion = \"{version}\"\n\
             source = \"registry+https://github.com/rust-lang/crates.io-index\"\n"
        );
    }
    lock
}

/// A feeds directory (`osv/records.jsonl`) in `dir`.
fn write_feeds(dir: &Path, jsonl: &str) -> PathBuf {
    let feeds = dir.join("feeds");
    std::fs::create_dir_all(feeds.join("osv")).unwrap();
    std::fs::write(feeds.join("osv/records.jsonl"), jsonl).unwrap();
    feeds
}

#[test]
fn records_scored_only_with_cvss_v4_fail_on_high() {
    let tmp = tempfile::tempdir().unwrap();
    let rustsec = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/osv/rustsec-cvss-v4-only.jsonl"
    ))
    .unwrap();
    // A PyPI record that lists a release PEP 440 cannot read, as PYSEC records do.
    let pysec = serde_json::json!({
        "id": "PYSEC-0000-1",
        "modified": "2024-01-01T00:00:00Z",
        "affected": [{
            "package": { "ecosystem": "PyPI", "name": "fixpkg" },
            "ranges": [{ "type": "ECOSYSTEM", "events": [{ "introduced": "0" }, { "fixed": "0.8.0" }] }],
            "versions": ["0.7.0", "0.7.1.fix1"],
        }],
    });
    let feeds = write_feeds(tmp.path(), &format!("{rustsec}{pysec}\n"));
    let rootfs = tmp.path().join("rootfs");
    let lock = cargo_lock(&[
        ("deno", "2.2.4"),
        ("libcrux-psq", "0.0.6"),
        ("quinn-proto", "0.11.13"),
    ]);
    let site = "usr/lib/python3/dist-packages/fixpkg-0.7.1.fix1.dist-info";
    write_rootfs(
        &rootfs,
        &[
            dir("app"),
            file("app/Cargo.lock", lock),
            dir("usr/lib/python3/dist-packages"),
            dir(site),
            file(
                &format!("{site}/METADATA"),
                "Metadata-Version: 2.1\nName: fixpkg\nVersion: 0.7.1.fix1\n",
            ),
        ],
    );
    let report = json_scan(&rootfs, &feeds);
    let got: Vec<(&str, &str, Option<f64>)> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["id"].as_str().unwrap(),
                f["severity"].as_str().unwrap(),
                f["cvss_score"].as_f64(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("RUSTSEC-2026-0037", "high", Some(8.7)),
            ("RUSTSEC-2025-0138", "medium", Some(6.9)),
            ("RUSTSEC-2026-0024", "low", Some(0.0)),
            // Listed verbatim; its range could not be evaluated, and a note says so.
            ("PYSEC-0000-1", "unknown", None),
        ],
        "{report:#}"
    );
    let notes = report["notes"].to_string();
    assert!(
        notes.contains("fixpkg 0.7.1.fix1") && notes.contains("ranges not evaluated"),
        "{notes}"
    );
    let root = rootfs.to_str().unwrap();
    let feeds = feeds.to_str().unwrap();
    let fail_on = |level| {
        run(&["scan", root, "--feeds", feeds, "--fail-on", level])
            .status
            .code()
    };
    assert_eq!(fail_on("high"), Some(1));
    assert_eq!(fail_on("critical"), Some(0));
}

#[test]
fn many_findings_are_written_whole_and_in_order() {
    // 30 lock files x 20 crates x 6 records per crate: 3,600 findings, each held as a
    // row of references and written as a stream in every format.
    const LOCKS: usize = 30;
    const CRATES: usize = 20;
    const RECORDS: usize = 6;
    let tmp = tempfile::tempdir().unwrap();
    let vectors = [
        ("CVSS_V3", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"),
        (
            "CVSS_V4",
            "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:N/VI:N/VA:H/SC:N/SI:N/SA:N",
        ),
        ("CVSS_V3", "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:N/I:N/A:H"),
    ];
    let mut jsonl = String::new();
    for c in 0..CRATES {
        for r in 0..RECORDS {
            let (kind, score) = vectors[(c + r) % vectors.len()];
            let mut record = serde_json::json!({
                "id": format!("RUSTSEC-2099-{c:02}{r:02}"),
                "modified": "2026-01-01T00:00:00Z",
                "aliases": [format!("CVE-2099-{c:02}{r:02}")],
                "summary": format!("advisory {r} of crate-{c:02}"),
                "affected": [{
                    "package": { "ecosystem": "crates.io", "name": format!("crate-{c:02}") },
                    "ranges": [{ "type": "SEMVER", "events": [{ "introduced": "0" }, { "fixed": format!("1.{r}.0") }] }],
                }],
            });
            // Every third record has no vector: Unknown.
            if r % 3 != 2 {
                record["severity"] = serde_json::json!([{ "type": kind, "score": score }]);
            }
            jsonl += &format!("{record}\n");
        }
    }
    let feeds = write_feeds(tmp.path(), &jsonl);
    let names: Vec<String> = (0..CRATES).map(|c| format!("crate-{c:02}")).collect();
    let crates: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "0.1.0")).collect();
    let lock = cargo_lock(&crates);
    let mut items = vec![dir("srv")];
    for l in 0..LOCKS {
        items.push(dir(&format!("srv/app{l:02}")));
        items.push(file(&format!("srv/app{l:02}/Cargo.lock"), lock.clone()));
    }
    let rootfs = tmp.path().join("rootfs");
    write_rootfs(&rootfs, &items);

    let total = LOCKS * CRATES * RECORDS;
    let report = json_scan(&rootfs, &feeds);
    let findings = report["findings"].as_array().unwrap();
    assert_eq!(findings.len(), total);
    assert_eq!(report["summary"]["total"], total);
    let rank = |s: &str| s.parse::<defender_lite::osv::Severity>().unwrap();
    let keys: Vec<_> = findings
        .iter()
        .map(|f| {
            let id = f["id"].as_str().unwrap();
            let crate_name = f["package"].as_str().unwrap();
            let r: usize = id[id.len() - 2..].parse().unwrap();
            // Each finding is its own record's, for its own package and lock file.
            assert_eq!(crate_name, f["advisory_package"], "{f}");
            assert_eq!(&id[13..15], &crate_name[6..], "{f}");
            assert_eq!(f["fixed"], format!("1.{r}.0"), "{f}");
            assert_eq!(f["aliases"][0], format!("CVE-{}", &id[8..]), "{f}");
            assert_eq!(f["version"], "0.1.0");
            (
                std::cmp::Reverse(rank(f["severity"].as_str().unwrap())),
                crate_name.to_owned(),
                id.to_owned(),
                f["declared_in"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        keys, sorted,
        "sorted by severity, package, id, declared_in; no repeats"
    );
    let counted: usize = ["critical", "high", "medium", "low", "unknown"]
        .iter()
        .map(|s| report["summary"][s].as_u64().unwrap() as usize)
        .sum();
    assert_eq!(counted, total);
    assert_eq!(report["summary"]["unknown"], LOCKS * CRATES * (RECORDS / 3));

    let root = rootfs.to_str().unwrap();
    let feeds = feeds.to_str().unwrap();
    let out = run(&["scan", root, "--feeds", feeds]);
    assert!(out.status.success(), "{out:?}");
    let table = stdout(&out);
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("crate-")).collect();
    assert_eq!(rows.len(), total);
    // The table's rows are the JSON's findings, in the same order, in aligned columns.
    let id_column = table
        .lines()
        .find(|l| l.starts_with("PACKAGE"))
        .unwrap()
        .find("ID ")
        .unwrap();
    for (row, f) in rows.iter().zip(findings) {
        let id = f["id"].as_str().unwrap();
        assert_eq!(&row[id_column..id_column + id.len()], id, "{row}");
        assert!(row.ends_with(f["declared_in"].as_str().unwrap()), "{row}");
    }
    assert!(table.contains(&format!("findings: {total} (")), "{table}");

    let out = run(&["scan", root, "--feeds", feeds, "--format", "sarif"]);
    assert!(out.status.success(), "{out:?}");
    let sarif: Value = serde_json::from_slice(&out.stdout).unwrap();
    let results = sarif["runs"][0]["results"].as_array().unwrap();
    assert_eq!(results.len(), total);
    for (result, f) in results.iter().zip(findings) {
        assert_eq!(result["ruleId"], f["id"]);
        assert_eq!(
            result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
            f["declared_in"]
        );
    }
    let rules = sarif["runs"][0]["tool"]["driver"]["rules"]
        .as_array()
        .unwrap();
    assert_eq!(rules.len(), CRATES * RECORDS);
}

/// Runs the binary to its end under GNU time, with `TMPDIR` set and stdout to `out`;
/// its peak RSS, KiB. (Not `wait4` from here: a child's peak counts the pages of the
/// process it was spawned from, and this test process holds whole reports.)
fn peak_rss_kib(args: &[&str], tmpdir: &Path, out: &Path) -> u64 {
    let figure = out.with_extension("rss");
    let status = Command::new("time")
        .args(["-f", "%M", "-o", figure.to_str().unwrap()])
        .arg(env!("CARGO_BIN_EXE_defender-lite"))
        .args(args)
        .env("TMPDIR", tmpdir)
        .stdout(std::fs::File::create(out).unwrap())
        .status()
        .expect("GNU time (Debian's `time`; tests/run installs it)");
    assert!(status.success(), "{status}");
    let figure = std::fs::read_to_string(&figure).unwrap();
    figure
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{figure:?}"))
}

#[test]
fn four_times_the_findings_take_no_more_memory() {
    // 100 lock files of 50 crates, 80 records per crate; in the first image 75 of the
    // lock files hold versions past every fix: 100,000 findings, then 400,000, from the
    // same number of packages and records. Held in memory, the 300,000 more findings
    // took 22 MB or more (72-byte rows, up to twice that while the vector grew).
    const LOCKS: usize = 100;
    const CRATES: usize = 50;
    const RECORDS: usize = 80;
    let tmp = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..CRATES).map(|c| format!("crate-{c:02}")).collect();
    let mut jsonl = String::new();
    for name in &names {
        for r in 0..RECORDS {
            let record = serde_json::json!({
                "id": format!("RUSTSEC-2099-{}{r:03}", &name[6..]),
                "modified": "2026-01-01T00:00:00Z",
                "aliases": [format!("CVE-2099-{}{r:03}", &name[6..])],
                "severity": [{ "type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:N/I:N/A:H" }],
                "affected": [{
                    "package": { "ecosystem": "crates.io", "name": name },
                    "ranges": [{ "type": "SEMVER", "events": [{ "introduced": "0" }, { "fixed": format!("1.{r}.0") }] }],
                }],
            });
            jsonl += &format!("{record}\n");
        }
    }
    let feeds = write_feeds(tmp.path(), &jsonl);
    let scratch = tmp.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();

    let mut peaks = Vec::new();
    for affected_locks in [LOCKS / 4, LOCKS] {
        let lock = |version| {
            let crates: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), version)).collect();
            cargo_lock(&crates)
        };
        let mut items = vec![dir("srv")];
        for l in 0..LOCKS {
            let version = if l < affected_locks { "0.1.0" } else { "9.0.0" };
            items.push(dir(&format!("srv/app{l:03}")));
            items.push(file(&format!("srv/app{l:03}/Cargo.lock"), lock(version)));
        }
        let rootfs = tmp.path().join(format!("rootfs-{affected_locks}"));
        write_rootfs(&rootfs, &items);
        let out = tmp.path().join("table.txt");
        let args = [
            "scan",
            rootfs.to_str().unwrap(),
            "--feeds",
            feeds.to_str().unwrap(),
        ];
        peaks.push(peak_rss_kib(&args, &scratch, &out));
        let table = std::fs::read_to_string(&out).unwrap();
        let total = affected_locks * CRATES * RECORDS;
        assert!(
            table.contains(&format!(
                "\nfindings: {total} (critical 0, high 0, medium {total},"
            )),
            "{}",
            &table[table.len().saturating_sub(500)..]
        );
        assert_eq!(
            table.lines().filter(|l| l.starts_with("crate-")).count(),
            total
        );
        assert_eq!(
            std::fs::read_dir(&scratch).unwrap().count(),
            0,
            "nothing is left in TMPDIR"
        );
    }
    let [small, large] = peaks[..] else {
        unreachable!()
    };
    // Both outgrow the 8 MiB budget; what more the larger takes is the merge's buffers.
    assert!(
        large <= small + 4 * 1024,
        "peak RSS {small} KiB with 100,000 findings, {large} KiB with 400,000"
    );
}
