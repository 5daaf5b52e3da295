//! The `xml` format, as far as port settings need it: start tags and their attributes,
//! with line numbers. Each attribute is an entry keyed `Element@attribute` (the element's
//! local name, without a namespace prefix). Comments are read as switched-off settings
//! (Tomcat ships its HTTPS and AJP connectors commented out); CDATA, processing
//! instructions and the DOCTYPE are skipped. Entities in values are decoded for the five
//! predefined ones; `${property}` substitutions stay templates.

use super::files::{Entry, Location, Reader};

pub(crate) fn read(reader: &mut Reader<'_>, root: &str) -> Vec<Entry> {
    let Some(text) = reader.enter(root, None) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Err(e) = parse(root, &text, 1, false, &mut out) {
        reader.problems.push(format!("{root}:{e}"));
    }
    reader.leave();
    out
}

/// Scans `text` (starting at `first_line`) for start tags. `Err` names the line and what
/// is malformed; the entries found before it are kept.
pub(crate) fn parse(
    path: &str,
    text: &str,
    first_line: usize,
    commented: bool,
    out: &mut Vec<Entry>,
) -> Result<(), String> {
    let mut rest = text;
    let mut line = first_line;
    while let Some(lt) = rest.find('<') {
        line += rest[..lt].matches('\n').count();
        rest = &rest[lt..];
        let skip_to = |rest: &str, end: &str, what: &str| -> Result<usize, String> {
            rest.find(end)
                .map(|i| i + end.len())
                .ok_or_else(|| format!("{line}: unterminated {what}"))
        };
        if let Some(body) = rest.strip_prefix("<!--") {
            // Closed after it opens: in `<!-->` the dashes are the opening's own.
            let end = 4 + skip_to(body, "-->", "comment")?;
            if !commented {
                // A comment holds settings that are switched off; a malformed one is prose.
                let _ = parse(path, &body[..end - 7], line, true, out);
            }
            line += rest[..end].matches('\n').count();
            rest = &rest[end..];
        } else if rest.starts_with("<![CDATA[") {
            let end = skip_to(rest, "]]>", "CDATA section")?;
            line += rest[..end].matches('\n').count();
            rest = &rest[end..];
        } else if rest.starts_with("<?") {
            let end = skip_to(rest, "?>", "processing instruction")?;
            line += rest[..end].matches('\n').count();
            rest = &rest[end..];
        } else if rest.starts_with("<!") || rest.starts_with("</") {
            let end = skip_to(rest, ">", "declaration")?;
            line += rest[..end].matches('\n').count();
            rest = &rest[end..];
        } else {
            let consumed = tag(path, rest, line, commented, out)?;
            line += rest[..consumed].matches('\n').count();
            rest = &rest[consumed..];
        }
    }
    Ok(())
}

