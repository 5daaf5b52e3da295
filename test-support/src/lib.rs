//! What the workspace's test crates share: one `relay serve` process, started and watched
//! as a service manager would (its output kept, its start banner read for the URL it
//! serves), signalled, killed, waited for. `relay/tests/support/process.rs` (one relay per
//! test, in process-level detail) and `tests/src/relays.rs` (named relays of a topology,
//! restarted on their port) wrap it.
//!
//! Test support: a panic is the failure report (STYLE.md).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a relay may take to print its banner (a first start makes certificates).
const START: Duration = Duration::from_secs(60);

/// A running `relay serve`. Killed (SIGKILL) when dropped.
pub struct ServeProcess {
    child: Option<Child>,
    /// What the banner says it serves: `https://127.0.0.1:PORT`.
    pub url: String,
    output: Arc<Mutex<String>>,
    /// The threads copying stdout and stderr into `output`: joined once the process is
    /// gone, so its last lines are in `output` when a test reads them.
    readers: Vec<JoinHandle<()>>,
}

impl ServeProcess {
    /// Spawns `command` (`relay serve ...`, or a shell that execs it) with stdout and stderr
    /// piped into `output` (shared, so a restarted relay's output follows its earlier
    /// runs'), and waits for the whole banner: the `relay listening on URL` line, then the
    /// `try:` line that ends it. Panics with the output when none comes.
    pub fn spawn(mut command: Command, output: Arc<Mutex<String>>) -> Self {
        let mut child = command
            .env_remove("RELAY_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn relay serve");
        let (url_tx, url_rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let mut readers = Vec::new();
        {
            let output = Arc::clone(&output);
            readers.push(std::thread::spawn(move || {
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
        let mut process = Self {
            child: Some(child),
            url: String::new(),
            output,
            readers,
        };
        match url_rx.recv_timeout(START) {
            Ok(url) => process.url = url,
            Err(_) => {
                process.kill();
                panic!("relay did not start:\n{}", process.output());
            }
        }
        process
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything the process printed (stdout and stderr), as it arrives.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Sends `signal` (`TERM`, `HUP`, ...) with kill(1), as an operator would.
    pub fn signal(&self, signal: &str) {
        let pid = self.pid().expect("the relay runs");
        let status = Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .expect("kill(1) is installed (procps)");
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// SIGKILL, and wait for the process and its output to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.join_readers();
    }

    /// Waits up to `secs` for the process to exit by itself.
    pub fn wait_exit(&mut self, secs: u64) -> Option<ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            let child = self.child.as_mut()?;
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                self.join_readers();
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn join_readers(&mut self) {
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
