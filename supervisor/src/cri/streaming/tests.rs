//! The streaming server end to end over a fake backend: the HTTP upgrade,
//! SPDY and WebSocket exec, port-forward, tokens.

use std::sync::Mutex;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use super::spdy::{parse_head, Codec, Frame, HEADER_LEN};
use super::*;

/// A backend that echoes: exec writes `out:<args>` to stdout, what stdin
/// brings to stderr (upper-cased), records resizes, and exits with the
/// length of its first argument.
#[derive(Default)]
struct Fake {
    resizes: Mutex<Vec<TermSize>>,
    echo_port: Mutex<Option<u16>>,
}

impl Backend for Fake {
    fn exec<'a>(&'a self, _: &'a str, cmd: &'a [String], io: StreamIo) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let StreamIo {
                stdin,
                stdout,
                stderr,
                resize,
                ..
            } = io;
            if let Some(mut resize) = resize {
                if let Some(size) = resize.recv().await {
                    self.resizes.lock().unwrap().push(size);
                }
            }
            if let Some(out) = &stdout {
                out.send(format!("out:{}", cmd.join(" ")).into_bytes())
                    .await
                    .unwrap();
            }
            if let (Some(mut stdin), Some(err)) = (stdin, &stderr) {
                while let Some(data) = stdin.recv().await {
                    err.send(data.to_ascii_uppercase()).await.unwrap();
                }
            }
            Outcome::Exited(cmd[0].len() as i32 - 2)
        })
    }

    fn attach<'a>(&'a self, _: &'a str, _: bool, _: StreamIo) -> BoxFuture<'a, Outcome> {
        Box::pin(async { Outcome::Failed("no attach here".into()) })
    }

    fn connect<'a>(
        &'a self,
        _: &'a str,
        port: u16,
    ) -> BoxFuture<'a, Result<tokio::net::TcpStream, String>> {
        Box::pin(async move {
            if Some(port) != *self.echo_port.lock().unwrap() {
                return Err(format!("connection refused on port {port}"));
            }
            TcpStream::connect(("127.0.0.1", port))
                .await
                .map_err(|e| e.to_string())
        })
    }
}

async fn start(fake: Arc<Fake>) -> Arc<Server> {
    let (server, listener) = Server::bind("127.0.0.1:0".parse().unwrap(), fake)
        .await
        .unwrap();
    tokio::spawn(Arc::clone(&server).serve(listener, std::future::pending()));
    server
}

/// A SPDY client over the streaming server's upgrade.
struct SpdyClient {
    io: Box<dyn Io>,
    codec: Codec,
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

impl SpdyClient {
    async fn connect(url: &str, protocol: &str) -> Result<SpdyClient, String> {
        let rest = url.strip_prefix("http://").unwrap();
        let (host, path) = rest.split_at(rest.find('/').unwrap());
        let mut io = TcpStream::connect(host).await.unwrap();
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
             X-Stream-Protocol-Version: {protocol}\r\nContent-Length: 0\r\n\r\n"
        );
        io.write_all(req.as_bytes()).await.unwrap();
        // The response head, byte by byte up to its blank line.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            if io.read(&mut b).await.unwrap() == 0 {
                break;
            }
            head.push(b[0]);
        }
        let head = String::from_utf8(head).unwrap();
        if !head.starts_with("HTTP/1.1 101") {
            let mut body = String::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(1), io.read_to_string(&mut body)).await;
            return Err(format!("{head}{body}"));
        }
        assert!(head.to_ascii_lowercase().contains(&format!(
            "x-stream-protocol-version: {}",
            protocol.to_ascii_lowercase()
        )));
        Ok(SpdyClient {
            io: Box::new(io),
            codec: Codec::new(),
        })
    }

    /// SPDY tunnelled in WebSocket binary messages, as client-go's
    /// port-forward over WebSocket speaks it.
    async fn tunnel(url: &str) -> SpdyClient {
        let mut req = url
            .replace("http://", "ws://")
            .into_client_request()
            .unwrap();
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "SPDY/3.1+portforward.k8s.io".parse().unwrap(),
        );
        let host = url
            .strip_prefix("http://")
            .unwrap()
            .split('/')
            .next()
            .unwrap();
        let tcp = TcpStream::connect(host).await.unwrap();
        let (ws, response) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
        assert_eq!(
            response.headers()["sec-websocket-protocol"],
            "SPDY/3.1+portforward.k8s.io"
        );
        SpdyClient {
            io: Box::new(super::websocket::tunnel(ws)),
            codec: Codec::new(),
        }
    }

    async fn send(&mut self, frame: Frame) {
        let mut buf = Vec::new();
        self.codec.encode(&frame, &mut buf).unwrap();
        self.io.write_all(&buf).await.unwrap();
    }

    async fn open(&mut self, id: u32, headers: &[(&str, &str)]) {
        let headers = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        self.send(Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers,
        })
        .await;
    }

    async fn recv(&mut self) -> Option<Frame> {
        let mut head = [0u8; HEADER_LEN];
        self.io.read_exact(&mut head).await.ok()?;
        let h = parse_head(&head);
        let mut payload = vec![0; h.len];
        self.io.read_exact(&mut payload).await.ok()?;
        Some(self.codec.decode(h, &payload).unwrap())
    }

    /// Everything each stream receives until the connection ends, and
    /// which streams were half-closed.
    async fn drain(&mut self) -> (HashMap<u32, Vec<u8>>, Vec<u32>) {
        let (mut data, mut fins) = (HashMap::<u32, Vec<u8>>::new(), Vec::new());
        while let Some(frame) = tokio::time::timeout(Duration::from_secs(10), self.recv())
            .await
            .unwrap()
        {
            if let Frame::Data {
                stream_id,
                fin,
                data: d,
            } = frame
            {
                data.entry(stream_id).or_default().extend(d);
                if fin {
                    fins.push(stream_id);
                }
            }
        }
        (data, fins)
    }
}

