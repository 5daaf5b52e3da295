//! npm: every installed package is a directory `node_modules/<name>` or
//! `node_modules/@scope/<name>` with a `package.json` naming it; nested `node_modules`
//! count too. Other `package.json` files below a package (`dist/esm/package.json`, test
//! fixtures) are not packages and are not read. A manifest without both `name` and
//! `version` is skipped. Each top-level `node_modules` is one database.

use serde::Deserialize;

use super::{Collector, DatabaseKind, Groups, Package};
use crate::image::ImageError;

const MAX_PACKAGE_JSON: u64 = 4 << 20;

/// Whether an image path is an installed package's manifest.
pub(crate) fn is_package_json(path: &str) -> bool {
    let mut parts = path.rsplit('/');
    if parts.next() != Some("package.json") {
        return false;
    }
    let Some(name) = parts.next() else {
        return false;
    };
    match parts.next() {
        Some("node_modules") => !name.starts_with('@') && !name.starts_with('.'),
        Some(scope) if scope.starts_with('@') => parts.next() == Some("node_modules"),
        _ => false,
    }
}

/// The outermost `node_modules` directory above a manifest.
fn top_node_modules(path: &str) -> &str {
    match path.find("node_modules/") {
        Some(i) => &path[..i + "node_modules".len()],
        None => path,
    }
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(default)]
    name: Option<serde_json::Value>,
    #[serde(default)]
    version: Option<serde_json::Value>,
}

pub(crate) fn read(c: &mut Collector<'_>, paths: &[String]) -> Result<(), ImageError> {
    let mut groups = Groups::new(DatabaseKind::Npm);
    let mut notes = Vec::new();
    let mut unnamed = 0usize;
    c.image
        .read_each(paths, MAX_PACKAGE_JSON, |path, result| match result {
            Ok(Some(bytes)) => match parse(&bytes, path) {
                Ok(Some(package)) => groups.add(top_node_modules(path), [package]),
                Ok(None) => {
                    unnamed += 1;
                    groups.add(top_node_modules(path), []);
                }
                Err(e) => notes.push(format!("{path}: not JSON ({e}); skipped")),
            },
            Ok(None) | Err(ImageError::NotAFile { .. }) => {}
            Err(e) => notes.push(format!("npm manifest skipped: {e}")),
        })?;
    if unnamed > 0 {
        notes.push(format!(
            "{unnamed} node_modules package.json files without both name and version skipped"
        ));
    }
    for note in notes {
        c.note(note);
    }
    groups.finish(c);
    Ok(())
}

/// `Ok(None)` for a manifest that lacks a string name or version.
pub(crate) fn parse(bytes: &[u8], declared_in: &str) -> Result<Option<Package>, serde_json::Error> {
    let manifest: Manifest = serde_json::from_slice(bytes)?;
    let text = |value: Option<serde_json::Value>| match value {
        Some(serde_json::Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        _ => None,
    };
    let (Some(name), Some(version)) = (text(manifest.name), text(manifest.version)) else {
        return Ok(None);
    };
    Ok(Some(Package {
        ecosystem: "npm".into(),
        name,
        version,
        source_name: None,
        source_version: None,
        declared_in: declared_in.to_owned(),
        found_by: DatabaseKind::Npm,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests() {
        let check = |json: &str, expected: Option<(&str, &str)>| {
            let got = parse(json.as_bytes(), "p")
                .unwrap()
                .map(|p| (p.name, p.version));
            assert_eq!(
                got,
                expected.map(|(n, v)| (n.to_owned(), v.to_owned())),
                "{json}"
            );
        };
        check(
            r#"{"name":"lodash","version":"4.17.21","dependencies":{}}"#,
            Some(("lodash", "4.17.21")),
        );
        check(
            r#"{"name":"@babel/core","version":" 7.23.0 "}"#,
            Some(("@babel/core", "7.23.0")),
        );
        check(r#"{"type":"module"}"#, None);
        check(r#"{"name":"x","version":1}"#, None);
        assert!(parse(b"{not json", "p").is_err());
        assert!(!matches!(parse(b"[]", "p"), Ok(Some(_))));
    }

    #[test]
    fn paths() {
        assert!(is_package_json("app/node_modules/lodash/package.json"));
        assert!(is_package_json("app/node_modules/@babel/core/package.json"));
        assert!(is_package_json(
            "usr/lib/node_modules/npm/node_modules/glob/package.json"
        ));
        assert!(is_package_json("node_modules/x/package.json"));
        assert!(!is_package_json("app/package.json"));
        assert!(!is_package_json(
            "app/node_modules/glob/dist/esm/package.json"
        ));
        assert!(!is_package_json("app/node_modules/@babel/package.json"));
        assert!(!is_package_json("app/node_modules/.bin/package.json"));
        assert_eq!(
            top_node_modules("usr/lib/node_modules/npm/node_modules/glob/package.json"),
            "usr/lib/node_modules"
        );
    }
}
