//! The cadvisor-named samples of one cgroup (a pod's or a container's),
//! read from its files under cgroup v1 (one directory per controller)
//! or v2 (one directory), and from the /proc entries of its processes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::cri::sandbox::stats::read_keyed;

/// One value of a metric: the values of its descriptor's extra label
/// keys (after the base ones), and the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub name: &'static str,
    pub extra: Vec<String>,
    pub value: u64,
}

fn sample(name: &'static str, value: u64) -> Sample {
    Sample {
        name,
        extra: Vec::new(),
        value,
    }
}

fn labelled(name: &'static str, extra: &[&str], value: u64) -> Sample {
    Sample {
        name,
        extra: extra.iter().map(|s| s.to_string()).collect(),
        value,
    }
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn read_u64(path: &Path) -> Option<u64> {
    read(path)?.trim().parse().ok()
}

/// A limit as cadvisor shows it: 0 for "no limit" (`max`, or v1's huge
/// page-rounded number).
fn limit(text: Option<String>) -> Option<u64> {
    let text = text?;
    let text = text.trim();
    if text == "max" {
        return Some(0);
    }
    let v: u64 = text.parse().ok()?;
    Some(if v >= 1 << 62 { 0 } else { v })
}

const NS: u64 = 1_000_000_000;

/// A pressure file's `some`/`full` totals in microseconds.
fn pressure(path: &Path) -> Option<(u64, u64)> {
    let text = read(path)?;
    let total = |kind: &str| {
        text.lines()
            .find(|l| l.starts_with(kind))?
            .split_whitespace()
            .find_map(|f| f.strip_prefix("total="))?
            .parse::<u64>()
            .ok()
    };
    Some((total("some")?, total("full").unwrap_or(0)))
}

/// The block device `major:minor` names (`/dev/sda`), as cadvisor labels it.
fn device_name(major_minor: &str) -> String {
    std::fs::read_link(format!("/sys/dev/block/{major_minor}"))
        .ok()
        .and_then(|p| {
            p.file_name()
                .map(|n| format!("/dev/{}", n.to_string_lossy()))
        })
        .unwrap_or_else(|| major_minor.to_string())
}

/// Per device: (read bytes, write bytes, reads, writes).
type Io = HashMap<String, [u64; 4]>;

/// v1 `blkio.throttle.io_service*` lines: `8:0 Read 4096`.
fn blkio_v1(bytes: &str, ops: &str) -> Io {
    let mut io = Io::new();
    for (text, offset) in [(bytes, 0), (ops, 2)] {
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if let [dev, op, v] = f[..] {
                let slot = match op {
                    "Read" => offset,
                    "Write" => offset + 1,
                    _ => continue,
                };
                if let Ok(v) = v.parse::<u64>() {
                    io.entry(dev.to_string()).or_default()[slot] += v;
                }
            }
        }
    }
    io
}

/// v2 `io.stat` lines: `8:0 rbytes=1 wbytes=2 rios=3 wios=4 ...`.
fn io_v2(text: &str) -> Io {
    let mut io = Io::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let Some(dev) = f.next() else { continue };
        let entry = io.entry(dev.to_string()).or_default();
        for kv in f {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let slot = match k {
                "rbytes" => 0,
                "wbytes" => 1,
                "rios" => 2,
                "wios" => 3,
                _ => continue,
            };
            entry[slot] = v.parse().unwrap_or(0);
        }
    }
    io
}

fn io_samples(io: Io, out: &mut Vec<Sample>) {
    let mut devices: Vec<_> = io.into_iter().collect();
    devices.sort();
    for (dev, [rb, wb, r, w]) in devices {
        let name = device_name(&dev);
        let (major, minor) = dev.split_once(':').unwrap_or((&dev, ""));
        for (op, v) in [("Read", rb), ("Write", wb)] {
            out.push(labelled(
                "container_blkio_device_usage_total",
                &[&name, major, minor, op],
                v,
            ));
        }
        out.push(labelled("container_fs_reads_bytes_total", &[&name], rb));
        out.push(labelled("container_fs_writes_bytes_total", &[&name], wb));
        out.push(labelled("container_fs_reads_total", &[&name], r));
        out.push(labelled("container_fs_writes_total", &[&name], w));
    }
}

