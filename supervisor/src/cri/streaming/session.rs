//! A SPDY/3.1 connection, server side: a reader task that accepts the
//! client's streams (answering each SYN_STREAM with a SYN_REPLY, as
//! kubelet's server does) and routes their data, and a writer task that
//! owns the socket's write half and the header compressor.
//!
//! Flow control: client-go's SPDY (moby/spdystream) neither sends nor
//! honours WINDOW_UPDATE, so neither does this side; back-pressure comes
//! from the bounded channels and the socket itself.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::spdy::{self, Codec, Frame, Headers, FLAG_FIN, HEADER_LEN};

/// Largest data frame this side sends.
const MAX_DATA_FRAME: usize = 32 * 1024;
/// How long a closed session waits for the client to hang up.
const LINGER: Duration = Duration::from_secs(5);

/// What the writer task is asked to do.
enum Out {
    Frame(Frame),
    /// Send nothing more: flush and shut the write half down.
    Shutdown,
}

/// A stream the client opened.
pub struct IncomingStream {
    pub id: u32,
    pub headers: Headers,
    /// The client's data; `None` once it half-closed the stream (or reset
    /// it, or the connection ended).
    pub data: mpsc::Receiver<Vec<u8>>,
    pub writer: StreamWriter,
}

impl IncomingStream {
    pub fn header(&self, name: &str) -> Option<&str> {
        spdy::header(&self.headers, name)
    }
}

/// This side's half of a stream.
#[derive(Clone)]
pub struct StreamWriter {
    id: u32,
    out: mpsc::Sender<Out>,
}

impl StreamWriter {
    /// Sends `data` on the stream.
    pub async fn write(&self, data: &[u8]) -> io::Result<()> {
        for chunk in data.chunks(MAX_DATA_FRAME) {
            self.send(Frame::Data {
                stream_id: self.id,
                fin: false,
                data: chunk.to_vec(),
            })
            .await?;
        }
        Ok(())
    }

    /// Half-closes the stream: this side sends nothing more.
    pub async fn close(&self) -> io::Result<()> {
        self.send(Frame::Data {
            stream_id: self.id,
            fin: true,
            data: Vec::new(),
        })
        .await
    }

    /// Resets the stream.
    pub async fn reset(&self) -> io::Result<()> {
        self.send(Frame::RstStream {
            stream_id: self.id,
            status: spdy::RST_CANCEL,
        })
        .await
    }

    async fn send(&self, frame: Frame) -> io::Result<()> {
        self.out
            .send(Out::Frame(frame))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
    }
}

/// A running session.
pub struct Session {
    out: mpsc::Sender<Out>,
    reader: tokio::task::JoinHandle<()>,
    writer: tokio::task::JoinHandle<()>,
    /// The highest stream id the client opened.
    last_stream: Arc<Mutex<u32>>,
}

type Routes = Arc<Mutex<HashMap<u32, mpsc::Sender<Vec<u8>>>>>;

impl Session {
    /// Starts serving a connection; the client's streams arrive on the
    /// returned channel, which ends with the connection.
    pub fn start<S>(io: S) -> (Session, mpsc::Receiver<IncomingStream>)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read, write) = tokio::io::split(io);
        let (out_tx, out_rx) = mpsc::channel::<Out>(64);
        let (streams_tx, streams_rx) = mpsc::channel(16);
        // Compression and decompression contexts are independent: one
        // codec per direction.
        let writer = tokio::spawn(write_frames(write, Codec::new(), out_rx));
        let last_stream = Arc::new(Mutex::new(0));
        let reader = tokio::spawn(read_frames(
            read,
            Codec::new(),
            out_tx.clone(),
            streams_tx,
            Arc::clone(&last_stream),
        ));
        (
            Session {
                out: out_tx,
                reader,
                writer,
                last_stream,
            },
            streams_rx,
        )
    }

    /// Ends the session: GOAWAY, the write half shut once everything
    /// queued is sent, then waits a moment for the client to hang up (so
    /// the socket is not reset under data it has not read yet).
    pub async fn close(self) {
        let last = *self.last_stream.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self
            .out
            .send(Out::Frame(Frame::GoAway {
                last_good_stream_id: last,
                status: 0,
            }))
            .await;
        let _ = self.out.send(Out::Shutdown).await;
        drop(self.out);
        let _ = self.writer.await;
        let mut reader = self.reader;
        if tokio::time::timeout(LINGER, &mut reader).await.is_err() {
            reader.abort();
        }
    }

    /// Waits until the client hangs up.
    pub async fn wait_closed(&mut self) {
        let _ = (&mut self.reader).await;
    }
}

