//! `exec`: extra processes in a running container.

use integration_tests::*;
use serde_json::json;

/// A running container whose init is `sleep 1000`, with FOO=from-config.
fn running(rt: &Runtime, prefix: &str) -> String {
    let id = rt.new_id(prefix);
    let bundle = rt.bundle(&id, |s| {
        s.env("FOO", "from-config");
        s.hostname("exec-host");
        s.args(&["sleep", "1000"]);
    });
    rt.create_and_start(&bundle, &id);
    id
}

#[test]
fn exec_prints_and_propagates_the_exit_status() {
    let rt = Runtime::new();
    let id = running(&rt, "exec");
    let out = rt.exec(&id, &["echo", "hi"]).ok();
    assert_eq!(out.stdout, "hi\n");
    let out = rt.exec(&id, &["sh", "-c", "echo err >&2; exit 7"]);
    assert_eq!(out.code(), 7, "{out}");
    assert!(out.stderr.contains("err"), "{out}");
    assert_eq!(rt.status(&id), "running");
}

#[test]
fn exec_joins_the_container_namespaces() {
    let rt = Runtime::new();
    let id = running(&rt, "execns");
    let init = rt.pid(&id);
    let out = rt
        .exec(&id, &["sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '; echo; hostname; echo $FOO; for ns in pid mnt net; do readlink /proc/self/ns/$ns; done"])
        .ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[..3],
        ["sleep 1000 ", "exec-host", "from-config"],
        "{out}"
    );
    for (line, ns) in lines[3..].iter().zip(["pid", "mnt", "net"]) {
        let init_ns = std::fs::read_link(format!("/proc/{init}/ns/{ns}")).expect("readlink");
        assert_eq!(
            *line,
            init_ns.to_string_lossy(),
            "{ns} namespace differs from init's"
        );
    }
    // The exec'd process was a member of the container while it ran; it is gone now.
    let ps = rt.run(&["ps", "--format", "json", &id]).ok().json();
    assert_eq!(ps, json!([init]));
}

#[test]
fn exec_with_env_cwd_and_user() {
    let rt = Runtime::new();
    let id = running(&rt, "execopts");
    let out = rt
        .run(&[
            "exec",
            "--env",
            "BAR=1",
            "--env",
            "FOO=overridden",
            "--cwd",
            "/etc",
            "--user",
            "1000:100",
            &id,
            "sh",
            "-c",
            "echo $BAR $FOO; pwd; id -u; id -g",
        ])
        .ok();
    assert_eq!(out.stdout, "1 overridden\n/etc\n1000\n100\n");
}

#[test]
fn exec_with_a_process_file() {
    let rt = Runtime::new();
    let id = running(&rt, "execproc");
    let process = rt.tmp().join("process.json");
    write(
        &process,
        json!({
            "terminal": false,
            "user": {"uid": 1000, "gid": 1000, "additionalGids": [5]},
            "args": ["sh", "-c", "echo $ONLY; pwd; id -u; grep ^Groups: /proc/self/status; grep ^CapBnd: /proc/self/status"],
            "env": [CONTAINER_PATH, "ONLY=from-process-json"],
            "cwd": "/tmp",
            "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]}
        })
        .to_string(),
    );
    let out = rt
        .run(&["exec", "--process", process.to_str().expect("utf-8"), &id])
        .ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[..3], ["from-process-json", "/tmp", "1000"], "{out}");
    assert_eq!(
        lines[3].split_whitespace().collect::<Vec<_>>(),
        ["Groups:", "5"],
        "{out}"
    );
    assert_eq!(
        status_caps(&out.stdout, "CapBnd"),
        cap_mask(&["CAP_KILL"]),
        "{out}"
    );
}

#[test]
fn exec_detach_writes_the_pid_file() {
    let rt = Runtime::new();
    let id = running(&rt, "execdetach");
    let pid_file = rt.tmp().join("exec.pid");
    let out = rt
        .run(&[
            "exec",
            "--detach",
            "--pid-file",
            pid_file.to_str().expect("utf-8"),
            &id,
            "sleep",
            "999",
        ])
        .ok();
    assert_eq!(out.stdout, "");
    let pid: i64 = read(&pid_file).trim().parse().expect("pid in the pid file");
    assert!(pid_alive(pid), "exec'd process {pid} is not running");
    let cmdline = read(format!("/proc/{pid}/cmdline"));
    assert_eq!(cmdline, "sleep\0999\0");
    let ps = rt.run(&["ps", "--format", "json", &id]).ok().json();
    assert!(
        ps.as_array().is_some_and(|p| p.contains(&json!(pid))),
        "{pid} not in ps: {ps}"
    );
    // Killing the container kills the exec'd process too.
    rt.run(&["kill", "--all", &id, "KILL"]).ok();
    wait_until("the exec'd process to die", WAIT_TIMEOUT, || {
        !pid_alive(pid)
    });
}

#[test]
fn exec_with_a_tty() {
    let rt = Runtime::new();
    let id = running(&rt, "exectty");
    let socket = ConsoleSocket::bind(&rt.tmp().join("exec-console.sock"));
    rt.run(&[
        "exec",
        "--tty",
        "--detach",
        "--console-socket",
        socket.path_str(),
        &id,
        "sh",
        "-c",
        "tty; test -t 0 && echo stdin-tty",
    ])
    .ok();
    let mut pty = socket.receive(WAIT_TIMEOUT);
    let text = pty.read_to_end(WAIT_TIMEOUT).replace("\r\n", "\n");
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.first().is_some_and(|l| l.starts_with("/dev/pts/")),
        "{text:?}"
    );
    assert_eq!(lines.get(1), Some(&"stdin-tty"), "{text:?}");
}

#[test]
fn exec_into_a_stopped_container_fails() {
    let rt = Runtime::new();
    let id = rt.new_id("execstopped");
    let bundle = rt.bundle(&id, |s| {
        s.args(&["true"]);
    });
    rt.create_and_start(&bundle, &id);
    rt.wait_status(&id, "stopped");
    let out = rt.exec(&id, &["echo", "hi"]).failed();
    assert_eq!(out.stdout, "");
    assert!(
        out.stderr.contains("not running") || out.stderr.contains("stopped"),
        "{out}"
    );
}

/// runc's words.
#[test]
fn exec_into_a_stopped_container_says_so() {
    let rt = Runtime::new();
    let id = rt.new_id("execstopped2");
    let bundle = rt.bundle(&id, |s| {
        s.args(&["true"]);
    });
    rt.create_and_start(&bundle, &id);
    rt.wait_status(&id, "stopped");
    rt.exec(&id, &["echo", "hi"])
        .failed_with("cannot exec in a stopped container");
}

#[test]
fn exec_into_an_unknown_container_fails() {
    let rt = Runtime::new();
    let id = unique_id("nosuch");
    rt.exec(&id, &["echo", "hi"]).failed_with("does not exist");
}
