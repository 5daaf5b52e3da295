//! The deployment files in `deploy/`, checked on one machine without a cluster, a container
//! engine or a booted systemd: the Kubernetes manifests against the API schemas
//! (`kubernetes-validate --strict`) and against the relay's own config loader and CLI, with
//! the init container's script run on the ConfigMap and Secret as the kubelet would mount
//! them; the systemd units with `systemd-analyze verify`; the Containerfile's inputs and
//! outputs against the workspace. `tests/run` installs the two external validators; the
//! tests fail, never skip, when one is missing.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use clap::Parser;
use end_to_end::{binary, free_port, workspace_root};
use serde::Deserialize;
use serde_norway::Value;

const RELAY_PORT: u64 = 8083;
const PING: &str = "/api/v1/_ping";

#[test]
fn kubernetes_manifests_pass_the_strict_schema_validator() {
    let files = kubernetes_files();
    let out = kubernetes_validate(&files);
    let text = show(&out);
    assert!(
        out.status.success(),
        "kubernetes-validate --strict:\n{text}"
    );
    // Every document was looked at, not skipped as an unknown kind.
    for (file, doc) in documents() {
        let passed = format!(
            "passed for resource {}/{}",
            str_at(&doc, "kind").to_lowercase(),
            str_at(&doc["metadata"], "name")
        );
        assert!(
            text.contains(&passed),
            "{}: no `{passed}` in:\n{text}",
            file.display()
        );
    }
}

#[test]
fn the_schema_validator_rejects_an_unknown_field() {
    // The control for the test above: a misspelt probe field must fail it.
    let text = fs::read_to_string(deploy_dir().join("kubernetes/relay.yaml")).unwrap();
    let broken = text.replacen("path: /api/v1/_ping", "paht: /api/v1/_ping", 1);
    assert_ne!(broken, text);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("relay.yaml");
    fs::write(&file, broken).unwrap();
    let out = kubernetes_validate(&[file]);
    let text = show(&out);
    assert!(!out.status.success(), "a misspelt field passed:\n{text}");
    assert!(text.contains("'paht' was unexpected"), "{text}");
}

#[test]
fn the_configmap_config_loads_with_the_relay_loader() {
    let docs = documents();
    let toml = configmap_file(&docs, "relay.toml");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    fs::write(&path, toml).unwrap();
    // The real loader: deny_unknown_fields, so a key the relay does not have fails here.
    let config = relay::config::Config::load(Some(&path), Vec::new()).unwrap();
    assert_eq!(config.listen.address.port(), RELAY_PORT as u16);
    assert!(
        config.listen.address.ip().is_unspecified(),
        "the pod must listen beyond loopback: {}",
        config.listen.address
    );
    assert!(!config.listen.insecure_http);
    let [source] = config.sources.as_slice() else {
        panic!("expected one source, central: {:?}", config.sources);
    };
    assert_eq!(source.kind, relay::client::SourceKind::Upstream);
    assert!(source.url.starts_with("https://"), "{}", source.url);
    assert!(source.ca.is_some(), "central's CA comes from the Secret");
    // Uploads to a Service reach one replica only: replicas pull, central takes uploads.
    assert!(config.auth.uploaders.is_empty() && config.auth.admins.is_empty());
    assert!(
        !config.trust.keys.is_empty(),
        "bundles from central need the origin's key"
    );
}

#[test]
fn the_relay_reads_the_config_the_init_container_renders() {
    let docs = documents();
    let secret_token = secret_value(&docs, "relay-secrets", "central-token");
    let pod = Pod::new(&docs);
    let rendered = pod.render(&secret_token);
    assert!(rendered.out.status.success(), "{}", show(&rendered.out));

    // The relay container's command, parsed by the relay's own CLI.
    let relay = pod.container("relay");
    let argv = command_line(relay);
    let cli = relay::cli::Cli::try_parse_from(&argv)
        .unwrap_or_else(|e| panic!("{argv:?} is not a relay command line: {e}"));
    let relay::cli::Command::Serve(serve) = cli.command else {
        panic!("{argv:?} does not run `relay serve`");
    };
    assert!(
        serve.listen.is_none() && serve.data_dir.is_none() && !serve.insecure_http,
        "{argv:?}: flags would override the ConfigMap"
    );
    let config_path = serve.config.expect("serve --config FILE");
    let config_path = config_path.to_str().unwrap();
    // --config names the file the init container wrote, through the volume they share.
    let on_disk = pod
        .host_path(relay, config_path)
        .unwrap_or_else(|| panic!("--config {config_path} is not on a volume of the container"));
    assert_eq!(
        rendered.written,
        std::slice::from_ref(&on_disk),
        "--config {config_path} is not the file the init container wrote"
    );

    let config = relay::config::Config::load(Some(&on_disk), Vec::new()).unwrap();
    let token = config.sources[0].token.as_ref().expect("central's token");
    assert_eq!(token.expose(), secret_token);
    assert!(
        !fs::read_to_string(&on_disk)
            .unwrap()
            .contains("@CENTRAL_TOKEN@")
    );

    // Every file the config names is a key of a ConfigMap or Secret mounted there.
    let mut files: Vec<PathBuf> = vec![config.tls_cert(), config.tls_key(), config.htpasswd()];
    files.extend(config.trust.keys.iter().cloned());
    files.extend(config.sources.iter().filter_map(|s| s.ca.clone()));
    for file in files {
        let name = file.to_str().unwrap();
        let host = pod
            .host_path(relay, name)
            .unwrap_or_else(|| panic!("{name} is on no volume of the relay container"));
        assert!(
            host.is_file(),
            "{name}: no such key in the mounted ConfigMap or Secret"
        );
    }
    // The data directory is this replica's own emptyDir (no shared store).
    let data = config.data_dir().to_str().unwrap();
    let (volume, _) = pod.mount_of(relay, data).expect("data_dir on a volume");
    assert!(
        pod.volume(volume)["emptyDir"].is_mapping(),
        "data_dir {data} must be an emptyDir, not a shared volume"
    );
}

#[test]
fn the_init_container_refuses_a_token_that_would_change_the_config() {
    let docs = documents();
    for token in ["", "rt_x\"\nadmins = [\"me\"]\n#", "rt_a/b&c"] {
        let rendered = Pod::new(&docs).render(token);
        assert!(!rendered.out.status.success(), "{token:?} was accepted");
        assert!(
            rendered.written.is_empty(),
            "{token:?}: wrote {:?}",
            rendered.written
        );
    }
}

