//! `ps`: the container list, with docker's columns, truncation and
//! `--format` fields (ID, Image, Command, CreatedAt, RunningFor, Ports,
//! State, Status, Size, Names, Labels, Mounts, Networks, LocalVolumes).

use clap::Args;
use hyper::Method;
use serde_json::{json, Value};

use crate::client::{query, Client};
use crate::common::{filters_json, print_rows};
use crate::output::{ellipsis, go_quote, short_id, units};

#[derive(Args)]
pub struct PsArgs {
    /// Show all containers (default shows just running)
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only display container IDs
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Display total file sizes
    #[arg(short = 's', long)]
    pub size: bool,
    /// Filter output based on conditions provided
    #[arg(short = 'f', long = "filter")]
    pub filter: Vec<String>,
    /// Format output using a custom template
    #[arg(long)]
    pub format: Option<String>,
    /// Show n last created containers (includes all states)
    #[arg(short = 'n', long = "last", default_value_t = -1)]
    pub last: i64,
    /// Show the latest created container (includes all states)
    #[arg(short = 'l', long)]
    pub latest: bool,
    /// Don't truncate output
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
}

pub const HEADERS: [(&str, &str); 15] = [
    ("ID", "CONTAINER ID"),
    ("Image", "IMAGE"),
    ("Command", "COMMAND"),
    ("CreatedAt", "CREATED AT"),
    ("RunningFor", "CREATED"),
    ("Ports", "PORTS"),
    ("State", "STATE"),
    ("Status", "STATUS"),
    ("Size", "SIZE"),
    ("Names", "NAMES"),
    ("Labels", "LABELS"),
    ("Mounts", "MOUNTS"),
    ("Networks", "NETWORKS"),
    ("LocalVolumes", "LOCAL VOLUMES"),
    ("Platform", "PLATFORM"),
];

const DEFAULT_TABLE: &str =
    "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}";

pub async fn ps(c: &Client, a: PsArgs) -> anyhow::Result<()> {
    let mut q = Vec::new();
    let limit = if a.latest { 1 } else { a.last };
    if a.all || limit > 0 {
        q.push(("all", "1".to_string()));
    }
    if limit > 0 {
        q.push(("limit", limit.to_string()));
    }
    let wants_size = a.size
        || a.format
            .as_deref()
            .is_some_and(|f| f.contains(".Size") || f.contains("json"));
    if wants_size {
        q.push(("size", "1".into()));
    }
    if let Some(f) = filters_json(&a.filter)? {
        q.push(("filters", f));
    }
    let list: Vec<Value> = c
        .json(Method::GET, &format!("/containers/json{}", query(&q)), None)
        .await?;
    let trunc = !a.no_trunc;
    let rows: Vec<Value> = list.iter().map(|s| row(s, trunc)).collect();
    let format = if a.quiet {
        Some("{{.ID}}".to_string())
    } else if a.format.is_none() && a.size {
        Some(format!("{DEFAULT_TABLE}\t{{{{.Size}}}}"))
    } else {
        a.format.clone()
    };
    print_rows(format.as_deref(), DEFAULT_TABLE, &rows, &HEADERS)
}

