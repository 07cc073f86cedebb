//! Streamed responses: bodies fed from a channel (logs, stats, events,
//! progress), Docker's stdcopy framing, and the connection upgrade of
//! attach and exec (`Upgrade: tcp`), after which the socket carries the
//! process's raw or framed output one way and its stdin the other.

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE, UPGRADE};
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{Body, Req, Response};
use crate::backend::AttachInput;
use crate::containers::attach::{DetachScanner, Scanned};

pub const RAW_STREAM: &str = "application/vnd.docker.raw-stream";
pub const MULTIPLEXED_STREAM: &str = "application/vnd.docker.multiplexed-stream";

/// A body that sends what the channel gives, as it comes.
pub fn channel_body(rx: mpsc::Receiver<Bytes>) -> Body {
    let frames = ReceiverStream::new(rx).map(|b| Ok::<_, std::io::Error>(Frame::data(b)));
    BodyExt::boxed(StreamBody::new(frames))
}

/// A streamed 200 response with this content type.
pub fn streamed(content_type: &'static str, rx: mpsc::Receiver<Bytes>) -> Response {
    let mut resp = hyper::Response::new(channel_body(rx));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// Docker's stdcopy frame: stream byte, three zeros, big-endian length.
pub fn frame(stream: u8, data: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(8 + data.len());
    buf.put_u8(stream);
    buf.put_bytes(0, 3);
    buf.put_u32(data.len() as u32);
    buf.put_slice(data);
    buf.freeze()
}

/// Output for the client: framed unless the process has a terminal.
pub fn encode_output(tty: bool, stream: u8, data: Bytes) -> Bytes {
    if tty {
        data
    } else {
        frame(stream, &data)
    }
}

/// The two directions of an attached process.
pub struct Pipes {
    pub tty: bool,
    pub input: Option<mpsc::Sender<AttachInput>>,
    pub output: mpsc::Receiver<(u8, Bytes)>,
    /// Close the process's stdin when the client closes its side.
    pub close_stdin_on_eof: bool,
    pub detach_keys: Vec<u8>,
    /// Dropped when the connection ends (an attach guard, say).
    pub keep: Box<dyn Send>,
    /// Told once the client holds the connection (an exec starts then).
    pub go: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Answers with the connection upgrade, or, for a client that did not ask
/// for one, a plain streamed body of the output.
pub fn hijack(req: &mut Req, pipes: Pipes) -> Response {
    let content_type = if pipes.tty {
        RAW_STREAM
    } else {
        MULTIPLEXED_STREAM
    };
    if !req.wants_upgrade() {
        let (tx, rx) = mpsc::channel(16);
        let Pipes {
            tty,
            mut output,
            keep,
            go,
            ..
        } = pipes;
        if let Some(go) = go {
            let _ = go.send(());
        }
        tokio::spawn(async move {
            let _keep = keep;
            while let Some((stream, data)) = output.recv().await {
                if tx.send(encode_output(tty, stream, data)).await.is_err() {
                    break;
                }
            }
        });
        return streamed(content_type, rx);
    }
    let Some(upgrade) = req.upgrade.take() else {
        return super::error_response(&super::ApiError::Internal(
            "connection cannot be upgraded".into(),
        ));
    };
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => pump(TokioIo::new(upgraded), pipes).await,
            Err(e) => tracing::debug!(error = %e, "connection upgrade failed"),
        }
    });
    let mut resp = hyper::Response::new(super::full(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static("tcp"));
    resp
}

async fn pump<T>(io: T, pipes: Pipes)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let Pipes {
        tty,
        input,
        mut output,
        close_stdin_on_eof,
        detach_keys,
        keep,
        go,
    } = pipes;
    if let Some(go) = go {
        let _ = go.send(());
    }
    // Docker watches for the detach keys whenever stdin is attached, tty or not.
    let _keep = keep;
    let (mut rd, mut wr) = tokio::io::split(io);
    let (detach_tx, mut detach_rx) = tokio::sync::oneshot::channel::<()>();
    // Client to process.
    let reader = tokio::spawn(async move {
        let mut scanner = DetachScanner::new(detach_keys);
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = match rd.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    if close_stdin_on_eof {
                        if let Some(input) = &input {
                            let _ = input.send(AttachInput::Close).await;
                        }
                    }
                    // The client's half-close: keep sending it output.
                    std::future::pending::<()>().await;
                    return;
                }
                Ok(n) => n,
            };
            let (data, detach) = match scanner.scan(&buf[..n]) {
                Scanned::Data(d) => (d, false),
                Scanned::Detach(d) => (d, true),
            };
            if let Some(input) = &input {
                if !data.is_empty()
                    && input
                        .send(AttachInput::Data(Bytes::from(data)))
                        .await
                        .is_err()
                {
                    // The process's stdin is gone; later input is dropped.
                }
            }
            if detach {
                let _ = detach_tx.send(());
                return;
            }
        }
    });
    // Process to client.
    loop {
        tokio::select! {
            item = output.recv() => match item {
                Some((stream, data)) => {
                    if wr.write_all(&encode_output(tty, stream, data)).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
            _ = &mut detach_rx => break,
        }
    }
    let _ = wr.flush().await;
    let _ = wr.shutdown().await;
    reader.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdcopy_frames() {
        let f = frame(2, b"oops");
        assert_eq!(&f[..], b"\x02\x00\x00\x00\x00\x00\x00\x04oops");
        assert_eq!(&encode_output(true, 1, Bytes::from_static(b"x"))[..], b"x");
    }
}
