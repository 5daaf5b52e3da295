//! `apps`: the sample feed's app knowledge applied to fixture images modelled on the real
//! packages' and images' config files (`tests/fixtures/apps/<scenario>/`), each port
//! checked with its evidence; an image built on the fly as a flat tar and as a
//! `docker save` archive (config, EXPOSE and Cmd disagreeing); bad inputs that must be
//! reported, not panic; and the binary's table and JSON output and exit codes.

// Test helpers unwrap too: a panic is the failure report (STYLE.md).
#![allow(clippy::unwrap_used)]

use crate::image_fixtures;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use defender_lite::apps::{AppReport, CommandLine, Knowledge, Report, examine, split_command};
use defender_lite::image::Image;
use image_fixtures::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/apps")
}

fn sample_feeds() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../relay/samples/feeds")
}

fn knowledge() -> Knowledge {
    Knowledge::load_dir(&sample_feeds()).unwrap()
}

fn report_of(image: &Path, cmd: Option<&str>) -> Report {
    let image = Image::open(image).unwrap();
    let command = match cmd {
        Some(line) => CommandLine::Given(split_command(line).unwrap()),
        None => CommandLine::FromImage,
    };
    examine(&image, "fixture", &knowledge(), command)
}

fn app<'r>(report: &'r Report, id: &str) -> &'r AppReport {
    report
        .apps
        .iter()
        .find(|a| a.id == id)
        .unwrap_or_else(|| panic!("{id} not found in {:#?}", report.apps))
}

/// One line per port: `port/proto address status evidence [if ..] [in ..] [value ..]
/// [by ..] [EXPOSE]`.
fn ports(app: &AppReport) -> Vec<String> {
    app.ports
        .iter()
        .map(|p| {
            let proto = serde_json::to_value(p.protocol).unwrap();
            let mut line = format!(
                "{}/{} {} {} {}",
                p.port.map_or("?".into(), |n| n.to_string()),
                proto.as_str().unwrap(),
                p.address.as_deref().unwrap_or("-"),
                p.status.as_str(),
                p.evidence
            );
            if let Some(label) = &p.label {
                line = format!("{line} ({label})");
            }
            for (word, field) in [
                ("if", &p.condition),
                ("in", &p.context),
                ("value", &p.value),
                ("by", &p.overridden_by),
            ] {
                if let Some(v) = field {
                    line.push_str(&format!(" {word} {v}"));
                }
            }
            if p.exposed {
                line.push_str(" EXPOSE");
            }
            line
        })
        .collect()
}

/// Checks one app of a fixture: its ports, and its problems (substrings, in order).
fn check(fixture: &str, id: &str, cmd: Option<&str>, expected: &[&str], problems: &[&str]) {
    let report = report_of(&fixtures().join(fixture), cmd);
    let found = app(&report, id);
    assert_eq!(ports(found), expected, "{fixture}: {id}");
    assert_eq!(
        found.problems.len(),
        problems.len(),
        "{fixture}: {id}: {:#?}",
        found.problems
    );
    for (got, want) in found.problems.iter().zip(problems) {
        assert!(got.contains(want), "{fixture}: {got:?} lacks {want:?}");
    }
}

#[test]
fn nginx_debian_includes_globs_prefix_and_blocks() {
    check(
        "nginx-debian",
        "nginx",
        None,
        &[
            "8080/tcp 127.0.0.1 listens /etc/nginx/conf.d/admin.conf:3 (http) in http > server",
            "443/tcp * listens /etc/nginx/conf.d/admin.conf:4 (http) in http > server",
            "80/tcp - listens /etc/nginx/sites-enabled/default:5 (http) in http > server",
            "80/tcp :: listens /etc/nginx/sites-enabled/default:6 (http) in http > server",
            "53/udp - listens /etc/nginx/stream.conf:3 (http) in stream > server",
        ],
        &["/etc/nginx/conf.d/admin.conf:6: include snippets/missing.conf: no such file"],
    );
    let report = report_of(&fixtures().join("nginx-debian"), None);
    assert_eq!(
        app(&report, "nginx").configs,
        [
            "/etc/nginx/nginx.conf",
            "/etc/nginx/modules-enabled/50-mod-stream.conf",
            "/etc/nginx/mime.types",
            "/etc/nginx/conf.d/admin.conf",
            "/etc/nginx/sites-enabled/default",
            "/etc/nginx/stream.conf",
        ]
    );
    // Only nginx is there.
    assert_eq!(report.apps.len(), 1, "{:#?}", report.apps);
}