/// The pids in a `cgroup.procs` or `tasks` file.
fn pids(path: &Path) -> Vec<u32> {
    read(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Open files and sockets of some processes, and the soft open-files
/// limit of the first.
fn fd_samples(procs: &[u32], proc_root: &Path, out: &mut Vec<Sample>) {
    let (mut fds, mut sockets) = (0u64, 0u64);
    for pid in procs {
        let Ok(dir) = std::fs::read_dir(proc_root.join(pid.to_string()).join("fd")) else {
            continue;
        };
        for entry in dir.flatten() {
            fds += 1;
            if std::fs::read_link(entry.path())
                .is_ok_and(|t| t.to_string_lossy().starts_with("socket:"))
            {
                sockets += 1;
            }
        }
    }
    out.push(sample("container_file_descriptors", fds));
    out.push(sample("container_sockets", sockets));
    let soft = procs.iter().min().and_then(|pid| {
        let text = read(&proc_root.join(pid.to_string()).join("limits"))?;
        let line = text.lines().find(|l| l.starts_with("Max open files"))?;
        line["Max open files".len()..]
            .split_whitespace()
            .next()?
            .parse::<u64>()
            .ok()
    });
    if let Some(soft) = soft {
        out.push(labelled(
            "container_ulimits_soft",
            &["max_open_files"],
            soft,
        ));
    }
}

/// Hugetlb usage per page size from the files of one directory
/// (`hugetlb.2MB.usage_in_bytes` / `.current`).
fn hugetlb_samples(dir: &Path, v2: bool, out: &mut Vec<Sample>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let (usage_suffix, max_suffix) = if v2 {
        (".current", None)
    } else {
        (".usage_in_bytes", Some(".max_usage_in_bytes"))
    };
    let mut sizes: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let size = name.strip_prefix("hugetlb.")?.strip_suffix(usage_suffix)?;
            (!size.contains('.')).then(|| size.to_string())
        })
        .collect();
    sizes.sort();
    for size in sizes {
        let usage = read_u64(&dir.join(format!("hugetlb.{size}{usage_suffix}")));
        if let Some(usage) = usage {
            out.push(labelled("container_hugetlb_usage_bytes", &[&size], usage));
        }
        let max = max_suffix.and_then(|s| read_u64(&dir.join(format!("hugetlb.{size}{s}"))));
        if let Some(max) = max {
            out.push(labelled("container_hugetlb_max_usage_bytes", &[&size], max));
        }
    }
}

/// Where a cgroup's files are: the cgroupfs root (`/sys/fs/cgroup`), the
/// cgroup's path in it, and the host's cgroup version.
pub struct CgroupDir<'a> {
    pub root: &'a Path,
    pub path: &'a str,
    pub version: u32,
}

impl CgroupDir<'_> {
    fn dir(&self, controller: &str) -> PathBuf {
        let rel = self.path.trim_start_matches('/');
        if self.version == 2 {
            self.root.join(rel)
        } else {
            self.root.join(controller).join(rel)
        }
    }

    /// Whether the cgroup exists (its memory directory, which both
    /// versions have).
    pub fn exists(&self) -> bool {
        self.dir("memory").is_dir()
    }
}

