//! `docker cp`: the archive API of a container (`HEAD`, `GET` and `PUT
//! /containers/{id}/archive`), on running and stopped containers alike,
//! through their volumes and bind mounts as the container sees them.
//!
//! - [`root`]: the container's root as a directory descriptor.
//! - [`paths`]: Docker's rules for a requested path and entry names.
//! - [`fs`]: resolution inside the root with `openat2(RESOLVE_IN_ROOT)`,
//!   and `*at` calls from there.
//! - [`read`]: a tar of a file or directory; [`extract`]: a tar unpacked.
//!
//! Archives are streamed through bounded channels by a blocking thread:
//! never whole in memory. `docs/engine.md` ("docker cp") tells the flow.

use std::io::{self, BufRead, Read, Write};
use std::os::fd::AsFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use nix::errno::Errno;
use nix::sys::stat::{FileStat, SFlag};
use serde_json::json;
use tokio::sync::mpsc;

use crate::backend::BackendError;
use crate::containers::Container;
use crate::Engine;

pub mod extract;
pub mod fs;
pub mod paths;
pub mod read;
pub mod root;
mod sys;

pub use extract::ExtractOptions;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("Could not find the file {path} in container {container}")]
    NotFound { path: String, container: String },
    #[error("extraction point is not a directory")]
    NotADirectory,
    #[error("container rootfs is marked read-only")]
    ReadOnlyRootfs,
    #[error("mounted volume is marked read-only")]
    ReadOnlyVolume,
    #[error("read-only file system: {path}")]
    ReadOnlyFile { path: String },
    #[error("{entry:?} is outside of {dest:?}")]
    Breakout { entry: String, dest: String },
    #[error("{0}")]
    DirNonDir(String),
    #[error("unhandled tar header type {kind} for {entry:?}")]
    UnknownEntry { entry: String, kind: String },
    #[error("read archive: {0}")]
    ReadArchive(io::Error),
    #[error("decompress archive with {tool}: {source}")]
    Decompress {
        tool: &'static str,
        source: io::Error,
    },
    #[error("resolve {path} in container: {source}")]
    Resolve { path: String, source: Errno },
    #[error("create {path}: {source}")]
    Create { path: String, source: Errno },
    #[error("write {path}: {source}")]
    Write { path: String, source: io::Error },
    #[error("{what} for the container's filesystem: {source}")]
    Mount { what: &'static str, source: Errno },
    #[error("{0}")]
    Snapshot(String),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: io::Error,
    },
    #[error("{what}: {source}")]
    Backend { what: String, source: BackendError },
}

type Result<T, E = ArchiveError> = std::result::Result<T, E>;

/// What `HEAD /containers/{id}/archive` tells of a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathStat {
    pub name: String,
    pub size: i64,
    /// Go's `os.FileMode` bits.
    pub mode: u32,
    pub mtime: SystemTime,
    pub link_target: String,
}

impl PathStat {
    /// The `X-Docker-Container-Path-Stat` header: base64 of the JSON.
    pub fn header_value(&self) -> String {
        let v = json!({
            "name": self.name,
            "size": self.size,
            "mode": self.mode,
            "mtime": crate::containers::record::format_time(Some(self.mtime)),
            "linkTarget": self.link_target,
        });
        base64::engine::general_purpose::STANDARD.encode(v.to_string())
    }

    pub fn is_dir(&self) -> bool {
        self.mode & GO_DIR != 0
    }
}

const GO_DIR: u32 = 1 << 31;

/// A Unix mode as Go's `os.FileMode`.
pub fn go_mode(mode: u32) -> u32 {
    let mut m = mode & 0o777;
    m |= match fs::kind(mode) {
        SFlag::S_IFDIR => GO_DIR,
        SFlag::S_IFLNK => 1 << 27,
        SFlag::S_IFIFO => 1 << 25,
        SFlag::S_IFSOCK => 1 << 24,
        SFlag::S_IFBLK => 1 << 26,
        SFlag::S_IFCHR => (1 << 26) | (1 << 21),
        _ => 0,
    };
    if mode & 0o4000 != 0 {
        m |= 1 << 23;
    }
    if mode & 0o2000 != 0 {
        m |= 1 << 22;
    }
    if mode & 0o1000 != 0 {
        m |= 1 << 20;
    }
    m
}

