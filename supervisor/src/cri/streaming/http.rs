//! The streaming server's HTTP side: one request per connection, to
//! `/exec/TOKEN`, `/attach/TOKEN` or `/portforward/TOKEN`, upgraded to
//! SPDY/3.1 or WebSocket after the protocol negotiation client-go does
//! (`X-Stream-Protocol-Version` for SPDY, `Sec-WebSocket-Protocol` for
//! WebSocket). A refused request is an HTTP error with a plain-text reason,
//! which client-go reports (and, for a failed WebSocket upgrade, takes as
//! its cue to fall back to SPDY).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, CONNECTION, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{portforward, remotecommand, websocket, Pending, Server};

/// The stream protocol of exec and attach over SPDY.
pub const CHANNEL_V4: &str = "v4.channel.k8s.io";
/// The stream protocol of exec and attach over WebSocket, with the CLOSE
/// signal for half-closing stdin.
pub const CHANNEL_V5: &str = "v5.channel.k8s.io";
/// Port-forward over SPDY.
pub const PORT_FORWARD: &str = "portforward.k8s.io";
/// Port-forward's SPDY carried in WebSocket messages.
pub const PORT_FORWARD_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

const PROTOCOL_HEADER: &str = "x-stream-protocol-version";

type Answer = Response<Full<Bytes>>;

pub async fn serve_connection(server: Arc<Server>, conn: TcpStream) {
    let _ = conn.set_nodelay(true);
    let service = hyper::service::service_fn(move |req| {
        let server = Arc::clone(&server);
        async move { Ok::<_, Infallible>(handle(server, req)) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(conn), service)
        .with_upgrades()
        .await;
    if let Err(e) = served {
        tracing::debug!("streaming connection: {e}");
    }
}

fn text(status: StatusCode, message: impl Into<String>) -> Answer {
    let mut body = message.into();
    body.push('\n');
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Every value of a header that may be repeated or comma-separated.
fn values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

/// The first protocol the client offers that this server speaks.
fn negotiate<'a>(offered: &[String], ours: &[&'a str]) -> Option<&'a str> {
    offered
        .iter()
        .find_map(|o| ours.iter().find(|p| p.eq_ignore_ascii_case(o)).copied())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Spdy,
    WebSocket,
}

fn transport(headers: &HeaderMap) -> Option<Transport> {
    let upgrade = values(headers, UPGRADE.as_str());
    let connection = values(headers, CONNECTION.as_str());
    if !connection.iter().any(|c| c.eq_ignore_ascii_case("upgrade")) {
        return None;
    }
    if upgrade.iter().any(|u| u.eq_ignore_ascii_case("websocket")) {
        Some(Transport::WebSocket)
    } else if upgrade.iter().any(|u| u.eq_ignore_ascii_case("SPDY/3.1")) {
        Some(Transport::Spdy)
    } else {
        None
    }
}

