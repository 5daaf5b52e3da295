//! dpkg: `var/lib/dpkg/status` (one paragraph per package) and distroless images'
//! `var/lib/dpkg/status.d/<package>` files (the same paragraphs, one file each, with
//! `<package>.md5sums` beside them).
//!
//! A package counts when its files are on disk: the third word of `Status:` is
//! `installed`, `triggers-awaited`, `triggers-pending`, `half-configured` or `unpacked`
//! (the want flag, `install`, `hold` or `deinstall`, does not remove files). `config-files`,
//! `not-installed` and `half-installed` do not count. status.d paragraphs have no
//! `Status:` field: they are installed. `Source: name (version)` gives the source package
//! and its own version (binNMUs such as `5.2.15-2+b8` differ from their source
//! `5.2.15-2`).

use super::{Collector, DatabaseKind, Package, header_fields};
use crate::image::ImageError;

const STATUS: &str = "var/lib/dpkg/status";
const STATUS_D: &str = "var/lib/dpkg/status.d";
const MAX_STATUS: u64 = 64 << 20;
const MAX_STATUS_D_FILE: u64 = 4 << 20;

pub(crate) fn read(c: &mut Collector<'_>) -> Result<(), ImageError> {
    let ecosystem =
        c.os.as_ref()
            .map_or_else(|| "Debian".to_owned(), |os| os.dpkg_ecosystem());
    if let Some(entry) = c.image.metadata(STATUS)? {
        let path = entry.path.to_owned();
        match c.image.read_capped(STATUS, MAX_STATUS) {
            Ok(Some(bytes)) => {
                let packages = parse(&String::from_utf8_lossy(&bytes), &ecosystem, &path, true);
                c.read_ok(DatabaseKind::Dpkg, &path, packages);
            }
            Ok(None) => {}
            Err(e) => c.unreadable(DatabaseKind::Dpkg, &path, e.to_string()),
        }
    }
    let Some(files) = c.image.read_dir(STATUS_D)? else {
        return Ok(());
    };
    let dir = c
        .image
        .metadata(STATUS_D)?
        .map_or_else(|| STATUS_D.to_owned(), |e| e.path.to_owned());
    let names: Vec<String> = files
        .iter()
        .filter(|e| !e.file_name().ends_with(".md5sums") && !e.file_name().starts_with('.'))
        .map(|e| e.path.to_owned())
        .collect();
    let mut packages = Vec::new();
    let mut failures = Vec::new();
    c.image
        .read_each(&names, MAX_STATUS_D_FILE, |path, result| match result {
            Ok(Some(bytes)) => {
                packages.extend(parse(
                    &String::from_utf8_lossy(&bytes),
                    &ecosystem,
                    path,
                    false,
                ));
            }
            Ok(None) | Err(ImageError::NotAFile { .. }) => {}
            Err(e) => failures.push(e.to_string()),
        })?;
    for failure in failures {
        c.note(format!("dpkg status.d: {failure}"));
    }
    if !names.is_empty() {
        c.read_ok(DatabaseKind::Dpkg, &dir, packages);
    }
    Ok(())
}

/// Parses dpkg status paragraphs. `require_status`: a paragraph without `Status:` is not
/// installed (the status file) or is (status.d files).
pub(crate) fn parse(
    text: &str,
    ecosystem: &str,
    declared_in: &str,
    require_status: bool,
) -> Vec<Package> {
    let mut packages = Vec::new();
    for paragraph in paragraphs(text) {
        let mut name = None;
        let mut version = None;
        let mut status = None;
        let mut source = None;
        for (key, value) in header_fields(paragraph) {
            match key {
                "Package" => name = Some(value),
                "Version" => version = Some(value),
                "Status" => status = Some(value),
                "Source" => source = Some(value),
                _ => {}
            }
        }
        let (Some(name), Some(version)) = (name, version) else {
            continue;
        };
        if name.is_empty() || version.is_empty() {
            continue;
        }
        let installed = match status {
            Some(status) => files_present(status),
            None => !require_status,
        };
        if !installed {
            continue;
        }
        let (source_name, source_version) = match source {
            Some(source) => parse_source(source, version),
            None => (name.to_owned(), version.to_owned()),
        };
        packages.push(Package {
            ecosystem: ecosystem.to_owned(),
            name: name.to_owned(),
            version: version.to_owned(),
            source_name: Some(source_name),
            source_version: Some(source_version),
            declared_in: declared_in.to_owned(),
            found_by: DatabaseKind::Dpkg,
        });
    }
    packages
}

