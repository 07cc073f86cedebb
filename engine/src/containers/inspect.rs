//! What clients read about containers: `GET /containers/{id}/json` and the
//! summaries of `GET /containers/json` with its filters. Every field Docker
//! writes is present.
//!
//! `NetworkSettings` come from `crate::network::settings`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::record::{format_time, ContainerRecord, Status};
use super::{Container, ContainerError, Result};
use crate::Engine;

/// `GET /containers/{id}/json`.
pub fn inspect(engine: &Engine, c: &Container, exec_ids: Vec<String>) -> Value {
    let r = c.record();
    let s = &r.state;
    let dir = engine.paths.container_dir(&r.id);
    let log_path = if r.host_config.log_config.kind == "none" {
        String::new()
    } else {
        engine.paths.container_log(&r.id).display().to_string()
    };
    let mut v = json!({
        "Id": r.id,
        "Created": format_time(Some(r.created)),
        "Path": r.path,
        "Args": r.args,
        "State": {
            "Status": s.status.name(),
            "Running": s.status.is_running(),
            "Paused": s.status == Status::Paused,
            "Restarting": s.status == Status::Restarting,
            "OOMKilled": s.oom_killed,
            "Dead": s.status == Status::Dead,
            "Pid": s.pid,
            "ExitCode": s.exit_code,
            "Error": s.error,
            "StartedAt": format_time(s.started_at),
            "FinishedAt": format_time(s.finished_at),
        },
        "Image": r.image_id,
        "ResolvConfPath": dir.join("resolv.conf"),
        "HostnamePath": dir.join("hostname"),
        "HostsPath": dir.join("hosts"),
        "LogPath": log_path,
        "Name": format!("/{}", r.name),
        "RestartCount": r.restart_count,
        "Driver": "overlayfs",
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": if exec_ids.is_empty() { Value::Null } else { json!(exec_ids) },
        "HostConfig": r.host_config,
        "GraphDriver": { "Data": null, "Name": "overlayfs" },
        "Mounts": mounts(&r),
        "Config": r.config,
        "NetworkSettings": crate::network::settings::container_json(engine, &r),
    });
    if let Some(h) = &s.health {
        v["State"]["Health"] = h.to_json();
    }
    v
}

/// Inspect's `Mounts`: the binds, `--mount`s and volumes the container has.
fn mounts(r: &ContainerRecord) -> Value {
    crate::volumes::mounts::inspect(r)
}

/// `SizeRw` (what the container wrote) and `SizeRootFs` (that and its
/// image), in bytes; 0 for what cannot be measured.
pub async fn sizes(engine: &Engine, id: &str) -> (i64, i64) {
    let rw = engine.supervisor.snapshot_usage(id).await.unwrap_or(0);
    let image = match engine.containers.get(id) {
        Ok(c) => {
            let image_ref = c.record().image_ref;
            engine
                .supervisor
                .get_image(&image_ref)
                .await
                .map(|i| i.size)
                .unwrap_or(0)
        }
        Err(_) => 0,
    };
    (rw, rw + image)
}

/// Go's `units.HumanDuration`, as `docker ps` shows ages.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let plural = |n: u64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    if secs < 1 {
        "Less than a second".into()
    } else if secs == 1 {
        "1 second".into()
    } else if secs < 60 {
        format!("{secs} seconds")
    } else if secs / 60 == 1 {
        "About a minute".into()
    } else if secs / 60 < 60 {
        format!("{} minutes", secs / 60)
    } else if (secs as f64 / 3600.0).round() as u64 == 1 {
        "About an hour".into()
    } else if secs / 3600 < 48 {
        format!("{} hours", secs / 3600)
    } else if secs / 3600 < 24 * 7 * 2 {
        format!("{} days", secs / 86400)
    } else if secs / 3600 < 24 * 30 * 2 {
        format!("{} weeks", secs / 86400 / 7)
    } else if secs / 3600 < 24 * 365 * 2 {
        format!("{} months", secs / 86400 / 30)
    } else {
        plural(secs / 86400 / 365, "year")
    }
}

fn since(t: Option<SystemTime>) -> String {
    let d = t
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or_default();
    human_duration(d)
}

/// The `Status` column: "Up 5 seconds", "Exited (0) 2 minutes ago".
pub fn status_text(r: &ContainerRecord) -> String {
    let s = &r.state;
    match s.status {
        Status::Running => match &s.health {
            Some(h) => format!("Up {} ({})", since(s.started_at), h.ps_text()),
            None => format!("Up {}", since(s.started_at)),
        },
        Status::Paused => format!("Up {} (Paused)", since(s.started_at)),
        Status::Restarting => format!("Restarting ({}) {} ago", s.exit_code, since(s.finished_at)),
        Status::Removing => "Removal In Progress".into(),
        Status::Dead => "Dead".into(),
        Status::Created => "Created".into(),
        Status::Exited if s.finished_at.is_none() => "Created".into(),
        Status::Exited => format!("Exited ({}) {} ago", s.exit_code, since(s.finished_at)),
    }
}

/// One entry of `GET /containers/json`.
pub fn summary(engine: &Engine, r: &ContainerRecord) -> Value {
    let mut command = r.path.clone();
    for a in &r.args {
        command.push(' ');
        command.push_str(a);
    }
    let created = r
        .created
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    json!({
        "Id": r.id,
        "Names": [format!("/{}", r.name)],
        "Image": r.image,
        "ImageID": r.image_id,
        "Command": command,
        "Created": created,
        "Ports": crate::network::settings::ports_list(engine, r),
        "Labels": r.config.labels.clone().unwrap_or_default(),
        "State": r.state.status.name(),
        "Status": status_text(r),
        "HostConfig": { "NetworkMode": r.host_config.network_mode },
        "NetworkSettings": { "Networks": crate::network::settings::networks_json(engine, r) },
        "Mounts": mounts(r),
    })
}

