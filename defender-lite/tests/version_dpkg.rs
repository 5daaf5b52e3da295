//! Debian version order, cross-checked against the `dpkg` binary of this machine:
//! dpkg's own test cases (lib/dpkg/t/t-version.c), hand-picked hard cases and a few
//! hundred generated pairs must order exactly as `dpkg --compare-versions` orders them,
//! and what dpkg refuses (exit 2) we refuse. dpkg is on every Debian machine; without it
//! this test fails rather than skips.

#![allow(clippy::unwrap_used)]

use std::cmp::Ordering;
use std::io::Write;
use std::process::{Command, Stdio};

use defender_lite::version::{DpkgVersion, Scheme, compare};

/// dpkg's parse cases: the version, then its epoch, upstream version and revision.
const DPKG_PARSE_CASES: &[(&str, u32, &str, &str)] = &[
    ("0", 0, "0", ""),
    ("0:0", 0, "0", ""),
    ("0:0-0", 0, "0", "0"),
    ("0:0.0-0.0", 0, "0.0", "0.0"),
    ("1:0", 1, "0", ""),
    ("5:1", 5, "1", ""),
    ("0:0-0-0", 0, "0-0", "0"),
    ("0:0-0-0-0", 0, "0-0-0", "0"),
    ("0:0:0-0", 0, "0:0", "0"),
    ("0:0:0:0-0", 0, "0:0:0", "0"),
    ("0:0:0-0-0", 0, "0:0-0", "0"),
    ("0:0-0:0-0", 0, "0-0:0", "0"),
    ("0:09azAZ.-+~:-0", 0, "09azAZ.-+~:", "0"),
    ("0:0-azAZ09.+~", 0, "0", "azAZ09.+~"),
    ("  \t0:0-1", 0, "0", "1"),
    ("0:0-1\t  ", 0, "0", "1"),
    ("\t  0:0-1  \t", 0, "0", "1"),
    // Warned about by dpkg, still ordered.
    ("0:abc3-0", 0, "abc3", "0"),
    ("0:0-0:0", 0, "0", "0:0"),
];

/// Versions dpkg refuses (t-version.c's errors; its warnings are ordered instead).
const DPKG_REFUSED: &[&str] = &[
    "",
    "  ",
    "0:",
    "0:0 0-1",
    "-1:0-1",
    "999999999999999999999999:0-1",
    "a:0-0",
    "A:0-0",
    "-0",
    "0:-0",
];

/// dpkg's comparison cases, as pairs in order (`<`) or equal (`=`).
const DPKG_COMPARE_CASES: &[(&str, char, &str)] = &[
    ("0:1-1", '<', "0:2-1"),
    ("0:1-1", '<', "0:1-2"),
    ("0:0-0", '=', "0:0-0"),
    ("0:0-00", '=', "0:00-0"),
    ("1:2-3", '=', "1:2-3"),
    ("0:0-0", '<', "1:0-0"),
    ("0:a-0", '<', "0:b-0"),
    ("0:0-a", '<', "0:0-b"),
    ("0:1-1", '=', "0:1-1"),
    ("0:2-1", '>', "0:1-1"),
];

