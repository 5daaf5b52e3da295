//! Reading one config source's files out of an image: the source's paths (globs allowed),
//! and the files their include directives name, each read at most once.
//!
//! This is where the bounds live, so no format parser has to repeat them: a file over
//! `MAX_CONFIG_BYTES` is not read, includes nest at most `MAX_INCLUDE_DEPTH` deep, a
//! source reads at most `MAX_FILES` files, a file that includes itself (directly or not)
//! is an include loop, and a file already read is not read again. Every refusal is a
//! `problem` naming the file and line. Reading goes through `Image`, which never leaves
//! the image root; the parsers only see text.

use std::collections::HashSet;

use crate::image::{EntryKind, Image, ImageError};

use super::value::is_template;

/// Largest config file read.
pub(crate) const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Deepest include nesting followed (the root file is depth 0).
pub(crate) const MAX_INCLUDE_DEPTH: usize = 16;
/// Most files one config source reads.
pub(crate) const MAX_FILES: usize = 256;

/// A place in a config file: its path as named (absolute), and a 1-based line.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Location {
    pub path: String,
    pub line: usize,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.path, self.line)
    }
}

/// One setting as a parser found it: a directive and its arguments, an INI/YAML key and
/// its value, or an XML attribute (`key` is `Element@attribute`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub key: String,
    /// The INI section it sits in.
    pub section: Option<String>,
    /// Directive arguments; a key's value is the only argument.
    pub args: Vec<String>,
    pub at: Location,
    /// Enclosing conditional blocks, outermost first (`<IfModule ssl_module>`).
    pub conditions: Vec<String>,
    /// Enclosing plain blocks, outermost first (nginx `http`, `server`).
    pub context: Vec<String>,
    /// Found in a comment: the setting is switched off.
    pub commented: bool,
}

impl Entry {
    pub fn new(key: impl Into<String>, args: Vec<String>, at: Location) -> Entry {
        Entry {
            key: key.into(),
            section: None,
            args,
            at,
            conditions: Vec::new(),
            context: Vec::new(),
            commented: false,
        }
    }
}

/// What an include directive names when it is not there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Missing {
    /// Report it (Apache `Include`, nginx `include` of a plain path, `!include`).
    Report,
    /// Say nothing (`IncludeOptional`, `include_if_exists`).
    Silent,
}

/// How a directory named by an include is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DirFiles<'e> {
    /// Every file in it (Apache).
    All,
    /// Files with this extension (`!includedir`: `.cnf`; `include_dir`: `.conf`).
    Extension(&'e str),
    /// A directory is not a valid target (nginx, redis).
    Refuse,
}

/// The files of one config source, read so far, and what went wrong.
pub(crate) struct Reader<'i> {
    image: &'i Image,
    /// Files read, in order, as named.
    pub files: Vec<String>,
    seen: HashSet<String>,
    /// The include chain being read (resolved paths).
    stack: Vec<String>,
    pub problems: Vec<String>,
}

