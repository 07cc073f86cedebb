//! runtime-spec 1.2/1.3 mount and namespace features: recursive mount
//! attributes (`rro`, `rnosuid`, …), id-mapped bind mounts, the time
//! namespace with `linux.timeOffsets`, `linux.netDevices`, and `features`
//! listing them.
//!
//! Each test first asks the runtime under test (`features`) whether it has
//! the feature. berth-runtime must have every one; runc 1.1.5 has the
//! recursive attributes only, and a test of a feature it lacks prints
//! `SKIPPED <test>: …` and checks nothing, by name, never silently.

use std::fs;
use std::os::unix::fs::{chown, symlink};
use std::process::Command;

use integration_tests::*;
use serde_json::{json, Value};

fn runtime_is_berth() -> bool {
    runtime_binary()
        .file_name()
        .is_some_and(|n| n.to_string_lossy().contains("berth"))
}

/// Whether the runtime under test lists `what` in its `features`
/// (`check`). berth-runtime must; another runtime that lacks it makes the
/// test print why it is skipped.
fn supported(rt: &Runtime, test: &str, what: &str, check: impl Fn(&Value) -> bool) -> bool {
    let out = rt.run(&["features"]);
    let has = out.success() && check(&out.json());
    if !has {
        assert!(
            !runtime_is_berth(),
            "berth-runtime's features do not list {what}: {out}"
        );
        eprintln!(
            "SKIPPED {test}: {} does not support {what} (per its `features`)",
            runtime_binary().display()
        );
    }
    has
}

fn lists(features: &Value, pointer: &str, item: &str) -> bool {
    features
        .pointer(pointer)
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|v| v == item))
}

fn lists_all(features: &Value, pointer: &str, items: &[&str]) -> bool {
    items.iter().all(|i| lists(features, pointer, i))
}

/// A tmpfs mounted on the host for a test (a submount of a bind source);
/// unmounted on clean-up.
fn host_tmpfs(rt: &Runtime, at: &std::path::Path) {
    fs::create_dir_all(at).expect("mkdir mount point");
    host(
        "mount",
        &["-t", "tmpfs", "-o", "size=1m", "tmpfs", path_str(at)],
    );
    let at = at.to_path_buf();
    rt.on_cleanup(move || {
        let _ = Command::new("umount").arg("-l").arg(&at).status();
    });
}