#[tokio::test]
async fn exec_over_spdy_carries_output_input_and_the_exit_code() {
    let fake = Arc::new(Fake::default());
    let server = start(Arc::clone(&fake)).await;
    let url = server
        .url_for(Pending::Exec {
            container_id: "c1".into(),
            cmd: vec!["hello".into(), "world".into()],
            opts: StdioOptions {
                stdin: true,
                stdout: true,
                stderr: true,
                tty: false,
            },
        })
        .unwrap();
    assert!(url.starts_with(&format!("http://{}/exec/", server.address())));
    let mut c = SpdyClient::connect(&url, "v4.channel.k8s.io")
        .await
        .unwrap();
    c.open(1, &[("streamType", "error")]).await;
    c.open(3, &[("streamType", "stdin")]).await;
    c.open(5, &[("streamType", "stdout")]).await;
    c.open(7, &[("streamType", "stderr")]).await;
    for id in [1, 3, 5, 7] {
        assert!(
            matches!(c.recv().await, Some(Frame::SynReply { stream_id, .. }) if stream_id == id)
        );
    }
    c.send(Frame::Data {
        stream_id: 3,
        fin: true,
        data: b"typed".to_vec(),
    })
    .await;
    let (data, fins) = c.drain().await;
    assert_eq!(data[&5], b"out:hello world");
    assert_eq!(data[&7], b"TYPED");
    let status: serde_json::Value = serde_json::from_slice(&data[&1]).unwrap();
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "3");
    for id in [1, 5, 7] {
        assert!(fins.contains(&id), "stream {id} closed: {fins:?}");
    }
    // The URL served once.
    let again = SpdyClient::connect(&url, "v4.channel.k8s.io").await;
    assert!(again.err().unwrap().contains("404"));
}

#[tokio::test]
async fn exec_over_spdy_with_a_tty_takes_resizes() {
    let fake = Arc::new(Fake::default());
    let server = start(Arc::clone(&fake)).await;
    let url = server
        .url_for(Pending::Exec {
            container_id: "c1".into(),
            cmd: vec!["ok".into()],
            opts: StdioOptions {
                stdin: false,
                stdout: true,
                stderr: false,
                tty: true,
            },
        })
        .unwrap();
    let refused = SpdyClient::connect(&url, "v2.channel.k8s.io").await;
    assert!(refused.err().unwrap().contains("403"));
    let url = server
        .url_for(Pending::Exec {
            container_id: "c1".into(),
            cmd: vec!["ok".into()],
            opts: StdioOptions {
                stdin: false,
                stdout: true,
                stderr: false,
                tty: true,
            },
        })
        .unwrap();
    let mut c = SpdyClient::connect(&url, "v4.channel.k8s.io")
        .await
        .unwrap();
    c.open(1, &[("streamType", "error")]).await;
    c.open(3, &[("streamType", "stdout")]).await;
    c.open(5, &[("streamType", "resize")]).await;
    c.send(Frame::Data {
        stream_id: 5,
        fin: false,
        data: br#"{"Width":120,"Height":40}"#.to_vec(),
    })
    .await;
    let (data, _) = c.drain().await;
    assert_eq!(data[&3], b"out:ok");
    assert_eq!(
        String::from_utf8_lossy(&data[&1]),
        r#"{"metadata":{},"status":"Success"}"#
    );
    assert_eq!(
        *fake.resizes.lock().unwrap(),
        [TermSize {
            width: 120,
            height: 40
        }]
    );
}

