//! `/images/...` and `POST /auth`: decode, call [`crate::images`], encode.
//! Image names may hold slashes (`127.0.0.1:5000/busybox`), so a path's
//! name is everything between `images/` and its last segment.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use http_body_util::{BodyExt, BodyStream, StreamBody};
use hyper::body::Frame;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use super::{ApiError, ApiVersion, Body, Reply, Req};
use crate::images::archive::{self, ImportOptions};
use crate::images::auth::{self, AuthConfig};
use crate::images::list::{self, Filters};
use crate::images::remove;
use crate::images::transfer::{self, Message, PullOptions};
use crate::images::ImageError;
use crate::Engine;

/// Largest `/auth` body read (import and load bodies stream, unbounded).
const MAX_AUTH_BODY: usize = 1 << 20;

pub async fn handle(engine: &Arc<Engine>, req: Req) -> Reply {
    let segments = req.segments();
    let rest: Vec<&str> = segments.iter().skip(1).map(String::as_str).collect();
    let method = req.method.clone();
    match (&method, rest.as_slice()) {
        (&Method::POST, ["create"]) => create(engine, req).await,
        (&Method::GET, ["json"]) => list_images(engine, &req).await,
        (&Method::POST, ["load"]) => load(engine, req).await,
        (&Method::GET, ["get"]) => {
            let names: Vec<String> = req
                .query
                .get_all("names")
                .into_iter()
                .map(String::from)
                .collect();
            save(engine, &names).await
        }
        (&Method::POST, ["prune"]) => prune(engine, &req).await,
        (&Method::DELETE, name) if !name.is_empty() => {
            let name = name.join("/");
            let force = req.query.flag("force");
            let removed = remove::delete(engine, &name, force).await?;
            super::json(StatusCode::OK, &removed)
        }
        (_, [name @ .., last]) if !name.is_empty() => {
            let name = name.join("/");
            match (&method, *last) {
                (&Method::GET, "json") => inspect(engine, &req, &name).await,
                (&Method::GET, "history") => {
                    super::json(StatusCode::OK, &list::history(engine, &name).await?)
                }
                (&Method::GET, "get") => save(engine, &[name]).await,
                (&Method::POST, "tag") => {
                    let repo = req.query.get("repo").unwrap_or("");
                    let tag = req.query.get("tag").unwrap_or("");
                    remove::tag(engine, &name, repo, tag).await?;
                    super::empty(StatusCode::CREATED)
                }
                (&Method::POST, "push") => push(engine, &req, &name).await,
                _ => Err(ApiError::NoRoute),
            }
        }
        _ => Err(ApiError::NoRoute),
    }
}

/// A JSON-lines progress stream, as dockerd sends pull, push, load and
/// import.
pub(super) fn progress_response(messages: BoxStream<'static, Message>) -> Reply {
    let body = messages.map(|m| Ok(Bytes::from(m.to_line())));
    let mut resp = hyper::Response::new(stream_body(body.boxed()));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

/// A body sent as the stream yields it (forwarded through a channel, as a
/// response body must be shareable between threads).
fn stream_body(mut stream: BoxStream<'static, io::Result<Bytes>>) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(8);
    tokio::spawn(async move {
        while let Some(item) = stream.next().await {
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                break;
            }
        }
    });
    let frames = tokio_stream::wrappers::ReceiverStream::new(rx).map(|r| r.map(Frame::data));
    BodyExt::boxed(StreamBody::new(frames))
}

fn registry_auth(req: &Req) -> Result<Option<AuthConfig>, ApiError> {
    let header = req
        .headers
        .get("x-registry-auth")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    Ok(AuthConfig::decode(header)?)
}

/// The request body as a stream of chunks.
fn body_stream(req: &mut Req) -> archive::Body {
    let Some(body) = req.body.take() else {
        return futures_util::stream::empty().boxed();
    };
    BodyStream::new(body)
        .filter_map(|frame| async move {
            match frame {
                Ok(frame) => frame.into_data().ok().map(Ok),
                Err(e) => Some(Err(ImageError::ReadBody(e.to_string()))),
            }
        })
        .boxed()
}