fn path_str(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

const REC_OPTIONS: [&str; 6] = [
    "rro",
    "rnosuid",
    "rnodev",
    "rnoexec",
    "rnoatime",
    "rnosymfollow",
];

#[test]
fn recursive_attributes_reach_every_submount() {
    let rt = Runtime::new();
    let test = "recursive_attributes_reach_every_submount";
    if !supported(&rt, test, "recursive mount options", |f| {
        lists_all(f, "/mountOptions", &REC_OPTIONS)
    }) {
        return;
    }
    let src = rt.host_dir("rsrc");
    write(src.join("top.txt"), "top\n");
    host_tmpfs(&rt, &src.join("sub"));
    write(src.join("sub/inner.txt"), "inner\n");
    let id = rt.new_id("rattr");
    let bundle = rt.bundle(&id, |s| {
        let mut opts = vec!["rbind"];
        opts.extend_from_slice(&REC_OPTIONS);
        s.push(
            "/mounts",
            json!({"destination": "/mnt/r", "type": "bind", "source": src, "options": opts}),
        );
        s.sh(
            "cat /mnt/r/sub/inner.txt; touch /mnt/r/sub/new 2>/dev/null; echo touch=$?; \
             cat /proc/self/mountinfo",
        );
    });
    let out = rt.run_container(&bundle, &id, &[]).ok();
    assert!(out.stdout.starts_with("inner\ntouch=1\n"), "{out}");
    let mounts = parse_mountinfo(&out.stdout);
    for point in ["/mnt/r", "/mnt/r/sub"] {
        let m = find_mount(&mounts, point).unwrap_or_else(|| panic!("no {point}: {out}"));
        for option in ["ro", "nosuid", "nodev", "noexec", "noatime", "nosymfollow"] {
            assert!(
                m.mount_options.iter().any(|o| o == option),
                "{option} missing on {point}: {m:?}"
            );
        }
    }
    // The host's submount is untouched: still writable.
    write(src.join("sub/host.txt"), "still writable\n");
    rt.assert_nothing_left(&id, bundle.cgroups_path().as_deref());
}

#[test]
fn recursive_rw_and_atime_undo_the_earlier_options() {
    let rt = Runtime::new();
    let test = "recursive_rw_and_atime_undo_the_earlier_options";
    if !supported(&rt, test, "rrw and rstrictatime", |f| {
        lists_all(
            f,
            "/mountOptions",
            &["rro", "rrw", "rnoatime", "rstrictatime"],
        )
    }) {
        return;
    }
    // runc before 1.2 ORs every option into set and clear without undoing
    // the earlier ones, so this list fails with EINVAL there.
    let version = rt.run(&["--version"]).ok().stdout;
    if version.starts_with("runc version 1.1.") || version.starts_with("runc version 1.0.") {
        eprintln!(
            "SKIPPED {test}: {} is runc < 1.2, which cannot undo a recursive option \
             with a later one (runc 1.2 can)",
            runtime_binary().display()
        );
        return;
    }
    let src = rt.host_dir("rwsrc");
    host_tmpfs(&rt, &src.join("sub"));
    let id = rt.new_id("rrw");
    let bundle = rt.bundle(&id, |s| {
        s.push(
            "/mounts",
            json!({"destination": "/mnt/w", "type": "bind", "source": src,
                   "options": ["rbind", "rro", "rnoatime", "rrw", "rstrictatime"]}),
        );
        s.sh("touch /mnt/w/sub/new && echo written; cat /proc/self/mountinfo");
    });
    let out = rt.run_container(&bundle, &id, &[]).ok();
    assert!(out.stdout.starts_with("written\n"), "{out}");
    let mounts = parse_mountinfo(&out.stdout);
    let sub = find_mount(&mounts, "/mnt/w/sub").unwrap_or_else(|| panic!("no sub: {out}"));
    assert!(sub.mount_options.iter().any(|o| o == "rw"), "{sub:?}");
    assert!(!sub.mount_options.iter().any(|o| o == "noatime"), "{sub:?}");
    assert!(
        !sub.mount_options.iter().any(|o| o == "relatime"),
        "{sub:?}"
    );
}

fn idmap_supported(rt: &Runtime, test: &str) -> bool {
    supported(rt, test, "id-mapped mounts", |f| {
        f.pointer("/linux/mountExtensions/idmap/enabled") == Some(&json!(true))
            && lists_all(f, "/mountOptions", &["idmap", "ridmap"])
    })
}

#[test]
fn idmapped_bind_shows_host_files_under_the_mapped_owner() {
    let rt = Runtime::new();
    let test = "idmapped_bind_shows_host_files_under_the_mapped_owner";
    if !idmap_supported(&rt, test) {
        return;
    }
    let src = rt.host_dir("idsrc");
    write(src.join("root.txt"), "owned by root\n");
    write(src.join("one.txt"), "owned by 1\n");
    chown(src.join("one.txt"), Some(1), Some(2)).expect("chown");
    let id = rt.new_id("idmap");
    let map = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    let bundle = rt.bundle(&id, |s| {
        s.push(
            "/mounts",
            json!({"destination": "/mnt/id", "type": "bind", "source": src,
                   "options": ["bind", "idmap"], "uidMappings": map, "gidMappings": map}),
        );
        s.bind(&src, "/mnt/plain", &[]);
        s.sh(
            "stat -c %u:%g /mnt/id/root.txt /mnt/id/one.txt /mnt/plain/root.txt; \
             cat /mnt/id/root.txt",
        );
    });
    let out = rt.run_container(&bundle, &id, &[]).ok();
    assert_eq!(
        out.stdout, "100000:100000\n100001:100002\n0:0\nowned by root\n",
        "{out}"
    );
    // Only the mount is mapped: the files are unchanged on the host.
    let meta = fs::metadata(src.join("root.txt")).expect("stat");
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 0);
    rt.assert_nothing_left(&id, bundle.cgroups_path().as_deref());
}

