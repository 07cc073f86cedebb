//! Known runtime escapes, each mounted for real: the attack is attempted
//! and must fail, and the host must be as it was.

use std::path::Path;

use integration_tests::*;
use serde_json::json;

fn file_bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// CVE-2019-5736: an image whose program is a script with the interpreter
/// /proc/self/exe makes the kernel run whatever the exec'ing process is.
/// Through the sealed berth-dmz trampoline that is the trampoline, which
/// refuses, never the runtime's binary on the host.
#[test]
fn proc_self_exe_interpreter_never_runs_the_host_binary() {
    require_root();
    let runtime = runtime_binary();
    let before = file_bytes(&runtime);
    let rt = Runtime::new();
    let id = rt.new_id("selfexe");
    let bundle = rt.bundle(&id, |s| {
        s.args(&["/bin/evil", "--version"]);
    });
    let evil = bundle.rootfs().join("bin/evil");
    write(&evil, "#!/proc/self/exe\n");
    std::fs::set_permissions(&evil, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = rt.run_container(&bundle, &id, &[]);
    // Run as the interpreter, the runtime's binary would have printed its
    // version; the trampoline refuses instead.
    assert!(
        !out.stdout.contains("berth-runtime version"),
        "the host binary ran in the container: {out}"
    );
    assert_ne!(out.code(), 0, "{out}");
    assert!(out.stderr.contains("refusing"), "{out}");
    assert_eq!(file_bytes(&runtime), before, "the runtime binary changed");

    // The same through exec into a running container.
    let id2 = rt.new_id("selfexe-exec");
    let bundle2 = rt.bundle(&id2, |s| {
        s.sh("echo ready; sleep 100");
    });
    let evil2 = bundle2.rootfs().join("bin/evil");
    write(&evil2, "#!/proc/self/exe\n");
    std::fs::set_permissions(&evil2, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let running = rt.create_and_start(&bundle2, &id2);
    running.wait_stdout("ready");
    let out = rt.run(&["exec", &id2, "/bin/evil", "--version"]);
    assert!(!out.stdout.contains("berth-runtime version"), "{out}");
    assert_ne!(out.code(), 0, "{out}");
    assert_eq!(file_bytes(&runtime), before, "the runtime binary changed");
}

/// Until it execs the container's program, the init holds the runtime's
/// binary as its executable. A process in the container (here one exec'd
/// while the init waits for start) must not be able to read it.
///
/// Two things deny it: the kernel's ptrace check (the waiting init holds
/// capabilities the exec'd process lacks) and the init being non-dumpable.
/// This test asserts the property; it still holds with either one alone.
#[test]
fn container_processes_cannot_read_the_waiting_init_binary() {
    require_root();
    let rt = Runtime::new();
    let id = rt.new_id("dumpable");
    let bundle = rt.bundle(&id, |s| {
        s.args(&["true"]);
    });
    rt.create(&bundle, &id, &[]).ok();
    let out = rt
        .run(&[
            "exec",
            &id,
            "sh",
            "-c",
            "cat /proc/1/exe >/dev/null 2>&1 && echo readable || echo denied; \
                readlink /proc/1/exe >/dev/null 2>&1 && echo linked || echo no-link",
        ])
        .ok();
    assert_eq!(out.stdout.trim(), "denied\nno-link", "{out}");
}

/// CVE-2024-21626: a working directory through a descriptor the runtime
/// leaked would start the process in a host directory.
#[test]
fn cwd_through_proc_self_fd_is_refused() {
    require_root();
    for fd in 3..12 {
        let rt = Runtime::new();
        let id = rt.new_id(&format!("cwdfd{fd}"));
        let bundle = rt.bundle(&id, |s| {
            s.set("/process/cwd", json!(format!("/proc/self/fd/{fd}")));
            s.args(&["sh", "-c", "pwd; ls"]);
        });
        let out = rt.run_container(&bundle, &id, &[]);
        assert!(!out.success(), "cwd /proc/self/fd/{fd} was accepted: {out}");
        assert!(
            !rt.state_root().join(&id).exists(),
            "state left for fd {fd}"
        );
    }
}

/// No descriptor of the runtime reaches the container's process.
#[test]
fn no_runtime_descriptor_reaches_the_container() {
    require_root();
    let rt = Runtime::new();
    let id = rt.new_id("fds");
    let bundle = rt.bundle(&id, |s| {
        // `ls` opens the directory itself: it shows as one more descriptor.
        s.sh("ls /proc/self/fd | tr '\\n' ' '");
    });
    let out = rt.run_container(&bundle, &id, &[]).ok();
    assert_eq!(out.stdout.trim(), "0 1 2 3", "{out}");
}

/// A symlink in the image pointing at a host path must not redirect a mount
/// onto the host: the mount lands inside the rootfs.
#[test]
fn symlinks_in_the_image_cannot_redirect_mounts_to_the_host() {
    require_root();
    let rt = Runtime::new();
    let host_target = rt.host_dir("host-target");
    for (n, link) in [
        host_target.display().to_string(),
        format!("../../../../../../../../..{}", host_target.display()),
    ]
    .into_iter()
    .enumerate()
    {
        let id = rt.new_id(&format!("symlinkmnt{n}"));
        let bundle = rt.bundle(&id, |s| {
            s.mount("/evil/x", "tmpfs", "tmpfs", &["size=1m"]);
            s.readonly_root(false);
            s.sh("echo inside > /evil/x/proof && cat /evil/x/proof && grep -c ' /evil/x \\| /tmp' /proc/self/mountinfo >/dev/null; echo done");
        });
        std::os::unix::fs::symlink(&link, bundle.rootfs().join("evil")).unwrap();
        let out = rt.run_container(&bundle, &id, &[]).ok();
        assert!(out.stdout.contains("inside"), "{out}");
        assert!(
            !host_target.join("x").exists(),
            "the mount point was made on the host via {link}"
        );
        let mounts = read("/proc/self/mountinfo");
        assert!(
            !mounts.contains(&format!("{}/x", host_target.display())),
            "a mount reached the host via {link}"
        );
        // It landed inside the rootfs instead.
        let inside = bundle
            .rootfs()
            .join(host_target.strip_prefix("/").unwrap())
            .join("x");
        assert!(
            inside.is_dir(),
            "expected the mount point at {}",
            inside.display()
        );
    }
}

/// An AppArmor profile or SELinux label that the host cannot apply is a
/// warning in the log, never a silent pass; the container still runs.
#[test]
fn lsm_labels_without_the_lsm_are_a_warning() {
    require_root();
    let apparmor = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|s| s.trim() == "Y");
    let selinux = Path::new("/sys/fs/selinux/enforce").exists();
    let rt = Runtime::new();
    let id = rt.new_id("lsm");
    let bundle = rt.bundle(&id, |s| {
        s.set("/process/apparmorProfile", json!("berth-test-profile"));
        s.set(
            "/process/selinuxLabel",
            json!("system_u:system_r:container_t:s0"),
        );
        s.args(&["echo", "ran"]);
    });
    let out = rt.run_container(&bundle, &id, &[]);
    let warnings: Vec<String> = rt
        .log_entries()
        .iter()
        .filter(|e| e["level"] == "warning")
        .map(|e| e["msg"].as_str().unwrap_or_default().to_string())
        .collect();
    if !apparmor {
        assert!(
            warnings.iter().any(|w| w.contains("apparmor")),
            "no apparmor warning in {warnings:?}"
        );
    }
    if !selinux {
        assert!(
            warnings.iter().any(|w| w.contains("selinux")),
            "no selinux warning in {warnings:?}"
        );
    }
    if !apparmor && !selinux {
        assert_eq!(out.ok().stdout.trim(), "ran");
    }
}
