//! `/containers/...`: decode, call the domain in `crate::containers`,
//! encode.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::json;
use tokio::sync::mpsc;

use super::stream::{self, Pipes};
use super::{empty, json, ApiError, Reply, Req};
use crate::containers::attach::{self, AttachOptions};
use crate::containers::inspect::{self, ListOptions};
use crate::containers::lifecycle::{self, WaitCondition};
use crate::containers::logs::{self, LogOptions};
use crate::containers::{create, stats, Container};
use crate::types::CreateRequest;
use crate::Engine;

pub async fn handle(engine: &Arc<Engine>, mut req: Req) -> Reply {
    let segments = req.segments();
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let m = req.method.clone();
    match (&m, segs.as_slice()) {
        (&Method::POST, ["containers", "create"]) => create(engine, &mut req).await,
        (&Method::GET, ["containers", "json"]) => list(engine, &req).await,
        (&Method::POST, ["containers", "prune"]) => prune(engine, &req).await,
        (&Method::GET, ["containers", id, "json"]) => {
            let c = engine.containers.get(id)?;
            let execs = engine.execs.of_container(&c.id);
            let mut v = inspect::inspect(engine, &c, execs);
            if req.query.flag("size") {
                let (rw, rootfs) = inspect::sizes(engine, &c.id).await;
                v["SizeRw"] = json!(rw);
                v["SizeRootFs"] = json!(rootfs);
            }
            json(StatusCode::OK, &v)
        }
        (&Method::POST, ["containers", id, "start"]) => {
            let c = engine.containers.get(id)?;
            lifecycle::start(engine, &c).await?;
            empty(StatusCode::NO_CONTENT)
        }
        (&Method::POST, ["containers", id, "stop"]) => {
            let c = engine.containers.get(id)?;
            let t = req.query.int("t")?;
            lifecycle::stop(engine, &c, req.query.get("signal"), t).await?;
            empty(StatusCode::NO_CONTENT)
        }
        (&Method::POST, ["containers", id, "restart"]) => {
            let c = engine.containers.get(id)?;
            let t = req.query.int("t")?;
            lifecycle::restart(engine, &c, req.query.get("signal"), t).await?;
            empty(StatusCode::NO_CONTENT)
        }
        (&Method::POST, ["containers", id, "kill"]) => {
            let c = engine.containers.get(id)?;
            lifecycle::kill(engine, &c, req.query.get("signal")).await?;
            empty(StatusCode::NO_CONTENT)
        }
        (&Method::POST, ["containers", id, "pause"]) => {
            lifecycle::pause(engine, &engine.containers.get(id)?).await?;
            empty(StatusCode::NO_CONTENT)
        }
        (&Method::POST, ["containers", id, "unpause"]) => {
            lifecycle::unpause(engine, &engine.containers.get(id)?).await?;
            empty(StatusCode::NO_CONTENT)
        }
        (&Method::POST, ["containers", id, "rename"]) => {
            let c = engine.containers.get(id)?;
            let name = req.query.get("name").unwrap_or("");
            lifecycle::rename(engine, &c, name).await?;
            empty(StatusCode::NO_CONTENT)
        }
        (&Method::POST, ["containers", id, "wait"]) => wait(engine, &req, id),
        (&Method::DELETE, ["containers", parent, alias]) if req.query.flag("link") => {
            crate::network::links::remove(engine, &format!("{parent}/{alias}")).await?;
            empty(StatusCode::NO_CONTENT)
        }
        (&Method::DELETE, ["containers", id]) if req.query.flag("link") => {
            crate::network::links::remove(engine, id).await?;
            empty(StatusCode::NO_CONTENT)
        }
        (&Method::DELETE, ["containers", id]) => {
            let c = engine.containers.get(id)?;
            lifecycle::remove(engine, &c, req.query.flag("force"), req.query.flag("v")).await?;
            engine.execs.forget_container(&c.id);
            empty(StatusCode::NO_CONTENT)
        }
        (&Method::POST, ["containers", id, "update"]) => {
            let c = engine.containers.get(id)?;
            let body: crate::containers::update::UpdateRequest = req.json().await?;
            let warnings = crate::containers::update::update(engine, &c, body).await?;
            json(StatusCode::OK, &json!({ "Warnings": warnings }))
        }
        (&Method::GET, ["containers", id, "changes"]) => {
            let c = engine.containers.get(id)?;
            json(
                StatusCode::OK,
                &crate::containers::changes::changes(engine, &c).await?,
            )
        }
        (&Method::GET, ["containers", id, "export"]) => {
            let c = engine.containers.get(id)?;
            let tar = crate::containers::changes::export(engine, &c).await?;
            let (tx, rx) = mpsc::channel(4);
            tokio::spawn(async move {
                let mut tar = tar;
                while let Some(Ok(chunk)) = futures_util::StreamExt::next(&mut tar).await {
                    if tx.send(chunk).await.is_err() {
                        break;
                    }
                }
            });
            Ok(stream::streamed("application/x-tar", rx))
        }
        (&Method::GET, ["containers", id, "top"]) => {
            let c = engine.containers.get(id)?;
            let v = stats::top(engine, &c, req.query.get("ps_args").unwrap_or("")).await?;
            json(StatusCode::OK, &v)
        }
        (&Method::GET, ["containers", id, "stats"]) => stats(engine, &req, id).await,
        (&Method::GET, ["containers", id, "logs"]) => logs(engine, &req, id),
        (&Method::POST, ["containers", id, "attach"]) => attach(engine, &mut req, id).await,
        (&Method::POST, ["containers", id, "resize"]) => {
            let c = engine.containers.get(id)?;
            let (h, w) = (
                req.query.int("h")?.unwrap_or(0),
                req.query.int("w")?.unwrap_or(0),
            );
            if !c.status().is_running() {
                return Err(crate::containers::ContainerError::NotRunning(c.id.clone()).into());
            }
            engine
                .supervisor
                .resize(&c.id, "", w.max(0) as u32, h.max(0) as u32)
                .await
                .map_err(|e| ApiError::Internal(format!("resize: {e}")))?;
            empty(StatusCode::OK)
        }
        (_, ["containers", id, "archive"]) => super::archive::handle(engine, &mut req, id).await,
        (&Method::POST, ["containers", id, "exec"]) => {
            super::exec::create(engine, &mut req, id).await
        }
        _ => Err(ApiError::NoRoute),
    }
}