/// Paragraphs separated by blank lines (lines of only whitespace count as blank).
fn paragraphs(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        loop {
            // Skip leading blank lines.
            let trimmed = rest.trim_start_matches(['\n', '\r', ' ', '\t']);
            if trimmed.is_empty() {
                return None;
            }
            // The paragraph ends at the first line that is blank.
            let mut end = trimmed.len();
            let mut offset = 0;
            for line in trimmed.split_inclusive('\n') {
                if line.trim().is_empty() && offset > 0 {
                    end = offset;
                    break;
                }
                offset += line.len();
            }
            let (paragraph, after) = trimmed.split_at(end);
            rest = after;
            if !paragraph.trim().is_empty() {
                return Some(paragraph);
            }
        }
    })
}

/// `Status: want flag status` -> whether the package's files are on disk.
fn files_present(status: &str) -> bool {
    matches!(
        status.split_whitespace().nth(2),
        Some(
            "installed" | "triggers-awaited" | "triggers-pending" | "half-configured" | "unpacked"
        )
    )
}

/// `openssl (3.0.11-1)` -> (openssl, 3.0.11-1); `openssl` -> (openssl, binary version).
fn parse_source(source: &str, binary_version: &str) -> (String, String) {
    match source.split_once('(') {
        Some((name, version)) => {
            let version = version.trim().trim_end_matches(')').trim();
            let version = if version.is_empty() {
                binary_version
            } else {
                version
            };
            (name.trim().to_owned(), version.to_owned())
        }
        None => (source.trim().to_owned(), binary_version.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, require_status: bool, expected: &[(&str, &str, &str, &str)]) {
        let got: Vec<(String, String, String, String)> =
            parse(text, "Debian:12", "var/lib/dpkg/status", require_status)
                .into_iter()
                .map(|p| {
                    (
                        p.name,
                        p.version,
                        p.source_name.unwrap_or_default(),
                        p.source_version.unwrap_or_default(),
                    )
                })
                .collect();
        let expected: Vec<(String, String, String, String)> = expected
            .iter()
            .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()))
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn status_paragraphs() {
        check(
            "Package: bash\nStatus: install ok installed\nSource: bash (5.2.15-2)\nVersion: 5.2.15-2+b8\n\
             Description: GNU Bourne Again SHell\n Bash is an sh-compatible command language interpreter\n .\n more\n\
             \n\
             Package: libssl3\nStatus: hold ok installed\nSource: openssl\nVersion: 3.0.11-1~deb12u2\n\
             \n \n\
             Package: gone\nStatus: deinstall ok config-files\nVersion: 1.0\n\
             \n\
             Package: pending\nStatus: install ok triggers-pending\nVersion: 2:1.0-1\n\
             \n\
             Package: broken\nStatus: install reinstreq half-installed\nVersion: 1\n\
             \n\
             Package: noversion\nStatus: install ok installed\n\
             \n\
             Package: nostatus\nVersion: 1\n",
            true,
            &[
                ("bash", "5.2.15-2+b8", "bash", "5.2.15-2"),
                ("libssl3", "3.0.11-1~deb12u2", "openssl", "3.0.11-1~deb12u2"),
                ("pending", "2:1.0-1", "pending", "2:1.0-1"),
            ],
        );
    }

    #[test]
    fn status_d_files_have_no_status() {
        check(
            "Package: libc6\nVersion: 2.36-9+deb12u4\nArchitecture: amd64\nSource: glibc\n",
            false,
            &[("libc6", "2.36-9+deb12u4", "glibc", "2.36-9+deb12u4")],
        );
        check("\r\n\r\n", false, &[]);
        check("garbage without colon\n\n::\n", false, &[]);
    }
}
