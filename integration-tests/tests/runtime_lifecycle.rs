//! Container lifecycle through the runtime CLI: create, start, state, kill,
//! delete, run, list, ps, pause/resume, and the informational commands.

use std::fs;
use std::path::Path;
use std::time::Duration;

use integration_tests::*;
use serde_json::{json, Value};

/// Prints "ready", then waits; exits 0 on SIGTERM (init of a pid namespace
/// only receives signals it handles).
const SERVE: &str = "trap 'exit 0' TERM; echo ready; sleep 1000 & wait";

#[test]
fn create_start_kill_delete() {
    let rt = Runtime::new();
    let id = rt.new_id("life");
    let bundle = rt.bundle(&id, |s| {
        s.sh(SERVE);
        s.set("/annotations", json!({"org.berth.test": "yes"}));
    });

    let created = rt.create(&bundle, &id, &[]).ok();
    assert_eq!(created.stdout, "", "create printed on stdout");
    let state = rt.state(&id);
    assert_eq!(state["status"], "created", "{state}");
    assert_eq!(state["id"], id.as_str());
    assert!(
        state["ociVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("1.")),
        "{state}"
    );
    assert_eq!(
        Path::new(state["bundle"].as_str().expect("bundle in state")),
        bundle.path()
    );
    assert_eq!(state["annotations"]["org.berth.test"], "yes", "{state}");
    let pid = rt.pid(&id);
    assert!(
        pid_alive(pid),
        "init {pid} of a created container is not alive"
    );
    assert_eq!(created.stdout_now(), "", "the process ran before start");

    rt.run(&["start", &id]).ok();
    created.wait_stdout("ready");
    assert_eq!(rt.status(&id), "running");
    assert_eq!(rt.pid(&id), pid);

    rt.run(&["kill", &id, "TERM"]).ok();
    rt.wait_status(&id, "stopped");
    wait_until("init to exit", WAIT_TIMEOUT, || !pid_alive(pid));

    rt.run(&["delete", &id]).ok();
    rt.run(&["state", &id]).failed_with("does not exist");
    rt.assert_nothing_left(&id, bundle.cgroups_path().as_deref());
}

#[test]
fn process_exiting_by_itself_stops_the_container() {
    let rt = Runtime::new();
    let id = rt.new_id("selfexit");
    let bundle = rt.bundle(&id, |s| {
        s.sh("echo bye");
    });
    let created = rt.create_and_start(&bundle, &id);
    rt.wait_status(&id, "stopped");
    assert_eq!(created.stdout_now(), "bye\n");
    rt.run(&["delete", &id]).ok();
    rt.assert_nothing_left(&id, bundle.cgroups_path().as_deref());
}

#[test]
fn errors_are_logged_as_json_lines() {
    let rt = Runtime::new();
    let id = unique_id("nosuch");
    let out = rt.run(&["state", &id]).failed_with("does not exist");
    assert_eq!(out.stdout, "", "error printed on stdout");
    let entries = rt.log_entries();
    let error = entries
        .iter()
        .find(|e| e["level"] == "error")
        .unwrap_or_else(|| panic!("no error entry in the log: {entries:?}"));
    assert!(
        error["msg"]
            .as_str()
            .is_some_and(|m| m.contains("does not exist")),
        "{error}"
    );
    assert!(
        error["time"].as_str().is_some_and(|t| !t.is_empty()),
        "{error}"
    );
}

#[test]
fn run_prints_the_containers_output() {
    let rt = Runtime::new();
    let id = rt.new_id("echo");
    let bundle = rt.bundle(&id, |s| {
        s.sh("echo hello; echo oops >&2");
    });
    let out = rt.run_container(&bundle, &id, &[]).ok();
    assert_eq!(out.stdout, "hello\n");
    assert!(out.stderr.contains("oops"), "{out}");
    // run deletes the container when its process exits.
    rt.run(&["state", &id]).failed_with("does not exist");
    rt.assert_nothing_left(&id, bundle.cgroups_path().as_deref());
}

#[test]
fn run_exits_with_the_process_exit_status() {
    let rt = Runtime::new();
    let id = rt.new_id("exit3");
    let bundle = rt.bundle(&id, |s| {
        s.sh("exit 3");
    });
    let out = rt.run_container(&bundle, &id, &[]);
    assert_eq!(out.code(), 3, "{out}");
    rt.assert_nothing_left(&id, bundle.cgroups_path().as_deref());
}

#[test]
fn run_of_a_killed_process_exits_128_plus_signal() {
    let rt = Runtime::new();
    let id = rt.new_id("killed");
    let bundle = rt.bundle(&id, |s| {
        s.args(&["sleep", "1000"]);
    });
    rt.track(&id);
    let dir = bundle.path().to_str().expect("utf-8");
    let run = rt.spawn(&["run", "--bundle", dir, &id]);
    rt.wait_status(&id, "running");
    rt.run(&["kill", &id, "KILL"]).ok();
    let out = run.wait(COMMAND_TIMEOUT);
    assert_eq!(out.code(), 128 + libc::SIGKILL, "{out}");
    rt.assert_nothing_left(&id, bundle.cgroups_path().as_deref());
}

#[test]
fn run_detach_returns_with_the_container_running() {
    let rt = Runtime::new();
    let id = rt.new_id("detach");
    let bundle = rt.bundle(&id, |s| {
        s.sh(SERVE);
    });
    let pid_file = rt.tmp().join("detach.pid");
    let out = rt
        .run_container(
            &bundle,
            &id,
            &["--detach", "--pid-file", pid_file.to_str().expect("utf-8")],
        )
        .ok();
    out.wait_stdout("ready");
    assert_eq!(rt.status(&id), "running");
    assert_eq!(read(&pid_file).trim(), rt.pid(&id).to_string());
}

#[test]
fn create_writes_the_pid_file() {
    let rt = Runtime::new();
    let id = rt.new_id("pidfile");
    let bundle = rt.bundle(&id, |s| {
        s.args(&["sleep", "1000"]);
    });
    let pid_file = rt.tmp().join("init.pid");
    rt.create(
        &bundle,
        &id,
        &["--pid-file", pid_file.to_str().expect("utf-8")],
    )
    .ok();
    let pid = rt.pid(&id);
    assert_eq!(read(&pid_file).trim(), pid.to_string());
}

#[test]
fn list_shows_the_container() {
    let rt = Runtime::new();
    let id = rt.new_id("list");
    let bundle = rt.bundle(&id, |s| {
        s.args(&["sleep", "1000"]);
    });
    rt.create(&bundle, &id, &[]).ok();
    let pid = rt.pid(&id);

    let list = rt.run(&["list", "--format", "json"]).ok().json();
    let entries = list
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"));
    assert_eq!(entries.len(), 1, "{list}");
    let entry = &entries[0];
    assert_eq!(entry["id"], id.as_str());
    assert_eq!(entry["status"], "created");
    assert_eq!(entry["pid"], pid);
    assert_eq!(
        Path::new(entry["bundle"].as_str().expect("bundle")),
        bundle.path()
    );

    let table = rt.run(&["list"]).ok();
    let line = table
        .stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id.as_str()))
        .unwrap_or_else(|| panic!("{id} not in the table: {table}"));
    assert!(line.contains("created"), "{line}");
}

