//! Domain importer: blocklists in the forms DNS filters publish them, into one `domains`
//! feed file in the grammar of [`crate::bundle::lines`].
//!
//! Formats (`--format`):
//!
//! - `list`: one name per line, `#` comments.
//! - `hosts`: `0.0.0.0 name [name...]` (any address), `#` comments; the standard local
//!   names of a hosts file (`localhost`, `broadcasthost`, `ip6-*`...) are refused by rule
//!   `local-name`, never listed.
//! - `adblock`: `||name^` rules (optionally `$important` or `$all`), and bare names, as
//!   DNS filters read them; `!` and `[...]` lines are comments. Exceptions (`@@`), rules
//!   with other modifiers, paths, regular expressions and cosmetic rules are refused, each
//!   by its rule, since a DNS-level list cannot honour them.
//! - `rpz`: a response policy zone. `name CNAME .` (NXDOMAIN), `CNAME *.` (NODATA) and
//!   `CNAME rpz-drop.` are blocks; `*.name` keeps its wildcard. Names are relative to the
//!   zone's `$ORIGIN` (absolute names under it are made relative). `rpz-passthru.`
//!   (allow), IP triggers and local-data answers are refused by rule.
//!
//! Every name is lower-cased, its trailing dot removed and an internationalized name
//! written as punycode (IDNA, UTS #46). A name matches itself and its subdomains; an RPZ
//! exact-name trigger is widened to that (whoever controls a name controls the names under
//! it). Entries another entry already covers (`a.evil.example` under `evil.example`,
//! duplicates) are merged. The file is sorted by reversed labels (a zone's names together).

use std::path::Path;

use super::{
    ImportError, ImportLimits, ImportReport, Input, Tally, check_feed_name, finish, read_lines,
};
use crate::bundle::FeedKind;
use crate::bundle::lines::{DomainRule, parse_domain_rule};

/// The published forms of a domain blocklist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DomainFormat {
    List,
    Hosts,
    Adblock,
    Rpz,
}

/// Imports `inputs` (all in `format`) into `FEEDS_DIR/domains/<name>.txt`.
pub fn import(
    inputs: &[Input],
    format: DomainFormat,
    feeds_dir: &Path,
    name: &str,
    limits: &ImportLimits,
) -> Result<ImportReport, ImportError> {
    check_feed_name(name)?;
    if inputs.is_empty() {
        return Err(ImportError::NoInputs);
    }
    // (reversed-label key, subdomains only, input): sorted, then swept for covers.
    let mut entries: Vec<(Box<str>, bool, u32)> = Vec::new();
    let mut tallies = vec![Tally::default(); inputs.len()];
    let mut digests = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.iter().enumerate() {
        let tally = &mut tallies[i];
        let mut origin: Option<String> = None;
        let shown = input.path.display().to_string();
        digests.push(read_lines(&input.path, limits, |n, line| {
            let place = format!("{shown}:{n}");
            let line = match line {
                Ok(line) => line,
                Err(len) => {
                    tally.counts.read += 1;
                    tally.refuse("line-too-long", &place, &format!("{len} bytes"));
                    return;
                }
            };
            for found in parse_line(format, line, &mut origin) {
                tally.counts.read += 1;
                match found.and_then(|raw| normalize(&raw)) {
                    Ok((name, subdomains)) => {
                        entries.push((reverse_key(&name).into(), subdomains, i as u32))
                    }
                    Err((rule, why)) => tally.refuse(rule, &place, &why),
                }
            }
        })?);
    }

    // Descendants sort right after their ancestor (labels are compared one by one: the
    // separator sorts below every label byte); at one name, the wider `Name` comes first.
    entries.sort_unstable();
    let mut kept: Vec<usize> = Vec::with_capacity(entries.len());
    let mut cover: Option<usize> = None;
    for (at, (key, subdomains, input)) in entries.iter().enumerate() {
        let covered = cover.is_some_and(|c| {
            let (ckey, csub, _) = &entries[c];
            let under = key.len() > ckey.len()
                && key.starts_with(&**ckey)
                && key.as_bytes()[ckey.len()] == SEPARATOR;
            // The same name: covered by a `Name`, or a duplicate `*.name`.
            let same = key == ckey && (!*csub || *subdomains);
            under || same
        });
        if covered {
            tallies[*input as usize].counts.merged += 1;
        } else {
            tallies[*input as usize].counts.kept += 1;
            kept.push(at);
            cover = Some(at);
        }
    }

    finish(
        feeds_dir,
        FeedKind::Domains,
        &format!("{name}.txt"),
        inputs,
        digests.into_iter().zip(tallies).collect(),
        kept.len() as u64,
        |out| {
            let mut line = String::new();
            for &at in &kept {
                let (key, subdomains, _) = &entries[at];
                line.clear();
                if *subdomains {
                    line.push_str("*.");
                }
                for (n, label) in key.rsplit(SEPARATOR as char).enumerate() {
                    if n > 0 {
                        line.push('.');
                    }
                    line.push_str(label);
                }
                line.push('\n');
                out.write_all(line.as_bytes())
                    .map_err(|e| ImportError::io(feeds_dir, e))?;
            }
            Ok(())
        },
    )
}

