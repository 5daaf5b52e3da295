//! Python: installed distributions' core metadata, anywhere in the image (system
//! `dist-packages`, `site-packages` of any interpreter, virtualenvs): `*.dist-info/METADATA`
//! (wheels, pip), `*.egg-info/PKG-INFO` (setuptools) and the single-file `*.egg-info` of
//! old distutils installs. `Name:` and `Version:` come from the header block; the
//! long description after it is not looked at. Names are kept as written (PyPI matching
//! normalises them, PEP 503).

use super::{Collector, DatabaseKind, Groups, Package, header_fields, parent};
use crate::image::ImageError;

const MAX_METADATA: u64 = 8 << 20;

/// Whether an image path is a distribution's metadata file.
pub(crate) fn is_metadata(path: &str) -> bool {
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    (name == "METADATA" && dir.ends_with(".dist-info"))
        || (name == "PKG-INFO" && dir.ends_with(".egg-info"))
        || name.ends_with(".egg-info")
}

/// The directory the distribution is installed in (`.../site-packages`).
fn install_dir(path: &str) -> &str {
    if path.ends_with(".egg-info") {
        parent(path)
    } else {
        parent(parent(path))
    }
}

pub(crate) fn read(c: &mut Collector<'_>, paths: &[String]) -> Result<(), ImageError> {
    let mut groups = Groups::new(DatabaseKind::Python);
    let mut notes = Vec::new();
    c.image
        .read_each(paths, MAX_METADATA, |path, result| match result {
            Ok(Some(bytes)) => {
                let text = String::from_utf8_lossy(&bytes);
                match parse(&text, path) {
                    Some(package) => groups.add(install_dir(path), [package]),
                    None => notes.push(format!("{path}: no Name or Version; skipped")),
                }
            }
            Ok(None) | Err(ImageError::NotAFile { .. }) => {}
            Err(e) => notes.push(format!("python metadata skipped: {e}")),
        })?;
    for note in notes {
        c.note(note);
    }
    groups.finish(c);
    Ok(())
}

pub(crate) fn parse(text: &str, declared_in: &str) -> Option<Package> {
    let mut name = None;
    let mut version = None;
    for (key, value) in header_fields(text) {
        if key.eq_ignore_ascii_case("name") && name.is_none() {
            name = Some(value);
        } else if key.eq_ignore_ascii_case("version") && version.is_none() {
            version = Some(value);
        }
    }
    let (name, version) = (name?, version?);
    if name.is_empty() || version.is_empty() {
        return None;
    }
    Some(Package {
        ecosystem: "PyPI".into(),
        name: name.to_owned(),
        version: version.to_owned(),
        source_name: None,
        source_version: None,
        declared_in: declared_in.to_owned(),
        found_by: DatabaseKind::Python,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Option<(&str, &str)>) {
        let got = parse(text, "METADATA").map(|p| (p.name, p.version));
        assert_eq!(
            got,
            expected.map(|(n, v)| (n.to_owned(), v.to_owned())),
            "{text}"
        );
    }

    #[test]
    fn metadata() {
        check(
            "Metadata-Version: 2.1\nName: requests\nVersion: 2.31.0\nSummary: Python HTTP for Humans.\n\
             Classifier: Programming Language :: Python :: 3\n\nName: not-this\nVersion: 0\n",
            Some(("requests", "2.31.0")),
        );
        check(
            "Metadata-Version: 1.0\r\nname: wsgiref\r\nversion: 0.1.2\r\nDescription: a\r\n        UNKNOWN\r\n",
            Some(("wsgiref", "0.1.2")),
        );
        check("Name: x\n", None);
        check("\nName: x\nVersion: 1\n", None);
        check("", None);
    }

    #[test]
    fn paths() {
        assert!(is_metadata(
            "usr/lib/python3/dist-packages/PyYAML-6.0.dist-info/METADATA"
        ));
        assert!(is_metadata(
            "usr/lib/python3/dist-packages/PyJWT-2.6.0.egg-info/PKG-INFO"
        ));
        assert!(is_metadata("usr/lib/python2.7/wsgiref.egg-info"));
        assert!(!is_metadata("usr/share/doc/METADATA"));
        assert_eq!(
            install_dir("usr/lib/python3/dist-packages/a-1.dist-info/METADATA"),
            "usr/lib/python3/dist-packages"
        );
        assert_eq!(
            install_dir("usr/lib/python2.7/wsgiref.egg-info"),
            "usr/lib/python2.7"
        );
    }
}
