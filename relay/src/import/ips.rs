//! Address importer: IP blocklists (FireHOL netsets, Spamhaus DROP, plain lists) into one
//! `ips` feed file in the grammar of [`crate::bundle::lines`].
//!
//! A line holds an address, a CIDR range, or a range `a-b` (two addresses of one family;
//! written as the fewest CIDR ranges that cover it); `#` and `;` start comments (DROP's
//! `1.10.16.0/20 ; SBL256894`). A line that is a JSON object is read for its `cidr` field
//! (DROP's JSON form; its `metadata` line is skipped). A range with host bits set is
//! refused by rule `host-bits`, since which range was meant is a guess.
//!
//! All entries of all inputs are merged and aggregated (`ipnet::IpNet::aggregate`):
//! overlapping and adjacent ranges become the fewest CIDR ranges. An entry counts as kept
//! when it starts a range of the output, merged when it is folded into another.

use std::net::IpAddr;
use std::path::Path;

use ipnet::{IpNet, Ipv4Subnets, Ipv6Subnets};

use super::{
    ImportError, ImportLimits, ImportReport, Input, Tally, check_feed_name, finish, read_lines,
};
use crate::bundle::FeedKind;
use crate::bundle::lines::{format_ip_entry, parse_ip_entry};

/// Imports `inputs` into `FEEDS_DIR/ips/<name>.txt`.
pub fn import(
    inputs: &[Input],
    feeds_dir: &Path,
    name: &str,
    limits: &ImportLimits,
) -> Result<ImportReport, ImportError> {
    check_feed_name(name)?;
    if inputs.is_empty() {
        return Err(ImportError::NoInputs);
    }
    // (range, line) for every range read; `lines[line]` is the input it came from.
    let mut nets: Vec<(IpNet, u32)> = Vec::new();
    let mut lines: Vec<u32> = Vec::new();
    let mut tallies = vec![Tally::default(); inputs.len()];
    let mut digests = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.iter().enumerate() {
        let tally = &mut tallies[i];
        let shown = input.path.display().to_string();
        digests.push(read_lines(&input.path, limits, |n, line| {
            let place = format!("{shown}:{n}");
            let parsed = match line {
                Ok(line) => parse_line(line),
                Err(len) => Some(Err(("line-too-long", format!("{len} bytes")))),
            };
            let Some(parsed) = parsed else { return };
            tally.counts.read += 1;
            match parsed {
                Ok(found) => {
                    let line_id = lines.len() as u32;
                    lines.push(i as u32);
                    nets.extend(found.into_iter().map(|net| (net, line_id)));
                }
                Err((rule, why)) => tally.refuse(rule, &place, &why),
            }
        })?);
    }

    let all: Vec<IpNet> = nets.iter().map(|(n, _)| *n).collect();
    let aggregated = IpNet::aggregate(&all);
    drop(all);
    // A line is kept when one of its ranges is the first (widest, earliest read) to start
    // at an output range's first address; every other line was folded into another.
    nets.sort_unstable_by_key(|(net, line)| (key(net.network()), net.prefix_len(), *line));
    let mut kept = vec![false; lines.len()];
    let mut at = 0;
    for out in &aggregated {
        let start = key(out.network());
        while at < nets.len() && key(nets[at].0.network()) < start {
            at += 1;
        }
        if let Some((net, line)) = nets.get(at)
            && key(net.network()) == start
        {
            kept[*line as usize] = true;
        }
    }
    drop(nets);
    for (line, input) in lines.iter().enumerate() {
        let counts = &mut tallies[*input as usize].counts;
        if kept[line] {
            counts.kept += 1;
        } else {
            counts.merged += 1;
        }
    }
    finish(
        feeds_dir,
        FeedKind::Ips,
        &format!("{name}.txt"),
        inputs,
        digests.into_iter().zip(tallies).collect(),
        aggregated.len() as u64,
        |out| {
            for net in &aggregated {
                out.write_all(format!("{}\n", format_ip_entry(net)).as_bytes())
                    .map_err(|e| ImportError::io(feeds_dir, e))?;
            }
            Ok(())
        },
    )
}

/// Orders v4 before v6, then by address.
fn key(ip: IpAddr) -> (u8, u128) {
    match ip {
        IpAddr::V4(a) => (4, u128::from(u32::from(a))),
        IpAddr::V6(a) => (6, u128::from(a)),
    }
}

