//! `/_ping`, `/version`, `/info`, `/events`, `/system/df`, `/auth`.

use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, StatusCode};
use serde_json::json;

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{full, ApiError, Reply, Req};
use crate::Engine;

pub async fn handle(engine: &Arc<Engine>, req: Req) -> Reply {
    let segments = req.segments();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (&req.method, segments.as_slice()) {
        (&Method::GET | &Method::HEAD, ["_ping"]) => ping(&req),
        (&Method::GET, ["version"]) => version(engine),
        (&Method::GET, ["info"]) => super::json(StatusCode::OK, &crate::system::info(engine).await),
        (&Method::GET, ["events"]) => events(engine, &req),
        (&Method::GET, ["system", "df"]) => df(engine).await,
        (&Method::POST, ["auth"]) => super::images::auth(engine, req).await,
        _ => Err(ApiError::NoRoute),
    }
}

fn ping(req: &Req) -> Reply {
    let body = if req.method == Method::HEAD { "" } else { "OK" };
    let mut resp = hyper::Response::new(full(body));
    *resp.status_mut() = StatusCode::OK;
    let headers = resp.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    headers.insert("pragma", HeaderValue::from_static("no-cache"));
    headers.insert("builder-version", HeaderValue::from_static("1"));
    Ok(resp)
}

fn version(_engine: &Engine) -> Reply {
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let body = json!({
        "Platform": { "Name": "berth" },
        "Components": [{
            "Name": "Engine",
            "Version": env!("CARGO_PKG_VERSION"),
            "Details": {
                "ApiVersion": crate::API_VERSION,
                "MinAPIVersion": crate::MIN_API_VERSION,
                "Os": "linux",
                "Arch": crate::go_arch(),
                "KernelVersion": kernel,
            }
        }],
        "Version": env!("CARGO_PKG_VERSION"),
        "ApiVersion": crate::API_VERSION,
        "MinAPIVersion": crate::MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": "",
        "Os": "linux",
        "Arch": crate::go_arch(),
        "KernelVersion": kernel,
        "BuildTime": "",
    });
    super::json(StatusCode::OK, &body)
}

/// `GET /events`: the kept events since `since`, then new ones until
/// `until` (for ever without it), one JSON object a line.
fn events(engine: &Arc<Engine>, req: &Req) -> Reply {
    let since = super::containers::parse_since(req.query.get("since").unwrap_or(""))?;
    let until = super::containers::parse_since(req.query.get("until").unwrap_or(""))?;
    let filters = crate::containers::inspect::parse_filters(req.query.json("filters")?)?;
    let (kept, mut rx) = engine.events.subscribe();
    let (tx, out) = mpsc::channel(64);
    let nanos = |t: SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0)
    };
    let since = since.map(nanos);
    let until_nanos = until.map(nanos);
    tokio::spawn(async move {
        let send = |e: &crate::events::Event| -> Option<Bytes> {
            if !crate::events::matches(e, &filters) {
                return None;
            }
            serde_json::to_vec(e).ok().map(|mut v| {
                v.push(b'\n');
                Bytes::from(v)
            })
        };
        if let Some(since) = since {
            for e in kept.iter().filter(|e| e.time_nano >= since) {
                if until_nanos.is_some_and(|u| e.time_nano > u) {
                    return;
                }
                if let Some(line) = send(e) {
                    if tx.send(line).await.is_err() {
                        return;
                    }
                }
            }
        }
        let deadline = until.map(|u| {
            let left = u.duration_since(SystemTime::now()).unwrap_or_default();
            tokio::time::Instant::now() + left
        });
        loop {
            let next = match deadline {
                Some(d) => match tokio::time::timeout_at(d, rx.recv()).await {
                    Ok(r) => r,
                    Err(_) => return,
                },
                None => tokio::select! {
                    r = rx.recv() => r,
                    () = tx.closed() => return,
                },
            };
            match next {
                Ok(e) => {
                    if let Some(line) = send(&e) {
                        if tx.send(line).await.is_err() {
                            return;
                        }
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            }
        }
    });
    Ok(super::stream::streamed("application/json", out))
}

/// `GET /system/df`: images, containers and volumes with their sizes.
async fn df(engine: &Engine) -> Reply {
    let images = engine.supervisor.list_images().await.unwrap_or_default();
    let layers: i64 = images.iter().map(|i| i.size).sum();
    let containers: Vec<serde_json::Value> = engine
        .containers
        .all()
        .iter()
        .map(|c| {
            let mut s = crate::containers::inspect::summary(engine, &c.record());
            s["SizeRw"] = json!(0);
            s["SizeRootFs"] = json!(0);
            s
        })
        .collect();
    let images: Vec<serde_json::Value> = images
        .iter()
        .map(|i| {
            json!({
                "Id": i.target.as_ref().map(|t| t.digest.clone()).unwrap_or_default(),
                "ParentId": "", "RepoTags": [i.name], "RepoDigests": [], "Created": 0,
                "Size": i.size, "SharedSize": -1, "VirtualSize": i.size, "Labels": {}, "Containers": -1,
            })
        })
        .collect();
    let volumes: Vec<serde_json::Value> = engine
        .volumes
        .all()
        .iter()
        .map(|v| engine.volumes.to_json(v, true))
        .collect();
    super::json(
        StatusCode::OK,
        &json!({ "LayersSize": layers, "Images": images, "Containers": containers, "Volumes": volumes, "BuildCache": [] }),
    )
}