/// Hard cases: tildes, letters against symbols, long numbers, epochs, security updates.
const HARD: &[(&str, &str)] = &[
    ("1.0~rc1", "1.0"),
    ("1.0~rc1", "1.0~rc1~git1"),
    ("1.0~~", "1.0~"),
    ("1.0~", "1.0"),
    ("1.0", "1.0+"),
    ("1.0a", "1.0+"),
    ("1.0a", "1.0."),
    ("1.0a", "1.0A"),
    ("1.0Z", "1.0a"),
    ("1.0-1", "1.0+1-1"),
    ("1.0", "1.0-0"),
    ("1.0", "1.0.0"),
    ("1.00", "1.0"),
    ("1.001", "1.1"),
    ("1.99999999999999999999", "1.100000000000000000000"),
    ("2.36-9+deb12u9", "2.36-9+deb12u10"),
    ("2.36-9+deb12u3", "2.36-9+deb12u4"),
    ("2.36-9", "2.36-9+deb12u1"),
    ("3.0.11-1~deb12u2", "3.0.11-1"),
    ("3.0.11-1~deb12u2", "3.0.11-1~deb12u10"),
    ("3.0.11-1~deb11u1", "3.0.11-1~deb12u1"),
    ("1:9.2p1-2+deb12u2", "9.9p1-1"),
    ("1:9.2p1-2+deb12u2", "1:9.2p1-2+deb12u3"),
    ("9.2p1", "9.2p10"),
    ("7.88.1-10+deb12u4", "7.88.1-10+deb12u10"),
    ("1.34+dfsg-1.2+deb12u1", "1.34+dfsg-1.2"),
    ("1.34+dfsg-1.2+deb12u1", "1.34-1"),
    ("5.36.0-7+deb12u1", "5.36.0-7+deb12u2"),
    ("1.2.3-1ubuntu1", "1.2.3-1"),
    ("1.2.3-1ubuntu1", "1.2.3-1build1"),
    ("1.2.3-0ubuntu0.22.04.1", "1.2.3-0ubuntu0.22.04.2"),
    ("1.0+b1", "1.0"),
    ("1.0-1+b1", "1.0-1.1"),
    ("1.0-1~bpo12+1", "1.0-1"),
    ("0:1.0", "1.0"),
    ("00:1.0", "1:0.1"),
    ("+1:2", "1:2"),
    ("2147483647:1", "1:2"),
    ("1.0-a:b", "1.0"),
    ("1:1", "1.0-1:0"),
    ("1.0-", "1.0"),
    ("1.0 ", "1.0"),
    (" 1.0", "1.0"),
    ("1 0", "1.0"),
    ("abc", "1"),
    ("1.0-é", "1.0-e"),
    ("1é", "1z"),
    ("1.0!", "1.0~"),
    ("1_0", "1.0"),
    ("2:", "2:1"),
    (":1", "1"),
    ("1.2.3a~b+c.d", "1.2.3a~b+c"),
];

/// A small deterministic generator (xorshift64*), so the generated pairs are the same
/// on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

const PIECES: &[&str] = &[
    "0", "1", "2", "9", "10", "01", "00", "100", "a", "b", "z", "A", "Z", "p", "rc", "dfsg", "deb",
    "u", ".", ".", ".", "+", "~", "~", "-",
];

fn generated_version(rng: &mut Rng) -> String {
    let mut v = String::new();
    if rng.chance(20) {
        v.push_str(rng.pick(&["0:", "1:", "2:", "10:"]));
    }
    v.push_str(rng.pick(&["0", "1", "2", "9", "10", "1.0", "2.36", "3.0.11"]));
    for _ in 0..(rng.next() % 5) {
        v.push_str(rng.pick(PIECES));
    }
    if rng.chance(60) {
        v.push('-');
        v.push_str(rng.pick(&["0", "1", "9", "10", "a", "1.2", "0ubuntu1"]));
        for _ in 0..(rng.next() % 4) {
            v.push_str(rng.pick(&["0", "1", "2", "10", "a", "u", "deb12u", ".", "+", "~", "b"]));
        }
    }
    v
}

/// A version a small edit away from `v`, so that pairs share prefixes (where the
/// interesting comparisons are).
fn neighbour(rng: &mut Rng, v: &str) -> String {
    let mut w = v.to_owned();
    match rng.next() % 4 {
        0 => w.push_str(rng.pick(PIECES)),
        1 => {
            w.pop();
        }
        2 => {
            let cut = (rng.next() as usize) % (w.len() + 1);
            let cut = (0..=cut)
                .rev()
                .find(|&i| w.is_char_boundary(i))
                .unwrap_or(0);
            w.insert_str(cut, rng.pick(PIECES));
        }
        _ => {
            w = w.replacen(
                rng.pick(&["1", "0", ".", "-", "a", "~"]),
                rng.pick(PIECES),
                1,
            );
        }
    }
    if w.is_empty() || w.starts_with('-') || w.trim().is_empty() {
        w.insert(0, '1');
    }
    w
}

