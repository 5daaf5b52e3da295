//! Validation of feed files, one rule set per kind, run when a bundle is built.
//!
//! Each validator reads the file once and stops at the first bad line, naming it. The
//! verifier does not re-run these rules: a signed bundle is trusted to hold what its
//! origin validated, and verification must stay as fast as hashing.

use std::io::BufRead;

use super::FeedKind;
use super::apps::AppSpec;
use super::lines;
use super::osv::check_osv_record;

/// The first bad line of a feed file.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct FeedError {
    pub line: u64,
    pub reason: String,
}

/// What validation learned about a good feed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedFeed {
    /// Records: OSV records, domains, addresses or ranges, or apps (always 1).
    pub records: u64,
}

/// Validates one feed file of `kind`. `stem` is the file name without its extension
/// (an app's id must equal it).
pub fn validate_feed(
    kind: FeedKind,
    stem: &str,
    mut input: impl BufRead,
) -> Result<ValidatedFeed, FeedError> {
    match kind {
        FeedKind::Osv => each_line(input, |line| {
            check_osv_record(line.trim_end_matches('\r'))
                .map(|_| true)
                .map_err(|p| p.message)
        }),
        FeedKind::Domains => each_line(input, |line| {
            lines::parse_domain_line(line).map(|rule| rule.is_some())
        }),
        FeedKind::Ips => each_line(input, |line| {
            lines::parse_ip_line(line).map(|net| net.is_some())
        }),
        FeedKind::Apps => {
            let mut text = String::new();
            input.read_to_string(&mut text).map_err(|e| FeedError {
                line: 0,
                reason: format!("not UTF-8 text: {e}"),
            })?;
            check_app(stem, &text)
        }
    }
}

/// Runs `check` on every line; it returns whether the line held a record.
fn each_line(
    mut input: impl BufRead,
    mut check: impl FnMut(&str) -> Result<bool, String>,
) -> Result<ValidatedFeed, FeedError> {
    let mut buf = String::new();
    let mut line_no = 0;
    let mut records = 0;
    loop {
        buf.clear();
        line_no += 1;
        let n = input.read_line(&mut buf).map_err(|e| FeedError {
            line: line_no,
            reason: format!("not UTF-8 text or unreadable: {e}"),
        })?;
        if n == 0 {
            return Ok(ValidatedFeed { records });
        }
        let line = buf.strip_suffix('\n').unwrap_or(&buf);
        if check(line).map_err(|reason| FeedError {
            line: line_no,
            reason,
        })? {
            records += 1;
        }
    }
}

