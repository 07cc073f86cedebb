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
    let controllers: Vec<&str> = available.split_whitespace().collect();
    let mut dir = mount.to_path_buf();
    for component in path.components().skip(1) {
        enable_controllers(&dir, &controllers);
        dir.push(component);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err("create cgroup", &dir)(e)),
        }
    }
    Ok(())
}

/// Enables `controllers` for the children of `dir`, best effort: failing to
/// delegate is not fatal by itself, as a limit that needs a missing
/// controller fails later naming the file it could not write. The kernel
/// refuses a whole write for one controller it cannot enable, so after a
/// refusal each controller is tried on its own.
fn enable_controllers(dir: &Path, controllers: &[&str]) {
    if controllers.is_empty() {
        return;
    }
    let file = dir.join("cgroup.subtree_control");
    let all: Vec<String> = controllers.iter().map(|c| format!("+{c}")).collect();
    if std::fs::write(&file, all.join(" ")).is_err() {
        for one in &all {
            let _ = std::fs::write(&file, one);
        }
    }
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
    let rules = super::device_rules(r.devices().as_deref().unwrap_or(&[]), devices, true);
    if rules.iter().any(|r| !r.allow) {
        attach_device_filter(dir, &super::devices_bpf::program(&rules))?;
    }
    Ok(())
}

/// Loads the device filter and attaches it to the cgroup, where it stays
/// (the kernel holds it) until the cgroup is removed.
fn attach_device_filter(
    dir: &Path,
    program: &[super::devices_bpf::Insn],
) -> Result<(), CgroupError> {
    use std::os::fd::AsFd;
    let prog = crate::sys::bpf_load_cgroup_device(program).map_err(|e| {
        CgroupError::Unsupported(
            "devices".into(),
            format!("load the eBPF device filter: {e}"),
        )
    })?;
    let cgroup = std::fs::File::open(dir).map_err(io_err("open cgroup", dir))?;
    crate::sys::bpf_attach_cgroup_device(prog.as_fd(), cgroup.as_fd()).map_err(|e| {
        CgroupError::Unsupported(
            "devices".into(),
            format!("attach the eBPF device filter to {}: {e}", dir.display()),
        )
    })
}

/// Changes the cgroup's limits to those of `r`. Every value is worked out
/// and checked before the first file is written, so a bad request changes
/// nothing.
pub(super) fn update(dir: &Path, r: &LinuxResources) -> Result<(), CgroupError> {
    for w in plan_writes(dir, r)? {
        let path = dir.join(&w.file);
        if w.skip_if_missing && !path.exists() {
            continue;
        }
        if let Err(e) = write_file(&path, &w.value) {
            // cgroupfs answers a write to a file it lacks with EACCES (it
            // cannot be created): say what is missing instead.
            if !path.exists() {
                return Err(CgroupError::Unsupported(
                    w.file.clone(),
                    format!(
                        "{} does not exist: the controller is not enabled for this cgroup \
                         or the kernel lacks the feature",
                        path.display()
                    ),
                ));
            }
            return Err(e);
        }
    }
    Ok(())
}

/// One value for one interface file of the cgroup.
#[derive(Debug, PartialEq, Eq)]
struct Write {
    file: String,
    value: String,
    /// The kernel may lack the file (memory.swap.max without swap
    /// accounting) and the value asks for nothing it would enforce.
    skip_if_missing: bool,
}

fn write(file: impl Into<String>, value: impl Into<String>) -> Write {
    Write {
        file: file.into(),
        value: value.into(),
        skip_if_missing: false,
    }
}

/// A limit where a negative value means none: "max".
fn max_or(v: i64) -> String {
    if v < 0 {
        "max".to_string()
    } else {
        v.to_string()
    }
}