#[test]
fn service_links_stay_off_because_the_relay_reads_every_relay_variable() {
    let docs = documents();
    let pod = Pod::new(&docs);
    assert_eq!(
        pod.spec["enableServiceLinks"].as_bool(),
        Some(false),
        "the Service `relay` would put RELAY_SERVICE_HOST and RELAY_PORT into the pod"
    );
    // Why: the loader takes RELAY_<SECTION>_<KEY> as settings and refuses unknown ones.
    let toml = configmap_file(&docs, "relay.toml");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    fs::write(&path, toml).unwrap();
    let injected = vec![("RELAY_SERVICE_HOST".to_owned(), "127.0.0.1".to_owned())];
    assert!(relay::config::Config::load(Some(&path), injected).is_err());
    for container in pod.containers() {
        for var in seq(&container["env"]) {
            let name = str_at(var, "name");
            assert!(
                !name.starts_with("RELAY_"),
                "{name} would be read as a setting"
            );
        }
    }
}

#[test]
fn replicas_probe_ping_over_https_behind_one_service() {
    let docs = documents();
    let deployment = find(&docs, "Deployment", "relay");
    assert_eq!(deployment["spec"]["replicas"].as_u64(), Some(3));
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert_selects(&deployment["spec"]["selector"]["matchLabels"], labels);

    let pod = Pod::new(&docs);
    let relay = pod.container("relay");
    for probe in ["readinessProbe", "livenessProbe"] {
        let get = &relay[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(PING), "{probe}");
        assert_eq!(get["scheme"].as_str(), Some("HTTPS"), "{probe}");
        assert_eq!(container_port(relay, &get["port"]), RELAY_PORT, "{probe}");
    }

    let service = find(&docs, "Service", "relay");
    assert_selects(&service["spec"]["selector"], labels);
    let [port] = seq(&service["spec"]["ports"]) else {
        panic!("one port");
    };
    assert_eq!(port["port"].as_u64(), Some(RELAY_PORT));
    assert_eq!(container_port(relay, &port["targetPort"]), RELAY_PORT);
}

#[test]
fn pods_run_unprivileged_on_a_read_only_root() {
    let docs = documents();
    let pod = Pod::new(&docs);
    let security = &pod.spec["securityContext"];
    assert_eq!(security["runAsNonRoot"].as_bool(), Some(true));
    assert_ne!(security["runAsUser"].as_u64().expect("runAsUser"), 0);
    for container in pod.containers() {
        let name = str_at(container, "name");
        let c = &container["securityContext"];
        assert_eq!(c["readOnlyRootFilesystem"].as_bool(), Some(true), "{name}");
        assert_eq!(
            c["allowPrivilegeEscalation"].as_bool(),
            Some(false),
            "{name}"
        );
        let dropped: Vec<_> = seq(&c["capabilities"]["drop"])
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert_eq!(dropped, ["ALL"], "{name}");
        assert!(
            container["resources"]["limits"]["memory"].is_string(),
            "{name}"
        );
        assert_eq!(
            container["image"],
            pod.container("relay")["image"],
            "{name}: one image for the pod"
        );
    }
}

#[test]
fn systemd_units_verify_cleanly() {
    let units = [
        "relay.service",
        "defender-lite.service",
        "defender-lite-monitor.service",
    ];
    let dir = tempfile::tempdir().unwrap();
    for unit in units {
        let text = fs::read_to_string(deploy_dir().join(unit)).unwrap();
        let (bin, args) = exec_start(&text);
        assert!(
            workspace_binaries().contains(&bin),
            "{unit}: {bin} is not a binary of this workspace"
        );
        if bin == "relay" {
            let argv: Vec<String> = std::iter::once(bin.clone()).chain(args).collect();
            relay::cli::Cli::try_parse_from(&argv)
                .unwrap_or_else(|e| panic!("{unit}: {argv:?}: {e}"));
        } else {
            // The agent's command line, as its own parser reads it: --help on the same
            // subcommand and options exits 0 only when they all exist.
            let out = Command::new(binary(&bin))
                .args(&args)
                .arg("--help")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{unit}: {bin} {args:?}: {}",
                show(&out)
            );
        }
        // verify checks that ExecStart's program exists: point it at the built binary.
        let path = dir.path().join(unit);
        let installed = format!("ExecStart=/usr/bin/{bin} ");
        let built = format!("ExecStart={} ", binary(&bin).display());
        assert!(text.contains(&installed), "{unit}: {installed}");
        fs::write(&path, text.replacen(&installed, &built, 1)).unwrap();
        if let Err(report) = verify_unit(&path) {
            panic!("{unit}:\n{report}");
        }
    }
    let listed: BTreeSet<_> = fs::read_dir(deploy_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".service"))
        .collect();
    assert_eq!(listed, units.into_iter().map(String::from).collect());
}

