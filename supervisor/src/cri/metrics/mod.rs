//! ListMetricDescriptors and ListPodSandboxMetrics: the cadvisor-named
//! metrics kubelet's CRI stats provider re-exports as /metrics/cadvisor.
//! Each ready pod gives its own metrics (its cgroup's, with the network
//! counters of its namespace, `/proc/<pause>/net/dev`, per interface) and
//! those of each running container (its cgroup's and its writable layer's).
//! Every metric carries the descriptor's base labels `container, id,
//! image, name, namespace, pod` (the pod's own: `container` empty, `id`
//! and `name` the pod id, `image` the pause image), then its extra ones,
//! and the time it was read.

pub mod cgroup;

use std::path::Path;

use berth_proto::cri::v1 as cri;
use tonic::Status;

use super::container::spec::cgroups_path;
use super::sandbox::stats::parse_net_dev;
use super::sandbox::status::{self as sandbox_status, SandboxView};
use super::{Cri, NAMESPACE};
use cgroup::{CgroupDir, Sample};

/// The label keys every metric starts with.
pub const BASE_LABELS: [&str; 6] = ["container", "id", "image", "name", "namespace", "pod"];

/// One metric: name, help, extra label keys (after the base ones), and
/// whether it is a gauge (else a counter).
struct Descriptor {
    name: &'static str,
    help: &'static str,
    extra: &'static [&'static str],
    gauge: bool,
}

const fn counter(
    name: &'static str,
    help: &'static str,
    extra: &'static [&'static str],
) -> Descriptor {
    Descriptor {
        name,
        help,
        extra,
        gauge: false,
    }
}

const fn gauge(
    name: &'static str,
    help: &'static str,
    extra: &'static [&'static str],
) -> Descriptor {
    Descriptor {
        name,
        help,
        extra,
        gauge: true,
    }
}

const IFACE: &[&str] = &["interface"];
const DEVICE: &[&str] = &["device"];

