//! An async client of a shim's control socket (the protocol is
//! `berth_shim::protocol`): one connection per call, so calls to one shim
//! never wait on each other, and a connection whose caller went away is
//! simply dropped.

use std::io;
use std::path::{Path, PathBuf};

use berth_shim::protocol::{
    frame_header, parse_frame_header, Refusal, Request, Response, ShimEvent, FRAME_HEADER_LEN,
    MAX_FRAME_LEN, STDIN,
};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

/// Longest response line accepted from a shim.
const MAX_LINE: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// The shim could not be reached, or the connection broke.
    #[error("shim at {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// The shim answered with something that is not its protocol.
    #[error("shim at {path} answered badly: {detail}")]
    BadResponse { path: PathBuf, detail: String },
    /// The shim refused the request: why (its kind), and its message.
    #[error("{0}")]
    Refused(Refusal),
}

/// A connection to one shim.
pub struct ShimConn {
    path: PathBuf,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl ShimConn {
    pub async fn connect(path: &Path) -> Result<ShimConn, ShimError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| ShimError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        let (r, w) = stream.into_split();
        Ok(ShimConn {
            path: path.to_path_buf(),
            reader: BufReader::new(r),
            writer: w,
        })
    }

    fn io(&self, source: io::Error) -> ShimError {
        ShimError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn bad(&self, detail: impl Into<String>) -> ShimError {
        ShimError::BadResponse {
            path: self.path.clone(),
            detail: detail.into(),
        }
    }

    /// Sends a request and reads its answer: the `ok` value or the shim's
    /// refusal.
    pub async fn call(&mut self, request: &Request) -> Result<Value, ShimError> {
        let mut line = serde_json::to_vec(request).map_err(|e| self.bad(e.to_string()))?;
        line.push(b'\n');
        self.writer.write_all(&line).await.map_err(|e| self.io(e))?;
        let line = self.read_line().await?;
        match serde_json::from_str::<Response>(&line) {
            Ok(Response::Ok(v)) => Ok(v),
            Ok(Response::Error(refusal)) => Err(ShimError::Refused(refusal)),
            Err(e) => Err(self.bad(format!("{e}: {line:?}"))),
        }
    }

    /// `call`, with the answer decoded as `T`.
    pub async fn call_as<T: DeserializeOwned>(
        &mut self,
        request: &Request,
    ) -> Result<T, ShimError> {
        let value = self.call(request).await?;
        serde_json::from_value(value.clone()).map_err(|e| self.bad(format!("{e}: {value}")))
    }

    async fn read_line(&mut self) -> Result<String, ShimError> {
        let mut line = String::new();
        let n = (&mut self.reader)
            .take(MAX_LINE)
            .read_line(&mut line)
            .await
            .map_err(|e| self.io(e))?;
        if n == 0 {
            return Err(self.io(io::ErrorKind::UnexpectedEof.into()));
        }
        Ok(line)
    }

    /// Subscribes to the shim's events: the exits that already happened,
    /// then live ones, until the shim exits.
    pub async fn events(mut self) -> Result<EventStream, ShimError> {
        self.call(&Request::Events).await?;
        Ok(EventStream { conn: self })
    }

    /// Attaches to a process: its output frames, and (with `stdin`) its
    /// input.
    pub async fn attach(
        mut self,
        exec_id: Option<&str>,
        stdin: bool,
    ) -> Result<(AttachOutput, AttachInput), ShimError> {
        self.call(&Request::Attach {
            exec_id: exec_id.map(str::to_owned),
            stdin,
        })
        .await?;
        Ok((
            AttachOutput {
                reader: self.reader,
            },
            AttachInput {
                writer: self.writer,
            },
        ))
    }
}

/// A shim's events.
pub struct EventStream {
    conn: ShimConn,
}

impl EventStream {
    /// The next event; `None` once the shim has closed the stream.
    pub async fn next(&mut self) -> Result<Option<ShimEvent>, ShimError> {
        loop {
            let line = match self.conn.read_line().await {
                Ok(line) => line,
                Err(ShimError::Io { source, .. })
                    if source.kind() == io::ErrorKind::UnexpectedEof =>
                {
                    return Ok(None)
                }
                Err(e) => return Err(e),
            };
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<ShimEvent>(&line) {
                Ok(event) => return Ok(Some(event)),
                // An event of a newer shim: not ours to act on.
                Err(_)
                    if serde_json::from_str::<serde_json::Value>(&line)
                        .is_ok_and(|v| v.get("type").is_some_and(serde_json::Value::is_string)) =>
                {
                    tracing::debug!(line = line.trim(), "unknown shim event skipped");
                }
                Err(e) => return Err(self.conn.bad(format!("{e}: {line:?}"))),
            }
        }
    }
}

/// The output side of an attached process.
pub struct AttachOutput {
    reader: BufReader<OwnedReadHalf>,
}

impl AttachOutput {
    /// The next frame, `(stream, bytes)`; `None` once the process has
    /// exited and its output is drained.
    pub async fn next(&mut self) -> io::Result<Option<(u8, Vec<u8>)>> {
        let mut header = [0u8; FRAME_HEADER_LEN];
        match self.reader.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let (stream, len) = parse_frame_header(&header);
        if len > MAX_FRAME_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the shim sent a frame of {len} bytes"),
            ));
        }
        let mut data = vec![0u8; len];
        self.reader.read_exact(&mut data).await?;
        Ok(Some((stream, data)))
    }
}

/// The input side of an attached process.
pub struct AttachInput {
    writer: OwnedWriteHalf,
}

impl AttachInput {
    pub async fn write(&mut self, data: &[u8]) -> io::Result<()> {
        for chunk in data.chunks(MAX_FRAME_LEN) {
            self.writer
                .write_all(&frame_header(STDIN, chunk.len()))
                .await?;
            self.writer.write_all(chunk).await?;
        }
        Ok(())
    }

    /// Closes the process's stdin once what was written before is in.
    pub async fn close(&mut self) -> io::Result<()> {
        self.writer.write_all(&frame_header(STDIN, 0)).await
    }
}
