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

/// The screen a terminal shows after `raw`: lines as they stand once the
/// cursor moves (up, carriage return) and erasures (line, to end of screen)
/// are applied; colours dropped.
fn screen(raw: &str) -> Vec<String> {
    let mut lines: Vec<Vec<char>> = vec![Vec::new()];
    let (mut row, mut col) = (0usize, 0usize);
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' => {
                row += 1;
                col = 0;
                if lines.len() <= row {
                    lines.push(Vec::new());
                }
            }
            '\r' => col = 0,
            '\x1b' => {
                if chars.peek() != Some(&'[') {
                    continue;
                }
                chars.next();
                let mut arg = String::new();
                let mut op = ' ';
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        op = c;
                        break;
                    }
                    arg.push(c);
                }
                let n: usize = arg.parse().unwrap_or(1);
                match (op, arg.as_str()) {
                    ('A', _) => row = row.saturating_sub(n),
                    ('B', _) => row += n,
                    ('K', "2") => lines[row].clear(),
                    ('J', _) => {
                        lines[row].truncate(col);
                        lines.truncate(row + 1);
                    }
                    _ => {}
                }
                while lines.len() <= row {
                    lines.push(Vec::new());
                }
            }
            c => {
                let line = &mut lines[row];
                if line.len() <= col {
                    line.resize(col, ' ');
                    line.push(c);
                } else {
                    line[col] = c;
                }
                col += 1;
            }
        }
    }
    lines
        .into_iter()
        .map(|l| l.into_iter().collect::<String>().trim_end().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn build_on_a_terminal_shows_steps_collapsed_and_a_failure_open() {
    let d = Berthd::start();
    let ctx = tempfile::tempdir().expect("test set-up");
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nRUN echo out-one && echo out-two && sleep 1\nRUN echo done > /done\n",
    )
    .expect("test set-up");
    let dir = ctx.path().to_string_lossy().into_owned();
    let raw = berth_on_pty(&d, 100, &[], &["build", "-t", "stepped:1", &dir]);
    // While it ran: the spinner turned and the output showed under its step.
    assert!(raw.contains("⠋ [2/3] RUN echo out-one"), "{raw:?}");
    assert!(raw.contains("│ out-one"), "{raw:?}");
    // Once done: a line per step, the output collapsed away.
    let shown = screen(&raw);
    let steps: Vec<&String> = shown.iter().filter(|l| l.starts_with('✔')).collect();
    assert_eq!(steps.len(), 3, "{shown:#?}");
    assert!(steps[0].starts_with("✔ [1/3] FROM busybox"), "{shown:#?}");
    assert!(
        steps[1].starts_with("✔ [2/3] RUN echo out-one"),
        "{shown:#?}"
    );
    let secs: f64 = steps[1]
        .rsplit(' ')
        .next()
        .and_then(|t| t.strip_suffix('s'))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no elapsed time: {:?}", steps[1]));
    assert!(secs >= 1.0, "the sleep 1 step took {secs}s");
    assert!(
        !shown
            .iter()
            .any(|l| l.contains("│") || l.trim() == "out-one"),
        "{shown:#?}"
    );
    assert!(
        shown
            .iter()
            .any(|l| l.starts_with("Successfully tagged stepped:1")),
        "{shown:#?}"
    );
    // Again from the cache.
    let raw = berth_on_pty(&d, 100, &[], &["build", "-t", "stepped:1", &dir]);
    let shown = screen(&raw);
    assert!(
        shown
            .iter()
            .any(|l| l.starts_with("✔ [2/3] RUN") && l.ends_with("CACHED")),
        "{shown:#?} {raw:?}"
    );

    // plain: docker's lines, output and all, on the terminal too.
    let raw = berth_on_pty(&d, 100, &[], &["build", "--progress", "plain", &dir]);
    assert!(raw.contains("Step 2/3 : RUN echo out-one"), "{raw:?}");
    assert!(!raw.contains('✔'), "{raw:?}");

    // A failing step stays open with its output, and the error follows.
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nRUN echo why-it-broke && false\n",
    )
    .expect("test set-up");
    let mut cmd = berth_command(&d, &["build", &dir]);
    cmd.env("TERM", "xterm");
    let (code, raw) = PtyProcess::spawn(cmd, 24, 100).wait(Duration::from_secs(60));
    assert_eq!(code, 1, "{raw:?}");
    let shown = screen(&raw);
    let failed = shown
        .iter()
        .position(|l| l.starts_with("✘ [2/2] RUN echo why-it-broke"))
        .unwrap_or_else(|| panic!("{shown:#?}"));
    assert_eq!(shown[failed + 1].trim(), "│ why-it-broke", "{shown:#?}");
    assert!(
        shown
            .iter()
            .any(|l| l.contains("returned a non-zero code: 1")),
        "{shown:#?}"
    );
    d.docker(&["rmi", "stepped:1"]).ok();
}
