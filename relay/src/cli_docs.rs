//! Shell completions and man pages, generated from a binary's clap definition: the
//! `completions SHELL` and `man` subcommands of `relay` and `defender-lite`, and what the
//! packages install (`deploy/debian/`).

use std::path::Path;

/// The shells completions are made for.
pub use clap_complete::Shell;

/// The completion script of `cmd` for `shell`, to stdout.
pub fn completions(mut cmd: clap::Command, shell: Shell) -> std::io::Result<()> {
    let name = cmd.get_name().to_owned();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut script);
    crate::stdout::out_bytes(&script)
}

/// Man pages of `cmd`: with `out_dir`, one page per command and subcommand written there
/// (`relay.1`, `relay-serve.1`, ...), their names listed on stdout; without it, the top
/// page to stdout (`relay man | man -l -`).
pub fn man(cmd: clap::Command, out_dir: Option<&Path>) -> std::io::Result<()> {
    match out_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            let name = cmd.get_name().to_owned();
            // generate_to builds the command itself (a prior build() adds `help` pages).
            clap_mangen::generate_to(cmd, dir)?;
            let mut pages: Vec<String> = std::fs::read_dir(dir)?
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&name) && n.ends_with(".1"))
                .collect();
            pages.sort();
            for page in pages {
                crate::stdout::outln(format_args!("{}", dir.join(page).display()))?;
            }
            Ok(())
        }
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut page)?;
            crate::stdout::out_bytes(&page)
        }
    }
}