async fn write_frames<W: AsyncWrite>(write: W, mut codec: Codec, mut rx: mpsc::Receiver<Out>) {
    let mut write = std::pin::pin!(write);
    let mut buf = Vec::new();
    while let Some(msg) = rx.recv().await {
        match msg {
            Out::Frame(frame) => {
                buf.clear();
                if let Err(e) = codec.encode(&frame, &mut buf) {
                    tracing::debug!("spdy: {e}");
                    continue;
                }
                // Batch what is already queued into one write.
                let mut last = false;
                loop {
                    match rx.try_recv() {
                        Ok(Out::Frame(more)) => {
                            if let Err(e) = codec.encode(&more, &mut buf) {
                                tracing::debug!("spdy: {e}");
                            }
                        }
                        Ok(Out::Shutdown) => {
                            last = true;
                            break;
                        }
                        Err(_) => break,
                    }
                }
                if write.write_all(&buf).await.is_err() || write.flush().await.is_err() {
                    return;
                }
                if last {
                    let _ = write.shutdown().await;
                    return;
                }
            }
            Out::Shutdown => {
                let _ = write.flush().await;
                let _ = write.shutdown().await;
                return;
            }
        }
    }
}

async fn read_frames<R: AsyncRead>(
    read: R,
    mut codec: Codec,
    out: mpsc::Sender<Out>,
    streams: mpsc::Sender<IncomingStream>,
    last_stream: Arc<Mutex<u32>>,
) {
    let mut read = std::pin::pin!(read);
    let routes: Routes = Arc::default();
    let route = |id: u32| {
        routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    };
    let unroute = |id: u32| routes.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    let mut head = [0u8; HEADER_LEN];
    let mut payload = Vec::new();
    loop {
        if read.read_exact(&mut head).await.is_err() {
            break;
        }
        let h = spdy::parse_head(&head);
        payload.resize(h.len, 0);
        if read.read_exact(&mut payload).await.is_err() {
            break;
        }
        let frame = match codec.decode(h, &payload) {
            Ok(f) => f,
            Err(e) => {
                // A broken header block leaves the compression contexts
                // out of step: the connection cannot go on.
                tracing::debug!("spdy: {e}");
                let _ = out
                    .send(Out::Frame(Frame::GoAway {
                        last_good_stream_id: 0,
                        status: 1,
                    }))
                    .await;
                break;
            }
        };
        match frame {
            Frame::SynStream {
                stream_id,
                flags,
                headers,
                ..
            } => {
                *last_stream.lock().unwrap_or_else(|e| e.into_inner()) = stream_id;
                let (tx, rx) = mpsc::channel(32);
                if flags & FLAG_FIN == 0 {
                    routes
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(stream_id, tx);
                }
                let writer = StreamWriter {
                    id: stream_id,
                    out: out.clone(),
                };
                let reply = Frame::SynReply {
                    stream_id,
                    fin: false,
                    headers: Vec::new(),
                };
                if out.send(Out::Frame(reply)).await.is_err() {
                    break;
                }
                let stream = IncomingStream {
                    id: stream_id,
                    headers,
                    data: rx,
                    writer,
                };
                if streams.send(stream).await.is_err() {
                    // Nobody takes new streams any more: refuse it.
                    unroute(stream_id);
                    let _ = out
                        .send(Out::Frame(Frame::RstStream {
                            stream_id,
                            status: spdy::RST_PROTOCOL_ERROR,
                        }))
                        .await;
                }
            }
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                if let Some(tx) = route(stream_id) {
                    if !data.is_empty() && tx.send(data).await.is_err() {
                        // The stream's reader is gone: drop what comes.
                        unroute(stream_id);
                    }
                }
                if fin {
                    unroute(stream_id);
                }
            }
            Frame::RstStream { stream_id, .. } => {
                unroute(stream_id);
            }
            Frame::Headers {
                stream_id,
                fin: true,
                ..
            } => {
                unroute(stream_id);
            }
            // A client's pings have odd ids: answered with the same frame.
            Frame::Ping { id } if id % 2 == 1 => {
                if out.send(Out::Frame(Frame::Ping { id })).await.is_err() {
                    break;
                }
            }
            // GOAWAY: the client opens no more streams; the ones open go
            // on until the connection ends.
            Frame::GoAway { .. }
            | Frame::Ping { .. }
            | Frame::Headers { .. }
            | Frame::SynReply { .. }
            | Frame::Settings { .. }
            | Frame::WindowUpdate { .. }
            | Frame::Unknown { .. } => {}
        }
    }
    // The connection is over: every stream's data ends.
    routes.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's side of the framing, for tests.
    struct Client {
        codec: Codec,
        io: tokio::io::DuplexStream,
    }

    impl Client {
        async fn send(&mut self, frame: Frame) {
            let mut buf = Vec::new();
            self.codec.encode(&frame, &mut buf).unwrap();
            self.io.write_all(&buf).await.unwrap();
        }

        async fn recv(&mut self) -> Option<Frame> {
            let mut head = [0u8; HEADER_LEN];
            self.io.read_exact(&mut head).await.ok()?;
            let h = spdy::parse_head(&head);
            let mut payload = vec![0; h.len];
            self.io.read_exact(&mut payload).await.ok()?;
            Some(self.codec.decode(h, &payload).unwrap())
        }
    }

    #[tokio::test]
    async fn streams_are_accepted_replied_and_routed() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (session, mut streams) = Session::start(a);
        let mut client = Client {
            codec: Codec::new(),
            io: b,
        };
        client
            .send(Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers: vec![("streamType".into(), "stdin".into())],
            })
            .await;
        let mut stream = streams.recv().await.unwrap();
        assert_eq!(stream.header("streamtype"), Some("stdin"));
        assert_eq!(
            client.recv().await,
            Some(Frame::SynReply {
                stream_id: 1,
                fin: false,
                headers: Vec::new()
            })
        );
        client
            .send(Frame::Data {
                stream_id: 1,
                fin: true,
                data: b"in".to_vec(),
            })
            .await;
        assert_eq!(stream.data.recv().await.as_deref(), Some(&b"in"[..]));
        assert_eq!(stream.data.recv().await, None, "FIN ends the data");
        client.send(Frame::Ping { id: 3 }).await;
        assert_eq!(client.recv().await, Some(Frame::Ping { id: 3 }));
        stream.writer.write(b"out").await.unwrap();
        stream.writer.close().await.unwrap();
        assert_eq!(
            client.recv().await,
            Some(Frame::Data {
                stream_id: 1,
                fin: false,
                data: b"out".to_vec()
            })
        );
        assert!(matches!(
            client.recv().await,
            Some(Frame::Data { fin: true, .. })
        ));
        let closing = tokio::spawn(session.close());
        assert!(matches!(
            client.recv().await,
            Some(Frame::GoAway {
                last_good_stream_id: 1,
                ..
            })
        ));
        assert_eq!(client.recv().await, None, "write half shut");
        drop(client);
        closing.await.unwrap();
    }
}
