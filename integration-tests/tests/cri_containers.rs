//! CRI containers through berth-supervisord, driven by the real `crictl`
//! (`create`, `start`, `ps`, `inspect`, `logs`, `stats`, `update`, `stop`,
//! `rm`) and by raw gRPC calls: the daemon runs in a network namespace the
//! fixture made, with the fixture's CNI conflist; the container image is
//! the test busybox, imported into `k8s.io` with `berth-ctr images
//! import` (the daemon's loopback is its namespace's, where no registry
//! runs), so nothing is pulled. The
//! fixture fails a test that leaves mounts, network namespaces, veths,
//! leases or cgroups behind.

use std::time::{Duration, Instant};

use berth_proto::cri::v1 as cri;
use berth_proto::cri::v1::runtime_service_client::RuntimeServiceClient;
use integration_tests::cri::{PodOptions, PodSupervisor};
use integration_tests::supervisor::runtime;
use serde_json::{json, Value};

const IMAGE: &str = "docker.io/library/busybox:latest";

/// A daemon with the busybox image imported as [`IMAGE`].
fn start() -> ((), PodSupervisor) {
    let sup = PodSupervisor::start(PodOptions::default());
    sup.import_busybox(IMAGE);
    let images = sup.crictl_ok(&["images", "-o", "json"]);
    assert!(images.contains(IMAGE), "{images}");
    ((), sup)
}

/// The super options of the overlay mounted on a task's bundle rootfs.
fn rootfs_options(sup: &PodSupervisor, task: &str) -> String {
    let suffix = format!("/{task}/rootfs");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    mountinfo
        .lines()
        .find(|l| {
            l.split(' ').nth(4).is_some_and(|m| {
                m.starts_with(&sup.dir().display().to_string()) && m.ends_with(&suffix)
            })
        })
        .and_then(|l| l.split(" - ").nth(1))
        .filter(|fs| fs.starts_with("overlay "))
        .and_then(|fs| fs.split(' ').nth(2))
        .unwrap_or_else(|| panic!("no overlay on {task}'s rootfs:\n{mountinfo}"))
        .to_string()
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn write(sup: &PodSupervisor, name: &str, v: &Value) -> String {
    let path = sup.dir().join(name);
    std::fs::write(&path, v.to_string()).expect("write config");
    path.display().to_string()
}

fn pod_config(sup: &PodSupervisor, name: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "attempt": 0},
        "hostname": format!("{name}-host"),
        "log_directory": sup.dir().join("logs").join(name),
        "linux": {}
    })
}

fn container_config(name: &str, script: &str) -> Value {
    json!({
        "metadata": {"name": name, "attempt": 0},
        "image": {"image": IMAGE},
        "command": ["/bin/sh", "-c", script],
        "envs": [{"key": "GREETING", "value": "hello"}],
        "labels": {"app": name},
        "annotations": {"note": "kept"},
        "log_path": format!("{name}.log"),
        "linux": {}
    })
}

/// Waits for `what` until a deadline.
fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `<RFC3339Nano> <stdout|stderr> <P|F> <text>` lines.
fn check_cri_log_line(line: &str) -> (String, String, String) {
    let mut parts = line.splitn(4, ' ');
    let (time, stream, tag) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let text = parts.next().unwrap_or_default();
    assert!(
        time.len() >= 20 && time.ends_with('Z') && time.contains('T'),
        "{line:?}"
    );
    assert!(stream == "stdout" || stream == "stderr", "{line:?}");
    assert!(tag == "F" || tag == "P", "{line:?}");
    (stream.into(), tag.into(), text.into())
}