fn handle(server: Arc<Server>, mut req: Request<Incoming>) -> Answer {
    if req.method() != hyper::Method::GET && req.method() != hyper::Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET or POST");
    }
    let path = req.uri().path().trim_matches('/').to_string();
    let Some((kind, token)) = path.split_once('/') else {
        return text(StatusCode::NOT_FOUND, "not found");
    };
    if !matches!(kind, "exec" | "attach" | "portforward") || token.contains('/') {
        return text(StatusCode::NOT_FOUND, "not found");
    }
    let Some(transport) = transport(req.headers()) else {
        return text(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: missing upgrade headers in request (SPDY/3.1 or websocket)",
        );
    };
    let Some(pending) = server.cache.take(token).filter(|p| p.path() == kind) else {
        return text(
            StatusCode::NOT_FOUND,
            "unknown or expired streaming request (a URL serves one connection, within a minute)",
        );
    };
    let port_forward = matches!(pending, Pending::PortForward { .. });
    let mut answer = text(StatusCode::SWITCHING_PROTOCOLS, "");
    *answer.body_mut() = Full::new(Bytes::new());
    let headers = answer.headers_mut();
    headers.remove(hyper::header::CONTENT_TYPE);
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    let protocol = match transport {
        Transport::Spdy => {
            let ours: &[&str] = if port_forward {
                &[PORT_FORWARD]
            } else {
                &[CHANNEL_V4]
            };
            let offered = values(req.headers(), PROTOCOL_HEADER);
            let Some(p) = negotiate(&offered, ours) else {
                return text(
                    StatusCode::FORBIDDEN,
                    format!(
                        "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports {ours:?}"
                    ),
                );
            };
            headers.insert(UPGRADE, HeaderValue::from_static("SPDY/3.1"));
            headers.insert(PROTOCOL_HEADER, HeaderValue::from_static(p));
            p
        }
        Transport::WebSocket => {
            let ours: &[&str] = if port_forward {
                &[PORT_FORWARD_TUNNEL]
            } else {
                &[CHANNEL_V5, CHANNEL_V4]
            };
            let offered = values(req.headers(), "sec-websocket-protocol");
            let Some(p) = negotiate(&offered, ours) else {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "unable to upgrade: no websocket subprotocol in common: client offers {offered:?}, server speaks {ours:?}"
                    ),
                );
            };
            let key = req.headers().get("sec-websocket-key").map(|k| k.as_bytes());
            let version = req.headers().get("sec-websocket-version");
            let (Some(key), Some(b"13")) = (key, version.map(|v| v.as_bytes())) else {
                return text(
                    StatusCode::BAD_REQUEST,
                    "unable to upgrade: a websocket request needs Sec-WebSocket-Key and version 13",
                );
            };
            let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key);
            let Ok(accept) = HeaderValue::from_str(&accept) else {
                return text(StatusCode::BAD_REQUEST, "bad Sec-WebSocket-Key");
            };
            headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert("sec-websocket-accept", accept);
            headers.insert("sec-websocket-protocol", HeaderValue::from_static(p));
            p
        }
    };
    tracing::debug!(kind, ?transport, protocol, "streaming request upgraded");
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let io = match upgrade.await {
            Ok(u) => TokioIo::new(u),
            Err(e) => {
                tracing::debug!("streaming upgrade: {e}");
                return;
            }
        };
        let backend = Arc::clone(&server.backend);
        match (transport, pending) {
            (Transport::Spdy, Pending::PortForward { sandbox_id }) => {
                portforward::serve(backend, io, sandbox_id).await
            }
            (Transport::Spdy, request) => remotecommand::serve_spdy(backend, io, request).await,
            (Transport::WebSocket, Pending::PortForward { sandbox_id }) => {
                let ws = websocket::accept(io).await;
                portforward::serve(backend, websocket::tunnel(ws), sandbox_id).await
            }
            (Transport::WebSocket, request) => {
                let ws = websocket::accept(io).await;
                let v5 = protocol == CHANNEL_V5;
                remotecommand::serve_websocket(backend, ws, v5, request).await
            }
        }
    });
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_are_negotiated_in_the_clients_order() {
        let offered = vec![CHANNEL_V5.to_string(), CHANNEL_V4.to_string()];
        assert_eq!(
            negotiate(&offered, &[CHANNEL_V4, CHANNEL_V5]),
            Some(CHANNEL_V5)
        );
        let offered = vec!["v3.channel.k8s.io".to_string(), CHANNEL_V4.to_string()];
        assert_eq!(negotiate(&offered, &[CHANNEL_V4]), Some(CHANNEL_V4));
        assert_eq!(negotiate(&offered, &[PORT_FORWARD]), None);
    }

    #[test]
    fn transports_come_from_the_upgrade_headers() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        assert_eq!(transport(&h), Some(Transport::Spdy));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        assert_eq!(transport(&h), Some(Transport::WebSocket));
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive"));
        assert_eq!(transport(&h), None);
        let mut h = HeaderMap::new();
        h.append(
            PROTOCOL_HEADER,
            HeaderValue::from_static("v4.channel.k8s.io"),
        );
        h.append(
            PROTOCOL_HEADER,
            HeaderValue::from_static("v3.channel.k8s.io, v2"),
        );
        assert_eq!(
            values(&h, PROTOCOL_HEADER),
            ["v4.channel.k8s.io", "v3.channel.k8s.io", "v2"]
        );
    }
}
