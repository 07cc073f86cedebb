//! cgroup v2: one directory in the unified tree.

use std::path::Path;
use std::time::{Duration, Instant};

use oci_spec::runtime::{LinuxDevice, LinuxResources};
use serde_json::{json, Map, Value};

use super::{io_err, read_file, read_u64, write_file, CgroupError};

/// Creates the cgroup and enables, in each ancestor, the controllers the
/// root offers, so the container's directory gets their interface files.
pub(super) fn create(mount: &Path, path: &Path) -> Result<(), CgroupError> {
    let available = read_file(&mount.join("cgroup.controllers")).unwrap_or_default();
    let enable: String = available
        .split_whitespace()
        .map(|c| format!("+{c} "))
        .collect();
    let mut dir = mount.to_path_buf();
    for component in path.components().skip(1) {
        if !enable.is_empty() {
            // Failing to delegate is not fatal by itself: a limit that needs
            // a missing controller fails later with the file it could not write.
            let _ = std::fs::write(dir.join("cgroup.subtree_control"), enable.trim());
        }
        dir.push(component);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err("create cgroup", &dir)(e)),
        }
    }
    Ok(())
}

/// cgroup v1 cpu.shares (2..262144) to v2 cpu.weight (1..10000), the
/// conversion runc and crun use.
pub(crate) fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142
}

pub(super) fn apply(
    dir: &Path,
    r: &LinuxResources,
    devices: &[LinuxDevice],
) -> Result<(), CgroupError> {
    update(dir, r)?;
    let restricts = r.devices().iter().flatten().any(|d| !d.allow()) || !devices.is_empty();
    if restricts {
        // Device rules on v2 need an eBPF program attached to the cgroup;
        // that is not built yet, so say so rather than pretend.
        tracing::warn!(
            cgroup = %dir.display(),
            "device access rules are not enforced on cgroup v2 yet (no eBPF device filter)"
        );
    }
    Ok(())
}

pub(super) fn update(dir: &Path, r: &LinuxResources) -> Result<(), CgroupError> {
    let max = |v: i64| {
        if v < 0 {
            "max".to_string()
        } else {
            v.to_string()
        }
    };
    if let Some(mem) = r.memory() {
        if let Some(limit) = mem.limit() {
            write_file(&dir.join("memory.max"), &max(limit))?;
        }
        if let Some(res) = mem.reservation() {
            write_file(&dir.join("memory.low"), &max(res))?;
        }
        if let Some(swap) = mem.swap() {
            // The OCI value is memory+swap; v2 limits swap alone.
            let value = match (swap, mem.limit()) {
                (-1, _) => "max".to_string(),
                (s, Some(l)) if l >= 0 => (s - l).max(0).to_string(),
                (s, _) => s.to_string(),
            };
            write_file(&dir.join("memory.swap.max"), &value)?;
        }
        if mem.disable_oom_killer() == Some(true) {
            return Err(CgroupError::Unsupported(
                "memory".into(),
                "disableOOMKiller is not available on cgroup v2".into(),
            ));
        }
    }
    if let Some(cpu) = r.cpu() {
        if let Some(shares) = cpu.shares() {
            write_file(
                &dir.join("cpu.weight"),
                &shares_to_weight(shares).to_string(),
            )?;
        }
        if cpu.quota().is_some() || cpu.period().is_some() {
            let quota = cpu.quota().map(max).unwrap_or_else(|| "max".into());
            let period = cpu.period().unwrap_or(100_000);
            write_file(&dir.join("cpu.max"), &format!("{quota} {period}"))?;
        }
        if let Some(cpus) = cpu.cpus().as_deref().filter(|c| !c.is_empty()) {
            write_file(&dir.join("cpuset.cpus"), cpus)?;
        }
        if let Some(mems) = cpu.mems().as_deref().filter(|m| !m.is_empty()) {
            write_file(&dir.join("cpuset.mems"), mems)?;
        }
    }
    if let Some(pids) = r.pids() {
        write_file(
            &dir.join("pids.max"),
            &if pids.limit() > 0 {
                pids.limit().to_string()
            } else {
                "max".into()
            },
        )?;
    }
    if let Some(blkio) = r.block_io() {
        if let Some(w) = blkio.weight() {
            // blkio weight 10..1000 to io weight 1..10000.
            let weight = 1 + (u64::from(w).saturating_sub(10)) * 9999 / 990;
            write_file(&dir.join("io.weight"), &format!("default {weight}"))?;
        }
        let throttles = [
            ("rbps", blkio.throttle_read_bps_device()),
            ("wbps", blkio.throttle_write_bps_device()),
            ("riops", blkio.throttle_read_iops_device()),
            ("wiops", blkio.throttle_write_iops_device()),
        ];
        for (key, list) in throttles {
            for t in list.iter().flatten() {
                write_file(
                    &dir.join("io.max"),
                    &format!("{}:{} {key}={}", t.major(), t.minor(), t.rate()),
                )?;
            }
        }
    }
    for limit in r.hugepage_limits().iter().flatten() {
        write_file(
            &dir.join(format!("hugetlb.{}.max", limit.page_size())),
            &limit.limit().to_string(),
        )?;
    }
    for (key, value) in r.unified().iter().flatten() {
        if key.contains('/') || key.starts_with('.') {
            return Err(CgroupError::Unsupported(
                "unified".into(),
                format!("{key:?} is not a cgroup file name"),
            ));
        }
        write_file(&dir.join(key), value)?;
    }
    Ok(())
}

