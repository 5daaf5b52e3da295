//! Sets `BUILD_COMMIT` for `--version` (`build-support/version.rs`).

#[path = "../build-support/version.rs"]
mod version;

fn main() {
    version::emit_commit();
}