impl<'i> Reader<'i> {
    pub fn new(image: &'i Image) -> Reader<'i> {
        Reader {
            image,
            files: Vec::new(),
            seen: HashSet::new(),
            stack: Vec::new(),
            problems: Vec::new(),
        }
    }

    /// The existing files a source path names (a glob expands, in path order).
    pub fn roots(&mut self, pattern: &str) -> Vec<String> {
        if has_glob(pattern) {
            return self.glob_files(pattern, None);
        }
        match self.image.metadata(pattern) {
            Ok(Some(e)) if e.kind == EntryKind::File => vec![pattern.to_owned()],
            Ok(_) => Vec::new(),
            Err(e) => {
                // The error names the path.
                self.problems.push(e.to_string());
                Vec::new()
            }
        }
    }

    /// Starts reading `path` (called by `from`, or a root when `None`): its text, or
    /// `None` when it is skipped (already read, a loop, too deep, unreadable: the last
    /// three are reported). A `Some` must be paired with `leave`.
    pub fn enter(&mut self, path: &str, from: Option<&Location>) -> Option<String> {
        let at = |from: Option<&Location>| from.map_or_else(String::new, |l| format!("{l}: "));
        let resolved = match self.image.metadata(path) {
            Ok(Some(e)) => e.path.to_owned(),
            Ok(None) => {
                self.problems
                    .push(format!("{}{path}: no such file", at(from)));
                return None;
            }
            Err(e) => {
                self.problems.push(format!("{}{e}", at(from)));
                return None;
            }
        };
        if self.stack.contains(&resolved) {
            self.problems.push(format!(
                "{}include loop: {path} is already being read ({})",
                at(from),
                self.chain_with(path)
            ));
            return None;
        }
        if self.seen.contains(&resolved) {
            return None;
        }
        if self.stack.len() > MAX_INCLUDE_DEPTH {
            self.problems.push(format!(
                "{}includes nested deeper than {MAX_INCLUDE_DEPTH}: {path} not read",
                at(from)
            ));
            return None;
        }
        if self.files.len() >= MAX_FILES {
            self.problems.push(format!(
                "{}more than {MAX_FILES} config files: {path} not read",
                at(from)
            ));
            return None;
        }
        self.seen.insert(resolved.clone());
        let bytes = match self.image.read_capped(path, MAX_CONFIG_BYTES) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                self.problems
                    .push(format!("{}{path}: no such file", at(from)));
                return None;
            }
            Err(ImageError::TooLarge { size, limit, .. }) => {
                self.problems.push(format!(
                    "{}{path}: {size} bytes, over the {limit}-byte cap for a config file; not read",
                    at(from)
                ));
                return None;
            }
            Err(e) => {
                self.problems
                    .push(format!("{}{path}: unreadable: {e}", at(from)));
                return None;
            }
        };
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                self.problems.push(format!(
                    "{path}: not UTF-8 text (byte {}); read with replacement characters",
                    e.utf8_error().valid_up_to()
                ));
                String::from_utf8_lossy(e.as_bytes()).into_owned()
            }
        };
        self.files.push(path.to_owned());
        self.stack.push(resolved);
        Some(text)
    }

    /// Done with the file last entered.
    pub fn leave(&mut self) {
        self.stack.pop();
    }

    /// The files an include argument names, relative paths taken from `base`. A template
    /// is reported, never followed; what is missing is reported unless `missing` is
    /// `Silent`; a glob that matches nothing is reported only when `empty_glob` is
    /// `Missing::Report` (Apache's `Include`).
    pub fn include_targets(
        &mut self,
        raw: &str,
        base: &str,
        from: &Location,
        missing: Missing,
        empty_glob: Missing,
        dirs: DirFiles<'_>,
    ) -> Vec<String> {
        let raw = super::value::unquote(raw.trim());
        if raw.is_empty() {
            self.problems
                .push(format!("{from}: include without a path"));
            return Vec::new();
        }
        if is_template(raw) {
            self.problems.push(format!(
                "{from}: include of {raw:?} is a template (unresolved); not followed"
            ));
            return Vec::new();
        }
        let path = join(base, raw);
        if has_glob(&path) {
            let found = self.glob_files(&path, None);
            if found.is_empty() && empty_glob == Missing::Report {
                self.problems
                    .push(format!("{from}: include {raw}: no file matches"));
            }
            return found;
        }
        match self.image.metadata(&path) {
            Ok(Some(e)) if e.kind == EntryKind::File => vec![path],
            Ok(Some(e)) if e.kind == EntryKind::Dir => match dirs {
                DirFiles::Refuse => {
                    self.problems
                        .push(format!("{from}: include {raw}: a directory, not a file"));
                    Vec::new()
                }
                DirFiles::All => self.dir_files(&path, None),
                DirFiles::Extension(ext) => self.dir_files(&path, Some(ext)),
            },
            Ok(Some(_)) => {
                self.problems
                    .push(format!("{from}: include {raw}: not a regular file"));
                Vec::new()
            }
            Ok(None) => {
                if missing == Missing::Report {
                    self.problems
                        .push(format!("{from}: include {raw}: no such file"));
                }
                Vec::new()
            }
            Err(e) => {
                self.problems.push(format!("{from}: include {raw}: {e}"));
                Vec::new()
            }
        }
    }

    fn chain_with(&self, path: &str) -> String {
        let mut chain: Vec<String> = self.stack.iter().map(|p| format!("/{p}")).collect();
        chain.push(path.to_owned());
        chain.join(" -> ")
    }

    /// Regular files (links followed) matching a glob, hidden files left out as the
    /// shell's glob does, in path order.
    fn glob_files(&mut self, pattern: &str, ext: Option<&str>) -> Vec<String> {
        let entries = match self.image.glob(pattern) {
            Ok(entries) => entries,
            Err(e) => {
                self.problems.push(format!("{pattern}: {e}"));
                return Vec::new();
            }
        };
        let names: Vec<String> = entries
            .iter()
            .filter(|e| !e.file_name().starts_with('.'))
            .filter(|e| ext.is_none_or(|x| e.file_name().ends_with(x)))
            .map(|e| format!("/{}", e.path))
            .collect();
        names
            .into_iter()
            .filter(|p| matches!(self.image.metadata(p), Ok(Some(e)) if e.kind == EntryKind::File))
            .collect()
    }

    fn dir_files(&mut self, dir: &str, ext: Option<&str>) -> Vec<String> {
        let listed = match self.image.read_dir(dir) {
            Ok(Some(entries)) => entries
                .iter()
                .map(|e| e.file_name().to_owned())
                .collect::<Vec<_>>(),
            Ok(None) => Vec::new(),
            Err(e) => {
                self.problems.push(format!("{dir}: {e}"));
                return Vec::new();
            }
        };
        let mut names: Vec<String> = listed
            .into_iter()
            .filter(|n| !n.starts_with('.'))
            .filter(|n| ext.is_none_or(|x| n.ends_with(x)))
            .map(|n| join(dir, &n))
            .filter(|p| matches!(self.image.metadata(p), Ok(Some(e)) if e.kind == EntryKind::File))
            .collect();
        names.sort();
        names
    }
}

