//! PodSandboxStats and ListPodSandboxStats: a pod's CPU, memory and
//! process count read from its cgroup (the cgroup parent kubelet gave it,
//! which holds the pause and the containers under the cgroupfs driver;
//! else the pause's own cgroup), cgroup v1 or v2, and its network counters
//! from the pod's network namespace (`/proc/<pause>/net/dev`). CPU usage
//! in nano-cores is the rate since the previous sample of the same pod.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use berth_proto::cri::v1 as cri;

use super::status::{self, SandboxView};
use super::{now_ns, Cri, SandboxError};
use crate::cri::container::status as container_status;
use crate::cri::container::CtrError;

/// What one cgroup says.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CgroupUsage {
    pub cpu_ns: Option<u64>,
    pub memory_usage: Option<u64>,
    pub memory_limit: Option<u64>,
    pub inactive_file: u64,
    pub rss: Option<u64>,
    pub page_faults: Option<u64>,
    pub major_page_faults: Option<u64>,
    pub pids: Option<u64>,
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `key value` lines (memory.stat, cpu.stat, cpuacct.stat, memory.events);
/// an unreadable file has none.
pub(crate) fn read_keyed(path: &Path) -> HashMap<String, u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// Reads a cgroup (a cgroupfs path like `/kubepods/pod1`) under `root`
/// (`/sys/fs/cgroup`).
pub fn read_cgroup(root: &Path, cgroup: &str, version: u32) -> CgroupUsage {
    let rel = cgroup.trim_start_matches('/');
    if version == 2 {
        let dir = root.join(rel);
        let cpu = read_keyed(&dir.join("cpu.stat"));
        let memory = read_keyed(&dir.join("memory.stat"));
        CgroupUsage {
            cpu_ns: cpu.get("usage_usec").map(|u| u * 1000),
            memory_usage: read_u64(&dir.join("memory.current")),
            memory_limit: read_u64(&dir.join("memory.max")),
            inactive_file: memory.get("inactive_file").copied().unwrap_or(0),
            rss: memory.get("anon").copied(),
            page_faults: memory.get("pgfault").copied(),
            major_page_faults: memory.get("pgmajfault").copied(),
            pids: read_u64(&dir.join("pids.current")),
        }
    } else {
        let memory_dir = root.join("memory").join(rel);
        let memory = read_keyed(&memory_dir.join("memory.stat"));
        // The v1 limit of "no limit" is a huge page-rounded number.
        let limit = read_u64(&memory_dir.join("memory.limit_in_bytes")).filter(|l| *l < 1 << 62);
        CgroupUsage {
            cpu_ns: read_u64(&root.join("cpuacct").join(rel).join("cpuacct.usage")),
            memory_usage: read_u64(&memory_dir.join("memory.usage_in_bytes")),
            memory_limit: limit,
            inactive_file: memory.get("total_inactive_file").copied().unwrap_or(0),
            rss: memory.get("total_rss").copied(),
            page_faults: memory.get("total_pgfault").copied(),
            major_page_faults: memory.get("total_pgmajfault").copied(),
            pids: read_u64(&root.join("pids").join(rel).join("pids.current")),
        }
    }
}

/// One interface's counters from a `/proc/net/dev` text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceCounters {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// Every interface but `lo` in a `/proc/net/dev` text.
pub fn parse_net_dev(text: &str) -> Vec<InterfaceCounters> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let name = name.trim();
            let f: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
            (name != "lo" && f.len() >= 12).then(|| InterfaceCounters {
                name: name.to_string(),
                rx_bytes: f[0],
                rx_packets: f[1],
                rx_errors: f[2],
                rx_dropped: f[3],
                tx_bytes: f[8],
                tx_packets: f[9],
                tx_errors: f[10],
                tx_dropped: f[11],
            })
        })
        .collect()
}

fn value(v: Option<u64>) -> Option<cri::UInt64Value> {
    v.map(|value| cri::UInt64Value { value })
}

/// The previous CPU sample of each pod: (time ns, usage ns).
fn samples() -> &'static Mutex<HashMap<String, (i64, u64)>> {
    static SAMPLES: OnceLock<Mutex<HashMap<String, (i64, u64)>>> = OnceLock::new();
    SAMPLES.get_or_init(Default::default)
}