#[test]
fn list_of_an_empty_root_is_empty() {
    let rt = Runtime::new();
    let list = rt.run(&["list", "--format", "json"]).ok().json();
    // runc prints `null`; an empty array means the same.
    assert!(
        list.is_null() || list.as_array().is_some_and(|a| a.is_empty()),
        "{list}"
    );
}

#[test]
fn ps_lists_the_container_processes() {
    let rt = Runtime::new();
    let id = rt.new_id("ps");
    let bundle = rt.bundle(&id, |s| {
        s.sh(SERVE);
    });
    rt.create_and_start(&bundle, &id).wait_stdout("ready");
    let init = rt.pid(&id);
    let ps = rt.run(&["ps", "--format", "json", &id]).ok().json();
    let pids: Vec<i64> = ps
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {ps}"))
        .iter()
        .map(|p| p.as_i64().expect("pid"))
        .collect();
    assert!(pids.contains(&init), "init {init} not in {pids:?}");
    // init and its sleep child
    assert_eq!(pids.len(), 2, "{pids:?}");
    let table = rt.run(&["ps", &id]).ok();
    assert!(table.stdout.contains("sleep"), "{table}");
}

#[test]
fn pause_freezes_and_resume_thaws() {
    let rt = Runtime::new();
    let id = rt.new_id("pause");
    let bundle = rt.bundle(&id, |s| {
        s.readonly_root(false);
        s.sh("i=0; while :; do i=$((i+1)); echo $i > /count.new; mv /count.new /count; usleep 20000; done");
    });
    rt.create_and_start(&bundle, &id);
    let count_file = bundle.rootfs().join("count");
    let count = || -> u64 {
        fs::read_to_string(&count_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    wait_until("the counter to run", WAIT_TIMEOUT, || count() > 2);

    rt.run(&["pause", &id]).ok();
    assert_eq!(rt.status(&id), "paused");
    let frozen = count();
    // The loop ticks every 20ms: half a second of silence means frozen.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(count(), frozen, "the counter advanced while paused");

    rt.run(&["resume", &id]).ok();
    assert_eq!(rt.status(&id), "running");
    wait_until("the counter to advance after resume", WAIT_TIMEOUT, || {
        count() > frozen + 2
    });
}

#[test]
fn kill_accepts_signal_names_and_numbers() {
    let rt = Runtime::new();
    let id = rt.new_id("sigs");
    let bundle = rt.bundle(&id, |s| {
        s.sh(
            "trap 'echo usr1' USR1; trap 'echo term; exit 0' TERM; echo ready; \
              while :; do sleep 1000 & wait; done",
        );
    });
    let created = rt.create_and_start(&bundle, &id);
    created.wait_stdout("ready");
    let usr1 = libc::SIGUSR1.to_string();
    for (n, signal) in ["USR1", "SIGUSR1", usr1.as_str()].iter().enumerate() {
        rt.run(&["kill", &id, signal]).ok();
        let expected = "usr1\n".repeat(n + 1);
        wait_until(&format!("the trap of {signal}"), WAIT_TIMEOUT, || {
            created.stdout_now().ends_with(&expected)
        });
    }
    // No signal means SIGTERM.
    rt.run(&["kill", &id]).ok();
    created.wait_stdout("term\n");
    rt.wait_status(&id, "stopped");
}

#[test]
fn kill_all_signals_every_process() {
    let rt = Runtime::new();
    let id = rt.new_id("killall");
    let bundle = rt.bundle(&id, |s| {
        s.sh("sleep 1000 & sleep 1000 & echo ready; wait");
    });
    rt.create_and_start(&bundle, &id).wait_stdout("ready");
    let ps = rt.run(&["ps", "--format", "json", &id]).ok().json();
    let pids: Vec<i64> = ps
        .as_array()
        .expect("array")
        .iter()
        .filter_map(Value::as_i64)
        .collect();
    assert_eq!(pids.len(), 3, "{pids:?}");

    rt.run(&["kill", "--all", &id, "KILL"]).ok();
    wait_until("every process to die", WAIT_TIMEOUT, || {
        pids.iter().all(|p| !pid_alive(*p))
    });
    rt.wait_status(&id, "stopped");
    rt.run(&["delete", &id]).ok();
}

#[test]
fn delete_force_kills_a_running_container() {
    let rt = Runtime::new();
    let id = rt.new_id("delforce");
    let bundle = rt.bundle(&id, |s| {
        s.args(&["sleep", "1000"]);
    });
    rt.create_and_start(&bundle, &id);
    let pid = rt.pid(&id);
    rt.run(&["delete", "--force", &id]).ok();
    wait_until("init to die", WAIT_TIMEOUT, || !pid_alive(pid));
    rt.run(&["state", &id]).failed_with("does not exist");
    rt.assert_nothing_left(&id, bundle.cgroups_path().as_deref());
}

#[test]
fn delete_of_a_created_container_kills_its_init() {
    let rt = Runtime::new();
    let id = rt.new_id("delcreated");
    let bundle = rt.bundle(&id, |s| {
        s.args(&["sleep", "1000"]);
    });
    rt.create(&bundle, &id, &[]).ok();
    let pid = rt.pid(&id);
    rt.run(&["delete", &id]).ok();
    wait_until("init to die", WAIT_TIMEOUT, || !pid_alive(pid));
    rt.run(&["state", &id]).failed_with("does not exist");
    rt.assert_nothing_left(&id, bundle.cgroups_path().as_deref());
}

#[test]
fn spec_writes_a_default_config() {
    let rt = Runtime::new();
    let dir = rt.host_dir("spec");
    rt.run(&["spec", "--bundle", dir.to_str().expect("utf-8")])
        .ok();
    let spec: Value = serde_json::from_str(&read(dir.join("config.json"))).expect("JSON");
    assert!(spec["ociVersion"]
        .as_str()
        .is_some_and(|v| v.starts_with("1.")));
    assert_eq!(spec["root"]["path"], "rootfs");
    assert_eq!(spec["process"]["terminal"], true);
    assert!(spec["process"]["args"]
        .as_array()
        .is_some_and(|a| !a.is_empty()));
    let namespaces: Vec<&str> = spec["linux"]["namespaces"]
        .as_array()
        .expect("namespaces")
        .iter()
        .filter_map(|n| n["type"].as_str())
        .collect();
    for ns in ["pid", "network", "ipc", "uts", "mount"] {
        assert!(namespaces.contains(&ns), "{ns} missing from {namespaces:?}");
    }

    // An existing config.json is not overwritten.
    write(dir.join("config.json"), "{}");
    rt.run(&["spec", "--bundle", dir.to_str().expect("utf-8")])
        .failed();
    assert_eq!(read(dir.join("config.json")), "{}");
}

#[test]
fn spec_rootless_uses_a_user_namespace() {
    let rt = Runtime::new();
    let dir = rt.host_dir("rootless");
    rt.run(&[
        "spec",
        "--rootless",
        "--bundle",
        dir.to_str().expect("utf-8"),
    ])
    .ok();
    let spec: Value = serde_json::from_str(&read(dir.join("config.json"))).expect("JSON");
    let namespaces = spec["linux"]["namespaces"].as_array().expect("namespaces");
    assert!(namespaces.iter().any(|n| n["type"] == "user"), "{spec}");
    assert!(spec["linux"]["uidMappings"]
        .as_array()
        .is_some_and(|m| !m.is_empty()));
    assert!(spec["linux"]["gidMappings"]
        .as_array()
        .is_some_and(|m| !m.is_empty()));
}

#[test]
fn features_describe_the_runtime() {
    let rt = Runtime::new();
    let features = rt.run(&["features"]).ok().json();
    assert!(features["ociVersionMin"]
        .as_str()
        .is_some_and(|v| v.starts_with("1.")));
    assert!(features["ociVersionMax"]
        .as_str()
        .is_some_and(|v| v.starts_with("1.")));
    let hooks: Vec<&str> = features["hooks"]
        .as_array()
        .expect("hooks")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for hook in [
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststart",
        "poststop",
    ] {
        assert!(hooks.contains(&hook), "{hook} missing from {hooks:?}");
    }
    let options = features["mountOptions"].as_array().expect("mountOptions");
    for option in ["bind", "rbind", "ro", "nosuid", "nodev", "noexec"] {
        assert!(options.iter().any(|o| o == option), "{option} missing");
    }
    let namespaces = features["linux"]["namespaces"]
        .as_array()
        .expect("linux.namespaces");
    for ns in ["pid", "network", "ipc", "uts", "mount", "user", "cgroup"] {
        assert!(namespaces.iter().any(|n| n == ns), "{ns} missing");
    }
}

#[test]
fn version_names_the_runtime_and_spec() {
    let rt = Runtime::new();
    let out = rt.run(&["--version"]).ok();
    let first = out.stdout.lines().next().unwrap_or_default();
    assert!(first.contains(" version "), "{out}");
    assert!(
        out.stdout.lines().any(|l| l.starts_with("spec: 1.")),
        "{out}"
    );
}

/// berth-specific: runc calls itself runc.
#[test]
fn berth_only_version_says_berth_runtime() {
    let rt = Runtime::new();
    let out = rt.run(&["--version"]).ok();
    assert!(out.stdout.starts_with("berth-runtime version "), "{out}");
    assert!(
        out.stdout.lines().any(|l| l.starts_with("commit: ")),
        "{out}"
    );
}

/// A `create` killed midway (here while a createRuntime hook runs, with the
/// cgroup and the init already made) leaves a record that `delete` can
/// clean up from: no cgroup, no state, no process remain.
#[test]
fn delete_cleans_up_after_a_create_killed_midway() {
    require_root();
    let rt = Runtime::new();
    let id = rt.new_id("killedcreate");
    let marker = rt.host_dir("killedcreate").join("hook.pid");
    let script = format!("echo $$ > {}; exec sleep 30", marker.display());
    let bundle = rt.bundle(&id, |s| {
        s.hook(
            "createRuntime",
            serde_json::json!({"path": "/bin/sh", "args": ["sh", "-c", script]}),
        );
        s.args(&["true"]);
    });
    let cgroups_path = bundle.cgroups_path().expect("cgroupsPath");
    let create = rt.spawn(&["create", "--bundle", bundle.path().to_str().unwrap(), &id]);
    let hook: i32 = wait_for(
        "the createRuntime hook to start",
        std::time::Duration::from_secs(10),
        || std::fs::read_to_string(&marker).ok()?.trim().parse().ok(),
    );

    assert!(
        cgroup_dir("pids", &cgroups_path).exists(),
        "the cgroup should exist mid-create"
    );
    // Kill the runtime, then its orphaned hook.
    host("kill", &["-KILL", &create.pid().to_string()]);
    host("kill", &["-KILL", &hook.to_string()]);
    drop(create.wait(std::time::Duration::from_secs(10)));
    let state = rt.state(&id);
    assert_eq!(state["status"], "creating", "{state}");
    rt.run(&["delete", &id]).ok();
    assert!(
        !cgroup_dir("pids", &cgroups_path).exists(),
        "cgroup left after delete"
    );
    assert!(
        !rt.state_root().join(&id).exists(),
        "state left after delete"
    );
}