/// `filters` as Docker sends them: `{"key": {"value": true}}`, or
/// `{"key": ["value"]}` from old clients.
pub type Filters = BTreeMap<String, BTreeSet<String>>;

pub fn parse_filters(value: Option<Value>) -> Result<Filters> {
    let mut out = Filters::new();
    let Some(Value::Object(map)) = value else {
        return Ok(out);
    };
    for (key, v) in map {
        let values: BTreeSet<String> = match v {
            Value::Object(m) => m
                .into_iter()
                .filter(|(_, on)| on != &Value::Bool(false))
                .map(|(k, _)| k)
                .collect(),
            Value::Array(a) => a
                .into_iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect(),
            Value::String(s) => BTreeSet::from([s]),
            _ => {
                return Err(ContainerError::InvalidConfig(format!(
                    "invalid filter '{key}'"
                )))
            }
        };
        out.insert(key, values);
    }
    Ok(out)
}

/// Options of `GET /containers/json`.
#[derive(Default)]
pub struct ListOptions {
    pub all: bool,
    pub limit: Option<usize>,
    pub filters: Filters,
}

fn label_matches(r: &ContainerRecord, want: &str) -> bool {
    let labels = r.config.labels.clone().unwrap_or_default();
    match want.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
        None => labels.contains_key(want),
    }
}

/// The containers the options select, newest first.
pub fn list(engine: &Engine, opts: &ListOptions) -> Result<Vec<Value>> {
    const KNOWN: [&str; 13] = [
        "id", "name", "label", "status", "ancestor", "exited", "before", "since", "health",
        "network", "volume", "publish", "expose",
    ];
    for key in opts.filters.keys() {
        if !KNOWN.contains(&key.as_str()) {
            return Err(ContainerError::InvalidConfig(format!(
                "invalid filter '{key}'"
            )));
        }
    }
    for status in opts.filters.get("status").into_iter().flatten() {
        if Status::parse(status).is_none() {
            return Err(ContainerError::InvalidConfig(format!(
                "invalid filter 'status={status}'"
            )));
        }
    }
    for value in opts.filters.get("health").into_iter().flatten() {
        super::health::check_filter(value)?;
    }
    let all = engine.containers.all();
    let created_of = |key: &str| -> Result<SystemTime> {
        engine.containers.get(key).map(|c| c.record().created)
    };
    let before = opts
        .filters
        .get("before")
        .and_then(|s| s.iter().next().cloned());
    let since = opts
        .filters
        .get("since")
        .and_then(|s| s.iter().next().cloned());
    let before = before.map(|k| created_of(&k)).transpose()?;
    let since = since.map(|k| created_of(&k)).transpose()?;
    let f = &opts.filters;
    let any = |key: &str, pred: &dyn Fn(&str) -> bool| -> bool {
        f.get(key).is_none_or(|vals| vals.iter().any(|v| pred(v)))
    };
    let mut out = Vec::new();
    for c in all {
        let r = c.record();
        let show_all = opts.all || f.contains_key("status") || f.contains_key("exited");
        if !show_all && !r.state.status.is_running() {
            continue;
        }
        let ok = any("id", &|v| r.id.starts_with(v))
            && any("name", &|v| r.name.contains(v.trim_start_matches('/')))
            && f.get("label")
                .is_none_or(|vals| vals.iter().all(|v| label_matches(&r, v)))
            && any("status", &|v| r.state.status.name() == v)
            && any("ancestor", &|v| {
                r.image == v
                    || r.image_ref == v
                    || r.image_id == v
                    || r.image_id
                        .trim_start_matches("sha256:")
                        .starts_with(v.trim_start_matches("sha256:"))
                    || r.image_ref.starts_with(&format!("docker.io/library/{v}"))
            })
            && any("health", &|v| super::health::filter_value(&r) == v)
            && any("network", &|v| {
                crate::network::settings::on_network(engine, &r, v)
            })
            && any("exited", &|v| {
                r.state.status == Status::Exited && v.parse::<i64>().ok() == Some(r.state.exit_code)
            })
            && before.is_none_or(|b| r.created < b)
            && since.is_none_or(|s| r.created > s);
        if ok {
            out.push(summary(engine, &r));
        }
        if opts.limit.is_some_and(|l| l > 0 && out.len() >= l) {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_docker_prints_them() {
        let s = Duration::from_secs;
        assert_eq!(human_duration(s(0)), "Less than a second");
        assert_eq!(human_duration(s(1)), "1 second");
        assert_eq!(human_duration(s(59)), "59 seconds");
        assert_eq!(human_duration(s(60)), "About a minute");
        assert_eq!(human_duration(s(150)), "2 minutes");
        assert_eq!(human_duration(s(3600)), "About an hour");
        assert_eq!(human_duration(s(3 * 3600)), "3 hours");
        assert_eq!(human_duration(s(3 * 86400)), "3 days");
    }

    #[test]
    fn filters_both_forms() {
        let f = parse_filters(Some(json!({"status": {"running": true}, "name": ["web"]}))).unwrap();
        assert!(f["status"].contains("running"));
        assert!(f["name"].contains("web"));
    }
}
