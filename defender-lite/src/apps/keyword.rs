//! The `keyword` format: `directive arg...` lines with `#` comments (redis.conf,
//! haproxy.cfg). Directive names compare without case, as redis does. An include
//! directive's argument (a file or a glob, relative paths from the including file's
//! directory) is read in place, so a later line still wins over an earlier one.

use super::files::{self, DirFiles, Entry, Location, Missing, Reader};

/// The entries of `root` and everything it includes, in reading order.
pub(crate) fn read(reader: &mut Reader<'_>, root: &str, includes: &[String]) -> Vec<Entry> {
    let mut out = Vec::new();
    file(reader, root, None, includes, &mut out);
    out
}

fn file(
    reader: &mut Reader<'_>,
    path: &str,
    from: Option<&Location>,
    includes: &[String],
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
        if let Some(comment) = trimmed.strip_prefix('#') {
            if let Some(mut entry) = entry(comment, at) {
                entry.commented = true;
                out.push(entry);
            }
            continue;
        }
        let Some(entry) = entry(files::strip_trailing_comment(trimmed, &['#']), at) else {
            if !trimmed.is_empty() {
                reader
                    .problems
                    .push(format!("{path}:{}: unbalanced quotes; line skipped", i + 1));
            }
            continue;
        };
        if includes.iter().any(|w| w.eq_ignore_ascii_case(&entry.key)) {
            let arg = entry.args.first().cloned().unwrap_or_default();
            let targets = reader.include_targets(
                &arg,
                files::parent(path),
                &entry.at,
                Missing::Report,
                Missing::Silent,
                DirFiles::Refuse,
            );
            for target in targets {
                file(reader, &target, Some(&entry.at), includes, out);
            }
            continue;
        }
        out.push(entry);
    }
    reader.leave();
}

fn entry(text: &str, at: Location) -> Option<Entry> {
    let mut words = files::words(text.trim())?;
    if words.is_empty() {
        return None;
    }
    let key = words.remove(0);
    Some(Entry::new(key, words, at))
}
