//! berth as a person at a terminal sees it, on a real pseudo-terminal: the
//! default tables with a bold header, states in colour and columns cut to
//! the terminal's width; the same command through a pipe, or with
//! `NO_COLOR`, gives docker's plain table.

use std::process::Command;
use std::time::Duration;

use integration_tests::engine::{berth_binary, Berthd};
use integration_tests::interop::PtyProcess;

/// berth with this daemon, on a pty of `cols` columns.
fn berth_on_pty(d: &Berthd, cols: u16, envs: &[(&str, &str)], args: &[&str]) -> String {
    let mut cmd = berth_command(d, args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let (code, out) = PtyProcess::spawn(cmd, 24, cols).wait(Duration::from_secs(60));
    assert_eq!(code, 0, "berth {args:?} on a pty: {out}");
    out
}

fn berth_command(d: &Berthd, args: &[&str]) -> Command {
    let mut cmd = Command::new(berth_binary());
    cmd.args(args)
        .env("DOCKER_HOST", format!("unix://{}", d.socket().display()))
        .env("DOCKER_CONFIG", d.dir().join("docker-config"))
        .env_remove("BERTH_HOST")
        .env_remove("DOCKER_CONTEXT")
        .env_remove("NO_COLOR")
        .env_remove("COLUMNS");
    cmd
}

/// The text without its ANSI escape sequences.
fn plain(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn tables_on_a_terminal_are_styled_and_fit_its_width() {
    let d = Berthd::start();
    d.docker(&[
        "run",
        "-d",
        "--name",
        "sleeper-with-a-long-name",
        "busybox",
        "sh",
        "-c",
        "while true; do sleep 1; done",
    ])
    .ok();
    d.docker(&["run", "--name", "failed", "busybox", "false"]);

    // A wide terminal: every column whole, the header bold, states coloured.
    let out = berth_on_pty(&d, 200, &[], &["ps", "-a"]);
    assert!(out.contains("\x1b[1mCONTAINER ID"), "{out:?}");
    let up = out
        .lines()
        .find(|l| l.contains("sleeper-with-a-long-name"))
        .unwrap_or_else(|| panic!("no sleeper row: {out:?}"));
    assert!(up.contains("\x1b[32mUp "), "running not green: {up:?}");
    let failed = out
        .lines()
        .find(|l| l.contains("failed"))
        .unwrap_or_else(|| panic!("no failed row: {out:?}"));
    assert!(
        failed.contains("\x1b[31mExited (1)"),
        "exit 1 not red: {failed:?}"
    );

    // A narrow one: no line wider than the terminal, cut with an ellipsis
    // rather than wrapped; the names (the last column) still whole.
    let out = berth_on_pty(&d, 100, &[], &["ps", "-a"]);
    let text = plain(&out);
    for line in text.lines() {
        assert!(
            line.chars().count() <= 100,
            "{line:?} wider than 100:\n{text}"
        );
    }
    assert!(text.contains('…'), "{text}");
    assert!(text.contains("sleeper-with-a-long-name"), "{text}");
    // COLUMNS is the width asked for when set.
    let out = berth_on_pty(&d, 200, &[("COLUMNS", "60")], &["images"]);
    for line in plain(&out).lines() {
        assert!(line.chars().count() <= 60, "{line:?}: COLUMNS=60 ignored");
    }

    // NO_COLOR, a pipe, or --format: docker's bytes, no escapes.
    let out = berth_on_pty(&d, 200, &[("NO_COLOR", "1")], &["ps", "-a"]);
    assert!(!out.contains('\x1b'), "NO_COLOR: {out:?}");
    let piped = berth_command(&d, &["ps", "-a"])
        .output()
        .expect("run berth");
    let piped = String::from_utf8_lossy(&piped.stdout).into_owned();
    assert!(!piped.contains('\x1b'), "{piped:?}");
    assert!(piped.starts_with("CONTAINER ID   IMAGE"), "{piped:?}");
    let out = berth_on_pty(&d, 200, &[], &["ps", "-a", "--format", "table {{.Names}}"]);
    assert!(!out.contains('\x1b'), "--format: {out:?}");
    d.docker(&["rm", "-f", "sleeper-with-a-long-name", "failed"])
        .ok();
}
