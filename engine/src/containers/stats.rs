//! `docker stats` and `docker top`: Docker's stats JSON from the task's
//! cgroup metrics (v1 or v2, as the runtime reports them), and the host's
//! `ps` output narrowed to the container's processes.

use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{json, Value};

use super::record::format_time;
use super::{Container, ContainerError, Result};
use crate::Engine;

/// One stats sample, in Docker's shape, without `precpu_stats`.
pub async fn sample(engine: &Engine, c: &Arc<Container>) -> Result<Value> {
    let record = c.record();
    let name = format!("/{}", record.name);
    if !record.state.status.is_running() {
        // Docker answers zeros for a container that does not run.
        return Ok(json!({
            "read": format_time(None), "preread": format_time(None),
            "pids_stats": {}, "blkio_stats": empty_blkio(), "num_procs": 0,
            "storage_stats": {}, "cpu_stats": {"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0}, "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}},
            "precpu_stats": {"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0}, "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}},
            "memory_stats": {}, "name": name, "id": c.id,
        }));
    }
    let stats = engine
        .supervisor
        .stats(&c.id)
        .await
        .map_err(ContainerError::backend(format!("stats of {}", c.id)))?;
    let raw: Value = serde_json::from_slice(&stats.raw).unwrap_or(Value::Null);
    let data = raw.get("data").cloned().unwrap_or(raw);
    let cpu = &data["cpu"];
    let mem = &data["memory"];
    let mut cpu_usage = json!({
        "total_usage": stats.cpu_usage_ns,
        "usage_in_kernelmode": cpu["usage"]["kernel"].as_u64().unwrap_or(stats.cpu_system_ns),
        "usage_in_usermode": cpu["usage"]["user"].as_u64().unwrap_or(stats.cpu_user_ns),
    });
    if let Some(percpu) = cpu["usage"]["percpu"].as_array().filter(|p| !p.is_empty()) {
        cpu_usage["percpu_usage"] = json!(percpu);
    }
    let memory_stats = json!({
        "usage": stats.memory_usage,
        "max_usage": stats.memory_max_usage,
        "stats": mem.get("raw").cloned().unwrap_or(json!({})),
        "limit": if stats.memory_limit == 0 || stats.memory_limit >= 1 << 62 { host_memory() } else { stats.memory_limit },
    });
    let blkio = &data["blkio"];
    let blkio_stats = if blkio.is_object() {
        let entries = |key: &str| -> Value {
            match blkio[key].as_array() {
                Some(list) => Value::Array(
                    list.iter()
                        .map(|e| json!({"major": e["major"], "minor": e["minor"], "op": e["op"], "value": e["value"]}))
                        .collect(),
                ),
                None => Value::Null,
            }
        };
        let mut b = empty_blkio();
        b["io_service_bytes_recursive"] = entries("ioServiceBytesRecursive");
        b["io_serviced_recursive"] = entries("ioServicedRecursive");
        b
    } else {
        empty_blkio()
    };
    Ok(json!({
        "read": format_time(Some(SystemTime::now())),
        "preread": format_time(None),
        "pids_stats": {"current": stats.pids_current, "limit": if stats.pids_limit == 0 { Value::Null } else { json!(stats.pids_limit) }},
        "blkio_stats": blkio_stats,
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": {
            "cpu_usage": cpu_usage,
            "system_cpu_usage": system_cpu_usage(),
            "online_cpus": online_cpus(),
            "throttling_data": {
                "periods": cpu["throttling"]["periods"].as_u64().unwrap_or(0),
                "throttled_periods": cpu["throttling"]["throttledPeriods"].as_u64().unwrap_or(0),
                "throttled_time": cpu["throttling"]["throttledTime"].as_u64().unwrap_or(0),
            },
        },
        "memory_stats": memory_stats,
        "name": name,
        "id": c.id,
    }))
}

fn empty_blkio() -> Value {
    json!({
        "io_service_bytes_recursive": null, "io_serviced_recursive": null,
        "io_queue_recursive": null, "io_service_time_recursive": null,
        "io_wait_time_recursive": null, "io_merged_recursive": null,
        "io_time_recursive": null, "sectors_recursive": null,
    })
}

/// The host's CPU time in nanoseconds, from /proc/stat (Docker's
/// `system_cpu_usage`).
fn system_cpu_usage() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = stat
        .lines()
        .next()
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .take(7)
                .filter_map(|v| v.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    // USER_HZ is 100 on Linux.
    ticks * 10_000_000
}

fn online_cpus() -> u64 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1)
}

fn host_memory() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// `docker top`: `ps` run on the host with the client's arguments, rows of
/// the container's processes only.
pub async fn top(engine: &Engine, c: &Arc<Container>, ps_args: &str) -> Result<Value> {
    if !c.status().is_running() {
        return Err(ContainerError::NotRunning(c.id.clone()));
    }
    let pids = engine
        .supervisor
        .list_pids(&c.id)
        .await
        .map_err(ContainerError::backend(format!(
            "list the processes of {}",
            c.id
        )))?;
    let args: Vec<&str> = if ps_args.is_empty() {
        vec!["-ef"]
    } else {
        ps_args.split_whitespace().collect()
    };
    let out = tokio::process::Command::new("ps")
        .args(&args)
        .output()
        .await
        .map_err(|source| ContainerError::Io {
            what: "run",
            path: "ps".into(),
            source,
        })?;
    if !out.status.success() {
        return Err(ContainerError::InvalidConfig(format!(
            "ps: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    parse_ps(&String::from_utf8_lossy(&out.stdout), &pids)
}

/// Docker's parsing of `ps` output: the header's columns, the PID column,
/// and the last column taking the rest of the line.
pub fn parse_ps(output: &str, pids: &[u32]) -> Result<Value> {
    let mut lines = output.lines();
    let header = lines.next().unwrap_or("");
    let titles: Vec<&str> = header.split_whitespace().collect();
    let pid_col = titles.iter().position(|t| *t == "PID").ok_or_else(|| {
        ContainerError::InvalidConfig("Couldn't find PID field in ps output".into())
    })?;
    let mut processes = Vec::new();
    for line in lines {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(pid) = fields.get(pid_col).and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !pids.contains(&pid) {
            continue;
        }
        let n = titles.len();
        let mut row: Vec<String> = fields
            .iter()
            .take(n.saturating_sub(1))
            .map(|s| s.to_string())
            .collect();
        row.push(
            fields
                .get(n.saturating_sub(1)..)
                .map(|rest| rest.join(" "))
                .unwrap_or_default(),
        );
        processes.push(row);
    }
    Ok(json!({ "Titles": titles, "Processes": processes }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ps_rows_of_the_container_only() {
        let out = "UID PID PPID C STIME TTY TIME CMD\nroot 1 0 0 10:00 ? 00:00:01 /sbin/init\nroot 42 1 0 10:01 ? 00:00:00 sleep 100\n";
        let v = parse_ps(out, &[42]).unwrap();
        assert_eq!(v["Titles"][1], "PID");
        assert_eq!(v["Processes"].as_array().unwrap().len(), 1);
        assert_eq!(v["Processes"][0][7], "sleep 100");
    }
}
