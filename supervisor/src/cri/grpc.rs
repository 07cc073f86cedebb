//! The CRI's gRPC connections, served with hyper rather than tonic's own
//! server, for one reason: deadlines. When a call's `grpc-timeout` passes,
//! tonic's server answers `CANCELLED`, where kubelet and critest expect
//! `DEADLINE_EXCEEDED` (what containerd's grpc-go answers, and what critest's
//! "public image should timeout if requested" checks). Here the deadline is
//! kept by [`Deadlines`] and answered with `DEADLINE_EXCEEDED`; the calls
//! themselves are tonic's generated services, routed by `tonic::service::Routes`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::UnixListener;
use tonic::service::Routes;
use tower::Service;

/// The routes, with each call bounded by its `grpc-timeout`.
#[derive(Clone)]
pub struct Deadlines(pub Routes);

type CallFuture =
    Pin<Box<dyn Future<Output = Result<Response<tonic::body::Body>, Infallible>> + Send>>;

impl Service<Request<Incoming>> for Deadlines {
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = CallFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        <Routes as Service<Request<Incoming>>>::poll_ready(&mut self.0, cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> CallFuture {
        let timeout = req
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_timeout);
        // The method, for --debug's timing of each call (the body's end
        // is not waited for: a stream is timed to its first answer).
        let method = tracing::enabled!(tracing::Level::DEBUG).then(|| req.uri().path().to_string());
        let call = self.0.call(req);
        Box::pin(async move {
            let t0 = std::time::Instant::now();
            let answer = match timeout {
                None => call.await,
                Some(limit) => match tokio::time::timeout(limit, call).await {
                    Ok(answer) => answer,
                    Err(_) => Ok(
                        tonic::Status::deadline_exceeded("context deadline exceeded").into_http(),
                    ),
                },
            };
            if let Some(method) = method {
                tracing::debug!(%method, ms = t0.elapsed().as_secs_f64() * 1e3, "CRI call");
            }
            answer
        })
    }
}

/// A `grpc-timeout` value: at most 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Serves HTTP/2 gRPC connections on `listener` until `shutdown`
/// completes; connections then finish the calls they have in flight.
pub async fn serve(
    listener: UnixListener,
    routes: Routes,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accept a CRI connection");
                    // Out of descriptors, say: let some close.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(Deadlines(routes.clone()));
        let mut stopped = stopped.clone();
        connections.spawn(async move {
            let builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "a CRI connection ended");
                    }
                    return;
                }
                _ = stopped.changed() => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        });
        // Reap the connections that are done.
        while connections.try_join_next().is_some() {}
    }
    let _ = stop.send(true);
    // Calls in flight get a moment to finish.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.abort_all();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_are_read_as_the_spec_writes_them() {
        assert_eq!(parse_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_timeout("999m"), Some(Duration::from_millis(999)));
        assert_eq!(parse_timeout("985u"), Some(Duration::from_micros(985)));
        assert_eq!(
            parse_timeout("12345678n"),
            Some(Duration::from_nanos(12_345_678))
        );
        for bad in ["", "S", "123456789S", "1x", "-1S", "1.5S"] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
    }
}