async fn create(engine: &Arc<Engine>, req: &mut Req) -> Reply {
    let body: CreateRequest = req.json().await?;
    let name = req.query.get("name").map(String::from);
    let c = create::create(engine, name.as_deref(), body).await?;
    json(StatusCode::CREATED, &json!({ "Id": c.id, "Warnings": [] }))
}

async fn list(engine: &Engine, req: &Req) -> Reply {
    let filters = inspect::parse_filters(req.query.json("filters")?)?;
    let limit = req
        .query
        .int("limit")?
        .filter(|l| *l > 0)
        .map(|l| l as usize);
    let opts = ListOptions {
        all: req.query.flag("all") || limit.is_some(),
        limit,
        filters,
    };
    let mut list = inspect::list(engine, &opts)?;
    if req.query.flag("size") {
        for entry in &mut list {
            let id = entry["Id"].as_str().unwrap_or_default().to_string();
            let (rw, rootfs) = inspect::sizes(engine, &id).await;
            entry["SizeRw"] = json!(rw);
            entry["SizeRootFs"] = json!(rootfs);
        }
    }
    json(StatusCode::OK, &list)
}

fn wait(engine: &Engine, req: &Req, id: &str) -> Reply {
    let c = engine.containers.get(id)?;
    let condition = req.query.get("condition").unwrap_or("");
    let condition = WaitCondition::parse(condition)
        .ok_or_else(|| ApiError::BadRequest(format!("invalid condition: \"{condition}\"")))?;
    // Docker sends the status line at once and the body at the exit, so a
    // client knows its wait is registered before it starts the container.
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let (code, error) = lifecycle::wait(&c, condition).await;
        // dockerd reports no error for a removal (the docker CLI would
        // log one after a failed start of a --rm container).
        let error = error
            .filter(|_| condition != WaitCondition::Removed)
            .map(|m| json!({ "Message": m }));
        let body = json!({ "StatusCode": code, "Error": error });
        let _ = tx.send(Bytes::from(format!("{body}\n"))).await;
    });
    Ok(stream::streamed("application/json", rx))
}

async fn prune(engine: &Engine, req: &Req) -> Reply {
    let filters = inspect::parse_filters(req.query.json("filters")?)?;
    let until = filters
        .get("until")
        .and_then(|v| v.iter().next())
        .map(|u| parse_since(u))
        .transpose()?;
    let mut deleted = Vec::new();
    let mut reclaimed: i64 = 0;
    for c in engine.containers.all() {
        let r = c.record();
        if r.state.status.is_running() {
            continue;
        }
        if until.flatten().is_some_and(|u| r.created > u) {
            continue;
        }
        let labels_ok = filters.get("label").is_none_or(|want| {
            want.iter().all(|w| {
                let labels = r.config.labels.clone().unwrap_or_default();
                match w.split_once('=') {
                    Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
                    None => labels.contains_key(w.as_str()),
                }
            })
        });
        if !labels_ok {
            continue;
        }
        let (rw, _) = inspect::sizes(engine, &c.id).await;
        if lifecycle::remove(engine, &c, false, false).await.is_ok() {
            engine.execs.forget_container(&c.id);
            deleted.push(c.id.clone());
            reclaimed += rw.max(0);
        }
    }
    let deleted = if deleted.is_empty() {
        serde_json::Value::Null
    } else {
        json!(deleted)
    };
    json(
        StatusCode::OK,
        &json!({ "ContainersDeleted": deleted, "SpaceReclaimed": reclaimed }),
    )
}

