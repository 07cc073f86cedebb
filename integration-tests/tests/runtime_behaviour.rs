//! Behaviour where berth-runtime follows runc's: what hooks see (their
//! environment and the state on their stdin), a failing startContainer or
//! poststart hook, capability sets the kernel refuses, relative masked and
//! read-only paths, and a container without a mount namespace.
//!
//! Every test here passes against runc 1.1.5 too (`BERTH_RUNTIME=$(which
//! runc)`); the one about a container without a mount namespace may have to
//! run in a mount namespace of its own then (see
//! `no_mount_namespace_prepares_the_rootfs_as_runc`).
//! The order of the hooks is checked in `runtime_hooks.rs`.

use std::collections::BTreeMap;
use std::path::Path;

use integration_tests::*;
use serde_json::{json, Value};

/// A hook running `sh -c script` (the host's sh, or the container's for
/// startContainer hooks, whose path resolves in the container).
fn sh_hook(script: &str, env: Option<&[&str]>) -> Value {
    let mut hook = json!({"path": "/bin/sh", "args": ["sh", "-c", script]});
    if let Some(env) = env {
        hook["env"] = json!(env);
    }
    hook
}

/// `NAME=value` lines of an `env` dump, as a map.
fn env_of(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A variable of this test's own environment that no shell makes up, to
/// tell whether a hook inherited the runtime's environment (the runtime
/// inherits ours).
fn runtime_marker() -> (String, String) {
    const SHELL_OWN: [&str; 6] = ["PWD", "OLDPWD", "SHLVL", "_", "PATH", "HOME"];
    std::env::vars()
        .filter(|(k, v)| !SHELL_OWN.contains(&k.as_str()) && !v.is_empty() && !v.contains('\n'))
        .min()
        .expect("the test's environment has a variable to recognise (CARGO_* under cargo)")
}

/// The youki conformance suite's "hooks" case: every hook appends a line to
/// `<rootfs>/output` by its host path. That path does not exist inside the
/// container, so the startContainer hooks fail; runc's `start` still
/// succeeds and its poststart hooks still run (the init reports the hook's
/// failure on the container's stderr and exits). A first startContainer
/// hook writes by the container's own path, so it succeeds and shows that
/// these hooks run, in the container, in their place.
#[test]
fn failing_start_container_hook_still_runs_poststart() {
    let rt = Runtime::new();
    let id = rt.new_id("hookorder");
    let bundle = rt.bundle(&id, |s| {
        s.args(&["true"]);
    });
    let output = bundle.rootfs().join("output");
    bundle.edit(|s| {
        let line = |text: &str| sh_hook(&format!("echo '{text}' >> {}", output.display()), None);
        // One startContainer hook that writes by the container's path (on
        // a writable root), so that a runtime skipping these hooks is seen.
        s.readonly_root(false);
        s.hook(
            "startContainer",
            sh_hook("echo 'start-container0 called' >> /output", None),
        );
        for (stage, name) in [
            ("prestart", "pre-start"),
            ("createRuntime", "create-runtime"),
            ("createContainer", "create-container"),
            ("startContainer", "start-container"),
            ("poststart", "post-start"),
            ("poststop", "post-stop"),
        ] {
            s.hook(stage, line(&format!("{name}1 called")));
            s.hook(stage, line(&format!("{name}2 called")));
        }
    });
    rt.create(&bundle, &id, &[]).ok();
    rt.wait_status(&id, "created");
    rt.run(&["start", &id]).ok();
    rt.wait_status(&id, "stopped");
    rt.run(&["delete", &id]).ok();
    let text = read(&output);
    // The startContainer hook runs in the container once `start` released
    // it, which runc does while it runs the poststart hooks: it lands after
    // the createContainer hooks and before poststop, beside poststart.
    let at = |line: &str| {
        text.find(line)
            .unwrap_or_else(|| panic!("no {line:?} in {text:?}"))
    };
    assert!(
        at("create-container2") < at("start-container0")
            && at("start-container0") < at("post-stop1"),
        "{text:?}"
    );
    assert_eq!(
        text.replace("start-container0 called\n", ""),
        "pre-start1 called\npre-start2 called\n\
         create-runtime1 called\ncreate-runtime2 called\n\
         create-container1 called\ncreate-container2 called\n\
         post-start1 called\npost-start2 called\n\
         post-stop1 called\npost-stop2 called\n",
        "hooks must be called in the listed order"
    );
    rt.assert_nothing_left(&id, bundle.cgroups_path().as_deref());
}

/// A hook with `env` gets exactly that environment. One without: the
/// runtime's environment for the hooks run from the runtime (Go's exec
/// with no environment), the container process's for createContainer and
/// startContainer, which runc's init runs while it holds that environment.
#[test]
fn hooks_get_their_env_as_runc_gives_it() {
    let rt = Runtime::new();
    let id = rt.new_id("hookenv");
    let dir = rt.host_dir("hookenv");
    let (marker, marker_value) = runtime_marker();
    let dump = |name: &str, dir: &Path| format!("env > {}/{name}.env", dir.display());
    let bundle = rt.bundle(&id, |s| {
        s.bind(&dir, "/hookenv", &[]);
        s.env("BERTH_PROCESS_VAR", "from-process");
        s.args(&["true"]);
        for stage in [
            "prestart",
            "createRuntime",
            "createContainer",
            "poststart",
            "poststop",
        ] {
            s.hook(stage, sh_hook(&dump(stage, &dir), None));
        }
        s.hook(
            "createRuntime",
            sh_hook(&dump("createRuntime-given", &dir), Some(&["GIVEN=yes"])),
        );
        let inside = Path::new("/hookenv");
        s.hook(
            "startContainer",
            sh_hook(&dump("startContainer", inside), None),
        );
        s.hook(
            "startContainer",
            sh_hook(
                &dump("startContainer-given", inside),
                Some(&["GIVEN=yes", "PATH=/bin"]),
            ),
        );
    });
    rt.create(&bundle, &id, &[]).ok();
    rt.run(&["start", &id]).ok();
    rt.wait_status(&id, "stopped");
    rt.run(&["delete", &id]).ok();

    let dumped = |name: &str| {
        let path = dir.join(format!("{name}.env"));
        wait_until(
            &format!("{name} hook's env dump"),
            std::time::Duration::from_secs(5),
            || path.exists(),
        );
        env_of(&read(&path))
    };
    for stage in ["prestart", "createRuntime", "poststart", "poststop"] {
        let env = dumped(stage);
        assert_eq!(
            env.get(&marker),
            Some(&marker_value),
            "{stage} hook without env must inherit the runtime's: {env:?}"
        );
        assert_eq!(env.get("BERTH_PROCESS_VAR"), None, "{stage}: {env:?}");
    }
    for stage in ["createContainer", "startContainer"] {
        let env = dumped(stage);
        assert_eq!(
            env.get("BERTH_PROCESS_VAR").map(String::as_str),
            Some("from-process"),
            "{stage} hook without env must get the process's: {env:?}"
        );
        assert_eq!(env.get(&marker), None, "{stage}: {env:?}");
    }
    for name in ["createRuntime-given", "startContainer-given"] {
        let env = dumped(name);
        assert_eq!(
            env.get("GIVEN").map(String::as_str),
            Some("yes"),
            "{name}: {env:?}"
        );
        assert_eq!(env.get(&marker), None, "{name}: {env:?}");
        assert_eq!(env.get("BERTH_PROCESS_VAR"), None, "{name}: {env:?}");
    }
}

/// The state on each hook's stdin: the hooks run in the container's
/// namespaces (createContainer, startContainer) see the init's pid as the
/// container sees it (1 in its own pid namespace), the others its host pid;
/// poststop's state has no pid; no `annotations` key without annotations.
#[test]
fn hooks_read_the_state_runc_gives_them() {
    let rt = Runtime::new();
    let id = rt.new_id("hookstate");
    let dir = rt.host_dir("hookstate");
    let save = |name: &str, dir: &Path| format!("cat > {}/{name}.json", dir.display());
    let bundle = rt.bundle(&id, |s| {
        s.bind(&dir, "/hookstate", &[]);
        s.args(&["sleep", "1000"]);
        for stage in [
            "prestart",
            "createRuntime",
            "createContainer",
            "poststart",
            "poststop",
        ] {
            s.hook(stage, sh_hook(&save(stage, &dir), None));
        }
        s.hook(
            "startContainer",
            sh_hook(&save("startContainer", Path::new("/hookstate")), None),
        );
    });
    rt.create(&bundle, &id, &[]).ok();
    let host_pid = rt.pid(&id);
    rt.run(&["start", &id]).ok();
    rt.run(&["kill", &id, "KILL"]).ok();
    rt.wait_status(&id, "stopped");
    rt.run(&["delete", &id]).ok();

    let state = |name: &str| -> Value {
        let text = read(dir.join(format!("{name}.json")));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} stdin ({e}): {text:?}"))
    };
    for (stage, status, pid) in [
        ("prestart", Some("creating"), Some(host_pid)),
        ("createRuntime", Some("creating"), Some(host_pid)),
        ("createContainer", Some("creating"), Some(1)),
        ("startContainer", Some("created"), Some(1)),
        // runc 1.1.5 runs poststart during create: its status is "created"
        // there, "running" here (runtime_hooks.rs checks that).
        ("poststart", None, Some(host_pid)),
        ("poststop", Some("stopped"), None),
    ] {
        let state = state(stage);
        assert_eq!(state["id"], id.as_str(), "{stage}: {state}");
        assert_eq!(
            Path::new(state["bundle"].as_str().unwrap_or_default()),
            bundle.path(),
            "{stage}: {state}"
        );
        if let Some(status) = status {
            assert_eq!(state["status"], status, "{stage}: {state}");
        }
        assert_eq!(
            state.get("pid").and_then(Value::as_i64),
            pid,
            "{stage}: {state}"
        );
        assert!(state.get("annotations").is_none(), "{stage}: {state}");
        assert!(
            state["ociVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with("1.")),
            "{stage}: {state}"
        );
    }
}

/// A failing poststart hook fails the container as runc fails it: the
/// command that runs the hook fails (runc 1.1.5's create, berth's start)
/// and the container's process does not go on running.
#[test]
fn failing_poststart_hook_stops_the_container() {
    let rt = Runtime::new();
    let id = rt.new_id("poststartfail");
    let bundle = rt.bundle(&id, |s| {
        s.args(&["sleep", "1000"]);
        s.hook(
            "poststart",
            sh_hook("echo poststart-broke >&2; exit 7", None),
        );
    });
    let created = rt.create(&bundle, &id, &[]);
    let failed = if created.success() {
        rt.run(&["start", &id]).failed()
    } else {
        created
    };
    assert!(failed.stderr.contains("poststart-broke"), "{failed}");
    wait_until(
        "the container to stop",
        std::time::Duration::from_secs(10),
        || {
            let out = rt.run(&["state", &id]);
            !out.success() || out.json()["status"] == "stopped"
        },
    );
    rt.run(&["delete", "--force", &id]);
    rt.assert_nothing_left(&id, bundle.cgroups_path().as_deref());
}

fn with_caps(s: &mut Spec, bounding: &[&str], others: &[&str], inheritable: &[&str]) {
    s.set(
        "/process/capabilities",
        json!({
            "bounding": bounding,
            "effective": others,
            "permitted": others,
            "inheritable": inheritable,
            "ambient": [],
        }),
    );
}

/// An inheritable capability outside the bounding set: the kernel's capset
/// refuses it, and runc's create fails with "unable to apply caps:
/// operation not permitted", leaving nothing.
#[test]
fn inheritable_capability_outside_the_bounding_set_fails_create() {
    let rt = Runtime::new();
    let id = rt.new_id("capinh");
    let bundle = rt.bundle(&id, |s| {
        s.args(&["sleep", "1000"]);
        with_caps(
            s,
            &["CAP_KILL"],
            &["CAP_KILL", "CAP_SYS_ADMIN"],
            &["CAP_KILL", "CAP_SYS_ADMIN"],
        );
    });
    rt.create(&bundle, &id, &[])
        .failed_with("unable to apply caps: operation not permitted");
    rt.run(&["state", &id]).failed_with("does not exist");
    rt.assert_nothing_left(&id, bundle.cgroups_path().as_deref());
}

/// An effective and permitted capability outside the bounding set: runc's
/// capset accepts it and the exec drops it (a root process's permitted set
/// after exec is its bounding set); the process runs without it.
#[test]
fn effective_capability_outside_the_bounding_set_is_dropped_at_exec() {
    let rt = Runtime::new();
    let id = rt.new_id("capeff");
    let bundle = rt.bundle(&id, |s| {
        s.args(&["cat", "/proc/self/status"]);
        with_caps(s, &["CAP_KILL"], &["CAP_KILL", "CAP_SYS_ADMIN"], &[]);
    });
    let out = rt.run_container(&bundle, &id, &[]).ok();
    for field in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(
            status_caps(&out.stdout, field),
            cap_mask(&["CAP_KILL"]),
            "{field}: {out}"
        );
    }
    rt.assert_nothing_left(&id, bundle.cgroups_path().as_deref());
}

