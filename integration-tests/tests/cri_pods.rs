//! Pod sandboxes through berth-supervisord's CRI, driven by the real
//! `crictl` (`runp`, `pods`, `inspectp`, `stopp`, `rmp`) and by raw gRPC
//! calls: the daemon runs in a network namespace the fixture made, with a
//! CNI conflist (bridge + host-local + portmap + loopback on a private
//! subnet) and Debian's plugins; berth's own pause image is imported at
//! the first pod, so nothing is pulled. Each test checks what is left
//! afterwards (the fixture fails on netns pins, mounts, veths, leases and
//! cgroups).

use std::process::Command;
use std::time::Duration;

use berth_proto::cri::v1 as cri;
use berth_proto::cri::v1::runtime_service_client::RuntimeServiceClient;
use integration_tests::cri::{PodOptions, PodSupervisor};
use integration_tests::supervisor::runtime;
use serde_json::{json, Value};

fn pod_config(name: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "attempt": 0},
        "hostname": format!("{name}-host"),
        "labels": {"app": name, "tier": "test"},
        "annotations": {"note": "kept as given"},
        "linux": {}
    })
}

fn write_config(sup: &PodSupervisor, name: &str, config: &Value) -> String {
    let path = sup.dir().join(format!("{name}.json"));
    std::fs::write(&path, config.to_string()).expect("write pod config");
    path.display().to_string()
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The pause process's pid, from a verbose status.
fn pause_pid(inspect: &Value) -> i64 {
    inspect["info"]["pid"].as_i64().unwrap_or(0)
}

#[test]
fn crictl_runs_inspects_stops_and_removes_a_pod() {
    let sup = PodSupervisor::start(PodOptions::default());
    let config = write_config(&sup, "web", &pod_config("web"));
    let id = sup.crictl_ok(&["runp", &config]).trim().to_string();
    assert_eq!(id.len(), 64, "{id}");
    // No pull: berth's pause image was imported.
    assert!(!sup.log().contains("pulling"), "{}", sup.log_tail());

    let pods = json_of(&sup.crictl_ok(&["pods", "-o", "json"]));
    let items = pods["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{pods}");
    assert_eq!(items[0]["id"], id.as_str());
    assert_eq!(items[0]["state"], "SANDBOX_READY");
    assert_eq!(items[0]["metadata"]["name"], "web");
    assert_eq!(items[0]["labels"]["app"], "web");

    let inspect = json_of(&sup.crictl_ok(&["inspectp", "-o", "json", &id]));
    let status = &inspect["status"];
    assert_eq!(status["state"], "SANDBOX_READY");
    assert_eq!(status["annotations"]["note"], "kept as given");
    let ip = status["network"]["ip"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(ip.starts_with("10.88.7."), "pod ip {ip:?}: {inspect}");
    let pid = pause_pid(&inspect);
    assert!(pid > 0, "{inspect}");
    let netns = inspect["info"]["netNamespacePath"]
        .as_str()
        .expect("netns path")
        .to_string();
    assert!(
        netns.starts_with(&sup.state().display().to_string()),
        "{netns}"
    );

    // The pause process: berth's, in the pod's own namespaces, with its
    // hostname and eth0 holding the pod's address.
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).expect("cmdline");
    assert_eq!(cmdline, "/pause\0");
    for ns in ["net", "uts", "ipc", "pid"] {
        let mine = std::fs::read_link(format!("/proc/self/ns/{ns}")).expect("ns");
        let its = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).expect("ns");
        assert_ne!(mine, its, "the pause shares the test's {ns} namespace");
    }
    let its_net = std::fs::read_link(format!("/proc/{pid}/ns/net")).expect("ns");
    let out = Command::new("nsenter")
        .arg(format!("--net={netns}"))
        .args(["ip", "-o", "-4", "addr", "show", "eth0"])
        .output()
        .expect("ip addr");
    let addr = String::from_utf8_lossy(&out.stdout);
    assert!(addr.contains(&format!("{ip}/")), "{addr}");
    let out = Command::new("nsenter")
        .arg(format!("--net={netns}"))
        .args(["readlink", "/proc/self/ns/net"])
        .output()
        .expect("readlink");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        its_net.display().to_string()
    );
    let out = Command::new("nsenter")
        .arg(format!("--target={pid}"))
        .args(["--uts", "hostname"])
        .output()
        .expect("hostname");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "web-host");
    assert_eq!(sup.leases().len(), 1, "{:?}", sup.leases());
    assert_eq!(sup.veths().len(), 1, "{:?}", sup.veths());

    // Stop: not ready, the pause gone, the network released; twice is fine.
    sup.crictl_ok(&["stopp", &id]);
    let inspect = json_of(&sup.crictl_ok(&["inspectp", "-o", "json", &id]));
    assert_eq!(inspect["status"]["state"], "SANDBOX_NOTREADY");
    integration_tests::wait_until("the pause process to go", Duration::from_secs(10), || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    });
    assert!(!std::path::Path::new(&netns).exists(), "{netns} left");
    assert!(sup.leases().is_empty(), "{:?}", sup.leases());
    assert!(sup.veths().is_empty(), "{:?}", sup.veths());
    sup.crictl_ok(&["stopp", &id]);
    let pods = json_of(&sup.crictl_ok(&["pods", "-o", "json", "--state", "notready"]));
    assert_eq!(pods["items"].as_array().map(Vec::len), Some(1), "{pods}");

    // Remove: gone; twice is fine.
    sup.crictl_ok(&["rmp", &id]);
    let pods = json_of(&sup.crictl_ok(&["pods", "-o", "json"]));
    assert_eq!(
        pods["items"].as_array().map(Vec::len).unwrap_or(0),
        0,
        "{pods}"
    );
    let out = sup.crictl(&["inspectp", &id]);
    assert!(!out.status.success());
    let rt = runtime();
    rt.block_on(async {
        let mut client = RuntimeServiceClient::new(sup.channel().await);
        client
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await
            .expect("a second remove");
        client
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: "0".repeat(64),
            })
            .await
            .expect("a stop of an unknown pod succeeds");
    });
}

