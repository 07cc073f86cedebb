//! Namespaces: what a process inside the container sees of pid, uts, ipc,
//! net, mount, cgroup and user namespaces, new or joined by path.

use std::fs;
use std::path::Path;
use std::process::Command;

use integration_tests::*;
use serde_json::json;

fn ns_link(path: impl AsRef<Path>) -> String {
    fs::read_link(path.as_ref())
        .unwrap_or_else(|e| panic!("readlink {}: {e}", path.as_ref().display()))
        .to_string_lossy()
        .into_owned()
}

#[test]
fn init_is_pid_1_in_its_pid_namespace() {
    let rt = Runtime::new();
    let id = rt.new_id("pidns");
    let bundle = rt.bundle(&id, |s| {
        s.sh("echo $$; cat /proc/1/cmdline | tr '\\0' ' '");
    });
    let out = rt.run_container(&bundle, &id, &[]).ok();
    let mut lines = out.stdout.lines();
    assert_eq!(lines.next(), Some("1"), "{out}");
    assert!(
        lines.next().is_some_and(|l| l.starts_with("sh -c echo")),
        "{out}"
    );
}

#[test]
fn requested_namespaces_are_new_and_others_shared() {
    let rt = Runtime::new();
    let id = rt.new_id("nsset");
    let kinds = ["pid", "net", "ipc", "uts", "mnt", "cgroup"];
    let bundle = rt.bundle(&id, |s| {
        // everything but ipc
        s.namespaces(&["pid", "network", "uts", "mount", "cgroup"]);
        s.sh("for ns in pid net ipc uts mnt cgroup; do readlink /proc/self/ns/$ns; done");
    });
    let out = rt.run_container(&bundle, &id, &[]).ok();
    let inside: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(inside.len(), kinds.len(), "{out}");
    for (kind, inside) in kinds.iter().zip(inside) {
        let host = ns_link(format!("/proc/self/ns/{kind}"));
        if *kind == "ipc" {
            assert_eq!(inside, host, "ipc namespace was not requested");
        } else {
            assert_ne!(inside, host, "{kind} namespace is the host's");
        }
    }
}

#[test]
fn uts_namespace_has_the_configured_hostname() {
    let rt = Runtime::new();
    let id = rt.new_id("uts");
    let host_before = read("/proc/sys/kernel/hostname");
    let bundle = rt.bundle(&id, |s| {
        s.hostname("berth-uts");
        s.sh("hostname; cat /proc/sys/kernel/hostname");
    });
    let out = rt.run_container(&bundle, &id, &[]).ok();
    assert_eq!(out.stdout, "berth-uts\nberth-uts\n");
    assert_eq!(read("/proc/sys/kernel/hostname"), host_before);
}

#[test]
fn network_namespace_has_only_loopback() {
    let rt = Runtime::new();
    let id = rt.new_id("net");
    let bundle = rt.bundle(&id, |s| {
        s.args(&["cat", "/proc/net/dev"]);
    });
    let out = rt.run_container(&bundle, &id, &[]).ok();
    let interfaces: Vec<&str> = out
        .stdout
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(interfaces, ["lo"], "{out}");
}

#[test]
fn mount_namespace_keeps_container_mounts_off_the_host() {
    let rt = Runtime::new();
    let id = rt.new_id("mnt");
    let bundle = rt.bundle(&id, |s| {
        s.mount("/mnt", "tmpfs", "tmpfs", &["size=1m"]);
        s.sh("echo ready; sleep 1000");
    });
    rt.create_and_start(&bundle, &id).wait_stdout("ready");
    let pid = rt.pid(&id);
    let inside = parse_mountinfo(&read(format!("/proc/{pid}/mountinfo")));
    assert!(
        find_mount(&inside, "/mnt").is_some(),
        "no /mnt in the container"
    );
    let host = host_mounts();
    assert!(
        !host.iter().any(|m| m
            .mount_point
            .starts_with(bundle.path().to_str().expect("utf-8"))),
        "container mounts are visible on the host"
    );
}

