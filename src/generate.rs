//! `tc generate man|completions DIR`: the man pages and shell completions come from the clap
//! definition itself, so they cannot drift from `--help` (a test byte-compares the committed
//! copies with fresh output).

use std::path::Path;

use clap::CommandFactory;

use crate::cli::{Cli, GenerateArgs};
use crate::error::{Error, ExitCode, Result};

pub fn run(a: GenerateArgs) -> Result<ExitCode> {
    std::fs::create_dir_all(&a.dir)
        .map_err(|e| Error::failed(format!("creating {}: {e}", a.dir.display())))?;
    match a.what.as_str() {
        "man" => man(&a.dir),
        _ => completions(&a.dir),
    }
    .map_err(|e| Error::failed(format!("writing into {}: {e}", a.dir.display())))?;
    Ok(ExitCode::Ok)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(dir.join(name), bytes)
}

/// `tc.1`, then one page per visible subcommand path: `tc-cpe-start.1`, ...
fn man(dir: &Path) -> std::io::Result<()> {
    // The version alone, not the commit: the committed pages must not change with every commit.
    let mut cmd = Cli::command().version(env!("CARGO_PKG_VERSION"));
    cmd.build();
    render(dir, &cmd, "tc")
}

fn render(dir: &Path, cmd: &clap::Command, name: &str) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let page = cmd.clone().name(name.to_string());
    clap_mangen::Man::new(page).render(&mut buf)?;
    write(dir, &format!("{name}.1"), &buf)?;
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        render(dir, sub, &format!("{name}-{}", sub.get_name()))?;
    }
    Ok(())
}

fn completions(dir: &Path) -> std::io::Result<()> {
    use clap_complete::Shell;
    for (shell, file) in [
        (Shell::Bash, "tc.bash"),
        (Shell::Zsh, "_tc"),
        (Shell::Fish, "tc.fish"),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "tc", &mut buf);
        write(dir, file, &buf)?;
    }
    Ok(())
}