#[test]
fn raw_calls_filter_and_refuse_with_containerds_codes() {
    let sup = PodSupervisor::start(PodOptions::default());
    let rt = runtime();
    rt.block_on(async {
        let mut client = RuntimeServiceClient::new(sup.channel().await);
        let config = |name: &str, app: &str| cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{name}"),
                namespace: "ns1".into(),
                attempt: 1,
            }),
            hostname: name.into(),
            labels: [("app".to_string(), app.to_string())].into(),
            ..Default::default()
        };
        let run = |c: cri::PodSandboxConfig| cri::RunPodSandboxRequest {
            config: Some(c),
            runtime_handler: String::new(),
        };
        let a = client
            .run_pod_sandbox(run(config("a", "x")))
            .await
            .expect("run a")
            .into_inner()
            .pod_sandbox_id;
        let b = client
            .run_pod_sandbox(run(config("b", "y")))
            .await
            .expect("run b")
            .into_inner()
            .pod_sandbox_id;

        // The same pod attempt twice: AlreadyExists, naming the first.
        let e = client
            .run_pod_sandbox(run(config("a", "x")))
            .await
            .expect_err("a second sandbox of one attempt");
        assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e}");
        assert!(e.message().contains(&a), "{e}");

        let lister = client.clone();
        let list = |filter: Option<cri::PodSandboxFilter>| {
            let mut client = lister.clone();
            async move {
                let mut ids: Vec<String> = client
                    .list_pod_sandbox(cri::ListPodSandboxRequest { filter })
                    .await
                    .expect("list")
                    .into_inner()
                    .items
                    .into_iter()
                    .map(|p| p.id)
                    .collect();
                ids.sort();
                ids
            }
        };
        let mut both = vec![a.clone(), b.clone()];
        both.sort();
        assert_eq!(list(None).await, both);
        let by_label = cri::PodSandboxFilter {
            label_selector: [("app".to_string(), "y".to_string())].into(),
            ..Default::default()
        };
        assert_eq!(list(Some(by_label)).await, vec![b.clone()]);
        let by_prefix = cri::PodSandboxFilter {
            id: a[..12].to_string(),
            ..Default::default()
        };
        assert_eq!(list(Some(by_prefix)).await, vec![a.clone()]);
        client
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: b.clone(),
            })
            .await
            .expect("stop b");
        let ready = cri::PodSandboxFilter {
            state: Some(cri::PodSandboxStateValue {
                state: cri::PodSandboxState::SandboxReady as i32,
            }),
            ..Default::default()
        };
        assert_eq!(list(Some(ready)).await, vec![a.clone()]);

        // Status: of an unknown id NotFound; verbose has the info.
        let e = client
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: "f".repeat(64),
                verbose: false,
            })
            .await
            .expect_err("status of an unknown pod");
        assert_eq!(e.code(), tonic::Code::NotFound, "{e}");
        let status = client
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: a.clone(),
                verbose: true,
            })
            .await
            .expect("status")
            .into_inner();
        let s = status.status.expect("status");
        assert_eq!(s.metadata.expect("metadata").attempt, 1);
        assert!(s.created_at > 0);
        let info: Value = serde_json::from_str(&status.info["info"]).expect("info");
        assert!(info["pid"].as_i64().unwrap_or(0) > 0, "{info}");

        // An unknown namespace mode: InvalidArgument, nothing made.
        let mut bad = config("c", "z");
        bad.linux = Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: 9,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let e = client
            .run_pod_sandbox(run(bad))
            .await
            .expect_err("an unknown namespace mode");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
        assert!(e.message().contains("namespace mode 9"), "{e}");
        assert_eq!(list(None).await, both);

        for id in [&a, &b] {
            client
                .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })
                .await
                .expect("remove");
        }
        assert!(list(None).await.is_empty());
    });
}

