//! `stats`: each container's CPU, memory, network, block I/O and pids as
//! docker computes them from the daemon's stats JSON; a table redrawn
//! every second, or one sample with `--no-stream`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use clap::Args;
use http_body_util::BodyExt;
use hyper::Method;
use serde_json::{json, Value};

use crate::client::{enc, Client};
use crate::common::print_rows;
use crate::output::{short_id, units};

#[derive(Args)]
pub struct StatsArgs {
    /// Show all containers (default shows just running)
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Disable streaming stats and only pull the first result
    #[arg(long = "no-stream")]
    pub no_stream: bool,
    /// Do not truncate output
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Format output using a custom template
    #[arg(long)]
    pub format: Option<String>,
    pub containers: Vec<String>,
}

const DEFAULT_TABLE: &str = "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}";

const HEADERS: [(&str, &str); 10] = [
    ("ID", "CONTAINER ID"),
    ("Container", "CONTAINER"),
    ("Name", "NAME"),
    ("CPUPerc", "CPU %"),
    ("MemUsage", "MEM USAGE / LIMIT"),
    ("MemPerc", "MEM %"),
    ("NetIO", "NET I/O"),
    ("BlockIO", "BLOCK I/O"),
    ("PIDs", "PIDS"),
    ("Mem", "MEM"),
];

pub async fn stats(c: &Client, a: StatsArgs) -> anyhow::Result<()> {
    let targets = if a.containers.is_empty() {
        let list: Vec<Value> = c
            .json(
                Method::GET,
                &format!("/containers/json{}", if a.all { "?all=1" } else { "" }),
                None,
            )
            .await?;
        list.iter()
            .filter_map(|s| s["Id"].as_str().map(str::to_string))
            .collect()
    } else {
        a.containers.clone()
    };
    if a.no_stream {
        // One sample each, asked for side by side.
        let samples = futures_util::future::join_all(targets.iter().map(|t| async move {
            c.json::<Value>(
                Method::GET,
                &format!("/containers/{}/stats?stream=0", enc(t)),
                None,
            )
            .await
        }))
        .await;
        let mut rows = Vec::new();
        for (t, sample) in targets.iter().zip(samples) {
            rows.push(row(t, &sample?, !a.no_trunc));
        }
        return print_rows(a.format.as_deref(), DEFAULT_TABLE, &rows, &HEADERS);
    }
    // Live: a stream per container keeps its latest sample; the table is
    // redrawn from the top of the screen, as docker does.
    let latest: Arc<Mutex<HashMap<String, Value>>> = Arc::default();
    for t in &targets {
        let (latest, c, t) = (latest.clone(), c.clone(), t.clone());
        tokio::spawn(async move {
            let path = format!("/containers/{}/stats?stream=1", enc(&t));
            let Ok(resp) = c.send(Method::GET, &path, bytes::Bytes::new(), &[]).await else {
                return;
            };
            let mut body = resp.into_body();
            let mut pending = Vec::new();
            while let Some(Ok(frame)) = body.frame().await {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                pending.extend_from_slice(&data);
                while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=nl).collect();
                    if let Ok(v) = serde_json::from_slice::<Value>(&line) {
                        if let Ok(mut m) = latest.lock() {
                            m.insert(t.clone(), v);
                        }
                    }
                }
            }
        });
    }
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let rows: Vec<Value> = match latest.lock() {
            Ok(m) => targets
                .iter()
                .filter_map(|t| m.get(t).map(|v| row(t, v, !a.no_trunc)))
                .collect(),
            Err(_) => Vec::new(),
        };
        print!("\x1b[2J\x1b[H");
        print_rows(a.format.as_deref(), DEFAULT_TABLE, &rows, &HEADERS)?;
    }
}

