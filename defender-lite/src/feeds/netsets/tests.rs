use super::*;

#[test]
fn a_domain_matches_itself_and_its_subdomains_only() {
    let (set, bad) =
        DomainSet::from_feed_text("# c\nevil.example\n\nbad.test # x\n*.wild.example\nBad.Test.\n");
    assert_eq!(bad, vec![(6, "Bad.Test.".to_owned())]);
    assert_eq!(set.len(), 3);
    assert_eq!(set.matches("evil.example").as_deref(), Some("evil.example"));
    assert_eq!(
        set.matches("A.B.Evil.Example.").as_deref(),
        Some("evil.example")
    );
    assert_eq!(set.matches("bad.test").as_deref(), Some("bad.test"));
    assert_eq!(set.matches("notevil.example"), None);
    assert_eq!(set.matches("example"), None);
    assert_eq!(set.matches("evil.example.com"), None);
    assert_eq!(set.matches("wild.example"), None);
    assert_eq!(
        set.matches("a.wild.example").as_deref(),
        Some("*.wild.example")
    );
    assert_eq!(set.matches(""), None);
    assert_eq!(set.matches("."), None);
    assert_eq!(set.matches("evil\u{1}example"), None);
}

#[test]
fn covered_entries_are_merged_into_the_one_covering_them() {
    let (set, _) = DomainSet::from_feed_text(
        "a.evil.example\n*.evil.example\nevil.example\nb.c.evil.example\n*.x.test\n*.x.test\na.x.test\n",
    );
    assert_eq!(set.len(), 2, "{set:?}");
    assert_eq!(
        set.matches("a.evil.example").as_deref(),
        Some("evil.example")
    );
    assert_eq!(set.matches("a.x.test").as_deref(), Some("*.x.test"));
    assert_eq!(set.matches("x.test"), None);
}

#[test]
fn rule_names_match_in_any_case() {
    let set = DomainSet::from_names(["Internal.Example.", "localhost", "  "]);
    assert_eq!(set.len(), 2);
    assert!(set.matches("db.internal.example").is_some());
    assert!(set.matches("localhost").is_some());
    assert!(DomainSet::default().matches("localhost").is_none());
}

#[test]
fn damaged_domain_indexes_are_refused() {
    let (set, _) = DomainSet::from_feed_text("evil.example\n");
    let good = set.fst.unwrap().as_inner().as_ref().to_vec();
    assert!(DomainSet::from_bytes(good.clone().into()).is_some());
    assert!(DomainSet::from_bytes(good[..good.len() - 1].to_vec().into()).is_none());
    assert!(DomainSet::from_bytes(Vec::new().into()).is_none());
    let other = fst::Set::from_iter(["evil.example"]).unwrap().into_fst();
    assert!(DomainSet::from_bytes(other.into_inner().into()).is_none());
}

#[test]
fn ranges_merge_and_match_across_families() {
    let (set, bad) = IpSet::from_feed_text(
        "192.0.2.0/25\n192.0.2.128/25\n198.51.100.7\n2001:db8::/32\nnot-an-ip\n192.0.2.1/24\n",
    );
    assert_eq!(
        bad,
        vec![(5, "not-an-ip".to_owned()), (6, "192.0.2.1/24".to_owned())]
    );
    assert_eq!(set.len(), 3, "{set:?}");
    for hit in [
        "192.0.2.0",
        "192.0.2.255",
        "198.51.100.7",
        "::ffff:192.0.2.9",
        "2001:db8:ffff::1",
    ] {
        assert!(set.contains(hit.parse().unwrap()), "{hit}");
    }
    for miss in [
        "192.0.3.0",
        "198.51.100.6",
        "198.51.100.8",
        "2001:db9::",
        "::",
    ] {
        assert!(!set.contains(miss.parse().unwrap()), "{miss}");
    }
    let again = IpSet::from_bytes(set.bytes.clone()).unwrap();
    assert_eq!(again, set);
    assert!(IpSet::default().is_empty());
    assert_eq!(
        key_ip(ip_key("192.0.2.1".parse().unwrap())).to_string(),
        "192.0.2.1"
    );
}