/// A requested path, located in an open root: its Docker name and the
/// resolved path of what it names (links followed, but not its last
/// element unless written `dir/` or `dir/.`).
struct Located {
    stat: PathStat,
    resolved: String,
}

fn locate(root: &root::ContainerRoot, path: &str, container: &str) -> Result<Located> {
    let not_found = || ArchiveError::NotFound {
        path: path.to_string(),
        container: container.to_string(),
    };
    let resolve_err = |source| match source {
        Errno::ENOENT | Errno::ENOTDIR => not_found(),
        source => ArchiveError::Resolve {
            path: path.to_string(),
            source,
        },
    };
    let abs = paths::absolute(path);
    let (dir, base) = paths::split(&abs);
    let dir = fs::follow_links(root.fd(), &paths::clean(dir)).map_err(resolve_err)?;
    let resolved = if base.is_empty() || base == "." {
        dir
    } else {
        paths::join(&dir, base)
    };
    let st: FileStat = match paths::parent_and_name(&resolved) {
        None => nix::sys::stat::fstat(root.fd()).map_err(resolve_err)?,
        Some((parent, name)) => {
            let p = fs::open_dir(root.fd(), parent).map_err(resolve_err)?;
            fs::lstat_child(p.as_fd(), name).map_err(resolve_err)?
        }
    };
    if abs.ends_with('/') && !fs::is_dir(&st) {
        return Err(not_found());
    }
    let link_target = if fs::kind(st.st_mode) == SFlag::S_IFLNK {
        fs::follow_links(root.fd(), &paths::clean(&abs)).map_err(resolve_err)?
    } else {
        String::new()
    };
    let mtime = UNIX_EPOCH
        + Duration::new(
            st.st_mtime.max(0) as u64,
            st.st_mtime_nsec.clamp(0, 999_999_999) as u32,
        );
    Ok(Located {
        stat: PathStat {
            name: paths::base(&abs).to_string(),
            size: st.st_size,
            mode: go_mode(st.st_mode),
            mtime,
            link_target,
        },
        resolved,
    })
}

/// The container's name as Docker's messages give it.
fn display_name(c: &Container) -> String {
    c.record().name.trim_start_matches('/').to_string()
}

/// `HEAD /containers/{id}/archive?path=`.
pub async fn stat(engine: &Engine, c: &Container, path: &str) -> Result<PathStat> {
    let root = root::open(engine, c).await?;
    let name = display_name(c);
    let path = path.to_string();
    blocking(move || locate(&root, &path, &name).map(|l| l.stat)).await
}

/// `GET /containers/{id}/archive?path=`: the path's stat and a tar of it,
/// streamed.
pub async fn get(
    engine: &Engine,
    c: &Container,
    path: &str,
) -> Result<(PathStat, mpsc::Receiver<Bytes>)> {
    let root = root::open(engine, c).await?;
    let name = display_name(c);
    let path = path.to_string();
    let (root, located) = blocking(move || {
        let l = locate(&root, &path, &name)?;
        Ok((root, l))
    })
    .await?;
    let (tx, rx) = mpsc::channel(8);
    let stat = located.stat.clone();
    let id = c.id.clone();
    tokio::task::spawn_blocking(move || {
        let out = ChannelWriter::new(tx);
        let result = match paths::parent_and_name(&located.resolved) {
            None => read::write_tar(root.fd(), None, &located.stat.name, out),
            Some((parent, name)) => fs::open_dir(root.fd(), parent)
                .map_err(io::Error::from)
                .and_then(|p| read::write_tar(p.as_fd(), Some(name), &located.stat.name, out)),
        };
        match result.and_then(|mut w| w.flush()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
            Err(e) => tracing::warn!(container = %id, error = %e, "archive ended early"),
        }
        drop(root);
    });
    Ok((stat, rx))
}