fn check_app(stem: &str, text: &str) -> Result<ValidatedFeed, FeedError> {
    let app: AppSpec = serde_json::from_str(text).map_err(|e| {
        // serde_json appends the position to its message; the line goes in front instead.
        // Errors inside a config source point at the end of that source's object.
        let message = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        FeedError {
            line: e.line() as u64,
            reason: message.strip_suffix(&suffix).unwrap_or(&message).to_owned(),
        }
    })?;
    if app.id.as_str() != stem {
        return Err(FeedError {
            line: 1,
            reason: format!(
                "app id {:?} must equal the file name {stem:?}",
                app.id.as_str()
            ),
        });
    }
    app.check()
        .map_err(|reason| FeedError { line: 1, reason })?;
    Ok(ValidatedFeed { records: 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Validates `input` as `kind` and compares the outcome: `Ok(records)` or the error.
    fn check(kind: FeedKind, input: &str, expected: Result<u64, &str>) {
        let got = validate_feed(kind, "redis", input.as_bytes())
            .map(|v| v.records)
            .map_err(|e| e.to_string());
        match (&got, expected) {
            (Ok(n), Ok(m)) => assert_eq!(*n, m, "{input}"),
            (Err(e), Err(needle)) => assert!(e.contains(needle), "{e:?} lacks {needle:?}"),
            _ => panic!("{input:?}: got {got:?}, expected {expected:?}"),
        }
    }

    const OSV_OK: &str = r#"{"id":"GHSA-x","modified":"2024-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"npm","name":"lodash"},"ranges":[{"type":"SEMVER","events":[{"introduced":"0"},{"fixed":"4.17.21"}]}]}]}"#;

    #[test]
    fn osv() {
        check(FeedKind::Osv, OSV_OK, Ok(1));
        check(FeedKind::Osv, &format!("{OSV_OK}\n{OSV_OK}\n"), Ok(2));
        check(
            FeedKind::Osv,
            &format!("{OSV_OK}\n\n"),
            Err("line 2: empty line"),
        );
        check(FeedKind::Osv, "{", Err("line 1: not an OSV record"));
        check(
            FeedKind::Osv,
            &OSV_OK.replace(r#""id":"GHSA-x","#, ""),
            Err("missing field `id`"),
        );
        check(
            FeedKind::Osv,
            &OSV_OK.replace("2024-01-01T00:00:00Z", "yesterday"),
            Err("not an RFC 3339"),
        );
        check(
            FeedKind::Osv,
            &OSV_OK.replace("4.17.21", "4.17"),
            Err("not a semantic version"),
        );
        check(
            FeedKind::Osv,
            &OSV_OK.replace(r#"{"introduced":"0"},"#, ""),
            Err("first event must be `introduced`"),
        );
        check(
            FeedKind::Osv,
            &OSV_OK.replace(r#""SEMVER""#, r#""RANGE""#),
            Err("the type must be ECOSYSTEM, SEMVER or GIT"),
        );
        check(
            FeedKind::Osv,
            &OSV_OK.replace(r#""name":"lodash""#, r#""name":"""#),
            Err("needs an ecosystem and a name"),
        );
        check(
            FeedKind::Osv,
            &OSV_OK.replace(
                r#"{"fixed":"4.17.21"}"#,
                r#"{"fixed":"1.0.0","limit":"2.0.0"}"#,
            ),
            Err("not an OSV record"),
        );
    }

    #[test]
    fn domains() {
        check(
            FeedKind::Domains,
            "# bad\nevil.example\n\nc2.evil.test # x\n",
            Ok(2),
        );
        check(
            FeedKind::Domains,
            "evil.example\nEvil.example\n",
            Err("line 2: domain \"Evil.example\" must be lower case"),
        );
        check(FeedKind::Domains, "localhost\n", Err("at least two labels"));
        check(FeedKind::Domains, "-a.example\n", Err("label \"-a\""));
        check(FeedKind::Domains, "a..example\n", Err("label \"\""));
        check(FeedKind::Domains, "10.0.0.1\n", Err("numeric label"));
        check(FeedKind::Domains, "ev il.example\n", Err("label \"ev il\""));
    }

    #[test]
    fn ips() {
        check(
            FeedKind::Ips,
            "192.0.2.1\n2001:db8::/32\n198.51.100.0/24 # x\n",
            Ok(3),
        );
        check(
            FeedKind::Ips,
            "192.0.2.1/24\n",
            Err("host bits set; the range is 192.0.2.0/24"),
        );
        check(
            FeedKind::Ips,
            "ok\n",
            Err("line 1: \"ok\" is not an IPv4/IPv6"),
        );
        check(FeedKind::Ips, "192.0.2.300\n", Err("not an IPv4/IPv6"));
        check(FeedKind::Ips, "192.0.2.0/33\n", Err("not an IPv4/IPv6"));
    }

    const APP_OK: &str = r#"{
  "id": "redis",
  "name": "Redis",
  "executables": ["redis-server"],
  "configs": [
    {
      "format": "keyword",
      "paths": ["/etc/redis/*.conf"],
      "includes": ["include"],
      "ports": [{ "key": "port", "default": 6379 }]
    }
  ],
  "flags": [{ "flag": "--port" }]
}"#;

    #[test]
    fn apps() {
        check(FeedKind::Apps, APP_OK, Ok(1));
        check(
            FeedKind::Apps,
            &APP_OK.replace("6379", "0"),
            Err("line 12: invalid value: integer `0`, expected a nonzero u16"),
        );
        check(
            FeedKind::Apps,
            &APP_OK.replace("6379", "70000"),
            Err("line 12"),
        );
        check(
            FeedKind::Apps,
            &APP_OK.replace("\"Redis\"", "7"),
            Err("line 3: invalid type"),
        );
        check(
            FeedKind::Apps,
            &APP_OK.replace("/etc/redis", "etc/redis"),
            Err("must be absolute"),
        );
        check(
            FeedKind::Apps,
            &APP_OK.replace("/etc/redis", "/etc/../redis"),
            Err(".. components"),
        );
        check(
            FeedKind::Apps,
            &APP_OK.replace("\"keyword\"", "\"toml\""),
            Err("unknown variant `toml`"),
        );
        check(
            FeedKind::Apps,
            &APP_OK.replace("\"key\": \"port\"", "\"element\": \"port\""),
            Err("unknown field `element`"),
        );
        check(
            FeedKind::Apps,
            &APP_OK.replace("\"id\": \"redis\"", "\"id\": \"nginx\""),
            Err("must equal the file name"),
        );
        check(
            FeedKind::Apps,
            &APP_OK.replace("[\"redis-server\"]", "[]"),
            Err("at least one executable"),
        );
        check(
            FeedKind::Apps,
            &APP_OK.replace("\"--port\"", "\"port\""),
            Err("must start with -"),
        );
        check(
            FeedKind::Apps,
            &APP_OK.replace("\"name\": \"Redis\",", "\"name\": \"Redis\", \"extra\": 1,"),
            Err("unknown field `extra`"),
        );
    }
}
