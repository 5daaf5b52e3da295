//! Which apps an image holds: an executable named by basename in one of the usual
//! binary directories (or the image's own `PATH`), an executable named by absolute path
//! (a glob allowed), or a marker file. An executable must be a regular file with an
//! execute bit once symbolic links are followed inside the image (`/usr/sbin/mysqld` ->
//! `mariadbd` counts, a dangling link does not); a marker may be anything.

use relay::bundle::AppSpec;
use serde::Serialize;

use crate::image::Image;

/// Directories searched for an executable given by basename. Globs cover the layouts of
/// apps installed under their own prefix (`/usr/share/elasticsearch/bin`,
/// `/usr/lib/postgresql/15/bin`, `/opt/rabbitmq/sbin`, `/usr/local/tomcat/bin`).
pub const BIN_DIRS: [&str; 15] = [
    "/bin",
    "/sbin",
    "/usr/bin",
    "/usr/sbin",
    "/usr/local/bin",
    "/usr/local/sbin",
    "/usr/libexec",
    "/opt/*/bin",
    "/opt/*/sbin",
    "/usr/lib/*/bin",
    "/usr/lib/*/*/bin",
    "/usr/share/*/bin",
    "/usr/share/*/sbin",
    "/usr/local/*/bin",
    "/usr/local/*/sbin",
];

/// Why an app is thought present.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Found {
    /// `executable` or `file`.
    pub kind: FoundKind,
    /// Absolute path in the image, as stored (a link is named, not its target).
    pub path: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FoundKind {
    Executable,
    File,
}

/// The evidence that `app` is in the image; empty when it is not. `path_dirs` are the
/// image's `PATH` entries, searched as well.
pub(crate) fn find(
    image: &Image,
    app: &AppSpec,
    path_dirs: &[String],
    problems: &mut Vec<String>,
) -> Vec<Found> {
    let mut found = Vec::new();
    for exe in &app.executables {
        let exe = exe.as_str();
        let patterns: Vec<String> = if exe.starts_with('/') {
            vec![exe.to_owned()]
        } else {
            let name = glob::Pattern::escape(exe);
            BIN_DIRS
                .iter()
                .map(|d| (*d).to_owned())
                .chain(
                    path_dirs
                        .iter()
                        .map(|d| glob::Pattern::escape(d.trim_end_matches('/'))),
                )
                .map(|dir| format!("{dir}/{name}"))
                .collect()
        };
        for pattern in patterns {
            for path in matches(image, pattern.as_str(), problems) {
                let executable = matches!(image.metadata(&path), Ok(Some(e)) if e.is_executable());
                if executable {
                    found.push(Found {
                        kind: FoundKind::Executable,
                        path,
                    });
                }
            }
        }
    }
    for marker in &app.files {
        for path in matches(image, marker.as_str(), problems) {
            found.push(Found {
                kind: FoundKind::File,
                path,
            });
        }
    }
    found.sort();
    found.dedup();
    found
}

/// The image's `PATH`, from a `docker save` config's environment.
pub(crate) fn image_path(image: &Image) -> Vec<String> {
    image
        .config()
        .and_then(|c| c.config.as_ref())
        .and_then(|c| c.env_var("PATH"))
        .map(|p| {
            p.split(':')
                .filter(|d| d.starts_with('/'))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn matches(image: &Image, pattern: &str, problems: &mut Vec<String>) -> Vec<String> {
    if !super::files::has_glob(pattern) {
        // Named by where it really is, so `/bin/x` and `/usr/bin/x` in a merged-/usr
        // image are one finding.
        return match image.symlink_metadata(pattern) {
            Ok(Some(e)) => vec![format!("/{}", e.path)],
            Ok(None) => Vec::new(),
            Err(e) => {
                problems.push(format!("{pattern}: {e}"));
                Vec::new()
            }
        };
    }
    match image.glob(pattern) {
        Ok(entries) => entries.iter().map(|e| format!("/{}", e.path)).collect(),
        Err(e) => {
            problems.push(format!("{pattern}: {e}"));
            Vec::new()
        }
    }
}
