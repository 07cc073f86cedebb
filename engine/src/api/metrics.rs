//! The Prometheus endpoint: `GET /metrics` on `--metrics-addr`, plain
//! HTTP, apart from the Engine API's listeners (its text is
//! [`crate::metrics::encode`]).

use std::sync::Arc;

use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::{full, Response};
use crate::Engine;

/// Serves the metrics on `listener` until the task is dropped.
pub async fn serve(engine: Arc<Engine>, listener: TcpListener) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accept on the metrics listener");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let engine = engine.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let engine = engine.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(answer(
                        &engine,
                        req.method(),
                        req.uri().path(),
                    ))
                }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "metrics connection ended");
            }
        });
    }
}

fn answer(engine: &Engine, method: &Method, path: &str) -> Response {
    let (status, body, kind) = match (method, path) {
        (&Method::GET | &Method::HEAD, "/metrics") => match crate::metrics::encode(engine) {
            Ok(text) => (StatusCode::OK, text, crate::metrics::CONTENT_TYPE),
            Err(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("encode the metrics: {e}\n"),
                "text/plain; charset=utf-8",
            ),
        },
        (_, "/metrics") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET\n".to_string(),
            "text/plain; charset=utf-8",
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "metrics are at /metrics\n".to_string(),
            "text/plain; charset=utf-8",
        ),
    };
    let mut resp = hyper::Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    resp
}
