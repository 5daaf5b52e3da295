//! Unit tests of the port decision: each format's extractor on a small image directory.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use super::extract::key_matches;
use super::*;

fn app(json: &str) -> AppSpec {
    serde_json::from_str(json).unwrap()
}

/// Writes `files` (path, content) under a temp dir, with `exe` as executables, and
/// examines it with one app.
fn examine_files(spec: &str, files: &[(&str, &str)], cmd: Option<&str>) -> AppReport {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let target = dir.path().join(path.trim_start_matches('/'));
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        fs::write(&target, text).unwrap();
        if path.contains("/bin/") || path.contains("/sbin/") {
            fs::set_permissions(&target, fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    let image = Image::open(dir.path()).unwrap();
    let knowledge = Knowledge::from_apps(vec![app(spec)], "t".into()).unwrap();
    let command = match cmd {
        Some(line) => CommandLine::Given(split_command(line).unwrap()),
        None => CommandLine::FromImage,
    };
    let mut report = examine(&image, "t", &knowledge, command);
    assert_eq!(report.apps.len(), 1, "{report:?}");
    report.apps.remove(0)
}

/// Ports as `port status evidence`, for short expectations.
fn ports(app: &AppReport) -> Vec<String> {
    app.ports
        .iter()
        .map(|p| {
            let mut s = format!(
                "{} {} {}",
                p.port.map_or("?".into(), |n| n.to_string()),
                p.status.as_str(),
                p.evidence
            );
            if let Some(a) = &p.address {
                s = format!("{a} {s}");
            }
            if let Some(c) = &p.condition {
                s.push_str(&format!(" if {c}"));
            }
            s
        })
        .collect()
}

const REDIS: &str = r#"{"id":"redis","name":"Redis","executables":["redis-server"],
  "configs":[{"format":"keyword","paths":["/etc/redis/redis.conf","/etc/redis.conf"],
    "includes":["include"],"ports":[{"key":"port","default":6379},{"key":"tls-port","label":"tls"}]}],
  "flags":[{"flag":"--port"},{"flag":"--tls-port","label":"tls"}]}"#;

#[test]
fn redis_last_port_wins_and_includes_are_read_in_place() {
    let app = examine_files(
        REDIS,
        &[
            ("/usr/bin/redis-server", ""),
            (
                "/etc/redis/redis.conf",
                "bind 127.0.0.1 -::1\nport 6379\n# tls-port 6379\ninclude /etc/redis/local.conf\n",
            ),
            ("/etc/redis/local.conf", "port 6380\n"),
        ],
        None,
    );
    assert_eq!(
        ports(&app),
        [
            "6379 overridden /etc/redis/redis.conf:2",
            "6380 listens /etc/redis/local.conf:1"
        ]
    );
    assert_eq!(
        app.configs,
        ["/etc/redis/redis.conf", "/etc/redis/local.conf"]
    );
}

#[test]
fn commented_keys_fall_back_to_the_default() {
    let app = examine_files(
        REDIS,
        &[
            ("/usr/bin/redis-server", ""),
            ("/etc/redis.conf", "# port 6380\nbind 0.0.0.0\n"),
        ],
        None,
    );
    assert_eq!(
        ports(&app),
        ["6379 listens default (commented out at /etc/redis.conf:1)"]
    );
}

#[test]
fn port_zero_means_no_listener_and_no_default() {
    let app = examine_files(
        REDIS,
        &[
            ("/usr/bin/redis-server", ""),
            ("/etc/redis.conf", "port 0\ntls-port 6380\n"),
        ],
        None,
    );
    assert_eq!(ports(&app), ["6380 listens /etc/redis.conf:2"]);
    assert_eq!(
        app.notes,
        ["/etc/redis.conf:1: port 0: switched off: no TCP listener"]
    );
}

#[test]
fn the_command_line_beats_the_file() {
    let app = examine_files(
        REDIS,
        &[
            ("/usr/bin/redis-server", ""),
            ("/etc/redis.conf", "port 6380\n"),
            ("/etc/redis/redis.conf", "port 6390\n"),
        ],
        Some("redis-server /etc/redis.conf --port 7777"),
    );
    assert_eq!(
        ports(&app),
        [
            "7777 listens argv --port 7777",
            "6380 overridden /etc/redis.conf:1"
        ]
    );
    // The file named on the command line replaces the source's own paths.
    assert_eq!(app.configs, ["/etc/redis.conf"]);
    assert_eq!(
        app.ports[1].overridden_by.as_deref(),
        Some("argv --port 7777")
    );
}

#[test]
fn templates_are_unresolved() {
    let app = examine_files(
        REDIS,
        &[
            ("/usr/bin/redis-server", ""),
            ("/etc/redis.conf", "port @@Port@@\n"),
        ],
        Some("redis-server --tls-port ${TLS_PORT}"),
    );
    assert_eq!(
        ports(&app),
        [
            "? unresolved /etc/redis.conf:1",
            "? unresolved argv --tls-port ${TLS_PORT}"
        ]
    );
    assert_eq!(app.ports[0].value.as_deref(), Some("@@Port@@"));
}

const INI: &str = r#"{"id":"mariadb","name":"MariaDB","executables":["mariadbd"],
  "configs":[{"format":"ini","paths":["/etc/mysql/my.cnf","/etc/mysql/conf.d/*.cnf"],
    "includes":["!include","!includedir"],
    "ports":[{"sections":["mysqld","client-server"],"key":"port","default":3306}]}],
  "flags":[{"flag":"--port"},{"flag":"-P"}]}"#;

