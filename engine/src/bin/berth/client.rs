//! The Docker Engine API client: HTTP/1.1 over the daemon's unix socket or
//! TCP (with TLS or without, `transport`),
//! every path under the API version negotiated with `/_ping` (the lower of
//! the daemon's and ours, as the docker CLI does), Docker's error bodies
//! turned into "Error response from daemon: ..." errors, streamed bodies,
//! and the connection upgrade of attach and exec.

use berth_client::trace;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::sync::OnceCell;

use crate::transport::{ConnectError, Endpoint, Stream};

/// The API version berth speaks.
pub const API_VERSION: &str = berth_engine::API_VERSION;
/// The default daemon socket.
pub const DEFAULT_SOCKET: &str = "/run/berth/berth.sock";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("Cannot connect to the berth daemon at {address}. Is berthd running?")]
    Connect {
        address: String,
        /// Not shown: docker's message names no cause either.
        cause: std::io::Error,
    },
    #[error("error during connect: TLS with {address}: {cause}")]
    Tls {
        address: String,
        cause: std::io::Error,
    },
    #[error("request to the daemon failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("bad request: {0}")]
    Request(#[from] hyper::http::Error),
    /// The daemon answered with an error status.
    #[error("Error response from daemon: {message}")]
    Daemon { status: u16, message: String },
    #[error("unexpected answer from the daemon: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("the daemon did not switch protocols for {0}")]
    NoUpgrade(String),
}

impl ClientError {
    /// The HTTP status of a daemon error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Daemon { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The daemon's message, for errors that print it another way.
    pub fn daemon_message(&self) -> Option<&str> {
        match self {
            ClientError::Daemon { message, .. } => Some(message),
            _ => None,
        }
    }
}

/// The upgraded connection of attach and exec: raw bytes both ways.
pub type Upgraded = TokioIo<hyper::upgrade::Upgraded>;

#[derive(Clone)]
pub struct Client {
    endpoint: Endpoint,
    version: OnceCell<String>,
}

/// `a` < `b` for dotted API versions.
pub fn version_less(a: &str, b: &str) -> bool {
    let parse = |v: &str| -> Vec<u32> { v.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    parse(a) < parse(b)
}

impl Client {
    pub fn new(endpoint: Endpoint) -> Client {
        Client {
            endpoint,
            version: OnceCell::new(),
        }
    }

    /// A byte stream to the daemon, for a request made by hand.
    pub async fn connect_stream(&self) -> Result<Stream, ClientError> {
        let address = || self.endpoint.url();
        self.endpoint.connect().await.map_err(|e| match e {
            ConnectError::Dial(cause) => ClientError::Connect {
                address: address(),
                cause,
            },
            ConnectError::Tls(cause) => ClientError::Tls {
                address: address(),
                cause,
            },
        })
    }

    async fn connect(
        &self,
    ) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, ClientError> {
        let stream = self.connect_stream().await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(sender)
    }

    /// The API version to use: the daemon's from `/_ping`, at most ours.
    pub async fn version(&self) -> Result<&str, ClientError> {
        let v = self
            .version
            .get_or_try_init(|| async {
                let resp = self.raw(Method::GET, "/_ping", Bytes::new(), &[]).await?;
                let theirs = resp
                    .headers()
                    .get("api-version")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(API_VERSION)
                    .to_string();
                Ok::<_, ClientError>(if version_less(&theirs, API_VERSION) {
                    theirs
                } else {
                    API_VERSION.to_string()
                })
            })
            .await?;
        Ok(v.as_str())
    }

    async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        headers: &[(&str, String)],
    ) -> Result<Response<Incoming>, ClientError> {
        let mut sender = self.connect().await?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "api.moby.localhost")
            .header("user-agent", concat!("berth/", env!("CARGO_PKG_VERSION")));
        if !body.is_empty() {
            req = req.header("content-type", "application/json");
        }
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        // `run --trace`: every request asks for the daemon's spans.
        let traced = trace::active();
        if traced {
            req = req.header(trace::TRACE_HEADER, "1");
        }
        let req = req.body(Full::new(body))?;
        let resp = sender.send_request(req).await?;
        if traced {
            if let Some(spans) = resp
                .headers()
                .get(trace::TRACE_HEADER)
                .and_then(|v| trace::decode(v.as_bytes()).ok())
            {
                trace::extend(spans);
            }
        }
        Ok(resp)
    }

    /// Sends a request under the negotiated version prefix; an error
    /// status becomes [`ClientError::Daemon`].
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        headers: &[(&str, String)],
    ) -> Result<Response<Incoming>, ClientError> {
        let version = self.version().await?.to_string();
        let resp = self
            .raw(method, &format!("/v{version}{path}"), body, headers)
            .await?;
        check(resp).await
    }

    /// A request whose answer is JSON.
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, ClientError> {
        let bytes = self.bytes(method, path, body).await?;
        let text: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        Ok(serde_json::from_slice(text)?)
    }

    /// A request whose whole answer is read.
    pub async fn bytes(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Bytes, ClientError> {
        let body = match body {
            Some(v) => Bytes::from(serde_json::to_vec(v)?),
            None => Bytes::new(),
        };
        let resp = self.send(method, path, body, &[]).await?;
        Ok(resp.into_body().collect().await?.to_bytes())
    }

    /// A POST whose answer does not matter (204).
    pub async fn post(&self, path: &str) -> Result<(), ClientError> {
        self.bytes(Method::POST, path, None).await.map(drop)
    }

    /// A request with the connection upgraded to raw bytes (attach, exec).
    pub async fn upgrade(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Upgraded, ClientError> {
        let body = match body {
            Some(v) => Bytes::from(serde_json::to_vec(v)?),
            None => Bytes::new(),
        };
        let headers = [
            ("connection", "Upgrade".to_string()),
            ("upgrade", "tcp".to_string()),
        ];
        let resp = self.send(method, path, body, &headers).await?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(ClientError::NoUpgrade(path.to_string()));
        }
        let upgraded = hyper::upgrade::on(resp).await?;
        Ok(TokioIo::new(upgraded))
    }
}

/// Docker's error body (`{"message": ...}`) of a failed request.
async fn check(resp: Response<Incoming>) -> Result<Response<Incoming>, ClientError> {
    let status = resp.status();
    if status.is_success() || status == StatusCode::SWITCHING_PROTOCOLS || status.as_u16() == 304 {
        return Ok(resp);
    }
    let body = resp.into_body().collect().await?.to_bytes();
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        message: String,
    }
    let message = match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(e) => e.message,
        Err(_) => String::from_utf8_lossy(&body).trim().to_string(),
    };
    Err(ClientError::Daemon {
        status: status.as_u16(),
        message,
    })
}

/// Percent-encodes a query value.
pub fn enc(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// A query string (`?a=1&b=2`, or "" without pairs).
pub fn query(pairs: &[(&str, String)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect();
    format!("?{}", parts.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_queries() {
        assert!(version_less("1.41", "1.51"));
        assert!(!version_less("1.51", "1.51"));
        assert!(version_less("1.9", "1.10"));
        assert_eq!(
            query(&[("all", "1".into()), ("filters", "{\"a\":1}".into())]),
            "?all=1&filters=%7B%22a%22%3A1%7D"
        );
    }
}