/// Relative masked and read-only paths are taken from the container's root.
#[test]
fn relative_masked_and_readonly_paths_take_effect() {
    let rt = Runtime::new();
    let id = rt.new_id("relpaths");
    let bundle = rt.bundle(&id, |s| {
        s.readonly_root(false);
        s.set("/linux/maskedPaths", json!(["secret/file", "secret/dir"]));
        s.set("/linux/readonlyPaths", json!(["ro"]));
        s.sh(
            "echo \"file:[$(cat /secret/file)]\"; ls /secret/dir | sed 's/^/dir:/'; \
             touch /ro/x 2>/dev/null && echo ro:writable || echo ro:readonly; \
             touch /rw 2>/dev/null && echo rw:writable",
        );
    });
    let rootfs = bundle.rootfs();
    std::fs::create_dir_all(rootfs.join("secret/dir")).expect("mkdir");
    write(rootfs.join("secret/file"), "hidden");
    write(rootfs.join("secret/dir/inner"), "hidden");
    std::fs::create_dir_all(rootfs.join("ro")).expect("mkdir");
    let out = rt.run_container(&bundle, &id, &[]).ok();
    assert_eq!(out.stdout, "file:[]\nro:readonly\nrw:writable\n", "{out}");
    assert_eq!(read(rootfs.join("secret/file")), "hidden");
    rt.assert_nothing_left(&id, bundle.cgroups_path().as_deref());
}