/// The directory of an absolute path (`/etc/nginx/nginx.conf` -> `/etc/nginx`).
pub(crate) fn parent(path: &str) -> &str {
    match path.rsplit_once('/') {
        Some(("", _)) | None => "/",
        Some((dir, _)) => dir,
    }
}

/// `path` taken from `base` when relative, with `.` and `..` removed (never above `/`).
pub(crate) fn join(base: &str, path: &str) -> String {
    let full = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("{base}/{path}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in full.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

pub(crate) fn has_glob(path: &str) -> bool {
    path.contains(['*', '?', '['])
}

/// Splits a directive line into words: white space separates, `"..."` and `'...'` quote
/// (the quotes are dropped), a backslash escapes the next character inside double quotes.
/// `None` when a quote is not closed.
pub(crate) fn words(line: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut word = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                break;
            }
            chars.next();
            if c == '"' || c == '\'' {
                let mut closed = false;
                while let Some(q) = chars.next() {
                    if q == c {
                        closed = true;
                        break;
                    }
                    if q == '\\' && c == '"' {
                        if let Some(next) = chars.next() {
                            word.push(next);
                        }
                        continue;
                    }
                    word.push(q);
                }
                if !closed {
                    return None;
                }
            } else {
                word.push(c);
            }
        }
        out.push(word);
    }
    Some(out)
}

/// `line` up to a `#` that starts a comment: at the start or after white space, outside
/// quotes.
pub(crate) fn strip_trailing_comment<'a>(line: &'a str, markers: &[char]) -> &'a str {
    let mut quote: Option<char> = None;
    let mut prev_space = true;
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if markers.contains(&c) && prev_space => return line[..i].trim_end(),
            None => {}
        }
        prev_space = c.is_whitespace();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_join_inside_the_root() {
        assert_eq!(
            join("/etc/nginx", "conf.d/*.conf"),
            "/etc/nginx/conf.d/*.conf"
        );
        assert_eq!(join("/etc/nginx", "/etc/x.conf"), "/etc/x.conf");
        assert_eq!(join("/etc/apache2", "../../../../x"), "/x");
        assert_eq!(join("/etc/mysql", "./conf.d/"), "/etc/mysql/conf.d");
        assert_eq!(parent("/etc/nginx/nginx.conf"), "/etc/nginx");
        assert_eq!(parent("/x.conf"), "/");
    }

    #[test]
    fn words_and_comments() {
        assert_eq!(
            words(r#"include "/etc/a b.conf" 'c' d"#).unwrap(),
            ["include", "/etc/a b.conf", "c", "d"]
        );
        assert_eq!(words(r#"x "a\"b""#).unwrap(), ["x", "a\"b"]);
        assert!(words("x \"open").is_none());
        assert_eq!(strip_trailing_comment("port = 1 # two", &['#']), "port = 1");
        assert_eq!(
            strip_trailing_comment("a = \"x # y\"", &['#']),
            "a = \"x # y\""
        );
        assert_eq!(strip_trailing_comment("a=b#c", &['#']), "a=b#c");
    }
}