async fn create(engine: &Arc<Engine>, mut req: Req) -> Reply {
    if let Some(image) = req.query.get("fromImage").filter(|s| !s.is_empty()) {
        let opts = PullOptions {
            image: image.to_string(),
            tag: req.query.get("tag").unwrap_or("").to_string(),
            platform: req.query.get("platform").unwrap_or("").to_string(),
            auth: registry_auth(&req)?,
        };
        let messages = transfer::pull(Arc::clone(engine), opts).await?;
        return progress_response(messages);
    }
    let Some(src) = req.query.get("fromSrc").filter(|s| !s.is_empty()) else {
        return Err(ApiError::BadRequest(
            "either fromImage or fromSrc is required".into(),
        ));
    };
    if src != "-" {
        return Err(ApiError::BadRequest(format!(
            "importing from {src}: only the request body (fromSrc=-) is supported"
        )));
    }
    let opts = ImportOptions {
        repo: req.query.get("repo").unwrap_or("").to_string(),
        tag: req.query.get("tag").unwrap_or("").to_string(),
        message: req.query.get("message").unwrap_or("").to_string(),
        changes: req
            .query
            .get_all("changes")
            .into_iter()
            .map(String::from)
            .collect(),
    };
    let body = body_stream(&mut req);
    let id = archive::import(engine, opts, body).await?;
    progress_response(futures_util::stream::iter([Message::status(id)]).boxed())
}

async fn push(engine: &Arc<Engine>, req: &Req, name: &str) -> Reply {
    let tag = req.query.get("tag").unwrap_or("");
    let messages = transfer::push(Arc::clone(engine), name, tag, registry_auth(req)?).await?;
    progress_response(messages)
}

async fn list_images(engine: &Engine, req: &Req) -> Reply {
    let filters: Option<Value> = req.query.json("filters")?;
    let mut filters = Filters::parse(filters.as_ref())?;
    // API < 1.41 also took `filter=<reference>`.
    if let Some(reference) = req.query.get("filter").filter(|s| !s.is_empty()) {
        filters.reference.push(reference.to_string());
    }
    let images = list::list(engine, req.query.flag("all"), &filters).await?;
    let mut value = serde_json::to_value(&images)
        .map_err(|e| ApiError::Internal(format!("encode response: {e}")))?;
    if let Value::Array(items) = &mut value {
        for item in items {
            drop_newer_fields(req.version, item, &["VirtualSize"], (1, 44));
        }
    }
    super::json(StatusCode::OK, &value)
}

/// Fields an API version no longer has are left out from it on.
fn drop_newer_fields(version: ApiVersion, item: &mut Value, keys: &[&str], gone_at: (u32, u32)) {
    if version.at_least(gone_at.0, gone_at.1) {
        if let Value::Object(map) = item {
            for key in keys {
                map.remove(*key);
            }
        }
    }
}

async fn inspect(engine: &Engine, req: &Req, name: &str) -> Reply {
    let image = list::inspect(engine, name).await?;
    let mut value = serde_json::to_value(&image)
        .map_err(|e| ApiError::Internal(format!("encode response: {e}")))?;
    drop_newer_fields(req.version, &mut value, &["VirtualSize"], (1, 44));
    drop_newer_fields(
        req.version,
        &mut value,
        &["Container", "ContainerConfig"],
        (1, 45),
    );
    super::json(StatusCode::OK, &value)
}

async fn prune(engine: &Engine, req: &Req) -> Reply {
    let filters: Option<Value> = req.query.json("filters")?;
    let filters = Filters::parse(filters.as_ref())?;
    super::json(StatusCode::OK, &remove::prune(engine, &filters).await?)
}

async fn save(engine: &Engine, names: &[String]) -> Reply {
    let stream = archive::save(engine, names).await?;
    let body = stream.map(|r| r.map_err(|e| io::Error::other(e.to_string())));
    let mut resp = hyper::Response::new(stream_body(body.boxed()));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/x-tar"));
    Ok(resp)
}

async fn load(engine: &Engine, mut req: Req) -> Reply {
    let body = body_stream(&mut req);
    // As dockerd: a 200 whatever happens, a failure as the stream's error
    // message (the docker CLI and docker-py raise it from there).
    let messages = match archive::load(engine, body).await {
        Ok(messages) => messages,
        Err(e) => vec![Message::error(e.to_string())],
    };
    // Streamed (chunked), as dockerd answers: docker-py reads a whole
    // body as one JSON document.
    progress_response(futures_util::stream::iter(messages).boxed())
}

/// `POST /auth`.
pub async fn auth(engine: &Engine, mut req: Req) -> Reply {
    let bytes = req.bytes(MAX_AUTH_BODY).await?;
    let auth: AuthConfig = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON in request body: {e}")))?;
    auth::login(engine, auth).await?;
    super::json(
        StatusCode::OK,
        &json!({ "Status": "Login Succeeded", "IdentityToken": "" }),
    )
}
