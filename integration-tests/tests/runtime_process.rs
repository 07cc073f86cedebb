//! The container process: args, env, cwd, user and groups, umask, rlimits,
//! oom_score_adj, no_new_privs, capabilities, and the terminal.

use integration_tests::*;
use serde_json::json;

/// Runs a container made by `edit` in the foreground; returns its stdout.
fn run_process(prefix: &str, edit: impl FnOnce(&mut Spec)) -> String {
    let rt = Runtime::new();
    let id = rt.new_id(prefix);
    let bundle = rt.bundle(&id, edit);
    rt.run_container(&bundle, &id, &[]).ok().stdout
}

fn status_field<'a>(status: &'a str, field: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in:\n{status}"))
        .trim()
}

#[test]
fn args_reach_the_process_intact() {
    let stdout = run_process("args", |s| {
        s.args(&[
            "sh",
            "-c",
            "printf '[%s]' \"$0\" \"$@\"",
            "zero",
            "a",
            "b c",
            "",
            "*",
        ]);
    });
    assert_eq!(stdout, "[zero][a][b c][][*]");
}

#[test]
fn env_is_exactly_the_configured_one() {
    let stdout = run_process("env", |s| {
        s.set(
            "/process/env",
            json!([
                CONTAINER_PATH,
                "FOO=bar",
                "EMPTY=",
                "WITH_EQUALS=a=b",
                "HOME=/home/x"
            ]),
        );
        s.args(&["env"]);
    });
    let mut vars: Vec<&str> = stdout.lines().collect();
    vars.sort_unstable();
    assert_eq!(
        vars,
        [
            "EMPTY=",
            "FOO=bar",
            "HOME=/home/x",
            CONTAINER_PATH,
            "WITH_EQUALS=a=b"
        ]
    );
}

#[test]
fn cwd_is_the_configured_directory() {
    let stdout = run_process("cwd", |s| {
        s.cwd("/etc");
        s.args(&["pwd"]);
    });
    assert_eq!(stdout, "/etc\n");
}

#[test]
fn missing_cwd_is_created() {
    let rt = Runtime::new();
    let id = rt.new_id("newcwd");
    let bundle = rt.bundle(&id, |s| {
        s.readonly_root(false);
        s.cwd("/new/dir");
        s.args(&["pwd"]);
    });
    let out = rt.run_container(&bundle, &id, &[]).ok();
    assert_eq!(out.stdout, "/new/dir\n");
    assert!(bundle.rootfs().join("new/dir").is_dir());
}

#[test]
fn user_group_and_additional_groups() {
    let stdout = run_process("user", |s| {
        s.user(1000, 1000);
        s.set("/process/user/additionalGids", json!([100, 5]));
        s.sh("id -u; id -g; grep -E '^(Uid|Gid|Groups):' /proc/self/status");
    });
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("1000"), "{stdout}");
    assert_eq!(lines.next(), Some("1000"), "{stdout}");
    let status = lines.collect::<Vec<_>>().join("\n");
    // real, effective, saved and filesystem ids
    assert_eq!(status_field(&status, "Uid"), "1000\t1000\t1000\t1000");
    assert_eq!(status_field(&status, "Gid"), "1000\t1000\t1000\t1000");
    let mut groups: Vec<u32> = status_field(&status, "Groups")
        .split_whitespace()
        .map(|g| g.parse().expect("gid"))
        .collect();
    groups.sort_unstable();
    assert_eq!(groups, [5, 100]);
}

#[test]
fn umask_is_applied() {
    let stdout = run_process("umask", |s| {
        s.set("/process/user/umask", json!(0o027));
        s.sh("umask; mkdir /tmp/d && stat -c %a /tmp/d");
        s.mount("/tmp", "tmpfs", "tmpfs", &["size=1m"]);
    });
    assert_eq!(stdout, "0027\n750\n");
}

#[test]
fn rlimits_are_applied() {
    let stdout = run_process("rlimit", |s| {
        s.set(
            "/process/rlimits",
            json!([
                {"type": "RLIMIT_NOFILE", "soft": 123, "hard": 456},
                {"type": "RLIMIT_NPROC", "soft": 77, "hard": 77}
            ]),
        );
        s.sh("ulimit -n; grep -E '^Max (open files|processes)' /proc/self/limits");
    });
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("123"), "{stdout}");
    let limits: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    assert!(
        limits.contains(&vec!["Max", "open", "files", "123", "456", "files"]),
        "{stdout}"
    );
    assert!(
        limits.contains(&vec!["Max", "processes", "77", "77", "processes"]),
        "{stdout}"
    );
}

#[test]
fn oom_score_adj_is_applied() {
    let stdout = run_process("oom", |s| {
        s.set("/process/oomScoreAdj", json!(500));
        s.args(&["cat", "/proc/self/oom_score_adj"]);
    });
    assert_eq!(stdout, "500\n");
}

