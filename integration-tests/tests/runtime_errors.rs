//! Errors as runc reports them, so tools written for runc recognise them:
//! without `--log`, one logrus line on stderr, `time="…" level=error
//! msg="…"` (a JSON line with `--log-format json`); with `--log`, the line
//! in the file and the bare message on stderr; runc's words for the failures
//! tools look for; runc's exit statuses (1, and 255 for `exec`).
//!
//! Every command here runs without the fixture's `--log` (see [`bare`]).
//! The same file passes against runc 1.1.5:
//! `BERTH_RUNTIME=$(which runc) cargo test -p integration-tests --test runtime_errors`.

use std::fs::{self, File};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use integration_tests::*;
use serde_json::{json, Value};

/// What one command without `--log` did.
#[derive(Debug)]
struct Bare {
    args: Vec<String>,
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Bare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`runtime {}` exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.args.join(" "),
            self.code,
            self.stdout,
            self.stderr
        )
    }
}

/// Runs the runtime with the test's `--root`, the global flags `globals`
/// (no `--log` unless given) and `args`, under a deadline.
#[track_caller]
fn bare(rt: &Runtime, globals: &[&str], args: &[&str]) -> Bare {
    let mut all: Vec<String> = vec!["--root".into(), rt.state_root().display().to_string()];
    all.extend(globals.iter().map(|s| s.to_string()));
    all.extend(args.iter().map(|s| s.to_string()));
    let dir = rt.host_dir("bare-io");
    let (out, err) = (dir.join("stdout"), dir.join("stderr"));
    let mut child = Command::new(runtime_binary())
        .args(&all)
        .stdin(Stdio::null())
        .stdout(File::create(&out).expect("create stdout file"))
        .stderr(File::create(&err).expect("create stderr file"))
        .spawn()
        .expect("spawn the runtime");
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the runtime") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`runtime {}` did not exit in time", all.join(" "));
        }
        thread::sleep(Duration::from_millis(5));
    };
    Bare {
        args: all,
        code: exit_code(&status),
        stdout: fs::read_to_string(&out).unwrap_or_default(),
        stderr: fs::read_to_string(&err).unwrap_or_default(),
    }
}

/// A Go `%q` string at the start of `s` (after its opening quote): the
/// text and the rest after the closing quote.
fn go_unquote(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &s[i + 1..])),
            '\\' => {
                let (_, e) = chars.next()?;
                match e {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    'a' => out.push('\u{7}'),
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    'v' => out.push('\u{b}'),
                    'x' | 'u' | 'U' => {
                        let n = match e {
                            'x' => 2,
                            'u' => 4,
                            _ => 8,
                        };
                        let hex: String =
                            (0..n).filter_map(|_| chars.next().map(|x| x.1)).collect();
                        out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                    }
                    other => out.push(other),
                }
            }
            c => out.push(c),
        }
    }
    None
}

/// The `key=value` pairs of a logrus text line, values unquoted; None if
/// the line is not one.
fn parse_logrus(line: &str) -> Option<Vec<(String, String)>> {
    let mut fields = Vec::new();
    let mut rest = line.trim_end();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        if key.is_empty() || key.contains(' ') {
            return None;
        }
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => go_unquote(quoted)?,
            None => {
                let end = after.find(' ').unwrap_or(after.len());
                (after[..end].to_owned(), &after[end..])
            }
        };
        fields.push((key.to_owned(), value));
        rest = after.trim_start();
    }
    Some(fields)
}

/// RFC 3339 as logrus writes it: `2026-12-01T00:00:00Z` or with an offset.
fn is_rfc3339(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && (t.ends_with('Z') || t[19..].contains(['+', '-']))
}

/// The message of the one error a failed command wrote on stderr as a
/// logrus text line; panics unless it failed with `status`, wrote nothing
/// on stdout, and every stderr line is a logrus line, the last an error.
#[track_caller]
fn text_error(out: &Bare, status: i32) -> String {
    assert_eq!(out.code, status, "exit status: {out}");
    assert_eq!(out.stdout, "", "the runtime wrote on stdout: {out}");
    let mut last = None;
    for line in out.stderr.lines() {
        let fields = parse_logrus(line)
            .unwrap_or_else(|| panic!("stderr line is not logrus text: {line:?}\n{out}"));
        let keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).take(3).collect();
        assert_eq!(keys, ["time", "level", "msg"], "{line:?}\n{out}");
        assert!(is_rfc3339(&fields[0].1), "time {:?}\n{out}", fields[0].1);
        last = Some(fields);
    }
    let last = last.unwrap_or_else(|| panic!("nothing on stderr: {out}"));
    assert_eq!(last[1].1, "error", "the last line is no error: {out}");
    assert!(!last[2].1.is_empty(), "empty message: {out}");
    last[2].1.clone()
}

