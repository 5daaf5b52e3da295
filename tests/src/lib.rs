//! Helpers for the end-to-end tests: the real `relay` and `defender-lite` binaries,
//! built from this workspace, run as separate processes.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Path of a workspace binary (`relay`, `defender-lite`), built on first use.
///
/// `cargo test --workspace` builds every member's binaries already; running this
/// package alone (`cargo test -p end-to-end`) would not, so the helper builds what is
/// missing with the same cargo and profile instead of failing or skipping.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let path = target_dir().join(name);
    BUILT.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--bin", "relay", "--bin", "defender-lite"])
            .current_dir(workspace_root())
            .status()
            .expect("run cargo build for the workspace binaries");
        assert!(status.success(), "building the workspace binaries failed");
    });
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

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace root")
        .to_path_buf()
}