#[test]
fn nginx_include_loop_is_reported_once() {
    check(
        "nginx-include-loop",
        "nginx",
        None,
        &["8081/tcp - listens /etc/nginx/loop/a.conf:2 (http) in http > server"],
        &[
            "/etc/nginx/loop/b.conf:2: include loop: /etc/nginx/loop/a.conf is already being read \
           (/etc/nginx/nginx.conf -> /etc/nginx/loop/a.conf -> /etc/nginx/loop/b.conf -> /etc/nginx/loop/a.conf)",
        ],
    );
}

#[test]
fn apache_debian_conditionals_and_a_missing_include() {
    check(
        "apache-debian",
        "apache",
        None,
        &[
            "80/tcp - listens /etc/apache2/ports.conf:5",
            "443/tcp - conditional /etc/apache2/ports.conf:8 if <IfModule ssl_module>",
            "443/tcp - conditional /etc/apache2/ports.conf:12 if <IfModule mod_gnutls.c>",
        ],
        &["/etc/apache2/apache2.conf:30: include conf-local/hardening.conf: no such file"],
    );
    let report = report_of(&fixtures().join("apache-debian"), None);
    assert_eq!(
        app(&report, "apache").configs,
        [
            "/etc/apache2/apache2.conf",
            "/etc/apache2/mods-enabled/ssl.load",
            "/etc/apache2/ports.conf",
            "/etc/apache2/sites-enabled/000-default.conf",
        ]
    );
}

#[test]
fn httpd_official_server_root_conditions_and_templates() {
    check(
        "httpd-official",
        "apache",
        None,
        &[
            "80/tcp - listens /usr/local/apache2/conf/httpd.conf:5",
            "8443/tcp 2001:db8::1 conditional /usr/local/apache2/conf/extra/httpd-ssl.conf:5 if <IfModule ssl_module>",
            "8081/tcp * conditional /usr/local/apache2/conf/httpd.conf:18 if <IfDefine ALT_PORT>",
            "8082/tcp 127.0.0.1 conditional /usr/local/apache2/conf/httpd.conf:22 if <IfVersion >= 2.4.10>",
            "?/tcp - unresolved /usr/local/apache2/conf/extra/httpd-templated.conf:1 value ${HTTPD_ADMIN_PORT}",
        ],
        &[
            "/usr/local/apache2/conf/extra/httpd-templated.conf:2: include of \"conf/sites/${SITE}.conf\" is a template (unresolved); not followed",
        ],
    );
}

#[test]
fn mariadb_debian_alternatives_includedir_and_include() {
    check(
        "mariadb-debian",
        "mariadb",
        None,
        &["3307/tcp - listens /etc/mysql/mariadb.conf.d/60-local.cnf:3"],
        &[],
    );
    let report = report_of(&fixtures().join("mariadb-debian"), None);
    let mariadb = app(&report, "mariadb");
    assert_eq!(
        mariadb.configs,
        [
            "/etc/mysql/my.cnf",
            "/etc/mysql/conf.d/mysql.cnf",
            "/etc/mysql/conf.d/mysqldump.cnf",
            "/etc/mysql/mariadb.conf.d/50-server.cnf",
            "/etc/mysql/mariadb.conf.d/60-local.cnf",
            "/etc/mysql/extra/tuning.cnf",
        ]
    );
    let found: Vec<&str> = mariadb.found.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(found, ["/usr/sbin/mariadbd", "/usr/sbin/mysqld"]);
    // `mysqld` is MySQL's name too (the feed's README says so): both apps are listed.
    assert_eq!(
        ports(app(&report, "mysql")),
        [
            "3307/tcp - listens /etc/mysql/mariadb.conf.d/60-local.cnf:3 (classic)",
            "33060/tcp - listens default (x-protocol)",
        ]
    );
}

