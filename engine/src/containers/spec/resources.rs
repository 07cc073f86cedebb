//! The container's cgroup limits (`linux.resources` but its device rules):
//! memory, CPU, pids and block I/O, checked with dockerd's rules and words.

use serde_json::{json, Map, Value};

use super::{Host, SpecError};
use crate::types::HostConfig;

/// Docker's smallest memory limit and reservation: 6 MiB.
pub const MIN_MEMORY: i64 = 6 * 1024 * 1024;

/// `/dev/shm`'s size when `ShmSize` is 0: 64 MiB.
pub const DEFAULT_SHM_SIZE: i64 = 64 * 1024 * 1024;

/// The period NanoCpus is turned into a quota of: 100ms.
pub const NANO_CPUS_PERIOD: i64 = 100_000;

/// Refuses the resource values dockerd refuses, with its messages.
pub fn check(hc: &HostConfig, host: &dyn Host) -> Result<(), SpecError> {
    let swap = effective_swap(hc);
    if hc.memory != 0 && hc.memory < MIN_MEMORY {
        return Err(SpecError::MemoryTooLow);
    }
    if hc.memory > 0 && swap > 0 && swap < hc.memory {
        return Err(SpecError::SwapBelowMemory);
    }
    if hc.memory == 0 && swap > 0 {
        return Err(SpecError::SwapWithoutMemory);
    }
    if let Some(s) = hc.memory_swappiness.filter(|s| *s != -1) {
        if !(0..=100).contains(&s) {
            return Err(SpecError::Swappiness(s));
        }
    }
    if hc.memory_reservation > 0 && hc.memory_reservation < MIN_MEMORY {
        return Err(SpecError::MemoryReservationTooLow);
    }
    if hc.memory > 0 && hc.memory_reservation > 0 && hc.memory < hc.memory_reservation {
        return Err(SpecError::MemoryBelowReservation);
    }
    if hc.nano_cpus > 0 && hc.cpu_period > 0 {
        return Err(SpecError::NanoCpusConflict("Period"));
    }
    if hc.nano_cpus > 0 && hc.cpu_quota > 0 {
        return Err(SpecError::NanoCpusConflict("Quota"));
    }
    let cpus = host.cpus();
    let count = cpus.len() as u32;
    if hc.nano_cpus < 0 || hc.nano_cpus > i64::from(count) * 1_000_000_000 {
        return Err(SpecError::NanoCpusRange(count));
    }
    if hc.cpu_shares < 0 {
        return Err(SpecError::CpuShares);
    }
    if hc.cpu_period != 0 && !(1000..=1_000_000).contains(&hc.cpu_period) {
        return Err(SpecError::CpuPeriod);
    }
    if hc.cpu_quota > 0 && hc.cpu_quota < 1000 {
        return Err(SpecError::CpuQuota);
    }
    check_cpuset("cpus", &hc.cpuset_cpus, Some(&cpus))?;
    check_cpuset("mems", &hc.cpuset_mems, None)?;
    if hc.blkio_weight > 0 && !(10..=1000).contains(&hc.blkio_weight) {
        return Err(SpecError::BlkioWeight);
    }
    if hc.io_maximum_bandwidth != 0 || hc.io_maximum_iops != 0 {
        return Err(SpecError::IoMaximum);
    }
    if !(-1000..=1000).contains(&hc.oom_score_adj) {
        return Err(SpecError::OomScoreAdj(hc.oom_score_adj));
    }
    if hc.shm_size < 0 {
        return Err(SpecError::ShmSize);
    }
    Ok(())
}

/// MemorySwap as dockerd stores it: twice Memory when only Memory is set.
pub fn effective_swap(hc: &HostConfig) -> i64 {
    if hc.memory > 0 && hc.memory_swap == 0 {
        hc.memory * 2
    } else {
        hc.memory_swap
    }
}

/// A cpuset list ("0-2,4"): its format, and for CPUs that each one is
/// one the engine may use.
fn check_cpuset(
    what: &'static str,
    list: &str,
    available: Option<&[u32]>,
) -> Result<(), SpecError> {
    if list.is_empty() {
        return Ok(());
    }
    let requested = parse_list(list).ok_or_else(|| SpecError::CpusetFormat {
        what,
        value: list.to_string(),
    })?;
    match available {
        Some(cpus) if requested.iter().any(|c| !cpus.contains(c)) => {
            Err(SpecError::CpusetUnavailable {
                requested: list.to_string(),
                available: format_list(cpus),
            })
        }
        _ => Ok(()),
    }
}

