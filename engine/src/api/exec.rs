//! `/exec/...` and `POST /containers/{id}/exec`.

use std::sync::Arc;

use hyper::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::stream::{self, Pipes};
use super::{empty, json, ApiError, Reply, Req};
use crate::exec::{self, ExecConfig};
use crate::Engine;

pub async fn create(engine: &Arc<Engine>, req: &mut Req, container: &str) -> Reply {
    let c = engine.containers.get(container)?;
    let config: ExecConfig = req.json().await?;
    let id = exec::create(engine, &c, config)?;
    json(StatusCode::CREATED, &json!({ "Id": id }))
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct StartBody {
    detach: bool,
    tty: bool,
    console_size: Option<Vec<u32>>,
}

pub async fn handle(engine: &Arc<Engine>, mut req: Req) -> Reply {
    let segments = req.segments();
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let m = req.method.clone();
    match (&m, segs.as_slice()) {
        (&Method::POST, ["exec", id, "start"]) => {
            let e = engine.execs.get(id)?;
            let body: StartBody = req.json().await?;
            let _ = body.console_size;
            match exec::start(engine, &e, body.detach).await? {
                None => empty(StatusCode::OK),
                Some(session) => {
                    // Framed unless the start request says tty, whatever
                    // the exec was created with, as dockerd does.
                    let pipes = Pipes {
                        tty: body.tty,
                        input: session.input,
                        output: session.output,
                        close_stdin_on_eof: true,
                        detach_keys: session.detach_keys,
                        keep: Box::new(()),
                        go: Some(session.go),
                    };
                    Ok(stream::hijack(&mut req, pipes))
                }
            }
        }
        (&Method::POST, ["exec", id, "resize"]) => {
            let e = engine.execs.get(id)?;
            let (h, w) = (
                req.query.int("h")?.unwrap_or(0),
                req.query.int("w")?.unwrap_or(0),
            );
            exec::resize(engine, &e, h.max(0) as u32, w.max(0) as u32).await?;
            empty(StatusCode::OK)
        }
        (&Method::GET, ["exec", id, "json"]) => {
            let e = engine.execs.get(id)?;
            json(StatusCode::OK, &exec::inspect(&e))
        }
        _ => Err(ApiError::NoRoute),
    }
}