#[test]
fn mysql_official_ports_and_an_include_loop() {
    check(
        "mysql-official",
        "mysql",
        None,
        &[
            "3306/tcp - listens /etc/mysql/conf.d/ports.cnf:2 (classic)",
            "33061/tcp - listens /etc/mysql/conf.d/ports.cnf:3 (x-protocol)",
        ],
        &["/etc/mysql/conf.d/zz-loop.cnf:2: include loop: /etc/my.cnf is already being read"],
    );
    check(
        "mysql-official",
        "mysql",
        Some("docker-entrypoint.sh mysqld --mysqlx-port=33070 -P 3310"),
        &[
            "3310/tcp - listens argv -P 3310 (classic)",
            "3306/tcp - overridden /etc/mysql/conf.d/ports.cnf:2 (classic) by argv -P 3310",
            "33070/tcp - listens argv --mysqlx-port=33070 (x-protocol)",
            "33061/tcp - overridden /etc/mysql/conf.d/ports.cnf:3 (x-protocol) by argv --mysqlx-port=33070",
        ],
        &["include loop"],
    );
}

#[test]
fn redis_debian_later_lines_win_and_commented_keys() {
    check(
        "redis-debian",
        "redis",
        None,
        &[
            "6379/tcp - overridden /etc/redis/redis.conf:22 by /etc/redis/local.d/10-port.conf:1",
            "6380/tcp - listens /etc/redis/local.d/10-port.conf:1",
            "6381/tcp - listens /etc/redis/local.d/10-port.conf:2 (tls)",
        ],
        &[],
    );
    // The command line names the config file and overrides its port.
    check(
        "redis-debian",
        "redis",
        Some("redis-server /etc/redis/redis.conf --port 7777"),
        &[
            "7777/tcp - listens argv --port 7777",
            "6379/tcp - overridden /etc/redis/redis.conf:22 by argv --port 7777",
            "6380/tcp - overridden /etc/redis/local.d/10-port.conf:1 by argv --port 7777",
            "6381/tcp - listens /etc/redis/local.d/10-port.conf:2 (tls)",
        ],
        &[],
    );
}

#[test]
fn mongodb_yaml_wins_over_the_legacy_default() {
    check(
        "mongodb",
        "mongodb",
        None,
        &["27018/tcp - listens /etc/mongod.conf:18"],
        &[],
    );
    check(
        "mongodb",
        "mongodb",
        Some("mongod --config /etc/mongod.conf --port 27777"),
        &[
            "27777/tcp - listens argv --port 27777",
            "27018/tcp - overridden /etc/mongod.conf:18 by argv --port 27777",
        ],
        &[],
    );
}

#[test]
fn elasticsearch_templates_are_unresolved_and_flags_with_keys() {
    check(
        "elasticsearch",
        "elasticsearch",
        None,
        &[
            "?/tcp - unresolved /usr/share/elasticsearch/config/elasticsearch.yml:22 (http) value ${ES_HTTP_PORT}",
            "9301/tcp - listens /usr/share/elasticsearch/config/elasticsearch.yml:24 (transport)",
        ],
        &[],
    );
    check(
        "elasticsearch",
        "elasticsearch",
        Some("/usr/share/elasticsearch/bin/elasticsearch -Ecluster.name=x -E http.port=9201"),
        &[
            "9201/tcp - listens argv -E http.port=9201 (http)",
            "?/tcp - overridden /usr/share/elasticsearch/config/elasticsearch.yml:22 (http) value ${ES_HTTP_PORT} by argv -E http.port=9201",
            "9301/tcp - listens /usr/share/elasticsearch/config/elasticsearch.yml:24 (transport)",
        ],
        &[],
    );
}