#[test]
fn idmap_without_mappings_takes_the_user_namespace_ones() {
    let rt = Runtime::new();
    let test = "idmap_without_mappings_takes_the_user_namespace_ones";
    if !idmap_supported(&rt, test) {
        return;
    }
    let src = rt.host_dir("nssrc");
    write(src.join("root.txt"), "x\n");
    fs::create_dir(src.join("dir")).expect("mkdir");
    symlink("root.txt", src.join("link")).expect("symlink");
    let id = rt.new_id("idmapns");
    let map = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    let bundle = rt.bundle(&id, |s| {
        s.namespace("user", None);
        s.set("/linux/uidMappings", map.clone());
        s.set("/linux/gidMappings", map);
        s.push(
            "/mounts",
            json!({"destination": "/mnt/id", "type": "bind", "source": src,
                   "options": ["rbind", "ridmap"]}),
        );
        s.bind(&src, "/mnt/plain", &[]);
        // The container's root owns the id-mapped files (host root maps to
        // 100000, the container's 0); through a plain bind they are nobody's.
        s.sh(
            "stat -c %u:%g /mnt/id/root.txt /mnt/id/dir /mnt/plain/root.txt; \
             touch /mnt/id/made-inside && echo made",
        );
    });
    // The rootfs is host root's: the container's root cannot make mount
    // points in it, so they exist beforehand.
    for dir in ["mnt/id", "mnt/plain"] {
        fs::create_dir_all(bundle.rootfs().join(dir)).expect("mkdir mount point");
    }
    let out = rt.run_container(&bundle, &id, &[]).ok();
    assert_eq!(out.stdout, "0:0\n0:0\n65534:65534\nmade\n", "{out}");
    // What the container's root made is host root's on disk.
    let meta = fs::metadata(src.join("made-inside")).expect("made inside");
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 0);
    rt.assert_nothing_left(&id, bundle.cgroups_path().as_deref());
}

#[test]
fn idmap_on_a_non_bind_mount_is_refused_before_anything_exists() {
    let rt = Runtime::new();
    let test = "idmap_on_a_non_bind_mount_is_refused_before_anything_exists";
    if !idmap_supported(&rt, test) {
        return;
    }
    let id = rt.new_id("idmapbad");
    let map = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    let bundle = rt.bundle(&id, |s| {
        s.push(
            "/mounts",
            json!({"destination": "/mnt/t", "type": "tmpfs", "source": "tmpfs",
                   "options": ["idmap"], "uidMappings": map, "gidMappings": map}),
        );
    });
    rt.create(&bundle, &id, &[])
        .failed_with("id-mapped mounts are only supported for bind");
    rt.assert_nothing_left(&id, bundle.cgroups_path().as_deref());
}

fn timens_supported(rt: &Runtime, test: &str) -> bool {
    supported(rt, test, "the time namespace", |f| {
        lists(f, "/linux/namespaces", "time")
    })
}

/// (clock, seconds, nanoseconds) lines of a timens_offsets text.
fn offsets(text: &str) -> Vec<(String, i64, u64)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((
                f.next()?.to_owned(),
                f.next()?.parse().ok()?,
                f.next()?.parse().ok()?,
            ))
        })
        .collect()
}