/// The metrics, with cadvisor's names and help texts.
const DESCRIPTORS: &[Descriptor] = &[
    counter("container_cpu_usage_seconds_total", "Cumulative cpu time consumed in seconds.", &["cpu"]),
    counter("container_cpu_user_seconds_total", "Cumulative user cpu time consumed in seconds.", &[]),
    counter("container_cpu_system_seconds_total", "Cumulative system cpu time consumed in seconds.", &[]),
    counter("container_cpu_cfs_periods_total", "Number of elapsed enforcement period intervals.", &[]),
    counter("container_cpu_cfs_throttled_periods_total", "Number of throttled period intervals.", &[]),
    counter("container_cpu_cfs_throttled_seconds_total", "Total time duration the container has been throttled.", &[]),
    gauge("container_memory_usage_bytes", "Current memory usage in bytes, including all memory regardless of when it was accessed", &[]),
    gauge("container_memory_working_set_bytes", "Current working set in bytes.", &[]),
    gauge("container_memory_rss", "Size of RSS in bytes.", &[]),
    gauge("container_memory_cache", "Number of bytes of page cache memory.", &[]),
    gauge("container_memory_mapped_file", "Size of memory mapped files in bytes.", &[]),
    gauge("container_memory_swap", "Container swap usage in bytes.", &[]),
    gauge("container_memory_kernel_usage", "Size of kernel memory allocated in bytes.", &[]),
    gauge("container_memory_max_usage_bytes", "Maximum memory usage recorded in bytes", &[]),
    counter("container_memory_failcnt", "Number of memory usage hits limits", &[]),
    counter("container_memory_failures_total", "Cumulative count of memory allocation failures.", &["failure_type", "scope"]),
    counter("container_oom_events_total", "Count of out of memory events observed for the container", &[]),
    gauge("container_spec_memory_limit_bytes", "Memory limit for the container.", &[]),
    gauge("container_spec_memory_reservation_limit_bytes", "Memory reservation limit for the container.", &[]),
    gauge("container_spec_memory_swap_limit_bytes", "Memory swap limit for the container.", &[]),
    gauge("container_spec_cpu_period", "CPU period of the container.", &[]),
    gauge("container_spec_cpu_quota", "CPU quota of the container.", &[]),
    gauge("container_spec_cpu_shares", "CPU share of the container.", &[]),
    gauge("container_hugetlb_usage_bytes", "Current hugepage usage in bytes.", &["pagesize"]),
    gauge("container_hugetlb_max_usage_bytes", "Maximum hugepage usage recorded in bytes.", &["pagesize"]),
    counter("container_blkio_device_usage_total", "Blkio Device bytes usage", &["device", "major", "minor", "operation"]),
    counter("container_fs_reads_bytes_total", "Cumulative count of bytes read", DEVICE),
    counter("container_fs_writes_bytes_total", "Cumulative count of bytes written", DEVICE),
    counter("container_fs_reads_total", "Cumulative count of reads completed", DEVICE),
    counter("container_fs_writes_total", "Cumulative count of writes completed", DEVICE),
    gauge("container_fs_usage_bytes", "Number of bytes that are consumed by the container on this filesystem.", DEVICE),
    gauge("container_fs_limit_bytes", "Number of bytes that can be consumed by the container on this filesystem.", DEVICE),
    gauge("container_fs_inodes_total", "Number of Inodes", DEVICE),
    gauge("container_fs_inodes_free", "Number of available Inodes", DEVICE),
    counter("container_pressure_cpu_waiting_seconds_total", "Total time duration tasks in the container have waited due to CPU congestion.", &[]),
    counter("container_pressure_cpu_stalled_seconds_total", "Total time duration no tasks in the container could make progress due to CPU congestion.", &[]),
    counter("container_pressure_memory_waiting_seconds_total", "Total time duration tasks in the container have waited due to memory congestion.", &[]),
    counter("container_pressure_memory_stalled_seconds_total", "Total time duration no tasks in the container could make progress due to memory congestion.", &[]),
    counter("container_pressure_io_waiting_seconds_total", "Total time duration tasks in the container have waited due to IO congestion.", &[]),
    counter("container_pressure_io_stalled_seconds_total", "Total time duration no tasks in the container could make progress due to IO congestion.", &[]),
    counter("container_network_receive_bytes_total", "Cumulative count of bytes received", IFACE),
    counter("container_network_receive_packets_total", "Cumulative count of packets received", IFACE),
    counter("container_network_receive_packets_dropped_total", "Cumulative count of packets dropped while receiving", IFACE),
    counter("container_network_receive_errors_total", "Cumulative count of errors encountered while receiving", IFACE),
    counter("container_network_transmit_bytes_total", "Cumulative count of bytes transmitted", IFACE),
    counter("container_network_transmit_packets_total", "Cumulative count of packets transmitted", IFACE),
    counter("container_network_transmit_packets_dropped_total", "Cumulative count of packets dropped while transmitting", IFACE),
    counter("container_network_transmit_errors_total", "Cumulative count of errors encountered while transmitting", IFACE),
    gauge("container_processes", "Number of processes running inside the container.", &[]),
    gauge("container_threads", "Number of threads running inside the container", &[]),
    gauge("container_threads_max", "Maximum number of threads allowed inside the container, infinity if value is zero", &[]),
    gauge("container_file_descriptors", "Number of open file descriptors for the container.", &[]),
    gauge("container_sockets", "Number of open sockets for the container.", &[]),
    gauge("container_ulimits_soft", "Soft ulimit values for the container root process. Unlimited if -1, except priority and nice", &["ulimit"]),
    gauge("container_last_seen", "Last time a container was seen by the exporter", &[]),
    gauge("container_start_time_seconds", "Start time of the container since unix epoch in seconds.", &[]),
];

fn descriptor(name: &str) -> Option<&'static Descriptor> {
    DESCRIPTORS.iter().find(|d| d.name == name)
}

/// ListMetricDescriptors: every metric this CRI gives.
pub fn descriptors() -> Vec<cri::MetricDescriptor> {
    DESCRIPTORS
        .iter()
        .map(|d| cri::MetricDescriptor {
            name: d.name.into(),
            help: d.help.into(),
            label_keys: BASE_LABELS
                .iter()
                .chain(d.extra)
                .map(|k| k.to_string())
                .collect(),
        })
        .collect()
}

/// The base label values of a pod or a container.
struct Base {
    container: String,
    id: String,
    image: String,
    name: String,
    namespace: String,
    pod: String,
}

