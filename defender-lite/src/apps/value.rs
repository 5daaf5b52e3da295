//! What a port setting's text means: a port, an address and a port, only an address, a
//! template nobody has filled in, a disabled listener, or something that is not a port at
//! all (a unix socket). Shared by every config format and by the command line, so
//! `listen [::]:80`, `Listen *:443`, `port = 3306` and `--port=7777` read the same way.

use std::net::{IpAddr, Ipv6Addr};

/// A port setting, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PortValue {
    Port {
        port: u16,
        /// As written, without brackets: `127.0.0.1`, `::`, `*`, `localhost`.
        address: Option<String>,
    },
    /// An address without a port (`listen 127.0.0.1;`): the app's default port applies.
    AddressOnly { address: String },
    /// `${PORT}`, `@@Port@@`, `{{ .port }}`...: filled in by something at deploy time.
    Template,
    /// `0` (redis, nginx) or `-1` (Tomcat's shutdown port): no TCP listener.
    Disabled,
    /// Anything else, with the reason.
    NotAPort(String),
}

/// Reads a port setting's text (quotes around it are dropped).
pub(crate) fn parse(raw: &str) -> PortValue {
    let text = unquote(raw.trim());
    if text.is_empty() {
        return PortValue::NotAPort("empty value".into());
    }
    if is_template(text) {
        return PortValue::Template;
    }
    if text == "0" || text == "-1" {
        return PortValue::Disabled;
    }
    if text.starts_with('/') || text.starts_with("unix:") || text.starts_with('@') {
        return PortValue::NotAPort("a unix socket, not a TCP port".into());
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return number(text).map_or_else(PortValue::NotAPort, |port| PortValue::Port {
            port,
            address: None,
        });
    }
    if let Some(rest) = text.strip_prefix('[') {
        // `[v6]:port` or `[v6]`.
        let Some((address, after)) = rest.split_once(']') else {
            return PortValue::NotAPort("unclosed [ in an IPv6 address".into());
        };
        if address.parse::<Ipv6Addr>().is_err() {
            return PortValue::NotAPort(format!("{address:?} is not an IPv6 address"));
        }
        return match after.strip_prefix(':') {
            None if after.is_empty() => PortValue::AddressOnly {
                address: address.to_owned(),
            },
            Some(port) => port_of(address, port),
            None => PortValue::NotAPort(format!("unexpected {after:?} after the address")),
        };
    }
    if let Some((address, port)) = text.rsplit_once(':') {
        // `host:port`, `*:port`, and RabbitMQ's bare `::1:5672`.
        if address.contains(':') && address.parse::<Ipv6Addr>().is_err() {
            return match text.parse::<Ipv6Addr>() {
                Ok(_) => PortValue::AddressOnly {
                    address: text.to_owned(),
                },
                Err(_) => PortValue::NotAPort(format!("{text:?} is not an address and port")),
            };
        }
        if address.is_empty() {
            // haproxy's `:80`: every address.
            return port_of("*", port);
        }
        return port_of(address, port);
    }
    if text == "*" || text.parse::<IpAddr>().is_ok() || is_host_name(text) {
        return PortValue::AddressOnly {
            address: text.to_owned(),
        };
    }
    PortValue::NotAPort(format!("{text:?} is not a port"))
}

/// Whether text is a placeholder that a template engine, an installer or a shell fills
/// in: never guessed at, always reported as unresolved.
pub(crate) fn is_template(text: &str) -> bool {
    const MARKERS: [&str; 9] = ["${", "{{", "}}", "{%", "%}", "$(", "<%", "%(", "#{"];
    if MARKERS.iter().any(|m| text.contains(m)) {
        return true;
    }
    // `@@Port@@` (installers), `__PORT__` (sed-replaced images).
    if text.matches("@@").count() >= 2 {
        return true;
    }
    let upper_placeholder = text
        .strip_prefix("__")
        .and_then(|t| t.strip_suffix("__"))
        .is_some_and(|t| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        });
    if upper_placeholder {
        return true;
    }
    // `$PORT`: a shell variable.
    text.as_bytes()
        .windows(2)
        .any(|w| w[0] == b'$' && (w[1].is_ascii_alphabetic() || w[1] == b'_'))
}

/// Drops one pair of matching quotes.
pub(crate) fn unquote(text: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = text.strip_prefix(q).and_then(|t| t.strip_suffix(q)) {
            return inner;
        }
    }
    text
}

fn port_of(address: &str, port: &str) -> PortValue {
    if is_template(port) {
        return PortValue::Template;
    }
    if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
        if port.trim_start_matches('0').is_empty() {
            return PortValue::Disabled;
        }
        return number(port).map_or_else(PortValue::NotAPort, |port| PortValue::Port {
            port,
            address: Some(address.to_owned()),
        });
    }
    PortValue::NotAPort(format!("{port:?} is not a port number"))
}

fn number(text: &str) -> Result<u16, String> {
    match text.parse::<u32>() {
        Ok(n @ 1..=65535) => Ok(n as u16),
        _ => Err(format!("{text} is not a port number (1-65535)")),
    }
}

fn is_host_name(text: &str) -> bool {
    text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && text.bytes().any(|b| b.is_ascii_alphabetic())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &str, expected: PortValue) {
        assert_eq!(parse(raw), expected, "{raw}");
    }

    fn port(port: u16, address: Option<&str>) -> PortValue {
        PortValue::Port {
            port,
            address: address.map(str::to_owned),
        }
    }

    fn only(address: &str) -> PortValue {
        PortValue::AddressOnly {
            address: address.into(),
        }
    }

    #[test]
    fn ports_and_addresses() {
        check("80", port(80, None));
        check("\"3306\"", port(3306, None));
        check("127.0.0.1:8080", port(8080, Some("127.0.0.1")));
        check("[::]:80", port(80, Some("::")));
        check("*:443", port(443, Some("*")));
        check("[2001:db8::1]:8443", port(8443, Some("2001:db8::1")));
        check(":80", port(80, Some("*")));
        check("localhost:8000", port(8000, Some("localhost")));
        check("::1:5672", port(5672, Some("::1")));
        check("127.0.0.1", only("127.0.0.1"));
        check("[::1]", only("::1"));
        check("localhost", only("localhost"));
        check("*", only("*"));
    }

    #[test]
    fn what_is_not_a_port() {
        check("0", PortValue::Disabled);
        check("-1", PortValue::Disabled);
        check("127.0.0.1:0", PortValue::Disabled);
        assert!(matches!(parse("70000"), PortValue::NotAPort(_)));
        assert!(matches!(
            parse("/run/php/php8.2-fpm.sock"),
            PortValue::NotAPort(_)
        ));
        assert!(matches!(parse("unix:/run/x.sock"), PortValue::NotAPort(_)));
        assert!(matches!(parse("8000-8010"), PortValue::NotAPort(_)));
        assert!(matches!(parse("[::1:80"), PortValue::NotAPort(_)));
        assert!(matches!(parse(""), PortValue::NotAPort(_)));
    }

    #[test]
    fn templates_are_never_guessed() {
        for raw in [
            "@@Port@@",
            "${PORT}",
            "${HTTP_PORT:-8080}",
            "{{ .port }}",
            "{{ .Values.service.port }}",
            "$PORT",
            "127.0.0.1:$PORT",
            "%(port)s",
            "__PORT__",
            "<%= @port %>",
            "{% raw %}",
        ] {
            check(raw, PortValue::Template);
        }
        check("[::]:${PORT}", PortValue::Template);
    }
}
