//! cgroup v1: one directory per mounted hierarchy.

use std::path::Path;
use std::time::{Duration, Instant};

use oci_spec::runtime::{
    LinuxBlockIo, LinuxDevice, LinuxDeviceCgroup, LinuxMemory, LinuxResources,
};
use serde_json::{json, Map, Value};

use super::{read_file, read_u64, write_file, Cgroup, CgroupError};

fn need(cg: &Cgroup, controller: &str) -> Result<std::path::PathBuf, CgroupError> {
    cg.v1_dir(controller).ok_or_else(|| {
        CgroupError::Unsupported(
            controller.to_string(),
            "the config sets it but the controller is not mounted on this host".into(),
        )
    })
}

/// A new cpuset cgroup starts with empty `cpus` and `mems`, and no process
/// can join it until they are set: copy them down from the nearest parent.
pub(super) fn fill_cpuset_ancestors(dir: &Path) -> Result<(), CgroupError> {
    let mut chain = Vec::new();
    let mut cur = dir;
    while let Some(parent) = cur.parent() {
        if !parent.join("cpuset.cpus").exists() {
            break;
        }
        chain.push(cur.to_path_buf());
        cur = parent;
    }
    for d in chain.iter().rev() {
        let parent = d.parent().unwrap_or(d);
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let own = read_file(&d.join(file))?;
            if own.trim().is_empty() {
                let inherited = read_file(&parent.join(file))?;
                write_file(&d.join(file), inherited.trim())?;
            }
        }
    }
    Ok(())
}

pub(super) fn apply(
    cg: &Cgroup,
    r: &LinuxResources,
    devices: &[LinuxDevice],
) -> Result<(), CgroupError> {
    set_limits(cg, r)?;
    if let Some(dir) = cg.v1_dir("devices") {
        apply_devices(&dir, r.devices().as_deref().unwrap_or(&[]), devices, true)?;
    }
    Ok(())
}

pub(super) fn update(cg: &Cgroup, r: &LinuxResources) -> Result<(), CgroupError> {
    set_limits(cg, r)?;
    if let (Some(dir), Some(rules)) = (cg.v1_dir("devices"), r.devices()) {
        if !rules.is_empty() {
            apply_devices(&dir, rules, &[], true)?;
        }
    }
    Ok(())
}