#[test]
fn kibana_commented_out_port_is_the_default() {
    check(
        "kibana",
        "kibana",
        None,
        &[
            "5601/tcp - listens default (commented out at /usr/share/kibana/config/kibana.yml:6) (http)",
        ],
        &[],
    );
}

#[test]
fn tomcat_connectors_and_commented_ones() {
    check(
        "tomcat-official",
        "tomcat",
        None,
        &[
            "8080/tcp - listens /usr/local/tomcat/conf/server.xml:11 (connector)",
            "8005/tcp - listens /usr/local/tomcat/conf/server.xml:3 (shutdown)",
        ],
        &[],
    );
}

#[test]
fn bad_inputs_are_reported_not_fatal() {
    check(
        "redis-bad-inputs",
        "redis",
        None,
        &[
            "6379/tcp - overridden /etc/redis/redis.conf:2 by /etc/redis/latin1.conf:2",
            "6390/tcp - listens /etc/redis/latin1.conf:2",
        ],
        &[
            "/etc/redis.conf: more than 40 symbolic links to follow",
            "/etc/redis/latin1.conf: not UTF-8 text (byte 13); read with replacement characters",
            "/etc/redis/redis.conf:4: include /etc/redis/conf.d: a directory, not a file",
            "/etc/redis/redis.conf:5: include of \"/etc/redis/${REDIS_ENV}.conf\" is a template (unresolved); not followed",
            "/etc/redis/redis.conf:6: include /etc/redis/absent.conf: no such file",
            "/etc/redis/redis.conf:7: unbalanced quotes; line skipped",
        ],
    );
}

/// Files made at test time: too big to commit, or too many.
#[test]
fn huge_files_and_deep_includes_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let write = |path: &str, data: &[u8]| {
        let target = root.join(path);
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        fs::write(&target, data).unwrap();
    };
    write("usr/bin/redis-server", b"#!/bin/sh\n");
    fs::set_permissions(
        root.join("usr/bin/redis-server"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let mut huge = b"port 6390\n".to_vec();
    huge.resize(2 << 20, b'#');
    write("etc/redis/huge.conf", &huge);
    // A chain of 20 includes: deeper than the bound of 16.
    write(
        "etc/redis/redis.conf",
        b"include /etc/redis/huge.conf\ninclude /etc/redis/d1.conf\n",
    );
    for i in 1..=20 {
        write(
            &format!("etc/redis/d{i}.conf"),
            format!("port {}\ninclude /etc/redis/d{}.conf\n", 7000 + i, i + 1).as_bytes(),
        );
    }
    let report = report_of(root, None);
    let redis = app(&report, "redis");
    assert_eq!(
        redis.problems[0],
        "/etc/redis/redis.conf:1: /etc/redis/huge.conf: 2097152 bytes, over the 1048576-byte cap for a config file; not read"
    );
    assert_eq!(
        redis.problems[1],
        "/etc/redis/d16.conf:2: includes nested deeper than 16: /etc/redis/d17.conf not read"
    );
    assert_eq!(redis.problems.len(), 2, "{:#?}", redis.problems);
    // The deepest file read wins, as redis would have it up to there.
    let listening: Vec<String> = ports(redis)
        .into_iter()
        .filter(|p| p.contains("listens"))
        .collect();
    assert_eq!(listening, ["7016/tcp - listens /etc/redis/d16.conf:1"]);
}

/// One image with nginx, redis and MongoDB: each config says one port, EXPOSE says
/// others, and the Cmd (a shell script) overrides redis and MongoDB with `--port`.
fn three_apps() -> Vec<Item> {
    vec![
        exec("usr/sbin/nginx", "#!/bin/sh\n"),
        exec("usr/local/bin/redis-server", "#!/bin/sh\n"),
        exec("usr/bin/mongod", "#!/bin/sh\n"),
        file(
            "etc/nginx/nginx.conf",
            "events {}\nhttp {\n    include conf.d/*.conf;\n}\n",
        ),
        file(
            "etc/nginx/conf.d/default.conf",
            "server {\n    listen 8080;\n    listen [::]:8080;\n}\n",
        ),
        file("etc/redis.conf", "bind 0.0.0.0\nport 6380\n"),
        file(
            "etc/mongo/mongod.conf",
            "net:\n  port: 27018\n  bindIp: 0.0.0.0\n",
        ),
    ]
}

const THREE_APPS_CMD: &str = "nginx; redis-server /etc/redis.conf --port 7777 & exec mongod --config /etc/mongo/mongod.conf --port 27777";

fn three_apps_config() -> String {
    serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "ExposedPorts": { "80/tcp": {}, "6379/tcp": {}, "27017/tcp": {}, "8080/tcp": {} },
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Entrypoint": ["/bin/sh", "-c"],
            "Cmd": [THREE_APPS_CMD]
        },
        "rootfs": { "type": "layers", "diff_ids": [] }
    })
    .to_string()
}

