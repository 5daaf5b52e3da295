//! Each app config reader (`keyword`, `ini`, `yaml`, `xml`, `nginx`, `apache`) and the
//! command line reader, as `defender-lite apps` runs them: `apps::examine` on a directory
//! image holding one of the app fixtures, with the sample feed's app knowledge.
//!
//! Input: the first byte picks a case; in a config case the rest replaces the case's main
//! config file (its includes can name the fixture's other files), in the command line
//! case the rest is a `--cmd` line run against the case the second byte picks.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use defender_lite::apps::{self, CommandLine, Knowledge};
use defender_lite::image::Image;
use libfuzzer_sys::fuzz_target;

/// (fixture directory under defender-lite/tests/fixtures/apps, main config file, app):
/// keyword (redis), ini with `!includedir` (mariadb, mysql, mongodb's old format), yaml
/// (mongodb, elasticsearch), xml (tomcat), nginx, apache (Debian's and the official
/// image's layouts).
const CASES: [(&str, &str, &str); 10] = [
    ("redis-debian", "etc/redis/redis.conf", "redis"),
    ("mariadb-debian", "etc/mysql/mariadb.cnf", "mariadb"),
    ("mysql-official", "etc/my.cnf", "mysql"),
    ("mongodb", "etc/mongod.conf", "mongodb"),
    ("mongodb", "etc/mongodb.conf", "mongodb"),
    (
        "elasticsearch",
        "usr/share/elasticsearch/config/elasticsearch.yml",
        "elasticsearch",
    ),
    (
        "tomcat-official",
        "usr/local/tomcat/conf/server.xml",
        "tomcat",
    ),
    ("nginx-debian", "etc/nginx/nginx.conf", "nginx"),
    ("apache-debian", "etc/apache2/apache2.conf", "apache"),
    (
        "httpd-official",
        "usr/local/apache2/conf/httpd.conf",
        "apache",
    ),
];

/// Per case: the image directory, the main config's original bytes, and the knowledge
/// of the case's app only (detecting all fourteen would be most of the work).
struct Case {
    dir: PathBuf,
    original: Vec<u8>,
    knowledge: Knowledge,
}

fn cases() -> &'static [Case] {
    static CASES_READY: OnceLock<Vec<Case>> = OnceLock::new();
    CASES_READY.get_or_init(|| {
        let knowledge = Knowledge::load_dir(&fuzz::repo("relay/samples/feeds/apps"))
            .expect("loading the sample app knowledge");
        let base = fuzz::scratch_dir();
        CASES
            .iter()
            .enumerate()
            .map(|(i, (fixture, main, app))| {
                let dir = base.join(i.to_string());
                for (rel, bytes) in
                    fuzz::fixture_tree(&format!("defender-lite/tests/fixtures/apps/{fixture}"))
                {
                    let path = dir.join(&rel);
                    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                    std::fs::write(&path, bytes).unwrap();
                    if rel.contains("/bin/") || rel.contains("/sbin/") {
                        use std::os::unix::fs::PermissionsExt;
                        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                            .unwrap();
                    }
                }
                let original = std::fs::read(dir.join(main)).unwrap();
                let specs = knowledge
                    .apps()
                    .iter()
                    .filter(|a| a.id.as_str() == *app)
                    .cloned();
                Case {
                    dir,
                    original,
                    knowledge: Knowledge::from_specs(
                        specs.collect(),
                        knowledge.source().to_owned(),
                    ),
                }
            })
            .collect()
    })
}

fn seeds() -> Vec<fuzz::Seed> {
    let mut out = Vec::new();
    for (i, (fixture, main, _)) in CASES.iter().enumerate() {
        let mut input = vec![i as u8];
        input.extend(fuzz::fixture(&format!(
            "defender-lite/tests/fixtures/apps/{fixture}/{main}"
        )));
        out.push((fuzz::seed_name(&format!("{fixture}/{main}")), input));
    }
    let commands: [(usize, &str); 5] = [
        (
            0,
            "redis-server /etc/redis/redis.conf --port 7777 --tls-port 6380",
        ),
        (
            3,
            "mongod --config /etc/mongod.conf --port=27018 --bind_ip 0.0.0.0",
        ),
        (7, "sh -c 'nginx -g \"daemon off; listen 8080;\"'"),
        (2, "mysqld --defaults-file=/etc/my.cnf -P 3307"),
        (
            9,
            "/usr/local/apache2/bin/httpd -DFOREGROUND -f conf/httpd.conf",
        ),
    ];
    for (case, line) in commands {
        let mut input = vec![CASES.len() as u8, case as u8];
        input.extend_from_slice(line.as_bytes());
        out.push((fuzz::seed_name(&format!("cmd-{line}")), input));
    }
    out
}

fuzz_target!(init: fuzz::seeds(seeds), |data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let cases = cases();
    let pick = usize::from(pick) % (CASES.len() + 1);
    let (case, config, command) = if pick < CASES.len() {
        (pick, rest, CommandLine::FromImage)
    } else {
        let Some((&case, line)) = rest.split_first() else {
            return;
        };
        let case = usize::from(case) % CASES.len();
        let Ok(words) = apps::split_command(&String::from_utf8_lossy(line)) else {
            return;
        };
        (case, &cases[case].original[..], CommandLine::Given(words))
    };
    let dir = &cases[case].dir;
    std::fs::write(dir.join(CASES[case].1), config).expect("writing the config file");
    let Ok(image) = Image::open(dir) else {
        return;
    };
    let report = apps::examine(&image, "fuzz", &cases[case].knowledge, command);
    let _ = apps::table(&report);
    let _ = serde_json::to_string(&report);
});