#[test]
fn cgroup_namespace_roots_the_container_cgroups() {
    let rt = Runtime::new();
    let id = rt.new_id("cgns");
    let bundle = rt.bundle(&id, |s| {
        s.namespace("cgroup", None);
        s.args(&["cat", "/proc/self/cgroup"]);
    });
    let out = rt.run_container(&bundle, &id, &[]).ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(!lines.is_empty(), "{out}");
    for line in lines {
        let path = line.splitn(3, ':').nth(2).unwrap_or_default();
        assert_eq!(path, "/", "cgroup path outside the namespace root: {line}");
    }
}

#[test]
fn without_cgroup_namespace_the_container_sees_its_cgroups_path() {
    let rt = Runtime::new();
    let id = rt.new_id("nocgns");
    let bundle = rt.bundle(&id, |s| {
        s.remove_namespace("cgroup");
        s.args(&["cat", "/proc/self/cgroup"]);
    });
    let out = rt.run_container(&bundle, &id, &[]).ok();
    let expected = format!("{CGROUP_PARENT}/{id}");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.ends_with(&format!(":{expected}"))),
        "{expected} not in {out}"
    );
}

#[test]
fn user_namespace_maps_root_to_a_host_uid() {
    let rt = Runtime::new();
    let id = rt.new_id("userns");
    let bundle = rt.bundle(&id, |s| {
        s.namespace("user", None);
        s.set(
            "/linux/uidMappings",
            json!([{"containerID": 0, "hostID": 100000, "size": 65536}]),
        );
        s.set(
            "/linux/gidMappings",
            json!([{"containerID": 0, "hostID": 100000, "size": 65536}]),
        );
        s.sh("cat /proc/self/uid_map /proc/self/gid_map; id -u; id -g; echo ready; sleep 1000");
    });
    let created = rt.create_and_start(&bundle, &id);
    let out = created.wait_stdout("ready");
    let lines: Vec<String> = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        lines,
        ["0 100000 65536", "0 100000 65536", "0", "0", "ready"],
        "{out}"
    );
    // Seen from the host, the container's root is uid 100000.
    let pid = rt.pid(&id);
    let status = read(format!("/proc/{pid}/status"));
    let uid_line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .expect("Uid line");
    assert_eq!(
        uid_line.split_whitespace().nth(1),
        Some("100000"),
        "{uid_line}"
    );
}

/// A network namespace made on the host for a test; deleted on clean-up.
fn host_netns(rt: &Runtime) -> (String, std::path::PathBuf) {
    let name = unique_id("berth-netns");
    host("ip", &["netns", "add", &name]);
    let cleanup = name.clone();
    rt.on_cleanup(move || {
        let _ = Command::new("ip").args(["netns", "del", &cleanup]).status();
    });
    (name.clone(), Path::new("/run/netns").join(name))
}

#[test]
fn joins_an_existing_network_namespace_by_path() {
    let rt = Runtime::new();
    let id = rt.new_id("joinnet");
    let (name, path) = host_netns(&rt);
    host(
        "ip",
        &[
            "-n", &name, "link", "add", "berth0", "type", "veth", "peer", "name", "berth1",
        ],
    );
    let bundle = rt.bundle(&id, |s| {
        s.namespace("network", Some(&path));
        s.sh("readlink /proc/self/ns/net; cat /proc/net/dev");
    });
    let out = rt.run_container(&bundle, &id, &[]).ok();
    let inode = fs::metadata(&path).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
    let inode = inode.expect("stat netns");
    assert_eq!(
        out.stdout.lines().next(),
        Some(format!("net:[{inode}]").as_str()),
        "{out}"
    );
    for link in ["lo", "berth0", "berth1"] {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{link}:"))),
            "{link} not in the joined namespace: {out}"
        );
    }
    // Joining does not destroy the namespace: its links are still there.
    let links = host("ip", &["-n", &name, "-o", "link"]);
    assert!(links.contains("berth0"), "{links}");
}