/// The writes that set `r`, in order; reads the cgroup's current values
/// where a field given alone is relative to another one (swap to memory,
/// a CFS period to its quota).
fn plan_writes(dir: &Path, r: &LinuxResources) -> Result<Vec<Write>, CgroupError> {
    let mut writes = Vec::new();
    if let Some(mem) = r.memory() {
        if mem.disable_oom_killer() == Some(true) {
            return Err(CgroupError::Unsupported(
                "memory".into(),
                "disableOOMKiller is not available on cgroup v2".into(),
            ));
        }
        if let Some(limit) = mem.limit() {
            writes.push(write("memory.max", max_or(limit)));
        }
        if let Some(res) = mem.reservation() {
            writes.push(write("memory.low", max_or(res)));
        }
        let current = || read_limit(&dir.join("memory.max"));
        if let Some(value) = swap_max(mem.swap(), mem.limit(), current)? {
            writes.push(Write {
                skip_if_missing: value == "max" || value == "0",
                ..write("memory.swap.max", value)
            });
        }
    }
    if let Some(cpu) = r.cpu() {
        if let Some(shares) = cpu.shares() {
            writes.push(write("cpu.weight", shares_to_weight(shares).to_string()));
        }
        if cpu.quota().is_some() || cpu.period().is_some() {
            // "QUOTA [PERIOD]": the kernel keeps the period when none is
            // written; a period alone keeps the current quota.
            let quota = match cpu.quota() {
                Some(q) => max_or(q),
                None => read_file(&dir.join("cpu.max"))
                    .ok()
                    .and_then(|t| t.split_whitespace().next().map(str::to_string))
                    .unwrap_or_else(|| "max".into()),
            };
            let value = match cpu.period() {
                Some(period) => format!("{quota} {period}"),
                None => quota,
            };
            writes.push(write("cpu.max", value));
        }
        if let Some(cpus) = cpu.cpus().as_deref().filter(|c| !c.is_empty()) {
            writes.push(write("cpuset.cpus", cpus));
        }
        if let Some(mems) = cpu.mems().as_deref().filter(|m| !m.is_empty()) {
            writes.push(write("cpuset.mems", mems));
        }
    }
    if let Some(pids) = r.pids() {
        let value = if pids.limit() > 0 {
            pids.limit().to_string()
        } else {
            "max".into()
        };
        writes.push(write("pids.max", value));
    }
    if let Some(blkio) = r.block_io() {
        // BFQ's io.bfq.weight takes blkio's 1..1000 scale as it is (and,
        // since Linux 5.4, per-device lines); otherwise io.weight (iocost),
        // converted to 1..10000, as runc does.
        let bfq = dir.join("io.bfq.weight").exists();
        let io_weight = |w: u16| 1 + (u64::from(w).saturating_sub(10)) * 9999 / 990;
        if let Some(w) = blkio.weight().filter(|w| *w != 0) {
            writes.push(if bfq {
                write("io.bfq.weight", format!("default {w}"))
            } else {
                write("io.weight", format!("default {}", io_weight(w)))
            });
        }
        for wd in blkio.weight_device().iter().flatten() {
            let Some(w) = wd.weight().filter(|w| *w != 0) else {
                continue;
            };
            let dev = format!("{}:{}", wd.major(), wd.minor());
            writes.push(if bfq {
                write("io.bfq.weight", format!("{dev} {w}"))
            } else {
                write("io.weight", format!("{dev} {}", io_weight(w)))
            });
        }
        let throttles = [
            ("rbps", blkio.throttle_read_bps_device()),
            ("wbps", blkio.throttle_write_bps_device()),
            ("riops", blkio.throttle_read_iops_device()),
            ("wiops", blkio.throttle_write_iops_device()),
        ];
        for (key, list) in throttles {
            for t in list.iter().flatten() {
                // A rate of 0 lifts the limit, as on v1; io.max takes
                // "max" for that and refuses 0.
                let rate = match t.rate() {
                    0 => "max".to_string(),
                    n => n.to_string(),
                };
                writes.push(write(
                    "io.max",
                    format!("{}:{} {key}={rate}", t.major(), t.minor()),
                ));
            }
        }
    }
    for limit in r.hugepage_limits().iter().flatten() {
        writes.push(write(
            format!("hugetlb.{}.max", limit.page_size()),
            limit.limit().to_string(),
        ));
    }
    for (key, value) in r.unified().iter().flatten() {
        if key.is_empty() || key.contains('/') || key.starts_with('.') {
            return Err(CgroupError::Unsupported(
                "unified".into(),
                format!("{key:?} is not a cgroup file name"),
            ));
        }
        writes.push(write(key.as_str(), value.as_str()));
    }
    Ok(writes)
}