#[test]
fn time_namespace_has_its_offsets_inside_and_for_exec() {
    let rt = Runtime::new();
    let test = "time_namespace_has_its_offsets_inside_and_for_exec";
    if !timens_supported(&rt, test) {
        return;
    }
    let id = rt.new_id("timens");
    let bundle = rt.bundle(&id, |s| {
        s.namespace("time", None);
        s.set(
            "/linux/timeOffsets",
            json!({"monotonic": {"secs": 31536000, "nanosecs": 250}, "boottime": {"secs": 7200}}),
        );
        s.sh("cat /proc/self/timens_offsets; cat /proc/uptime; echo ready; sleep 1000");
    });
    let created = rt.create_and_start(&bundle, &id);
    let out = created.wait_stdout("ready");
    let want = vec![
        ("monotonic".to_owned(), 31536000, 250),
        ("boottime".to_owned(), 7200, 0),
    ];
    let mut got = offsets(&out);
    got.sort();
    let mut want_sorted = want.clone();
    want_sorted.sort();
    assert_eq!(got, want_sorted, "{out}");
    // /proc/uptime counts boottime, offset by two hours.
    let uptime: f64 = out
        .lines()
        .find_map(|l| {
            l.split_whitespace()
                .next()?
                .parse()
                .ok()
                .filter(|_| l.contains('.'))
        })
        .unwrap_or_else(|| panic!("no uptime line: {out}"));
    assert!(
        uptime >= 7200.0,
        "uptime {uptime} lacks the boottime offset"
    );
    // The host is not offset, and a process exec'd later is inside too.
    let host_ns = fs::read_link("/proc/self/ns/time").expect("own time ns");
    let pid = rt.pid(&id);
    let ctr_ns = fs::read_link(format!("/proc/{pid}/ns/time")).expect("container time ns");
    assert_ne!(host_ns, ctr_ns);
    let exec = rt.exec(&id, &["cat", "/proc/self/timens_offsets"]).ok();
    let mut got = offsets(&exec.stdout);
    got.sort();
    assert_eq!(got, want_sorted, "{exec}");
    rt.run(&["delete", "--force", &id]).ok();
    rt.assert_nothing_left(&id, bundle.cgroups_path().as_deref());
}

#[test]
fn time_offsets_without_a_time_namespace_are_refused() {
    let rt = Runtime::new();
    let test = "time_offsets_without_a_time_namespace_are_refused";
    if !timens_supported(&rt, test) {
        return;
    }
    let id = rt.new_id("timensbad");
    let bundle = rt.bundle(&id, |s| {
        s.set("/linux/timeOffsets", json!({"monotonic": {"secs": 1}}));
    });
    rt.create(&bundle, &id, &[])
        .failed_with("time namespace isn't enabled");
    rt.assert_nothing_left(&id, bundle.cgroups_path().as_deref());
}

