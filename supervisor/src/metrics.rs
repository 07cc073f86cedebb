//! berth-supervisord's Prometheus metrics, served at `--metrics-addr`
//! (`GET /metrics`, plain HTTP): gRPC calls by method and status code
//! (recorded by [`Counted`], a tower layer on the gRPC server, when the
//! call's status is known: in the response's head, or in its trailers after
//! a stream), tasks by state and the content store's bytes (both counted at
//! the scrape).
//!
//! Names and labels are listed in docs/operating.md.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tonic::codegen::http;

use crate::images::Images;
use crate::tasks::{TaskStatus, Tasks};

/// The content type of the text served.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    call_seconds: Family<MethodLabels, Histogram, fn() -> Histogram>,
    tasks: Family<StateLabels, Gauge>,
    content_bytes: Gauge,
    content_blobs: Gauge,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let mut registry = Registry::with_prefix("berth_supervisor");
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "grpc_calls",
            "gRPC calls by full method and status code",
            calls.clone(),
        );
        let call_seconds: Family<MethodLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "grpc_call_duration_seconds",
            "gRPC call latency by full method, to the call's status",
            call_seconds.clone(),
        );
        let tasks = Family::<StateLabels, Gauge>::default();
        registry.register(
            "tasks",
            "Tasks (every namespace) by state, counted at the scrape",
            tasks.clone(),
        );
        let content_bytes = Gauge::default();
        registry.register(
            "content_bytes",
            "Bytes of committed blobs in the content store, counted at the scrape",
            content_bytes.clone(),
        );
        let content_blobs = Gauge::default();
        registry.register(
            "content_blobs",
            "Committed blobs in the content store, counted at the scrape",
            content_blobs.clone(),
        );
        Metrics {
            registry,
            calls,
            call_seconds,
            tasks,
            content_bytes,
            content_blobs,
        }
    })
}

/// Records one finished call.
fn record_call(method: &str, code: tonic::Code, began: Instant) {
    let m = metrics();
    m.calls
        .get_or_create(&CallLabels {
            method: method.to_string(),
            code: format!("{code:?}"),
        })
        .inc();
    m.call_seconds
        .get_or_create(&MethodLabels {
            method: method.to_string(),
        })
        .observe(began.elapsed().as_secs_f64());
}

fn status_of(headers: &http::HeaderMap) -> Option<tonic::Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    Some(tonic::Code::from(value.trim().parse::<i32>().ok()?))
}

/// The metrics as text, tasks and content counted now.
pub async fn encode(tasks: &Tasks, images: &Arc<Images>) -> Result<String, std::fmt::Error> {
    let m = metrics();
    let states = tasks.list_all().await;
    for status in [
        TaskStatus::Created,
        TaskStatus::Running,
        TaskStatus::Paused,
        TaskStatus::Stopped,
        TaskStatus::Unknown,
    ] {
        let n = states.iter().filter(|p| p.status == status).count();
        m.tasks
            .get_or_create(&StateLabels {
                state: status.name().to_string(),
            })
            .set(n as i64);
    }
    let content = Arc::clone(&images.content);
    let blobs = tokio::task::spawn_blocking(move || content.list())
        .await
        .ok()
        .and_then(Result::ok);
    if let Some(blobs) = blobs {
        m.content_blobs.set(blobs.len() as i64);
        m.content_bytes.set(
            blobs
                .iter()
                .map(|b| b.size)
                .sum::<u64>()
                .min(i64::MAX as u64) as i64,
        );
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &m.registry)?;
    Ok(text)
}

/// Serves `GET /metrics` on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, tasks: Arc<Tasks>, images: Arc<Images>) {
    use http_body_util::Full;
    use hyper::service::service_fn;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accept on the metrics listener");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let tasks = Arc::clone(&tasks);
        let images = Arc::clone(&images);
        tokio::spawn(async move {
            let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let tasks = Arc::clone(&tasks);
                let images = Arc::clone(&images);
                async move {
                    let (status, body, kind) = if req.uri().path() != "/metrics" {
                        (404, "metrics are at /metrics\n".to_string(), "text/plain")
                    } else if req.method() != http::Method::GET {
                        (405, "only GET\n".to_string(), "text/plain")
                    } else {
                        match encode(&tasks, &images).await {
                            Ok(text) => (200, text, CONTENT_TYPE),
                            Err(e) => (500, format!("encode the metrics: {e}\n"), "text/plain"),
                        }
                    };
                    http::Response::builder()
                        .status(status)
                        .header(http::header::CONTENT_TYPE, kind)
                        .body(Full::new(Bytes::from(body)))
                }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "metrics connection ended");
            }
        });
    }
}

/// The tower service that counts gRPC calls (a layer on the server).
#[derive(Clone)]
pub struct Counted<S> {
    pub inner: S,
}

type BoxedCall<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

impl<S, B, ResBody> tower::Service<http::Request<B>> for Counted<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
{
    type Response = http::Response<CountedBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxedCall<Self::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req.uri().path().to_owned();
        let began = Instant::now();
        let call = self.inner.call(req);
        Box::pin(async move {
            match call.await {
                Ok(resp) => {
                    // A status in the head (an error, trailers-only) ends the call.
                    let pending = match status_of(resp.headers()) {
                        Some(code) => {
                            record_call(&method, code, began);
                            None
                        }
                        None => Some(Pending { method, began }),
                    };
                    Ok(resp.map(|body| CountedBody {
                        inner: Box::pin(body),
                        pending,
                    }))
                }
                Err(e) => {
                    record_call(&method, tonic::Code::Unknown, began);
                    Err(e)
                }
            }
        })
    }
}

/// A call whose status is still to come.
struct Pending {
    method: String,
    began: Instant,
}

/// A response body that records its call's status from its trailers; a
/// body dropped before them is a cancelled call.
pub struct CountedBody<B> {
    inner: Pin<Box<B>>,
    pending: Option<Pending>,
}

impl<B> CountedBody<B> {
    fn finish(&mut self, code: tonic::Code) {
        if let Some(p) = self.pending.take() {
            record_call(&p.method, code, p.began);
        }
    }
}

impl<B> Drop for CountedBody<B> {
    fn drop(&mut self) {
        self.finish(tonic::Code::Cancelled);
    }
}

impl<B> http_body::Body for CountedBody<B>
where
    B: http_body::Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.finish(status_of(trailers).unwrap_or(tonic::Code::Unknown));
                }
            }
            Poll::Ready(Some(Err(_))) => this.finish(tonic::Code::Unknown),
            // Ended without trailers: no status was sent.
            Poll::Ready(None) => this.finish(tonic::Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_counted_by_method_and_code() {
        let began = Instant::now();
        record_call("/x.v1.X/Get", tonic::Code::Ok, began);
        record_call("/x.v1.X/Get", tonic::Code::NotFound, began);
        record_call("/x.v1.X/Get", tonic::Code::NotFound, began);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &metrics().registry).unwrap();
        assert!(
            text.contains(
                "berth_supervisor_grpc_calls_total{method=\"/x.v1.X/Get\",code=\"NotFound\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "berth_supervisor_grpc_calls_total{method=\"/x.v1.X/Get\",code=\"Ok\"} 1"
            ),
            "{text}"
        );
    }

    #[test]
    fn status_is_read_from_headers() {
        let mut h = http::HeaderMap::new();
        assert_eq!(status_of(&h), None);
        h.insert("grpc-status", http::HeaderValue::from_static("5"));
        assert_eq!(status_of(&h), Some(tonic::Code::NotFound));
    }
}
