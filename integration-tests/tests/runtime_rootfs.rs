//! The container's filesystem: root switch, read-only root, mounts and their
//! options, devices, masked and read-only paths, hostname, sysctls,
//! propagation, and nothing left mounted on the host.

use std::fs;
use std::path::Path;
use std::process::Command;

use integration_tests::*;
use serde_json::json;

/// Runs `script` in a container made by `edit` and returns its stdout;
/// asserts that it left nothing behind.
fn run_sh(rt: &Runtime, prefix: &str, script: &str, edit: impl FnOnce(&mut Spec)) -> String {
    let id = rt.new_id(prefix);
    let bundle = rt.bundle(&id, |s| {
        s.sh(script);
        edit(s);
    });
    let out = rt.run_container(&bundle, &id, &[]).ok();
    rt.assert_nothing_left(&id, bundle.cgroups_path().as_deref());
    out.stdout
}

fn root_switch_hides_the_host(extra: &[&str]) {
    let rt = Runtime::new();
    let id = rt.new_id("root");
    let host_tree = rt.tmp().to_str().expect("utf-8").to_owned();
    let bundle = rt.bundle(&id, |s| {
        s.sh(&format!(
            "cat /marker; test -e {host_tree} && echo host-visible || echo isolated; \
             grep -c . /proc/self/mountinfo >/dev/null && echo mountinfo-ok"
        ));
    });
    write(bundle.rootfs().join("marker"), "inside the rootfs\n");
    let out = rt.run_container(&bundle, &id, extra).ok();
    assert_eq!(
        out.stdout, "inside the rootfs\nisolated\nmountinfo-ok\n",
        "{out}"
    );
    rt.assert_nothing_left(&id, bundle.cgroups_path().as_deref());
}

#[test]
fn pivot_root_switches_to_the_bundle_rootfs() {
    root_switch_hides_the_host(&[]);
}

#[test]
fn no_pivot_switches_to_the_bundle_rootfs() {
    root_switch_hides_the_host(&["--no-pivot"]);
}

#[test]
fn readonly_root_rejects_writes_but_tmpfs_accepts_them() {
    let rt = Runtime::new();
    let id = rt.new_id("roroot");
    let bundle = rt.bundle(&id, |s| {
        s.readonly_root(true);
        s.mount("/tmp", "tmpfs", "tmpfs", &["nosuid", "nodev", "size=1m"]);
        s.sh("touch /written 2>&1; echo scratch > /tmp/scratch && cat /tmp/scratch");
    });
    let out = rt.run_container(&bundle, &id, &[]).ok();
    assert!(out.stdout.contains("Read-only file system"), "{out}");
    assert!(out.stdout.ends_with("scratch\n"), "{out}");
    assert!(!bundle.rootfs().join("written").exists());
    assert!(
        !bundle.rootfs().join("tmp/scratch").exists(),
        "tmpfs write reached the rootfs"
    );
}

#[test]
fn writable_root_writes_reach_the_bundle() {
    let rt = Runtime::new();
    let id = rt.new_id("rwroot");
    let bundle = rt.bundle(&id, |s| {
        s.readonly_root(false);
        s.sh("echo data > /written && echo done");
    });
    let out = rt.run_container(&bundle, &id, &[]).ok();
    assert_eq!(out.stdout, "done\n");
    assert_eq!(read(bundle.rootfs().join("written")), "data\n");
}

#[test]
fn tmpfs_mount_has_its_size_mode_and_flags() {
    let rt = Runtime::new();
    let stdout = run_sh(
        &rt,
        "tmpfs",
        "stat -c %a /mnt/t; cat /proc/self/mountinfo; \
         cp /bin/busybox /mnt/t/bb && /mnt/t/bb true 2>/dev/null; echo exec=$?",
        |s| {
            s.mount(
                "/mnt/t",
                "tmpfs",
                "tmpfs",
                &["size=4m", "mode=1700", "nosuid", "nodev", "noexec"],
            );
        },
    );
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("1700"), "{stdout}");
    let mounts = parse_mountinfo(&stdout);
    let tmpfs = find_mount(&mounts, "/mnt/t").unwrap_or_else(|| panic!("no /mnt/t: {stdout}"));
    assert_eq!(tmpfs.fs_type, "tmpfs");
    for option in ["nosuid", "nodev", "noexec", "size=4096k", "mode=1700"] {
        assert!(tmpfs.has_option(option), "{option} missing: {tmpfs:?}");
    }
    // noexec is enforced, not only shown.
    assert!(stdout.ends_with("exec=126\n"), "{stdout}");
}