/// One sample as the fields `--format` reads.
pub fn row(target: &str, v: &Value, trunc: bool) -> Value {
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    let cpu_delta = f(&v["cpu_stats"]["cpu_usage"]["total_usage"])
        - f(&v["precpu_stats"]["cpu_usage"]["total_usage"]);
    let system_delta =
        f(&v["cpu_stats"]["system_cpu_usage"]) - f(&v["precpu_stats"]["system_cpu_usage"]);
    let mut online = f(&v["cpu_stats"]["online_cpus"]);
    if online == 0.0 {
        online = v["cpu_stats"]["cpu_usage"]["percpu_usage"]
            .as_array()
            .map_or(0, Vec::len) as f64;
    }
    let cpu = if system_delta > 0.0 && cpu_delta > 0.0 {
        cpu_delta / system_delta * online * 100.0
    } else {
        0.0
    };
    let mem_stats = &v["memory_stats"];
    let usage = f(&mem_stats["usage"]);
    // cgroup v1 counts the page cache in usage; v2 "inactive_file".
    let cache = match mem_stats["stats"]["total_inactive_file"].as_f64() {
        Some(c) if c < usage => c,
        _ => match mem_stats["stats"]["inactive_file"].as_f64() {
            Some(c) if c < usage => c,
            _ => 0.0,
        },
    };
    let mem = usage - cache;
    let limit = f(&mem_stats["limit"]);
    let mem_perc = if limit > 0.0 {
        mem / limit * 100.0
    } else {
        0.0
    };
    let (mut rx, mut tx) = (0.0, 0.0);
    for n in v["networks"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
    {
        rx += f(&n["rx_bytes"]);
        tx += f(&n["tx_bytes"]);
    }
    let (mut read, mut write) = (0.0, 0.0);
    for e in v["blkio_stats"]["io_service_bytes_recursive"]
        .as_array()
        .into_iter()
        .flatten()
    {
        match e["op"].as_str().map(str::to_lowercase).as_deref() {
            Some("read") => read += f(&e["value"]),
            Some("write") => write += f(&e["value"]),
            _ => {}
        }
    }
    let id = v["id"].as_str().unwrap_or(target).to_string();
    let name = v["name"].as_str().unwrap_or("").trim_start_matches('/');
    let h3 = |x: f64| units::human_size_precision(x, 3);
    json!({
        "ID": if trunc { short_id(&id) } else { id.clone() },
        "Container": target,
        "Name": if name.is_empty() { "--" } else { name },
        "CPUPerc": format!("{cpu:.2}%"),
        "MemUsage": format!("{} / {}", units::bytes_size(mem), units::bytes_size(limit)),
        "MemPerc": format!("{mem_perc:.2}%"),
        "NetIO": format!("{} / {}", h3(rx), h3(tx)),
        "BlockIO": format!("{} / {}", h3(read), h3(write)),
        "PIDs": v["pids_stats"]["current"].as_u64().unwrap_or(0).to_string(),
        "Mem": format!("{mem_perc:.2}%"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_memory_as_docker_computes_them() {
        let v = json!({
            "id": "0123456789abcdef", "name": "/web",
            "cpu_stats": {"cpu_usage": {"total_usage": 300}, "system_cpu_usage": 2000, "online_cpus": 2},
            "precpu_stats": {"cpu_usage": {"total_usage": 100}, "system_cpu_usage": 1000},
            "memory_stats": {"usage": 3_145_728, "limit": 1_073_741_824, "stats": {"inactive_file": 1_048_576}},
            "networks": {"eth0": {"rx_bytes": 1000, "tx_bytes": 2000}},
            "blkio_stats": {"io_service_bytes_recursive": [{"op": "read", "value": 4096}, {"op": "write", "value": 0}]},
            "pids_stats": {"current": 3}
        });
        let r = row("web", &v, true);
        assert_eq!(r["ID"], "0123456789ab");
        assert_eq!(r["Name"], "web");
        assert_eq!(r["CPUPerc"], "40.00%");
        assert_eq!(r["MemUsage"], "2MiB / 1GiB");
        assert_eq!(r["MemPerc"], "0.20%");
        assert_eq!(r["NetIO"], "1kB / 2kB");
        assert_eq!(r["BlockIO"], "4.1kB / 0B");
        assert_eq!(r["PIDs"], "3");
    }
}
