//! "block" and "prevent" against a real Docker engine: Debian's dockerd, started by
//! `tests/docker-engine` on a socket of its own, running a container made from Debian's
//! busybox-static. A blocked `--restart=always` container stays down across a daemon
//! restart, while the controls show the engine would otherwise bring it back: a container
//! that is only stopped comes back with the daemon, one whose process is killed comes
//! back at once. These need root (dockerd, /proc of other processes), as CI has; without
//! an engine they fail and say why, they never skip.

#![allow(clippy::unwrap_used)]

use crate::docker_engine::{self, ENGINE};

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::{Duration, Instant};

use defender_lite::defense::actions::{self, BlockError, Killed};
use defender_lite::monitor::attribution::{Attributor, Runtime, container_from_cgroup};
use defender_lite::monitor::docker::DockerError;
use docker_engine::{Engine, MonitorProcess, State};

const IMAGE: &str = "defender-lite-test/busybox:block";
const BLOCKED: &str = "defender-lite-test-blocked";
const STOPPED: &str = "defender-lite-test-stopped";
const KILLED: &str = "defender-lite-test-killed";
const WATCHED: &str = "defender-lite-test-watched";

const APPS_BASE: &str = "defender-lite-test/busybox:apps-base";
/// The busybox image with 3,000 more files (`docker commit` of a container that made them).
const APPS_MANY: &str = "defender-lite-test/busybox:apps-many";
const APPS_MAKER: &str = "defender-lite-test-apps-maker";
const APPS: &str = "defender-lite-test-apps";
const APPS_HUNG: &str = "defender-lite-test-apps-hung";