/// Samples as CRI metrics, with the base labels first; a sample whose
/// name or extra labels do not match a descriptor is a bug, left out.
fn metrics(base: &Base, samples: Vec<Sample>, at: i64) -> Vec<cri::Metric> {
    samples
        .into_iter()
        .filter_map(|s| {
            let d = descriptor(s.name)?;
            if d.extra.len() != s.extra.len() {
                tracing::warn!(
                    metric = s.name,
                    "metric sample with the wrong labels left out"
                );
                return None;
            }
            let mut label_values = vec![
                base.container.clone(),
                base.id.clone(),
                base.image.clone(),
                base.name.clone(),
                base.namespace.clone(),
                base.pod.clone(),
            ];
            label_values.extend(s.extra);
            Some(cri::Metric {
                name: s.name.into(),
                timestamp: at,
                metric_type: if d.gauge {
                    cri::MetricType::Gauge
                } else {
                    cri::MetricType::Counter
                } as i32,
                label_values,
                value: Some(cri::UInt64Value { value: s.value }),
            })
        })
        .collect()
}

fn plain(name: &'static str, value: u64) -> Sample {
    Sample {
        name,
        extra: Vec::new(),
        value,
    }
}

/// The network samples of a `/proc/<pid>/net/dev` text (all but `lo`).
fn network_samples(net_dev: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for c in parse_net_dev(net_dev) {
        for (name, value) in [
            ("container_network_receive_bytes_total", c.rx_bytes),
            ("container_network_receive_packets_total", c.rx_packets),
            (
                "container_network_receive_packets_dropped_total",
                c.rx_dropped,
            ),
            ("container_network_receive_errors_total", c.rx_errors),
            ("container_network_transmit_bytes_total", c.tx_bytes),
            ("container_network_transmit_packets_total", c.tx_packets),
            (
                "container_network_transmit_packets_dropped_total",
                c.tx_dropped,
            ),
            ("container_network_transmit_errors_total", c.tx_errors),
        ] {
            out.push(Sample {
                name,
                extra: vec![c.name.clone()],
                value,
            });
        }
    }
    out
}

/// The filesystem samples of a writable layer: its usage, and the size
/// and inodes of the filesystem it is on (`device` is the snapshots
/// directory, as ContainerStats names it).
fn fs_samples(dir: &Path, usage: Option<u64>) -> Vec<Sample> {
    let device = dir.to_string_lossy().into_owned();
    let mut out = Vec::new();
    let mut push = |name, value| {
        out.push(Sample {
            name,
            extra: vec![device.clone()],
            value,
        })
    };
    if let Some(bytes) = usage {
        push("container_fs_usage_bytes", bytes);
    }
    if let Ok(fs) = nix::sys::statvfs::statvfs(dir) {
        let frsize = fs.fragment_size();
        push("container_fs_limit_bytes", fs.blocks() * frsize);
        push("container_fs_inodes_total", fs.files());
        push("container_fs_inodes_free", fs.files_free());
    }
    out
}

/// What one running container needs to be measured.
struct ContainerInput {
    id: String,
    name: String,
    image: String,
    started_at: i64,
}

/// What one ready pod needs to be measured.
struct PodInput {
    view: SandboxView,
    containers: Vec<ContainerInput>,
}

fn secs(ns: i64) -> u64 {
    u64::try_from(ns / 1_000_000_000).unwrap_or(0)
}

/// Measures the pods (blocking: reads files, walks writable layers).
fn measure(cri: &Cri, pods: Vec<PodInput>) -> Vec<cri::PodSandboxMetrics> {
    let root = Path::new("/sys/fs/cgroup");
    let proc_root = Path::new("/proc");
    let version = crate::tasks::host_cgroup_version();
    let snapshots_dir = cri.config.snapshots_dir.as_path();
    let mut out = Vec::with_capacity(pods.len());
    for pod in pods {
        let view = &pod.view;
        let at = super::sandbox::now_ns();
        let meta = view.config.metadata.clone().unwrap_or_default();
        let pod_base = Base {
            container: String::new(),
            id: view.id.clone(),
            image: view.record.image.clone(),
            name: view.id.clone(),
            namespace: meta.namespace.clone(),
            pod: meta.name.clone(),
        };
        let path = crate::cri::sandbox::stats::scope(view);
        let mut samples = cgroup::samples(
            &CgroupDir {
                root,
                path: &path,
                version,
            },
            proc_root,
        );
        if view.record.pid > 0 {
            let net_dev = std::fs::read_to_string(format!("/proc/{}/net/dev", view.record.pid))
                .unwrap_or_default();
            samples.extend(network_samples(&net_dev));
        }
        samples.push(plain("container_last_seen", secs(at)));
        samples.push(plain(
            "container_start_time_seconds",
            secs(view.record.created_at),
        ));
        let pod_metrics = metrics(&pod_base, samples, at);

        let mut container_metrics = Vec::with_capacity(pod.containers.len());
        for c in &pod.containers {
            let at = super::sandbox::now_ns();
            let path = cgroups_path(&view.config, &c.id);
            let dir = CgroupDir {
                root,
                path: &path,
                version,
            };
            // Stopped meanwhile: its cgroup is gone.
            if !dir.exists() {
                continue;
            }
            let mut samples = cgroup::samples(&dir, proc_root);
            samples.extend(fs_samples(snapshots_dir, writable_usage(cri, &c.id)));
            samples.push(plain("container_last_seen", secs(at)));
            samples.push(plain("container_start_time_seconds", secs(c.started_at)));
            let base = Base {
                container: c.name.clone(),
                id: c.id.clone(),
                image: c.image.clone(),
                name: c.id.clone(),
                namespace: meta.namespace.clone(),
                pod: meta.name.clone(),
            };
            container_metrics.push(cri::ContainerMetrics {
                container_id: c.id.clone(),
                metrics: metrics(&base, samples, at),
            });
        }
        out.push(cri::PodSandboxMetrics {
            pod_sandbox_id: view.id.clone(),
            metrics: pod_metrics,
            container_metrics,
        });
    }
    out
}

