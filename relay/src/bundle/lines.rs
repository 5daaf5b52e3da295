//! The line grammars of the `domains` and `ips` feeds: one parser each, used by the
//! builder's validation, by the origin's importers (which write only what these accept)
//! and by the agent's indexes (which read only what these accept). Two parsers of the same
//! text drift; one cannot.
//!
//! A line is an entry, a comment (`#` to the end of the line) or blank. The grammar is
//! strict on purpose: the importers normalize what the world publishes (case, IDNA,
//! trailing dots, host bits, `a-b` ranges) and the feed holds only the normal form, so a
//! name or a range means the same thing at every tier.

use std::net::IpAddr;

use ipnet::IpNet;

/// One entry of a `domains` feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DomainRule<'a> {
    /// `evil.example`: the name and every name under it.
    Name(&'a str),
    /// `*.evil.example`: every name under it, not the name itself (an RPZ wildcard).
    Subdomains(&'a str),
}

impl<'a> DomainRule<'a> {
    /// The name the rule is anchored at (without `*.`).
    pub fn name(&self) -> &'a str {
        match self {
            DomainRule::Name(n) | DomainRule::Subdomains(n) => n,
        }
    }
}

impl std::fmt::Display for DomainRule<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DomainRule::Name(n) => f.write_str(n),
            DomainRule::Subdomains(n) => write!(f, "*.{n}"),
        }
    }
}

/// What a feed line holds once its comment is cut: `None` for a blank or comment line.
pub fn entry_text(line: &str) -> Option<&str> {
    let text = line.split('#').next().unwrap_or("").trim();
    (!text.is_empty()).then_some(text)
}

/// Parses one line of a `domains` feed: `None` for a blank or comment line.
pub fn parse_domain_line(line: &str) -> Result<Option<DomainRule<'_>>, String> {
    let Some(text) = entry_text(line) else {
        return Ok(None);
    };
    parse_domain_rule(text).map(Some)
}

/// Parses a domain entry without comment: `name` or `*.name`.
pub fn parse_domain_rule(text: &str) -> Result<DomainRule<'_>, String> {
    match text.strip_prefix("*.") {
        Some(name) => check_domain(name).map(|()| DomainRule::Subdomains(name)),
        None => check_domain(text).map(|()| DomainRule::Name(text)),
    }
}

/// A domain name in its feed form: lower case ASCII (IDNA names as punycode `xn--`),
/// labels of `a-z 0-9 - _` (`_` for service names like `_dmarc`; not `-` at either end),
/// 1-63 bytes each, at least two labels, 253 bytes at most, no trailing dot, not ending
/// in a numeric label (that would be an address).
pub fn check_domain(name: &str) -> Result<(), String> {
    if name.len() > 253 {
        return Err(format!("domain {name:?} is longer than 253 characters"));
    }
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!("domain {name:?} must be lower case"));
    }
    if name.ends_with('.') {
        return Err(format!(
            "domain {name:?} must be written without a trailing dot"
        ));
    }
    let mut labels = 0;
    let mut last = "";
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !ok {
            return Err(format!(
                "domain {name:?}: label {label:?} must be 1-63 characters of a-z, 0-9, - and _ (no - at either end)"
            ));
        }
        labels += 1;
        last = label;
    }
    if labels < 2 {
        return Err(format!(
            "domain {name:?} needs at least two labels (like example.com)"
        ));
    }
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "domain {name:?} ends in a numeric label; addresses belong in the ips feed"
        ));
    }
    Ok(())
}

/// Parses one line of an `ips` feed: `None` for a blank or comment line. An address is
/// returned as a host range (`/32`, `/128`).
pub fn parse_ip_line(line: &str) -> Result<Option<IpNet>, String> {
    let Some(text) = entry_text(line) else {
        return Ok(None);
    };
    parse_ip_entry(text).map(Some)
}