fn expected_three_apps(exposed: bool) -> [Vec<String>; 3] {
    let e = |s: &str| {
        if exposed {
            format!("{s} EXPOSE")
        } else {
            s.to_owned()
        }
    };
    [
        vec![
            e("8080/tcp - listens /etc/nginx/conf.d/default.conf:2 (http) in http > server"),
            e("8080/tcp :: listens /etc/nginx/conf.d/default.conf:3 (http) in http > server"),
        ],
        vec![
            "7777/tcp - listens argv --port 7777".to_owned(),
            "6380/tcp - overridden /etc/redis.conf:2 by argv --port 7777".to_owned(),
        ],
        vec![
            "27777/tcp - listens argv --port 27777".to_owned(),
            "27018/tcp - overridden /etc/mongo/mongod.conf:2 by argv --port 27777".to_owned(),
        ],
    ]
}

#[test]
fn a_docker_save_image_config_expose_and_cmd_disagree() {
    let dir = tempfile::tempdir().unwrap();
    let items = three_apps();
    // Two layers: the second changes redis's config, as an image built FROM another would.
    let (first, second) = items.split_at(5);
    let mut second = second.to_vec();
    second.push(file("etc/redis.conf", "bind 0.0.0.0\nport 6380\n"));
    let save = docker_save(
        &[tar(first), tar(&second)],
        &three_apps_config(),
        &["example/three:1"],
    );
    let path = dir.path().join("save.tar");
    fs::write(&path, save).unwrap();

    let report = report_of(&path, None);
    let command = report.command.as_ref().unwrap();
    assert_eq!(command.from, "image");
    assert_eq!(command.argv, ["/bin/sh", "-c", THREE_APPS_CMD]);
    let [nginx, redis, mongodb] = expected_three_apps(true);
    assert_eq!(ports(app(&report, "nginx")), nginx);
    assert_eq!(ports(app(&report, "redis")), redis);
    assert_eq!(ports(app(&report, "mongodb")), mongodb);
    assert_eq!(
        app(&report, "redis").runs.as_deref().unwrap(),
        ["redis-server", "/etc/redis.conf", "--port", "7777"]
    );
    assert!(app(&report, "nginx").runs.is_some());
    // EXPOSE: what each says, and who listens there.
    let exposed: Vec<String> = report
        .exposed
        .iter()
        .map(|e| format!("{} {} [{}]", e.port, e.evidence, e.apps.join(",")))
        .collect();
    assert_eq!(
        exposed,
        [
            "27017 EXPOSE 27017/tcp []",
            "6379 EXPOSE 6379/tcp []",
            "80 EXPOSE 80/tcp []",
            "8080 EXPOSE 8080/tcp [nginx]",
        ]
    );
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[test]
fn a_flat_tar_has_no_command_until_one_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("export.tar.gz");
    fs::write(&path, gzip(&tar(&three_apps()))).unwrap();

    // No image config: the files and the defaults only.
    let report = report_of(&path, None);
    assert!(report.command.is_none() && report.exposed.is_empty());
    assert_eq!(
        ports(app(&report, "redis")),
        ["6380/tcp - listens /etc/redis.conf:2"]
    );
    assert_eq!(
        ports(app(&report, "mongodb")),
        ["27018/tcp - listens /etc/mongo/mongod.conf:2"]
    );

    // The same command line by hand reads the same as the image's.
    let report = report_of(&path, Some(&format!("sh -c '{THREE_APPS_CMD}'")));
    assert_eq!(report.command.as_ref().unwrap().from, "cmd");
    let [nginx, redis, mongodb] = expected_three_apps(false);
    assert_eq!(ports(app(&report, "nginx")), nginx);
    assert_eq!(ports(app(&report, "redis")), redis);
    assert_eq!(ports(app(&report, "mongodb")), mongodb);
}