/// `text_error`, and the message contains `phrase`.
#[track_caller]
fn fails_with(out: &Bare, status: i32, phrase: &str) -> String {
    let msg = text_error(out, status);
    assert!(
        msg.contains(phrase),
        "expected {phrase:?} in {msg:?}\n{out}"
    );
    msg
}

/// A container whose process is `args`, created and started.
fn started(rt: &Runtime, prefix: &str, args: &[&str]) -> String {
    let id = rt.new_id(prefix);
    let bundle = rt.bundle(&id, |s| {
        s.args(args);
    });
    rt.create_and_start(&bundle, &id);
    id
}

#[test]
fn every_command_on_a_missing_container_says_it_does_not_exist() {
    let rt = Runtime::new();
    let id = unique_id("nosuch");
    for args in [
        vec!["state", &id],
        vec!["start", &id],
        vec!["kill", &id],
        vec!["kill", &id, "KILL"],
        vec!["kill", "--all", &id, "KILL"],
        // The container is looked up before the signal is read.
        vec!["kill", &id, "NOSUCHSIG"],
        vec!["delete", &id],
        vec!["pause", &id],
        vec!["resume", &id],
        vec!["ps", &id],
        vec!["ps", "--format", "json", &id],
        vec!["events", "--stats", &id],
    ] {
        let out = bare(&rt, &[], &args);
        let msg = fails_with(&out, 1, "does not exist");
        assert_eq!(msg, "container does not exist", "{out}");
    }
    // exec: runc's 255 and its prefix.
    let out = bare(&rt, &[], &["exec", &id, "true"]);
    let msg = fails_with(&out, 255, "does not exist");
    assert_eq!(msg, "exec failed: container does not exist", "{out}");
    // delete --force of an unknown id succeeds, silently.
    let out = bare(&rt, &[], &["delete", "--force", &id]);
    assert_eq!((out.code, out.stderr.as_str()), (0, ""), "{out}");
}

#[test]
fn an_empty_id_is_refused() {
    let rt = Runtime::new();
    for args in [
        vec!["state", ""],
        vec!["start", ""],
        vec!["kill", ""],
        vec!["kill", "", "KILL"],
        vec!["delete", ""],
        vec!["delete", "--force", ""],
        vec!["pause", ""],
        vec!["resume", ""],
    ] {
        let out = bare(&rt, &[], &args);
        let msg = fails_with(&out, 1, "container id cannot be empty");
        assert_eq!(msg, "container id cannot be empty", "{out}");
    }
    let id = rt.new_id("emptyid");
    let bundle = rt.bundle(&id, |s| {
        s.args(&["true"]);
    });
    let dir = bundle.path().to_str().expect("utf-8");
    let out = bare(&rt, &[], &["create", "--bundle", dir, ""]);
    fails_with(&out, 1, "container id cannot be empty");
    let out = bare(&rt, &[], &["exec", "", "true"]);
    fails_with(&out, 255, "container id cannot be empty");
    assert_eq!(rt.state_entries(), Vec::<String>::new());
}

#[test]
fn json_lines_on_stderr_with_log_format_json() {
    let rt = Runtime::new();
    let id = unique_id("nosuch");
    let out = bare(&rt, &["--log-format", "json"], &["kill", &id]);
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(out.stdout, "", "{out}");
    let lines: Vec<Value> = out
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect();
    let last = lines
        .last()
        .unwrap_or_else(|| panic!("nothing on stderr: {out}"));
    assert_eq!(last["level"], "error", "{out}");
    assert_eq!(last["msg"], "container does not exist", "{out}");
    assert!(last["time"].as_str().is_some_and(is_rfc3339), "{out}");
}

