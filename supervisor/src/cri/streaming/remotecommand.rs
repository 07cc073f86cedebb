//! Exec and attach over the client's transport, as kubelet's
//! `remotecommand` server speaks them.
//!
//! SPDY (`v4.channel.k8s.io`): the client opens one stream per
//! `streamType` header (`error` first, then `stdin`, `stdout`, `stderr`
//! unless there is a terminal, `resize` with a terminal); the server waits
//! (up to 30 s) for as many as the request asked for. WebSocket
//! (`v4`/`v5.channel.k8s.io`): every binary message starts with its
//! channel, 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize; v5 adds 255,
//! the CLOSE signal (`[255, channel]`) with which the client half-closes
//! stdin.
//!
//! Either way the resize stream carries JSON `{"Width":W,"Height":H}`
//! objects back to back, and once the process is done the error stream
//! carries a JSON `Status` (success, or the exit code as a
//! `NonZeroExitCode` failure), then everything is closed.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::session::{IncomingStream, Session, StreamWriter};
use super::{status_json, Backend, Outcome, Pending, StdioOptions, StreamIo, TermSize};

/// How long the client has to open the streams it asked for.
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a finished WebSocket connection waits for the client's close.
const LINGER: Duration = Duration::from_secs(5);

const CH_STDIN: u8 = 0;
const CH_STDOUT: u8 = 1;
const CH_STDERR: u8 = 2;
const CH_ERROR: u8 = 3;
const CH_RESIZE: u8 = 4;
const CH_CLOSE: u8 = 255;

fn options(request: &Pending) -> Option<StdioOptions> {
    match request {
        Pending::Exec { opts, .. } | Pending::Attach { opts, .. } => Some(*opts),
        Pending::PortForward { .. } => None,
    }
}

/// Runs the request's process with `io`.
async fn run(backend: &dyn Backend, request: &Pending, io: StreamIo) -> Outcome {
    match request {
        Pending::Exec {
            container_id, cmd, ..
        } => backend.exec(container_id, cmd, io).await,
        Pending::Attach {
            container_id,
            stdin_once,
            ..
        } => backend.attach(container_id, *stdin_once, io).await,
        Pending::PortForward { .. } => Outcome::Failed("not an exec or attach".into()),
    }
}

/// Parses the resize stream's JSON objects as they come, in any chunks.
#[derive(Default)]
pub struct ResizeParser {
    buf: Vec<u8>,
}

impl ResizeParser {
    /// Adds `data`; the sizes it completed.
    pub fn push(&mut self, data: &[u8]) -> Vec<TermSize> {
        self.buf.extend_from_slice(data);
        let mut sizes = Vec::new();
        let mut stream = serde_json::Deserializer::from_slice(&self.buf).into_iter::<TermSize>();
        let mut used = 0;
        loop {
            match stream.next() {
                Some(Ok(size)) => {
                    sizes.push(size);
                    used = stream.byte_offset();
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(_)) => {
                    // Not a size: drop what was buffered and start over.
                    used = self.buf.len();
                    break;
                }
                None => {
                    used = self.buf.len();
                    break;
                }
            }
        }
        self.buf.drain(..used);
        sizes
    }
}

/// Copies an output channel onto a SPDY stream, then half-closes it.
fn pump_out(writer: StreamWriter) -> (mpsc::Sender<Vec<u8>>, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(16);
    let task = tokio::spawn(async move {
        while let Some(data) = rx.recv().await {
            if writer.write(&data).await.is_err() {
                return;
            }
        }
        let _ = writer.close().await;
    });
    (tx, task)
}

