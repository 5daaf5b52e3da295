//! The distribution an image is built on, from `etc/os-release` (or `usr/lib/os-release`),
//! and the OSV ecosystem names its package managers' packages go by: `Debian:12`,
//! `Ubuntu:22.04`, `Alpine:v3.19`, `Red Hat`, `Rocky Linux:9`...
//!
//! Unknown distributions get `<ID>:<VERSION_ID>` so that nothing is silently merged with
//! Debian or Alpine; the scanner decides what it can match.

use crate::image::{Image, ImageError};

/// The fields of os-release(5) the inventory uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsRelease {
    /// `ID`, lower-case (`debian`, `alpine`, `rhel`).
    pub id: String,
    /// `ID_LIKE`, split on spaces.
    pub id_like: Vec<String>,
    pub version_id: Option<String>,
    pub version_codename: Option<String>,
    pub pretty_name: Option<String>,
    /// Where it was read, inside the image.
    pub path: String,
}

const MAX_OS_RELEASE: u64 = 64 * 1024;

impl OsRelease {
    /// Parses os-release text: `KEY=value` lines, values optionally quoted, `#` comments.
    pub fn parse(text: &str, path: &str) -> OsRelease {
        let mut release = OsRelease {
            path: path.to_owned(),
            ..OsRelease::default()
        };
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, raw)) = line.split_once('=') else {
                continue;
            };
            let value = unquote(raw.trim());
            match key.trim() {
                "ID" => release.id = value.to_ascii_lowercase(),
                "ID_LIKE" => {
                    release.id_like = value
                        .split_whitespace()
                        .map(str::to_ascii_lowercase)
                        .collect();
                }
                "VERSION_ID" if !value.is_empty() => release.version_id = Some(value),
                "VERSION_CODENAME" if !value.is_empty() => release.version_codename = Some(value),
                "PRETTY_NAME" if !value.is_empty() => release.pretty_name = Some(value),
                _ => {}
            }
        }
        release
    }

    /// The ecosystem of the packages dpkg lists.
    pub fn dpkg_ecosystem(&self) -> String {
        match self.id.as_str() {
            "debian" => match self.debian_major() {
                Some(major) => format!("Debian:{major}"),
                None => "Debian".into(),
            },
            "ubuntu" => versioned("Ubuntu", self.version_id.as_deref()),
            _ => self.fallback(),
        }
    }

    /// The ecosystem of the packages apk lists.
    pub fn apk_ecosystem(&self) -> String {
        match self.id.as_str() {
            "alpine" => match self.version_id.as_deref().and_then(major_minor) {
                Some(version) => format!("Alpine:v{version}"),
                None => "Alpine".into(),
            },
            "wolfi" => "Wolfi".into(),
            "chainguard" => "Chainguard".into(),
            _ => self.fallback(),
        }
    }

    /// The ecosystem of the packages rpm lists.
    pub fn rpm_ecosystem(&self) -> String {
        let major = self
            .version_id
            .as_deref()
            .map(|v| v.split('.').next().unwrap_or(v));
        match self.id.as_str() {
            "rhel" => "Red Hat".into(),
            "rocky" => versioned("Rocky Linux", major),
            "almalinux" => versioned("AlmaLinux", major),
            "centos" => versioned("CentOS", major),
            "ol" => versioned("Oracle Linux", major),
            "fedora" => versioned("Fedora", self.version_id.as_deref()),
            "amzn" => versioned("Amazon Linux", self.version_id.as_deref()),
            "opensuse-leap" => versioned("openSUSE:Leap", self.version_id.as_deref()),
            "sles" => versioned("SUSE:Linux Enterprise Server", self.version_id.as_deref()),
            "mariner" | "azurelinux" => versioned("Azure Linux", self.version_id.as_deref()),
            _ => self.fallback(),
        }
    }

    fn debian_major(&self) -> Option<String> {
        if let Some(version) = &self.version_id {
            return Some(version.split('.').next().unwrap_or(version).to_owned());
        }
        // Testing and unstable have no VERSION_ID; the codename still names the release.
        let number = match self.version_codename.as_deref()? {
            "buster" => "10",
            "bullseye" => "11",
            "bookworm" => "12",
            "trixie" => "13",
            "forky" => "14",
            _ => return None,
        };
        Some(number.into())
    }

    fn fallback(&self) -> String {
        let name = if self.id.is_empty() {
            "unknown"
        } else {
            &self.id
        };
        versioned(name, self.version_id.as_deref())
    }
}