/// One container summary as the fields `--format` reads.
pub fn row(s: &Value, trunc: bool) -> Value {
    let str_of = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let id = str_of(&s["Id"]);
    let mut names: Vec<String> = s["Names"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|n| n.strip_prefix('/').unwrap_or(n).to_string())
        .collect();
    if trunc {
        // Links show as other containers' names with a '/' in them.
        names.retain(|n| !n.contains('/'));
        names.truncate(1);
    }
    let command = str_of(&s["Command"]);
    let command = go_quote(&if trunc {
        ellipsis(&command, 20)
    } else {
        command
    });
    let mut image = str_of(&s["Image"]);
    if trunc {
        if image.starts_with("sha256:") {
            image = short_id(&image);
        } else if let Some((name, _)) = image.split_once('@') {
            image = name.to_string();
        }
    }
    let created = s["Created"].as_i64().unwrap_or(0);
    let labels: Vec<String> = s["Labels"]
        .as_object()
        .map(|m| {
            let mut v: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect();
            v.sort();
            v
        })
        .unwrap_or_default();
    let mounts: Vec<String> = s["Mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let name = m["Name"].as_str().filter(|n| !n.is_empty());
            let name = name.map_or_else(|| str_of(&m["Source"]), str::to_string);
            if trunc {
                ellipsis(&name, 15)
            } else {
                name
            }
        })
        .collect();
    let local_volumes = s["Mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["Driver"] == "local")
        .count();
    let mut networks: Vec<String> = s["NetworkSettings"]["Networks"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    networks.sort();
    json!({
        "ID": if trunc { short_id(&id) } else { id },
        "Image": image,
        "Command": command,
        "CreatedAt": units::go_time_string(created),
        "RunningFor": units::ago(created as f64),
        "Ports": ports(&s["Ports"]),
        "State": str_of(&s["State"]),
        "Status": str_of(&s["Status"]),
        "Size": size(s),
        "Names": names.join(","),
        "Labels": labels.join(","),
        "Mounts": mounts.join(","),
        "Networks": networks.join(","),
        "LocalVolumes": local_volumes.to_string(),
        "Platform": null,
    })
}

fn size(s: &Value) -> String {
    let rw = s["SizeRw"].as_f64().unwrap_or(0.0);
    let root = s["SizeRootFs"].as_f64().unwrap_or(0.0);
    let mut out = units::human_size_precision(rw, 3);
    if root > 0.0 {
        out.push_str(&format!(
            " (virtual {})",
            units::human_size_precision(root, 3)
        ));
    }
    out
}

/// Docker's port column: "0.0.0.0:8080->80/tcp, 443/tcp".
pub fn ports(ports: &Value) -> String {
    let mut out: Vec<String> = Vec::new();
    for p in ports.as_array().into_iter().flatten() {
        let private = p["PrivatePort"].as_u64().unwrap_or(0);
        let kind = p["Type"].as_str().unwrap_or("tcp");
        match p["PublicPort"].as_u64() {
            Some(public) if public > 0 => {
                let ip = p["IP"].as_str().unwrap_or("");
                let ip = if ip.contains(':') {
                    format!("[{ip}]")
                } else {
                    ip.to_string()
                };
                out.push(format!("{ip}:{public}->{private}/{kind}"));
            }
            _ => out.push(format!("{private}/{kind}")),
        }
    }
    out.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_becomes_docker_columns() {
        let s = json!({
            "Id": "0123456789abcdef0123", "Names": ["/web", "/other/link"],
            "Image": "busybox", "Command": "sh -c 'echo hello; sleep 100'",
            "Created": 0, "Ports": [{"PrivatePort": 80, "PublicPort": 8080, "IP": "0.0.0.0", "Type": "tcp"}],
            "State": "running", "Status": "Up 2 seconds", "SizeRw": 0, "SizeRootFs": 4_260_000,
            "Labels": {"b": "2", "a": "1"}, "NetworkSettings": {"Networks": {"none": {}}}
        });
        let r = row(&s, true);
        assert_eq!(r["ID"], "0123456789ab");
        assert_eq!(r["Names"], "web");
        assert_eq!(r["Command"], "\"sh -c 'echo hello; …\"");
        assert_eq!(r["Ports"], "0.0.0.0:8080->80/tcp");
        assert_eq!(r["Size"], "0B (virtual 4.26MB)");
        assert_eq!(r["Labels"], "a=1,b=2");
        assert_eq!(r["Networks"], "none");
        assert_eq!(r["CreatedAt"], "1970-01-01 00:00:00 +0000 UTC");
        let full = row(&s, false);
        assert_eq!(full["Names"], "web,other/link");
    }
}