/// Between reversed labels in a sort key: below every byte a label may hold.
const SEPARATOR: u8 = 0x01;

fn reverse_key(name: &str) -> String {
    let mut key = String::with_capacity(name.len());
    for (n, label) in name.rsplit('.').enumerate() {
        if n > 0 {
            key.push(SEPARATOR as char);
        }
        key.push_str(label);
    }
    key
}

type Refusal = (&'static str, String);

/// The names a line lists, as written (`*.` kept), or why one is refused. Comments and
/// blank lines give nothing.
fn parse_line(
    format: DomainFormat,
    line: &str,
    origin: &mut Option<String>,
) -> Vec<Result<String, Refusal>> {
    match format {
        DomainFormat::List => match line.split('#').next().unwrap_or("").trim() {
            "" => vec![],
            text => match text.split_whitespace().nth(1) {
                None => vec![Ok(text.to_owned())],
                Some(_) => vec![Err((
                    "not-a-name",
                    format!("{text:?}: one name per line (is this a hosts file?)"),
                ))],
            },
        },
        DomainFormat::Hosts => hosts_line(line),
        DomainFormat::Adblock => adblock_line(line).into_iter().collect(),
        DomainFormat::Rpz => rpz_line(line, origin).into_iter().collect(),
    }
}

/// The names a hosts file declares local: structure of the file, not blocklist entries.
const LOCAL_NAMES: &[&str] = &[
    "localhost",
    "localhost.localdomain",
    "local",
    "broadcasthost",
    "ip6-localhost",
    "ip6-loopback",
    "ip6-localnet",
    "ip6-mcastprefix",
    "ip6-allnodes",
    "ip6-allrouters",
    "ip6-allhosts",
    "0.0.0.0",
];

fn hosts_line(line: &str) -> Vec<Result<String, Refusal>> {
    let text = line.split('#').next().unwrap_or("");
    let mut words = text.split_whitespace();
    let Some(address) = words.next() else {
        return vec![];
    };
    if address.parse::<std::net::IpAddr>().is_err() {
        return vec![Err((
            "hosts-bad-address",
            format!("{address:?} is not an address (hosts lines are `ADDRESS NAME...`)"),
        ))];
    }
    let names: Vec<_> = words
        .map(|name| {
            if LOCAL_NAMES.contains(&name.to_ascii_lowercase().as_str()) {
                Err(("local-name", format!("{name:?} is a hosts file's own name")))
            } else {
                Ok(name.to_owned())
            }
        })
        .collect();
    if names.is_empty() {
        return vec![Err((
            "hosts-no-name",
            format!("{address} is followed by no name"),
        ))];
    }
    names
}

fn adblock_line(line: &str) -> Option<Result<String, Refusal>> {
    let text = line.trim();
    if text.is_empty() || text.starts_with('!') || text.starts_with('#') || text.starts_with('[') {
        return None;
    }
    let refuse = |rule: &'static str, why: &str| Some(Err((rule, format!("{text:?}: {why}"))));
    if text.starts_with("@@") {
        return refuse(
            "adblock-exception",
            "exception rules allow, they do not block",
        );
    }
    if text.contains("##") || text.contains("#@#") || text.contains("#?#") || text.contains("#$#") {
        return refuse("adblock-cosmetic", "cosmetic rules hide page elements");
    }
    if text.starts_with('/') {
        return refuse("adblock-regex", "regular expressions are not names");
    }
    let (rule, modifiers) = match text.split_once('$') {
        Some((rule, modifiers)) => (rule, Some(modifiers)),
        None => (text, None),
    };
    if let Some(modifiers) = modifiers {
        let dns_neutral = modifiers
            .split(',')
            .all(|m| matches!(m.trim(), "important" | "all"));
        if !dns_neutral {
            return refuse(
                "adblock-modifier",
                "modifiers narrow a rule to what DNS cannot see",
            );
        }
    }
    let name = match rule.strip_prefix("||") {
        Some(rest) => match rest.strip_suffix('^').or_else(|| rest.strip_suffix("^|")) {
            Some(name) => name,
            None if !rest.contains(['/', '^', '*', '|', ':']) => rest,
            None => return refuse("adblock-not-domain-rule", "matches URLs, not a whole name"),
        },
        None if !rule.contains(['/', '^', '*', '|', ':', ' ']) => rule,
        None => return refuse("adblock-not-domain-rule", "matches URLs, not a whole name"),
    };
    Some(Ok(name.to_owned()))
}

fn rpz_line(line: &str, origin: &mut Option<String>) -> Option<Result<String, Refusal>> {
    let text = line.split(';').next().unwrap_or("").trim();
    if text.is_empty() {
        return None;
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    if words[0].eq_ignore_ascii_case("$ORIGIN") {
        *origin = words
            .get(1)
            .map(|o| o.trim_end_matches('.').to_ascii_lowercase());
        return None;
    }
    if words[0].starts_with('$') || line.starts_with(char::is_whitespace) {
        // $TTL and continuation lines (an SOA's parenthesised numbers).
        return None;
    }
    // owner [ttl] [class] type rdata
    let mut i = 1;
    while i < words.len()
        && (words[i].bytes().all(|b| b.is_ascii_digit()) || words[i].eq_ignore_ascii_case("IN"))
    {
        i += 1;
    }
    let (Some(rtype), rdata) = (words.get(i), words.get(i + 1)) else {
        return None;
    };
    let owner = words[0];
    let refuse = |rule: &'static str, why: String| Some(Err((rule, why)));
    match rtype.to_ascii_uppercase().as_str() {
        "SOA" | "NS" | "TXT" => None,
        "CNAME" => {
            let target = rdata.copied().unwrap_or("").to_ascii_lowercase();
            match target.as_str() {
                "." | "*." | "rpz-drop." => {}
                "rpz-passthru." => {
                    return refuse("rpz-passthru", format!("{owner}: passthru allows"));
                }
                _ => {
                    return refuse(
                        "rpz-local-data",
                        format!("{owner}: rewrites to {target}, not a block"),
                    );
                }
            }
            let name = relative_owner(owner, origin.as_deref());
            if name.ends_with(".rpz-ip")
                || name.ends_with(".rpz-nsip")
                || name.ends_with(".rpz-client-ip")
            {
                return refuse("rpz-ip-trigger", format!("{owner}: an address trigger"));
            }
            if let Some(base) = name.strip_suffix(".rpz-nsdname") {
                return refuse(
                    "rpz-nsdname-trigger",
                    format!("{base}: a name-server trigger"),
                );
            }
            Some(Ok(name))
        }
        other => refuse(
            "rpz-local-data",
            format!("{owner}: a {other} answer, not a block"),
        ),
    }
}

/// An RPZ owner name relative to the zone's origin.
fn relative_owner(owner: &str, origin: Option<&str>) -> String {
    let lower = owner.to_ascii_lowercase();
    match lower.strip_suffix('.') {
        Some(absolute) => match origin {
            Some(origin) => absolute
                .strip_suffix(origin)
                .and_then(|n| n.strip_suffix('.'))
                .unwrap_or(absolute)
                .to_owned(),
            None => absolute.to_owned(),
        },
        None => lower,
    }
}

/// A name as published -> its feed form (lower case, punycode, no trailing dot) and
/// whether it is a `*.` rule.
fn normalize(raw: &str) -> Result<(String, bool), Refusal> {
    let raw = raw.trim().trim_end_matches('.');
    let (subdomains, rest) = match raw.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, raw),
    };
    let ascii = if rest.is_ascii() {
        rest.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii(rest).map_err(|_| {
            (
                "idna",
                format!("{rest:?} is not a valid internationalized name"),
            )
        })?
    };
    match parse_domain_rule(&ascii) {
        Ok(DomainRule::Name(_)) => Ok((ascii, subdomains)),
        Ok(DomainRule::Subdomains(_)) => Err(("not-a-name", format!("{raw:?}: one `*.` only"))),
        Err(why) => Err(("not-a-name", why)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(format: DomainFormat, text: &str) -> Vec<Result<(String, bool), &'static str>> {
        let mut origin = None;
        text.lines()
            .flat_map(|l| parse_line(format, l, &mut origin))
            .map(|r| r.and_then(|raw| normalize(&raw)).map_err(|(rule, _)| rule))
            .collect()
    }

    fn ok(name: &str) -> Result<(String, bool), &'static str> {
        Ok((name.to_owned(), false))
    }

    #[test]
    fn hosts_files() {
        let got = names(
            DomainFormat::Hosts,
            "# header\n127.0.0.1 localhost\n::1 ip6-localhost ip6-loopback\n0.0.0.0 Ads.Example. tracker.example # x\n0.0.0.0\nnot-an-ip evil.example\n",
        );
        assert_eq!(
            got,
            vec![
                Err("local-name"),
                Err("local-name"),
                Err("local-name"),
                ok("ads.example"),
                ok("tracker.example"),
                Err("hosts-no-name"),
                Err("hosts-bad-address"),
            ]
        );
    }

    #[test]
    fn adblock_rules() {
        let got = names(
            DomainFormat::Adblock,
            "[Adblock Plus 2.0]\n! comment\n||evil.example^\n||Tracker.Example^$important\n@@||good.example^\n||ads.example^$third-party\nexample.com##.banner\n||cdn.example/path\n/ads[0-9]+/\nplain.example\n",
        );
        assert_eq!(
            got,
            vec![
                ok("evil.example"),
                ok("tracker.example"),
                Err("adblock-exception"),
                Err("adblock-modifier"),
                Err("adblock-cosmetic"),
                Err("adblock-not-domain-rule"),
                Err("adblock-regex"),
                ok("plain.example"),
            ]
        );
    }

    #[test]
    fn rpz_zones() {
        let zone = "$TTL 300\n$ORIGIN rpz.local.\n@ SOA ns.rpz.local. admin.rpz.local. (\n  1 3600 600 86400 300 )\n  NS ns.rpz.local.\nevil.example CNAME .\n*.evil.example CNAME .\nbad.example.rpz.local. 300 IN CNAME *.\nok.example CNAME rpz-passthru.\n32.1.2.0.192.rpz-ip CNAME .\nredirect.example A 192.0.2.1\nDrop.Example CNAME rpz-drop. ; c\n";
        let got = names(DomainFormat::Rpz, zone);
        assert_eq!(
            got,
            vec![
                ok("evil.example"),
                Ok(("evil.example".to_owned(), true)),
                ok("bad.example"),
                Err("rpz-passthru"),
                Err("rpz-ip-trigger"),
                Err("rpz-local-data"),
                ok("drop.example"),
            ]
        );
    }

    #[test]
    fn names_are_normalized_or_refused() {
        let got = names(
            DomainFormat::List,
            "bücher.example\nEVIL.Example.\n*.Wild.Example\nlocalhost\na b\n*.*.x.example\n",
        );
        assert_eq!(
            got,
            vec![
                ok("xn--bcher-kva.example"),
                ok("evil.example"),
                Ok(("wild.example".to_owned(), true)),
                Err("not-a-name"),
                Err("not-a-name"),
                Err("not-a-name"),
            ]
        );
    }
}
