//! apk (Alpine, Wolfi, Chainguard): `lib/apk/db/installed`, one block per package of
//! `X:value` lines separated by blank lines. `P:` name, `V:` version, `o:` origin (the
//! source package, e.g. `openssl` for `libcrypto3`). Every package in the file is
//! installed; the file lists nothing else. File lists (`F:`, `R:`...) are ignored.

use super::{Collector, DatabaseKind, Package};
use crate::image::ImageError;

const INSTALLED: &str = "lib/apk/db/installed";
const MAX_INSTALLED: u64 = 64 << 20;

pub(crate) fn read(c: &mut Collector<'_>) -> Result<(), ImageError> {
    let Some(entry) = c.image.metadata(INSTALLED)? else {
        return Ok(());
    };
    let path = entry.path.to_owned();
    let ecosystem =
        c.os.as_ref()
            .map_or_else(|| "Alpine".to_owned(), |os| os.apk_ecosystem());
    match c.image.read_capped(INSTALLED, MAX_INSTALLED) {
        Ok(Some(bytes)) => {
            let packages = parse(&String::from_utf8_lossy(&bytes), &ecosystem, &path);
            c.read_ok(DatabaseKind::Apk, &path, packages);
        }
        Ok(None) => {}
        Err(e) => c.unreadable(DatabaseKind::Apk, &path, e.to_string()),
    }
    Ok(())
}

pub(crate) fn parse(text: &str, ecosystem: &str, declared_in: &str) -> Vec<Package> {
    let mut packages = Vec::new();
    let mut name: Option<&str> = None;
    let mut version: Option<&str> = None;
    let mut origin: Option<&str> = None;
    let mut flush =
        |name: &mut Option<&str>, version: &mut Option<&str>, origin: &mut Option<&str>| {
            if let (Some(n), Some(v)) = (name.take(), version.take())
                && !n.is_empty()
                && !v.is_empty()
            {
                packages.push(Package {
                    ecosystem: ecosystem.to_owned(),
                    name: n.to_owned(),
                    version: v.to_owned(),
                    source_name: Some(origin.unwrap_or(n).to_owned()),
                    source_version: Some(v.to_owned()),
                    declared_in: declared_in.to_owned(),
                    found_by: DatabaseKind::Apk,
                });
            }
            *name = None;
            *version = None;
            *origin = None;
        };
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            flush(&mut name, &mut version, &mut origin);
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            "P" => name = Some(value),
            "V" => version = Some(value),
            "o" if !value.is_empty() => origin = Some(value),
            _ => {}
        }
    }
    flush(&mut name, &mut version, &mut origin);
    packages
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: &[(&str, &str, &str)]) {
        let got: Vec<(String, String, String)> = parse(text, "Alpine:v3.19", INSTALLED)
            .into_iter()
            .map(|p| (p.name, p.version, p.source_name.unwrap_or_default()))
            .collect();
        let expected: Vec<(String, String, String)> = expected
            .iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn blocks() {
        check(
            "C:Q1abc=\nP:musl\nV:1.2.4_git20230717-r4\nA:x86_64\no:musl\nF:lib\nR:libc.musl-x86_64.so.1\na:0:0:777\n\n\
             P:libcrypto3\nV:3.1.4-r2\no:openssl\nD:so:libc.musl-x86_64.so.1\n\n\n\
             P:noorigin\nV:1-r0\n\nP:noversion\n\nV:2-r0\n",
            &[
                ("musl", "1.2.4_git20230717-r4", "musl"),
                ("libcrypto3", "3.1.4-r2", "openssl"),
                ("noorigin", "1-r0", "noorigin"),
            ],
        );
        check("", &[]);
        check("P:last\r\nV:1-r0\r\no:src", &[("last", "1-r0", "src")]);
    }
}