type Refusal = (&'static str, String);

/// The ranges a line lists: `None` for a comment or blank line.
fn parse_line(line: &str) -> Option<Result<Vec<IpNet>, Refusal>> {
    let trimmed = line.trim();
    if trimmed.starts_with('{') {
        return json_line(trimmed);
    }
    let text = trimmed
        .split(['#', ';'])
        .next()
        .unwrap_or("")
        .split_whitespace()
        .next()?;
    if let Some((a, b)) = text.split_once('-') {
        return Some(range(a.trim(), b.trim()).map_err(|why| ("bad-range", why)));
    }
    Some(match parse_ip_entry(text) {
        Ok(net) => Ok(vec![net]),
        Err(why) => match text.parse::<IpNet>() {
            Ok(_) => Err(("host-bits", why)),
            Err(_) => Err(("not-an-address", why)),
        },
    })
}

/// DROP's JSON lines: `{"cidr":"1.10.16.0/20","sblid":"SBL256894","rir":"apnic"}`.
fn json_line(text: &str) -> Option<Result<Vec<IpNet>, Refusal>> {
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return Some(Err(("not-json", format!("{e}")))),
    };
    if value.get("type").and_then(|t| t.as_str()) == Some("metadata") {
        return None;
    }
    let Some(cidr) = value.get("cidr").and_then(|c| c.as_str()) else {
        return Some(Err(("json-without-cidr", "no \"cidr\" field".to_owned())));
    };
    Some(match parse_ip_entry(cidr) {
        Ok(net) => Ok(vec![net]),
        Err(why) => Err(("host-bits", why)),
    })
}

/// `a-b` as the fewest CIDR ranges.
fn range(a: &str, b: &str) -> Result<Vec<IpNet>, String> {
    let (start, end) = match (a.parse::<IpAddr>(), b.parse::<IpAddr>()) {
        (Ok(s), Ok(e)) => (s, e),
        _ => return Err(format!("{a}-{b}: both ends must be addresses")),
    };
    match (start, end) {
        (IpAddr::V4(s), IpAddr::V4(e)) if s <= e => {
            Ok(Ipv4Subnets::new(s, e, 0).map(IpNet::V4).collect())
        }
        (IpAddr::V6(s), IpAddr::V6(e)) if s <= e => {
            Ok(Ipv6Subnets::new(s, e, 0).map(IpNet::V6).collect())
        }
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
            Err(format!("{a}-{b}: the start is after the end"))
        }
        _ => Err(format!("{a}-{b}: the ends are of different families")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(line: &str, expected: Option<Result<Vec<&str>, &str>>) {
        let got = parse_line(line).map(|r| {
            r.map(|nets| nets.iter().map(format_ip_entry).collect::<Vec<_>>())
                .map_err(|(rule, _)| rule)
        });
        let expected =
            expected.map(|r| r.map(|v| v.into_iter().map(str::to_owned).collect::<Vec<_>>()));
        assert_eq!(got, expected, "{line:?}");
    }

    #[test]
    fn lines() {
        check("# FireHOL level1", None);
        check("", None);
        check("1.10.16.0/20 ; SBL256894", Some(Ok(vec!["1.10.16.0/20"])));
        check("192.0.2.7", Some(Ok(vec!["192.0.2.7"])));
        check("192.0.2.7/32 # one", Some(Ok(vec!["192.0.2.7"])));
        check("2001:db8::/32", Some(Ok(vec!["2001:db8::/32"])));
        check(
            "192.0.2.0-192.0.2.9",
            Some(Ok(vec!["192.0.2.0/29", "192.0.2.8/31"])),
        );
        check("192.0.2.9-192.0.2.0", Some(Err("bad-range")));
        check("192.0.2.0-2001:db8::", Some(Err("bad-range")));
        check("192.0.2.1/24", Some(Err("host-bits")));
        check("evil.example", Some(Err("not-an-address")));
        check(
            r#"{"cidr":"1.10.16.0/20","sblid":"SBL256894","rir":"apnic"}"#,
            Some(Ok(vec!["1.10.16.0/20"])),
        );
        check(r#"{"type":"metadata","timestamp":1}"#, None);
        check(r#"{"sblid":"x"}"#, Some(Err("json-without-cidr")));
    }
}