#[test]
fn crictl_creates_starts_inspects_logs_updates_stops_and_removes() {
    let (_registry, sup) = start();
    let pod_json = pod_config(&sup, "web");
    let pod = write(&sup, "pod.json", &pod_json);
    let pod_id = sup.crictl_ok(&["runp", &pod]).trim().to_string();
    // It ignores SIGTERM: the stop's timeout ends in SIGKILL.
    let script = "trap '' TERM; echo \"$GREETING from $HOSTNAME\"; echo oops >&2; \
                  printf 'no newline'; echo; while true; do sleep 1; done";
    let ctr = write(&sup, "ctr.json", &container_config("app", script));
    let id = sup
        .crictl_ok(&["create", &pod_id, &ctr, &pod])
        .trim()
        .to_string();
    assert_eq!(id.len(), 64, "{id}");

    let ps = json_of(&sup.crictl_ok(&["ps", "-a", "-o", "json"]));
    assert_eq!(ps["containers"][0]["state"], "CONTAINER_CREATED", "{ps}");
    sup.crictl_ok(&["start", &id]);
    let ps = json_of(&sup.crictl_ok(&["ps", "-o", "json"]));
    let c = &ps["containers"][0];
    assert_eq!(c["id"], id.as_str(), "{ps}");
    assert_eq!(c["state"], "CONTAINER_RUNNING");
    assert_eq!(c["podSandboxId"], pod_id.as_str());
    assert_eq!(c["labels"]["app"], "app");
    assert_eq!(c["metadata"]["name"], "app");
    // The pause's and the container's root filesystems are volatile
    // overlays: their unmounts sync nothing.
    for task in [&pod_id, &id] {
        let options = rootfs_options(&sup, task);
        // Shown as `volatile`, or `fsync=volatile` by newer kernels.
        let volatile = options
            .split(',')
            .any(|o| o == "volatile" || o == "fsync=volatile");
        assert!(volatile, "{task}: {options}");
    }

    let inspect = json_of(&sup.crictl_ok(&["inspect", "-o", "json", &id]));
    let status = &inspect["status"];
    assert_eq!(status["state"], "CONTAINER_RUNNING", "{inspect}");
    assert_eq!(status["annotations"]["note"], "kept");
    assert_eq!(status["image"]["image"], IMAGE);
    assert!(status["imageRef"]
        .as_str()
        .unwrap_or("")
        .starts_with("sha256:"));
    let log_path = sup.dir().join("logs/web/app.log");
    assert_eq!(status["logPath"], log_path.display().to_string().as_str());
    assert!(
        inspect["info"]["pid"].as_i64().unwrap_or(0) > 0,
        "{inspect}"
    );
    assert_eq!(inspect["info"]["sandboxID"], pod_id.as_str());

    // The log: the CRI's format, read back by crictl.
    wait_for("the log", Duration::from_secs(10), || {
        std::fs::read_to_string(&log_path).is_ok_and(|t| t.lines().count() >= 3)
    });
    let text = std::fs::read_to_string(&log_path).expect("log");
    let lines: Vec<_> = text.lines().map(check_cri_log_line).collect();
    assert!(
        lines.contains(&("stdout".into(), "F".into(), "hello from web-host".into())),
        "{text}"
    );
    assert!(
        lines.contains(&("stderr".into(), "F".into(), "oops".into())),
        "{text}"
    );
    assert!(
        lines.contains(&("stdout".into(), "F".into(), "no newline".into())),
        "{text}"
    );
    let out = sup.crictl(&["logs", &id]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        all.contains("hello from web-host") && all.contains("oops"),
        "{all}"
    );

    let stats = json_of(&sup.crictl_ok(&["stats", "-o", "json", &id]));
    let s = &stats["stats"][0];
    assert_eq!(s["attributes"]["id"], id.as_str(), "{stats}");
    let ws: u64 = s["memory"]["workingSetBytes"]["value"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .or_else(|| s["memory"]["workingSetBytes"]["value"].as_u64())
        .unwrap_or(0);
    assert!(ws > 0, "{stats}");
    assert!(
        s["writableLayer"]["fsId"]["mountpoint"].is_string(),
        "{stats}"
    );

    sup.crictl_ok(&["update", "--memory", "67108864", &id]);
    let pid = inspect["info"]["pid"].as_i64().unwrap_or(0);
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    let memory = cgroup
        .lines()
        .find_map(|l| {
            let (_, rest) = l.split_once(':')?;
            let (controllers, path) = rest.split_once(':')?;
            (controllers.split(',').any(|c| c == "memory") || controllers.is_empty())
                .then(|| path.to_string())
        })
        .expect("memory cgroup");
    let limit_v1 = format!("/sys/fs/cgroup/memory{memory}/memory.limit_in_bytes");
    let limit_v2 = format!("/sys/fs/cgroup{memory}/memory.max");
    let limit = std::fs::read_to_string(&limit_v1)
        .or_else(|_| std::fs::read_to_string(&limit_v2))
        .expect("memory limit");
    assert_eq!(limit.trim(), "67108864");

    let begun = Instant::now();
    sup.crictl_ok(&["stop", "--timeout", "1", &id]);
    assert!(begun.elapsed() < Duration::from_secs(10));
    let inspect = json_of(&sup.crictl_ok(&["inspect", "-o", "json", &id]));
    assert_eq!(inspect["status"]["state"], "CONTAINER_EXITED", "{inspect}");
    assert_eq!(
        inspect["status"]["exitCode"], 137,
        "SIGKILL after the timeout"
    );
    assert_eq!(inspect["status"]["reason"], "Error");
    sup.crictl_ok(&["stop", &id]);
    sup.crictl_ok(&["rm", &id]);
    let ps = json_of(&sup.crictl_ok(&["ps", "-a", "-o", "json"]));
    assert_eq!(
        ps["containers"].as_array().map(Vec::len).unwrap_or(0),
        0,
        "{ps}"
    );
    sup.crictl_ok(&["rmp", "-f", &pod_id]);
}

#[test]
fn exits_are_reported_with_their_code_and_reason() {
    let (_registry, sup) = start();
    let pod = write(&sup, "pod.json", &pod_config(&sup, "jobs"));
    let pod_id = sup.crictl_ok(&["runp", &pod]).trim().to_string();
    let mut ids = Vec::new();
    for (name, script) in [("ok", "true"), ("fails", "exit 3")] {
        let ctr = write(
            &sup,
            &format!("{name}.json"),
            &container_config(name, script),
        );
        let id = sup
            .crictl_ok(&["create", &pod_id, &ctr, &pod])
            .trim()
            .to_string();
        sup.crictl_ok(&["start", &id]);
        ids.push(id);
    }
    for (id, code, reason) in [(&ids[0], 0, "Completed"), (&ids[1], 3, "Error")] {
        wait_for("the exit", Duration::from_secs(10), || {
            let inspect = json_of(&sup.crictl_ok(&["inspect", "-o", "json", id]));
            inspect["status"]["state"] == "CONTAINER_EXITED"
        });
        let inspect = json_of(&sup.crictl_ok(&["inspect", "-o", "json", id]));
        assert_eq!(inspect["status"]["exitCode"], code, "{inspect}");
        assert_eq!(inspect["status"]["reason"], reason, "{inspect}");
        assert!(inspect["status"]["finishedAt"].is_string(), "{inspect}");
    }
    // A container can only be started once.
    let out = sup.crictl(&["start", &ids[0]]);
    assert!(!out.status.success());
    // Removing a pod removes its containers.
    sup.crictl_ok(&["rmp", "-f", &pod_id]);
    let ps = json_of(&sup.crictl_ok(&["ps", "-a", "-o", "json"]));
    assert_eq!(
        ps["containers"].as_array().map(Vec::len).unwrap_or(0),
        0,
        "{ps}"
    );
}

#[test]
fn raw_calls_refuse_bad_input_with_containerds_codes_and_leave_nothing() {
    let (_registry, sup) = start();
    let pod = write(&sup, "pod.json", &pod_config(&sup, "bad"));
    let pod_id = sup.crictl_ok(&["runp", &pod]).trim().to_string();
    let pod_config: cri::PodSandboxConfig = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "bad".into(),
            uid: "uid-bad".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        ..Default::default()
    };
    let config = |image: &str, mounts: Vec<cri::Mount>| cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: "c".into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["/bin/sh".into()],
        mounts,
        ..Default::default()
    };
    let rt = runtime();
    rt.block_on(async {
        let mut client = RuntimeServiceClient::new(sup.channel().await);
        let create = |sandbox: &str, c: cri::ContainerConfig| cri::CreateContainerRequest {
            pod_sandbox_id: sandbox.into(),
            config: Some(c),
            sandbox_config: Some(pod_config.clone()),
        };
        let missing = "0".repeat(64);
        let e = client
            .create_container(create(&missing, config(IMAGE, vec![])))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
        assert!(e.message().contains("failed to find sandbox id"), "{e:?}");

        for bad in ["no-such-image:1", "BAD::REF"] {
            let e = client
                .create_container(create(&pod_id, config(bad, vec![])))
                .await
                .unwrap_err();
            assert!(
                matches!(
                    e.code(),
                    tonic::Code::NotFound | tonic::Code::InvalidArgument
                ),
                "{bad}: {e:?}"
            );
            assert!(e.message().contains(bad), "{e:?}");
        }

        let gone = sup.dir().join("no/such/dir");
        let mount = cri::Mount {
            container_path: "/data".into(),
            host_path: gone.display().to_string(),
            ..Default::default()
        };
        let e = client
            .create_container(create(&pod_id, config(IMAGE, vec![mount])))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains(&gone.display().to_string()), "{e:?}");
        assert!(!gone.exists(), "the missing source is not made");

        let list = client
            .list_containers(cri::ListContainersRequest { filter: None })
            .await
            .expect("list")
            .into_inner();
        assert!(list.containers.is_empty(), "{list:?}");

        // Status of an unknown container: NotFound; stop and remove of one
        // succeed (as kubelet expects of an idempotent call).
        let e = client
            .container_status(cri::ContainerStatusRequest {
                container_id: missing.clone(),
                verbose: false,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
        client
            .stop_container(cri::StopContainerRequest {
                container_id: missing.clone(),
                timeout: 1,
            })
            .await
            .expect("stop of an unknown container");
        client
            .remove_container(cri::RemoveContainerRequest {
                container_id: missing.clone(),
            })
            .await
            .expect("remove of an unknown container");
    });
    // No snapshot or container record left in k8s.io but the pod's.
    let leftover = std::fs::read_dir(sup.state().join("shims/k8s.io"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(leftover, 1, "only the pause task's shim");
    sup.crictl_ok(&["rmp", "-f", &pod_id]);
}

#[test]
fn logs_reopen_after_rotation_and_events_follow_the_life() {
    let (_registry, sup) = start();
    let pod = write(&sup, "pod.json", &pod_config(&sup, "rot"));
    let pod_id = sup.crictl_ok(&["runp", &pod]).trim().to_string();
    let script = "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.1; done";
    let ctr = write(&sup, "ctr.json", &container_config("ticker", script));
    let rt = runtime();
    let (events, id) = rt.block_on(async {
        let mut client = RuntimeServiceClient::new(sup.channel().await);
        let mut stream = client
            .get_container_events(cri::GetEventsRequest {})
            .await
            .expect("events")
            .into_inner();
        let id = sup
            .crictl_ok(&["create", &pod_id, &ctr, &pod])
            .trim()
            .to_string();
        sup.crictl_ok(&["start", &id]);
        let log = sup.dir().join("logs/rot/ticker.log");
        wait_for("log lines", Duration::from_secs(10), || {
            std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() >= 3)
        });
        // kubelet's rotation: move the file, ask for a new one.
        let rotated = sup.dir().join("logs/rot/ticker.log.1");
        std::fs::rename(&log, &rotated).expect("rotate");
        client
            .reopen_container_log(cri::ReopenContainerLogRequest {
                container_id: id.clone(),
            })
            .await
            .expect("reopen");
        wait_for("lines in the new file", Duration::from_secs(10), || {
            std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() >= 2)
        });
        for line in std::fs::read_to_string(&log).expect("log").lines() {
            let (stream, tag, text) = check_cri_log_line(line);
            assert_eq!((stream.as_str(), tag.as_str()), ("stdout", "F"));
            assert!(text.starts_with("line "), "{line}");
        }
        sup.crictl_ok(&["stop", "--timeout", "0", &id]);
        let e = client
            .reopen_container_log(cri::ReopenContainerLogRequest {
                container_id: id.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
        sup.crictl_ok(&["rm", &id]);
        let mut seen = Vec::new();
        while seen.len() < 4 {
            let next = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .expect("an event in time")
                .expect("the stream")
                .expect("an event");
            if next.container_id == id {
                if next.container_event_type
                    != cri::ContainerEventType::ContainerDeletedEvent as i32
                {
                    let pod = next.pod_sandbox_status.as_ref().expect("the pod's status");
                    assert_eq!(pod.id, pod_id);
                    assert_eq!(next.containers_statuses[0].id, id);
                }
                seen.push(next.container_event_type);
            }
        }
        (seen, id)
    });
    use cri::ContainerEventType as T;
    assert_eq!(
        events,
        [
            T::ContainerCreatedEvent as i32,
            T::ContainerStartedEvent as i32,
            T::ContainerStoppedEvent as i32,
            T::ContainerDeletedEvent as i32
        ],
        "events of {id}"
    );
    sup.crictl_ok(&["rmp", "-f", &pod_id]);
}

#[test]
fn security_context_user_readonly_root_and_capabilities() {
    let (_registry, sup) = start();
    let pod = write(&sup, "pod.json", &pod_config(&sup, "sec"));
    let pod_id = sup.crictl_ok(&["runp", &pod]).trim().to_string();
    let mut config = container_config(
        "sec",
        "busybox id -u; busybox id -G; touch /x 2>&1 || echo ro-root; \
         grep CapBnd /proc/self/status; echo done",
    );
    config["linux"] = json!({"security_context": {
        "run_as_user": {"value": 1234},
        "run_as_group": {"value": 2345},
        "supplemental_groups": [3456],
        "readonly_rootfs": true,
        "capabilities": {"drop_capabilities": ["ALL"], "add_capabilities": ["NET_BIND_SERVICE"]}
    }});
    let ctr = write(&sup, "ctr.json", &config);
    let id = sup
        .crictl_ok(&["create", &pod_id, &ctr, &pod])
        .trim()
        .to_string();
    sup.crictl_ok(&["start", &id]);
    let log = sup.dir().join("logs/sec/sec.log");
    wait_for("the output", Duration::from_secs(10), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("done"))
    });
    let text: Vec<String> = std::fs::read_to_string(&log)
        .expect("log")
        .lines()
        .map(|l| check_cri_log_line(l).2)
        .collect();
    assert_eq!(text[0], "1234", "{text:?}");
    assert_eq!(text[1], "2345 3456", "{text:?}");
    assert!(text.iter().any(|l| l == "ro-root"), "{text:?}");
    // CAP_NET_BIND_SERVICE is bit 10.
    assert!(
        text.iter().any(|l| l == "CapBnd:\t0000000000000400"),
        "{text:?}"
    );
    sup.crictl_ok(&["rmp", "-f", &pod_id]);
}

