//! Hooks: each kind runs once, in order, in the right namespace, with the
//! container state on stdin; a failing or hanging hook fails the operation
//! and leaves nothing behind.

use std::path::Path;
use std::time::{Duration, Instant};

use integration_tests::*;
use serde_json::{json, Value};

/// A hook running `sh -c` that appends "<name> <status from the state on
/// stdin> <$HOOK_VAR>" to `log`. `sh` is the host's for the hooks that run
/// from the runtime's namespace and busybox for startContainer, which is
/// resolved in the container.
fn logging_hook(name: &str, log: &Path) -> Value {
    let script = format!(
        "state=$(cat); status=$(echo \"$state\" | sed -n 's/.*\"status\" *: *\"\\([a-z]*\\)\".*/\\1/p'); \
         echo \"{name} $status $HOOK_VAR\" >> {}",
        log.display()
    );
    json!({"path": "/bin/sh", "args": ["sh", "-c", script], "env": ["HOOK_VAR=from-hook-env", CONTAINER_PATH]})
}

fn log_lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn hooks_run_once_each_in_order() {
    let rt = Runtime::new();
    let id = rt.new_id("hooks");
    let dir = rt.host_dir("hooklog");
    let host_log = dir.join("log");
    let bundle = rt.bundle(&id, |s| {
        s.bind(&dir, "/hooklog", &[]);
        s.hook("prestart", logging_hook("prestart", &host_log));
        s.hook("createRuntime", logging_hook("createRuntime", &host_log));
        // Runs in the container's namespaces before the root switch: host path.
        s.hook(
            "createContainer",
            logging_hook("createContainer", &host_log),
        );
        // Resolved and run inside the container: the bind-mounted path.
        s.hook(
            "startContainer",
            logging_hook("startContainer", Path::new("/hooklog/log")),
        );
        s.hook("poststart", logging_hook("poststart", &host_log));
        s.hook("poststop", logging_hook("poststop", &host_log));
        s.sh("trap 'exit 0' TERM; echo ready; sleep 1000 & wait");
    });

    let count = |name: &str| {
        log_lines(&host_log)
            .iter()
            .filter(|l| l.split(' ').next() == Some(name))
            .count()
    };
    let created = rt.create(&bundle, &id, &[]).ok();
    assert_eq!(
        log_lines(&host_log)[..3],
        [
            "prestart creating from-hook-env",
            "createRuntime creating from-hook-env",
            "createContainer creating from-hook-env",
        ]
    );
    assert_eq!(count("startContainer"), 0, "startContainer ran at create");
    rt.run(&["start", &id]).ok();
    created.wait_stdout("ready");
    let lines = log_lines(&host_log);
    assert!(
        lines.contains(&"startContainer created from-hook-env".to_owned()),
        "{lines:?}"
    );
    // (runc 1.1 runs poststart at create: see berth_only_poststart_runs_at_start.)
    assert_eq!(count("poststart"), 1, "{lines:?}");
    rt.run(&["kill", &id, "TERM"]).ok();
    rt.wait_status(&id, "stopped");
    assert_eq!(log_lines(&host_log), lines, "a hook ran on kill");
    rt.run(&["delete", &id]).ok();
    let lines = log_lines(&host_log);
    assert_eq!(lines.len(), 6, "{lines:?}");
    assert_eq!(lines[5], "poststop stopped from-hook-env");
    for name in [
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststart",
        "poststop",
    ] {
        assert_eq!(count(name), 1, "{name} did not run exactly once: {lines:?}");
    }
}