/// Shared mounts in this mount namespace: the ones `mount --make-rslave /`
/// would change.
fn shared_mounts() -> Vec<String> {
    host_mounts()
        .into_iter()
        .filter(|m| m.optional.iter().any(|o| o.starts_with("shared:")))
        .map(|m| m.mount_point)
        .collect()
}

/// Without a mount namespace, runc still prepares the rootfs: binds it onto
/// itself and mounts the config's mounts under it, in the runtime's mount
/// namespace, and chroots into it. They stay mounted after delete; a tool
/// that runs such containers unmounts the rootfs itself, which must work
/// (not EINVAL, "not a mount point").
///
/// runc also makes `/` rslave, recursively, in the mount namespace it runs
/// in: against runc, where that namespace has shared mounts, run this test in
/// a mount namespace of its own (`unshare -m --propagation slave cargo
/// test …`); the test refuses to run runc where it would change them.
#[test]
fn no_mount_namespace_prepares_the_rootfs_as_runc() {
    let rt = Runtime::new();
    let against_runc = runtime_binary().file_name().is_some_and(|n| n == "runc");
    let shared = shared_mounts();
    assert!(
        !against_runc || shared.is_empty(),
        "runc would make these shared mounts slaves: {shared:?}; \
         run this test inside `unshare -m --propagation slave`"
    );
    let id = rt.new_id("nomntns");
    let bundle = rt.bundle(&id, |s| {
        s.remove_namespace("mount");
        s.set("/linux/maskedPaths", json!([]));
        s.set("/linux/readonlyPaths", json!([]));
        s.sh("stat -f -c %T /proc; test -x /bin/busybox && echo in-rootfs");
    });
    let rootfs = bundle.rootfs();
    let out = rt.run_container(&bundle, &id, &[]).ok();
    assert_eq!(out.stdout, "proc\nin-rootfs\n", "{out}");
    let mounts = host_mounts_under(&rootfs);
    assert!(
        mounts.contains(&rootfs),
        "the rootfs is no mount point: {mounts:?}"
    );
    assert!(mounts.contains(&rootfs.join("proc")), "{mounts:?}");
    // What the tool does afterwards.
    let c_root = std::ffi::CString::new(rootfs.to_str().expect("utf-8")).expect("no NUL");
    // SAFETY: umount2 with a valid NUL-terminated path; no memory is shared.
    let rc = unsafe { libc::umount2(c_root.as_ptr(), libc::MNT_DETACH) };
    assert_eq!(
        rc,
        0,
        "unmount the rootfs: {}",
        std::io::Error::last_os_error()
    );
    wait_until(
        "the rootfs mounts to go",
        std::time::Duration::from_secs(5),
        || host_mounts_under(&rootfs).is_empty(),
    );
    rt.assert_nothing_left(&id, bundle.cgroups_path().as_deref());
}