/// A memory limit file's value: None for "max" or an unreadable file.
fn read_limit(path: &Path) -> Option<i64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// memory.swap.max from OCI's `swap`, which is memory+swap, as runc
/// converts it: unset stays unset, except that an unlimited memory with no
/// swap value makes swap unlimited too; -1 is "max"; otherwise the part
/// above the memory limit, which is `limit` or, when an update gives swap
/// alone, the cgroup's `current` one.
fn swap_max(
    swap: Option<i64>,
    limit: Option<i64>,
    current: impl FnOnce() -> Option<i64>,
) -> Result<Option<String>, CgroupError> {
    let bad = |why: String| CgroupError::Unsupported("memory.swap".into(), why);
    let swap = match (swap, limit) {
        (None, Some(-1)) | (Some(-1), _) => return Ok(Some("max".into())),
        (None, _) => return Ok(None),
        (Some(s), _) if s < 0 => return Err(bad(format!("invalid memory+swap limit {s}"))),
        (Some(s), _) => s,
    };
    let memory = match limit {
        Some(l) if l >= 0 => l,
        Some(-1) => return Err(bad("cannot limit swap of an unlimited memory".into())),
        Some(l) => return Err(bad(format!("invalid memory limit {l}"))),
        None => current().ok_or_else(|| {
            bad("cannot limit swap without a memory limit (memory.max is max)".into())
        })?,
    };
    if swap < memory {
        return Err(bad(format!(
            "memory+swap limit {swap} is below the memory limit {memory}"
        )));
    }
    Ok(Some((swap - memory).to_string()))
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
        "blkio": io_stats(&std::fs::read_to_string(dir.join("io.stat")).unwrap_or_default()),
    })
}

/// io.stat (`8:0 rbytes=1 wbytes=2 rios=3 wios=4 ...` per device) in the
/// shape of v1's blkio numbers: bytes and operations, read and write, per
/// device (the ops are lowercase, as Docker reports them on v2).
fn io_stats(text: &str) -> Value {
    let mut bytes = Vec::new();
    let mut ios = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let Some((major, minor)) = fields.next().and_then(|d| d.split_once(':')) else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse::<u64>(), minor.parse::<u64>()) else {
            continue;
        };
        let stat: Map<String, Value> = fields
            .filter_map(|f| f.split_once('='))
            .filter_map(|(k, v)| Some((k.to_string(), json!(v.parse::<u64>().ok()?))))
            .collect();
        let get = |k: &str| stat.get(k).and_then(Value::as_u64).unwrap_or(0);
        for (op, b, n) in [("read", "rbytes", "rios"), ("write", "wbytes", "wios")] {
            bytes.push(json!({"major": major, "minor": minor, "op": op, "value": get(b)}));
            ios.push(json!({"major": major, "minor": minor, "op": op, "value": get(n)}));
        }
    }
    json!({"ioServiceBytesRecursive": bytes, "ioServicedRecursive": ios})
}

#[cfg(test)]
mod tests {
    use super::*;

    use oci_spec::runtime::LinuxResources;

    fn resources(v: serde_json::Value) -> LinuxResources {
        serde_json::from_value(v).unwrap()
    }

    fn values(dir: &Path, r: serde_json::Value) -> Vec<(String, String)> {
        plan_writes(dir, &resources(r))
            .unwrap()
            .into_iter()
            .map(|w| (w.file, w.value))
            .collect()
    }

    fn pair(file: &str, value: &str) -> (String, String) {
        (file.to_string(), value.to_string())
    }

