//! The `apache` format: one directive per line (a trailing `\` continues it), names
//! without case, `#` comments on lines of their own, and `<Section args>` ...
//! `</Section>` containers.
//!
//! - `Include` and `IncludeOptional` take a file, a directory (every file in it) or a
//!   wildcard; relative paths are taken from `ServerRoot`. Without a `ServerRoot`
//!   directive it is the main file's directory, or that directory's parent when it is
//!   `conf/` (`/usr/local/apache2/conf/httpd.conf` -> `/usr/local/apache2`), which is
//!   where the distributions' builds point it. `Include` reports a missing file or a
//!   wildcard that matches nothing, as httpd refuses to start then; `IncludeOptional`
//!   does not.
//! - Conditional containers (`<IfModule>`, `<IfDefine>`, `<IfVersion>`, `<IfFile>`,
//!   `<IfDirective>`, `<IfSection>`, `<If>`, `<ElseIf>`, `<Else>`) are kept as conditions
//!   on the entries inside them, including entries of files they include; other
//!   containers (`<VirtualHost>`, `<Directory>`) are context.

use super::files::{self, DirFiles, Entry, Location, Missing, Reader};

pub(crate) fn read(reader: &mut Reader<'_>, root: &str, includes: &[String]) -> Vec<Entry> {
    let dir = files::parent(root);
    let server_root = match dir.rsplit_once('/') {
        Some((parent, "conf")) if !parent.is_empty() => parent.to_owned(),
        _ => dir.to_owned(),
    };
    let mut out = Vec::new();
    let mut parser = Parser {
        server_root,
        includes,
        out: &mut out,
    };
    parser.file(reader, root, None, &mut Vec::new());
    out
}

struct Parser<'a> {
    server_root: String,
    includes: &'a [String],
    out: &'a mut Vec<Entry>,
}

/// An open container: its name, its text as written, whether it is a condition.
struct Block {
    name: String,
    text: String,
    condition: bool,
}

const CONDITIONS: [&str; 9] = [
    "ifmodule",
    "ifdefine",
    "ifversion",
    "iffile",
    "ifdirective",
    "ifsection",
    "if",
    "elseif",
    "else",
];

impl Parser<'_> {
    fn file(
        &mut self,
        reader: &mut Reader<'_>,
        path: &str,
        from: Option<&Location>,
        blocks: &mut Vec<Block>,
    ) {
        let Some(text) = reader.enter(path, from) else {
            return;
        };
        let depth_at_start = blocks.len();
        for (line_no, line) in logical_lines(&text) {
            let at = Location {
                path: path.to_owned(),
                line: line_no,
            };
            let trimmed = line.trim();
            if let Some(comment) = trimmed.strip_prefix('#') {
                if let Some(words) = files::words(comment.trim()).filter(|w| !w.is_empty()) {
                    let mut entry = directive(words, at);
                    entry.commented = true;
                    self.out.push(entry);
                }
                continue;
            }
            if let Some(close) = trimmed.strip_prefix("</") {
                let name = close.trim_end_matches('>').trim();
                match blocks.last() {
                    Some(open)
                        if blocks.len() > depth_at_start
                            && open.name.eq_ignore_ascii_case(name) =>
                    {
                        blocks.pop();
                    }
                    _ => reader
                        .problems
                        .push(format!("{at}: </{name}> closes no open <{name}>; ignored")),
                }
                continue;
            }
            if let Some(open) = trimmed.strip_prefix('<') {
                let body = open.trim_end().trim_end_matches('>').trim();
                let name = body
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let condition = CONDITIONS.contains(&name.to_ascii_lowercase().as_str());
                blocks.push(Block {
                    name,
                    text: format!("<{body}>"),
                    condition,
                });
                continue;
            }
            let Some(words) = files::words(trimmed) else {
                reader
                    .problems
                    .push(format!("{at}: unbalanced quotes; line skipped"));
                continue;
            };
            if words.is_empty() {
                continue;
            }
            let mut entry = directive(words, at);
            if let Some(root) = entry
                .args
                .first()
                .filter(|_| entry.key.eq_ignore_ascii_case("ServerRoot"))
            {
                self.server_root = files::join("/", root);
            }
            if let Some(include) = self
                .includes
                .iter()
                .find(|w| w.eq_ignore_ascii_case(&entry.key))
            {
                let optional = include.to_ascii_lowercase().contains("optional");
                let missing = if optional {
                    Missing::Silent
                } else {
                    Missing::Report
                };
                let arg = entry.args.first().cloned().unwrap_or_default();
                let targets = reader.include_targets(
                    &arg,
                    &self.server_root.clone(),
                    &entry.at,
                    missing,
                    missing,
                    DirFiles::All,
                );
                for target in targets {
                    self.file(reader, &target, Some(&entry.at), blocks);
                }
                continue;
            }
            for block in blocks.iter() {
                if block.condition {
                    entry.conditions.push(block.text.clone());
                } else {
                    entry.context.push(block.text.clone());
                }
            }
            self.out.push(entry);
        }
        if blocks.len() > depth_at_start {
            let open: Vec<&str> = blocks[depth_at_start..]
                .iter()
                .map(|b| b.text.as_str())
                .collect();
            reader.problems.push(format!(
                "{path}: {} not closed at the end of the file",
                open.join(", ")
            ));
            blocks.truncate(depth_at_start);
        }
        reader.leave();
    }
}

fn directive(mut words: Vec<String>, at: Location) -> Entry {
    let key = words.remove(0);
    Entry::new(key, words, at)
}

/// Lines joined where they end with `\`, each with the number of its first line.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let (start, mut joined) = pending.take().unwrap_or((i + 1, String::new()));
        match line.strip_suffix('\\') {
            Some(head) => {
                joined.push_str(head);
                joined.push(' ');
                pending = Some((start, joined));
            }
            None => {
                joined.push_str(line);
                out.push((start, joined));
            }
        }
    }
    out.extend(pending);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continued_lines_keep_their_first_line() {
        assert_eq!(
            logical_lines("a\nListen \\\n  8080\nb"),
            [
                (1, "a".to_owned()),
                (2, "Listen    8080".to_owned()),
                (4, "b".to_owned())
            ]
        );
    }
}