/// Every sample a cgroup's files give, its processes' with `proc_root`
/// (`/proc`).
pub fn samples(cg: &CgroupDir<'_>, proc_root: &Path) -> Vec<Sample> {
    let mut out = Vec::new();
    let v2 = cg.version == 2;
    let cpu_dir = cg.dir("cpu");
    let memory_dir = cg.dir("memory");
    let cpu_stat = read_keyed(&cpu_dir.join("cpu.stat"));
    let memory_stat = read_keyed(&memory_dir.join("memory.stat"));
    let stat = |v1: &str, v2key: &str| {
        memory_stat
            .get(if v2 { v2key } else { v1 })
            .copied()
            .unwrap_or(0)
    };

    // CPU, in whole seconds as CRI-O gives them (the CRI value is an integer).
    let (usage_ns, user_ns, system_ns) = if v2 {
        let us = |k: &str| cpu_stat.get(k).map(|v| v * 1000);
        (us("usage_usec"), us("user_usec"), us("system_usec"))
    } else {
        let acct = cg.dir("cpuacct");
        let ticks = read_keyed(&acct.join("cpuacct.stat"));
        // USER_HZ is 100 on Linux: a tick is 10 ms.
        let tick = |k: &str| ticks.get(k).map(|t| t * (NS / 100));
        (
            read_u64(&acct.join("cpuacct.usage")),
            tick("user"),
            tick("system"),
        )
    };
    if let Some(ns) = usage_ns {
        out.push(labelled(
            "container_cpu_usage_seconds_total",
            &["total"],
            ns / NS,
        ));
    }
    if let Some(ns) = user_ns {
        out.push(sample("container_cpu_user_seconds_total", ns / NS));
    }
    if let Some(ns) = system_ns {
        out.push(sample("container_cpu_system_seconds_total", ns / NS));
    }
    if let Some(p) = cpu_stat.get("nr_periods") {
        out.push(sample("container_cpu_cfs_periods_total", *p));
        let throttled = cpu_stat.get("nr_throttled").copied().unwrap_or(0);
        out.push(sample(
            "container_cpu_cfs_throttled_periods_total",
            throttled,
        ));
        let throttled_ns = if v2 {
            cpu_stat.get("throttled_usec").map(|u| u * 1000)
        } else {
            cpu_stat.get("throttled_time").copied()
        };
        out.push(sample(
            "container_cpu_cfs_throttled_seconds_total",
            throttled_ns.unwrap_or(0) / NS,
        ));
    }
    // The CPU spec: period, quota (only when set, as cadvisor), shares.
    let (period, quota, shares) = if v2 {
        let max = read(&cpu_dir.join("cpu.max")).unwrap_or_default();
        let mut f = max.split_whitespace();
        let quota = f.next().and_then(|q| q.parse::<u64>().ok());
        let period = f.next().and_then(|p| p.parse::<u64>().ok());
        // cpu.weight back to shares, as runc maps them the other way.
        let shares = read_u64(&cpu_dir.join("cpu.weight"))
            .map(|w| 2 + (w.saturating_sub(1) * 262_142) / 9_999);
        (period, quota, shares)
    } else {
        let quota = read(&cpu_dir.join("cpu.cfs_quota_us"))
            .and_then(|q| q.trim().parse::<i64>().ok())
            .and_then(|q| u64::try_from(q).ok());
        (
            read_u64(&cpu_dir.join("cpu.cfs_period_us")),
            quota,
            read_u64(&cpu_dir.join("cpu.shares")),
        )
    };
    if let Some(p) = period {
        out.push(sample("container_spec_cpu_period", p));
    }
    if let Some(q) = quota.filter(|q| *q > 0) {
        out.push(sample("container_spec_cpu_quota", q));
    }
    if let Some(s) = shares {
        out.push(sample("container_spec_cpu_shares", s));
    }

    // Memory.
    let usage = read_u64(&memory_dir.join(if v2 {
        "memory.current"
    } else {
        "memory.usage_in_bytes"
    }));
    if let Some(usage) = usage {
        let inactive = stat("total_inactive_file", "inactive_file");
        out.push(sample("container_memory_usage_bytes", usage));
        out.push(sample(
            "container_memory_working_set_bytes",
            usage.saturating_sub(inactive),
        ));
        out.push(sample("container_memory_rss", stat("total_rss", "anon")));
        out.push(sample(
            "container_memory_cache",
            stat("total_cache", "file"),
        ));
        out.push(sample(
            "container_memory_mapped_file",
            stat("total_mapped_file", "file_mapped"),
        ));
        let events = read_keyed(&memory_dir.join("memory.events"));
        let (swap, kernel, max_usage, failcnt, oom) = if v2 {
            (
                read_u64(&memory_dir.join("memory.swap.current")),
                memory_stat.get("kernel").copied().or_else(|| {
                    Some(stat("", "kernel_stack") + stat("", "slab") + stat("", "sock"))
                }),
                read_u64(&memory_dir.join("memory.peak")),
                events.get("max").copied(),
                events.get("oom_kill").copied(),
            )
        } else {
            let oom_control = read_keyed(&memory_dir.join("memory.oom_control"));
            (
                memory_stat.get("total_swap").copied(),
                read_u64(&memory_dir.join("memory.kmem.usage_in_bytes")),
                read_u64(&memory_dir.join("memory.max_usage_in_bytes")),
                read_u64(&memory_dir.join("memory.failcnt")),
                oom_control.get("oom_kill").copied(),
            )
        };
        out.push(sample("container_memory_swap", swap.unwrap_or(0)));
        out.push(sample("container_memory_kernel_usage", kernel.unwrap_or(0)));
        out.push(sample(
            "container_memory_max_usage_bytes",
            max_usage.unwrap_or(usage),
        ));
        out.push(sample("container_memory_failcnt", failcnt.unwrap_or(0)));
        out.push(sample("container_oom_events_total", oom.unwrap_or(0)));
        // Page faults: the cgroup's own (v1's non-total keys) and its
        // hierarchy's.
        for (kind, own, total) in [
            ("pgfault", "pgfault", "total_pgfault"),
            ("pgmajfault", "pgmajfault", "total_pgmajfault"),
        ] {
            let hierarchy = stat(total, own);
            let container = if v2 {
                hierarchy
            } else {
                memory_stat.get(own).copied().unwrap_or(0)
            };
            out.push(labelled(
                "container_memory_failures_total",
                &[kind, "container"],
                container,
            ));
            out.push(labelled(
                "container_memory_failures_total",
                &[kind, "hierarchy"],
                hierarchy,
            ));
        }
    }
    // The memory spec.
    let (mem_limit, reservation, swap_limit) = if v2 {
        (
            limit(read(&memory_dir.join("memory.max"))),
            limit(read(&memory_dir.join("memory.low"))),
            limit(read(&memory_dir.join("memory.swap.max"))),
        )
    } else {
        (
            limit(read(&memory_dir.join("memory.limit_in_bytes"))),
            limit(read(&memory_dir.join("memory.soft_limit_in_bytes"))),
            limit(read(&memory_dir.join("memory.memsw.limit_in_bytes"))),
        )
    };
    if let Some(l) = mem_limit {
        out.push(sample("container_spec_memory_limit_bytes", l));
        out.push(sample(
            "container_spec_memory_reservation_limit_bytes",
            reservation.unwrap_or(0),
        ));
        out.push(sample(
            "container_spec_memory_swap_limit_bytes",
            swap_limit.unwrap_or(0),
        ));
    }

    // Hugetlb, where the controller is there.
    hugetlb_samples(&cg.dir("hugetlb"), v2, &mut out);

    // Block I/O.
    let io = if v2 {
        io_v2(&read(&cg.dir("io").join("io.stat")).unwrap_or_default())
    } else {
        let blkio = cg.dir("blkio");
        let bytes = read(&blkio.join("blkio.throttle.io_service_bytes_recursive"))
            .or_else(|| read(&blkio.join("blkio.throttle.io_service_bytes")))
            .unwrap_or_default();
        let ops = read(&blkio.join("blkio.throttle.io_serviced_recursive"))
            .or_else(|| read(&blkio.join("blkio.throttle.io_serviced")))
            .unwrap_or_default();
        blkio_v1(&bytes, &ops)
    };
    io_samples(io, &mut out);

    // Pressure (PSI): v2's files, or on a v1 host the same cgroup's in
    // the unified hierarchy when it has one.
    let psi_dir = if v2 {
        cg.dir("")
    } else {
        cg.root
            .join("unified")
            .join(cg.path.trim_start_matches('/'))
    };
    for (res, waiting, stalled) in [
        (
            "cpu",
            "container_pressure_cpu_waiting_seconds_total",
            "container_pressure_cpu_stalled_seconds_total",
        ),
        (
            "memory",
            "container_pressure_memory_waiting_seconds_total",
            "container_pressure_memory_stalled_seconds_total",
        ),
        (
            "io",
            "container_pressure_io_waiting_seconds_total",
            "container_pressure_io_stalled_seconds_total",
        ),
    ] {
        if let Some((some, full)) = pressure(&psi_dir.join(format!("{res}.pressure"))) {
            out.push(sample(waiting, some / 1_000_000));
            out.push(sample(stalled, full / 1_000_000));
        }
    }

    // Processes and threads.
    let pids_dir = cg.dir("pids");
    let procs = pids(&pids_dir.join("cgroup.procs"));
    let threads = pids(&pids_dir.join(if v2 { "cgroup.threads" } else { "tasks" }));
    out.push(sample("container_processes", procs.len() as u64));
    out.push(sample("container_threads", threads.len() as u64));
    if let Some(max) = limit(read(&pids_dir.join("pids.max"))) {
        out.push(sample("container_threads_max", max));
    }
    fd_samples(&procs, proc_root, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(samples: &[Sample], name: &str, extra: &[&str]) -> Option<u64> {
        samples
            .iter()
            .find(|s| s.name == name && s.extra == extra)
            .map(|s| s.value)
    }

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn v2_files_give_the_cadvisor_samples() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        write(
            r,
            "pod/c/cpu.stat",
            "usage_usec 3500000\nuser_usec 2000000\nsystem_usec 1500000\nnr_periods 10\nnr_throttled 4\nthrottled_usec 2000000\n",
        );
        write(r, "pod/c/cpu.max", "20000 100000\n");
        write(r, "pod/c/cpu.weight", "100\n");
        write(r, "pod/c/memory.current", "10000\n");
        write(
            r,
            "pod/c/memory.stat",
            "anon 4000\nfile 5000\nfile_mapped 100\ninactive_file 3000\nkernel 77\npgfault 9\npgmajfault 1\n",
        );
        write(r, "pod/c/memory.max", "max\n");
        write(
            r,
            "pod/c/memory.events",
            "low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n",
        );
        write(
            r,
            "pod/c/io.stat",
            "8:0 rbytes=512 wbytes=1024 rios=1 wios=2 dbytes=0 dios=0\n",
        );
        write(
            r,
            "pod/c/cpu.pressure",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=3000000\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=1000000\n",
        );
        write(r, "pod/c/cgroup.procs", "");
        write(r, "pod/c/pids.max", "max\n");
        let s = samples(
            &CgroupDir {
                root: r,
                path: "/pod/c",
                version: 2,
            },
            &r.join("proc"),
        );
        assert_eq!(
            value(&s, "container_cpu_usage_seconds_total", &["total"]),
            Some(3)
        );
        assert_eq!(value(&s, "container_cpu_user_seconds_total", &[]), Some(2));
        assert_eq!(
            value(&s, "container_cpu_system_seconds_total", &[]),
            Some(1)
        );
        assert_eq!(
            value(&s, "container_cpu_cfs_throttled_periods_total", &[]),
            Some(4)
        );
        assert_eq!(
            value(&s, "container_cpu_cfs_throttled_seconds_total", &[]),
            Some(2)
        );
        assert_eq!(value(&s, "container_spec_cpu_quota", &[]), Some(20000));
        assert_eq!(value(&s, "container_spec_cpu_period", &[]), Some(100000));
        assert_eq!(
            value(&s, "container_spec_cpu_shares", &[]),
            Some(2 + 99 * 262_142 / 9_999)
        );
        assert_eq!(
            value(&s, "container_memory_working_set_bytes", &[]),
            Some(7000)
        );
        assert_eq!(value(&s, "container_memory_rss", &[]), Some(4000));
        assert_eq!(value(&s, "container_memory_cache", &[]), Some(5000));
        assert_eq!(value(&s, "container_memory_kernel_usage", &[]), Some(77));
        assert_eq!(value(&s, "container_memory_failcnt", &[]), Some(2));
        assert_eq!(value(&s, "container_oom_events_total", &[]), Some(1));
        assert_eq!(value(&s, "container_spec_memory_limit_bytes", &[]), Some(0));
        assert_eq!(
            value(
                &s,
                "container_memory_failures_total",
                &["pgfault", "hierarchy"]
            ),
            Some(9)
        );
        assert_eq!(
            value(
                &s,
                "container_fs_writes_bytes_total",
                &[&device_name("8:0")]
            ),
            Some(1024)
        );
        assert_eq!(
            value(&s, "container_pressure_cpu_waiting_seconds_total", &[]),
            Some(3)
        );
        assert_eq!(
            value(&s, "container_pressure_cpu_stalled_seconds_total", &[]),
            Some(1)
        );
        assert_eq!(value(&s, "container_threads_max", &[]), Some(0));
        assert_eq!(value(&s, "container_processes", &[]), Some(0));
    }

    #[test]
    fn v1_files_give_the_cadvisor_samples() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        write(r, "cpuacct/pod/c/cpuacct.usage", "2500000000\n");
        write(r, "cpuacct/pod/c/cpuacct.stat", "user 150\nsystem 120\n");
        write(
            r,
            "cpu/pod/c/cpu.stat",
            "nr_periods 5\nnr_throttled 1\nthrottled_time 3000000000\n",
        );
        write(r, "cpu/pod/c/cpu.cfs_quota_us", "-1\n");
        write(r, "cpu/pod/c/cpu.cfs_period_us", "100000\n");
        write(r, "cpu/pod/c/cpu.shares", "1024\n");
        write(r, "memory/pod/c/memory.usage_in_bytes", "8000\n");
        write(
            r,
            "memory/pod/c/memory.stat",
            "pgfault 3\ntotal_rss 2000\ntotal_cache 1000\ntotal_inactive_file 500\ntotal_pgfault 7\n",
        );
        write(r, "memory/pod/c/memory.limit_in_bytes", "67108864\n");
        write(
            r,
            "memory/pod/c/memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
        );
        write(
            r,
            "blkio/pod/c/blkio.throttle.io_service_bytes_recursive",
            "8:0 Read 4096\n8:0 Write 8192\nTotal 12288\n",
        );
        write(r, "pids/pod/c/cgroup.procs", "1\n");
        write(r, "pids/pod/c/tasks", "1\n2\n");
        write(r, "pids/pod/c/pids.max", "100\n");
        write(r, "proc/1/limits", "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 4096                 files\n");
        std::fs::create_dir_all(r.join("proc/1/fd")).unwrap();
        std::os::unix::fs::symlink("/dev/null", r.join("proc/1/fd/0")).unwrap();
        std::os::unix::fs::symlink("socket:[123]", r.join("proc/1/fd/3")).unwrap();
        let s = samples(
            &CgroupDir {
                root: r,
                path: "/pod/c",
                version: 1,
            },
            &r.join("proc"),
        );
        assert_eq!(
            value(&s, "container_cpu_usage_seconds_total", &["total"]),
            Some(2)
        );
        assert_eq!(value(&s, "container_cpu_user_seconds_total", &[]), Some(1));
        assert_eq!(
            value(&s, "container_cpu_cfs_throttled_seconds_total", &[]),
            Some(3)
        );
        assert_eq!(value(&s, "container_spec_cpu_quota", &[]), None);
        assert_eq!(value(&s, "container_spec_cpu_shares", &[]), Some(1024));
        assert_eq!(
            value(&s, "container_memory_working_set_bytes", &[]),
            Some(7500)
        );
        assert_eq!(value(&s, "container_oom_events_total", &[]), Some(3));
        assert_eq!(
            value(&s, "container_spec_memory_limit_bytes", &[]),
            Some(67108864)
        );
        assert_eq!(
            value(
                &s,
                "container_memory_failures_total",
                &["pgfault", "container"]
            ),
            Some(3)
        );
        assert_eq!(
            value(&s, "container_fs_reads_bytes_total", &[&device_name("8:0")]),
            Some(4096)
        );
        assert_eq!(value(&s, "container_threads", &[]), Some(2));
        assert_eq!(value(&s, "container_threads_max", &[]), Some(100));
        assert_eq!(value(&s, "container_file_descriptors", &[]), Some(2));
        assert_eq!(value(&s, "container_sockets", &[]), Some(1));
        assert_eq!(
            value(&s, "container_ulimits_soft", &["max_open_files"]),
            Some(1024)
        );
    }
}
