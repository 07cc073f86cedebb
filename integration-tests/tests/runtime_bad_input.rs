//! Bad input and misuse: each fails with a non-zero status and a message on
//! stderr, and leaves nothing behind (no state entry, cgroup or mount), or
//! leaves an existing container as it was.

use std::fs;

use integration_tests::*;
use serde_json::json;

/// Asserts a failed create left no trace of `id`.
#[track_caller]
fn assert_create_failed_cleanly(rt: &Runtime, out: Output, id: &str, cgroups_path: Option<&str>) {
    let out = out.failed();
    assert!(!out.stderr.trim().is_empty(), "no message on stderr: {out}");
    assert_eq!(out.stdout, "", "the runtime wrote on stdout");
    rt.run(&["state", id]).failed_with("does not exist");
    rt.assert_nothing_left(id, cgroups_path);
}

#[test]
fn missing_config_json() {
    let rt = Runtime::new();
    let id = rt.new_id("noconfig");
    let bundle = rt.bundle(&id, |_| {});
    fs::remove_file(bundle.config_path()).expect("remove config.json");
    let out = rt.create(&bundle, &id, &[]);
    assert!(out.stderr.contains("config.json"), "{out}");
    assert_create_failed_cleanly(&rt, out, &id, None);
}

#[test]
fn missing_bundle_directory() {
    let rt = Runtime::new();
    let id = rt.new_id("nobundle");
    let missing = rt.tmp().join("no-such-bundle");
    let out = rt.run(&["create", "--bundle", missing.to_str().expect("utf-8"), &id]);
    assert_create_failed_cleanly(&rt, out, &id, None);
}

#[test]
fn malformed_config_json() {
    let rt = Runtime::new();
    let id = rt.new_id("badjson");
    let bundle = rt.bundle(&id, |_| {});
    let cgroups = bundle.cgroups_path();
    write(
        bundle.config_path(),
        "{ \"ociVersion\": \"1.0.2\", \"process\": ",
    );
    let out = rt.create(&bundle, &id, &[]);
    assert_create_failed_cleanly(&rt, out, &id, cgroups.as_deref());
}

#[test]
fn unknown_namespace_type() {
    let rt = Runtime::new();
    let id = rt.new_id("badns");
    let bundle = rt.bundle(&id, |s| {
        s.push("/linux/namespaces", json!({"type": "bogus"}));
        s.args(&["true"]);
    });
    let out = rt.create(&bundle, &id, &[]);
    assert!(out.stderr.contains("bogus"), "{out}");
    assert_create_failed_cleanly(&rt, out, &id, bundle.cgroups_path().as_deref());
}

#[test]
fn empty_args() {
    let rt = Runtime::new();
    let id = rt.new_id("noargs");
    let bundle = rt.bundle(&id, |s| {
        s.set("/process/args", json!([]));
    });
    let out = rt.create(&bundle, &id, &[]);
    assert_create_failed_cleanly(&rt, out, &id, bundle.cgroups_path().as_deref());
}

#[test]
fn missing_executable() {
    let rt = Runtime::new();
    let id = rt.new_id("noexe");
    let bundle = rt.bundle(&id, |s| {
        s.args(&["/no/such/program"]);
    });
    let out = rt.run_container(&bundle, &id, &[]);
    assert!(out.stderr.contains("/no/such/program"), "{out}");
    assert_create_failed_cleanly(&rt, out, &id, bundle.cgroups_path().as_deref());
}

#[test]
fn terminal_without_console_socket() {
    let rt = Runtime::new();
    let id = rt.new_id("nosocket");
    let bundle = rt.bundle(&id, |s| {
        s.terminal(true);
        s.args(&["true"]);
    });
    let out = rt.create(&bundle, &id, &[]);
    assert_create_failed_cleanly(&rt, out, &id, bundle.cgroups_path().as_deref());
}

#[test]
fn mount_destination_cannot_escape_the_rootfs() {
    // Either refused, or resolved inside the rootfs (runc clamps `..` at the
    // root); never a mount or a directory outside it.
    let rt = Runtime::new();
    let id = rt.new_id("escape");
    let name = unique_id("berth-escape");
    let outside = std::path::Path::new("/tmp").join(&name);
    let dest = format!("/../../../../../../../../../../tmp/{name}");
    let bundle = rt.bundle(&id, |s| {
        s.mount(&dest, "tmpfs", "tmpfs", &["size=1m"]);
        s.sh(&format!("echo inside > /tmp/{name}/f && cat /tmp/{name}/f"));
        s.readonly_root(false);
    });
    let out = rt.run_container(&bundle, &id, &[]);
    assert!(
        !outside.exists(),
        "{} was created on the host",
        outside.display()
    );
    let escaped: Vec<_> = host_mounts()
        .into_iter()
        .filter(|m| m.mount_point.contains(&name))
        .collect();
    assert!(
        escaped.is_empty(),
        "mounted outside the rootfs: {escaped:?}"
    );
    if out.success() {
        assert_eq!(out.stdout, "inside\n", "{out}");
    } else {
        assert!(!out.stderr.trim().is_empty(), "{out}");
    }
    rt.assert_nothing_left(&id, bundle.cgroups_path().as_deref());
}

