//! The CRI metrics calls of berth-supervisord (ListMetricDescriptors,
//! ListPodSandboxMetrics), by raw gRPC: a pod with a container that
//! spins and listens on a port; its CPU and memory come back non-zero
//! from its cgroup, and the pod's eth0 counters grow by what the test
//! sends it across the CNI bridge from the daemon's network namespace
//! (the fixture's). The busybox image is imported as in cri_containers.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use berth_proto::cri::v1 as cri;
use berth_proto::cri::v1::runtime_service_client::RuntimeServiceClient;
use integration_tests::cri::{PodOptions, PodSupervisor};
use integration_tests::supervisor::runtime;
use serde_json::{json, Value};
use tonic::transport::Channel;

const IMAGE: &str = "docker.io/library/busybox:latest";

/// The metrics the descriptors must name (cadvisor's, as kubelet reads them).
const WANTED: &[&str] = &[
    "container_cpu_usage_seconds_total",
    "container_cpu_user_seconds_total",
    "container_cpu_system_seconds_total",
    "container_memory_usage_bytes",
    "container_memory_working_set_bytes",
    "container_memory_rss",
    "container_memory_cache",
    "container_spec_memory_limit_bytes",
    "container_oom_events_total",
    "container_network_receive_bytes_total",
    "container_network_receive_packets_total",
    "container_network_receive_errors_total",
    "container_network_receive_packets_dropped_total",
    "container_network_transmit_bytes_total",
    "container_network_transmit_packets_total",
    "container_network_transmit_errors_total",
    "container_network_transmit_packets_dropped_total",
    "container_fs_usage_bytes",
    "container_processes",
    "container_threads",
    "container_last_seen",
    "container_start_time_seconds",
];

fn start() -> PodSupervisor {
    let sup = PodSupervisor::start(PodOptions::default());
    sup.import_busybox(IMAGE);
    sup
}

fn write(sup: &PodSupervisor, name: &str, v: &Value) -> String {
    let path = sup.dir().join(name);
    std::fs::write(&path, v.to_string()).expect("write config");
    path.display().to_string()
}

/// One metric's value by its label values (all of them, in order).
fn find<'a>(metrics: &'a [cri::Metric], name: &str) -> Vec<&'a cri::Metric> {
    metrics.iter().filter(|m| m.name == name).collect()
}

fn value(m: &cri::Metric) -> u64 {
    m.value.as_ref().map(|v| v.value).unwrap_or(0)
}

async fn pod_metrics(
    client: &mut RuntimeServiceClient<Channel>,
    pod: &str,
) -> cri::PodSandboxMetrics {
    let all = client
        .list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {})
        .await
        .expect("ListPodSandboxMetrics")
        .into_inner()
        .pod_metrics;
    all.into_iter()
        .find(|p| p.pod_sandbox_id == pod)
        .unwrap_or_else(|| panic!("no metrics for pod {pod}"))
}

/// The eth0 counters of a pod's own metrics: (rx bytes, rx packets, tx packets).
fn eth0(p: &cri::PodSandboxMetrics) -> (u64, u64, u64) {
    let get = |name: &str| {
        let found = find(&p.metrics, name);
        let m = found
            .iter()
            .find(|m| m.label_values.last().map(String::as_str) == Some("eth0"))
            .unwrap_or_else(|| panic!("no {name} for eth0: {:?}", p.metrics));
        value(m)
    };
    (
        get("container_network_receive_bytes_total"),
        get("container_network_receive_packets_total"),
        get("container_network_transmit_packets_total"),
    )
}