#[test]
fn the_unit_check_catches_an_unknown_key() {
    // The control for the test above: systemd-analyze exits 0 on an unknown key and only
    // warns, so the check must read its output.
    let text = fs::read_to_string(deploy_dir().join("relay.service")).unwrap();
    let built = format!("ExecStart={} ", binary("relay").display());
    let text = text.replacen("ExecStart=/usr/bin/relay ", &built, 1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.service");
    fs::write(
        &path,
        text.replacen("[Service]\n", "[Service]\nRestartAlways=yes\n", 1),
    )
    .unwrap();
    let report = verify_unit(&path).expect_err("an unknown key passed");
    assert!(report.contains("RestartAlways"), "{report}");
}

#[test]
fn the_containerfile_builds_and_ships_the_workspace_binaries() {
    let root = workspace_root();
    let text = fs::read_to_string(deploy_dir().join("Containerfile")).unwrap();
    let steps = instructions(&text);
    let bins = workspace_binaries();
    let ignored = fs::read_to_string(root.join(".dockerignore")).unwrap();
    assert!(
        ignored.lines().any(|l| l.trim() == "target/"),
        ".dockerignore keeps target/ out"
    );

    let mut workdir = String::new();
    let (mut built, mut shipped) = (BTreeSet::new(), BTreeSet::new());
    for (op, arg) in &steps {
        match op.as_str() {
            "WORKDIR" => workdir = arg.clone(),
            "COPY" if arg.starts_with("--from=build ") => {
                let words: Vec<_> = arg.split_whitespace().skip(1).collect();
                let (_dest, sources) = words.split_last().unwrap();
                for source in sources {
                    let bin = source
                        .strip_prefix(&format!("{workdir}/target/release/"))
                        .unwrap_or_else(|| panic!("COPY {source}: not a release binary"));
                    shipped.insert(bin.to_owned());
                }
            }
            "COPY" => {
                let words: Vec<_> = arg.split_whitespace().collect();
                assert!(!words[0].starts_with("--"), "COPY {arg}");
                let (_dest, sources) = words.split_last().unwrap();
                for source in sources {
                    assert!(
                        root.join(source).exists(),
                        "COPY {source}: not in the repository"
                    );
                    assert!(!source.starts_with("target"), "COPY {source}: ignored");
                }
            }
            "RUN" if arg.contains("cargo build") => {
                for build in arg.split("&&").filter(|c| c.contains("cargo build")) {
                    assert!(
                        build.contains("--release") && build.contains("--locked"),
                        "{build}"
                    );
                    let words: Vec<_> = build.split_whitespace().collect();
                    for pair in words.windows(2).filter(|w| w[0] == "--bin") {
                        built.insert(pair[1].to_owned());
                    }
                }
            }
            _ => {}
        }
    }
    assert_eq!(built, bins, "cargo build --bin names");
    assert_eq!(shipped, bins, "binaries copied into the image");

    let last = |op: &str| {
        steps
            .iter()
            .rev()
            .find(|(o, _)| o == op)
            .map(|(_, a)| a.clone())
            .unwrap_or_else(|| panic!("no {op}"))
    };
    let from: Vec<_> = steps.iter().filter(|(o, _)| o == "FROM").collect();
    assert_eq!(from.len(), 2, "a build stage and a runtime stage: {from:?}");
    assert!(from[0].1.ends_with(" AS build"), "{from:?}");
    assert_eq!(last("EXPOSE"), RELAY_PORT.to_string());
    assert!(
        steps.iter().any(|(o, _)| o == "VOLUME"),
        "the data directory is a volume"
    );
    let entrypoint: Vec<String> = serde_json::from_str(&last("ENTRYPOINT")).unwrap();
    assert_eq!(entrypoint, ["relay"]);
    let cmd: Vec<String> = serde_json::from_str(&last("CMD")).unwrap();
    let argv: Vec<_> = entrypoint.iter().chain(&cmd).collect();
    relay::cli::Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("CMD {argv:?}: {e}"));

    // The image's user is the one the Deployment runs as.
    let user = last("USER");
    let uid: u64 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("a numeric USER");
    assert_ne!(uid, 0);
    let docs = documents();
    let pod = Pod::new(&docs);
    assert_eq!(pod.spec["securityContext"]["runAsUser"].as_u64(), Some(uid));
}

// --- Kubernetes manifests ---------------------------------------------------------------

fn deploy_dir() -> PathBuf {
    workspace_root().join("deploy")
}

fn kubernetes_files() -> Vec<PathBuf> {
    let mut files: Vec<_> = fs::read_dir(deploy_dir().join("kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in deploy/kubernetes");
    files
}

fn kubernetes_validate(files: &[PathBuf]) -> Output {
    Command::new("kubernetes-validate")
        .arg("--strict")
        .args(files)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "kubernetes-validate: {e} (tests/run installs it: pip install kubernetes-validate)"
            )
        })
}

/// Every document of every manifest, with its file.
fn documents() -> Vec<(PathBuf, Value)> {
    let mut docs = Vec::new();
    for file in kubernetes_files() {
        let text = fs::read_to_string(&file).unwrap();
        for doc in serde_norway::Deserializer::from_str(&text) {
            let value = Value::deserialize(doc).unwrap();
            if !value.is_null() {
                docs.push((file.clone(), value));
            }
        }
    }
    docs
}

fn find<'a>(docs: &'a [(PathBuf, Value)], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .map(|(_, d)| d)
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} {name} in deploy/kubernetes"))
}

fn configmap_file(docs: &[(PathBuf, Value)], key: &str) -> String {
    str_at(&find(docs, "ConfigMap", "relay-config")["data"], key).to_owned()
}

fn secret_value(docs: &[(PathBuf, Value)], name: &str, key: &str) -> String {
    let secret = find(docs, "Secret", name);
    assert!(
        secret["data"].is_null(),
        "the example Secret uses stringData"
    );
    str_at(&secret["stringData"], key).to_owned()
}

fn str_at<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key}: not a string in {v:?}"))
}

fn seq(v: &Value) -> &[Value] {
    v.as_sequence().map_or(&[], Vec::as_slice)
}