#[test]
fn bind_mounts_share_host_files_and_ro_is_enforced() {
    let rt = Runtime::new();
    let shared = rt.host_dir("shared");
    write(shared.join("hello.txt"), "from the host\n");
    let stdout = run_sh(
        &rt,
        "bind",
        "cat /data/hello.txt; echo from-container > /data/out; \
         { echo nope > /data-ro/nope; } 2>&1; cat /proc/self/mountinfo",
        |s| {
            s.bind(&shared, "/data", &[]);
            s.bind(&shared, "/data-ro", &["ro"]);
        },
    );
    assert!(stdout.starts_with("from the host\n"), "{stdout}");
    assert_eq!(read(shared.join("out")), "from-container\n");
    assert!(stdout.contains("Read-only file system"), "{stdout}");
    assert!(
        !shared.join("nope").exists(),
        "write through the ro bind reached the host"
    );
    let mounts = parse_mountinfo(&stdout);
    let ro = find_mount(&mounts, "/data-ro").expect("/data-ro mounted");
    assert!(ro.mount_options.iter().any(|o| o == "ro"), "{ro:?}");
    let rw = find_mount(&mounts, "/data").expect("/data mounted");
    assert!(rw.mount_options.iter().any(|o| o == "rw"), "{rw:?}");
}

/// Mounts a tmpfs at `dir` on the host, unmounted on clean-up.
fn host_tmpfs(rt: &Runtime, dir: &Path) {
    fs::create_dir_all(dir).expect("mkdir");
    host(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            "size=1m",
            "tmpfs",
            dir.to_str().expect("utf-8"),
        ],
    );
    let dir = dir.to_path_buf();
    rt.on_cleanup(move || {
        let _ = Command::new("umount").arg("-l").arg(&dir).status();
    });
}

#[test]
fn rbind_brings_submounts_and_bind_does_not() {
    let rt = Runtime::new();
    let tree = rt.host_dir("tree");
    host_tmpfs(&rt, &tree.join("sub"));
    write(tree.join("sub/inner.txt"), "in a submount\n");
    let stdout = run_sh(
        &rt,
        "rbind",
        "cat /rb/sub/inner.txt; ls -A /b/sub | wc -l",
        |s| {
            s.mount("/rb", "bind", tree.to_str().expect("utf-8"), &["rbind"]);
            s.mount("/b", "bind", tree.to_str().expect("utf-8"), &["bind"]);
        },
    );
    assert_eq!(stdout, "in a submount\n0\n");
}

#[test]
fn default_devices_exist() {
    let rt = Runtime::new();
    let stdout = run_sh(
        &rt,
        "devs",
        "for d in null zero full random urandom tty; do stat -c '%n %F %t:%T' /dev/$d; done; \
         for l in fd stdin stdout stderr; do echo /dev/$l=$(readlink /dev/$l); done; \
         test -c /dev/ptmx && echo ptmx-ok; test -d /dev/pts && echo pts-ok; \
         echo x > /dev/null && head -c 3 /dev/zero | od -An -tx1",
        |_| {},
    );
    let expected = "\
/dev/null character special file 1:3
/dev/zero character special file 1:5
/dev/full character special file 1:7
/dev/random character special file 1:8
/dev/urandom character special file 1:9
/dev/tty character special file 5:0
/dev/fd=/proc/self/fd
/dev/stdin=/proc/self/fd/0
/dev/stdout=/proc/self/fd/1
/dev/stderr=/proc/self/fd/2
ptmx-ok
pts-ok
 00 00 00
";
    assert_eq!(stdout, expected);
}