/// Serves an exec or attach over a SPDY connection.
pub async fn serve_spdy<S>(backend: Arc<dyn Backend>, io: S, request: Pending)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let Some(opts) = options(&request) else {
        return;
    };
    let (session, mut incoming) = Session::start(io);
    let expected = 1
        + usize::from(opts.stdin)
        + usize::from(opts.stdout)
        + usize::from(opts.stderr)
        + usize::from(opts.tty);
    let (mut error, mut stdin, mut stdout, mut stderr, mut resize) =
        (None, None, None, None, None::<IncomingStream>);
    let mut received = 0;
    let deadline = tokio::time::sleep(STREAM_CREATION_TIMEOUT);
    tokio::pin!(deadline);
    while received < expected {
        let stream = tokio::select! {
            s = incoming.recv() => match s {
                Some(s) => s,
                None => return session.close().await,
            },
            () = &mut deadline => {
                tracing::debug!("timed out waiting for the client to create streams");
                return session.close().await;
            }
        };
        let slot = match stream.header("streamtype") {
            Some("error") => &mut error,
            Some("stdin") => &mut stdin,
            Some("stdout") => &mut stdout,
            Some("stderr") => &mut stderr,
            Some("resize") => &mut resize,
            other => {
                tracing::debug!(stream_type = ?other, "unexpected stream type");
                let _ = stream.writer.reset().await;
                continue;
            }
        };
        *slot = Some(stream);
        received += 1;
    }
    let mut pumps = Vec::new();
    let mut io = StreamIo {
        stdin: None,
        stdout: None,
        stderr: None,
        resize: None,
        tty: opts.tty,
    };
    if let Some(mut s) = stdin {
        let (tx, rx) = mpsc::channel(16);
        io.stdin = Some(rx);
        tokio::spawn(async move {
            while let Some(data) = s.data.recv().await {
                if tx.send(data).await.is_err() {
                    break;
                }
            }
        });
    }
    if let Some(s) = stdout.filter(|_| opts.stdout) {
        let (tx, task) = pump_out(s.writer);
        io.stdout = Some(tx);
        pumps.push(task);
    }
    if let Some(s) = stderr.filter(|_| opts.stderr && !opts.tty) {
        let (tx, task) = pump_out(s.writer);
        io.stderr = Some(tx);
        pumps.push(task);
    }
    if let Some(mut s) = resize.filter(|_| opts.tty) {
        let (tx, rx) = mpsc::channel(4);
        io.resize = Some(rx);
        tokio::spawn(async move {
            let mut parser = ResizeParser::default();
            while let Some(data) = s.data.recv().await {
                for size in parser.push(&data) {
                    if tx.send(size).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
    let outcome = run(backend.as_ref(), &request, io).await;
    for pump in pumps {
        let _ = pump.await;
    }
    if let Some(e) = error {
        let _ = e.writer.write(&status_json(&outcome)).await;
        let _ = e.writer.close().await;
    }
    session.close().await;
}

/// Serves an exec or attach over a WebSocket connection.
pub async fn serve_websocket<S>(
    backend: Arc<dyn Backend>,
    ws: WebSocketStream<S>,
    v5: bool,
    request: Pending,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(opts) = options(&request) else {
        return;
    };
    let (mut sink, mut source) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(16);
    let writer = tokio::spawn(async move {
        while let Some(message) = out_rx.recv().await {
            let last = matches!(message, Message::Close(_));
            if sink.send(message).await.is_err() || last {
                break;
            }
        }
    });
    let (stdin_tx, stdin_rx) = mpsc::channel::<Vec<u8>>(16);
    let (resize_tx, resize_rx) = mpsc::channel::<TermSize>(4);
    let (gone_tx, mut gone_rx) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        let mut stdin = opts.stdin.then_some(stdin_tx);
        let mut parser = ResizeParser::default();
        while let Some(Ok(message)) = source.next().await {
            let data = match message {
                Message::Binary(data) => data,
                Message::Close(_) => break,
                _ => continue,
            };
            match data.first() {
                Some(&CH_STDIN) => {
                    if let Some(tx) = &stdin {
                        if tx.send(data[1..].to_vec()).await.is_err() {
                            stdin = None;
                        }
                    }
                }
                Some(&CH_RESIZE) if opts.tty => {
                    for size in parser.push(&data[1..]) {
                        let _ = resize_tx.send(size).await;
                    }
                }
                Some(&CH_CLOSE) if v5 && data.get(1) == Some(&CH_STDIN) => stdin = None,
                _ => {}
            }
        }
        drop(stdin);
        let _ = gone_tx.send(());
    });
    let mut pumps = Vec::new();
    let mut output = |channel: u8| {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(16);
        let out = out_tx.clone();
        pumps.push(tokio::spawn(async move {
            while let Some(data) = rx.recv().await {
                let mut message = Vec::with_capacity(data.len() + 1);
                message.push(channel);
                message.extend_from_slice(&data);
                if out.send(Message::binary(message)).await.is_err() {
                    return;
                }
            }
        }));
        tx
    };
    let io = StreamIo {
        stdin: opts.stdin.then_some(stdin_rx),
        stdout: opts.stdout.then(|| output(CH_STDOUT)),
        stderr: (opts.stderr && !opts.tty).then(|| output(CH_STDERR)),
        resize: opts.tty.then_some(resize_rx),
        tty: opts.tty,
    };
    let outcome = run(backend.as_ref(), &request, io).await;
    for pump in pumps {
        let _ = pump.await;
    }
    let mut status = vec![CH_ERROR];
    status.extend_from_slice(&status_json(&outcome));
    let _ = out_tx.send(Message::binary(status)).await;
    let _ = out_tx
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await;
    drop(out_tx);
    let _ = writer.await;
    // The client answers the close; then the connection is done.
    if tokio::time::timeout(LINGER, &mut gone_rx).await.is_err() {
        reader.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_messages_parse_in_any_chunks() {
        let mut p = ResizeParser::default();
        assert_eq!(p.push(br#"{"Width":80,"#), vec![]);
        assert_eq!(
            p.push(br#""Height":24}{"Width":100,"Height":30}{"Wid"#),
            vec![
                TermSize {
                    width: 80,
                    height: 24
                },
                TermSize {
                    width: 100,
                    height: 30
                }
            ]
        );
        assert_eq!(
            p.push(br#"th":1,"Height":2}"#),
            vec![TermSize {
                width: 1,
                height: 2
            }]
        );
        // Garbage is dropped, and parsing goes on after it.
        assert_eq!(p.push(b"nonsense"), vec![]);
        assert_eq!(
            p.push(br#"{"Width":5,"Height":6}"#),
            vec![TermSize {
                width: 5,
                height: 6
            }]
        );
    }
}
