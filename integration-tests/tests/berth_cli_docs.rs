//! What the `berth` command line says about itself: `berth completion`
//! scripts that complete commands and flags in a real bash, and `berth
//! manpages` writing a page per command. No daemon is needed.

use std::path::Path;
use std::process::Command;

use integration_tests::engine::berth_binary;

/// `berth ARGS`: its stdout, which must come with success.
fn berth(args: &[&str]) -> String {
    let out = Command::new(berth_binary())
        .args(args)
        .env_remove("DOCKER_HOST")
        .output()
        .expect("run berth");
    assert!(
        out.status.success(),
        "berth {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What bash's completion offers for `words`, the cursor on the last one.
fn complete_in_bash(script: &Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let cur = words.last().copied().unwrap_or("");
    let prev = words.len().checked_sub(2).map_or("", |i| words[i]);
    let program = format!(
        "source '{}'; COMP_WORDS=({}); COMP_CWORD={}; _berth berth '{cur}' '{prev}'; \
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        quoted.join(" "),
        words.len() - 1
    );
    let out = Command::new("bash")
        .args(["--norc", "-c", &program])
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "bash: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn the_bash_completion_completes_commands_subcommands_and_flags() {
    let dir = tempfile::tempdir().expect("temp dir");
    let script = dir.path().join("berth.bash");
    std::fs::write(&script, berth(&["completion", "bash"])).expect("write script");
    assert_eq!(complete_in_bash(&script, &["berth", "netw"]), ["network"]);
    let subs = complete_in_bash(&script, &["berth", "network", "c"]);
    assert!(subs.contains(&"create".to_string()), "{subs:?}");
    assert!(subs.contains(&"connect".to_string()), "{subs:?}");
    let flags = complete_in_bash(&script, &["berth", "run", "--netw"]);
    assert_eq!(flags, ["--network", "--network-alias"]);
}

#[test]
fn zsh_and_fish_scripts_name_the_same_commands() {
    let zsh = berth(&["completion", "zsh"]);
    assert!(
        zsh.starts_with("#compdef berth"),
        "{}",
        &zsh[..80.min(zsh.len())]
    );
    let fish = berth(&["completion", "fish"]);
    for command in ["network", "volume", "build", "cp"] {
        assert!(zsh.contains(&format!("'{command}:")), "zsh lacks {command}");
        assert!(
            fish.contains(&format!("-a \"{command}\"")),
            "fish lacks {command}"
        );
    }
    let out = Command::new(berth_binary())
        .args(["completion", "tcsh"])
        .output()
        .expect("run berth");
    assert!(!out.status.success(), "an unknown shell is refused");
}

#[test]
fn manpages_writes_a_page_per_command() {
    let dir = tempfile::tempdir().expect("temp dir");
    let listed = berth(&["manpages", dir.path().to_str().expect("utf-8 path")]);
    assert!(listed.lines().count() > 50, "{listed}");
    for page in [
        "berth.1",
        "berth-run.1",
        "berth-network-create.1",
        "berth-volume-ls.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page)).expect(page);
        assert!(text.contains(".TH"), "{page} is not a man page");
    }
    let run = std::fs::read_to_string(dir.path().join("berth-run.1")).expect("berth-run.1");
    assert!(run.contains("network"), "the run page lists --network");
    assert!(
        !dir.path().join("berth-manpages.1").exists(),
        "the hidden command has no page"
    );
}

/// The subcommands `berth PATH --help` lists under "Commands:".
fn listed_commands(help: &str) -> Vec<String> {
    let Some((_, after)) = help.split_once("\nCommands:\n") else {
        return Vec::new();
    };
    after
        .lines()
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn every_command_has_help_with_examples_of_itself() {
    let mut pending = vec![Vec::<String>::new()];
    let mut walked = 0;
    while let Some(path) = pending.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let help = berth(&args);
        let typed = format!("berth {}", path.join(" "));
        let examples = help
            .split_once("\nExamples:\n")
            .map(|(_, e)| e)
            .unwrap_or_else(|| panic!("`{typed} --help` has no Examples section:\n{help}"));
        let lines: Vec<&str> = examples.lines().filter(|l| !l.is_empty()).collect();
        assert!(!lines.is_empty(), "`{typed} --help`: no examples");
        // A group's examples may show its subcommands; a command's show
        // the command itself, as typed.
        let subs = listed_commands(&help);
        for line in &lines {
            let line = line.trim_start();
            assert!(
                line.starts_with(typed.trim_end()) || line.contains(&format!("| {typed}")),
                "`{typed} --help`: example {line:?} is not of this command"
            );
        }
        for sub in subs {
            let mut next = path.clone();
            next.push(sub);
            pending.push(next);
        }
        walked += 1;
    }
    // The commands of docker's CLI berth has, and their groups.
    assert!(walked > 100, "only {walked} commands walked");
}

#[test]
fn man_pages_carry_the_examples() {
    let dir = tempfile::tempdir().expect("temp dir");
    berth(&["manpages", &dir.path().to_string_lossy()]);
    let page = std::fs::read_to_string(dir.path().join("berth-context-create.1"))
        .expect("berth-context-create.1");
    assert!(page.contains("Examples:"), "{page}");
    assert!(
        page.contains("berth context create remote \\-\\-docker host=tcp://"),
        "{page}"
    );
}
