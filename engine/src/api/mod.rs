//! The Docker Engine API over HTTP/1.1 on a unix socket: HTTP only. A
//! request's path loses its `/vX.Y` prefix, goes by its first segment to the
//! file of its resource, whose handlers decode, call the domain and encode.
//! Failures become Docker's status and `{"message": ...}` body in
//! [`error`].

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use hyper::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub mod archive;
pub mod build;
pub mod containers;
pub mod error;
pub mod exec;
pub mod images;
pub mod metrics;
pub mod networks;
pub mod stream;
pub mod swarm;
pub mod system;
pub mod version;
pub mod volumes;

pub use error::ApiError;
pub use version::ApiVersion;

use crate::Engine;
use berth_client::trace::{self, Layer};

/// A response body: whole or streamed.
pub type Body = http_body_util::combinators::BoxBody<Bytes, io::Error>;
pub type Response = hyper::Response<Body>;
pub type Reply = Result<Response, ApiError>;

/// Largest JSON request body read (Docker's clients send a few KiB).
pub const MAX_JSON_BODY: usize = 16 << 20;

/// A request as the handlers see it.
pub struct Req {
    pub method: Method,
    pub version: ApiVersion,
    /// The path after the version prefix, still percent-encoded.
    pub path: String,
    pub query: Query,
    pub headers: HeaderMap,
    /// The request body, until a handler reads it.
    pub body: Option<Incoming>,
    /// The connection upgrade (attach, exec start), taken by the handler.
    pub upgrade: Option<hyper::upgrade::OnUpgrade>,
}

impl Req {
    /// The path's segments, percent-decoded.
    pub fn segments(&self) -> Vec<String> {
        self.path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(percent_decode)
            .collect()
    }

    /// Reads the body as JSON; an empty body is `T::default()` when `T`
    /// allows it, else an error naming what was wrong.
    pub async fn json<T: DeserializeOwned>(&mut self) -> Result<T, ApiError> {
        let bytes = self.bytes(MAX_JSON_BODY).await?;
        let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
            &b"{}"[..]
        } else {
            &bytes
        };
        let bad = |e: serde_json::Error| {
            ApiError::BadRequest(format!("invalid JSON in request body: {e}"))
        };
        let mut value: serde_json::Value = serde_json::from_slice(bytes).map_err(bad)?;
        drop_nulls(&mut value);
        serde_json::from_value(value).map_err(bad)
    }

    /// Reads the whole body, refusing one over `limit` bytes.
    pub async fn bytes(&mut self, limit: usize) -> Result<Bytes, ApiError> {
        let Some(body) = self.body.take() else {
            return Ok(Bytes::new());
        };
        let declared = self
            .headers
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(ApiError::BadRequest(format!(
                "request body is larger than {limit} bytes"
            )));
        }
        let limited = http_body_util::Limited::new(body, limit);
        match limited.collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::BadRequest(
                format!("request body is larger than {limit} bytes"),
            )),
            Err(e) => Err(ApiError::BadRequest(format!("read request body: {e}"))),
        }
    }

    /// Whether the client asked to upgrade the connection (`Upgrade: tcp`).
    pub fn wants_upgrade(&self) -> bool {
        self.headers
            .get(hyper::header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("tcp"))
    }
}

/// A query string, decoded. A key given twice keeps its last value (as Go's
/// `r.Form.Get` keeps the first; clients send each key once).
#[derive(Clone, Debug, Default)]
pub struct Query(BTreeMap<String, String>, Vec<(String, String)>);

impl Query {
    pub fn parse(query: Option<&str>) -> Query {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .into_owned()
            .collect();
        Query(pairs.iter().cloned().collect(), pairs)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Every value of a key given more than once (`names=a&names=b`).
    pub fn get_all(&self, key: &str) -> Vec<&str> {
        self.1
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Docker's boolean parameters: absent, "", "0", "false" and "no" are
    /// false (Go's `httputils.BoolValue`).
    pub fn flag(&self, key: &str) -> bool {
        match self.get(key) {
            None => false,
            Some(v) => !matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "" | "0" | "false" | "no"
            ),
        }
    }

    /// An integer parameter; absent or empty is `None`.
    pub fn int(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                ApiError::BadRequest(format!("invalid value for {key}: {v:?} is not an integer"))
            }),
        }
    }

    /// A JSON parameter (`filters`), absent is `None`.
    pub fn json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, ApiError> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) => serde_json::from_str(v)
                .map(Some)
                .map_err(|e| ApiError::BadRequest(format!("invalid {key} parameter: {e}"))),
        }
    }
}