/// Nano-cores used since the previous sample of the same pod or
/// container (`None` at the first), as containerd computes them.
pub fn nano_cores(id: &str, at: i64, usage: u64) -> Option<u64> {
    let mut samples = samples().lock().unwrap_or_else(|e| e.into_inner());
    let previous = samples.insert(id.to_string(), (at, usage));
    let (then, before) = previous?;
    let elapsed = u64::try_from(at - then).ok().filter(|e| *e > 0)?;
    let used = usage.checked_sub(before)?;
    Some((used as u128 * 1_000_000_000 / elapsed as u128) as u64)
}

/// Drops the CPU sample of a pod or container that is removed.
pub fn forget_sample(id: &str) {
    samples()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(id);
}

/// The cgroup a pod's stats are read from: the parent kubelet gave it,
/// else the pause's own.
pub(crate) fn scope(view: &SandboxView) -> String {
    let parent = view
        .config
        .linux
        .as_ref()
        .map(|l| l.cgroup_parent.clone())
        .unwrap_or_default();
    if parent.is_empty() {
        view.record.cgroup.clone()
    } else {
        parent
    }
}

/// The pod's running containers.
pub(crate) async fn running_containers(
    cri: &Cri,
    pod: &str,
) -> Result<Vec<cri::Container>, CtrError> {
    container_status::list(
        cri,
        Some(cri::ContainerFilter {
            pod_sandbox_id: pod.to_string(),
            state: Some(cri::ContainerStateValue {
                state: cri::ContainerState::ContainerRunning as i32,
            }),
            ..Default::default()
        }),
    )
    .await
}

/// A pod's stats with those of its running containers.
async fn stats_of(cri: &Cri, view: &SandboxView) -> Result<cri::PodSandboxStats, SandboxError> {
    let containers = if view.ready {
        let running = running_containers(cri, &view.id).await.map_err(Box::new)?;
        let mut out = Vec::with_capacity(running.len());
        for c in running {
            match container_status::stats(cri, &c.id).await {
                Ok(s) => out.push(s),
                // Removed meanwhile.
                Err(CtrError::NotFound(_)) => {}
                Err(e) => return Err(Box::new(e).into()),
            }
        }
        out
    } else {
        Vec::new()
    };
    Ok(pod_stats(view, containers))
}

fn pod_stats(view: &SandboxView, containers: Vec<cri::ContainerStats>) -> cri::PodSandboxStats {
    let at = now_ns();
    let usage = read_cgroup(
        Path::new("/sys/fs/cgroup"),
        &scope(view),
        crate::tasks::host_cgroup_version(),
    );
    let working_set = usage
        .memory_usage
        .map(|u| u.saturating_sub(usage.inactive_file));
    let available = match (usage.memory_limit, working_set) {
        (Some(limit), Some(ws)) => Some(limit.saturating_sub(ws)),
        _ => None,
    };
    let interfaces: Vec<cri::NetworkInterfaceUsage> = if view.ready && view.record.pid > 0 {
        let text =
            std::fs::read_to_string(PathBuf::from(format!("/proc/{}/net/dev", view.record.pid)))
                .unwrap_or_default();
        parse_net_dev(&text)
            .into_iter()
            .map(|c| cri::NetworkInterfaceUsage {
                name: c.name,
                rx_bytes: value(Some(c.rx_bytes)),
                rx_errors: value(Some(c.rx_errors)),
                tx_bytes: value(Some(c.tx_bytes)),
                tx_errors: value(Some(c.tx_errors)),
            })
            .collect()
    } else {
        Vec::new()
    };
    let default_interface = interfaces
        .iter()
        .find(|i| i.name == super::cni::IFNAME)
        .cloned();
    cri::PodSandboxStats {
        attributes: Some(cri::PodSandboxAttributes {
            id: view.id.clone(),
            metadata: view.config.metadata.clone(),
            labels: view.config.labels.clone(),
            annotations: view.config.annotations.clone(),
        }),
        linux: Some(cri::LinuxPodSandboxStats {
            cpu: Some(cri::CpuUsage {
                timestamp: at,
                usage_core_nano_seconds: value(usage.cpu_ns),
                usage_nano_cores: value(usage.cpu_ns.and_then(|u| nano_cores(&view.id, at, u))),
                psi: None,
            }),
            memory: Some(cri::MemoryUsage {
                timestamp: at,
                working_set_bytes: value(working_set),
                available_bytes: value(available),
                usage_bytes: value(usage.memory_usage),
                rss_bytes: value(usage.rss),
                page_faults: value(usage.page_faults),
                major_page_faults: value(usage.major_page_faults),
                psi: None,
            }),
            network: Some(cri::NetworkUsage {
                timestamp: at,
                default_interface,
                interfaces,
            }),
            process: Some(cri::ProcessUsage {
                timestamp: at,
                process_count: value(usage.pids),
            }),
            containers,
            io: None,
        }),
        windows: None,
    }
}