/// berth-specific: runc 1.1 runs poststart hooks during create (fixed in
/// runc 1.2); the spec says after the process started, before `start` returns.
#[test]
fn berth_only_poststart_runs_at_start() {
    let rt = Runtime::new();
    let id = rt.new_id("poststart");
    let dir = rt.host_dir("poststart");
    let log = dir.join("log");
    let bundle = rt.bundle(&id, |s| {
        s.bind(&dir, "/hooklog", &[]);
        s.hook(
            "startContainer",
            logging_hook("startContainer", Path::new("/hooklog/log")),
        );
        s.hook("poststart", logging_hook("poststart", &log));
        s.args(&["sleep", "1000"]);
    });
    rt.create(&bundle, &id, &[]).ok();
    assert_eq!(log_lines(&log), Vec::<String>::new(), "hooks ran at create");
    rt.run(&["start", &id]).ok();
    assert_eq!(
        log_lines(&log),
        [
            "startContainer created from-hook-env",
            "poststart running from-hook-env"
        ]
    );
}

#[test]
fn hooks_receive_the_container_state() {
    let rt = Runtime::new();
    let id = rt.new_id("hookstate");
    let dir = rt.host_dir("hookstate");
    let state_file = dir.join("state.json");
    let bundle = rt.bundle(&id, |s| {
        s.hook(
            "createRuntime",
            json!({"path": "/bin/sh", "args": ["sh", "-c", format!("cat > {}", state_file.display())]}),
        );
        s.args(&["sleep", "1000"]);
    });
    rt.create(&bundle, &id, &[]).ok();
    let state: Value = serde_json::from_str(&read(&state_file)).expect("hook stdin is JSON");
    assert_eq!(state["id"], id.as_str(), "{state}");
    assert_eq!(state["status"], "creating", "{state}");
    assert_eq!(state["pid"], rt.pid(&id), "{state}");
    assert_eq!(
        Path::new(state["bundle"].as_str().expect("bundle")),
        bundle.path()
    );
    assert!(state["ociVersion"]
        .as_str()
        .is_some_and(|v| v.starts_with("1.")));
}

#[test]
fn hook_timeout_fails_create() {
    let rt = Runtime::new();
    let id = rt.new_id("hooktimeout");
    let bundle = rt.bundle(&id, |s| {
        s.hook(
            "prestart",
            json!({"path": "/bin/sh", "args": ["sh", "-c", "exec sleep 30"], "timeout": 1}),
        );
        s.args(&["sleep", "1000"]);
    });
    let started = Instant::now();
    let out = rt.create(&bundle, &id, &[]).failed();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "create took {:?} with a 1s hook timeout",
        started.elapsed()
    );
    assert!(
        out.stderr.contains("timed out") || out.stderr.contains("timeout"),
        "{out}"
    );
    rt.run(&["state", &id]).failed_with("does not exist");
    rt.assert_nothing_left(&id, bundle.cgroups_path().as_deref());
}

#[test]
fn failing_hook_fails_create() {
    let rt = Runtime::new();
    let id = rt.new_id("hookfail");
    let bundle = rt.bundle(&id, |s| {
        s.hook(
            "createRuntime",
            json!({"path": "/bin/sh", "args": ["sh", "-c", "echo hook-broke >&2; exit 3"]}),
        );
        s.args(&["sleep", "1000"]);
    });
    let out = rt.create(&bundle, &id, &[]).failed();
    assert!(!out.stderr.is_empty(), "{out}");
    rt.run(&["state", &id]).failed_with("does not exist");
    rt.assert_nothing_left(&id, bundle.cgroups_path().as_deref());
}

#[test]
fn poststop_runs_when_run_exits() {
    let rt = Runtime::new();
    let id = rt.new_id("hookrun");
    let dir = rt.host_dir("hookrun");
    let log = dir.join("log");
    let bundle = rt.bundle(&id, |s| {
        s.hook("poststart", logging_hook("poststart", &log));
        s.hook("poststop", logging_hook("poststop", &log));
        s.args(&["true"]);
    });
    rt.run_container(&bundle, &id, &[]).ok();
    let lines = log_lines(&log);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("poststart "), "{lines:?}");
    assert_eq!(lines[1], "poststop stopped from-hook-env");
}