#[test]
fn a_container_killed_for_memory_reports_oomkilled() {
    let (_registry, sup) = start();
    let pod = write(&sup, "pod.json", &pod_config(&sup, "oom"));
    let pod_id = sup.crictl_ok(&["runp", &pod]).trim().to_string();
    // The shell's variable doubles until the 16 MiB limit kills it.
    let mut config = container_config("hog", "x=aaaaaaaa; while true; do x=$x$x; done");
    config["linux"] = json!({"resources": {"memory_limit_in_bytes": 16 << 20}});
    let ctr = write(&sup, "ctr.json", &config);
    let id = sup
        .crictl_ok(&["create", &pod_id, &ctr, &pod])
        .trim()
        .to_string();
    sup.crictl_ok(&["start", &id]);
    wait_for("the OOM kill", Duration::from_secs(30), || {
        json_of(&sup.crictl_ok(&["inspect", "-o", "json", &id]))["status"]["state"]
            == "CONTAINER_EXITED"
    });
    let inspect = json_of(&sup.crictl_ok(&["inspect", "-o", "json", &id]));
    assert_eq!(inspect["status"]["exitCode"], 137, "{inspect}");
    assert_eq!(inspect["status"]["reason"], "OOMKilled", "{inspect}");
    sup.crictl_ok(&["rmp", "-f", &pod_id]);
}

