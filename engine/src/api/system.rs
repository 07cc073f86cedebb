//! `/_ping`, `/version`, `/info`, `/events`, `/system/df`, `/auth`.

use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, StatusCode};
use serde_json::json;

use super::{full, ApiError, Reply, Req};
use crate::Engine;

pub async fn handle(engine: &Engine, req: Req) -> Reply {
    let segments = req.segments();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (&req.method, segments.as_slice()) {
        (&Method::GET | &Method::HEAD, ["_ping"]) => ping(&req),
        (&Method::GET, ["version"]) => version(engine),
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