/// "0-2,4" -> [0, 1, 2, 4].
fn parse_list(list: &str) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for part in list.split(',') {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let (lo, hi): (u32, u32) = (lo.parse().ok()?, hi.parse().ok()?);
        if hi < lo || hi - lo > 1 << 16 {
            return None;
        }
        out.extend(lo..=hi);
    }
    Some(out)
}

/// [0, 1, 2, 4] -> "0-2,4".
fn format_list(cpus: &[u32]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        let mut end = start;
        while i + 1 < cpus.len() && cpus[i + 1] == end + 1 {
            i += 1;
            end = cpus[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

/// `linux.resources` without `devices`: only what is set, as the runtime
/// leaves the rest to the kernel's defaults.
pub fn resources(hc: &HostConfig) -> Map<String, Value> {
    let mut res = Map::new();

    let mut memory = Map::new();
    if hc.memory > 0 {
        memory.insert("limit".into(), json!(hc.memory));
    }
    if hc.memory_reservation > 0 {
        memory.insert("reservation".into(), json!(hc.memory_reservation));
    }
    let swap = effective_swap(hc);
    if swap > 0 {
        memory.insert("swap".into(), json!(swap));
    }
    if let Some(s) = hc.memory_swappiness.filter(|s| *s >= 0) {
        memory.insert("swappiness".into(), json!(s));
    }
    memory.insert(
        "disableOOMKiller".into(),
        json!(hc.oom_kill_disable.unwrap_or(false)),
    );
    res.insert("memory".into(), Value::Object(memory));

    let mut cpu = Map::new();
    if hc.cpu_shares > 0 {
        cpu.insert("shares".into(), json!(hc.cpu_shares));
    }
    if hc.nano_cpus > 0 {
        cpu.insert("period".into(), json!(NANO_CPUS_PERIOD));
        cpu.insert(
            "quota".into(),
            json!(hc.nano_cpus * NANO_CPUS_PERIOD / 1_000_000_000),
        );
    }
    if hc.cpu_period != 0 {
        cpu.insert("period".into(), json!(hc.cpu_period));
    }
    if hc.cpu_quota != 0 {
        cpu.insert("quota".into(), json!(hc.cpu_quota));
    }
    if hc.cpu_realtime_period != 0 {
        cpu.insert("realtimePeriod".into(), json!(hc.cpu_realtime_period));
    }
    if hc.cpu_realtime_runtime != 0 {
        cpu.insert("realtimeRuntime".into(), json!(hc.cpu_realtime_runtime));
    }
    if !hc.cpuset_cpus.is_empty() {
        cpu.insert("cpus".into(), json!(hc.cpuset_cpus));
    }
    if !hc.cpuset_mems.is_empty() {
        cpu.insert("mems".into(), json!(hc.cpuset_mems));
    }
    if !cpu.is_empty() {
        res.insert("cpu".into(), Value::Object(cpu));
    }

    if let Some(limit) = hc.pids_limit {
        // Docker takes 0 and below as "no limit".
        res.insert(
            "pids".into(),
            json!({"limit": if limit > 0 { limit } else { -1 }}),
        );
    }
    if hc.blkio_weight > 0 {
        res.insert("blockIO".into(), json!({"weight": hc.blkio_weight}));
    }
    res
}

#[cfg(test)]
mod tests {
    use super::super::tests::{Case, FakeHost};
    use super::*;

    fn hc(f: impl FnOnce(&mut HostConfig)) -> HostConfig {
        let mut h = HostConfig::default();
        f(&mut h);
        h
    }

    #[test]
    fn out_of_range_values_get_dockers_errors() {
        let host = FakeHost::default(); // 4 CPUs
        let table: &[Case] = &[
            (|h| h.memory = 1 << 20, "Minimum memory limit allowed is 6MB"),
            (
                |h| h.memory_reservation = 1 << 20,
                "Minimum memory reservation allowed is 6MB",
            ),
            (
                |h| {
                    h.memory = 64 << 20;
                    h.memory_swap = 32 << 20;
                },
                "Minimum memoryswap limit should be larger than memory limit, see usage",
            ),
            (
                |h| h.memory_swap = 64 << 20,
                "You should always set the Memory limit when using Memoryswap limit, see usage",
            ),
            (
                |h| {
                    h.memory = 64 << 20;
                    h.memory_reservation = 128 << 20;
                },
                "Minimum memory limit can not be less than memory reservation limit, see usage",
            ),
            (
                |h| h.memory_swappiness = Some(101),
                "Invalid value: 101, valid memory swappiness range is 0-100",
            ),
            (
                |h| h.nano_cpus = 5_000_000_000,
                "Range of CPUs is from 0.01 to 4.00, as there are only 4 CPUs available",
            ),
            (
                |h| {
                    h.nano_cpus = 1_000_000_000;
                    h.cpu_quota = 50_000;
                },
                "Conflicting options: Nano CPUs and CPU Quota cannot both be set",
            ),
            (
                |h| {
                    h.nano_cpus = 1_000_000_000;
                    h.cpu_period = 50_000;
                },
                "Conflicting options: Nano CPUs and CPU Period cannot both be set",
            ),
            (|h| h.cpu_shares = -1, "shares: invalid argument"),
            (
                |h| h.cpu_period = 500,
                "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)",
            ),
            (|h| h.cpu_quota = 10, "CPU cfs quota can not be less than 1ms (i.e. 1000)"),
            (
                |h| h.cpuset_cpus = "0-x".into(),
                "Invalid value 0-x for cpuset cpus: invalid format: 0-x",
            ),
            (
                |h| h.cpuset_cpus = "1,7".into(),
                "Requested CPUs are not available - requested 1,7, available: 0-3",
            ),
            (|h| h.blkio_weight = 5, "Range of blkio weight is from 10 to 1000"),
            (
                |h| h.oom_score_adj = 1001,
                "Invalid value 1001, range for oom score adj is [-1000, 1000]",
            ),
            (|h| h.shm_size = -1, "SHM size can not be less than 0"),
        ];
        for (set, want) in table {
            let err = check(&hc(set), &host).unwrap_err();
            assert_eq!(err.to_string(), *want);
        }
        assert!(check(&HostConfig::default(), &host).is_ok());
        assert!(check(&hc(|h| h.cpuset_cpus = "0-1,3".into()), &host).is_ok());
        assert_eq!(format_list(&[0, 1, 2, 4, 6, 7]), "0-2,4,6-7");
        assert!(check(&hc(|h| h.memory_swappiness = Some(-1)), &host).is_ok());
    }

    #[test]
    fn limits_become_the_specs_resources() {
        let res = resources(&hc(|h| {
            h.memory = 64 << 20;
            h.memory_reservation = 32 << 20;
            h.nano_cpus = 1_500_000_000;
            h.cpu_shares = 512;
            h.cpuset_cpus = "0-1".into();
            h.pids_limit = Some(100);
            h.blkio_weight = 300;
            h.oom_kill_disable = Some(true);
        }));
        assert_eq!(
            Value::Object(res),
            json!({
                "memory": {"limit": 67108864, "reservation": 33554432, "swap": 134217728,
                           "disableOOMKiller": true},
                "cpu": {"shares": 512, "period": 100000, "quota": 150000, "cpus": "0-1"},
                "pids": {"limit": 100},
                "blockIO": {"weight": 300},
            })
        );
        let res = resources(&hc(|h| {
            h.memory = 64 << 20;
            h.memory_swap = -1;
            h.cpu_period = 50_000;
            h.cpu_quota = 25_000;
            h.pids_limit = Some(0);
        }));
        assert_eq!(
            res["memory"],
            json!({"limit": 67108864, "disableOOMKiller": false})
        );
        assert_eq!(res["cpu"], json!({"period": 50000, "quota": 25000}));
        assert_eq!(res["pids"], json!({"limit": -1}));
        let none = resources(&HostConfig::default());
        assert_eq!(
            Value::Object(none),
            json!({"memory": {"disableOOMKiller": false}})
        );
    }
}