#[test]
fn ini_sections_and_includedir() {
    let app = examine_files(
        INI,
        &[
            ("/usr/sbin/mariadbd", ""),
            (
                "/etc/mysql/my.cnf",
                "[client-server]\n# port = 3306\nport = 3307\n[client]\nport = 9\n!includedir /etc/mysql/conf.d/\n",
            ),
            ("/etc/mysql/conf.d/a.cnf", "[mysqld]\nport = 3308 # local\n"),
            ("/etc/mysql/conf.d/b.txt", "[mysqld]\nport = 1\n"),
        ],
        None,
    );
    assert_eq!(
        ports(&app),
        [
            "3307 overridden /etc/mysql/my.cnf:3",
            "3308 listens /etc/mysql/conf.d/a.cnf:2"
        ]
    );
}

#[test]
fn short_flags_with_attached_values() {
    let app = examine_files(
        INI,
        &[("/usr/sbin/mariadbd", "")],
        Some("mariadbd --user=mysql -P3310"),
    );
    assert_eq!(ports(&app), ["3310 listens argv -P3310"]);
}

const APACHE: &str = r#"{"id":"apache","name":"Apache","executables":["httpd"],
  "configs":[{"format":"apache","paths":["/usr/local/apache2/conf/httpd.conf"],
    "includes":["Include","IncludeOptional"],"ports":[{"key":"Listen"}]}]}"#;

#[test]
fn apache_conditions_and_server_root() {
    let app = examine_files(
        APACHE,
        &[
            ("/usr/local/apache2/bin/httpd", ""),
            (
                "/usr/local/apache2/conf/httpd.conf",
                "Listen 80\n<IfModule ssl_module>\n  Include conf/extra/ssl.conf\n</IfModule>\nIncludeOptional conf/none/*.conf\nInclude conf/missing.conf\n",
            ),
            (
                "/usr/local/apache2/conf/extra/ssl.conf",
                "Listen [2001:db8::1]:8443 https\n",
            ),
        ],
        None,
    );
    assert_eq!(
        ports(&app),
        [
            "80 listens /usr/local/apache2/conf/httpd.conf:1",
            "2001:db8::1 8443 conditional /usr/local/apache2/conf/extra/ssl.conf:1 if <IfModule ssl_module>"
        ]
    );
    assert_eq!(
        app.problems,
        ["/usr/local/apache2/conf/httpd.conf:6: include conf/missing.conf: no such file"]
    );
}

#[test]
fn extractor_keys_with_wildcards() {
    assert!(key_matches("listeners.tcp.*", "listeners.tcp.default"));
    assert!(!key_matches("listeners.tcp.*", "listeners.tcp"));
    assert!(!key_matches("listeners.tcp.*", "listeners.ssl.default"));
    assert!(key_matches("port", "port"));
}