fn percent_decode(s: &str) -> String {
    // form_urlencoded also turns '+' into ' ', which a path keeps.
    let s = s.replace('+', "%2B");
    form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// A whole body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// `status` with a JSON body.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Reply {
    let body = serde_json::to_vec(value)
        .map_err(|e| ApiError::Internal(format!("encode response: {e}")))?;
    let mut resp = hyper::Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

/// `status` with no body.
pub fn empty(status: StatusCode) -> Reply {
    let mut resp = hyper::Response::new(full(Bytes::new()));
    *resp.status_mut() = status;
    Ok(resp)
}

/// Hands a request to the file of its resource (`first`, the path's first
/// segment).
async fn dispatch(engine: &Arc<Engine>, first: &str, req: Req) -> Reply {
    match first {
        "_ping" | "version" | "info" | "events" | "system" | "auth" => {
            system::handle(engine, req).await
        }
        "containers" => containers::handle(engine, req).await,
        "exec" => exec::handle(engine, req).await,
        "images" => images::handle(engine, req).await,
        "networks" => networks::handle(engine, req).await,
        "swarm" | "nodes" | "services" | "tasks" | "secrets" | "configs" => swarm::handle(&req),
        "volumes" => volumes::handle(engine, req).await,
        "build" | "commit" => build::handle(engine, req).await,
        _ => Err(ApiError::NoRoute),
    }
}

/// A path with its 64-hex ids cut to 12, as a trace shows it.
fn short_ids(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            if seg.len() == 64 && seg.bytes().all(|b| b.is_ascii_hexdigit()) {
                &seg[..12]
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Docker's error response.
pub fn error_response(err: &ApiError) -> Response {
    let body = serde_json::json!({ "message": err.to_string() });
    let mut resp = hyper::Response::new(full(body.to_string()));
    *resp.status_mut() = err.status();
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Serves one request.
pub async fn handle(engine: Arc<Engine>, mut request: hyper::Request<Incoming>) -> Response {
    let Some((version, path)) = version::split_version(request.uri().path()) else {
        return error_response(&ApiError::NoRoute);
    };
    let path = path.to_string();
    if version < ApiVersion::MIN {
        return error_response(&ApiError::BadRequest(format!(
            "client version {version} is too old. Minimum supported API version is {}, \
             please upgrade your client to a newer version",
            ApiVersion::MIN
        )));
    }
    let upgrade = Some(hyper::upgrade::on(&mut request));
    let (parts, body) = request.into_parts();
    let req = Req {
        method: parts.method,
        version,
        path,
        query: Query::parse(parts.uri.query()),
        headers: parts.headers,
        body: Some(body),
        upgrade,
    };
    let first = req
        .path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("")
        .to_string();
    let method = req.method.clone();
    let path = req.path.clone();
    let began = std::time::Instant::now();
    // A traced request (`berth run --trace`): its phases, and the lower
    // layers', go back in a response header.
    let trace = req
        .headers
        .contains_key(trace::TRACE_HEADER)
        .then(trace::Trace::default);
    let work = async {
        let _span = trace.is_some().then(|| {
            trace::span(
                Layer::Engine,
                &format!("berthd {method} {}", short_ids(&path)),
            )
        });
        dispatch(&engine, &first, req).await
    };
    let result = trace::scope(trace.clone(), work).await;
    let mut resp = match result {
        Ok(resp) => resp,
        Err(err) => {
            if err.status().is_server_error() {
                tracing::warn!(%method, path, error = %err, "request failed");
            } else {
                tracing::debug!(%method, path, error = %err, "request refused");
            }
            error_response(&err)
        }
    };
    if let Some(trace) = trace {
        if let Ok(value) = HeaderValue::from_str(&trace::encode(&trace.take())) {
            resp.headers_mut().insert(trace::TRACE_HEADER, value);
        }
    }
    tracing::debug!(%method, path, status = resp.status().as_u16(), micros = began.elapsed().as_micros() as u64, "request");
    crate::metrics::api_request(
        method.as_str(),
        &path,
        resp.status().as_u16(),
        began.elapsed(),
    );
    add_server_headers(resp.headers_mut());
    resp
}

/// Removes the members of objects whose value is `null`, at every depth.
/// dockerd decodes bodies with Go's encoding/json, for which a `null`
/// member leaves the field at its zero value, as if it were absent; clients
/// rely on that (docker-py sends `"Interval": null` in a Healthcheck, and
/// `"IPAM": null` when a network is created without one).
fn drop_nulls(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// Headers dockerd puts on every response.
fn add_server_headers(headers: &mut HeaderMap) {
    headers.insert("api-version", HeaderValue::from_static(crate::API_VERSION));
    headers.insert("docker-experimental", HeaderValue::from_static("false"));
    headers.insert("ostype", HeaderValue::from_static("linux"));
    headers.insert(
        hyper::header::SERVER,
        HeaderValue::from_static(concat!("Docker/", env!("CARGO_PKG_VERSION"), " (linux)")),
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn null_members_read_as_absent() {
        let mut v =
            serde_json::json!({"A": null, "B": {"C": null, "D": 1}, "E": [null, {"F": null}]});
        super::drop_nulls(&mut v);
        assert_eq!(v, serde_json::json!({"B": {"D": 1}, "E": [null, {}]}));
    }
}
