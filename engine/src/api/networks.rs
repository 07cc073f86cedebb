//! `/networks/...`: decode, call the domain in `crate::network`, encode.

use std::sync::Arc;

use hyper::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::{json, ApiError, Reply, Req};
use crate::network::{self, settings, CreateRequest};
use crate::types::EndpointSettings;
use crate::Engine;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct ConnectRequest {
    container: String,
    endpoint_config: Option<EndpointSettings>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct DisconnectRequest {
    container: String,
    force: bool,
}

pub async fn handle(engine: &Arc<Engine>, mut req: Req) -> Reply {
    let segments = req.segments();
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let m = req.method.clone();
    match (&m, segs.as_slice()) {
        (&Method::GET, ["networks"]) => {
            let filters = crate::containers::inspect::parse_filters(req.query.json("filters")?)?;
            let list: Vec<_> = settings::select(engine, &filters)?
                .iter()
                .map(|n| settings::network_json(engine, n, false))
                .collect();
            json(StatusCode::OK, &list)
        }
        (&Method::POST, ["networks", "create"]) => {
            let body: CreateRequest = req.json().await?;
            let net = engine.networks.create(&engine.events, body).await?;
            json(StatusCode::CREATED, &json!({"Id": net.id, "Warning": ""}))
        }
        (&Method::POST, ["networks", "prune"]) => {
            let filters = crate::containers::inspect::parse_filters(req.query.json("filters")?)?;
            let until = match filters.get("until").map(|v| v.iter().collect::<Vec<_>>()) {
                None => None,
                Some(v) if v.len() == 1 => super::containers::parse_since(v[0])?,
                Some(_) => {
                    return Err(ApiError::BadRequest(
                        "more than one until filter specified".into(),
                    ))
                }
            };
            let keep = settings::prune_filter(&filters, until)?;
            let removed = engine.networks.prune(&engine.events, keep).await?;
            json(StatusCode::OK, &json!({"NetworksDeleted": removed}))
        }
        (&Method::GET, ["networks", id]) => {
            let net = engine.networks.get(id)?;
            json(StatusCode::OK, &settings::network_json(engine, &net, true))
        }
        (&Method::DELETE, ["networks", id]) => {
            engine.networks.remove(&engine.events, id).await?;
            super::empty(StatusCode::NO_CONTENT)
        }
        (&Method::POST, ["networks", id, "connect"]) => {
            let body: ConnectRequest = req.json().await?;
            let c = engine.containers.get(&body.container)?;
            let settings = body.endpoint_config.unwrap_or_default();
            network::connect(engine, &c, id, settings).await?;
            super::empty(StatusCode::OK)
        }
        (&Method::POST, ["networks", id, "disconnect"]) => {
            let body: DisconnectRequest = req.json().await?;
            match engine.containers.get(&body.container) {
                Ok(c) => network::disconnect(engine, &c, id, body.force).await?,
                // Docker's force: the endpoints of a container gone.
                Err(_) if body.force => {
                    network::disconnect_gone(engine, id, &body.container).await?
                }
                Err(e) => return Err(e.into()),
            }
            super::empty(StatusCode::OK)
        }
        _ => Err(ApiError::NoRoute),
    }
}