#[test]
fn knowledge_loads_from_every_layout_and_refuses_bad_documents() {
    let apps_dir = sample_feeds().join("apps");
    let count = fs::read_dir(&apps_dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "json")
        })
        .count();
    for dir in [sample_feeds(), apps_dir.clone()] {
        let knowledge = Knowledge::load_dir(&dir).unwrap();
        assert_eq!(knowledge.apps().len(), count);
        assert_eq!(knowledge.source(), apps_dir);
    }
    // An unpacked bundle: feeds/apps/ below it.
    let bundle = tempfile::tempdir().unwrap();
    let feeds = bundle.path().join("feeds/apps");
    fs::create_dir_all(&feeds).unwrap();
    fs::copy(apps_dir.join("redis.json"), feeds.join("redis.json")).unwrap();
    assert_eq!(Knowledge::load_dir(bundle.path()).unwrap().apps().len(), 1);

    fs::write(
        feeds.join("nginx.json"),
        fs::read(apps_dir.join("redis.json")).unwrap(),
    )
    .unwrap();
    let err = Knowledge::load_dir(bundle.path()).unwrap_err().to_string();
    assert!(
        err.ends_with("nginx.json: app id \"redis\" must equal the file name \"nginx\""),
        "{err}"
    );
    fs::write(feeds.join("nginx.json"), "{\"id\": \"nginx\"").unwrap();
    let err = Knowledge::load_dir(bundle.path()).unwrap_err().to_string();
    assert!(err.contains("nginx.json: EOF while parsing"), "{err}");

    let empty = tempfile::tempdir().unwrap();
    let err = Knowledge::load_dir(empty.path()).unwrap_err().to_string();
    assert!(err.contains("no app documents (*.json)"), "{err}");
}