#[test]
fn damaged_address_indexes_are_refused() {
    let (set, _) = IpSet::from_feed_text("192.0.2.0/24\n");
    let good = set.bytes.as_ref().to_vec();
    assert!(IpSet::from_bytes(good.clone().into()).is_some());
    for bad in [
        &good[..good.len() - 1],
        &good[8..],
        &good[..IPS_HEADER],
        &[0u8; 31][..],
    ] {
        assert!(IpSet::from_bytes(bad.to_vec().into()).is_none());
    }
}

/// Deterministic numbers for the generated feeds (xorshift64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// A label of `a`-`w` letters and digits that starts with a letter, `tag` in it so
    /// that every generated label is distinct.
    fn label(&mut self, tag: usize) -> String {
        let mut s = String::new();
        s.push((b'a' + self.below(23) as u8) as char);
        for _ in 0..self.below(6) {
            s.push((b'a' + self.below(23) as u8) as char);
        }
        s.push_str(&tag.to_string());
        s
    }
}

const TLDS: &[&str] = &["com", "net", "org", "ru", "co.uk", "com.br", "xyz", "top"];

/// Generated entries: (feed line, the rule); no entry covers another (each has a label
/// of its own), a quarter are `*.name`, a quarter three labels deep or more.
fn generated_domains(n: usize) -> Vec<(String, bool)> {
    let mut rng = Rng(0x5eed_d0a1);
    (0..n)
        .map(|i| {
            let tld = TLDS[rng.below(TLDS.len() as u64) as usize];
            let own = rng.label(i);
            match i % 4 {
                0 => (format!("{own}.{tld}"), true),
                1 => (format!("{}.{own}.{tld}", rng.label(0)), false),
                _ => (format!("{own}.{tld}"), false),
            }
        })
        .collect()
}

/// The feed line of an entry.
fn line((name, subdomains): &(String, bool)) -> String {
    if *subdomains {
        format!("*.{name}")
    } else {
        name.clone()
    }
}