/// What `dpkg --compare-versions` says of each pair: `Some(order)`, or `None` when it
/// refuses a version (exit 2). One shell runs all the comparisons.
fn dpkg_orders(pairs: &[(String, String)]) -> Vec<Option<Ordering>> {
    const SCRIPT: &str = r#"
IFS=$(printf '\037')
while read -r a b; do
  dpkg --compare-versions "$a" lt "$b" 2>/dev/null; rc=$?
  if [ $rc -eq 0 ]; then echo '<'
  elif [ $rc -eq 1 ]; then
    if dpkg --compare-versions "$a" gt "$b" 2>/dev/null; then echo '>'; else echo '='; fi
  else echo '!'; fi
done
"#;
    let version = Command::new("dpkg").arg("--version").output().expect(
        "this test needs Debian's `dpkg` on PATH (it is on every Debian machine): cannot run it",
    );
    assert!(version.status.success(), "dpkg --version failed");
    let mut child = Command::new("sh")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = String::new();
    for (a, b) in pairs {
        assert!(!a.contains(['\n', '\x1f']) && !b.contains(['\n', '\x1f']));
        input.push_str(&format!("{a}\x1f{b}\n"));
    }
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap());
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(output.status.success());
    let answers: Vec<Option<Ordering>> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| match line {
            "<" => Some(Ordering::Less),
            "=" => Some(Ordering::Equal),
            ">" => Some(Ordering::Greater),
            _ => None,
        })
        .collect();
    assert_eq!(answers.len(), pairs.len(), "one answer per pair");
    answers
}

fn ours(a: &str, b: &str) -> Option<Ordering> {
    compare(Scheme::Dpkg, a, b).ok()
}

#[test]
fn dpkg_parse_cases() {
    for &(text, epoch, upstream, revision) in DPKG_PARSE_CASES {
        let v: DpkgVersion = text.parse().unwrap();
        assert_eq!(
            (v.epoch(), v.upstream(), v.revision()),
            (epoch, upstream, revision),
            "{text:?}"
        );
    }
    for text in DPKG_REFUSED {
        assert!(
            Scheme::Dpkg.parse(text).is_err(),
            "{text:?} must be refused"
        );
    }
    // Invalid characters dpkg only warns about.
    for c in "!#@$%&/|\\<>()[]{};,_=*^'".chars() {
        assert!(Scheme::Dpkg.parse(&format!("0:0{c}-0")).is_ok(), "{c}");
        assert!(Scheme::Dpkg.parse(&format!("0:0-0{c}")).is_ok(), "{c}");
    }
}

#[test]
fn dpkg_compare_cases() {
    for &(a, op, b) in DPKG_COMPARE_CASES {
        let expected = match op {
            '<' => Ordering::Less,
            '=' => Ordering::Equal,
            _ => Ordering::Greater,
        };
        assert_eq!(ours(a, b), Some(expected), "{a} {op} {b}");
    }
}

#[test]
fn orders_as_the_dpkg_binary_does() {
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut add = |a: &str, b: &str| {
        pairs.push((a.to_owned(), b.to_owned()));
        pairs.push((b.to_owned(), a.to_owned()));
    };
    for &(a, _, b) in DPKG_COMPARE_CASES {
        add(a, b);
    }
    for &(v, ..) in DPKG_PARSE_CASES {
        add(v, "0:0-0");
    }
    for v in DPKG_REFUSED
        .iter()
        .filter(|v| !v.trim().is_empty() && !v.starts_with('-'))
    {
        add(v, "1");
    }
    for &(a, b) in HARD {
        add(a, b);
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..150 {
        let a = generated_version(&mut rng);
        let b = neighbour(&mut rng, &a);
        add(&a, &b);
    }
    for _ in 0..100 {
        let a = generated_version(&mut rng);
        let b = generated_version(&mut rng);
        add(&a, &b);
    }
    let expected = dpkg_orders(&pairs);
    let mismatches: Vec<String> = pairs
        .iter()
        .zip(&expected)
        .filter(|((a, b), dpkg)| ours(a, b) != **dpkg)
        .map(|((a, b), dpkg)| format!("{a:?} vs {b:?}: dpkg {dpkg:?}, ours {:?}", ours(a, b)))
        .collect();
    assert!(
        mismatches.is_empty(),
        "{} of {} pairs differ from dpkg:\n{}",
        mismatches.len(),
        pairs.len(),
        mismatches.join("\n")
    );
    // The generator must exercise both answers and dpkg's refusals.
    for answer in [
        Some(Ordering::Less),
        Some(Ordering::Equal),
        Some(Ordering::Greater),
        None,
    ] {
        assert!(expected.contains(&answer), "no pair answered {answer:?}");
    }
    assert!(pairs.len() >= 600, "{} pairs", pairs.len());
}