#[tokio::test]
async fn a_blocked_container_stays_down_across_a_daemon_restart() {
    let _engine = ENGINE.lock().await;
    let engine = Engine::start();
    let _cleanup = engine.fresh(IMAGE, &[BLOCKED, STOPPED], &[]);
    let client = engine.client();

    let blocked = run_restart_always(&engine, BLOCKED);
    let stopped = run_restart_always(&engine, STOPPED);

    // Attribution: the container's main process maps to its id through /proc/<pid>/cgroup,
    // and the engine names it.
    let info = client.inspect(&blocked).await.unwrap();
    assert_eq!(info.id, blocked);
    assert_eq!(info.name, BLOCKED);
    assert_eq!(info.image, IMAGE);
    assert!(info.image_id.starts_with("sha256:"), "{info:?}");
    assert!(info.running, "{info:?}");
    assert_eq!(info.restart_policy, "always");
    assert!(info.pid > 1, "{info:?}");
    let cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", info.pid)).unwrap();
    let found = container_from_cgroup(&cgroup)
        .unwrap_or_else(|| panic!("no container id in /proc/{}/cgroup:\n{cgroup}", info.pid));
    assert_eq!(found.id, blocked, "{cgroup}");
    assert_eq!(found.runtime, Runtime::Docker, "{cgroup}");
    let mut attributor = Attributor::new(Some(client.clone()));
    let container = attributor.container_of(info.pid).await.unwrap();
    assert_eq!(container.id, blocked);
    assert_eq!(container.name.as_deref(), Some(BLOCKED));
    assert_eq!(container.image.as_deref(), Some(IMAGE));

    let description = actions::block(&client, &blocked).await.unwrap();
    eprintln!("{description}");
    assert_eq!(
        description,
        format!(
            "blocked container {BLOCKED} ({}): restart policy set to no, stopped",
            &blocked[..12]
        )
    );
    // The control: a plain stop, which the engine undoes when it restarts.
    client.stop(&stopped, Duration::from_secs(1)).await.unwrap();
    assert_eq!(engine.state(&blocked), State::stopped("no"));
    assert_eq!(engine.state(&stopped), State::stopped("always"));

    engine.restart();
    // The daemon starts `always` containers again as it comes up; once the control runs,
    // a restart of the blocked one would have happened too. Then give it a while longer.
    engine.wait_until_running(&stopped, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(engine.state(&blocked), State::stopped("no"));
    assert!(engine.state(&stopped).running);

    // Blocking an already stopped container is fine (the engine answers 304 to the stop).
    let again = actions::block(&client, &blocked).await.unwrap();
    assert_eq!(again, description);
}

/// The whole path, as an operator runs it: `defender-lite monitor` watches the host, learns
/// the container's model, then the container listens where its model does not expect it;
/// the rule (scoped by image and by a label the engine reports) says block, and the
/// engine's `--restart=always` container goes down and stays.
#[tokio::test]
async fn the_monitor_blocks_a_container_that_listens_where_its_model_does_not() {
    let _engine = ENGINE.lock().await;
    let engine = Engine::start();
    let _cleanup = engine.fresh(IMAGE, &[WATCHED], &[]);
    let id = run_restart_always(&engine, WATCHED);

    let mut monitor = MonitorProcess::start(
        &engine,
        &format!(
            "[[rules]]\nname = \"busybox\"\nscope = {{ images = [\"{IMAGE}\"], labels = [\"defender-lite-test=bl*\"] }}\n\
             listening_ports = {{ effect = \"block\" }}\n"
        ),
        "learning = \"3s\"\nscan_every = \"500ms\"",
    );
    let output = |name: &str| monitor.output(name);
    // The model learns the container's `sleep` for 3 s from the monitor's start.
    monitor.wait_for_stderr("learning period");
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        engine.state(&id).running,
        "blocked before any violation: {}",
        output("stdout")
    );

    engine.docker(&[
        "exec",
        "-d",
        WATCHED,
        "/bin/busybox",
        "nc",
        "-l",
        "-p",
        "4444",
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while engine.state(&id) != State::stopped("no") {
        assert!(
            Instant::now() < deadline,
            "not blocked within 30 s: {:?}\nstdout:\n{}\nstderr:\n{}",
            engine.state(&id),
            output("stdout"),
            output("stderr")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The audit is written once the engine has answered the stop, which can be a moment
    // after the container is seen stopped.
    let blocked = |audits: &str| {
        audits.contains("BLOCK listening_ports [busybox]")
            && audits.contains("listening on 4444/tcp is not in the model")
            && audits.contains(&format!("blocked container {WATCHED}"))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !blocked(&output("stdout")) {
        assert!(
            Instant::now() < deadline,
            "no block audit within 30 s:\n{}",
            output("stdout")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    monitor.stop();
    // And it stays down when the engine restarts.
    engine.restart();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(engine.state(&id), State::stopped("no"));
}

#[tokio::test]
async fn a_killed_restart_always_container_is_started_again() {
    // The control without a daemon restart: killing the process ("prevent") is not a
    // block, the engine starts the container again.
    let _engine = ENGINE.lock().await;
    let engine = Engine::start();
    let _cleanup = engine.fresh(IMAGE, &[KILLED], &[]);
    let client = engine.client();

    let id = run_restart_always(&engine, KILLED);
    let before = client.inspect(&id).await.unwrap();
    assert!(before.running && before.pid > 1, "{before:?}");
    assert_eq!(
        actions::kill_process(before.pid).unwrap(),
        Killed::Killed { pid: before.pid }
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = client.inspect(&id).await.unwrap();
        if now.running && now.pid != before.pid && now.pid != 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the engine did not restart the killed container within 15 s: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(engine.restart_count(&id) >= 1);
}

#[tokio::test]
async fn blocking_an_unknown_container_names_the_failed_step() {
    let _engine = ENGINE.lock().await;
    let engine = Engine::start();
    let client = engine.client();
    let err = actions::block(&client, "defender-lite-test-no-such-container")
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(
            &err,
            BlockError::SetRestartPolicy {
                source: DockerError::Status { status, .. },
                ..
            } if status.as_u16() == 404
        ),
        "{message}"
    );
    assert!(
        message.contains("setting the restart policy") && message.contains("No such container"),
        "{message}"
    );
}

#[test]
fn kill_process_kills_a_child_and_reports_one_already_gone() {
    let mut child = Command::new("sleep").arg("60").spawn().unwrap();
    let pid = child.id();
    assert_eq!(actions::kill_process(pid).unwrap(), Killed::Killed { pid });
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "{status:?}");
    // Reaped: the pid names no process now.
    let gone = actions::kill_process(pid).unwrap();
    assert_eq!(gone, Killed::AlreadyGone { pid });
    assert_eq!(
        gone.to_string(),
        format!("process {pid} had already exited; nothing to kill")
    );
}

/// `docker run -d --restart=always`; returns the full id once it runs.
fn run_restart_always(engine: &Engine, name: &str) -> String {
    // A busybox `sleep` as pid 1 ignores SIGTERM: a one-second stop timeout keeps the
    // daemon's shutdown short.
    let id = engine.docker(&[
        "run",
        "-d",
        "--restart=always",
        "--stop-timeout=1",
        "--network=none",
        "--label",
        "defender-lite-test=block",
        "--name",
        name,
        IMAGE,
        "/bin/busybox",
        "sleep",
        "3600",
    ]);
    engine.wait_until_running(&id, Duration::from_secs(10));
    id
}

/// Issue 13 item 6: the first sight of an image never stalls judging, and a failed read of
/// its apps is tried again. A container whose filesystem has more entries than the agent
/// indexes (`app_read_max_entries`, here 2,000: the image has 3,000 extra files) cannot be
/// read: its exec is judged all the same (a rule denies busybox: an audit names it), the
/// failure is said with the wait, and once the files are gone the image's next event, after
/// the wait (`app_read_retry`, here 1 s), reads it.
#[tokio::test]
async fn an_image_that_cannot_be_read_is_judged_meanwhile_and_read_again_later() {
    let _engine = ENGINE.lock().await;
    let engine = Engine::start();
    let _cleanup = engine.fresh(APPS_BASE, &[APPS_MAKER, APPS], &[]);
    let _made = engine.made_image(APPS_MANY);
    // Made before the monitor starts: it never sees the maker.
    engine.docker(&[
        "run",
        "--name",
        APPS_MAKER,
        APPS_BASE,
        "/bin/busybox",
        "sh",
        "-c",
        "/bin/busybox mkdir /many && cd /many && /bin/busybox seq 3000 | /bin/busybox xargs /bin/busybox touch",
    ]);
    engine.docker(&["commit", APPS_MAKER, APPS_MANY]);
    engine.docker(&["rm", APPS_MAKER]);

    let monitor = MonitorProcess::start(
        &engine,
        &format!(
            "[[rules]]\nname = \"apps\"\nscope = {{ images = [\"{APPS_MANY}\"] }}\n\
             processes = {{ effect = \"alert\", deny = [\"*/busybox\"] }}\n"
        ),
        "learning = \"1h\"\nscan_every = \"500ms\"\napp_read_retry = \"1s\"\n\
         app_read_max_entries = 2000",
    );
    monitor.wait_for_stderr("learning period");
    let id = engine.docker(&[
        "run",
        "-d",
        "--name",
        APPS,
        APPS_MANY,
        "/bin/busybox",
        "sleep",
        "3600",
    ]);
    engine.wait_until_running(&id, Duration::from_secs(10));

    // The image's first event may come from a process gone before its root is read
    // (runc's init): that read fails too, for that reason. Processes that live a few
    // seconds give the reads a root to open, and the failure this test is about.
    let too_many = format!("app knowledge for {APPS_MANY}: opening /proc/");
    let judged = format!("container {APPS} ({APPS_MANY})");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (stdout, stderr) = (monitor.output("stdout"), monitor.output("stderr"));
        let failed = stderr
            .lines()
            .any(|l| logged(l, "ERROR", &too_many) && l.contains("more than 2000 entries"));
        if failed && stdout.contains(&judged) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no failed read and no audit within 30 s\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
        engine.docker(&["exec", "-d", APPS, "/bin/busybox", "sleep", "5"]);
        std::thread::sleep(Duration::from_millis(1500));
    }
    let stderr = monitor.output("stderr");
    assert!(
        stderr.contains("judged by its model alone, tried again on an event after"),
        "{stderr}"
    );
    let audits = monitor.output("stdout");
    assert!(
        audits.contains("processes [apps]") && audits.contains("/bin/busybox"),
        "{audits}"
    );

    // Fewer files now; the next event of the image, once the wait is over, reads it.
    engine.docker(&["exec", APPS, "/bin/busybox", "rm", "-rf", "/many"]);
    let read = format!("app knowledge for {APPS_MANY}: ");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !monitor
        .output("stderr")
        .lines()
        .any(|l| logged(l, "INFO", &read))
    {
        assert!(
            Instant::now() < deadline,
            "not read again within 30 s\nstderr:\n{}",
            monitor.output("stderr")
        );
        std::thread::sleep(Duration::from_millis(1500));
        engine.docker(&["exec", "-d", APPS, "/bin/busybox", "sleep", "5"]);
    }
    eprintln!("{}", monitor.output("stderr"));
}

/// Hardening item 6 with a read that hangs: the container's root holds a FUSE directory
/// (`docker_engine/slowfs.py`) that answers the agent only when the test says so. While
/// the agent's first read of the image hangs there, the container's execs are judged
/// and audited; once released, the read ends. Were the read made before judging, no
/// audit could come while it hangs.
#[tokio::test]
async fn an_image_whose_read_hangs_is_judged_while_it_hangs() {
    let _engine = ENGINE.lock().await;
    let engine = Engine::start();
    let _cleanup = engine.fresh(APPS_BASE, &[APPS_HUNG], &[]);
    let monitor = MonitorProcess::start(
        &engine,
        &format!(
            "[[rules]]\nname = \"apps\"\nscope = {{ images = [\"{APPS_BASE}\"] }}\n\
             processes = {{ effect = \"alert\", deny = [\"*/busybox\"] }}\n"
        ),
        "learning = \"1h\"\nscan_every = \"500ms\"\napp_read_retry = \"1s\"",
    );
    monitor.wait_for_stderr("learning period");
    // Made after the monitor, so dropped before it: a process waiting on a FUSE answer
    // cannot die until the filesystem answers or goes.
    let slow = SlowFs::mount();
    let id = engine.docker(&[
        "run",
        "-d",
        "--name",
        APPS_HUNG,
        "-v",
        &format!("{}:/slow", slow.mountpoint.display()),
        APPS_BASE,
        "/bin/busybox",
        "sleep",
        "3600",
    ]);
    engine.wait_until_running(&id, Duration::from_secs(10));

    // A read of the image reaches /slow and hangs there (the first may fail on a
    // process gone before its root is opened: retried a second later on an event).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !slow.held() {
        assert!(
            Instant::now() < deadline,
            "no read of the container's root reached /slow within 30 s\nstderr:\n{}",
            monitor.output("stderr")
        );
        engine.docker(&["exec", "-d", APPS_HUNG, "/bin/busybox", "sleep", "5"]);
        std::thread::sleep(Duration::from_millis(1000));
    }

    // While it hangs, new execs of the container are judged and audited.
    let judged = format!("container {APPS_HUNG} ({APPS_BASE})");
    let before = monitor.output("stdout").matches(&judged).count();
    let deadline = Instant::now() + Duration::from_secs(30);
    while monitor.output("stdout").matches(&judged).count() <= before {
        assert!(
            Instant::now() < deadline,
            "no exec judged within 30 s while the image's read hangs\nstdout:\n{}\nstderr:\n{}",
            monitor.output("stdout"),
            monitor.output("stderr")
        );
        engine.docker(&["exec", "-d", APPS_HUNG, "/bin/busybox", "sleep", "5"]);
        std::thread::sleep(Duration::from_millis(500));
    }
    let read = format!("app knowledge for {APPS_BASE}: ");
    assert!(
        !monitor
            .output("stderr")
            .lines()
            .any(|l| logged(l, "INFO", &read)),
        "the read ended while /slow still hangs?\n{}",
        monitor.output("stderr")
    );

    // Released, the hung read ends and says what it found.
    slow.release();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !monitor
        .output("stderr")
        .lines()
        .any(|l| logged(l, "INFO", &read))
    {
        assert!(
            Instant::now() < deadline,
            "the read did not end within 30 s of its release\nstderr:\n{}",
            monitor.output("stderr")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `docker_engine/slowfs.py` mounted on a directory of its own; unmounted when dropped
/// (released first, so nothing stays hung).
struct SlowFs {
    dir: tempfile::TempDir,
    mountpoint: std::path::PathBuf,
    child: std::process::Child,
}

impl SlowFs {
    fn mount() -> SlowFs {
        let dir = tempfile::tempdir().unwrap();
        let mountpoint = dir.path().join("mnt");
        let state = dir.path().join("state");
        std::fs::create_dir(&mountpoint).unwrap();
        std::fs::create_dir(&state).unwrap();
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/docker_engine/slowfs.py");
        // Debian's python, where python3-fusepy is (tests/run installs it).
        let child = Command::new("/usr/bin/python3")
            .arg(&script)
            .arg(&mountpoint)
            .arg(&state)
            .stdin(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("log")).unwrap())
            .spawn()
            .expect("/usr/bin/python3 (tests/run installs python3 and python3-fusepy)");
        let slow = SlowFs {
            dir,
            mountpoint,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !slow.dir.path().join("state/ready").exists() {
            assert!(
                Instant::now() < deadline,
                "slowfs.py did not mount within 20 s (it needs /dev/fuse and root):\n{}",
                std::fs::read_to_string(slow.dir.path().join("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        slow
    }

    /// True once a defender-lite process waits on it.
    fn held(&self) -> bool {
        self.dir.path().join("state/held").exists()
    }

    fn release(&self) {
        std::fs::write(self.dir.path().join("state/release"), "").unwrap();
    }
}

impl Drop for SlowFs {
    fn drop(&mut self) {
        let _ = std::fs::write(self.dir.path().join("state/release"), "");
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mountpoint)
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a log line of the monitor is at `level` (`INFO`, `ERROR`) and says `text`.
fn logged(line: &str, level: &str, text: &str) -> bool {
    line.contains(&format!(" {level} ")) && line.contains(text)
}
