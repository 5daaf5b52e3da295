//! Shared by the build scripts of `relay` and `defender-lite` (`#[path]`-included): sets
//! `BUILD_COMMIT`, which `--version` shows, to the commit the binary is built from: the
//! `BUILD_COMMIT` environment variable when set (a build from a source tarball), else
//! git's short hash of HEAD, else `unknown`.

use std::process::Command;

pub fn emit_commit() {
    println!("cargo::rerun-if-env-changed=BUILD_COMMIT");
    let commit = std::env::var("BUILD_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo::rustc-env=BUILD_COMMIT={}", commit.trim());
}

/// HEAD's short hash; asks cargo to run the script again when HEAD moves (HEAD itself,
/// the branch it names, the packed refs: only those that exist, since a missing path
/// would make cargo run it on every build).
fn git_commit() -> Option<String> {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").args(args).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(branch);
    }
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--path-format=absolute", "--git-path", &name])
            && std::path::Path::new(&path).exists()
        {
            println!("cargo::rerun-if-changed={path}");
        }
    }
    Some(commit)
}