/// One start tag at the start of `text`; returns the bytes it takes.
fn tag(
    path: &str,
    text: &str,
    first_line: usize,
    commented: bool,
    out: &mut Vec<Entry>,
) -> Result<usize, String> {
    let bytes = text.as_bytes();
    let mut i = 1;
    let mut line = first_line;
    let name_end = text[i..]
        .find(|c: char| c.is_whitespace() || c == '>' || c == '/')
        .map_or(text.len(), |n| n + i);
    let name = &text[i..name_end];
    if name.is_empty() {
        // A lone `<` in text (only legal in a comment): step over it.
        return Ok(1);
    }
    let local = name.rsplit(':').next().unwrap_or(name);
    i = name_end;
    loop {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            if bytes[i] == b'\n' {
                line += 1;
            }
            i += 1;
        }
        match bytes.get(i) {
            None => return Err(format!("{first_line}: unterminated <{name}> tag")),
            Some(b'>') => return Ok(i + 1),
            Some(b'/') if bytes.get(i + 1) == Some(&b'>') => return Ok(i + 2),
            Some(_) => {}
        }
        let attr_end = text[i..]
            .find(|c: char| c == '=' || c.is_whitespace() || c == '>' || c == '/')
            .map_or(text.len(), |n| n + i);
        let attr = &text[i..attr_end];
        if attr.is_empty() {
            return Err(format!("{line}: malformed attribute in <{name}>"));
        }
        i = attr_end;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            if bytes[i] == b'\n' {
                line += 1;
            }
            i += 1;
        }
        if bytes.get(i) != Some(&b'=') {
            return Err(format!("{line}: attribute {attr} of <{name}> has no value"));
        }
        i += 1;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            if bytes[i] == b'\n' {
                line += 1;
            }
            i += 1;
        }
        let quote = match bytes.get(i) {
            Some(q @ (b'"' | b'\'')) => *q as char,
            _ => {
                return Err(format!(
                    "{line}: attribute {attr} of <{name}> is not quoted"
                ));
            }
        };
        let Some(len) = text[i + 1..].find(quote) else {
            return Err(format!("{line}: unterminated value of {attr} in <{name}>"));
        };
        let value = &text[i + 1..i + 1 + len];
        let mut entry = Entry::new(
            format!("{local}@{attr}"),
            vec![decode(value)],
            Location {
                path: path.to_owned(),
                line,
            },
        );
        entry.commented = commented;
        out.push(entry);
        line += value.matches('\n').count();
        i += len + 2;
    }
}

fn decode(value: &str) -> String {
    value
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: &[(&str, &str, usize, bool)]) {
        let mut out = Vec::new();
        parse("/s.xml", text, 1, false, &mut out).unwrap();
        let got: Vec<(String, String, usize, bool)> = out
            .into_iter()
            .filter(|e| e.key.ends_with("@port"))
            .map(|e| (e.key, e.args.join(" "), e.at.line, e.commented))
            .collect();
        let expected: Vec<(String, String, usize, bool)> = expected
            .iter()
            .map(|(k, v, l, c)| ((*k).to_owned(), (*v).to_owned(), *l, *c))
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn tomcat_server_xml() {
        check(
            "<?xml version=\"1.0\"?>\n<Server port=\"-1\" shutdown=\"SHUTDOWN\">\n  <!-- <Connector port=\"8443\"\n   protocol=\"x\" /> -->\n  <Connector port=\"8080\" protocol=\"HTTP/1.1\"\n             redirectPort=\"8443\" />\n  <c:Connector\n     port='${http.port}'/>\n</Server>\n",
            &[
                ("Server@port", "-1", 2, false),
                ("Connector@port", "8443", 3, true),
                ("Connector@port", "8080", 5, false),
                ("Connector@port", "${http.port}", 8, false),
            ],
        );
    }

    #[test]
    fn malformed_xml_is_an_error_with_a_line() {
        let mut out = Vec::new();
        let err = parse("/s.xml", "<a>\n<b port=8080>", 1, false, &mut out).unwrap_err();
        assert_eq!(err, "2: attribute port of <b> is not quoted");
        let err = parse("/s.xml", "<a>\n<!-- open", 1, false, &mut out).unwrap_err();
        assert_eq!(err, "2: unterminated comment");
    }

    /// Found by the `app_configs` fuzz target: the `-->` that closes a comment was looked
    /// for from the `<!--` that opens it, so in `<!-->` and `<!--->` the opening's own
    /// dashes closed it, before its start: the body's length underflowed (a panic with
    /// overflow checks, a slice out of range without).
    #[test]
    fn a_comment_closes_only_after_it_opens() {
        for text in ["<!-->", "<!--->", "<a/><!-->\n<b port=\"1\"/>"] {
            let mut out = Vec::new();
            let err = parse("/s.xml", text, 1, false, &mut out).unwrap_err();
            assert!(err.ends_with("unterminated comment"), "{text:?}: {err}");
        }
        check(
            "<!---><c port=\"7\"/>-->\n<d port=\"8\"/>",
            &[("c@port", "7", 1, true), ("d@port", "8", 2, false)],
        );
    }
}