/// `PUT /containers/{id}/archive?path=`: extracts the tar (plain, gzip,
/// bzip2, xz or zstd) read from `body` into the directory `path`.
pub async fn put(
    engine: &Engine,
    c: &Container,
    path: &str,
    mut opts: ExtractOptions,
    copy_uid_gid: bool,
    body: mpsc::Receiver<io::Result<Bytes>>,
) -> Result<()> {
    let root = root::open(engine, c).await?;
    let record = c.record();
    if copy_uid_gid && !record.config.user.is_empty() {
        opts.owner = Some((record.user.uid, record.user.gid));
    }
    let name = display_name(c);
    let path = path.to_string();
    blocking(move || {
        let not_found = || ArchiveError::NotFound {
            path: path.clone(),
            container: name.clone(),
        };
        let abs = paths::clean(&paths::absolute(&path));
        let dest = fs::follow_links(root.fd(), &abs).map_err(|e| match e {
            Errno::ENOENT | Errno::ENOTDIR => not_found(),
            source => ArchiveError::Resolve {
                path: path.clone(),
                source,
            },
        })?;
        match fs::open_dir(root.fd(), &dest) {
            Ok(_) => {}
            Err(Errno::ENOENT) => return Err(not_found()),
            Err(Errno::ENOTDIR) => return Err(ArchiveError::NotADirectory),
            Err(source) => return Err(ArchiveError::Resolve { path, source }),
        }
        match root.read_only_at(&dest) {
            Err(_) => return Err(ArchiveError::ReadOnlyVolume),
            Ok(true) => return Err(ArchiveError::ReadOnlyRootfs),
            Ok(false) => {}
        }
        let input = decompressed(ChannelReader::new(body))?;
        extract::extract(root.fd(), &dest, input, &opts).map_err(|e| match e {
            ArchiveError::Create {
                path,
                source: Errno::EROFS,
            } => ArchiveError::ReadOnlyFile { path },
            e => e,
        })
    })
    .await
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ArchiveError::Io {
            what: "archive worker",
            source: io::Error::other(e.to_string()),
        })?
}

/// The archive's bytes, decompressed by their first bytes' format.
fn decompressed(input: ChannelReader) -> Result<Box<dyn Read + Send>> {
    let mut input = io::BufReader::with_capacity(256 << 10, input);
    let head = input
        .fill_buf()
        .map_err(ArchiveError::ReadArchive)?
        .to_vec();
    if head.starts_with(&[0x1f, 0x8b]) {
        return Ok(Box::new(flate2::read::MultiGzDecoder::new(input)));
    }
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let d =
            zstd::stream::read::Decoder::with_buffer(input).map_err(ArchiveError::ReadArchive)?;
        return Ok(Box::new(d));
    }
    if head.starts_with(b"BZh") {
        return external("bzip2", input);
    }
    if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        return external("xz", input);
    }
    Ok(Box::new(input))
}

/// Decompresses with `tool -dc`, fed by a thread.
fn external(
    tool: &'static str,
    mut input: impl Read + Send + 'static,
) -> Result<Box<dyn Read + Send>> {
    let err = |source| ArchiveError::Decompress { tool, source };
    let mut child = std::process::Command::new(tool)
        .arg("-dc")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(err)?;
    let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(err(io::Error::other("no pipes to the decompressor")));
    };
    std::thread::spawn(move || {
        let _ = io::copy(&mut input, &mut stdin);
    });
    Ok(Box::new(Decompressor { child, stdout }))
}

struct Decompressor {
    child: std::process::Child,
    stdout: std::process::ChildStdout,
}

impl Read for Decompressor {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stdout.read(buf)
    }
}

impl Drop for Decompressor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Bytes written in a blocking thread, sent on in chunks.
struct ChannelWriter {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
}

const CHUNK: usize = 256 << 10;

impl ChannelWriter {
    fn new(tx: mpsc::Sender<Bytes>) -> ChannelWriter {
        ChannelWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Bytes::from(chunk))
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// A request body received in a blocking thread.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl ChannelReader {
    fn new(rx: mpsc::Receiver<io::Result<Bytes>>) -> ChannelReader {
        ChannelReader {
            rx,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        bytes::Buf::advance(&mut self.current, n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