/// `command` then `args`, as the container runtime joins them.
fn command_line(container: &Value) -> Vec<String> {
    seq(&container["command"])
        .iter()
        .chain(seq(&container["args"]))
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// A port given by number or by the name of one of the container's ports.
fn container_port(container: &Value, port: &Value) -> u64 {
    if let Some(n) = port.as_u64() {
        return n;
    }
    let name = port.as_str().expect("a port number or name");
    seq(&container["ports"])
        .iter()
        .find(|p| p["name"].as_str() == Some(name))
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

fn assert_selects(selector: &Value, labels: &Value) {
    let selector = selector.as_mapping().expect("a selector");
    assert!(!selector.is_empty());
    for (k, v) in selector {
        assert_eq!(
            &labels[k.as_str().unwrap()],
            v,
            "selector {k:?} does not match the pods"
        );
    }
}

/// The relay Deployment's pod, with its volumes laid out in a temp dir as the kubelet
/// would mount them: ConfigMap and Secret keys as files, emptyDirs empty.
struct Pod<'a> {
    spec: &'a Value,
    volumes: BTreeMap<String, PathBuf>,
    _root: tempfile::TempDir,
}

struct Rendered {
    out: Output,
    /// The files it wrote, in the temp dir.
    written: Vec<PathBuf>,
}

impl<'a> Pod<'a> {
    fn new(docs: &'a [(PathBuf, Value)]) -> Self {
        let spec = &find(docs, "Deployment", "relay")["spec"]["template"]["spec"];
        let root = tempfile::tempdir().unwrap();
        let mut volumes = BTreeMap::new();
        for volume in seq(&spec["volumes"]) {
            let name = str_at(volume, "name");
            let dir = root.path().join("volumes").join(name);
            fs::create_dir_all(&dir).unwrap();
            let (data, items) = if volume["emptyDir"].is_mapping() {
                (BTreeMap::new(), &Value::Null)
            } else if let Some(cm) = volume["configMap"].as_mapping() {
                let cm_name = cm["name"].as_str().unwrap();
                let data = &find(docs, "ConfigMap", cm_name)["data"];
                (string_map(data), &volume["configMap"]["items"])
            } else if volume["secret"].is_mapping() {
                let secret_name = str_at(&volume["secret"], "secretName");
                let secret = find(docs, "Secret", secret_name);
                (
                    string_map(&secret["stringData"]),
                    &volume["secret"]["items"],
                )
            } else {
                panic!("volume {name}: only emptyDir, configMap and secret are expected");
            };
            // With `items`, only those keys appear, at their paths.
            let files: Vec<(String, String)> = match items.as_sequence() {
                Some(items) => items
                    .iter()
                    .map(|i| (str_at(i, "key").to_owned(), str_at(i, "path").to_owned()))
                    .collect(),
                None => data.keys().map(|k| (k.clone(), k.clone())).collect(),
            };
            for (key, path) in files {
                let value = data
                    .get(&key)
                    .unwrap_or_else(|| panic!("volume {name}: no key {key}"));
                fs::write(dir.join(path), value).unwrap();
            }
            volumes.insert(name.to_owned(), dir);
        }
        Self {
            spec,
            volumes,
            _root: root,
        }
    }

    fn containers(&self) -> impl Iterator<Item = &'a Value> {
        seq(&self.spec["initContainers"])
            .iter()
            .chain(seq(&self.spec["containers"]))
    }

    fn container(&self, name: &str) -> &'a Value {
        self.containers()
            .find(|c| c["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no container {name}"))
    }

    fn volume(&self, name: &str) -> &'a Value {
        seq(&self.spec["volumes"])
            .iter()
            .find(|v| v["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no volume {name}"))
    }

    /// The mount holding `path` in `container` (the deepest one) and the path inside the
    /// volume.
    fn mount_of(&self, container: &'a Value, path: &str) -> Option<(&'a str, PathBuf)> {
        let mut best: Option<(usize, &'a str, PathBuf)> = None;
        for mount in seq(&container["volumeMounts"]) {
            let at = str_at(mount, "mountPath").trim_end_matches('/');
            let inside = match mount["subPath"].as_str() {
                Some(sub) if path == at => PathBuf::from(sub),
                Some(_) => continue,
                None if path == at => PathBuf::new(),
                None => match path.strip_prefix(at).and_then(|r| r.strip_prefix('/')) {
                    Some(rest) => PathBuf::from(rest),
                    None => continue,
                },
            };
            if best.as_ref().is_none_or(|(len, _, _)| at.len() > *len) {
                best = Some((at.len(), str_at(mount, "name"), inside));
            }
        }
        best.map(|(_, name, inside)| (name, inside))
    }

    /// Where `path` inside `container` lands in the temp dir.
    fn host_path(&self, container: &'a Value, path: &str) -> Option<PathBuf> {
        let (volume, inside) = self.mount_of(container, path)?;
        let dir = self.volumes.get(volume);
        Some(
            dir.unwrap_or_else(|| panic!("undeclared volume {volume}"))
                .join(inside),
        )
    }

    /// Runs the init container's script with its mount paths pointed at the temp dir and
    /// its Secret-backed variable set to `token`.
    fn render(&self, token: &str) -> Rendered {
        let init = self.container("render-config");
        let argv = command_line(init);
        let [shell, flags, script] = argv.as_slice() else {
            panic!("render-config: expected [/bin/sh, -ec, SCRIPT], got {argv:?}");
        };
        assert_eq!((shell.as_str(), flags.as_str()), ("/bin/sh", "-ec"));
        let mut mounts: Vec<_> = seq(&init["volumeMounts"])
            .iter()
            .map(|m| {
                let at = str_at(m, "mountPath").to_owned();
                let host = self.volumes[str_at(m, "name")].display().to_string();
                (at, host)
            })
            .collect();
        // Longest first, so /etc/relay/config is not rewritten as /etc/relay + /config.
        mounts.sort_by_key(|(at, _)| std::cmp::Reverse(at.len()));
        let mut script = script.clone();
        for (at, host) in &mounts {
            script = script.replace(at.as_str(), host);
        }
        let mut cmd = Command::new(shell);
        cmd.arg(flags).arg(&script);
        for var in seq(&init["env"]) {
            let from = &var["valueFrom"]["secretKeyRef"];
            assert_eq!(from["key"].as_str(), Some("central-token"), "{var:?}");
            cmd.env(str_at(var, "name"), token);
        }
        let out = cmd.output().unwrap();
        // What it wrote: the files in the volumes it may write to.
        let mut written = Vec::new();
        for mount in seq(&init["volumeMounts"]) {
            if mount["readOnly"].as_bool() != Some(true) {
                for entry in fs::read_dir(&self.volumes[str_at(mount, "name")]).unwrap() {
                    written.push(entry.unwrap().path());
                }
            }
        }
        Rendered { out, written }
    }
}

fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_mapping()
        .expect("a map of strings")
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().unwrap().to_owned(),
                v.as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

// --- systemd ---------------------------------------------------------------------------

/// `ExecStart=/usr/bin/NAME ARGS...` -> (NAME, ARGS).
fn exec_start(unit: &str) -> (String, Vec<String>) {
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart= line");
    let mut words = line.split_whitespace();
    let program = words.next().unwrap();
    let name = program
        .strip_prefix("/usr/bin/")
        .unwrap_or_else(|| panic!("ExecStart={program}: expected /usr/bin/NAME"));
    (name.to_owned(), words.map(String::from).collect())
}

/// `systemd-analyze verify` on one unit file: Err with its report when it fails or says
/// anything about the unit. It exits 0 on an unknown key or a bad value (it only warns),
/// hence the output check; lines about other units on the machine are not ours to judge.
///
/// No users are created: systemd 252's verify does not resolve `User=` (a unit naming a
/// user this machine lacks verifies with no message and status 0; users are looked up
/// when the service starts), so relay.service's `User=relay` needs no `relay` user here.
fn verify_unit(path: &Path) -> Result<(), String> {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(path)
        .output()
        .unwrap_or_else(|e| {
            panic!("systemd-analyze: {e} (tests/run installs it: Debian package systemd)")
        });
    let name = path.file_name().unwrap().to_str().unwrap();
    let text = show(&out);
    let about_unit: Vec<_> = text.lines().filter(|l| l.contains(name)).collect();
    if out.status.success() && about_unit.is_empty() {
        Ok(())
    } else {
        Err(text)
    }
}

// --- Containerfile and workspace -------------------------------------------------------

/// The Containerfile's instructions: (OP, arguments), continuation lines joined,
/// comments dropped.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut steps = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                let (op, arg) = current.split_once(' ').unwrap_or((&current, ""));
                steps.push((op.to_uppercase(), arg.trim().to_owned()));
                current.clear();
            }
        }
    }
    steps
}