#[tokio::test]
async fn exec_over_websocket_v5_half_closes_stdin() {
    let server = start(Arc::default()).await;
    let url = server
        .url_for(Pending::Exec {
            container_id: "c1".into(),
            cmd: vec!["abcd".into()],
            opts: StdioOptions {
                stdin: true,
                stdout: true,
                stderr: true,
                tty: false,
            },
        })
        .unwrap();
    let mut req = url
        .replace("http://", "ws://")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v5.channel.k8s.io, v4.channel.k8s.io".parse().unwrap(),
    );
    let tcp = TcpStream::connect(server.address()).await.unwrap();
    let (mut ws, response) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "v5.channel.k8s.io"
    );
    ws.send(Message::binary(b"\x00ping".to_vec()))
        .await
        .unwrap();
    ws.send(Message::binary(vec![255, 0])).await.unwrap();
    let mut channels: HashMap<u8, Vec<u8>> = HashMap::new();
    while let Some(Ok(message)) = ws.next().await {
        if let Message::Binary(data) = message {
            channels.entry(data[0]).or_default().extend(&data[1..]);
        }
    }
    assert_eq!(channels[&1], b"out:abcd");
    assert_eq!(channels[&2], b"PING");
    let status: serde_json::Value = serde_json::from_slice(&channels[&3]).unwrap();
    assert_eq!(status["details"]["causes"][0]["message"], "2");
}

async fn port_forward_copies_both_ways_and_reports_errors(tunnelled: bool) {
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = echo.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut conn, _) = echo.accept().await.unwrap();
        let mut got = Vec::new();
        conn.read_to_end(&mut got).await.unwrap();
        conn.write_all(&got.to_ascii_uppercase()).await.unwrap();
    });
    let fake = Arc::new(Fake::default());
    *fake.echo_port.lock().unwrap() = Some(port);
    let server = start(fake).await;
    let url = server
        .url_for(Pending::PortForward {
            sandbox_id: "p1".into(),
        })
        .unwrap();
    let mut c = if tunnelled {
        SpdyClient::tunnel(&url).await
    } else {
        SpdyClient::connect(&url, "portforward.k8s.io")
            .await
            .unwrap()
    };
    let port = port.to_string();
    c.open(
        1,
        &[("streamType", "error"), ("port", &port), ("requestID", "0")],
    )
    .await;
    c.open(
        3,
        &[("streamType", "data"), ("port", &port), ("requestID", "0")],
    )
    .await;
    c.open(
        5,
        &[("streamType", "error"), ("port", "1"), ("requestID", "1")],
    )
    .await;
    c.open(
        7,
        &[("streamType", "data"), ("port", "1"), ("requestID", "1")],
    )
    .await;
    c.send(Frame::Data {
        stream_id: 3,
        fin: true,
        data: b"shout".to_vec(),
    })
    .await;
    let (mut data, mut fins) = (HashMap::<u32, Vec<u8>>::new(), Vec::new());
    while fins.len() < 4 {
        match tokio::time::timeout(Duration::from_secs(10), c.recv())
            .await
            .unwrap()
        {
            Some(Frame::Data {
                stream_id,
                fin,
                data: d,
            }) => {
                data.entry(stream_id).or_default().extend(d);
                if fin {
                    fins.push(stream_id);
                }
            }
            Some(_) => {}
            None => break,
        }
    }
    assert_eq!(data[&3], b"SHOUT");
    assert!(data[&1].is_empty(), "no error on the good connection");
    let error = String::from_utf8_lossy(&data[&5]).to_string();
    assert!(error.contains("connection refused on port 1"), "{error}");
    fins.sort();
    assert_eq!(fins, [1, 3, 5, 7]);
}

#[tokio::test]
async fn port_forward_over_spdy_copies_both_ways_and_reports_errors() {
    port_forward_copies_both_ways_and_reports_errors(false).await;
}

#[tokio::test]
async fn port_forward_over_spdy_in_websocket_does_the_same() {
    port_forward_copies_both_ways_and_reports_errors(true).await;
}

#[test]
fn tokens_serve_once_and_expire() {
    let cache = Cache::default();
    let request = Pending::PortForward {
        sandbox_id: "p".into(),
    };
    let token = cache.insert(request.clone()).unwrap();
    assert_eq!(token.len(), 22);
    assert_eq!(cache.take(&token), Some(request.clone()));
    assert_eq!(cache.take(&token), None);
    let old = cache.insert(request).unwrap();
    cache.lock().get_mut(&old).unwrap().1 = Instant::now() - TOKEN_TTL;
    assert_eq!(cache.take(&old), None);
}

#[test]
fn statuses_are_kubernetes_statuses() {
    let ok: serde_json::Value = serde_json::from_slice(&status_json(&Outcome::Exited(0))).unwrap();
    assert_eq!(ok, serde_json::json!({"metadata": {}, "status": "Success"}));
    let failed: serde_json::Value =
        serde_json::from_slice(&status_json(&Outcome::Failed("no such container".into()))).unwrap();
    assert_eq!(failed["status"], "Failure");
    assert_eq!(failed["message"], "no such container");
}

#[tokio::test]
async fn a_server_on_every_address_hands_out_loopback_urls() {
    let (server, _listener) = Server::bind("0.0.0.0:0".parse().unwrap(), Arc::new(Fake::default()))
        .await
        .unwrap();
    let url = server
        .url_for(Pending::PortForward {
            sandbox_id: "p".into(),
        })
        .unwrap();
    let port = server.address().port();
    assert!(
        url.starts_with(&format!("http://127.0.0.1:{port}/portforward/")),
        "{url}"
    );
}
