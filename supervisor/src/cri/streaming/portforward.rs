//! Port-forward over SPDY (`portforward.k8s.io`), as kubelet serves it:
//! for each connection it forwards, the client opens two streams with the
//! same `requestID` and the pod's `port`, `streamType` `error` and `data`.
//! The server connects to the port on the pod's loopback (in its network
//! namespace) and copies bytes between the data stream and that socket;
//! the client's half-close of the data stream shuts the socket's write
//! side, the socket's end half-closes the data stream. A failure is a
//! message on the error stream, which is closed when the connection is
//! done.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::session::{IncomingStream, Session};
use super::Backend;

/// Serves a port-forward connection until the client hangs up.
pub async fn serve<S>(backend: Arc<dyn Backend>, io: S, sandbox_id: String)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (session, mut incoming) = Session::start(io);
    let mut pairs: HashMap<String, (Option<IncomingStream>, Option<IncomingStream>)> =
        HashMap::new();
    while let Some(stream) = incoming.recv().await {
        let (Some(id), Some(kind)) = (
            stream.header("requestid").map(str::to_owned),
            stream.header("streamtype").map(str::to_owned),
        ) else {
            tracing::debug!(
                stream = stream.id,
                "port-forward stream without requestID or streamType"
            );
            let _ = stream.writer.reset().await;
            continue;
        };
        let pair = pairs.entry(id.clone()).or_default();
        match kind.as_str() {
            "error" => pair.0 = Some(stream),
            "data" => pair.1 = Some(stream),
            other => {
                tracing::debug!(stream_type = other, "unexpected port-forward stream type");
                let _ = stream.writer.reset().await;
                continue;
            }
        }
        if matches!(pairs.get(&id), Some((Some(_), Some(_)))) {
            if let Some((Some(error), Some(data))) = pairs.remove(&id) {
                let backend = Arc::clone(&backend);
                let sandbox = sandbox_id.clone();
                tokio::spawn(async move { forward(backend.as_ref(), &sandbox, error, data).await });
            }
        }
    }
    session.close().await;
}

/// Forwards one connection.
async fn forward(
    backend: &dyn Backend,
    sandbox_id: &str,
    error: IncomingStream,
    data: IncomingStream,
) {
    let port = data
        .header("port")
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|p| *p > 0);
    let result = match port {
        None => Err(format!(
            "invalid port {:?}: give a number from 1 to 65535",
            data.header("port").unwrap_or("")
        )),
        Some(port) => backend.connect(sandbox_id, port).await,
    };
    let mut data = data;
    match result {
        Err(message) => {
            let port = port.map(|p| p.to_string()).unwrap_or_default();
            tracing::debug!(sandbox = sandbox_id, port, "port-forward: {message}");
            let _ = error
                .writer
                .write(
                    format!("failed to connect to localhost:{port} inside the pod: {message}")
                        .as_bytes(),
                )
                .await;
            let _ = data.writer.close().await;
        }
        Ok(socket) => {
            let (mut read, mut write) = socket.into_split();
            let mut input = std::mem::replace(&mut data.data, tokio::sync::mpsc::channel(1).1);
            let inbound = tokio::spawn(async move {
                while let Some(bytes) = input.recv().await {
                    if write.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                let _ = write.shutdown().await;
            });
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match read.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if data.writer.write(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = data.writer.close().await;
            // The other direction gets a moment to finish (the client
            // waits for the error stream to close before it closes its
            // side), as kubelet's runtimes do.
            let mut inbound = inbound;
            if tokio::time::timeout(Duration::from_secs(1), &mut inbound)
                .await
                .is_err()
            {
                inbound.abort();
            }
        }
    }
    let _ = error.writer.close().await;
}