#[test]
fn with_a_log_file_the_line_goes_there_and_the_bare_message_to_stderr() {
    let rt = Runtime::new();
    let id = unique_id("nosuch");
    for format in ["json", "text"] {
        let log = rt.host_dir("log").join("runtime.log");
        let log_arg = log.to_str().expect("utf-8");
        let out = bare(
            &rt,
            &["--log", log_arg, "--log-format", format],
            &["state", &id],
        );
        assert_eq!(out.code, 1, "{out}");
        assert_eq!(out.stdout, "", "{out}");
        assert_eq!(out.stderr, "container does not exist\n", "{out}");
        let text = fs::read_to_string(&log).expect("read the log");
        let last = text
            .lines()
            .last()
            .unwrap_or_else(|| panic!("empty log: {out}"));
        let (level, msg) = if format == "json" {
            let v: Value = serde_json::from_str(last).expect("a JSON log line");
            (v["level"].to_string(), v["msg"].to_string())
        } else {
            let f = parse_logrus(last).unwrap_or_else(|| panic!("not logrus: {last:?}"));
            let get = |k: &str| {
                let v = f.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
                format!("{:?}", v.unwrap_or_default())
            };
            (get("level"), get("msg"))
        };
        assert_eq!(level, "\"error\"", "{last}");
        assert_eq!(msg, "\"container does not exist\"", "{last}");
    }
}

#[test]
fn create_failures() {
    let rt = Runtime::new();
    // A missing bundle.
    let id = rt.new_id("nobundle");
    let missing = rt.tmp().join("no-such-bundle");
    let missing = missing.to_str().expect("utf-8");
    let out = bare(&rt, &[], &["create", "--bundle", missing, &id]);
    let msg = fails_with(&out, 1, missing);
    assert!(
        msg.to_lowercase().contains("no such file or directory"),
        "{msg:?}"
    );
    // A config that is not JSON.
    let id = rt.new_id("badjson");
    let bundle = rt.bundle(&id, |_| {});
    write(
        bundle.config_path(),
        "{ \"ociVersion\": \"1.0.2\", \"process\": ",
    );
    let dir = bundle.path().to_str().expect("utf-8");
    let out = bare(&rt, &[], &["create", "--bundle", dir, &id]);
    text_error(&out, 1);
    // A missing config.json.
    fs::remove_file(bundle.config_path()).expect("remove config.json");
    let out = bare(&rt, &[], &["create", "--bundle", dir, &id]);
    fails_with(&out, 1, "config.json");
    assert!(!rt.state_entries().contains(&id));
    // An id in use: refused, the container as it was.
    let id = rt.new_id("dup");
    let bundle = rt.bundle(&id, |s| {
        s.args(&["sleep", "1000"]);
    });
    rt.create(&bundle, &id, &[]).ok();
    let dir = bundle.path().to_str().expect("utf-8");
    let out = bare(&rt, &[], &["create", "--bundle", dir, &id]);
    fails_with(&out, 1, "already exists");
    assert_eq!(rt.status(&id), "created");
    // run of an id in use, the same.
    let out = bare(&rt, &[], &["run", "--detach", "--bundle", dir, &id]);
    fails_with(&out, 1, "already exists");
    assert_eq!(rt.status(&id), "created");
    rt.run(&["delete", &id]).ok();
}

#[test]
fn a_stopped_container_refuses_signals_and_the_rest() {
    let rt = Runtime::new();
    let id = started(&rt, "stopped", &["true"]);
    rt.wait_status(&id, "stopped");
    for args in [
        vec!["kill", &id],
        vec!["kill", &id, "KILL"],
        vec!["pause", &id],
    ] {
        let out = bare(&rt, &[], &args);
        let msg = fails_with(&out, 1, "container not running");
        assert_eq!(msg, "container not running", "{out}");
    }
    let out = bare(&rt, &[], &["resume", &id]);
    fails_with(&out, 1, "container not paused");
    let out = bare(&rt, &[], &["start", &id]);
    fails_with(&out, 1, "cannot start a container that has stopped");
    let out = bare(&rt, &[], &["exec", &id, "true"]);
    fails_with(&out, 255, "cannot exec in a stopped container");
    // kill --all signals what the cgroup still holds: nothing, and succeeds.
    let out = bare(&rt, &[], &["kill", "--all", &id, "KILL"]);
    assert_eq!((out.code, out.stderr.as_str()), (0, ""), "{out}");
    assert_eq!(rt.status(&id), "stopped");
    let out = bare(&rt, &[], &["delete", &id]);
    assert_eq!((out.code, out.stderr.as_str()), (0, ""), "{out}");
}