/// One pod's stats.
pub async fn get(cri: &Cri, wanted: &str) -> Result<cri::PodSandboxStats, SandboxError> {
    let view = status::get(cri, wanted).await?;
    stats_of(cri, &view).await
}

/// The stats of the pods a filter selects (ready ones only, as
/// containerd lists them).
pub async fn list(
    cri: &Cri,
    filter: Option<&cri::PodSandboxStatsFilter>,
) -> Result<Vec<cri::PodSandboxStats>, SandboxError> {
    let list_filter = filter.map(|f| cri::PodSandboxFilter {
        id: f.id.clone(),
        state: None,
        label_selector: f.label_selector.clone(),
    });
    let views = status::list(cri, list_filter.as_ref()).await?;
    let mut out = Vec::new();
    for view in views.iter().filter(|v| v.ready) {
        out.push(stats_of(cri, view).await?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev_counters_leave_out_lo() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  \
eth0:    2048      10    1    0    0     0          0         0     4096      20    2    0    0     0       0          0\n";
        assert_eq!(
            parse_net_dev(text),
            vec![InterfaceCounters {
                name: "eth0".into(),
                rx_bytes: 2048,
                rx_packets: 10,
                rx_errors: 1,
                rx_dropped: 0,
                tx_bytes: 4096,
                tx_packets: 20,
                tx_errors: 2,
                tx_dropped: 0,
            }]
        );
    }

    #[test]
    fn cgroup_files_are_read_for_v1_and_v2() {
        let root = tempfile::tempdir().unwrap();
        let w = |rel: &str, text: &str| {
            let p = root.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        w("pod/cpu.stat", "usage_usec 1500\nuser_usec 1000\n");
        w("pod/memory.current", "8192\n");
        w("pod/memory.max", "max\n");
        w(
            "pod/memory.stat",
            "anon 4096\ninactive_file 1024\npgfault 7\npgmajfault 1\n",
        );
        w("pod/pids.current", "3\n");
        let v2 = read_cgroup(root.path(), "/pod", 2);
        assert_eq!(v2.cpu_ns, Some(1_500_000));
        assert_eq!(v2.memory_usage, Some(8192));
        assert_eq!(v2.memory_limit, None);
        assert_eq!(v2.inactive_file, 1024);
        assert_eq!(v2.rss, Some(4096));
        assert_eq!(v2.pids, Some(3));
        w("cpuacct/pod/cpuacct.usage", "99\n");
        w("memory/pod/memory.usage_in_bytes", "500\n");
        w("memory/pod/memory.limit_in_bytes", "9223372036854771712\n");
        w(
            "memory/pod/memory.stat",
            "total_rss 300\ntotal_inactive_file 100\n",
        );
        w("pids/pod/pids.current", "2\n");
        let v1 = read_cgroup(root.path(), "/pod", 1);
        assert_eq!(v1.cpu_ns, Some(99));
        assert_eq!(v1.memory_limit, None);
        assert_eq!(v1.rss, Some(300));
        assert_eq!(v1.inactive_file, 100);
        assert_eq!(v1.pids, Some(2));
    }

    #[test]
    fn nano_cores_are_the_rate_since_the_last_sample() {
        assert_eq!(nano_cores("t-pod", 1_000_000_000, 0), None);
        // Half a second of CPU in one second: half a core.
        assert_eq!(
            nano_cores("t-pod", 2_000_000_000, 500_000_000),
            Some(500_000_000)
        );
    }
}