    #[test]
    fn io_stat_becomes_blkio_numbers() {
        let v = io_stats(
            "8:0 rbytes=1024 wbytes=2048 rios=3 wios=4 dbytes=0 dios=0\n\
             253:1 rbytes=5 wbytes=6 rios=7 wios=8\nbogus\n",
        );
        let sum = |key: &str, op: &str| -> u64 {
            v[key]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["op"] == op)
                .map(|e| e["value"].as_u64().unwrap())
                .sum()
        };
        assert_eq!(sum("ioServiceBytesRecursive", "read"), 1029);
        assert_eq!(sum("ioServiceBytesRecursive", "write"), 2054);
        assert_eq!(sum("ioServicedRecursive", "read"), 10);
        assert_eq!(sum("ioServicedRecursive", "write"), 12);
        assert_eq!(v["ioServiceBytesRecursive"][2]["major"], 253);
        assert_eq!(io_stats("")["ioServiceBytesRecursive"], json!([]));
    }

    #[test]
    fn swap_is_memory_plus_swap() {
        let none = || None;
        let mib = 1 << 20;
        assert_eq!(swap_max(None, Some(64 * mib), none).unwrap(), None);
        assert_eq!(swap_max(None, Some(-1), none).unwrap().unwrap(), "max");
        assert_eq!(swap_max(Some(-1), Some(64), none).unwrap().unwrap(), "max");
        assert_eq!(
            swap_max(Some(128 * mib), Some(64 * mib), none)
                .unwrap()
                .unwrap(),
            (64 * mib).to_string()
        );
        assert_eq!(swap_max(Some(64), Some(64), none).unwrap().unwrap(), "0");
        // swap alone (update): measured from the current memory.max
        assert_eq!(
            swap_max(Some(96), None, || Some(32)).unwrap().unwrap(),
            "64"
        );
        assert!(swap_max(Some(96), None, none).is_err());
        assert!(swap_max(Some(32), Some(64), none).is_err());
        assert!(swap_max(Some(96), Some(-1), none).is_err());
        assert!(swap_max(Some(-2), Some(64), none).is_err());
    }

    #[test]
    fn cpu_max_keeps_what_is_not_given() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cpu.max"), "50000 100000\n").unwrap();
        assert_eq!(
            values(dir.path(), serde_json::json!({"cpu": {"period": 200000}})),
            [pair("cpu.max", "50000 200000")]
        );
        assert_eq!(
            values(dir.path(), serde_json::json!({"cpu": {"quota": 20000}})),
            [pair("cpu.max", "20000")]
        );
        assert_eq!(
            values(
                dir.path(),
                serde_json::json!({"cpu": {"quota": -1, "period": 100000, "shares": 1024}})
            ),
            [pair("cpu.weight", "39"), pair("cpu.max", "max 100000")]
        );
    }

    #[test]
    fn memory_and_swap_from_the_current_limit() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("memory.max"), "33554432\n").unwrap();
        assert_eq!(
            values(
                dir.path(),
                serde_json::json!({"memory": {"swap": 100663296}})
            ),
            [pair("memory.swap.max", "67108864")]
        );
        std::fs::write(dir.path().join("memory.max"), "max\n").unwrap();
        assert!(plan_writes(
            dir.path(),
            &resources(serde_json::json!({"memory": {"swap": 100663296}}))
        )
        .is_err());
    }

    #[test]
    fn a_bad_request_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let bad = [
            serde_json::json!({"memory": {"limit": 64, "swap": 32}}),
            serde_json::json!({"pids": {"limit": 5}, "unified": {"../x": "1"}}),
            serde_json::json!({"memory": {"limit": 64, "disableOOMKiller": true}}),
        ];
        for r in bad {
            assert!(update(dir.path(), &resources(r.clone())).is_err(), "{r}");
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "{r}");
        }
    }

    #[test]
    fn swap_off_or_unlimited_needs_no_swap_accounting() {
        let plan = plan_writes(
            Path::new("/nonexistent"),
            &resources(serde_json::json!({"memory": {"limit": 64, "swap": 64}})),
        )
        .unwrap();
        assert_eq!(
            plan[1],
            Write {
                skip_if_missing: true,
                ..write("memory.swap.max", "0")
            }
        );
    }

    #[test]
    fn io_throttle_rate_zero_lifts_the_limit() {
        let r = serde_json::json!({"blockIO": {
            "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 0}],
            "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 100}],
        }});
        assert_eq!(
            values(Path::new("/nonexistent"), r),
            [
                pair("io.max", "8:0 rbps=max"),
                pair("io.max", "8:0 wiops=100")
            ]
        );
    }

    #[test]
    fn io_weights_go_to_bfq_when_it_is_there() {
        let r = serde_json::json!({"blockIO": {
            "weight": 500,
            "weightDevice": [{"major": 8, "minor": 0, "weight": 100}, {"major": 8, "minor": 1, "weight": 0}],
        }});
        assert_eq!(
            values(Path::new("/nonexistent"), r.clone()),
            [
                pair("io.weight", "default 4950"),
                pair("io.weight", "8:0 910")
            ]
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("io.bfq.weight"), "default 100\n").unwrap();
        assert_eq!(
            values(dir.path(), r),
            [
                pair("io.bfq.weight", "default 500"),
                pair("io.bfq.weight", "8:0 100")
            ]
        );
    }

    #[test]
    fn weights() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }
}