fn versioned(name: &str, version: Option<&str>) -> String {
    match version {
        Some(version) => format!("{name}:{version}"),
        None => name.to_owned(),
    }
}

/// "3.19.1" -> "3.19"; "3.20_alpha20240329" -> "3.20".
fn major_minor(version: &str) -> Option<String> {
    let mut parts = version.split('.');
    let major = parts.next().filter(|p| !p.is_empty())?;
    let minor: String = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    if minor.is_empty() || !major.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(format!("{major}.{minor}"))
}

fn unquote(value: &str) -> String {
    let inner = match value.as_bytes() {
        [b'"', .., b'"'] | [b'\'', .., b'\''] if value.len() >= 2 => &value[1..value.len() - 1],
        _ => value,
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Reads os-release from the image; when it is missing, falls back to
/// `etc/debian_version` / `etc/alpine-release` so a minimal image still gets a version.
pub(crate) fn read(image: &Image) -> Result<Option<OsRelease>, ImageError> {
    for path in ["etc/os-release", "usr/lib/os-release"] {
        match image.read_capped(path, MAX_OS_RELEASE) {
            Ok(Some(bytes)) => {
                let release = OsRelease::parse(&String::from_utf8_lossy(&bytes), path);
                if !release.id.is_empty() {
                    return Ok(Some(release));
                }
            }
            Ok(None) | Err(ImageError::NotAFile { .. } | ImageError::TooLarge { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    for (path, id) in [
        ("etc/debian_version", "debian"),
        ("etc/alpine-release", "alpine"),
    ] {
        if let Ok(Some(bytes)) = image.read_capped(path, MAX_OS_RELEASE) {
            let version = String::from_utf8_lossy(&bytes).trim().to_owned();
            let numeric = version.starts_with(|c: char| c.is_ascii_digit());
            return Ok(Some(OsRelease {
                id: id.into(),
                version_id: numeric.then_some(version),
                path: path.into(),
                ..OsRelease::default()
            }));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, dpkg: &str, apk: &str, rpm: &str) {
        let release = OsRelease::parse(text, "etc/os-release");
        assert_eq!(release.dpkg_ecosystem(), dpkg, "{text}");
        assert_eq!(release.apk_ecosystem(), apk, "{text}");
        assert_eq!(release.rpm_ecosystem(), rpm, "{text}");
    }

    #[test]
    fn ecosystems() {
        check(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\nID=debian\n",
            "Debian:12",
            "debian:12",
            "debian:12",
        );
        check(
            "PRETTY_NAME=\"Debian GNU/Linux trixie/sid\"\nID=debian\nVERSION_CODENAME=trixie\n",
            "Debian:13",
            "debian",
            "debian",
        );
        check(
            "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.19.1\n",
            "alpine:3.19.1",
            "Alpine:v3.19",
            "alpine:3.19.1",
        );
        check(
            "ID=ubuntu\nID_LIKE=debian\nVERSION_ID=\"22.04\"\n",
            "Ubuntu:22.04",
            "ubuntu:22.04",
            "ubuntu:22.04",
        );
        check(
            "ID=\"rhel\"\nID_LIKE=\"fedora\"\nVERSION_ID=\"9.3\"\n",
            "rhel:9.3",
            "rhel:9.3",
            "Red Hat",
        );
        check(
            "ID=\"rocky\"\nVERSION_ID=\"9.3\"\n# comment\n",
            "rocky:9.3",
            "rocky:9.3",
            "Rocky Linux:9",
        );
        check("", "unknown", "unknown", "unknown");
    }

    #[test]
    fn quoting() {
        let release = OsRelease::parse("PRETTY_NAME='It\\'s \"x\"'\nID=\"a\\\\b\"\n", "p");
        assert_eq!(release.pretty_name.as_deref(), Some("It's \"x\""));
        assert_eq!(release.id, "a\\b");
        assert_eq!(major_minor("3.20_alpha20240329").as_deref(), Some("3.20"));
        assert_eq!(major_minor("edge"), None);
    }
}