#[test]
fn containers_keep_their_true_state_across_a_kill_9_of_the_daemon() {
    let (_registry, mut sup) = start();
    let pod = write(&sup, "pod.json", &pod_config(&sup, "keep"));
    let pod_id = sup.crictl_ok(&["runp", &pod]).trim().to_string();
    let runs = write(
        &sup,
        "runs.json",
        &container_config("runs", "while true; do sleep 1; done"),
    );
    let ends = write(&sup, "ends.json", &container_config("ends", "exit 7"));
    let running = sup
        .crictl_ok(&["create", &pod_id, &runs, &pod])
        .trim()
        .to_string();
    let exits = sup
        .crictl_ok(&["create", &pod_id, &ends, &pod])
        .trim()
        .to_string();
    sup.crictl_ok(&["start", &running]);
    sup.crictl_ok(&["start", &exits]);
    sup.kill9();
    // It exits while the daemon is down.
    std::thread::sleep(Duration::from_millis(500));
    sup.start_again();
    let state =
        |id: &str| json_of(&sup.crictl_ok(&["inspect", "-o", "json", id]))["status"].clone();
    wait_for(
        "the exit found after the restart",
        Duration::from_secs(10),
        || state(&exits)["state"] == "CONTAINER_EXITED",
    );
    assert_eq!(state(&exits)["exitCode"], 7);
    assert_eq!(state(&exits)["reason"], "Error");
    assert_eq!(state(&running)["state"], "CONTAINER_RUNNING");
    sup.crictl_ok(&["stop", "--timeout", "2", &running]);
    assert_eq!(state(&running)["state"], "CONTAINER_EXITED");
    sup.crictl_ok(&["rm", &running, &exits]);
    sup.crictl_ok(&["rmp", "-f", &pod_id]);
}

