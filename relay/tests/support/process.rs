//! The real `relay` binary as a child process: started with a config file, its URL read
//! from its first line of output, stopped (or killed) by the test.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

pub struct RelayProcess {
    pub child: Child,
    pub url: String,
    /// Everything the process printed (stdout and stderr), as it arrives.
    pub output: Arc<Mutex<String>>,
    /// The threads copying its stdout and stderr into `output`: joined once it exits, so
    /// its last lines are in `output` when a test reads them.
    readers: Vec<std::thread::JoinHandle<()>>,
}

/// Writes a TOML config for a relay in `dir` (certificates, users and origin key as
/// `server::prepare_dir` makes them) and returns its path.
pub fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let d = dir.display();
    let text = format!(
        r#"[listen]
address = "127.0.0.1:0"
header_read_timeout = "2s"
shutdown_grace = "2s"

[tls]
cert = "{d}/tls/server.pem"
key = "{d}/tls/server.key"

[auth]
htpasswd = "{d}/htpasswd"
readers = ["reader"]
uploaders = ["uploader"]
admins = ["admin"]

[storage]
data_dir = "{d}"

[trust]
keys = ["{d}/origin.pub"]
{extra}"#
    );
    let path = dir.join("relay.toml");
    std::fs::write(&path, text).unwrap();
    path
}

impl RelayProcess {
    /// Starts `relay serve` with `args`, in `cwd`, with `envs`, and waits for its URL.
    pub fn start(cwd: &Path, args: &[&str], envs: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_relay"));
        command.arg("serve").args(args);
        Self::spawn(command, cwd, envs)
    }

    /// [`RelayProcess::start`] under the file-mode mask `umask` (`027`): the shell sets
    /// it and execs the relay, which keeps the shell's pid.
    pub fn start_under_umask(
        umask: &str,
        cwd: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Self {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("umask {umask} && exec \"$0\" serve \"$@\""))
            .arg(env!("CARGO_BIN_EXE_relay"))
            .args(args);
        Self::spawn(command, cwd, envs)
    }

    fn spawn(mut command: Command, cwd: &Path, envs: &[(&str, &str)]) -> Self {
        let mut child = command
            .current_dir(cwd)
            .envs(envs.iter().copied())
            .env_remove("RELAY_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output = Arc::new(Mutex::new(String::new()));
        let (url_tx, url_rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut readers = Vec::new();
        {
            let output = Arc::clone(&output);
            readers.push(std::thread::spawn(move || {
                // The banner starts with the URL and ends with the `try:` line.
                let mut url = None;
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    output.lock().unwrap().push_str(&(line.clone() + "\n"));
                    if let Some(u) = line.strip_prefix("relay listening on ") {
                        url = Some(u.to_owned());
                    }
                    if line.starts_with("try: ")
                        && let Some(u) = url.take()
                    {
                        let _ = url_tx.send(u);
                    }
                }
            }));
        }
        {
            let output = Arc::clone(&output);
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    output.lock().unwrap().push_str(&(line + "\n"));
                }
            }));
        }
        let url = match url_rx.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!("relay did not start:\n{}", output.lock().unwrap());
            }
        };
        Self {
            child,
            url,
            output,
            readers,
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits for the process to exit, up to `secs`.
    pub fn wait_exit(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                for reader in self.readers.drain(..) {
                    let _ = reader.join();
                }
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        None
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs curl (with `--silent --show-error`), returning (exit code, stdout).
pub fn curl(args: &[&str]) -> (i32, Vec<u8>) {
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--noproxy", "*"])
        .args(args)
        .output()
        .expect("curl is installed (tests/run installs it)");
    (out.status.code().unwrap_or(-1), out.stdout)
}
