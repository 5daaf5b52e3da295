//! Helpers for the end-to-end tests: the real `relay` and `defender-lite` binaries,
//! built from this workspace, run as separate processes.

pub mod downloaders;
pub mod relays;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

/// Path of a workspace binary (`relay`, `defender-lite`).
///
/// `cargo test --workspace` builds both already (their packages have integration tests).
/// When a binary is missing or older than any source file (this package run alone after
/// an edit), the helper builds them with the same cargo rather than fail, skip, or test
/// stale code.
///
/// `E2E_BIN_DIR` names a directory to take them from instead, as they are: how a bench
/// measures another build (the code before a change) with the same client.
pub fn binary(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("E2E_BIN_DIR") {
        let path = PathBuf::from(dir).join(name);
        assert!(path.is_file(), "E2E_BIN_DIR: no {}", path.display());
        return path;
    }
    static CHECKED: OnceLock<()> = OnceLock::new();
    let dir = target_dir();
    CHECKED.get_or_init(|| {
        let newest_source = newest_mtime(&workspace_root().join("relay/src"))
            .max(newest_mtime(&workspace_root().join("defender-lite/src")));
        let stale = ["relay", "defender-lite"].iter().any(|bin| {
            std::fs::metadata(dir.join(bin))
                .and_then(|m| m.modified())
                .map_or(true, |built| built < newest_source)
        });
        if stale {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            // Build with the profile this executable was built with (benches: release).
            let release = dir.file_name().is_some_and(|n| n == "release");
            let mut args = vec!["build", "--bin", "relay", "--bin", "defender-lite"];
            if release {
                args.push("--release");
            }
            let status = Command::new(cargo)
                .args(&args)
                .current_dir(workspace_root())
                .status()
                .expect("run cargo build for the workspace binaries");
            assert!(status.success(), "building the workspace binaries failed");
        }
    });
    let path = dir.join(name);
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// The directory holding this test executable's sibling binaries (`target/<profile>`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps")
        .to_path_buf()
}

fn newest_mtime(dir: &Path) -> SystemTime {
    let mut newest = SystemTime::UNIX_EPOCH;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return newest;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest_mtime(&path)
        } else {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH)
        };
        newest = newest.max(t);
    }
    newest
}

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace root")
        .to_path_buf()
}

/// A loopback port free a moment ago, for a program that takes a fixed port (nginx, a proxy,
/// a relay's config). Another process may take it before it is used: callers that can,
/// bind port 0 instead.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}
