//! The real `relay` binary as a child process (`test_support::ServeProcess`, which the
//! end-to-end tests use too): started with a config file, its URL read from its banner,
//! signalled, stopped or killed by the test.

use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use test_support::ServeProcess;

/// One `relay serve` of a test: a [`ServeProcess`] (its URL, output, signals, kill, exit).
pub struct RelayProcess(ServeProcess);

impl Deref for RelayProcess {
    type Target = ServeProcess;
    fn deref(&self) -> &ServeProcess {
        &self.0
    }
}

impl DerefMut for RelayProcess {
    fn deref_mut(&mut self) -> &mut ServeProcess {
        &mut self.0
    }
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
        command.current_dir(cwd).envs(envs.iter().copied());
        Self(ServeProcess::spawn(
            command,
            Arc::new(Mutex::new(String::new())),
        ))
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
