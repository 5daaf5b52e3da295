//! The `yaml` format, as far as port settings need it: block mappings by indentation
//! (`net:` then `  port: 27017`), flattened dotted keys (`http.port: 9200`), one-level
//! flow mappings (`net: {port: 27017}`), quoted keys and scalars, `#` comments and
//! `---` document markers. Every scalar becomes an entry whose key is the full dotted
//! path, so nested and flattened forms match the same extractor.
//!
//! Sequences and block scalars (`|`, `>`) are skipped, not interpreted: no port key of a
//! known app lives in one. A file that is not YAML at all (a template with `{{ }}` lines)
//! yields what it can, never an error, and a value that is a template stays a template.

use super::files::{self, Entry, Location, Reader};
use super::value::{is_template, unquote};

pub(crate) fn read(reader: &mut Reader<'_>, root: &str) -> Vec<Entry> {
    let Some(text) = reader.enter(root, None) else {
        return Vec::new();
    };
    let out = parse(root, &text);
    reader.leave();
    out
}

pub(crate) fn parse(path: &str, text: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    // Open mappings: (indentation, key).
    let mut stack: Vec<(usize, String)> = Vec::new();
    // Lines indented deeper than this belong to a block scalar or sequence being skipped.
    let mut skip_deeper: Option<usize> = None;
    for (i, line) in text.lines().enumerate() {
        let at = Location {
            path: path.to_owned(),
            line: i + 1,
        };
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        if let Some(limit) = skip_deeper {
            if indent > limit {
                continue;
            }
            skip_deeper = None;
        }
        if trimmed == "---" || trimmed == "..." {
            stack.clear();
            continue;
        }
        if let Some(comment) = trimmed.strip_prefix('#') {
            // `#http.port: 9200`: a switched-off setting, at the comment's own depth.
            let body = comment.trim_start();
            if let Some((key, value)) = split_key(body).filter(|(_, v)| !v.is_empty()) {
                let prefix = prefix_at(&stack, indent);
                let mut entry = Entry::new(join(&prefix, &key), vec![value.to_owned()], at);
                entry.commented = true;
                out.push(entry);
            }
            continue;
        }
        if trimmed.starts_with('-') {
            // A sequence item: not a mapping key of ours.
            skip_deeper = Some(indent);
            continue;
        }
        let content = files::strip_trailing_comment(trimmed, &['#']);
        let Some((key, value)) = split_key(content) else {
            continue;
        };
        while stack.last().is_some_and(|(depth, _)| *depth >= indent) {
            stack.pop();
        }
        let prefix = prefix_at(&stack, indent + 1);
        let full = join(&prefix, &key);
        if value.is_empty() {
            stack.push((indent, key));
            continue;
        }
        if value == "|" || value == ">" || value.starts_with("|-") || value.starts_with(">-") {
            skip_deeper = Some(indent);
            continue;
        }
        if !is_template(value) && value.starts_with('{') && value.ends_with('}') {
            for (inner_key, inner_value) in flow_mapping(&value[1..value.len() - 1]) {
                out.push(Entry::new(
                    join(&full, &inner_key),
                    vec![inner_value],
                    at.clone(),
                ));
            }
            continue;
        }
        out.push(Entry::new(full, vec![unquote(value).to_owned()], at));
    }
    out
}

/// `key: value` (the key may be quoted); `None` when the line is not a mapping entry.
fn split_key(text: &str) -> Option<(String, &str)> {
    let (key, rest) = if let Some(q) = text.chars().next().filter(|c| *c == '"' || *c == '\'') {
        let end = text[1..].find(q)? + 1;
        (text[1..end].to_owned(), text[end + 1..].trim_start())
    } else {
        let colon = text
            .match_indices(':')
            .find(|(i, _)| text[i + 1..].is_empty() || text[i + 1..].starts_with([' ', '\t']))?
            .0;
        (text[..colon].trim_end().to_owned(), &text[colon..])
    };
    let value = rest.strip_prefix(':')?.trim();
    if key.is_empty() || key.contains(char::is_whitespace) || is_template(&key) {
        return None;
    }
    Some((key, value))
}

/// The dotted path of the mappings open above a line indented by `indent`.
fn prefix_at(stack: &[(usize, String)], indent: usize) -> String {
    stack
        .iter()
        .filter(|(depth, _)| *depth < indent)
        .map(|(_, key)| key.as_str())
        .collect::<Vec<_>>()
        .join(".")
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// `a: 1, b: "x"` -> pairs; nested braces are not followed.
fn flow_mapping(body: &str) -> Vec<(String, String)> {
    body.split(',')
        .filter_map(|pair| {
            let (key, value) = pair.split_once(':')?;
            let key = unquote(key.trim());
            let value = unquote(value.trim());
            (!key.is_empty() && !value.starts_with('{')).then(|| (key.to_owned(), value.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: &[(&str, &str, usize, bool)]) {
        let got: Vec<(String, String, usize, bool)> = parse("/t.yml", text)
            .into_iter()
            .map(|e| (e.key, e.args.join(" "), e.at.line, e.commented))
            .collect();
        let expected: Vec<(String, String, usize, bool)> = expected
            .iter()
            .map(|(k, v, l, c)| ((*k).to_owned(), (*v).to_owned(), *l, *c))
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn nested_and_flattened_keys() {
        check(
            "net:\n  port: 27017\n  bindIp: 127.0.0.1  # local\nstorage:\n  dbPath: /data\n",
            &[
                ("net.port", "27017", 2, false),
                ("net.bindIp", "127.0.0.1", 3, false),
                ("storage.dbPath", "/data", 5, false),
            ],
        );
        check(
            "http.port: 9201\n\"transport.port\": '9301'\n",
            &[
                ("http.port", "9201", 1, false),
                ("transport.port", "9301", 2, false),
            ],
        );
        check(
            "net: {port: 27018, bindIp: \"::\"}\n",
            &[
                ("net.port", "27018", 1, false),
                ("net.bindIp", "::", 1, false),
            ],
        );
    }

    #[test]
    fn comments_sequences_and_blocks() {
        check(
            "#http.port: 9200\nnet:\n  # port: 1\n  port: 2\nhosts:\n  - a: 1\n    b: 2\nnote: |\n  port: 3\nport: 4\n",
            &[
                ("http.port", "9200", 1, true),
                ("net.port", "1", 3, true),
                ("net.port", "2", 4, false),
                ("port", "4", 10, false),
            ],
        );
    }

    #[test]
    fn templates_stay_values() {
        check(
            "{{- if .Values.tls }}\nserver:\n  port: {{ .Values.port }}\n${path.data}\n",
            &[("server.port", "{{ .Values.port }}", 3, false)],
        );
    }
}