#[test]
fn no_new_privileges_sets_the_flag() {
    for (on, expected) in [(true, "1"), (false, "0")] {
        let stdout = run_process("nnp", |s| {
            s.set("/process/noNewPrivileges", json!(on));
            s.args(&["cat", "/proc/self/status"]);
        });
        assert_eq!(
            status_field(&stdout, "NoNewPrivs"),
            expected,
            "noNewPrivileges {on}"
        );
    }
}

#[test]
fn capabilities_match_the_config() {
    let caps = [
        "CAP_CHOWN",
        "CAP_KILL",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
    ];
    let stdout = run_process("caps", |s| {
        s.set(
            "/process/capabilities",
            json!({"bounding": caps, "effective": caps, "permitted": caps,
                   "inheritable": [], "ambient": []}),
        );
        s.args(&["cat", "/proc/self/status"]);
    });
    let mask = cap_mask(&caps);
    assert_eq!(status_caps(&stdout, "CapBnd"), mask, "{stdout}");
    assert_eq!(status_caps(&stdout, "CapEff"), mask, "{stdout}");
    assert_eq!(status_caps(&stdout, "CapPrm"), mask, "{stdout}");
    assert_eq!(status_caps(&stdout, "CapInh"), 0, "{stdout}");
    assert_eq!(status_caps(&stdout, "CapAmb"), 0, "{stdout}");
}

#[test]
fn dropped_capability_is_denied() {
    let caps = ["CAP_KILL"];
    let stdout = run_process("nochown", |s| {
        s.set(
            "/process/capabilities",
            json!({"bounding": caps, "effective": caps, "permitted": caps}),
        );
        s.mount("/tmp", "tmpfs", "tmpfs", &["size=1m"]);
        s.sh("touch /tmp/f; chown 1000 /tmp/f 2>&1; stat -c %u /tmp/f");
    });
    assert!(stdout.contains("Operation not permitted"), "{stdout}");
    assert!(stdout.ends_with("0\n"), "{stdout}");
}

#[test]
fn ambient_capabilities_reach_a_non_root_user() {
    let caps = ["CAP_NET_BIND_SERVICE"];
    let stdout = run_process("ambient", |s| {
        s.user(1000, 1000);
        s.set(
            "/process/capabilities",
            json!({"bounding": caps, "effective": caps, "permitted": caps,
                   "inheritable": caps, "ambient": caps}),
        );
        s.args(&["cat", "/proc/self/status"]);
    });
    let mask = cap_mask(&caps);
    assert_eq!(status_caps(&stdout, "CapAmb"), mask, "{stdout}");
    assert_eq!(status_caps(&stdout, "CapEff"), mask, "{stdout}");
    assert_eq!(status_caps(&stdout, "CapBnd"), mask, "{stdout}");
}

#[test]
fn terminal_is_a_pty_sent_to_the_console_socket() {
    let rt = Runtime::new();
    let id = rt.new_id("tty");
    let socket = ConsoleSocket::bind(&rt.tmp().join("console.sock"));
    let bundle = rt.bundle(&id, |s| {
        s.terminal(true);
        s.set("/process/consoleSize", json!({"height": 30, "width": 100}));
        s.sh(
            "tty; test -t 0 && echo stdin-tty; test -t 1 && echo stdout-tty; \
              test -t 2 && echo stderr-tty; stty size",
        );
    });
    let created = rt
        .create(&bundle, &id, &["--console-socket", socket.path_str()])
        .ok();
    let mut pty = socket.receive(WAIT_TIMEOUT);
    rt.run(&["start", &id]).ok();
    let text = pty.read_to_end(WAIT_TIMEOUT).replace("\r\n", "\n");
    assert_eq!(
        text, "/dev/pts/0\nstdin-tty\nstdout-tty\nstderr-tty\n30 100\n",
        "pty output"
    );
    // Nothing went to the runtime's own stdout.
    assert_eq!(created.stdout_now(), "");
    rt.wait_status(&id, "stopped");
}

#[test]
fn terminal_input_reaches_the_process() {
    let rt = Runtime::new();
    let id = rt.new_id("ttyin");
    let socket = ConsoleSocket::bind(&rt.tmp().join("console.sock"));
    let bundle = rt.bundle(&id, |s| {
        s.terminal(true);
        s.sh("echo ready; read line; echo got:$line");
    });
    rt.create(&bundle, &id, &["--console-socket", socket.path_str()])
        .ok();
    let mut pty = socket.receive(WAIT_TIMEOUT);
    rt.run(&["start", &id]).ok();
    pty.read_until("ready", WAIT_TIMEOUT);
    pty.write_all(b"hello\n");
    let text = pty.read_to_end(WAIT_TIMEOUT);
    assert!(text.contains("got:hello"), "{text:?}");
}
