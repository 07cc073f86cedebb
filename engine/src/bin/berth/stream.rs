//! A hijacked attach or exec connection relayed to the user's stdio: the
//! container's output demultiplexed from Docker's 8-byte stdcopy frames
//! (or copied as is with a tty), stdin copied in (the write side shut at
//! its end, as docker's `CloseWrite`), the terminal raw and its size kept
//! in step with a tty, and the detach keys ending the relay.

use std::io::{Read, Write};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::client::Upgraded;
use crate::terminal::{DetachScanner, RawMode};

/// How a relay ended.
#[derive(Debug, PartialEq, Eq)]
pub enum RelayEnd {
    /// The container's output ended.
    Output,
    /// The user typed the detach keys.
    Detached,
}

pub struct RelayOptions {
    pub tty: bool,
    /// Copy our stdin into the connection.
    pub stdin: bool,
    /// The detach sequence, with a tty.
    pub detach_keys: Vec<u8>,
}

/// Reads the user's stdin on a thread of its own (a blocking read must
/// never hold the process's exit), chunk by chunk.
fn stdin_chunks() -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

/// Relays `conn` until the output ends or the user detaches.
pub async fn relay(conn: Upgraded, opts: RelayOptions) -> std::io::Result<RelayEnd> {
    let _raw = if opts.tty && opts.stdin {
        RawMode::enable(libc::STDIN_FILENO).ok()
    } else {
        None
    };
    let (mut reader, mut writer) = tokio::io::split(conn);
    let output = async move {
        if opts.tty {
            copy_raw(&mut reader).await
        } else {
            demux(&mut reader).await
        }
    };
    let input = async move {
        if !opts.stdin {
            return std::future::pending::<std::io::Result<RelayEnd>>().await;
        }
        let mut chunks = stdin_chunks();
        let mut scanner = DetachScanner::new(if opts.tty {
            opts.detach_keys
        } else {
            Vec::new()
        });
        while let Some(chunk) = chunks.recv().await {
            let (pass, detached) = scanner.scan(&chunk);
            writer.write_all(&pass).await?;
            writer.flush().await?;
            if detached {
                return Ok(RelayEnd::Detached);
            }
        }
        writer.shutdown().await?;
        // Input is done; the relay ends with the output.
        std::future::pending::<std::io::Result<RelayEnd>>().await
    };
    tokio::select! {
        r = output => r,
        r = input => r,
    }
}

async fn copy_raw(reader: &mut (impl AsyncReadExt + Unpin)) -> std::io::Result<RelayEnd> {
    let mut buf = vec![0u8; 32 * 1024];
    let mut stdout = std::io::stdout();
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Ok(RelayEnd::Output);
        }
        stdout.write_all(&buf[..n])?;
        stdout.flush()?;
    }
}

/// Docker's stdcopy: frames of `[stream, 0, 0, 0, size (u32 BE)]` then
/// `size` bytes; stream 1 is stdout, 2 stderr.
async fn demux(reader: &mut (impl AsyncReadExt + Unpin)) -> std::io::Result<RelayEnd> {
    let mut header = [0u8; 8];
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    loop {
        match reader.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(RelayEnd::Output),
            Err(e) => return Err(e),
        }
        let size = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
        let mut frame = vec![0u8; size];
        reader.read_exact(&mut frame).await?;
        if header[0] == 2 {
            stderr.write_all(&frame)?;
            stderr.flush()?;
        } else {
            stdout.write_all(&frame)?;
            stdout.flush()?;
        }
    }
}
