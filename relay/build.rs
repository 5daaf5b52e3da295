//! Embeds the sample feeds (`samples/feeds/<kind>/<file>`) into the binary, so a relay
//! started with no configuration can build and serve its sample bundle anywhere; and sets
//! `BUILD_COMMIT` for `--version` (`build-support/version.rs`).

use std::fmt::Write as _;
use std::path::Path;

#[path = "../build-support/version.rs"]
mod version;

fn main() {
    version::emit_commit();
    let root = Path::new("samples/feeds");
    println!("cargo::rerun-if-changed=samples/feeds");
    let mut files = Vec::new();
    if let Ok(kinds) = std::fs::read_dir(root) {
        for kind in kinds.flatten() {
            println!("cargo::rerun-if-changed={}", kind.path().display());
            let Ok(entries) = std::fs::read_dir(kind.path()) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                if path.is_file() && !name.starts_with('.') && !name.starts_with("README") {
                    let kind = kind.file_name().to_string_lossy().into_owned();
                    files.push((format!("{kind}/{name}"), path));
                }
            }
        }
    }
    files.sort();
    let mut out = String::from(
        "/// (path under the feeds directory, contents)\npub const SAMPLE_FEEDS: &[(&str, &[u8])] = &[\n",
    );
    for (rel, path) in &files {
        let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
        let _ = writeln!(
            out,
            "    ({rel:?}, include_bytes!({:?})),",
            abs.display().to_string()
        );
    }
    out.push_str("];\n");
    let dest =
        Path::new(&std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into())).join("sample_feeds.rs");
    if let Err(e) = std::fs::write(&dest, out) {
        panic!("writing {}: {e}", dest.display());
    }
}