pub(super) fn set_frozen(dir: &Path, frozen: bool) -> Result<(), CgroupError> {
    write_file(&dir.join("cgroup.freeze"), if frozen { "1" } else { "0" })?;
    let want = if frozen { "frozen 1" } else { "frozen 0" };
    let start = Instant::now();
    loop {
        let events = read_file(&dir.join("cgroup.events"))?;
        if events.lines().any(|l| l == want) {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(5) {
            return Err(CgroupError::FreezeTimeout {
                path: dir.to_path_buf(),
                state: events.replace('\n', " "),
                waited: start.elapsed(),
            });
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

pub(super) fn is_frozen(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.freeze")).is_ok_and(|s| s.trim() == "1")
}

fn kv(path: &Path) -> Map<String, Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(k, v)| Some((k.to_string(), json!(v.trim().parse::<u64>().ok()?))))
        .collect()
}

pub(super) fn oom_kills(dir: &Path) -> u64 {
    kv(&dir.join("memory.events"))
        .get("oom_kill")
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

pub(super) fn stats(dir: &Path) -> Value {
    let cpu = kv(&dir.join("cpu.stat"));
    let get = |m: &Map<String, Value>, k: &str| m.get(k).and_then(Value::as_u64).unwrap_or(0);
    let memstat = kv(&dir.join("memory.stat"));
    json!({
        "cpu": {
            "usage": {
                "total": get(&cpu, "usage_usec") * 1000,
                "kernel": get(&cpu, "system_usec") * 1000,
                "user": get(&cpu, "user_usec") * 1000,
            },
            "throttling": {
                "periods": get(&cpu, "nr_periods"),
                "throttledPeriods": get(&cpu, "nr_throttled"),
                "throttledTime": get(&cpu, "throttled_usec") * 1000,
            },
        },
        "memory": {
            "usage": {
                "usage": read_u64(&dir.join("memory.current")).unwrap_or(0),
                "max": read_u64(&dir.join("memory.peak")).unwrap_or(0),
                "limit": read_u64(&dir.join("memory.max")).unwrap_or(u64::MAX),
                "failcnt": kv(&dir.join("memory.events")).get("max").cloned().unwrap_or(json!(0)),
            },
            "swap": {"usage": read_u64(&dir.join("memory.swap.current")).unwrap_or(0)},
            "raw": memstat,
        },
        "pids": {
            "current": read_u64(&dir.join("pids.current")).unwrap_or(0),
            "limit": read_u64(&dir.join("pids.max")).unwrap_or(0),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }
}