#[test]
fn metrics_give_a_busy_containers_cpu_memory_and_its_pods_traffic() {
    let sup = start();
    let pod_json = json!({
        "metadata": {"name": "metered", "namespace": "team", "uid": "uid-metered", "attempt": 0},
        "log_directory": sup.dir().join("logs"),
        "linux": {}
    });
    let pod_file = write(&sup, "pod.json", &pod_json);
    let pod = sup.crictl_ok(&["runp", &pod_file]).trim().to_string();
    // It listens on 8080 (what the test sends there counts on eth0) and
    // spins (CPU time).
    let ctr_json = json!({
        "metadata": {"name": "busy", "attempt": 0},
        "image": {"image": IMAGE},
        "command": ["/bin/sh", "-c", "nc -l -p 8080 >/dev/null & while true; do :; done"],
        "linux": {}
    });
    let ctr_file = write(&sup, "ctr.json", &ctr_json);
    let ctr = sup
        .crictl_ok(&["create", &pod, &ctr_file, &pod_file])
        .trim()
        .to_string();
    sup.crictl_ok(&["start", &ctr]);
    let inspect: Value =
        serde_json::from_str(&sup.crictl_ok(&["inspectp", "-o", "json", &pod])).expect("json");
    let ip = inspect["status"]["network"]["ip"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!ip.is_empty(), "{inspect}");

    runtime().block_on(async {
        let mut client = RuntimeServiceClient::new(sup.channel().await);
        let descriptors = client
            .list_metric_descriptors(cri::ListMetricDescriptorsRequest {})
            .await
            .expect("ListMetricDescriptors")
            .into_inner()
            .descriptors;
        let keys: HashMap<&str, &[String]> = descriptors
            .iter()
            .map(|d| (d.name.as_str(), d.label_keys.as_slice()))
            .collect();
        for name in WANTED {
            assert!(
                keys.contains_key(name),
                "{name} not described: {descriptors:?}"
            );
        }
        for d in &descriptors {
            assert!(!d.help.is_empty(), "{d:?}");
            for k in ["container", "id", "image", "namespace", "pod"] {
                assert!(d.label_keys.iter().any(|l| l == k), "{d:?}");
            }
        }
        assert_eq!(
            keys["container_network_receive_bytes_total"]
                .last()
                .map(String::as_str),
            Some("interface")
        );

        // CPU time is counted in whole seconds: wait for the first.
        let deadline = Instant::now() + Duration::from_secs(60);
        let container = loop {
            let p = pod_metrics(&mut client, &pod).await;
            let c = p
                .container_metrics
                .iter()
                .find(|c| c.container_id == ctr)
                .unwrap_or_else(|| panic!("no metrics for container {ctr}: {p:?}"))
                .clone();
            let cpu = find(&c.metrics, "container_cpu_usage_seconds_total");
            if cpu.first().is_some_and(|m| value(m) >= 1) {
                break c;
            }
            assert!(Instant::now() < deadline, "no CPU second counted: {c:?}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let one = |name: &str| {
            let found = find(&container.metrics, name);
            assert_eq!(found.len(), 1, "{name}: {found:?}");
            found[0].clone()
        };
        let cpu = one("container_cpu_usage_seconds_total");
        // container, id, image, name, namespace, pod, then cpu.
        let labels: BTreeMap<&str, &str> = keys["container_cpu_usage_seconds_total"]
            .iter()
            .map(String::as_str)
            .zip(cpu.label_values.iter().map(String::as_str))
            .collect();
        assert_eq!(labels["container"], "busy", "{cpu:?}");
        assert_eq!(labels["id"], ctr);
        assert_eq!(labels["image"], IMAGE);
        assert_eq!(labels["pod"], "metered");
        assert_eq!(labels["namespace"], "team");
        assert_eq!(labels["cpu"], "total");
        assert_eq!(cpu.metric_type, cri::MetricType::Counter as i32);
        assert!(cpu.timestamp > 0, "{cpu:?}");
        assert!(value(&one("container_memory_usage_bytes")) > 0);
        assert!(value(&one("container_memory_working_set_bytes")) > 0);
        let memory = one("container_memory_usage_bytes");
        assert_eq!(memory.metric_type, cri::MetricType::Gauge as i32);
        // sh and nc.
        assert!(value(&one("container_processes")) >= 2, "{container:?}");
        assert!(value(&one("container_start_time_seconds")) > 0);
        // Every metric has as many label values as its descriptor keys.
        let pod_now = pod_metrics(&mut client, &pod).await;
        for m in pod_now.metrics.iter().chain(&container.metrics) {
            let k = keys
                .get(m.name.as_str())
                .unwrap_or_else(|| panic!("{m:?} not described"));
            assert_eq!(k.len(), m.label_values.len(), "{m:?} against {k:?}");
        }
        // The pod's network counters are the pod's, not the container's.
        assert!(
            find(&container.metrics, "container_network_receive_bytes_total").is_empty(),
            "{container:?}"
        );

        // 200 kB sent to the container across the bridge count on eth0.
        let (rx_bytes, rx_packets, tx_packets) = eth0(&pod_now);
        let send = sup
            .in_netns("bash")
            .args([
                "-c",
                &format!("exec 3<>/dev/tcp/{ip}/8080 && head -c 200000 /dev/zero >&3"),
            ])
            .output()
            .expect("run bash");
        assert!(
            send.status.success(),
            "send: {}",
            String::from_utf8_lossy(&send.stderr)
        );
        let after = eth0(&pod_metrics(&mut client, &pod).await);
        assert!(
            after.0 >= rx_bytes + 200_000,
            "rx bytes {rx_bytes} -> {}",
            after.0
        );
        assert!(
            after.1 > rx_packets,
            "rx packets {rx_packets} -> {}",
            after.1
        );
        // The acknowledgements.
        assert!(
            after.2 > tx_packets,
            "tx packets {tx_packets} -> {}",
            after.2
        );

        // A stopped container has no metrics; its stopped pod is not listed.
        sup.crictl_ok(&["stop", "-t", "0", &ctr]);
        let p = pod_metrics(&mut client, &pod).await;
        assert!(
            p.container_metrics.iter().all(|c| c.container_id != ctr),
            "{p:?}"
        );
        sup.crictl_ok(&["stopp", &pod]);
        let all = client
            .list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {})
            .await
            .expect("ListPodSandboxMetrics")
            .into_inner()
            .pod_metrics;
        assert!(all.iter().all(|p| p.pod_sandbox_id != pod), "{all:?}");
    });
    sup.crictl_ok(&["rmp", "-f", &pod]);
}
