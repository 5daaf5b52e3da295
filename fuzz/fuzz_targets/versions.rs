//! The version parsers and orders of every scheme (`defender_lite::version`: dpkg, apk,
//! rpm, PEP 440, SemVer, Go, generic) and rpm's `rpmvercmp`. The first byte picks the
//! scheme; the rest is up to three versions, one per line. Each must parse or be refused
//! without a panic, and the order must be one: reflexive, antisymmetric, transitive, and
//! a version printed and read again is the same version. Seeds: the version test vectors
//! (apk-tools', rpm's, pypa/packaging's, dpkg's) and the sample feeds' range events.
#![no_main]

use std::cmp::Ordering;

use defender_lite::osv::{OsvRecord, scheme_for};
use defender_lite::version::{Scheme, Version, rpmvercmp};
use libfuzzer_sys::fuzz_target;

/// Seeds per scheme from each source, to keep the corpus small.
const MAX_PER_SCHEME: usize = 120;

fn scheme_byte(scheme: Scheme) -> u8 {
    Scheme::ALL.iter().position(|s| *s == scheme).unwrap() as u8
}

fn input(scheme: Scheme, versions: &[&str]) -> Vec<u8> {
    let mut out = vec![scheme_byte(scheme)];
    out.extend_from_slice(versions.join("\n").as_bytes());
    out
}

/// Pairs of quoted strings in the version tests' tables, by the table's scheme.
fn test_vectors() -> Vec<(Scheme, Vec<String>)> {
    let mut out = Vec::new();
    for file in [
        "defender-lite/tests/version_vectors.rs",
        "defender-lite/tests/version_dpkg.rs",
    ] {
        let text = String::from_utf8(fuzz::fixture(file)).unwrap();
        let mut scheme = None;
        let mut apk_block = false;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("const ") {
                scheme = [
                    ("APK", Scheme::Apk),
                    ("RPM", Scheme::Rpm),
                    ("PEP440", Scheme::Pep440),
                    ("DPKG", Scheme::Dpkg),
                ]
                .into_iter()
                .find(|(prefix, _)| rest.starts_with(prefix))
                .map(|(_, s)| s);
                apk_block = rest.starts_with("APK_VERSION_DATA");
            }
            let Some(scheme) = scheme else { continue };
            if apk_block {
                // `A op B  # comment`, the first line after `r"`.
                let line = line.rsplit_once("r\"").map_or(line, |(_, l)| l);
                let words: Vec<&str> = line.split_whitespace().collect();
                if words.len() >= 3 && ["<", ">", "="].contains(&words[1]) {
                    out.push((scheme, vec![words[0].to_owned(), words[2].to_owned()]));
                }
                if line.ends_with("\";") {
                    apk_block = false;
                }
                continue;
            }
            let quoted: Vec<&str> = line.split('"').skip(1).step_by(2).collect();
            if !quoted.is_empty() && line.trim_start().starts_with(['(', '"']) {
                out.push((scheme, quoted.iter().map(|s| (*s).to_owned()).collect()));
            }
        }
    }
    out
}

fn seeds() -> Vec<fuzz::Seed> {
    let mut out: Vec<fuzz::Seed> = Vec::new();
    let mut count = std::collections::HashMap::<(u8, &str), usize>::new();
    let mut push = |source: &'static str, scheme: Scheme, versions: Vec<String>| {
        let n = count.entry((scheme_byte(scheme), source)).or_default();
        *n += 1;
        if *n <= MAX_PER_SCHEME {
            let refs: Vec<&str> = versions.iter().map(String::as_str).collect();
            out.push((
                format!("{source}-{}-{n}", scheme.name()),
                input(scheme, &refs),
            ));
        }
    };
    for (scheme, versions) in test_vectors() {
        push("vectors", scheme, versions);
    }
    for (name, bytes) in fuzz::fixture_tree("relay/samples/feeds/osv") {
        if !name.ends_with(".jsonl") {
            continue;
        }
        for line in bytes.split(|b| *b == b'\n') {
            let Ok(record) = serde_json::from_slice::<OsvRecord>(line) else {
                continue;
            };
            for affected in &record.affected {
                let Some(package) = &affected.package else {
                    continue;
                };
                let scheme = scheme_for(&package.ecosystem);
                for range in &affected.ranges {
                    let versions: Vec<String> = range
                        .events
                        .iter()
                        .map(|e| e.version().to_owned())
                        .take(3)
                        .collect();
                    push("osv", scheme, versions);
                }
            }
        }
    }
    let made: [(Scheme, &[&str]); 6] = [
        (
            Scheme::Semver,
            &["1.2.3-alpha.1+build.5", "v1.2", "1.2.3-alpha.beta"],
        ),
        (
            Scheme::Go,
            &[
                "v0.0.0-20220906165146-f3363e06e74c",
                "v2.1.0+incompatible",
                "go1.21rc2",
            ],
        ),
        (Scheme::Generic, &["1.0-beta1", "1.0", "2.0.0.RELEASE"]),
        (Scheme::Dpkg, &["1:2.36-9+deb12u4", "2.36-9+b8", "1.0~rc1"]),
        (Scheme::Apk, &["1.2.3_rc1-r0", "1.2.3-r10", "1.2.3a_p1~abc"]),
        (
            Scheme::Pep440,
            &["1!2.0.post1.dev3", "2.0rc1", "1.0+local.7"],
        ),
    ];
    for (scheme, versions) in made {
        push(
            "made",
            scheme,
            versions.iter().map(|s| (*s).to_owned()).collect(),
        );
    }
    out
}

fn parse(scheme: Scheme, text: &str) -> Option<Version> {
    let version = scheme.parse(text).ok()?;
    assert_eq!(version.scheme(), scheme);
    // Printed and read again: the same version.
    let printed = version.to_string();
    let again = scheme
        .parse(&printed)
        .unwrap_or_else(|e| panic!("{text:?} prints as {printed:?}, which does not parse: {e}"));
    assert_eq!(
        version.partial_cmp(&again),
        Some(Ordering::Equal),
        "{text:?} prints as {printed:?}, a different version"
    );
    Some(version)
}

fuzz_target!(init: fuzz::seeds(seeds), |data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let scheme = Scheme::ALL[usize::from(pick) % Scheme::ALL.len()];
    let text = String::from_utf8_lossy(rest);
    let words: Vec<&str> = text.splitn(3, '\n').collect();
    if scheme == Scheme::Rpm {
        for a in &words {
            assert_eq!(rpmvercmp(a, a), Ordering::Equal, "rpmvercmp({a:?}, itself)");
            for b in &words {
                assert_eq!(rpmvercmp(a, b), rpmvercmp(b, a).reverse(), "rpmvercmp({a:?}, {b:?})");
            }
        }
    }
    let versions: Vec<(&str, Version)> =
        words.iter().filter_map(|w| Some((*w, parse(scheme, w)?))).collect();
    for (a, va) in &versions {
        assert_eq!(va.partial_cmp(va), Some(Ordering::Equal), "{a:?} against itself");
        for (b, vb) in &versions {
            let ab = va.partial_cmp(vb);
            assert_eq!(ab, vb.partial_cmp(va).map(Ordering::reverse), "{a:?} against {b:?}");
            for (c, vc) in &versions {
                if ab != Some(Ordering::Greater) && vb.partial_cmp(vc) != Some(Ordering::Greater) {
                    assert_ne!(va.partial_cmp(vc), Some(Ordering::Greater), "{a:?} <= {b:?} <= {c:?}");
                }
            }
        }
    }
});
