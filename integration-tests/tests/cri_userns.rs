//! Pods in their own user namespace (`userns_options` mode POD, what
//! kubelet sends for `hostUsers: false`) through berth-supervisord's CRI,
//! driven by the real `crictl` and raw gRPC calls: the pause makes the
//! namespace with the pod's mappings, the container joins it, its image
//! layers are id-mapped, and what it writes lands in its writable layer
//! owned by its host ids. Bad mappings are refused with nothing left (the
//! fixture fails a test that leaves mounts, namespaces or cgroups).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};

use berth_proto::cri::v1 as cri;
use berth_proto::cri::v1::runtime_service_client::RuntimeServiceClient;
use integration_tests::cri::{PodOptions, PodSupervisor};
use integration_tests::supervisor::runtime;
use serde_json::{json, Value};

const IMAGE: &str = "docker.io/library/busybox:latest";

/// A daemon with the busybox image imported as [`IMAGE`]; its tree is
/// searchable by others (0711), as a pod's user namespace root (an
/// unmapped host id) must reach the state directory, as /run is.
fn start() -> PodSupervisor {
    let sup = PodSupervisor::start(PodOptions::default());
    std::fs::set_permissions(sup.dir(), std::fs::Permissions::from_mode(0o711)).expect("chmod");
    sup.import_busybox(IMAGE);
    sup
}

fn write(sup: &PodSupervisor, name: &str, v: &Value) -> String {
    let path = sup.dir().join(name);
    std::fs::write(&path, v.to_string()).expect("write config");
    path.display().to_string()
}

fn userns(lines: &[(u32, u32, u32)]) -> Value {
    let maps: Vec<Value> = lines
        .iter()
        .map(|(c, h, l)| json!({"container_id": c, "host_id": h, "length": l}))
        .collect();
    json!({"mode": 0, "uids": maps, "gids": maps})
}

fn pod_config(sup: &PodSupervisor, name: &str, userns: Value) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "attempt": 0},
        "hostname": format!("{name}-host"),
        "log_directory": sup.dir().join("logs").join(name),
        "dns_config": {"servers": ["10.88.7.53"], "searches": ["svc.test"]},
        "linux": {"security_context": {"namespace_options": {"userns_options": userns}}}
    })
}

fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `upperdir=` of the overlay mounted on `<...>/<id>/rootfs`.
fn upper_dir_of(id: &str) -> String {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let line = info
        .lines()
        .find(|l| {
            l.split(' ')
                .nth(4)
                .is_some_and(|m| m.ends_with(&format!("{id}/rootfs")))
        })
        .unwrap_or_else(|| panic!("no root filesystem mount of {id}:\n{info}"));
    line.split(',')
        .find_map(|o| o.strip_prefix("upperdir="))
        .unwrap_or_else(|| panic!("no upperdir in {line}"))
        .split([' ', ','])
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_pod_in_its_own_user_namespace_maps_its_ids_and_its_image() {
    let sup = start();

    // Status lists the handlers with user namespaces (critest's gate).
    let status = runtime().block_on(async {
        let mut client = RuntimeServiceClient::new(sup.channel().await);
        client
            .status(cri::StatusRequest { verbose: true })
            .await
            .expect("status")
            .into_inner()
    });
    let default = status
        .runtime_handlers
        .iter()
        .find(|h| h.name.is_empty())
        .expect("the default handler");
    assert!(default.features.is_some_and(|f| f.user_namespaces));

    let pod_json = pod_config(&sup, "mapped", userns(&[(0, 100000, 65536)]));
    let pod = write(&sup, "pod.json", &pod_json);
    let pod_id = sup.crictl_ok(&["runp", &pod]).trim().to_string();
    let script = "cat /proc/self/uid_map /proc/self/gid_map; id -u; id -g; \
                  stat -c 'bin %u:%g' /bin/busybox; stat -c 'root %u:%g' /; \
                  hostname; cat /etc/hostname; grep -c 10.88.7.53 /etc/resolv.conf; \
                  grep -c 127.0.0.1 /etc/hosts; \
                  stat -c 'vol %u:%g' /vol/file; \
                  touch /created-here && echo created; sleep 300";
    // A volume (a host directory of root's) id-mapped as kubelet asks
    // with the pod's mappings: root's files are root's inside.
    let vol = sup.dir().join("vol");
    std::fs::create_dir(&vol).expect("mkdir vol");
    std::fs::write(vol.join("file"), "x").expect("write vol/file");
    let maps = json!([{"container_id": 0, "host_id": 100000, "length": 65536}]);
    let container = json!({
        "metadata": {"name": "c", "attempt": 0},
        "image": {"image": IMAGE},
        "command": ["/bin/sh", "-c", script],
        "mounts": [{"container_path": "/vol", "host_path": vol, "readonly": true,
                    "uidMappings": maps, "gidMappings": maps}],
        "log_path": "c.log",
        "linux": {"security_context": {"namespace_options": {"userns_options": userns(&[(0, 100000, 65536)])}}}
    });
    let ctr = write(&sup, "c.json", &container);
    let cid = sup
        .crictl_ok(&["create", &pod_id, &ctr, &pod])
        .trim()
        .to_string();
    sup.crictl_ok(&["start", &cid]);
    let mut logs = String::new();
    wait_for("the container's output", Duration::from_secs(30), || {
        logs = String::from_utf8_lossy(&sup.crictl(&["logs", &cid]).stdout).into_owned();
        logs.contains("created")
    });
    let lines: Vec<Vec<&str>> = logs
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    // uid_map and gid_map: "0 100000 65536".
    assert_eq!(lines[0], ["0", "100000", "65536"], "{logs}");
    assert_eq!(lines[1], ["0", "100000", "65536"], "{logs}");
    // Root inside; the image's files (owned by 0 on disk) and the root
    // directory appear owned by root.
    assert_eq!(lines[2], ["0"], "{logs}");
    assert_eq!(lines[3], ["0"], "{logs}");
    assert_eq!(lines[4], ["bin", "0:0"], "{logs}");
    assert_eq!(lines[5], ["root", "0:0"], "{logs}");
    // The pod's name and files are there and readable.
    assert_eq!(lines[6], ["mapped-host"], "{logs}");
    assert_eq!(lines[7], ["mapped-host"], "{logs}");
    assert_eq!(lines[8], ["1"], "{logs}");
    assert_eq!(lines[9], ["1"], "{logs}");
    assert_eq!(
        lines[10],
        ["vol", "0:0"],
        "{logs} {}",
        sup.crictl_ok(&["inspect", &cid])
    );
    // An exec joins the namespace too.
    let id = sup.crictl_ok(&["exec", "-s", &cid, "cat", "/proc/self/uid_map"]);
    assert_eq!(
        id.split_whitespace().collect::<Vec<_>>(),
        ["0", "100000", "65536"]
    );

    // On the host, the process runs as 100000.
    let inspect: Value =
        serde_json::from_str(&sup.crictl_ok(&["inspect", &cid])).expect("inspect JSON");
    let pid = inspect["info"]["pid"].as_u64().expect("pid");
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let uid_line = proc_status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap_or_default();
    assert_eq!(
        uid_line.split_whitespace().collect::<Vec<_>>(),
        ["Uid:", "100000", "100000", "100000", "100000"]
    );
    // The layers are id-mapped, the writable layer is not: what the
    // container made is owned by its host ids there, as is the layer's
    // top directory (the container's /).
    let upper = upper_dir_of(&cid);
    let made =
        std::fs::metadata(format!("{upper}/created-here")).expect("the file in the upper dir");
    assert_eq!((made.uid(), made.gid()), (100000, 100000));
    let top = std::fs::metadata(&upper).expect("upper dir");
    assert_eq!((top.uid(), top.gid()), (100000, 100000));

    // A container of the pod cannot ask for other mappings.
    let other = json!({
        "metadata": {"name": "other", "attempt": 0},
        "image": {"image": IMAGE},
        "command": ["true"],
        "linux": {"security_context": {"namespace_options": {"userns_options": userns(&[(0, 200000, 65536)])}}}
    });
    let other = write(&sup, "other.json", &other);
    let out = sup.crictl(&["create", &pod_id, &other, &pod]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("differ from the pod's"), "{err}");

    sup.crictl_ok(&["stopp", &pod_id]);
    sup.crictl_ok(&["rmp", &pod_id]);
}

#[test]
fn bad_user_namespace_options_are_refused_and_leave_nothing() {
    let sup = start();
    for (name, options, want) in [
        (
            "two-lines",
            userns(&[(0, 100000, 1000), (1000, 300000, 1000)]),
            "only one mapping line supported",
        ),
        (
            "no-root",
            userns(&[(1, 100000, 65536)]),
            "container id 0 (root) must be mapped",
        ),
        ("no-maps", userns(&[]), "without UID and GID mappings"),
        (
            "target",
            json!({"mode": 3}),
            "unsupported user namespace mode",
        ),
        (
            "node-with-maps",
            json!({"mode": 2, "uids": [{"container_id": 0, "host_id": 1, "length": 1}]}),
            "with mappings",
        ),
    ] {
        let pod = write(&sup, "bad.json", &pod_config(&sup, name, options));
        let out = sup.crictl(&["runp", &pod]);
        assert!(!out.status.success(), "{name} was taken");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{name}: {err}");
    }
    let pods = sup.crictl_ok(&["pods", "-q"]);
    assert!(pods.trim().is_empty(), "{pods}");
    assert!(sup.mounts().is_empty(), "{:?}", sup.mounts());
    // The daemon still serves.
    let pod = write(
        &sup,
        "good.json",
        &pod_config(&sup, "good", userns(&[(0, 100000, 65536)])),
    );
    let pod_id = sup.crictl_ok(&["runp", &pod]).trim().to_string();
    sup.crictl_ok(&["rmp", "-f", &pod_id]);
}
