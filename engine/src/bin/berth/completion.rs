//! `berth completion SHELL` prints a completion script for bash, zsh or
//! fish, generated from the command definitions themselves (clap_complete),
//! as `docker completion` prints one; the hidden `berth manpages DIR`
//! writes a man page per command (clap_mangen) for `make install`. Both
//! follow every command and flag as they are defined, so neither can fall
//! behind the code.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Command;

/// `berth completion`.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  berth completion bash > /etc/bash_completion.d/berth
  berth completion zsh > \"${fpath[1]}/_berth\"
  berth completion fish > ~/.config/fish/completions/berth.fish")]
pub struct CompletionArgs {
    /// The shell to complete in
    #[arg(value_enum)]
    shell: Shell,
}

/// The shells a script is made for.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// `berth manpages`.
#[derive(clap::Args)]
pub struct ManpagesArgs {
    /// The directory the pages are written to (made if missing)
    dir: PathBuf,
}

/// Prints the completion script for `cli`, the whole command line.
pub fn completion(mut cli: Command, args: CompletionArgs) -> anyhow::Result<()> {
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    // Into memory first: clap_complete panics when its writer fails (a
    // closed pipe, as with `| head`).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cli, "berth", &mut script);
    match std::io::stdout().lock().write_all(&script) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("write the completion script")
        }
        _ => Ok(()),
    }
}

/// Writes `berth.1` and a `berth-<command>[-<sub>].1` for every visible
/// command under it into the directory; prints the files' names.
pub fn manpages(mut cli: Command, args: ManpagesArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir).with_context(|| format!("create {}", args.dir.display()))?;
    // Building gives every subcommand its display name ("berth-network-ls").
    cli.build();
    let mut written = Vec::new();
    write_pages(&cli, &args.dir, &mut written)?;
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}

fn write_pages(cmd: &Command, dir: &Path, written: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let name = cmd
        .get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_string();
    let path = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut page)
        .with_context(|| format!("render the man page of {name}"))?;
    std::fs::write(&path, page).with_context(|| format!("write {}", path.display()))?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, dir, written)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli() -> Command {
        Command::new("berth")
            .disable_help_subcommand(true)
            .subcommand(
                Command::new("network")
                    .disable_help_subcommand(true)
                    .subcommand(Command::new("ls")),
            )
            .subcommand(Command::new("secret").hide(true))
    }

    #[test]
    fn a_page_per_visible_command_named_by_its_path() {
        let dir = tempfile::tempdir().unwrap();
        manpages(
            cli(),
            ManpagesArgs {
                dir: dir.path().to_path_buf(),
            },
        )
        .unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["berth-network-ls.1", "berth-network.1", "berth.1"]);
        let page = std::fs::read_to_string(dir.path().join("berth-network-ls.1")).unwrap();
        assert!(page.contains(".TH"), "{page}");
        assert!(page.contains("berth\\-network\\-ls"), "{page}");
    }
}