#[test]
fn a_failing_cni_plugin_fails_the_pod_and_leaves_nothing() {
    let sup = PodSupervisor::start(PodOptions::default());
    // A conflist that runs the bridge (which attaches the pod), then a
    // plugin that is not there.
    let mut list: Value = json_of(&sup.conflist());
    list["plugins"]
        .as_array_mut()
        .expect("plugins")
        .push(json!({"type": "no-such-plugin"}));
    sup.write_conflist("00-failing.conflist", &list.to_string());
    let config = write_config(&sup, "bad", &pod_config("bad"));
    let out = sup.crictl(&["runp", &config]);
    assert!(
        !out.status.success(),
        "runp with a failing plugin succeeded"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no-such-plugin") && stderr.contains("failed to setup network"),
        "{stderr}"
    );
    let pods = json_of(&sup.crictl_ok(&["pods", "-o", "json"]));
    assert_eq!(
        pods["items"].as_array().map(Vec::len).unwrap_or(0),
        0,
        "{pods}"
    );
    assert!(sup.leases().is_empty(), "{:?}", sup.leases());
    assert!(sup.veths().is_empty(), "{:?}", sup.veths());
    assert!(sup.mounts().is_empty(), "{:?}", sup.mounts());
    let netns_dir = sup.state().join("cri/netns");
    let left: Vec<_> = std::fs::read_dir(&netns_dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    // With the good config again, a pod runs.
    std::fs::remove_file(sup.cni_conf_dir().join("00-failing.conflist")).expect("rm conflist");
    let id = sup.crictl_ok(&["runp", &config]).trim().to_string();
    sup.crictl_ok(&["rmp", "-f", &id]);
}

#[test]
fn status_reports_the_network_ready_only_with_a_cni_config() {
    let sup = PodSupervisor::start(PodOptions {
        no_network: true,
        ..Default::default()
    });
    let info = json_of(&sup.crictl_ok(&["info", "-o", "json"]));
    let conditions = info["status"]["conditions"].as_array().expect("conditions");
    let network = conditions
        .iter()
        .find(|c| c["type"] == "NetworkReady")
        .expect("NetworkReady");
    assert_eq!(network["status"], false);
    assert_eq!(network["reason"], "NetworkPluginNotReady");
    // A pod without a network config still runs, with only lo.
    let config = write_config(&sup, "lonely", &pod_config("lonely"));
    let id = sup.crictl_ok(&["runp", &config]).trim().to_string();
    let inspect = json_of(&sup.crictl_ok(&["inspectp", "-o", "json", &id]));
    assert_eq!(inspect["status"]["network"]["ip"], "");
    sup.write_conflist("10-berth-test.conflist", &sup.conflist());
    let info = json_of(&sup.crictl_ok(&["info", "-o", "json"]));
    let ready = info["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .any(|c| c["type"] == "NetworkReady" && c["status"] == true);
    assert!(ready, "{info}");
    sup.crictl_ok(&["rmp", "-f", &id]);
}

#[test]
fn pods_survive_a_kill_9_of_the_daemon_with_their_true_state() {
    let mut sup = PodSupervisor::start(PodOptions::default());
    let one = write_config(&sup, "one", &pod_config("one"));
    let two = write_config(&sup, "two", &pod_config("two"));
    let one = sup.crictl_ok(&["runp", &one]).trim().to_string();
    let two = sup.crictl_ok(&["runp", &two]).trim().to_string();
    let two_pid = pause_pid(&json_of(&sup.crictl_ok(&["inspectp", "-o", "json", &two])));
    let one_ip = json_of(&sup.crictl_ok(&["inspectp", "-o", "json", &one]))["status"]["network"]
        ["ip"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    sup.kill9();
    // While the daemon is down, pod two's pause dies.
    // SAFETY: kill(2) takes no pointers.
    unsafe { libc::kill(two_pid as i32, libc::SIGKILL) };
    integration_tests::wait_until("the pause to die", Duration::from_secs(10), || {
        !std::fs::read_to_string(format!("/proc/{two_pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
    });
    sup.start_again();
    let inspect = json_of(&sup.crictl_ok(&["inspectp", "-o", "json", &one]));
    assert_eq!(inspect["status"]["state"], "SANDBOX_READY", "{inspect}");
    assert_eq!(inspect["status"]["network"]["ip"], one_ip.as_str());
    let inspect = json_of(&sup.crictl_ok(&["inspectp", "-o", "json", &two]));
    assert_eq!(inspect["status"]["state"], "SANDBOX_NOTREADY", "{inspect}");
    // Its network is still held until the stop releases it.
    assert_eq!(sup.leases().len(), 2, "{:?}", sup.leases());
    sup.crictl_ok(&["stopp", &two]);
    assert_eq!(sup.leases().len(), 1, "{:?}", sup.leases());
    sup.crictl_ok(&["rmp", &two]);
    sup.crictl_ok(&["rmp", "-f", &one]);
    assert!(sup.leases().is_empty(), "{:?}", sup.leases());
}

#[test]
fn pod_settings_apply_ports_sysctls_cgroup_parent_dns_and_stats() {
    let sup = PodSupervisor::start(PodOptions::default());
    let parent = format!("/berth-test-pods-{}", std::process::id());
    let mut config = pod_config("settings");
    config["port_mappings"] = json!([{"protocol": 0, "container_port": 80, "host_port": 18080}]);
    config["dns_config"] = json!({
        "servers": ["10.88.7.53"], "searches": ["pods.test"], "options": ["ndots:2"]
    });
    config["linux"] = json!({
        "cgroup_parent": parent,
        "sysctls": {"net.ipv4.ping_group_range": "0 2147483647", "kernel.shm_rmid_forced": "1"}
    });
    let path = write_config(&sup, "settings", &config);
    let id = sup.crictl_ok(&["runp", &path]).trim().to_string();
    let inspect = json_of(&sup.crictl_ok(&["inspectp", "-o", "json", &id]));
    let pid = pause_pid(&inspect);
    let netns = inspect["info"]["netNamespacePath"]
        .as_str()
        .expect("netns")
        .to_string();
    let ip = inspect["status"]["network"]["ip"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    // The sysctls, in the pod's namespaces.
    let out = Command::new("nsenter")
        .arg(format!("--net={netns}"))
        .args(["cat", "/proc/sys/net/ipv4/ping_group_range"])
        .output()
        .expect("cat");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["0", "2147483647"]
    );
    let out = Command::new("nsenter")
        .arg(format!("--target={pid}"))
        .args(["--ipc", "cat", "/proc/sys/kernel/shm_rmid_forced"])
        .output()
        .expect("cat");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
    // The cgroup: <parent>/<id>.
    let v1 = std::path::Path::new("/sys/fs/cgroup/memory").join(parent.trim_start_matches('/'));
    let v2 = std::path::Path::new("/sys/fs/cgroup").join(parent.trim_start_matches('/'));
    let base = if v1.exists() { v1 } else { v2 };
    assert!(base.join(&id).is_dir(), "{} has no {id}", base.display());
    let procs = std::fs::read_to_string(base.join(&id).join("cgroup.procs")).unwrap_or_default();
    assert!(procs.lines().any(|p| p == pid.to_string()), "{procs}");
    // The OOM score: -998 where the host lets the daemon lower it, else
    // the daemon's own.
    let score = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).expect("oom");
    let own = std::fs::read_to_string(format!("/proc/{}/oom_score_adj", sup.pid())).expect("oom");
    let caps = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let sys_resource = caps
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .is_some_and(|c| c & (1 << 24) != 0);
    if sys_resource {
        assert_eq!(score.trim(), "-998");
    } else {
        assert_eq!(score.trim(), own.trim());
    }
    // The pod's resolv.conf, for its containers.
    let dir = inspect["info"]["sandboxDir"].as_str().expect("sandbox dir");
    let resolv = std::fs::read_to_string(format!("{dir}/resolv.conf")).expect("resolv.conf");
    assert_eq!(
        resolv,
        "search pods.test\nnameserver 10.88.7.53\noptions ndots:2\n"
    );

    // The host port: a server in the pod answers on 127.0.0.1:18080 and
    // the pod's address in the daemon's namespace.
    let www = sup.dir().join("www");
    std::fs::create_dir_all(&www).expect("www");
    std::fs::write(www.join("index.html"), "from the pod\n").expect("index");
    let mut server = Command::new("nsenter")
        .arg(format!("--net={netns}"))
        .args(["busybox", "httpd", "-f", "-p", "80", "-h"])
        .arg(&www)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("httpd");
    let get = |url: &str| {
        // (busybox-static's wget crashes; curl does not.)
        sup.in_netns("curl")
            .args(["-sS", "--max-time", "2", url])
            .output()
            .map(|o| {
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
            })
            .unwrap_or_default()
    };
    let direct = format!("http://{ip}:80/");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut answer = get(&direct);
    while answer != "from the pod\n" && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        answer = get(&direct);
    }
    let local = get("http://127.0.0.1:18080/");
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(answer, "from the pod\n", "the pod's server at {direct}");
    assert_eq!(local, "from the pod\n", "the host port on 127.0.0.1");

    // Stats: the pod's cgroup and its eth0.
    let stats = json_of(&sup.crictl_ok(&["statsp", "-o", "json", &id]));
    let s = &stats["stats"][0];
    assert_eq!(s["attributes"]["id"], id.as_str(), "{stats}");
    let memory: u64 = s["linux"]["memory"]["workingSetBytes"]["value"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(memory > 0, "{stats}");
    assert_eq!(
        s["linux"]["network"]["defaultInterface"]["name"], "eth0",
        "{stats}"
    );

    sup.crictl_ok(&["rmp", "-f", &id]);
    assert!(!base.join(&id).exists(), "the pod's cgroup is left");
    for controller in [
        "memory",
        "cpu,cpuacct",
        "cpuacct",
        "cpu",
        "pids",
        "blkio",
        "devices",
        "freezer",
        "cpuset",
        "",
    ] {
        let _ = std::fs::remove_dir(
            std::path::Path::new("/sys/fs/cgroup")
                .join(controller)
                .join(parent.trim_start_matches('/')),
        );
    }
}

#[test]
fn a_host_network_pod_has_no_namespace_of_its_own_and_no_cni() {
    let sup = PodSupervisor::start(PodOptions::default());
    let mut config = pod_config("hostnet");
    config["hostname"] = json!("");
    config["linux"] =
        json!({"security_context": {"namespace_options": {"network": 2, "pid": 2, "ipc": 2}}});
    let path = write_config(&sup, "hostnet", &config);
    let id = sup.crictl_ok(&["runp", &path]).trim().to_string();
    let inspect = json_of(&sup.crictl_ok(&["inspectp", "-o", "json", &id]));
    assert_eq!(inspect["status"]["state"], "SANDBOX_READY");
    assert_eq!(inspect["status"]["network"]["ip"], "");
    assert!(inspect["info"]["netNamespacePath"].is_null(), "{inspect}");
    let options = &inspect["status"]["linux"]["namespaces"]["options"];
    assert_eq!(options["network"], "NODE", "{inspect}");
    let pid = pause_pid(&inspect);
    for ns in ["net", "pid", "ipc", "uts"] {
        let daemon = std::fs::read_link(format!("/proc/{}/ns/{ns}", sup.pid())).expect("ns");
        let pause = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).expect("ns");
        assert_eq!(
            daemon, pause,
            "the host-network pod has its own {ns} namespace"
        );
    }
    assert!(sup.leases().is_empty(), "{:?}", sup.leases());
    sup.crictl_ok(&["rmp", "-f", &id]);
}