/// An IPv4/IPv6 address, or a CIDR range written with its network address.
pub fn parse_ip_entry(text: &str) -> Result<IpNet, String> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    let net: IpNet = text
        .parse()
        .map_err(|_| format!("{text:?} is not an IPv4/IPv6 address or CIDR range"))?;
    if net.trunc() != net {
        return Err(format!(
            "{text:?} has host bits set; the range is {}",
            net.trunc()
        ));
    }
    Ok(net)
}

/// Writes a range as a feed line: a host range as the bare address.
pub fn format_ip_entry(net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One check for both grammars: what `parse` made of `line` (an entry, as its feed
    /// line, or none) against `expected` (that, or words the error must hold).
    fn check(
        parse: impl Fn(&str) -> Result<Option<String>, String>,
        line: &str,
        expected: Result<Option<&str>, &str>,
    ) {
        let got = parse(line);
        match (&got, expected) {
            (Ok(a), Ok(b)) => assert_eq!(a.as_deref(), b, "{line:?}"),
            (Err(e), Err(needle)) => {
                assert!(e.contains(needle), "{line:?}: {e:?} lacks {needle:?}")
            }
            _ => panic!("{line:?}: got {got:?}, expected {expected:?}"),
        }
    }

    fn check_domain_line(line: &str, expected: Result<Option<&str>, &str>) {
        check(
            |l| parse_domain_line(l).map(|r| r.map(|r| r.to_string())),
            line,
            expected,
        );
    }

    #[test]
    fn domain_lines() {
        check_domain_line("evil.example", Ok(Some("evil.example")));
        check_domain_line("  c2.evil.test  # note", Ok(Some("c2.evil.test")));
        check_domain_line("*.evil.example", Ok(Some("*.evil.example")));
        check_domain_line("xn--bcher-kva.example", Ok(Some("xn--bcher-kva.example")));
        check_domain_line("_dmarc.evil.example", Ok(Some("_dmarc.evil.example")));
        check_domain_line("# only a comment", Ok(None));
        check_domain_line("   ", Ok(None));
        check_domain_line("Evil.example", Err("must be lower case"));
        check_domain_line("evil.example.", Err("without a trailing dot"));
        check_domain_line("localhost", Err("at least two labels"));
        // A wildcard over a whole top-level domain is refused like the bare name.
        check_domain_line("*.com", Err("at least two labels"));
        check_domain_line("*.*.evil.example", Err("label \"*\""));
        check_domain_line("-a.example", Err("label \"-a\""));
        check_domain_line("a..example", Err("label \"\""));
        check_domain_line("10.0.0.1", Err("numeric label"));
        check_domain_line("ev il.example", Err("label \"ev il\""));
        check_domain_line("bücher.example", Err("label \"bücher\""));
        let long = format!("{}.example", "a".repeat(64));
        check_domain_line(&long, Err("1-63 characters"));
        let too_long = format!("{}example", "abcdefghi.".repeat(25));
        check_domain_line(&too_long, Err("longer than 253"));
    }

    fn check_ip_line(line: &str, expected: Result<Option<&str>, &str>) {
        check(
            |l| parse_ip_line(l).map(|r| r.map(|n| format_ip_entry(&n))),
            line,
            expected,
        );
    }

    #[test]
    fn ip_lines() {
        check_ip_line("192.0.2.1", Ok(Some("192.0.2.1")));
        check_ip_line("192.0.2.1/32", Ok(Some("192.0.2.1")));
        check_ip_line("198.51.100.0/24 # x", Ok(Some("198.51.100.0/24")));
        check_ip_line("2001:db8::/32", Ok(Some("2001:db8::/32")));
        check_ip_line("2001:db8::1", Ok(Some("2001:db8::1")));
        check_ip_line("# c", Ok(None));
        check_ip_line("", Ok(None));
        check_ip_line(
            "192.0.2.1/24",
            Err("host bits set; the range is 192.0.2.0/24"),
        );
        check_ip_line("ok", Err("not an IPv4/IPv6"));
        check_ip_line("192.0.2.300", Err("not an IPv4/IPv6"));
        check_ip_line("192.0.2.0/33", Err("not an IPv4/IPv6"));
        check_ip_line("192.0.2.0-192.0.2.9", Err("not an IPv4/IPv6"));
    }
}