#[test]
fn a_created_container_takes_a_signal() {
    let rt = Runtime::new();
    let id = rt.new_id("created");
    let bundle = rt.bundle(&id, |s| {
        s.args(&["sleep", "1000"]);
    });
    rt.create(&bundle, &id, &[]).ok();
    let out = bare(&rt, &[], &["kill", &id, "0"]);
    assert_eq!((out.code, out.stderr.as_str()), (0, ""), "{out}");
    let out = bare(&rt, &[], &["kill", &id, "KILL"]);
    assert_eq!((out.code, out.stderr.as_str()), (0, ""), "{out}");
    rt.wait_status(&id, "stopped");
    rt.run(&["delete", &id]).ok();
}

#[test]
fn a_running_container_refuses_what_needs_another_state() {
    let rt = Runtime::new();
    let id = started(&rt, "running", &["sleep", "1000"]);
    let out = bare(&rt, &[], &["kill", &id, "NOSUCHSIG"]);
    let msg = fails_with(&out, 1, "unknown signal");
    assert_eq!(msg, "unknown signal \"NOSUCHSIG\"", "{out}");
    let out = bare(&rt, &[], &["start", &id]);
    let msg = fails_with(&out, 1, "cannot start an already running container");
    assert_eq!(msg, "cannot start an already running container", "{out}");
    let out = bare(&rt, &[], &["delete", &id]);
    let msg = fails_with(&out, 1, "that is not stopped");
    assert_eq!(
        msg,
        format!("cannot delete container {id} that is not stopped: running"),
        "{out}"
    );
    let out = bare(&rt, &[], &["resume", &id]);
    fails_with(&out, 1, "container not paused");
    assert_eq!(rt.status(&id), "running");
    // Paused: start and exec refuse, a SIGKILL still ends it.
    rt.run(&["pause", &id]).ok();
    let out = bare(&rt, &[], &["start", &id]);
    fails_with(&out, 1, "cannot start a container in the paused state");
    let out = bare(&rt, &[], &["exec", &id, "true"]);
    fails_with(&out, 255, "cannot exec in a paused container");
    let out = bare(&rt, &[], &["kill", &id, "KILL"]);
    assert_eq!((out.code, out.stderr.as_str()), (0, ""), "{out}");
    rt.wait_status(&id, "stopped");
    rt.run(&["delete", &id]).ok();
}

#[test]
fn a_usage_error_is_an_error_line_and_status_1() {
    let rt = Runtime::new();
    for args in [vec!["kill"], vec!["delete"], vec!["state"]] {
        let out = bare(&rt, &[], &args);
        assert_eq!(out.code, 1, "{out}");
        // runc prints its usage on stdout first; only stderr is compared.
        let out = Bare {
            stdout: String::new(),
            ..out
        };
        text_error(&out, 1);
    }
}

#[test]
fn running_the_config_runc_spec_writes_prints_nothing() {
    let rt = Runtime::new();
    let id = rt.new_id("quiet");
    // `runc spec`'s capabilities (1.1.5): ambient ones without inheritable
    // ones, which the kernel cannot raise.
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    let bundle = rt.bundle(&id, |s| {
        s.args(&["true"]);
        s.set(
            "/process/capabilities",
            json!({"bounding": caps, "effective": caps, "permitted": caps, "ambient": caps}),
        );
    });
    let dir = bundle.path().to_str().expect("utf-8");
    let out = bare(&rt, &[], &["run", "--bundle", dir, &id]);
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (0, "", ""),
        "{out}"
    );
    assert!(!rt.state_entries().contains(&id));
}

#[test]
fn the_log_parser_reads_logrus_quoting() {
    let fields =
        parse_logrus(r#"time="2026-12-01T00:00:00Z" level=error msg="a \"b\"\n\x01\u00a0" k=v"#)
            .expect("a logrus line");
    assert_eq!(
        fields,
        [
            ("time".to_owned(), "2026-12-01T00:00:00Z".to_owned()),
            ("level".to_owned(), "error".to_owned()),
            ("msg".to_owned(), "a \"b\"\n\u{1}\u{a0}".to_owned()),
            ("k".to_owned(), "v".to_owned()),
        ]
    );
    assert!(parse_logrus("berth-runtime: container x does not exist").is_none());
    assert!(is_rfc3339("2026-12-01T00:00:00+01:00"));
    assert!(!is_rfc3339("yesterday"));
}