/// The names of the workspace's binaries: `[[bin]]` targets and `src/main.rs`.
fn workspace_binaries() -> BTreeSet<String> {
    let root = workspace_root();
    let manifest = |dir: &Path| -> toml::Table {
        toml::from_str(&fs::read_to_string(dir.join("Cargo.toml")).unwrap()).unwrap()
    };
    let mut bins = BTreeSet::new();
    let workspace = manifest(&root);
    for member in workspace["workspace"]["members"].as_array().unwrap() {
        let dir = root.join(member.as_str().unwrap());
        let package = manifest(&dir);
        if dir.join("src/main.rs").exists() {
            bins.insert(package["package"]["name"].as_str().unwrap().to_owned());
        }
        for bin in package
            .get("bin")
            .and_then(|b| b.as_array())
            .into_iter()
            .flatten()
        {
            bins.insert(bin["name"].as_str().unwrap().to_owned());
        }
    }
    assert!(
        bins.contains("relay") && bins.contains("defender-lite"),
        "{bins:?}"
    );
    bins
}

fn show(out: &Output) -> String {
    format!(
        "status {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `--version` names the commit the binary was built from; `completions bash` is a script
/// that bash really completes with; `man --out-dir` writes a page per command and
/// subcommand that groff reads without a warning. For both binaries: these are what the
/// packages install.
#[test]
fn both_binaries_name_their_commit_and_make_completions_and_man_pages() {
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(workspace_root())
        .output()
        .unwrap();
    assert!(head.status.success(), "{}", show(&head));
    let head = String::from_utf8(head.stdout).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    // (binary, a prefix of one subcommand, what it completes to, a subcommand's page)
    for (bin, prefix, completed, page) in [
        ("relay", "bun", "bundle", "relay-serve.1"),
        ("defender-lite", "sy", "sync", "defender-lite-scan.1"),
    ] {
        let run = |args: &[&str]| {
            let out = Command::new(binary(bin)).args(args).output().unwrap();
            assert!(out.status.success(), "{bin} {args:?}: {}", show(&out));
            String::from_utf8(out.stdout).unwrap()
        };
        assert_eq!(
            run(&["--version"]),
            format!(
                "{bin} {} (commit {})\n",
                env!("CARGO_PKG_VERSION"),
                head.trim()
            )
        );

        let script = scratch.path().join(format!("{bin}.bash"));
        fs::write(&script, run(&["completions", "bash"])).unwrap();
        let completion = Command::new("bash")
            .arg("-c")
            .arg(format!(
                r#"source "$1"
function=$(complete -p {bin} | sed -n 's/.* -F \([^ ]*\) .*/\1/p')
COMP_WORDS=({bin} {prefix}); COMP_CWORD=1; COMP_LINE="{bin} {prefix}"; COMP_POINT=${{#COMP_LINE}}
"$function" {bin} {prefix} {bin}
printf '%s\n' "${{COMPREPLY[@]}}""#
            ))
            .arg("completion")
            .arg(&script)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&completion.stdout),
            format!("{completed}\n"),
            "{}",
            show(&completion)
        );
        assert!(run(&["completions", "zsh"]).starts_with(&format!("#compdef {bin}")));
        assert!(run(&["completions", "fish"]).contains(&format!("complete -c {bin}")));

        let dir = scratch.path().join(format!("man-{bin}"));
        let listed = run(&["man", "--out-dir", dir.to_str().unwrap()]);
        let pages: BTreeSet<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(listed.lines().count(), pages.len(), "{listed}");
        assert!(
            pages.contains(&format!("{bin}.1")) && pages.contains(page),
            "{pages:?}"
        );
        for name in &pages {
            let out = Command::new("groff")
                .args(["-man", "-Tutf8", "-ww", "-z"])
                .arg(dir.join(name))
                .output()
                .expect("groff (groff-base) is installed by tests/run");
            assert!(
                out.status.success() && out.stderr.is_empty(),
                "{name}: {}",
                show(&out)
            );
        }
        let rendered = Command::new("groff")
            .args(["-man", "-Tascii", "-P", "-cbou"])
            .arg(dir.join(page))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&rendered.stdout);
        let stem = page.trim_end_matches(".1");
        assert!(text.contains(&format!("{stem} - ")), "{text}");
        assert!(run(&["man"]).contains(&format!(".TH {bin} 1")));
    }
}

/// The README's section under `## title`, up to the next `## `.
fn readme_section(title: &str) -> String {
    let readme = fs::read_to_string(workspace_root().join("README.md")).unwrap();
    readme
        .split(&format!("\n## {title}\n"))
        .nth(1)
        .unwrap_or_else(|| panic!("the README has the section {title:?}"))
        .split("\n## ")
        .next()
        .unwrap()
        .to_owned()
}

/// The `sh` blocks of a README section, in order.
fn sh_blocks(section: &str) -> Vec<String> {
    section
        .split("```sh\n")
        .skip(1)
        .map(|rest| rest.split("\n```").next().unwrap().to_owned())
        .collect()
}

/// Runs `script` with bash (-euo pipefail) in `dir`, this build's binaries first on PATH,
/// and `env`; fails the test, showing the script and its output, unless it succeeds.
fn run_as_written(script: &str, dir: &Path, env: &[(&str, &Path)]) -> String {
    let bin_dir = binary("relay").parent().unwrap().to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = Command::new("bash");
    command
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(dir)
        .env("PATH", path)
        .env_remove("RELAY_CONFIG")
        .env_remove("RELAY_PASSWORD")
        .env_remove("RELAY_TOKEN");
    for (key, value) in env {
        command.env(key, value);
    }
    let out = command.output().unwrap();
    let text = show(&out);
    assert!(out.status.success(), "{script}\n---\n{text}");
    text
}

/// The README's "Making and checking bundles" block, run as written, in order, in a fresh
/// directory: the build line is the one thing left out (the test's own build made the
/// binaries; `target/release/` is read as this build's directory).
#[test]
fn the_readme_bundle_commands_work_in_the_order_written() {
    let section = readme_section("Making and checking bundles");
    let block = sh_blocks(&section).into_iter().next().expect("a sh block");
    let bin_dir = binary("relay").parent().unwrap().to_owned();
    let script: Vec<String> = block
        .replace("target/release/", &format!("{}/", bin_dir.display()))
        .lines()
        .filter(|l| l.trim() != "cargo build --release")
        .map(str::to_owned)
        .collect();
    assert!(
        script
            .iter()
            .filter(|l| l.contains(&*bin_dir.to_string_lossy()))
            .count()
            >= 5,
        "{script:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    // The block's relative paths are the repository's (relay/samples/feeds).
    std::os::unix::fs::symlink(workspace_root().join("relay"), dir.path().join("relay")).unwrap();
    let text = run_as_written(&script.join("\n"), dir.path(), &[]);
    assert!(
        text.contains("OK ") && text.contains("NOT VERIFIED"),
        "{text}"
    );
}

/// The README's import transcript is real output: its commands run as written (from a
/// directory beside which `../shared/data` is the real data, as from the repository), and
/// every line it shows is printed, `...` standing for what it leaves out.
#[test]
fn the_readme_import_transcript_is_real_output() {
    let section = readme_section("Importing public sources");
    let transcript = section
        .split("```\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("the section has a transcript");
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("repo");
    fs::create_dir(&work).unwrap();
    std::os::unix::fs::symlink(
        workspace_root().join("../shared"),
        dir.path().join("shared"),
    )
    .unwrap();
    let commands: Vec<&str> = transcript
        .lines()
        .filter_map(|l| l.strip_prefix("$ "))
        .collect();
    assert_eq!(commands.len(), 5, "{transcript}");
    let output = run_as_written(&commands.join("\n"), &work, &[]);
    for shown in transcript.lines().filter(|l| !l.starts_with("$ ")) {
        let pieces: Vec<&str> = shown.split("...").filter(|p| !p.is_empty()).collect();
        let printed = output.lines().any(|line| {
            let mut at = 0;
            pieces.iter().all(|piece| match line[at..].find(piece) {
                Some(found) => {
                    at += found + piece.len();
                    true
                }
                None => false,
            })
        });
        assert!(
            printed,
            "the README shows {shown:?}; the commands printed:\n{output}"
        );
    }
}

/// The README's commands for running and operating a relay, as written and in order,
/// against the zero-config relay of its first command (here on a free port): adding users
/// and a token and reloading them; completions and the man page; downloading (API, custom
/// location, from a previous bundle), uploading and pinging; resetting a sequence; status and
/// "push now". Only the README's placeholders are replaced (example hosts, `...` and the
/// like, each with what the relay made); the test fails if one is left in a command, so a new
/// placeholder must be given a value here.
#[test]
fn the_readme_operator_commands_work_against_a_zero_config_relay() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    fs::create_dir(&home).unwrap();
    let (mut serve, port) = zero_config_relay(&binary("relay"), dir.path(), &[]);
    let data = dir.path().join("relay-data");
    let up = ping_once_up(
        &data.join("tls/ca.pem"),
        &format!("https://localhost:{port}/api/v1/_ping"),
    );
    let result = std::panic::catch_unwind(|| {
        assert_eq!(up.as_deref(), Some("OK"), "the relay did not come up");
        operate_as_the_readme_says(dir.path(), &home, port, serve.id())
    });
    let _ = serve.kill();
    let _ = serve.wait();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

fn operate_as_the_readme_says(dir: &Path, home: &Path, port: u16, pid: u32) {
    let data = dir.join("relay-data");
    let generated = fs::read_to_string(data.join("generated-credentials")).unwrap();
    let password_of = |user: &str| {
        generated
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{user}: ")))
            .unwrap_or_else(|| panic!("no {user} in {generated}"))
            .to_owned()
    };
    let (reader, admin) = (password_of("reader"), password_of("admin"));
    let env = [("HOME", home)];

    // "Running a relay": users, a token, a reload.
    fs::write(dir.join("pw.txt"), "a console password of its own\n").unwrap();
    let running = sh_blocks(&readme_section("Running a relay"));
    let block = running[0].replace("$(pidof relay)", &pid.to_string());
    let said = run_as_written(&block, dir, &env);
    let central = said
        .split("password (shown once): ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no password for central: {said}"))
        .to_owned();
    let token = said
        .split_whitespace()
        .find(|w| w.starts_with("rt_"))
        .unwrap_or_else(|| panic!("no token: {said}"))
        .to_owned();

    // What the operator has at hand in the examples: the relay's CA and signing key, under
    // the names the README uses, a previous bundle, and a newer one to upload.
    fs::copy(data.join("tls/ca.pem"), dir.join("ca.pem")).unwrap();
    fs::copy(data.join("keys/local.pub"), dir.join("origin.pub")).unwrap();
    run_as_written(
        &format!(
            "curl -sSf --noproxy '*' --cacert ca.pem -u reader:{reader} \
             https://localhost:{port}/api/v1/feeds/bundle -o yesterday.tar.gz\n\
             relay bundle build --feeds {} --key relay-data/keys/local.pem --sequence 1 \
             --origin my-origin --expires-in 30d -o bundle.tar.gz",
            workspace_root().join("relay/samples/feeds").display()
        ),
        dir,
        &env,
    );

    let address = format!("https://localhost:{port}");
    let placeholders = [
        ("https://relay.example:8083", address.clone()),
        ("https://central.example:8083", address.clone()),
        (
            "https://files.example/intel/bundle.tar.gz",
            format!("{address}/intelligence/bundle.tar.gz"),
        ),
        ("--token rt_...", format!("--token {token}")),
        (
            "--user u --password p",
            format!("--user reader --password {reader}"),
        ),
        (
            "--user central --password ...",
            format!("--user central --password {central}"),
        ),
        (
            "--user reader --password ...",
            format!("--user reader --password {reader}"),
        ),
        (
            "--user admin --password ...",
            format!("--user admin --password {admin}"),
        ),
        (" [--supervisor west]", String::new()),
    ];
    let as_run = |block: &str| {
        let mut script = block.to_owned();
        for (placeholder, value) in &placeholders {
            script = script.replace(placeholder, value);
        }
        for line in script.lines() {
            let command = line.split(" #").next().unwrap_or_default().trim_start();
            if command.starts_with('#') {
                continue;
            }
            assert!(
                !command.contains(".example") && !command.contains("...") && !command.contains('['),
                "a placeholder this test does not fill: {line}"
            );
        }
        run_as_written(&script, dir, &env)
    };

    let tools = sh_blocks(&readme_section("Operator tools"));
    assert_eq!(tools.len(), 2, "{tools:?}");
    let said = as_run(&tools[0]);
    assert!(said.contains("defender-lite"), "{said}");
    let completions =
        fs::read_to_string(home.join(".local/share/bash-completion/completions/relay")).unwrap();
    assert!(completions.contains("complete "), "{completions}");
    let said = as_run(&tools[1]);
    for step in [
        "intel_bundle_0.tar.gz",
        "latest.tar.gz",
        "built from segments",
        "uploaded: sequence 1",
        "ok   auth   reader may read",
    ] {
        assert!(said.contains(step), "{step}: {said}");
    }
    assert!(dir.join("today.tar.gz").is_file());

    let stolen = sh_blocks(&readme_section("A signing key was stolen: what to do"));
    let said = as_run(&stolen[0]);
    assert!(!said.is_empty());

    // Status, then "push now": this relay is no central, so the push is refused (exit 1)
    // with the reason; relay/tests/projects.rs pushes to real supervisors.
    let projects = sh_blocks(&readme_section("Projects: central and supervisors"));
    let (status, push) = projects[0]
        .split_once("\nrelay projects push")
        .expect("status, then push");
    let said = as_run(status);
    assert!(said.contains("current bundle: sequence 1"), "{said}");
    let push = format!("relay projects push{push}\ntest $? = 1 || exit 9");
    let said = as_run(&format!("set +e\n{push}"));
    assert!(
        said.contains("this relay pushes to no supervisor ([[supervisors]] in its config)"),
        "{said}"
    );
}

// --- Debian packages ----------------------------------------------------------------------

/// `deploy/debian/build` packages this build's binaries (`--bin-dir`; cargo-deb, which the
/// script installs when missing), and the packages install into a clean Debian root made by
/// debootstrap (bookworm, minbase, plus systemd for `systemd-analyze`), by apt from the
/// Debian mirror, which brings what they depend on:
/// both binaries run and name their commit; the units pass `systemd-analyze verify` where
/// they are installed; man pages and completions are in their Debian places; the relay's
/// system user, data directory and config (root:relay 0640, a conffile) are made, and an
/// edited config survives a reinstall; and the relay, started as its user with the packaged
/// config, serves its ping over TLS with the development CA it made.
#[test]
fn debian_packages_install_into_a_clean_debian_root_and_run() {
    let bin_dir = binary("relay").parent().unwrap().to_owned();
    let scratch = tempfile::tempdir().unwrap();
    let out_dir = scratch.path().join("debs");
    let build = Command::new(workspace_root().join("deploy/debian/build"))
        .arg("--bin-dir")
        .arg(&bin_dir)
        .env("OUT_DIR", &out_dir)
        .output()
        .unwrap();
    assert!(build.status.success(), "{}", show(&build));
    let mut debs: Vec<PathBuf> = fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    debs.sort();
    let names: Vec<String> = debs
        .iter()
        .map(|d| d.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.len() == 2
            && names[0].starts_with("defender-lite_")
            && names[1].starts_with("relay_"),
        "{names:?}"
    );

    let root = DebianRoot::clean(
        &bin_dir.parent().unwrap().join("debian-rootfs"),
        scratch.path(),
    );
    for deb in &debs {
        fs::copy(deb, root.path.join("tmp").join(deb.file_name().unwrap())).unwrap();
    }
    // As an operator installs a downloaded package: apt resolves what it depends on
    // (procps, libpcap0.8...) from the Debian mirror debootstrap used.
    fs::copy("/etc/resolv.conf", root.path.join("etc/resolv.conf")).unwrap();
    let installed = root.run(&[
        "sh",
        "-c",
        "apt-get update -qq && apt-get install -y -qq /tmp/relay_*.deb /tmp/defender-lite_*.deb",
    ]);
    assert!(installed.status.success(), "{}", show(&installed));

    for bin in ["relay", "defender-lite"] {
        // Installed without debug information (the release profile keeps line tables).
        let file = Command::new("file")
            .arg(root.path.join("usr/bin").join(bin))
            .output()
            .unwrap();
        let file = String::from_utf8_lossy(&file.stdout);
        assert!(
            file.contains("ELF") && !file.contains("with debug_info"),
            "{file}"
        );
        let version = root.run(&[bin, "--version"]);
        assert!(version.status.success(), "{}", show(&version));
        assert!(
            String::from_utf8_lossy(&version.stdout).contains("(commit "),
            "{}",
            show(&version)
        );
    }
    for unit in [
        "relay.service",
        "defender-lite.service",
        "defender-lite-monitor.service",
    ] {
        let path = format!("/usr/lib/systemd/system/{unit}");
        assert!(root.path.join(&path[1..]).is_file(), "{unit} is installed");
        let verify = root.run(&["systemd-analyze", "verify", &path]);
        assert!(
            verify.status.success() && verify.stderr.is_empty(),
            "{unit}: {}",
            show(&verify)
        );
    }
    let unit = fs::read_to_string(root.path.join("usr/lib/systemd/system/relay.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/relay serve"), "{unit}");
    // The agent's config holds a relay credential: root's alone, handed to the service's
    // dynamic user by systemd as a credential (so it need not be world-readable).
    let agent_unit = fs::read_to_string(
        root.path
            .join("usr/lib/systemd/system/defender-lite.service"),
    )
    .unwrap();
    assert!(
        agent_unit
            .contains("LoadCredential=defender-lite.toml:/etc/defender-lite/defender-lite.toml")
            && agent_unit.contains("--config ${CREDENTIALS_DIRECTORY}/defender-lite.toml"),
        "{agent_unit}"
    );
    let agent_config = root.run(&[
        "stat",
        "-c",
        "%U:%G %a",
        "/etc/defender-lite/defender-lite.toml",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&agent_config.stdout),
        "root:root 600\n",
        "{}",
        show(&agent_config)
    );
    for file in [
        "usr/share/man/man1/relay.1.gz",
        "usr/share/man/man1/relay-serve.1.gz",
        "usr/share/man/man1/defender-lite.1.gz",
        "usr/share/man/man1/defender-lite-scan.1.gz",
        "usr/share/bash-completion/completions/relay",
        "usr/share/bash-completion/completions/defender-lite",
        "usr/share/zsh/vendor-completions/_relay",
        "usr/share/fish/vendor_completions.d/defender-lite.fish",
        "usr/share/doc/relay/examples/relay.example.toml",
        "etc/defender-lite/defender-lite.toml",
    ] {
        assert!(root.path.join(file).is_file(), "{file} is installed");
    }

    // The relay's user, data directory and config.
    let user = root.run(&["getent", "passwd", "relay"]);
    assert!(user.status.success(), "{}", show(&user));
    let stat = root.run(&[
        "stat",
        "-c",
        "%U:%G %a",
        "/etc/relay/relay.toml",
        "/var/lib/relay",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&stat.stdout),
        "root:relay 640\nrelay:relay 750\n",
        "{}",
        show(&stat)
    );
    let conffiles = root.run(&["dpkg-query", "-W", "-f=${Conffiles}", "relay"]);
    assert!(
        String::from_utf8_lossy(&conffiles.stdout).contains("/etc/relay/relay.toml"),
        "{}",
        show(&conffiles)
    );
    // An operator's edit survives a reinstall (the postinst and dpkg alike).
    let config = root.path.join("etc/relay/relay.toml");
    let edited = fs::read_to_string(&config).unwrap() + "# edited by the operator\n";
    fs::write(&config, &edited).unwrap();
    let again = root.run(&["sh", "-c", "dpkg -i /tmp/relay_*.deb"]);
    // (dpkg -i now: its dependencies are in place.)
    assert!(again.status.success(), "{}", show(&again));
    assert_eq!(fs::read_to_string(&config).unwrap(), edited);

    // The service's start, as systemd would run it: the relay user, the packaged config.
    let port = free_port();
    let mut relay = root.spawn(
        &[
            "env",
            &format!("RELAY_LISTEN_ADDRESS=127.0.0.1:{port}"),
            "relay",
            "serve",
            "--config",
            "/etc/relay/relay.toml",
        ],
        "relay:relay",
    );
    let ca = root.path.join("var/lib/relay/tls/ca.pem");
    let url = format!("https://127.0.0.1:{port}{PING}");
    let answered = ping_once_up(&ca, &url);
    let _ = relay.kill();
    let output = relay.wait_with_output().unwrap();
    assert_eq!(answered.as_deref(), Some("OK"), "{}", show(&output));
    let credentials = root.run(&[
        "stat",
        "-c",
        "%U %a",
        "/var/lib/relay/generated-credentials",
    ]);
    assert_eq!(String::from_utf8_lossy(&credentials.stdout), "relay 600\n");
}

/// A Debian root filesystem to install packages into: a fresh copy of a pristine
/// debootstrap tree kept as a tar under `cache` (made once, in about a minute), with
/// /proc mounted while it lives.
struct DebianRoot {
    path: PathBuf,
}

impl DebianRoot {
    fn clean(cache: &Path, scratch: &Path) -> Self {
        let tar = cache.join("bookworm-minbase.tar");
        if !tar.is_file() {
            fs::create_dir_all(cache).unwrap();
            let tree = tempfile::tempdir_in(cache).unwrap();
            let out = Command::new("debootstrap")
                .args(["--variant=minbase", "--include=systemd", "bookworm"])
                .arg(tree.path())
                .arg("http://deb.debian.org/debian")
                .output()
                .expect("debootstrap (tests/run installs it)");
            assert!(out.status.success(), "debootstrap: {}", show(&out));
            let partial = cache.join("bookworm-minbase.tar.part");
            let out = Command::new("tar")
                .arg("-C")
                .arg(tree.path())
                .arg("-cf")
                .arg(&partial)
                .arg(".")
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", show(&out));
            fs::rename(&partial, &tar).unwrap();
        }
        let path = scratch.join("root");
        fs::create_dir(&path).unwrap();
        let out = Command::new("tar")
            .arg("-C")
            .arg(&path)
            .arg("-xf")
            .arg(&tar)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", show(&out));
        let out = Command::new("mount")
            .args(["-t", "proc", "proc"])
            .arg(path.join("proc"))
            .output()
            .unwrap();
        assert!(out.status.success(), "mount /proc: {}", show(&out));
        Self { path }
    }

    /// `args` run inside, as root.
    fn run(&self, args: &[&str]) -> Output {
        Command::new("chroot")
            .arg(&self.path)
            .args(args)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .unwrap()
    }

    /// `args` started inside as `user:group`, its output collected.
    fn spawn(&self, args: &[&str], user: &str) -> std::process::Child {
        Command::new("chroot")
            .arg(format!("--userspec={user}"))
            .arg(&self.path)
            .args(args)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env_remove("RELAY_CONFIG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }
}

impl Drop for DebianRoot {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("--lazy")
            .arg(self.path.join("proc"))
            .output();
    }
}

/// `deploy/musl/build` makes a static relay (musl; it installs the Rust target and
/// musl-tools when missing): the binary has no interpreter and no library to load, names
/// its commit, and serves a zero-config start over TLS.
#[test]
fn the_musl_build_of_the_relay_is_static_and_serves() {
    let target_dir = binary("relay")
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("musl");
    // The script as operators run it, with the release profile unoptimised: what is
    // tested is the target, the C toolchain and the static link, and optimising every
    // dependency for a second target took more than twice as long (3m49s against 1m45s
    // on 2 cores).
    let build = Command::new(workspace_root().join("deploy/musl/build"))
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "0")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "256")
        .output()
        .unwrap();
    assert!(build.status.success(), "{}", show(&build));
    let relay = PathBuf::from(
        String::from_utf8_lossy(&build.stdout)
            .lines()
            .last()
            .unwrap(),
    );
    let file = Command::new("file").arg(&relay).output().unwrap();
    let described = String::from_utf8_lossy(&file.stdout).into_owned();
    assert!(
        described.contains("static-pie linked") || described.contains("statically linked"),
        "{described}"
    );
    let version = Command::new(&relay).arg("--version").output().unwrap();
    assert!(
        String::from_utf8_lossy(&version.stdout).contains("(commit "),
        "{}",
        show(&version)
    );

    let dir = tempfile::tempdir().unwrap();
    let (mut serve, port) = zero_config_relay(&relay, dir.path(), &["--data-dir", "data"]);
    let ca = dir.path().join("data/tls/ca.pem");
    let answered = ping_once_up(&ca, &format!("https://127.0.0.1:{port}{PING}"));
    let _ = serve.kill();
    let _ = serve.wait();
    assert_eq!(answered.as_deref(), Some("OK"));
}

/// `relay serve ARGS` with no config, in `dir`, on a free loopback port: the README's first
/// command. Its output is not kept.
fn zero_config_relay(relay: &Path, dir: &Path, args: &[&str]) -> (std::process::Child, u16) {
    let port = free_port();
    let child = Command::new(relay)
        .arg("serve")
        .args(args)
        .current_dir(dir)
        .env("RELAY_LISTEN_ADDRESS", format!("127.0.0.1:{port}"))
        .env_remove("RELAY_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    (child, port)
}

/// `url`'s body by curl with `ca`, once the relay has made `ca` and answers (up to 30 s).
fn ping_once_up(ca: &Path, url: &str) -> Option<String> {
    for _ in 0..300 {
        if ca.is_file() {
            let out = Command::new("curl")
                .args(["-sS", "--noproxy", "*", "--cacert"])
                .arg(ca)
                .arg(url)
                .output()
                .unwrap();
            if out.status.success() {
                return Some(String::from_utf8_lossy(&out.stdout).into_owned());
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    None
}