/// StopPodSandbox stops the pod's containers through the containers' own
/// stop, all at once (SIGKILL, as containerd does): each exit is recorded
/// with its code and reason, and RemovePodSandbox then removes them.
/// Before that, the pod's stats carry its running
/// containers' (CPU nano-cores from the second sample on), and the pause
/// process runs under the RuntimeDefault seccomp filter.
#[test]
fn a_pods_stop_records_its_containers_exits_and_its_stats_list_them() {
    let (_registry, sup) = start();
    let pod = write(&sup, "pod.json", &pod_config(&sup, "group"));
    let pod_id = sup.crictl_ok(&["runp", &pod]).trim().to_string();
    let mut ids = Vec::new();
    for (name, script) in [
        // Ignores SIGTERM: only a SIGKILL stops it.
        ("busy", "trap '' TERM; while :; do :; done"),
        ("idle", "trap '' TERM; sleep 3600"),
    ] {
        let ctr = write(
            &sup,
            &format!("{name}.json"),
            &container_config(name, script),
        );
        let id = sup
            .crictl_ok(&["create", &pod_id, &ctr, &pod])
            .trim()
            .to_string();
        sup.crictl_ok(&["start", &id]);
        ids.push(id);
    }

    // The pause's seccomp filter (mode 2), as /proc tells it.
    let inspectp = json_of(&sup.crictl_ok(&["inspectp", "-o", "json", &pod_id]));
    let pause_pid = inspectp["info"]["pid"].as_u64().expect("pause pid");
    let status = std::fs::read_to_string(format!("/proc/{pause_pid}/status")).expect("status");
    assert!(
        status
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["Seccomp:", "2"]),
        "{status}"
    );

    // The pod's stats list both containers; a second sample gives the
    // busy one's nano-cores.
    let containers_of = |stats: &Value| -> Vec<Value> {
        stats["stats"][0]["linux"]["containers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let first = json_of(&sup.crictl_ok(&["statsp", "-o", "json", &pod_id]));
    let listed: Vec<String> = containers_of(&first)
        .iter()
        .filter_map(|c| c["attributes"]["id"].as_str().map(String::from))
        .collect();
    assert_eq!(
        listed.iter().collect::<std::collections::BTreeSet<_>>(),
        ids.iter().collect(),
        "{first}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let second = json_of(&sup.crictl_ok(&["statsp", "-o", "json", &pod_id]));
    let busy = containers_of(&second)
        .into_iter()
        .find(|c| c["attributes"]["id"] == ids[0].as_str())
        .unwrap_or_else(|| panic!("busy not listed: {second}"));
    let nano: u64 = busy["cpu"]["usageNanoCores"]["value"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(nano > 0, "{busy}");

    // The stop kills both at once (no 10 s grace each) and records them.
    let t0 = Instant::now();
    sup.crictl_ok(&["stopp", &pod_id]);
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    for id in &ids {
        let inspect = json_of(&sup.crictl_ok(&["inspect", "-o", "json", id]));
        assert_eq!(inspect["status"]["state"], "CONTAINER_EXITED", "{inspect}");
        assert_eq!(inspect["status"]["exitCode"], 137, "{inspect}");
        assert_eq!(inspect["status"]["reason"], "Error", "{inspect}");
        assert!(inspect["status"]["finishedAt"].is_string(), "{inspect}");
    }
    // A stopped pod lists no container stats.
    let stopped = json_of(&sup.crictl_ok(&["statsp", "-o", "json", &pod_id]));
    assert!(containers_of(&stopped).is_empty(), "{stopped}");

    sup.crictl_ok(&["rmp", &pod_id]);
    let ps = json_of(&sup.crictl_ok(&["ps", "-a", "-o", "json"]));
    assert_eq!(
        ps["containers"].as_array().map(Vec::len).unwrap_or(0),
        0,
        "{ps}"
    );
}