fn agent(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_defender-lite"))
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[test]
fn cli_prints_a_table_and_json() {
    let image = fixtures().join("redis-debian");
    let feeds = sample_feeds();
    let out = agent(&[
        "apps",
        image.to_str().unwrap(),
        "--feeds",
        feeds.to_str().unwrap(),
        "--cmd",
        "redis-server /etc/redis/redis.conf --port 7777",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let table = text(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[2].starts_with("command: redis-server /etc/redis/redis.conf --port 7777 (--cmd)"),
        "{table}"
    );
    assert_eq!(
        lines[4].split_whitespace().collect::<Vec<_>>(),
        [
            "APP", "PORT", "PROTO", "ADDRESS", "STATUS", "LABEL", "EVIDENCE"
        ]
    );
    assert!(
        table.contains("redis  7777  tcp    -        listens     -      argv --port 7777\n"),
        "{table}"
    );
    assert!(
        table.contains("redis  6380  tcp    -        overridden  -      /etc/redis/local.d/10-port.conf:1 (overridden by argv --port 7777)\n"),
        "{table}"
    );
    assert!(
        table.contains("redis (Redis): found /usr/bin/redis-server\n"),
        "{table}"
    );

    let out = agent(&[
        "apps",
        fixtures().join("httpd-official").to_str().unwrap(),
        "--feeds",
        feeds.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["image_kind"], "directory");
    assert_eq!(json["command"], serde_json::Value::Null);
    let apache = &json["apps"][0];
    assert_eq!(apache["id"], "apache");
    assert_eq!(apache["found"][0]["kind"], "executable");
    assert_eq!(apache["found"][0]["path"], "/usr/local/apache2/bin/httpd");
    assert_eq!(
        apache["ports"][1],
        serde_json::json!({
            "port": 8443,
            "protocol": "tcp",
            "address": "2001:db8::1",
            "label": null,
            "status": "conditional",
            "evidence": { "kind": "file", "path": "/usr/local/apache2/conf/extra/httpd-ssl.conf", "line": 5 },
            "condition": "<IfModule ssl_module>",
            "context": null,
            "value": null,
            "overridden_by": null,
            "exposed": false
        })
    );
    assert_eq!(apache["ports"][4]["port"], serde_json::Value::Null);
    assert_eq!(apache["ports"][4]["value"], "${HTTPD_ADMIN_PORT}");
    assert!(apache["problems"][0].as_str().unwrap().contains("template"));
}

#[test]
fn cli_errors_exit_2_with_a_clear_message() {
    let feeds = sample_feeds();
    let feeds = feeds.to_str().unwrap();
    // An image that cannot be read.
    let out = agent(&["apps", "/nonexistent/image.tar", "--feeds", feeds]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stderr).starts_with("error: opening image /nonexistent/image.tar: "));
    // A command line that cannot be split.
    let image = fixtures().join("kibana");
    let out = agent(&[
        "apps",
        image.to_str().unwrap(),
        "--feeds",
        feeds,
        "--cmd",
        "kibana '",
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stderr).contains("--cmd: cannot split"), "{out:?}");

    // No bundle applied yet.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    fs::write(
        &config,
        "data_dir = \"data\"\n[trust]\nkeys = [\"origin.pub\"]\n",
    )
    .unwrap();
    let out = agent(&[
        "apps",
        image.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = text(&out.stderr);
    assert!(
        err.contains("no bundle applied yet") && err.contains("defender-lite sync"),
        "{err}"
    );

    // Applied: the bundle's app index (written when sync applied it) is used.
    let bundle_dir = dir.path().join("data/bundles/1-abc");
    fs::create_dir_all(bundle_dir.join("index")).unwrap();
    let kibana = fs::read_to_string(sample_feeds().join("apps/kibana.json")).unwrap();
    fs::write(bundle_dir.join("index/apps.json"), format!("[{kibana}]")).unwrap();
    let state = serde_json::json!({
        "current": {
            "sequence": 1,
            "sha256": "00".repeat(32),
            "created": "2026-01-01T00:00:00Z",
            "expires": "2036-01-01T00:00:00Z",
            "origin": "test",
            "source": "file",
            "applied_at": "2026-01-01T00:00:00Z",
            "dir": "bundles/1-abc"
        }
    });
    fs::write(dir.path().join("data/state.json"), state.to_string()).unwrap();
    let out = agent(&[
        "apps",
        image.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--cmd",
        "kibana --port 5602",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let table = text(&out.stdout);
    assert!(
        table.contains("kibana  5602  tcp    -        listens  http   argv --port 5602\n"),
        "{table}"
    );
}