#[test]
fn configured_device_is_created() {
    let rt = Runtime::new();
    let stdout = run_sh(
        &rt,
        "mydev",
        "stat -c '%F %t:%T %a %u:%g' /dev/mynull; echo x > /dev/mynull && echo written",
        |s| {
            s.push(
                "/linux/devices",
                json!({"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3,
                       "fileMode": 0o640, "uid": 0, "gid": 5}),
            );
            s.push(
                "/linux/resources/devices",
                json!({"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}),
            );
        },
    );
    assert_eq!(stdout, "character special file 1:3 640 0:5\nwritten\n");
}

#[test]
fn masked_paths_read_empty() {
    let rt = Runtime::new();
    let id = rt.new_id("masked");
    let bundle = rt.bundle(&id, |s| {
        s.push("/linux/maskedPaths", json!("/secret-dir"));
        s.push("/linux/maskedPaths", json!("/secret.txt"));
        s.push("/linux/maskedPaths", json!("/does/not/exist"));
        s.sh("wc -c < /proc/timer_list; ls -A /secret-dir | wc -l; wc -c < /secret.txt");
    });
    fs::create_dir(bundle.rootfs().join("secret-dir")).expect("mkdir");
    write(bundle.rootfs().join("secret-dir/key"), "secret\n");
    write(bundle.rootfs().join("secret.txt"), "secret\n");
    let out = rt.run_container(&bundle, &id, &[]).ok();
    let counts: Vec<&str> = out.stdout.split_whitespace().collect();
    assert_eq!(counts, ["0", "0", "0"], "{out}");
    // Masking hides, it does not modify.
    assert_eq!(read(bundle.rootfs().join("secret.txt")), "secret\n");
}

#[test]
fn readonly_paths_reject_writes() {
    let rt = Runtime::new();
    let stdout = run_sh(
        &rt,
        "ropaths",
        "{ echo berth > /proc/sys/kernel/domainname; } 2>&1; \
         { echo x > /rw-dir/f; } 2>&1; cat /proc/self/mountinfo",
        |s| {
            s.readonly_root(false);
            s.push("/linux/readonlyPaths", json!("/rw-dir"));
            s.mount("/rw-dir", "tmpfs", "tmpfs", &["size=1m"]);
        },
    );
    assert_eq!(
        stdout.matches("Read-only file system").count(),
        2,
        "{stdout}"
    );
    let mounts = parse_mountinfo(&stdout);
    for path in ["/proc/sys", "/rw-dir"] {
        let m = find_mount(&mounts, path).unwrap_or_else(|| panic!("{path} not a mount"));
        assert!(m.mount_options.iter().any(|o| o == "ro"), "{path}: {m:?}");
    }
}

#[test]
fn hostname_is_set() {
    let rt = Runtime::new();
    let host_name = read("/proc/sys/kernel/hostname");
    let stdout = run_sh(&rt, "hostname", "hostname; cat /etc/hostname", |s| {
        s.hostname("berth-host");
    });
    // The runtime sets the kernel's name; it does not write /etc/hostname.
    assert_eq!(stdout, "berth-host\nberth-test\n");
    assert_eq!(read("/proc/sys/kernel/hostname"), host_name);
}

/// berth-specific: runc 1.1 ignores `domainname` (runtime-spec 1.1, runc 1.2).
#[test]
fn berth_only_domainname_is_set() {
    let rt = Runtime::new();
    let host_domain = read("/proc/sys/kernel/domainname");
    let stdout = run_sh(&rt, "domain", "cat /proc/sys/kernel/domainname", |s| {
        s.set("/domainname", json!("example.test"));
    });
    assert_eq!(stdout, "example.test\n");
    assert_eq!(read("/proc/sys/kernel/domainname"), host_domain);
}

#[test]
fn sysctls_apply_inside_the_namespaces_only() {
    let rt = Runtime::new();
    let host_forward = read("/proc/sys/net/ipv4/ip_forward");
    let host_shmmax = read("/proc/sys/kernel/shmmax");
    let stdout = run_sh(
        &rt,
        "sysctl",
        "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmax",
        |s| {
            s.set(
                "/linux/sysctl",
                json!({"net.ipv4.ip_forward": "1", "kernel.shmmax": "123456789"}),
            );
        },
    );
    assert_eq!(stdout, "1\n123456789\n");
    assert_eq!(read("/proc/sys/net/ipv4/ip_forward"), host_forward);
    assert_eq!(read("/proc/sys/kernel/shmmax"), host_shmmax);
}

/// A host directory that is a shared mount point (so host mounts under it
/// propagate to its peers and slaves); unmounted on clean-up.
fn shared_host_dir(rt: &Runtime) -> std::path::PathBuf {
    let dir = rt.host_dir("prop");
    let path = dir.to_str().expect("utf-8");
    host("mount", &["--bind", path, path]);
    let cleanup = dir.clone();
    rt.on_cleanup(move || {
        let _ = Command::new("umount")
            .arg("-R")
            .arg("-l")
            .arg(&cleanup)
            .status();
    });
    host("mount", &["--make-shared", path]);
    dir
}

fn propagation_into_container(propagation: &str) -> (String, bool) {
    let rt = Runtime::new();
    let shared = shared_host_dir(&rt);
    let id = rt.new_id("prop");
    let bundle = rt.bundle(&id, |s| {
        s.set("/linux/rootfsPropagation", json!(propagation));
        s.mount("/in", "bind", shared.to_str().expect("utf-8"), &["rbind"]);
        s.args(&["sleep", "1000"]);
    });
    rt.create_and_start(&bundle, &id);
    // Mounted on the host after the container started.
    host_tmpfs(&rt, &shared.join("late"));
    write(shared.join("late/f"), "late mount\n");
    let out = rt
        .exec(
            &id,
            &[
                "sh",
                "-c",
                "cat /in/late/f 2>/dev/null; cat /proc/self/mountinfo",
            ],
        )
        .ok();
    let mounts = parse_mountinfo(&out.stdout);
    let bind = find_mount(&mounts, "/in").expect("/in mounted");
    (
        bind.optional.join(" "),
        out.stdout.starts_with("late mount\n"),
    )
}

#[test]
fn rootfs_propagation_rslave_receives_host_mounts() {
    let (optional, visible) = propagation_into_container("rslave");
    assert!(
        optional.contains("master:"),
        "/in is not a slave: {optional:?}"
    );
    assert!(
        visible,
        "a host mount did not propagate into an rslave container"
    );
}

#[test]
fn rootfs_propagation_rprivate_isolates_from_host_mounts() {
    let (optional, visible) = propagation_into_container("rprivate");
    assert!(optional.is_empty(), "/in is not private: {optional:?}");
    assert!(
        !visible,
        "a host mount propagated into an rprivate container"
    );
}

/// rshared, with a rootfs that is a shared mount point of its own (as a
/// snapshot's overlay is, kubelet's Bidirectional mounts ask for it):
/// pivot_root refuses a shared new root, so the runtime makes the rootfs's
/// mount private first, as runc does; the container starts, and a host
/// mount under a shared bind reaches it.
#[test]
fn rootfs_propagation_rshared_with_a_shared_rootfs_mount() {
    let rt = Runtime::new();
    let shared = shared_host_dir(&rt);
    let id = rt.new_id("rshared");
    let bundle = rt.bundle(&id, |s| {
        s.set("/linux/rootfsPropagation", json!("rshared"));
        s.mount(
            "/in",
            "bind",
            shared.to_str().expect("utf-8"),
            &["rbind", "rshared"],
        );
        s.args(&["sleep", "1000"]);
    });
    let rootfs = bundle.rootfs();
    let path = rootfs.to_str().expect("utf-8").to_string();
    host("mount", &["--bind", &path, &path]);
    host("mount", &["--make-shared", &path]);
    rt.on_cleanup(move || {
        let _ = Command::new("umount")
            .arg("-R")
            .arg("-l")
            .arg(&path)
            .status();
    });
    rt.create_and_start(&bundle, &id);
    // Mounted on the host after the container started: seen inside.
    host_tmpfs(&rt, &shared.join("late"));
    write(shared.join("late/f"), "late mount\n");
    let out = rt.exec(&id, &["cat", "/in/late/f"]).ok();
    assert_eq!(out.stdout, "late mount\n");
}

#[test]
fn delete_leaves_no_mount_on_the_host() {
    let rt = Runtime::new();
    let id = rt.new_id("nomounts");
    let shared = rt.host_dir("binds");
    let bundle = rt.bundle(&id, |s| {
        s.bind(&shared, "/data", &[]);
        s.mount("/mnt", "tmpfs", "tmpfs", &[]);
        s.args(&["sleep", "1000"]);
    });
    rt.create_and_start(&bundle, &id);
    assert!(
        rt.leaked_mounts().is_empty(),
        "container mounts visible on the host"
    );
    rt.run(&["delete", "--force", &id]).ok();
    rt.assert_nothing_left(&id, bundle.cgroups_path().as_deref());
}
