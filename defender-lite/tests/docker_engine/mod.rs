//! The Docker engine the tests drive: Debian's dockerd as `tests/docker-engine` starts it
//! (loopback only, a socket of its own), Debian's client to check what the engine says
//! independently of `DockerClient`, and a busybox-static image imported for the test.

// Each test module uses a different part of this module.
#![allow(dead_code)]
// Test support: a panic is the failure report (STYLE.md), as in the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use defender_lite::monitor::docker::DockerClient;

/// Debian's client, whose API version is the engine's (the machine may have a newer one
/// on PATH).
pub const DOCKER: &str = "/usr/bin/docker";

/// One test at a time talks to the engine: one restarts it, others create the same
/// network, and the tests of every module share one process.
pub static ENGINE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The engine as `tests/docker-engine` runs it.
pub struct Engine {
    /// `unix:///...`
    pub host: String,
}

/// A container as the engine's own client reports it.
#[derive(Debug, PartialEq, Eq)]
pub struct State {
    pub running: bool,
    pub status: String,
    pub policy: String,
}

impl State {
    pub fn stopped(policy: &str) -> State {
        State {
            running: false,
            status: "exited".into(),
            policy: policy.into(),
        }
    }
}

impl Engine {
    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/docker-engine")
    }

    /// Starts dockerd unless it runs (installing it first if need be).
    pub fn start() -> Engine {
        assert!(
            rustix::process::geteuid().is_root(),
            "these tests drive a Docker engine (and capture packets): run them as root, as CI does"
        );
        let out = Command::new(Self::script())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tests/docker-engine could not start dockerd ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let host = String::from_utf8(out.stdout).unwrap().trim().to_string();
        assert!(host.starts_with("unix:///"), "{host:?}");
        Engine { host }
    }

    /// Stops dockerd the way a service manager does, and starts it again.
    pub fn restart(&self) {
        let out = Command::new(Self::script())
            .arg("stop")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tests/docker-engine stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let again = Engine::start();
        assert_eq!(again.host, self.host);
    }

    pub fn socket(&self) -> PathBuf {
        PathBuf::from(self.host.trim_start_matches("unix://"))
    }

    pub fn client(&self) -> DockerClient {
        DockerClient::new(self.socket())
    }

    /// Runs Debian's client against this engine; its stdout, or a panic with its stderr.
    pub fn docker(&self, args: &[&str]) -> String {
        let out = Command::new(DOCKER)
            .arg("-H")
            .arg(&self.host)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Removes what an earlier run may have left (`containers`, `networks`, `image`),
    /// imports `image`, and returns a guard that removes them all again.
    pub fn fresh(
        &self,
        image: &'static str,
        containers: &[&'static str],
        networks: &[&'static str],
    ) -> Cleanup {
        let cleanup = Cleanup {
            host: self.host.clone(),
            containers: containers.to_vec(),
            networks: networks.to_vec(),
            image,
        };
        cleanup.remove();
        self.import_busybox(image);
        cleanup
    }

    /// A guard that removes `image` (one a test makes itself, with `docker commit`) now,
    /// if an earlier run left it, and again when dropped.
    pub fn made_image(&self, image: &'static str) -> Cleanup {
        let cleanup = Cleanup {
            host: self.host.clone(),
            containers: Vec::new(),
            networks: Vec::new(),
            image,
        };
        cleanup.remove();
        cleanup
    }

    /// A rootfs of a static busybox (Debian's busybox-static) and `/bin/sh`, imported as
    /// `image`.
    pub fn import_busybox(&self, image: &str) {
        let files = Command::new("dpkg")
            .args(["-L", "busybox-static"])
            .output()
            .unwrap();
        assert!(files.status.success(), "busybox-static is not installed");
        let busybox = String::from_utf8(files.stdout)
            .unwrap()
            .lines()
            .find(|l| l.ends_with("/bin/busybox"))
            .map(PathBuf::from)
            .expect("busybox-static ships bin/busybox");
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::copy(&busybox, root.join("bin/busybox")).unwrap();
        std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
        let tar = dir.path().join("rootfs.tar");
        let status = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(status.success());
        self.docker(&["import", tar.to_str().unwrap(), image]);
    }

    pub fn wait_until_running(&self, id: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let state = self.state(id);
            if state.running {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "container {id} not running within {within:?}: {state:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The engine's view through its own client, independent of `DockerClient`.
    pub fn state(&self, id: &str) -> State {
        let out = self.docker(&[
            "inspect",
            "-f",
            "{{.State.Running}} {{.State.Status}} {{.HostConfig.RestartPolicy.Name}}",
            id,
        ]);
        let fields: Vec<&str> = out.split_whitespace().collect();
        match fields[..] {
            [running, status, policy] => State {
                running: running == "true",
                status: status.into(),
                policy: policy.into(),
            },
            _ => panic!("docker inspect: {out:?}"),
        }
    }

    pub fn restart_count(&self, id: &str) -> u32 {
        self.docker(&["inspect", "-f", "{{.RestartCount}}", id])
            .parse()
            .unwrap()
    }
}

/// Removes a test's containers, networks and image, also when the test fails.
pub struct Cleanup {
    host: String,
    containers: Vec<&'static str>,
    networks: Vec<&'static str>,
    image: &'static str,
}

impl Cleanup {
    fn remove(&self) {
        // Errors are fine here: there may be nothing to remove.
        let docker = |args: &[&str]| {
            let _ = Command::new(DOCKER)
                .arg("-H")
                .arg(&self.host)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        for name in &self.containers {
            docker(&["rm", "-f", name]);
        }
        for network in &self.networks {
            docker(&["network", "rm", network]);
        }
        docker(&["rmi", self.image]);
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.remove();
    }
}

/// `defender-lite monitor` running against this engine, in a directory of its own with
/// the given rules and `[monitor]` settings (the engine's socket added), the sample feeds
/// as its intelligence; its stdout and stderr kept in files. Killed when dropped.
pub struct MonitorProcess {
    dir: tempfile::TempDir,
    child: std::process::Child,
}

impl MonitorProcess {
    pub fn start(engine: &Engine, rules: &str, monitor: &str) -> MonitorProcess {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rules.toml"), rules).unwrap();
        std::fs::write(
            dir.path().join("defender-lite.toml"),
            format!(
                "data_dir = \"data\"\n[trust]\nkeys = [\"origin.pub\"]\n[monitor]\n\
                 rules = \"rules.toml\"\n{monitor}\ndocker_socket = \"{}\"\n",
                engine.socket().display()
            ),
        )
        .unwrap();
        let feeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../relay/samples/feeds");
        let stdout = std::fs::File::create(dir.path().join("stdout")).unwrap();
        let stderr = std::fs::File::create(dir.path().join("stderr")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_defender-lite"))
            .current_dir(dir.path())
            .args(["monitor", "--config", "defender-lite.toml", "--feeds"])
            .arg(&feeds)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap();
        MonitorProcess { dir, child }
    }

    /// What it wrote so far to `stdout` (the audits) or `stderr`.
    pub fn output(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// Waits until its stderr says `text` (how far start-up has come), for up to 20 s.
    pub fn wait_for_stderr(&self, text: &str) {
        let started = Instant::now();
        while !self.output("stderr").contains(text) {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "monitor did not start: {}",
                self.output("stderr")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for MonitorProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
