//! `/volumes`: create, list, inspect, remove and prune.

use hyper::{Method, StatusCode};
use serde_json::json;

use super::{empty, json, ApiError, Reply, Req};
use crate::volumes::{CreateOptions, Filters};
use crate::Engine;

pub async fn handle(engine: &Engine, mut req: Req) -> Reply {
    let segments = req.segments();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let volumes = &engine.volumes;
    match (&req.method, segments.as_slice()) {
        (&Method::POST, ["volumes", "create"]) => {
            let opts: CreateOptions = req.json().await?;
            let (v, _) = volumes.create(&engine.events, opts)?;
            json(StatusCode::CREATED, &volumes.to_json(&v, false))
        }
        (&Method::GET, ["volumes"]) => {
            let filters = filters(&req)?;
            let list: Vec<_> = volumes
                .list(&filters)?
                .iter()
                .map(|v| volumes.to_json(v, false))
                .collect();
            json(StatusCode::OK, &json!({ "Volumes": list, "Warnings": [] }))
        }
        (&Method::POST, ["volumes", "prune"]) => {
            let mut filters = filters(&req)?;
            // Before API 1.42 prune took named volumes too.
            if !req.version.at_least(1, 42) {
                filters
                    .entry("all".into())
                    .or_default()
                    .insert("true".into());
            }
            let (deleted, reclaimed) = volumes.prune(&engine.events, &filters)?;
            json(
                StatusCode::OK,
                &json!({ "VolumesDeleted": deleted, "SpaceReclaimed": reclaimed }),
            )
        }
        (&Method::GET, ["volumes", name]) => {
            let v = volumes.get(name)?;
            json(StatusCode::OK, &volumes.to_json(&v, false))
        }
        (&Method::DELETE, ["volumes", name]) => {
            volumes.remove(&engine.events, name, req.query.flag("force"))?;
            empty(StatusCode::NO_CONTENT)
        }
        _ => Err(ApiError::NoRoute),
    }
}

fn filters(req: &Req) -> Result<Filters, ApiError> {
    let value = req.query.json::<serde_json::Value>("filters")?;
    crate::containers::inspect::parse_filters(value).map_err(ApiError::from)
}
