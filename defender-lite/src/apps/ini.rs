//! The `ini` format: `key = value` lines (the `=` may be left out, as postgresql.conf
//! allows), optional `[section]` headers, `#` and `;` comments, and include directives:
//! MariaDB/MySQL `!include FILE` and `!includedir DIR`, PostgreSQL `include`,
//! `include_if_exists` and `include_dir`. Relative include paths are taken from the
//! including file's directory; a directory include reads the files that have the
//! including file's extension (`.cnf` from `my.cnf`, `.conf` from `postgresql.conf`), in
//! name order; `*_if_exists` includes are silent when their target is missing.

use super::files::{self, DirFiles, Entry, Location, Missing, Reader};
use super::value::unquote;

pub(crate) fn read(reader: &mut Reader<'_>, root: &str, includes: &[String]) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut section = None;
    file(reader, root, None, includes, &mut section, &mut out);
    out
}

fn file(
    reader: &mut Reader<'_>,
    path: &str,
    from: Option<&Location>,
    includes: &[String],
    section: &mut Option<String>,
    out: &mut Vec<Entry>,
) {
    let Some(text) = reader.enter(path, from) else {
        return;
    };
    for (i, line) in text.lines().enumerate() {
        let at = Location {
            path: path.to_owned(),
            line: i + 1,
        };
        let trimmed = line.trim();
        if let Some(comment) = trimmed
            .strip_prefix('#')
            .or_else(|| trimmed.strip_prefix(';'))
        {
            if let Some(mut entry) = key_value(comment.trim(), at) {
                entry.section.clone_from(section);
                entry.commented = true;
                out.push(entry);
            }
            continue;
        }
        if let Some(name) = trimmed.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            *section = Some(name.trim().to_owned());
            continue;
        }
        let Some(mut entry) = key_value(trimmed, at) else {
            continue;
        };
        if let Some(include) = includes.iter().find(|w| **w == entry.key) {
            let name = include.as_str();
            let file_name = path.rsplit('/').next().unwrap_or(path);
            let ext = file_name.rfind('.').map_or(".conf", |i| &file_name[i..]);
            let dirs = if name.ends_with("dir") {
                DirFiles::Extension(ext)
            } else {
                DirFiles::Refuse
            };
            let missing = if name.contains("if_exists") || name.contains("optional") {
                Missing::Silent
            } else {
                Missing::Report
            };
            let arg = entry.args.first().cloned().unwrap_or_default();
            let targets = reader.include_targets(
                &arg,
                files::parent(path),
                &entry.at,
                missing,
                Missing::Silent,
                dirs,
            );
            for target in targets {
                // Each included file starts outside any section, as MySQL reads it.
                let mut inner = None;
                file(reader, &target, Some(&entry.at), includes, &mut inner, out);
            }
            continue;
        }
        entry.section.clone_from(section);
        out.push(entry);
    }
    reader.leave();
}

/// `key = value`, `key value` or `!directive value`; `None` for blank lines.
fn key_value(text: &str, at: Location) -> Option<Entry> {
    let text = files::strip_trailing_comment(text, &['#', ';']);
    if text.is_empty() || text.starts_with('[') {
        return None;
    }
    let (key, value) = match text.split_once('=') {
        // `!include /path` has no `=` but may have one in its path.
        Some((key, value)) if !key.trim().starts_with('!') => (key.trim(), value.trim()),
        _ => match text.split_once(char::is_whitespace) {
            Some((key, value)) => (key.trim(), value.trim()),
            None => (text, ""),
        },
    };
    if key.is_empty() {
        return None;
    }
    Some(Entry::new(key, vec![unquote(value).to_owned()], at))
}
