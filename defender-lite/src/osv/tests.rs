use super::range::Range;
use super::*;

#[test]
fn schemes_per_ecosystem() {
    for (ecosystem, scheme) in [
        ("Debian:12", Scheme::Dpkg),
        ("Ubuntu:22.04:LTS", Scheme::Dpkg),
        ("Alpine:v3.19", Scheme::Apk),
        ("Wolfi", Scheme::Apk),
        ("Red Hat:enterprise_linux:9::appstream", Scheme::Rpm),
        ("Rocky Linux:9", Scheme::Rpm),
        ("AlmaLinux:8", Scheme::Rpm),
        ("openSUSE:Tumbleweed", Scheme::Rpm),
        ("PyPI", Scheme::Pep440),
        ("npm", Scheme::Semver),
        ("crates.io", Scheme::Semver),
        ("Go", Scheme::Go),
        ("Root:Alpine:3.18", Scheme::Apk),
        ("Root:PyPI", Scheme::Pep440),
        ("Maven", Scheme::Generic),
        ("Something New", Scheme::Generic),
    ] {
        assert_eq!(scheme_for(ecosystem), scheme, "{ecosystem}");
    }
}

#[test]
fn names_normalize_per_ecosystem() {
    assert_eq!(normalize_name("PyPI", "Jinja2"), "jinja2");
    assert_eq!(
        normalize_name("PyPI", "Foo__Bar..baz-Qux"),
        "foo-bar-baz-qux"
    );
    assert_eq!(normalize_name("crates.io", "Serde_JSON"), "serde-json");
    assert_eq!(
        normalize_name("Go", "github.com/BurntSushi/toml"),
        "github.com/BurntSushi/toml"
    );
    assert_eq!(normalize_name("Debian:12", "glibc"), "glibc");
    assert_eq!(package_key("debian:12", "x"), package_key("Debian", "x"));
}

#[test]
fn severity_words() {
    for (word, level) in [
        ("HIGH", Severity::High),
        ("Important", Severity::High),
        ("MODERATE", Severity::Medium),
        ("medium", Severity::Medium),
        ("low", Severity::Low),
        ("negligible", Severity::Low),
        ("unimportant", Severity::Low),
        ("CRITICAL", Severity::Critical),
        ("not yet assigned", Severity::Unknown),
        ("", Severity::Unknown),
    ] {
        assert_eq!(word.parse::<Severity>(), Ok(level), "{word:?}");
    }
    assert!("severe".parse::<Severity>().is_err());
    assert!(Severity::Unknown < Severity::Low && Severity::High < Severity::Critical);
}

#[test]
fn cvss_rejects_what_it_cannot_score() {
    for bad in [
        "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H",
        "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/XX:Y",
        "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N",
        "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N/E:Q",
        "CVSS:5.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
        "CVSS:3.1/AV:X/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
        "CVSS:3.1/AV:N/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
        "CVSS:2.9/AV:N",
        "AV:N/AC:L/Au:N/C:P/I:P",
        "nonsense",
    ] {
        assert!(cvss_base_score(bad).is_err(), "{bad}");
    }
}

#[test]
fn ranges_sort_their_events() {
    let events = |list: &[(&str, &str)]| {
        list.iter()
            .map(|(kind, v)| {
                let v = v.to_string();
                match *kind {
                    "introduced" => OsvEvent::Introduced(v),
                    "fixed" => OsvEvent::Fixed(v),
                    "last_affected" => OsvEvent::LastAffected(v),
                    _ => OsvEvent::Limit(v),
                }
            })
            .collect::<Vec<_>>()
    };
    let mut unreadable = 0;
    // Written out of order: [1.0, 1.2) and [2.0, 2.1).
    let range = Range::build(
        Scheme::Semver,
        events(&[
            ("fixed", "2.1.0"),
            ("introduced", "2.0.0"),
            ("fixed", "1.2.0"),
            ("introduced", "1.0.0"),
        ]),
        &mut unreadable,
    )
    .unwrap();
    let v = |s: &str| Scheme::Semver.parse(s).unwrap();
    assert!(range.contains(&v("1.1.0")));
    assert!(!range.contains(&v("1.5.0")));
    assert!(range.contains(&v("2.0.5")));
    assert!(!range.contains(&v("2.1.0")));
    // No introduced at all: not a range.
    assert!(
        Range::build(
            Scheme::Semver,
            events(&[("fixed", "1.0.0")]),
            &mut unreadable
        )
        .is_none()
    );
    assert_eq!(unreadable, 0);
}