/// The bytes a container's writable layer uses.
fn writable_usage(cri: &Cri, id: &str) -> Option<u64> {
    let rx = cri.images.meta.read().ok()?;
    let record = crate::containers::get(&cri.images, NAMESPACE, id).ok()?;
    cri.images
        .snapshots
        .usage(&rx, NAMESPACE, &record.snapshot_key)
        .ok()
        .map(|(bytes, _)| bytes)
}

/// ListPodSandboxMetrics: the metrics of every ready pod and of its
/// running containers.
pub async fn list(cri: &Cri) -> Result<Vec<cri::PodSandboxMetrics>, Status> {
    let views = sandbox_status::list(cri, None)
        .await
        .map_err(|e| Status::internal(format!("listing pod sandboxes: {e}")))?;
    let mut pods = Vec::new();
    for view in views.into_iter().filter(|v| v.ready) {
        let running = crate::cri::sandbox::stats::running_containers(cri, &view.id)
            .await
            .map_err(|e| Status::internal(format!("listing containers: {e}")))?;
        let containers = running
            .into_iter()
            .map(|c| {
                let started_at = cri
                    .store
                    .container(&c.id)
                    .ok()
                    .flatten()
                    .map(|r| r.started_at)
                    .unwrap_or(0);
                ContainerInput {
                    name: c.metadata.map(|m| m.name).unwrap_or_default(),
                    image: c.image.map(|i| i.image).unwrap_or_default(),
                    id: c.id,
                    started_at,
                }
            })
            .collect();
        pods.push(PodInput { view, containers });
    }
    let cri = cri.clone();
    tokio::task::spawn_blocking(move || measure(&cri, pods))
        .await
        .map_err(|e| Status::internal(format!("measuring pods stopped: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_name_has_a_descriptor_with_its_labels() {
        let names: std::collections::HashSet<_> = DESCRIPTORS.iter().map(|d| d.name).collect();
        assert_eq!(
            names.len(),
            DESCRIPTORS.len(),
            "a descriptor is listed twice"
        );
        let d = descriptors();
        assert!(d
            .iter()
            .all(|d| !d.help.is_empty() && d.label_keys.len() >= 6));
        let net = "Inter-|\n face |\n  eth0: 10 2 0 1 0 0 0 0 20 3 0 0 0 0 0 0\n";
        let s = network_samples(net);
        assert_eq!(s.len(), 8);
        let base = Base {
            container: "c".into(),
            id: "id".into(),
            image: "img".into(),
            name: "id".into(),
            namespace: "ns".into(),
            pod: "p".into(),
        };
        let m = metrics(&base, s, 5);
        assert_eq!(m.len(), 8);
        let rx = m
            .iter()
            .find(|m| m.name == "container_network_receive_packets_dropped_total")
            .unwrap();
        assert_eq!(rx.label_values, ["c", "id", "img", "id", "ns", "p", "eth0"]);
        assert_eq!(rx.value.as_ref().unwrap().value, 1);
        assert_eq!(rx.timestamp, 5);
        // A sample with the wrong number of labels is left out.
        assert!(metrics(
            &base,
            vec![plain("container_network_receive_bytes_total", 1)],
            5
        )
        .is_empty());
    }
}