/// A dummy interface made on the host for a test, with a permanent global
/// address; deleted on clean-up wherever it is left on the host. A kernel
/// without the dummy driver (this VM's) gets an `ifb` device instead:
/// another single virtual device, which the kernel likewise destroys with
/// its namespace.
fn host_dummy(rt: &Runtime, prefix: &str) -> String {
    let n = unique_id(prefix);
    // Interface names are at most 15 bytes: keep the unique tail.
    let name = format!("{prefix}{}", &n[n.len() - (15 - prefix.len())..]);
    let dummy = Command::new("ip")
        .args(["link", "add", &name, "type", "dummy"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !dummy {
        host("ip", &["link", "add", &name, "type", "ifb"]);
    }
    host("ip", &["addr", "add", "198.18.77.7/32", "dev", &name]);
    let cleanup = name.clone();
    rt.on_cleanup(move || {
        let _ = Command::new("ip")
            .args(["link", "del", &cleanup])
            .stderr(std::process::Stdio::null())
            .status();
    });
    name
}

fn on_host(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", name])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `{"<host name>": {"name": "<name inside>"}}`.
fn net_devices(host_name: &str, inside: &str) -> Value {
    let mut map = serde_json::Map::new();
    map.insert(host_name.to_owned(), json!({ "name": inside }));
    Value::Object(map)
}

fn netdev_supported(rt: &Runtime, test: &str) -> bool {
    supported(rt, test, "linux.netDevices", |f| {
        f.pointer("/linux/netDevices/enabled") == Some(&json!(true))
    })
}

#[test]
fn net_device_moves_in_renamed_up_with_its_address() {
    let rt = Runtime::new();
    let test = "net_device_moves_in_renamed_up_with_its_address";
    if !netdev_supported(&rt, test) {
        return;
    }
    let dev = host_dummy(&rt, "bthd");
    let id = rt.new_id("netdev");
    let bundle = rt.bundle(&id, |s| {
        s.set("/linux/netDevices", net_devices(&dev, "ctr0"));
        s.sh("ip addr show dev ctr0; echo ready; sleep 1000");
    });
    let created = rt.create_and_start(&bundle, &id);
    let out = created.wait_stdout("ready");
    assert!(out.contains("ctr0"), "{out}");
    assert!(
        out.contains("inet 198.18.77.7/32"),
        "address not kept: {out}"
    );
    assert!(out.contains(",UP"), "link not up: {out}");
    assert!(!on_host(&dev), "{dev} is still on the host");
    // As the spec says, the runtime does not move it back: the namespace
    // goes away with the container, and the kernel destroys a virtual
    // device with it (a physical one would return to the host).
    rt.run(&["delete", "--force", &id]).ok();
    assert!(!on_host(&dev) && !on_host("ctr0"));
    rt.assert_nothing_left(&id, bundle.cgroups_path().as_deref());
}

#[test]
fn net_device_in_a_joined_namespace_stays_for_its_owner_to_return() {
    let rt = Runtime::new();
    let test = "net_device_in_a_joined_namespace_stays_for_its_owner_to_return";
    if !netdev_supported(&rt, test) {
        return;
    }
    let dev = host_dummy(&rt, "bthj");
    let ns = unique_id("berth-netdev");
    host("ip", &["netns", "add", &ns]);
    let del = ns.clone();
    rt.on_cleanup(move || {
        let _ = Command::new("ip").args(["netns", "del", &del]).status();
    });
    let id = rt.new_id("netdevns");
    let bundle = rt.bundle(&id, |s| {
        let ns_path = std::path::Path::new("/run/netns").join(&ns);
        s.namespace("network", Some(ns_path.as_path()));
        s.set("/linux/netDevices", net_devices(&dev, "ctr1"));
        s.sh("cat /proc/net/dev; echo ready; sleep 1000");
    });
    let created = rt.create_and_start(&bundle, &id);
    let out = created.wait_stdout("ready");
    assert!(out.contains("ctr1:"), "{out}");
    rt.run(&["delete", "--force", &id]).ok();
    // Still in the namespace under its new name, after the container.
    let inside = host("ip", &["-n", &ns, "-o", "addr", "show", "dev", "ctr1"]);
    assert!(inside.contains("198.18.77.7/32"), "{inside}");
    // The namespace's owner returns it to the host, under its old name.
    host(
        "ip",
        &[
            "-n", &ns, "link", "set", "dev", "ctr1", "netns", "1", "name", &dev,
        ],
    );
    assert!(on_host(&dev), "{dev} did not come back to the host");
    rt.assert_nothing_left(&id, bundle.cgroups_path().as_deref());
}

#[test]
fn net_devices_without_a_network_namespace_are_refused() {
    let rt = Runtime::new();
    let test = "net_devices_without_a_network_namespace_are_refused";
    if !netdev_supported(&rt, test) {
        return;
    }
    let id = rt.new_id("netdevbad");
    let bundle = rt.bundle(&id, |s| {
        s.remove_namespace("network");
        s.set("/linux/netDevices", json!({"lo": {}}));
    });
    rt.create(&bundle, &id, &[])
        .failed_with("without a NET namespace");
    rt.assert_nothing_left(&id, bundle.cgroups_path().as_deref());
}

#[test]
fn features_list_the_mount_extensions_time_namespace_and_net_devices() {
    let rt = Runtime::new();
    let features = rt.run(&["features"]).ok().json();
    let mut missing = Vec::new();
    for option in REC_OPTIONS
        .iter()
        .chain(&[
            "rrw",
            "rsuid",
            "rdev",
            "rexec",
            "ratime",
            "rrelatime",
            "rstrictatime",
        ])
        .chain(&["idmap", "ridmap", "nosymfollow"])
    {
        if !lists(&features, "/mountOptions", option) {
            missing.push(format!("mount option {option}"));
        }
    }
    if !lists(&features, "/linux/namespaces", "time") {
        missing.push("time namespace".into());
    }
    if features.pointer("/linux/mountExtensions/idmap/enabled") != Some(&json!(true)) {
        missing.push("mountExtensions.idmap".into());
    }
    if features.pointer("/linux/netDevices/enabled") != Some(&json!(true)) {
        missing.push("netDevices".into());
    }
    if runtime_is_berth() {
        assert!(missing.is_empty(), "features lack {missing:?}: {features}");
    } else if !missing.is_empty() {
        eprintln!(
            "SKIPPED features_list_the_mount_extensions_time_namespace_and_net_devices: {} \
             lacks {missing:?}",
            runtime_binary().display()
        );
    }
}

#[test]
fn time_namespace_on_the_general_path_beside_a_joined_namespace() {
    let rt = Runtime::new();
    let test = "time_namespace_on_the_general_path_beside_a_joined_namespace";
    if !timens_supported(&rt, test) {
        return;
    }
    // A namespace joined by path takes the init down the general path
    // (setns, then unshare), where the time namespace is made too.
    let ns = unique_id("berth-timens");
    host("ip", &["netns", "add", &ns]);
    let del = ns.clone();
    rt.on_cleanup(move || {
        let _ = Command::new("ip").args(["netns", "del", &del]).status();
    });
    let id = rt.new_id("timensgp");
    let bundle = rt.bundle(&id, |s| {
        let ns_path = std::path::Path::new("/run/netns").join(&ns);
        s.namespace("network", Some(ns_path.as_path()));
        s.namespace("time", None);
        s.set(
            "/linux/timeOffsets",
            json!({"boottime": {"secs": 3600, "nanosecs": 7}}),
        );
        s.args(&["cat", "/proc/self/timens_offsets"]);
    });
    let out = rt.run_container(&bundle, &id, &[]).ok();
    let got = offsets(&out.stdout);
    assert!(got.contains(&("boottime".to_owned(), 3600, 7)), "{out}");
    rt.assert_nothing_left(&id, bundle.cgroups_path().as_deref());
}

#[test]
fn net_device_whose_new_name_is_taken_inside_fails_the_create() {
    let rt = Runtime::new();
    let test = "net_device_whose_new_name_is_taken_inside_fails_the_create";
    if !netdev_supported(&rt, test) {
        return;
    }
    let dev = host_dummy(&rt, "btht");
    let id = rt.new_id("netdevlo");
    // Every new network namespace has `lo`: the spec says this must fail.
    let bundle = rt.bundle(&id, |s| {
        s.set("/linux/netDevices", net_devices(&dev, "lo"));
    });
    rt.create(&bundle, &id, &[]).failed_with(&dev);
    assert!(
        on_host(&dev),
        "{dev} left the host although the move failed"
    );
    rt.assert_nothing_left(&id, bundle.cgroups_path().as_deref());
}

#[test]
fn net_device_name_template_is_filled_in_by_the_kernel() {
    let rt = Runtime::new();
    let test = "net_device_name_template_is_filled_in_by_the_kernel";
    if !netdev_supported(&rt, test) {
        return;
    }
    let dev = host_dummy(&rt, "bthp");
    let id = rt.new_id("netdevtpl");
    let bundle = rt.bundle(&id, |s| {
        s.set("/linux/netDevices", net_devices(&dev, "tpl%d"));
        s.args(&["cat", "/proc/net/dev"]);
    });
    let out = rt.run_container(&bundle, &id, &[]).ok();
    assert!(out.stdout.contains("tpl0:"), "{out}");
    rt.assert_nothing_left(&id, bundle.cgroups_path().as_deref());
}