/// Every name, suffix rule, address and range of a generated feed is found, and near
/// misses are not, with the index built as `sync` builds it: from several unsorted files
/// through sort runs (a small budget, so there are many), and, for feeds already in key
/// order, straight into the map (the same bytes).
#[test]
fn every_listed_name_and_range_is_found_and_near_misses_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let at = dir.path();
    let entries = generated_domains(200_000);
    let mut lines: Vec<String> = entries.iter().map(line).collect();
    // Some noise: comments, blank lines, a duplicate, a refused line.
    lines.insert(10, "# a comment".into());
    lines.insert(20, String::new());
    lines.push(lines[30].clone());
    lines.push("Upper.Example".into());
    let half = lines.len() / 2;
    std::fs::write(at.join("a.txt"), lines[..half].join("\n")).unwrap();
    std::fs::write(at.join("b.txt"), lines[half..].join("\n") + "\n").unwrap();
    let files = [PathBuf::from("a.txt"), PathBuf::from("b.txt")];
    let scratch = at.join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let fst_path = at.join("domains.fst");
    let built = write_domains(at, &files, &fst_path, &scratch, 1 << 20).unwrap();
    assert_eq!(built.entries, entries.len() as u64);
    assert_eq!(built.unreadable.count, 1);
    assert_eq!(
        built.unreadable.first.as_deref(),
        Some("b.txt:100002: \"Upper.Example\"")
    );
    assert_eq!(
        std::fs::read_dir(&scratch).unwrap().count(),
        0,
        "runs removed"
    );
    let set = DomainSet::open(&fst_path, None).unwrap();
    assert_eq!(set.len(), entries.len());

    for (i, (name, subdomains)) in entries.iter().enumerate() {
        let listed = line(&(name.clone(), *subdomains));
        let sub = format!("www.{name}");
        let (first, rest) = name.split_once('.').unwrap();
        if *subdomains {
            assert_eq!(
                set.matches(name),
                None,
                "{listed} lists only what is under it"
            );
        } else {
            assert_eq!(set.matches(name).as_deref(), Some(name.as_str()));
            let loud = format!("{}.", name.to_ascii_uppercase());
            assert_eq!(set.matches(&loud).as_deref(), Some(name.as_str()));
        }
        assert_eq!(set.matches(&sub).as_deref(), Some(listed.as_str()));
        assert_eq!(
            set.matches(&format!("a.b.{sub}")).as_deref(),
            Some(listed.as_str())
        );
        // Near misses for a third of them (every kind), to keep the test quick in debug.
        if i % 3 != 0 {
            continue;
        }
        for miss in [
            format!("x{name}"),
            format!("{first}-x.{rest}"),
            format!("{first}x.{rest}"),
            format!("{name}.x"),
            format!("{first}{rest}"),
            rest.to_owned(),
        ] {
            assert_eq!(set.matches(&miss), None, "{miss} (near {listed})");
        }
    }

    // The same entries in key order take the fast path, to the same bytes.
    let mut sorted: Vec<(Vec<u8>, String)> = entries
        .iter()
        .map(|e| {
            let line = line(e);
            let mut record = Vec::new();
            sort_record(
                &mut record,
                relay::bundle::lines::parse_domain_rule(&line).unwrap(),
            );
            (record, line)
        })
        .collect();
    sorted.sort();
    let text: String = sorted.iter().map(|(_, l)| format!("{l}\n")).collect();
    std::fs::write(at.join("sorted.txt"), text).unwrap();
    let sorted_files = [PathBuf::from("sorted.txt")];
    let in_order = at.join("in-order.fst");
    let fast = write_domains_in_order(at, &sorted_files, &in_order)
        .unwrap()
        .expect("a feed in key order takes the fast path");
    assert_eq!(fast.entries, entries.len() as u64);
    assert_eq!(
        std::fs::read(&in_order).unwrap(),
        std::fs::read(&fst_path).unwrap()
    );
    assert!(
        write_domains_in_order(at, &files, &at.join("x.fst"))
            .unwrap()
            .is_none(),
        "unsorted feeds are sorted first"
    );
    assert!(!at.join("x.fst").exists());

    // Addresses: disjoint, not adjacent ranges (IPv4 /23 to /32 1024 apart, IPv6 /64 to
    // /128 2^65 apart), written in random order with some duplicates inside them.
    let mut rng = Rng(0x1_5eed);
    let mut ranges = Vec::new();
    let mut lines = Vec::new();
    for i in 0..100_000u128 {
        let (net, first) = if i % 5 < 3 {
            let start = 0x0100_0000 + i * 1024;
            let prefix = 23 + rng.below(10) as u8;
            let v4 = std::net::Ipv4Addr::from(start as u32);
            (IpNet::new(v4.into(), prefix).unwrap(), ip_key(v4.into()))
        } else {
            let start = (0x2001_0db8u128 << 96) + (i << 65);
            let prefix = 64 + rng.below(65) as u8;
            let v6 = std::net::Ipv6Addr::from(start);
            (IpNet::new(v6.into(), prefix).unwrap(), start)
        };
        let last = first + (1u128 << (net.max_prefix_len() - net.prefix_len())) - 1;
        ranges.push((first, last));
        lines.push(relay::bundle::lines::format_ip_entry(&net));
        if i % 10 == 0 {
            lines.push(key_ip(last).to_string());
        }
    }
    for i in (1..lines.len()).rev() {
        lines.swap(i, rng.below(i as u64 + 1) as usize);
    }
    lines.push("192.0.2.1/24".into());
    let half = lines.len() / 2;
    std::fs::write(at.join("a.ips"), lines[..half].join("\n")).unwrap();
    std::fs::write(at.join("b.ips"), lines[half..].join("\n")).unwrap();
    let ips_path = at.join("ips.bin");
    let ip_files = [PathBuf::from("a.ips"), PathBuf::from("b.ips")];
    let built = write_ip_index(at, &ip_files, &ips_path).unwrap();
    assert_eq!(built.entries, ranges.len() as u64);
    assert_eq!(built.unreadable.count, 1, "host bits set");
    let set = IpSet::open(&ips_path, None).unwrap();
    assert_eq!(set.len(), ranges.len());
    for &(first, last) in &ranges {
        assert!(set.contains_key(first) && set.contains_key(last));
        assert!(set.contains(key_ip(first)) && set.contains(key_ip(last)));
        assert!(!set.contains_key(first - 1), "{}", key_ip(first - 1));
        assert!(!set.contains_key(last + 1), "{}", key_ip(last + 1));
    }
    assert!(!set.contains_key(0) && !set.contains_key(u128::MAX));
}
