//! The `nginx` format: directives end with `;`, blocks are `name args { ... }`, `#` starts
//! a comment, `"..."`/`'...'` quote. An `include` is read in place, in the block that
//! holds it, and its relative paths are taken from the configuration prefix (the main
//! file's directory), as nginx does; a glob that matches nothing is fine, a plain path
//! that is missing is reported.
//!
//! nginx has no conditional blocks around `listen`, but where a `listen` sits matters
//! (`http > server` or `stream > server`), so each entry carries its block path as
//! context. A comment that reads as a directive (`# listen 443 ssl;`) is kept as a
//! switched-off setting.

use super::files::{self, DirFiles, Entry, Location, Missing, Reader};

pub(crate) fn read(reader: &mut Reader<'_>, root: &str, includes: &[String]) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut parser = Parser {
        prefix: files::parent(root).to_owned(),
        includes,
        out: &mut out,
    };
    parser.file(reader, root, None, &mut Vec::new());
    out
}

struct Parser<'a> {
    prefix: String,
    includes: &'a [String],
    out: &'a mut Vec<Entry>,
}

#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    End,
    Open,
    Close,
}

impl Parser<'_> {
    fn file(
        &mut self,
        reader: &mut Reader<'_>,
        path: &str,
        from: Option<&Location>,
        blocks: &mut Vec<String>,
    ) {
        let Some(text) = reader.enter(path, from) else {
            return;
        };
        let (tokens, comments) = match tokenize(&text) {
            Ok(t) => t,
            Err((line, why)) => {
                reader
                    .problems
                    .push(format!("{path}:{line}: {why}; file skipped"));
                reader.leave();
                return;
            }
        };
        for (line, comment) in comments {
            if let Some((key, args)) = commented_directive(&comment) {
                let at = Location {
                    path: path.to_owned(),
                    line,
                };
                let mut entry = Entry::new(key, args, at);
                entry.context.clone_from(blocks);
                entry.commented = true;
                self.out.push(entry);
            }
        }
        let depth_at_start = blocks.len();
        let mut words: Vec<String> = Vec::new();
        let mut first_line = 0;
        for (line, token) in tokens {
            match token {
                Token::Word(w) => {
                    if words.is_empty() {
                        first_line = line;
                    }
                    words.push(w);
                }
                Token::Open => {
                    blocks.push(if words.is_empty() {
                        "{".to_owned()
                    } else {
                        words.join(" ")
                    });
                    words.clear();
                }
                Token::Close => {
                    if blocks.len() <= depth_at_start || !words.is_empty() {
                        reader.problems.push(format!(
                            "{path}:{line}: unexpected \"}}\"; rest of the file skipped"
                        ));
                        break;
                    }
                    blocks.pop();
                }
                Token::End => {
                    if words.is_empty() {
                        continue;
                    }
                    let at = Location {
                        path: path.to_owned(),
                        line: first_line,
                    };
                    let key = words.remove(0);
                    let args = std::mem::take(&mut words);
                    if self.includes.contains(&key) {
                        let arg = args.first().cloned().unwrap_or_default();
                        let targets = reader.include_targets(
                            &arg,
                            &self.prefix,
                            &at,
                            Missing::Report,
                            Missing::Silent,
                            DirFiles::Refuse,
                        );
                        for target in targets {
                            self.file(reader, &target, Some(&at), blocks);
                        }
                        continue;
                    }
                    let mut entry = Entry::new(key, args, at);
                    entry.context.clone_from(blocks);
                    self.out.push(entry);
                }
            }
        }
        if blocks.len() > depth_at_start {
            reader.problems.push(format!(
                "{path}: {} block(s) not closed at the end of the file",
                blocks.len() - depth_at_start
            ));
            blocks.truncate(depth_at_start);
        }
        reader.leave();
    }
}

/// A comment that reads as one directive (`listen 443 ssl;`): its name and arguments.
fn commented_directive(comment: &str) -> Option<(String, Vec<String>)> {
    let (tokens, _) = tokenize(comment).ok()?;
    let mut words = Vec::new();
    let mut ended = false;
    for (_, token) in tokens {
        match token {
            Token::Word(w) if !ended => words.push(w),
            Token::End if !ended && !words.is_empty() => ended = true,
            _ => return None,
        }
    }
    if !ended {
        return None;
    }
    let key = words.remove(0);
    Some((key, words))
}

type Tokens = (Vec<(usize, Token)>, Vec<(usize, String)>);

/// Tokens with their lines, and the comments (without `#`) with theirs.
fn tokenize(text: &str) -> Result<Tokens, (usize, &'static str)> {
    let mut tokens = Vec::new();
    let mut comments = Vec::new();
    let mut line = 1;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            c if c.is_whitespace() => {}
            '#' => {
                let mut comment = String::new();
                while let Some(&n) = chars.peek() {
                    if n == '\n' {
                        break;
                    }
                    comment.push(n);
                    chars.next();
                }
                comments.push((line, comment));
            }
            ';' => tokens.push((line, Token::End)),
            '{' => tokens.push((line, Token::Open)),
            '}' => tokens.push((line, Token::Close)),
            '"' | '\'' => {
                let start = line;
                let mut word = String::new();
                let mut closed = false;
                while let Some(n) = chars.next() {
                    if n == c {
                        closed = true;
                        break;
                    }
                    if n == '\n' {
                        line += 1;
                    }
                    if n == '\\' {
                        if let Some(escaped) = chars.next() {
                            word.push(escaped);
                        }
                        continue;
                    }
                    word.push(n);
                }
                if !closed {
                    return Err((start, "unterminated quoted string"));
                }
                tokens.push((start, Token::Word(word)));
            }
            c => {
                let mut word = String::from(c);
                while let Some(&n) = chars.peek() {
                    // `${var}` braces belong to the word.
                    if n == '{' && word.ends_with('$') {
                        for b in chars.by_ref() {
                            word.push(b);
                            if b == '}' {
                                break;
                            }
                        }
                        continue;
                    }
                    if n.is_whitespace() || matches!(n, ';' | '{' | '}') {
                        break;
                    }
                    word.push(n);
                    chars.next();
                }
                tokens.push((line, Token::Word(word)));
            }
        }
    }
    Ok((tokens, comments))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_with_lines() {
        let (tokens, comments) =
            tokenize("server {\n  listen [::]:80; # v6\n  root \"/a b\";\n}\n").unwrap();
        assert_eq!(
            tokens,
            [
                (1, Token::Word("server".into())),
                (1, Token::Open),
                (2, Token::Word("listen".into())),
                (2, Token::Word("[::]:80".into())),
                (2, Token::End),
                (3, Token::Word("root".into())),
                (3, Token::Word("/a b".into())),
                (3, Token::End),
                (4, Token::Close),
            ]
        );
        assert_eq!(comments, [(2, " v6".to_owned())]);
        let (tokens, _) = tokenize("listen ${PORT};").unwrap();
        assert_eq!(tokens[1], (1, Token::Word("${PORT}".into())));
        assert_eq!(
            tokenize("a \"b;\n").unwrap_err(),
            (1, "unterminated quoted string")
        );
    }
}