fn set_limits(cg: &Cgroup, r: &LinuxResources) -> Result<(), CgroupError> {
    if let Some(mem) = r.memory() {
        set_memory(&need(cg, "memory")?, mem)?;
    }
    if let Some(cpu) = r.cpu() {
        if cpu.shares().is_some()
            || cpu.quota().is_some()
            || cpu.period().is_some()
            || cpu.realtime_period().is_some()
            || cpu.realtime_runtime().is_some()
        {
            let dir = need(cg, "cpu")?;
            if let Some(shares) = cpu.shares() {
                write_file(&dir.join("cpu.shares"), &shares.to_string())?;
            }
            if let Some(period) = cpu.period() {
                // Lowering the period below the current quota is refused until
                // the quota is lowered, and the other way round: try both orders.
                if write_file(&dir.join("cpu.cfs_period_us"), &period.to_string()).is_err() {
                    if let Some(quota) = cpu.quota() {
                        write_file(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                    }
                    write_file(&dir.join("cpu.cfs_period_us"), &period.to_string())?;
                }
            }
            if let Some(quota) = cpu.quota() {
                write_file(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
            }
            if let Some(p) = cpu.realtime_period() {
                write_file(&dir.join("cpu.rt_period_us"), &p.to_string())?;
            }
            if let Some(rt) = cpu.realtime_runtime() {
                write_file(&dir.join("cpu.rt_runtime_us"), &rt.to_string())?;
            }
        }
        if cpu.cpus().is_some() || cpu.mems().is_some() {
            let dir = need(cg, "cpuset")?;
            if let Some(cpus) = cpu.cpus().as_deref().filter(|c| !c.is_empty()) {
                write_file(&dir.join("cpuset.cpus"), cpus)?;
            }
            if let Some(mems) = cpu.mems().as_deref().filter(|m| !m.is_empty()) {
                write_file(&dir.join("cpuset.mems"), mems)?;
            }
        }
    }
    if let Some(pids) = r.pids() {
        let dir = need(cg, "pids")?;
        let limit = pids.limit();
        let value = if limit > 0 {
            limit.to_string()
        } else {
            "max".into()
        };
        write_file(&dir.join("pids.max"), &value)?;
    }
    if let Some(blkio) = r.block_io() {
        let dir = need(cg, "blkio")?;
        for (file, value) in blkio_writes(&dir, blkio)? {
            write_file(&dir.join(file), &value)?;
        }
    }
    for limit in r.hugepage_limits().iter().flatten() {
        let dir = need(cg, "hugetlb")?;
        write_file(
            &dir.join(format!("hugetlb.{}.limit_in_bytes", limit.page_size())),
            &limit.limit().to_string(),
        )?;
    }
    if let Some(net) = r.network() {
        if let Some(classid) = net.class_id() {
            write_file(
                &need(cg, "net_cls")?.join("net_cls.classid"),
                &classid.to_string(),
            )?;
        }
        for prio in net.priorities().iter().flatten() {
            write_file(
                &need(cg, "net_prio")?.join("net_prio.ifpriomap"),
                &format!("{} {}", prio.name(), prio.priority()),
            )?;
        }
    }
    if r.unified().as_ref().is_some_and(|u| !u.is_empty()) {
        return Err(CgroupError::Unsupported(
            "unified".into(),
            "resources.unified needs cgroup v2, and this host uses v1".into(),
        ));
    }
    Ok(())
}

/// The writes that set `blkio` in the blkio cgroup `dir`, as runc makes
/// them: weights go to CFQ's `blkio.weight*` files where the kernel has
/// them, else to BFQ's `blkio.bfq.weight*` (CFQ is gone since Linux 5.0);
/// leaf weights exist only with CFQ; a weight of 0 is unset. A file the
/// kernel lacks is an error naming it, before anything is written.
fn blkio_writes(dir: &Path, blkio: &LinuxBlockIo) -> Result<Vec<(String, String)>, CgroupError> {
    let (weight_file, device_file) = if dir.join("blkio.weight").exists() {
        ("blkio.weight", "blkio.weight_device")
    } else {
        ("blkio.bfq.weight", "blkio.bfq.weight_device")
    };
    let mut writes: Vec<(&str, String)> = Vec::new();
    if let Some(w) = blkio.weight().filter(|w| *w != 0) {
        writes.push((weight_file, w.to_string()));
    }
    if let Some(w) = blkio.leaf_weight().filter(|w| *w != 0) {
        writes.push(("blkio.leaf_weight", w.to_string()));
    }
    for wd in blkio.weight_device().iter().flatten() {
        let dev = format!("{}:{}", wd.major(), wd.minor());
        if let Some(w) = wd.weight().filter(|w| *w != 0) {
            writes.push((device_file, format!("{dev} {w}")));
        }
        if let Some(w) = wd.leaf_weight().filter(|w| *w != 0) {
            writes.push(("blkio.leaf_weight_device", format!("{dev} {w}")));
        }
    }
    let throttles = [
        (
            "blkio.throttle.read_bps_device",
            blkio.throttle_read_bps_device(),
        ),
        (
            "blkio.throttle.write_bps_device",
            blkio.throttle_write_bps_device(),
        ),
        (
            "blkio.throttle.read_iops_device",
            blkio.throttle_read_iops_device(),
        ),
        (
            "blkio.throttle.write_iops_device",
            blkio.throttle_write_iops_device(),
        ),
    ];
    for (file, list) in throttles {
        for t in list.iter().flatten() {
            writes.push((file, format!("{}:{} {}", t.major(), t.minor(), t.rate())));
        }
    }
    for (file, _) in &writes {
        if !dir.join(file).exists() {
            let why = match *file {
                "blkio.bfq.weight" | "blkio.bfq.weight_device" => {
                    "neither CFQ nor BFQ offers block I/O weights on this kernel"
                }
                "blkio.leaf_weight" | "blkio.leaf_weight_device" => {
                    "leaf weights need the CFQ I/O scheduler, which this kernel lacks"
                }
                _ => "this kernel has no block I/O throttling",
            };
            return Err(CgroupError::Unsupported(
                "blkio".into(),
                format!("{} does not exist: {why}", dir.join(file).display()),
            ));
        }
    }
    Ok(writes
        .into_iter()
        .map(|(f, v)| (f.to_string(), v))
        .collect())
}

fn set_memory(dir: &Path, mem: &LinuxMemory) -> Result<(), CgroupError> {
    let limit_file = dir.join("memory.limit_in_bytes");
    let swap_file = dir.join("memory.memsw.limit_in_bytes");
    if mem.swap().is_some() && !swap_file.exists() {
        return Err(CgroupError::Unsupported(
            "memory".into(),
            "swap limit set but the kernel has no swap accounting".into(),
        ));
    }
    match (mem.limit(), mem.swap()) {
        (Some(limit), Some(swap)) => {
            // memsw must stay >= limit at every step: raise memsw first when
            // growing, lower the limit first when shrinking.
            let current_swap = read_u64(&swap_file).unwrap_or(u64::MAX);
            let grows = swap == -1 || (swap as u64) > current_swap;
            if grows {
                write_file(&swap_file, &swap.to_string())?;
                write_file(&limit_file, &limit.to_string())?;
            } else {
                write_file(&limit_file, &limit.to_string())?;
                write_file(&swap_file, &swap.to_string())?;
            }
        }
        (Some(limit), None) => {
            if write_file(&limit_file, &limit.to_string()).is_err() && swap_file.exists() {
                // A limit above the current memsw limit must raise it too.
                write_file(&swap_file, &limit.to_string())?;
                write_file(&limit_file, &limit.to_string())?;
            }
        }
        (None, Some(swap)) => write_file(&swap_file, &swap.to_string())?,
        (None, None) => {}
    }
    if let Some(res) = mem.reservation() {
        write_file(&dir.join("memory.soft_limit_in_bytes"), &res.to_string())?;
    }
    if let Some(k) = mem.kernel() {
        // Deprecated by the kernel; runc ignores it too when unsupported.
        let _ = write_file(&dir.join("memory.kmem.limit_in_bytes"), &k.to_string());
    }
    if let Some(s) = mem.swappiness() {
        if s > 100 {
            return Err(CgroupError::Unsupported(
                "memory".into(),
                format!("swappiness {s} is above 100"),
            ));
        }
        write_file(&dir.join("memory.swappiness"), &s.to_string())?;
    }
    if mem.disable_oom_killer() == Some(true) {
        write_file(&dir.join("memory.oom_control"), "1")?;
    }
    Ok(())
}

fn rule_line(typ: char, major: i64, minor: i64, access: &str) -> String {
    let num = |n: i64| {
        if n < 0 {
            "*".to_string()
        } else {
            n.to_string()
        }
    };
    if typ == 'a' {
        return "a".into();
    }
    format!("{typ} {}:{} {access}", num(major), num(minor))
}

/// Writes device rules in order (see `device_rules`).
fn apply_devices(
    dir: &Path,
    rules: &[LinuxDeviceCgroup],
    devices: &[LinuxDevice],
    defaults: bool,
) -> Result<(), CgroupError> {
    let lines = super::device_rules(rules, devices, defaults)
        .into_iter()
        .map(|r| (r.allow, rule_line(r.typ, r.major, r.minor, &r.access)));
    for (allow, line) in lines {
        let file = if allow {
            "devices.allow"
        } else {
            "devices.deny"
        };
        write_file(&dir.join(file), &line)?;
    }
    Ok(())
}

pub(super) fn set_frozen(cg: &Cgroup, frozen: bool) -> Result<(), CgroupError> {
    let dir = need(cg, "freezer")?;
    let file = dir.join("freezer.state");
    let want = if frozen { "FROZEN" } else { "THAWED" };
    let start = Instant::now();
    loop {
        write_file(&file, want)?;
        let state = read_file(&file)?;
        if state.trim() == want {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(5) {
            return Err(CgroupError::FreezeTimeout {
                path: file,
                state: state.trim().to_string(),
                waited: start.elapsed(),
            });
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

pub(super) fn is_frozen(cg: &Cgroup) -> bool {
    cg.v1_dir("freezer")
        .and_then(|d| std::fs::read_to_string(d.join("freezer.state")).ok())
        .is_some_and(|s| s.trim() != "THAWED")
}

pub(super) fn oom_kills(cg: &Cgroup) -> u64 {
    cg.v1_dir("memory")
        .and_then(|d| std::fs::read_to_string(d.join("memory.oom_control")).ok())
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|v| v.trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

fn kv_map(text: &str) -> Map<String, Value> {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(k, v)| Some((k.to_string(), json!(v.trim().parse::<u64>().ok()?))))
        .collect()
}

fn blkio_entries(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (maj, min) = f.first()?.split_once(':')?;
            Some(json!({
                "major": maj.parse::<u64>().ok()?,
                "minor": min.parse::<u64>().ok()?,
                "op": f.get(1)?,
                "value": f.get(2)?.parse::<u64>().ok()?,
            }))
        })
        .collect()
}

pub(super) fn stats(cg: &Cgroup) -> Value {
    let mut data = Map::new();
    if let Some(d) = cg.v1_dir("cpuacct") {
        let percpu: Vec<u64> = std::fs::read_to_string(d.join("cpuacct.usage_percpu"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        // cpuacct.stat counts USER_HZ (100 Hz) ticks; report nanoseconds.
        let stat = kv_map(&std::fs::read_to_string(d.join("cpuacct.stat")).unwrap_or_default());
        let ticks = |k: &str| stat.get(k).and_then(Value::as_u64).unwrap_or(0) * 10_000_000;
        let throttling = cg
            .v1_dir("cpu")
            .map(|c| kv_map(&std::fs::read_to_string(c.join("cpu.stat")).unwrap_or_default()))
            .unwrap_or_default();
        data.insert(
            "cpu".into(),
            json!({
                "usage": {
                    "total": read_u64(&d.join("cpuacct.usage")).unwrap_or(0),
                    "percpu": percpu,
                    "kernel": ticks("system"),
                    "user": ticks("user"),
                },
                "throttling": {
                    "periods": throttling.get("nr_periods").cloned().unwrap_or(json!(0)),
                    "throttledPeriods": throttling.get("nr_throttled").cloned().unwrap_or(json!(0)),
                    "throttledTime": throttling.get("throttled_time").cloned().unwrap_or(json!(0)),
                },
            }),
        );
    }
    if let Some(d) = cg.v1_dir("memory") {
        let entry = |prefix: &str| {
            json!({
                "usage": read_u64(&d.join(format!("{prefix}.usage_in_bytes"))).unwrap_or(0),
                "max": read_u64(&d.join(format!("{prefix}.max_usage_in_bytes"))).unwrap_or(0),
                "failcnt": read_u64(&d.join(format!("{prefix}.failcnt"))).unwrap_or(0),
                "limit": read_u64(&d.join(format!("{prefix}.limit_in_bytes"))).unwrap_or(0),
            })
        };
        let raw = kv_map(&std::fs::read_to_string(d.join("memory.stat")).unwrap_or_default());
        data.insert(
            "memory".into(),
            json!({
                "cache": raw.get("cache").cloned().unwrap_or(json!(0)),
                "usage": entry("memory"),
                "swap": entry("memory.memsw"),
                "kernel": entry("memory.kmem"),
                "raw": raw,
            }),
        );
    }
    if let Some(d) = cg.v1_dir("pids") {
        data.insert(
            "pids".into(),
            json!({
                "current": read_u64(&d.join("pids.current")).unwrap_or(0),
                "limit": read_u64(&d.join("pids.max")).unwrap_or(0),
            }),
        );
    }
    if let Some(d) = cg.v1_dir("blkio") {
        data.insert(
            "blkio".into(),
            json!({
                "ioServiceBytesRecursive": blkio_entries(&d.join("blkio.throttle.io_service_bytes_recursive")),
                "ioServicedRecursive": blkio_entries(&d.join("blkio.throttle.io_serviced_recursive")),
            }),
        );
    }
    Value::Object(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blkio_goes_to_the_files_the_kernel_has() {
        let blkio: LinuxBlockIo = serde_json::from_value(serde_json::json!({
            "weight": 300,
            "weightDevice": [{"major": 8, "minor": 0, "weight": 200}, {"major": 8, "minor": 16, "weight": 0}],
            "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
            "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 50}]
        }))
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let touch = |f: &str| std::fs::write(dir.path().join(f), "").unwrap();
        for f in [
            "blkio.bfq.weight",
            "blkio.bfq.weight_device",
            "blkio.throttle.read_bps_device",
            "blkio.throttle.write_iops_device",
        ] {
            touch(f);
        }
        let pair = |f: &str, v: &str| (f.to_string(), v.to_string());
        assert_eq!(
            blkio_writes(dir.path(), &blkio).unwrap(),
            [
                pair("blkio.bfq.weight", "300"),
                pair("blkio.bfq.weight_device", "8:0 200"),
                pair("blkio.throttle.read_bps_device", "8:0 1048576"),
                pair("blkio.throttle.write_iops_device", "8:0 50"),
            ]
        );
        // With CFQ's files, CFQ's names.
        touch("blkio.weight");
        touch("blkio.weight_device");
        let writes = blkio_writes(dir.path(), &blkio).unwrap();
        assert_eq!(writes[0], pair("blkio.weight", "300"));
        assert_eq!(writes[1], pair("blkio.weight_device", "8:0 200"));
        // A leaf weight without CFQ's leaf files names the missing file.
        let leaf: LinuxBlockIo =
            serde_json::from_value(serde_json::json!({"leafWeight": 500})).unwrap();
        let err = blkio_writes(dir.path(), &leaf).unwrap_err().to_string();
        assert!(err.contains("blkio.leaf_weight does not exist"), "{err}");
    }

    #[test]
    fn device_lines() {
        assert_eq!(rule_line('a', -1, -1, "rwm"), "a");
        assert_eq!(rule_line('c', 1, 3, "rwm"), "c 1:3 rwm");
        assert_eq!(rule_line('c', 136, -1, "rwm"), "c 136:* rwm");
        assert_eq!(rule_line('b', -1, -1, "m"), "b *:* m");
    }
}