#[test]
fn invalid_container_ids() {
    let rt = Runtime::new();
    let bundle = rt.bundle(&unique_id("badid"), |s| {
        s.args(&["true"]);
    });
    let escape_name = unique_id("escaped");
    for id in [
        "a/b",
        "..",
        "../{escape}",
        "",
        "with space",
        "-starts-with-dash",
    ] {
        let id = id.replace("{escape}", &escape_name);
        rt.track(&id);
        let out = rt.create(&bundle, &id, &[]).failed();
        assert!(!out.stderr.trim().is_empty(), "{out}");
        assert!(rt.state_entries().is_empty(), "state entry made for {id:?}");
    }
    let parent = rt.state_root().parent().expect("parent").join(&escape_name);
    assert!(!parent.exists(), "{} made outside --root", parent.display());
    assert!(rt.leaked_mounts().is_empty());
}

#[test]
fn duplicate_id_already_exists() {
    let rt = Runtime::new();
    let id = rt.new_id("dup");
    let bundle = rt.bundle(&id, |s| {
        s.args(&["sleep", "1000"]);
    });
    rt.create(&bundle, &id, &[]).ok();
    let pid = rt.pid(&id);
    rt.create(&bundle, &id, &[]).failed_with("already exists");
    // The first container is untouched.
    assert_eq!(rt.status(&id), "created");
    assert_eq!(rt.pid(&id), pid);
    assert!(pid_alive(pid));
    rt.run_container(&bundle, &id, &[])
        .failed_with("already exists");
    assert_eq!(rt.status(&id), "created");
}

#[test]
fn start_of_a_running_container_fails() {
    let rt = Runtime::new();
    let id = rt.new_id("restart");
    let bundle = rt.bundle(&id, |s| {
        s.sh("echo started; exec sleep 1000");
    });
    let created = rt.create_and_start(&bundle, &id);
    created.wait_stdout("started");
    let pid = rt.pid(&id);
    rt.run(&["start", &id]).failed();
    assert_eq!(rt.status(&id), "running");
    assert_eq!(rt.pid(&id), pid);
    assert_eq!(created.stdout_now(), "started\n", "the process ran twice");
}

#[test]
fn start_of_a_stopped_container_fails() {
    let rt = Runtime::new();
    let id = rt.new_id("startstopped");
    let bundle = rt.bundle(&id, |s| {
        s.args(&["true"]);
    });
    rt.create_and_start(&bundle, &id);
    rt.wait_status(&id, "stopped");
    rt.run(&["start", &id]).failed();
    assert_eq!(rt.status(&id), "stopped");
}

#[test]
fn delete_of_a_running_container_without_force_fails() {
    let rt = Runtime::new();
    let id = rt.new_id("nodelete");
    let bundle = rt.bundle(&id, |s| {
        s.args(&["sleep", "1000"]);
    });
    rt.create_and_start(&bundle, &id);
    let pid = rt.pid(&id);
    rt.run(&["delete", &id]).failed();
    assert_eq!(rt.status(&id), "running");
    assert!(
        pid_alive(pid),
        "delete without --force killed the container"
    );
    assert!(!existing_cgroup_dirs(&bundle.cgroups_path().expect("cgroupsPath")).is_empty());
}

#[test]
fn kill_of_a_stopped_container_fails() {
    let rt = Runtime::new();
    let id = rt.new_id("killstopped");
    let bundle = rt.bundle(&id, |s| {
        s.args(&["true"]);
    });
    rt.create_and_start(&bundle, &id);
    rt.wait_status(&id, "stopped");
    rt.run(&["kill", &id, "KILL"]).failed_with("not running");
}

#[test]
fn kill_with_an_unknown_signal_fails() {
    let rt = Runtime::new();
    let id = rt.new_id("badsig");
    let bundle = rt.bundle(&id, |s| {
        s.args(&["sleep", "1000"]);
    });
    rt.create_and_start(&bundle, &id);
    for signal in ["SIGBOGUS", "BOGUS", "999", "-1"] {
        let out = rt.run(&["kill", &id, signal]).failed();
        assert!(!out.stderr.trim().is_empty(), "{out}");
    }
    assert_eq!(rt.status(&id), "running");
}

#[test]
fn commands_on_an_unknown_container_say_it_does_not_exist() {
    let rt = Runtime::new();
    let id = unique_id("nosuch");
    for args in [
        vec!["state", &id],
        vec!["start", &id],
        vec!["kill", &id, "TERM"],
        vec!["delete", &id],
        vec!["pause", &id],
        vec!["resume", &id],
        vec!["ps", &id],
        vec!["exec", &id, "true"],
        vec!["events", "--stats", &id],
    ] {
        rt.run(&args).failed_with("does not exist");
    }
    // delete --force of nothing is not an error (shims rely on this).
    rt.run(&["delete", "--force", &id]).ok();
}

#[test]
fn exec_without_a_command_fails() {
    let rt = Runtime::new();
    let id = rt.new_id("execnoargs");
    let bundle = rt.bundle(&id, |s| {
        s.args(&["sleep", "1000"]);
    });
    rt.create_and_start(&bundle, &id);
    rt.run(&["exec", &id]).failed();
    assert_eq!(rt.status(&id), "running");
}

#[test]
fn unknown_command_and_flag_fail() {
    let rt = Runtime::new();
    rt.run(&["frobnicate"]).failed();
    rt.run(&["create", "--no-such-flag", "x"]).failed();
    assert!(rt.state_entries().is_empty());
}