/// Docker's `since`/`until`: Unix seconds (with a fraction), RFC 3339, or a
/// duration before now ("10m").
pub fn parse_since(s: &str) -> Result<Option<SystemTime>, ApiError> {
    if s.is_empty() {
        return Ok(None);
    }
    if let Ok(secs) = s.parse::<f64>() {
        if secs <= 0.0 {
            return Ok(None);
        }
        return Ok(Some(UNIX_EPOCH + Duration::from_secs_f64(secs)));
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(s.trim_end_matches('Z')) {
        return Ok(Some(t));
    }
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(SystemTime::now().checked_sub(d));
    }
    Err(ApiError::BadRequest(format!(
        "invalid value for time: {s:?}"
    )))
}

fn logs(engine: &Engine, req: &Req, id: &str) -> Reply {
    let c = engine.containers.get(id)?;
    let q = &req.query;
    if !q.flag("stdout") && !q.flag("stderr") {
        return Err(ApiError::BadRequest(
            "Bad parameters: you must choose at least one stream".into(),
        ));
    }
    let tail = match q.get("tail") {
        None | Some("") | Some("all") => None,
        Some(n) => Some(
            n.parse::<usize>()
                .map_err(|_| ApiError::BadRequest(format!("invalid value for tail: {n:?}")))?,
        ),
    };
    let opts = LogOptions {
        stdout: q.flag("stdout"),
        stderr: q.flag("stderr"),
        since: parse_since(q.get("since").unwrap_or(""))?,
        until: parse_since(q.get("until").unwrap_or(""))?,
        tail,
        follow: q.flag("follow"),
    };
    let timestamps = q.flag("timestamps");
    let tty = c.record().config.tty;
    let mut entries = logs::read(engine, &c, opts)?;
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        while let Some(entry) = entries.recv().await {
            let data = if timestamps {
                let mut d = format!("{} ", entry.time).into_bytes();
                d.extend_from_slice(&entry.data);
                Bytes::from(d)
            } else {
                entry.data
            };
            if tx
                .send(stream::encode_output(tty, entry.stream, data))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let content_type = if tty {
        stream::RAW_STREAM
    } else {
        stream::MULTIPLEXED_STREAM
    };
    Ok(stream::streamed(content_type, rx))
}

async fn attach(engine: &Arc<Engine>, req: &mut Req, id: &str) -> Reply {
    let c: Arc<Container> = engine.containers.get(id)?;
    let q = &req.query;
    let opts = AttachOptions {
        stdin: q.flag("stdin"),
        stdout: q.flag("stdout"),
        stderr: q.flag("stderr"),
        logs: q.flag("logs"),
        stream: q.flag("stream"),
        detach_keys: q
            .get("detachKeys")
            .filter(|k| !k.is_empty())
            .map(String::from),
    };
    let session = attach::attach(engine, &c, opts).await?;
    let pipes = Pipes {
        tty: session.tty,
        input: session.input,
        output: session.output,
        close_stdin_on_eof: session.stdin_once,
        detach_keys: session.detach_keys,
        keep: Box::new(session.guard),
        go: None,
    };
    Ok(stream::hijack(req, pipes))
}

async fn stats(engine: &Arc<Engine>, req: &Req, id: &str) -> Reply {
    let c = engine.containers.get(id)?;
    let stream_on = req
        .query
        .get("stream")
        .is_none_or(|_| req.query.flag("stream"));
    let one_shot = req.query.flag("one-shot");
    let (tx, rx) = mpsc::channel(2);
    let engine = engine.clone();
    tokio::spawn(async move {
        let mut previous: Option<serde_json::Value> = None;
        loop {
            let mut sample = match stats::sample(&engine, &c).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(container = %c.id, error = %e, "stats");
                    break;
                }
            };
            match &previous {
                Some(p) => {
                    sample["precpu_stats"] = p["cpu_stats"].clone();
                    sample["preread"] = p["read"].clone();
                }
                None => {
                    sample["precpu_stats"] = json!({"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0}, "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}});
                }
            }
            // Without a stream, Docker answers the second sample, so the
            // client can compute CPU use; one-shot answers the first.
            let send_now = stream_on || one_shot || previous.is_some();
            if send_now {
                let line = format!("{sample}\n");
                if tx.send(Bytes::from(line)).await.is_err() {
                    break;
                }
                if !stream_on {
                    break;
                }
            }
            previous = Some(sample);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    Ok(stream::streamed("application/json", rx))
}
