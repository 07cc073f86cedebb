//! `berth cp`: files between a container and the local filesystem, by
//! the docker CLI's rules: `CONTAINER:PATH` on one side, a local path or
//! `-` (a tar on stdin or stdout) on the other; a trailing `/.` copies a
//! directory's content, a trailing `/` asserts a directory, a missing
//! destination takes the source's place under its own name. Local tars are
//! written with the engine's descriptor-based walker; archives from the
//! daemon are extracted refusing names that climb out.

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use berth_engine::archive::{paths, read};
use bytes::Bytes;
use clap::Args;
use http_body_util::BodyExt;
use hyper::body::Frame;
use hyper::Method;
use hyper_util::rt::TokioIo;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use tokio::sync::mpsc;

use crate::client::{enc, Client};
use crate::StatusError;

#[derive(Args)]
pub struct CpArgs {
    /// Archive mode (copy all uid/gid information)
    #[arg(short = 'a', long = "archive")]
    pub archive: bool,
    /// Always follow symbol link in SRC_PATH
    #[arg(short = 'L', long = "follow-link")]
    pub follow_link: bool,
    /// Suppress progress output during copy. Progress output is automatically suppressed if no terminal is attached
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    #[arg(value_name = "SRC_PATH")]
    pub src: String,
    #[arg(value_name = "DEST_PATH")]
    pub dst: String,
}

/// One side of a copy: a container's path or a local one.
struct Side {
    container: Option<String>,
    path: String,
}

/// The docker CLI's split: a path starting with `/` or `.` is local;
/// otherwise `NAME:PATH` names a container.
fn split_arg(arg: &str) -> Side {
    if arg.starts_with('/') || arg.starts_with('.') {
        return Side {
            container: None,
            path: arg.to_string(),
        };
    }
    match arg.split_once(':') {
        Some((c, p)) => Side {
            container: Some(c.to_string()),
            path: p.to_string(),
        },
        None => Side {
            container: None,
            path: arg.to_string(),
        },
    }
}

/// What the daemon says of a path (`X-Docker-Container-Path-Stat`).
#[derive(Debug, Default, serde::Deserialize)]
struct PathStat {
    #[serde(default)]
    mode: u32,
    #[serde(default, rename = "linkTarget")]
    link_target: String,
}

const GO_DIR: u32 = 1 << 31;
const GO_SYMLINK: u32 = 1 << 27;
/// Go's `os.ModeType` without the directory and link bits: devices,
/// pipes, sockets, irregular files.
const GO_SPECIAL: u32 = (1 << 26) | (1 << 25) | (1 << 24) | (1 << 21) | (1 << 19);

fn decode_stat(resp: &hyper::Response<hyper::body::Incoming>) -> Option<PathStat> {
    let v = resp.headers().get("x-docker-container-path-stat")?;
    let json = base64::engine::general_purpose::STANDARD
        .decode(v.as_bytes())
        .ok()?;
    serde_json::from_slice(&json).ok()
}

async fn stat(c: &Client, container: &str, path: &str) -> Option<PathStat> {
    let q = format!("/containers/{}/archive?path={}", enc(container), enc(path));
    let resp = c.send(Method::HEAD, &q, Bytes::new(), &[]).await.ok()?;
    decode_stat(&resp)
}

/// Go's `filepath.Dir` and `Base` after `SplitPathDirEntry`'s cleaning: a
/// trailing `/.` is kept as the base `.`.
fn split_dir_entry(path: &str) -> (String, String) {
    let absolute = path.starts_with('/');
    let mut cleaned = clean_local(path);
    if path == "." || path.ends_with("/.") {
        cleaned = if cleaned == "/" {
            "/.".to_string()
        } else {
            format!("{cleaned}/.")
        };
    }
    match cleaned.rfind('/') {
        Some(0) => ("/".to_string(), cleaned[1..].to_string()),
        Some(i) => (cleaned[..i].to_string(), cleaned[i + 1..].to_string()),
        None if absolute => ("/".to_string(), cleaned),
        None => (".".to_string(), cleaned),
    }
}

/// Go's `filepath.Clean` for a local path, relative ones kept relative.
fn clean_local(path: &str) -> String {
    if path.starts_with('/') {
        return paths::clean(path);
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." if parts.last().is_some_and(|p| *p != "..") => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        ".".to_string()
    } else {
        parts.join("/")
    }
}

fn asserts_directory(path: &str) -> bool {
    path.ends_with('/') || path == "." || path.ends_with("/.")
}

pub async fn run(c: &Client, a: CpArgs) -> anyhow::Result<()> {
    let src = split_arg(&a.src);
    let dst = split_arg(&a.dst);
    match (src.container, dst.container) {
        (Some(_), Some(_)) => {
            Err(StatusError::new(1, "copying between containers is not supported").into())
        }
        (None, None) => {
            Err(StatusError::new(1, "must specify at least one container source").into())
        }
        (Some(container), None) => {
            if src.path.is_empty() {
                return Err(StatusError::new(1, "filepath can not be empty").into());
            }
            let n = copy_from(c, &container, &src.path, &dst.path, a.follow_link).await?;
            report(a.quiet, n, &dst.path);
            Ok(())
        }
        (None, Some(container)) => {
            if dst.path.is_empty() {
                return Err(StatusError::new(1, "filepath can not be empty").into());
            }
            let n = copy_to(
                c,
                &src.path,
                &container,
                &dst.path,
                a.follow_link,
                a.archive,
            )
            .await?;
            report(a.quiet, n, &format!("{container}:{}", dst.path));
            Ok(())
        }
    }
}

/// The docker CLI's closing line on a terminal.
fn report(quiet: bool, bytes: u64, dst: &str) {
    use std::io::IsTerminal;
    if !quiet && dst != "-" && io::stderr().is_terminal() {
        eprintln!("Successfully copied {} to {dst}", human_size(bytes));
    }
}

/// go-units' `HumanSizeWithPrecision(n, 3)`: decimal units, three
/// significant digits.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1000.0 && unit < UNITS.len() - 1 {
        size /= 1000.0;
        unit += 1;
    }
    let digits = if size >= 100.0 {
        0
    } else if size >= 10.0 {
        1
    } else {
        2
    };
    let text = format!("{size:.digits$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    format!("{text}{}", UNITS[unit])
}

fn daemon_error(e: crate::client::ClientError) -> anyhow::Error {
    StatusError::new(1, e.to_string()).into()
}

async fn copy_from(
    c: &Client,
    container: &str,
    src: &str,
    dst: &str,
    follow: bool,
) -> anyhow::Result<u64> {
    let mut src_path = src.to_string();
    let mut rebase_name = None;
    if follow {
        if let Some(st) = stat(c, container, src).await {
            if st.mode & GO_SYMLINK != 0 {
                let mut target = st.link_target.clone();
                if !target.starts_with('/') {
                    target = format!("{}/{}", split_dir_entry(src).0, target);
                }
                rebase_name = Some(split_dir_entry(src).1);
                src_path = target;
            }
        }
    }
    let q = format!(
        "/containers/{}/archive?path={}",
        enc(container),
        enc(&src_path)
    );
    let resp = c
        .send(Method::GET, &q, Bytes::new(), &[])
        .await
        .map_err(daemon_error)?;
    let st = decode_stat(&resp).unwrap_or_default();
    let mut body = resp.into_body();
    let mut copied = 0u64;
    if dst == "-" {
        let mut out = io::stdout().lock();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                copied += data.len() as u64;
                out.write_all(&data)?;
            }
        }
        out.flush()?;
        return Ok(copied);
    }
    // Where the archive goes, and the name its top entry takes there.
    let src_base = split_dir_entry(&src_path).1;
    let src_is_dir = st.mode & GO_DIR != 0;
    let (dst_path, exists, dst_is_dir) = local_destination(dst)?;
    let (dst_dir, dst_base) = split_dir_entry(&dst_path);
    let (extract_dir, rename) = if exists && dst_is_dir {
        (dst_path.clone(), rebase_name.map(|r| (src_base.clone(), r)))
    } else if exists && src_is_dir {
        return Err(StatusError::new(1, "cannot copy directory").into());
    } else if !exists && !src_is_dir && asserts_directory(&dst_path) {
        return Err(StatusError::new(1, "no such directory").into());
    } else {
        (dst_dir, Some((src_base.clone(), dst_base)))
    };
    let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Bytes>>(8);
    let dir = PathBuf::from(extract_dir);
    let worker = std::thread::spawn(move || extract_local(BlockingReader::new(rx), &dir, rename));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(io::Error::other);
        let item = match frame {
            Ok(f) => match f.into_data() {
                Ok(d) => {
                    copied += d.len() as u64;
                    Ok(d)
                }
                Err(_) => continue,
            },
            Err(e) => Err(e),
        };
        if tx.send(item).is_err() {
            break;
        }
    }
    drop(tx);
    worker
        .join()
        .map_err(|_| anyhow::anyhow!("extraction thread panicked"))?
        .map_err(|e| anyhow::Error::from(StatusError::new(1, e.to_string())))?;
    Ok(copied)
}

/// The local destination as the docker CLI resolves it: links followed,
/// a missing last element allowed when its parent is a directory.
fn local_destination(path: &str) -> anyhow::Result<(String, bool, bool)> {
    let mut path = path.to_string();
    for _ in 0..=10 {
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(&path)?;
                let target = target.to_string_lossy().into_owned();
                path = if target.starts_with('/') {
                    target
                } else {
                    format!("{}/{}", split_dir_entry(&path).0, target)
                };
            }
            Ok(m) => return Ok((path, true, m.is_dir())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let parent = split_dir_entry(&path).0;
                let m = std::fs::metadata(&parent).map_err(|e| {
                    StatusError::new(
                        1,
                        format!("stat {parent}: {}", crate::common::go_io_error(&e)),
                    )
                })?;
                if !m.is_dir() {
                    return Err(StatusError::new(1, "not a directory").into());
                }
                return Ok((path, false, false));
            }
            Err(e) => {
                return Err(StatusError::new(
                    1,
                    format!("lstat {path}: {}", crate::common::go_io_error(&e)),
                )
                .into())
            }
        }
    }
    Err(StatusError::new(1, format!("too many symlinks in {path}")).into())
}

/// Extracts an archive under `dir`, the first element of each name
/// renamed by `rename` (old, new); names that climb out are refused.
fn extract_local(
    input: impl Read,
    dir: &Path,
    rename: Option<(String, String)>,
) -> anyhow::Result<()> {
    let mut archive = tar::Archive::new(input);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    let renamed = |name: &str| -> Option<PathBuf> {
        let name = match &rename {
            Some((old, new)) if name == old.as_str() || name.starts_with(&format!("{old}/")) => {
                format!("{new}{}", &name[old.len()..])
            }
            _ => name.to_string(),
        };
        let mut out = PathBuf::new();
        for part in name.split('/') {
            match part {
                "" | "." => {}
                ".." => return None,
                p => out.push(p),
            }
        }
        Some(out)
    };
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let rel = renamed(&name)
            .ok_or_else(|| anyhow::anyhow!("{name:?} is outside of the destination"))?;
        let target = dir.join(&rel);
        if rel.as_os_str().is_empty() {
            continue;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
            let real = parent.canonicalize()?;
            if !real.starts_with(dir.canonicalize()?) {
                anyhow::bail!("{name:?} is outside of the destination");
            }
        }
        if entry.header().entry_type() == tar::EntryType::Link {
            let link = entry
                .link_name()?
                .map(|l| l.to_string_lossy().into_owned())
                .unwrap_or_default();
            let from =
                renamed(&link).ok_or_else(|| anyhow::anyhow!("invalid hardlink {link:?}"))?;
            let _ = std::fs::remove_file(&target);
            std::fs::hard_link(dir.join(from), &target)?;
            continue;
        }
        if let Ok(m) = std::fs::symlink_metadata(&target) {
            let is_dir_entry = entry.header().entry_type() == tar::EntryType::Directory;
            if m.is_dir() && !is_dir_entry {
                anyhow::bail!(
                    "cannot overwrite directory {:?} with non-directory {name:?}",
                    target.display().to_string()
                );
            }
            if !m.is_dir() && is_dir_entry {
                anyhow::bail!(
                    "cannot overwrite non-directory {:?} with directory {name:?}",
                    target.display().to_string()
                );
            }
        }
        entry.unpack(&target)?;
    }
    Ok(())
}

async fn copy_to(
    c: &Client,
    src: &str,
    container: &str,
    dst: &str,
    follow: bool,
    archive: bool,
) -> anyhow::Result<u64> {
    let mut dst_path = dst.to_string();
    let mut dst_stat = stat(c, container, dst).await;
    if let Some(st) = &dst_stat {
        if st.mode & GO_SYMLINK != 0 {
            let mut target = st.link_target.clone();
            if !target.starts_with('/') {
                target = format!("{}/{}", split_dir_entry(dst).0, target);
            }
            dst_path = target;
            dst_stat = stat(c, container, &dst_path).await;
        }
    }
    if let Some(st) = &dst_stat {
        if st.mode & GO_SPECIAL != 0 {
            return Err(StatusError::new(
                1,
                format!("destination \"{container}:{dst}\" must be a directory or a regular file"),
            )
            .into());
        }
    }
    let exists = dst_stat.is_some();
    let dst_is_dir = dst_stat.as_ref().is_some_and(|s| s.mode & GO_DIR != 0);
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(8);
    let target_dir;
    let producer: std::thread::JoinHandle<io::Result<()>>;
    if src == "-" {
        if !dst_is_dir {
            return Err(StatusError::new(
                1,
                format!("destination \"{container}:{dst}\" must be a directory"),
            )
            .into());
        }
        target_dir = dst_path;
        producer = std::thread::spawn(move || {
            let mut stdin = io::stdin().lock();
            let mut buf = vec![0u8; 256 << 10];
            loop {
                let n = stdin.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                if tx
                    .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
                    .is_err()
                {
                    return Ok(());
                }
            }
        });
    } else {
        // The source: links followed before its last element (all of them
        // with -L, the result named as given).
        let (src_dir, src_base) = split_dir_entry(src);
        let (open_dir, name, rebase) = if follow {
            let real = std::fs::canonicalize(src).map_err(|e| {
                StatusError::new(
                    1,
                    format!("lstat {src}: {}", crate::common::go_io_error(&e)),
                )
            })?;
            let real = real.to_string_lossy().into_owned();
            let (d, b) = split_dir_entry(&real);
            (d, Some(b), src_base.clone())
        } else if src_base == "." {
            (clean_local(src), None, ".".to_string())
        } else {
            (src_dir, Some(src_base.clone()), src_base.clone())
        };
        let meta = match &name {
            Some(n) => std::fs::symlink_metadata(Path::new(&open_dir).join(n)),
            None => std::fs::metadata(&open_dir),
        }
        .map_err(|e| {
            StatusError::new(
                1,
                format!("lstat {src}: {}", crate::common::go_io_error(&e)),
            )
        })?;
        let src_is_dir = meta.is_dir();
        let (dir, rebase) = if exists && dst_is_dir {
            (dst_path.clone(), rebase)
        } else if exists && src_is_dir {
            return Err(StatusError::new(1, "cannot copy directory").into());
        } else if !exists && !src_is_dir && asserts_directory(&dst_path) {
            return Err(StatusError::new(1, "no such directory").into());
        } else {
            let (d, b) = split_dir_entry(&dst_path);
            (d, b)
        };
        target_dir = dir;
        let fd = nix::fcntl::open(
            open_dir.as_str(),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| StatusError::new(1, format!("open {open_dir}: {e}")))?;
        producer = std::thread::spawn(move || {
            let out = Sender {
                tx: tx.clone(),
                buf: Vec::new(),
            };
            match read::write_tar(fd.as_fd(), name.as_deref(), &rebase, out)
                .and_then(|mut w| w.flush())
            {
                Ok(()) => Ok(()),
                Err(e) => {
                    let _ = tx.blocking_send(Err(io::Error::new(e.kind(), e.to_string())));
                    Err(e)
                }
            }
        });
    }
    let mut q = format!(
        "/containers/{}/archive?path={}&noOverwriteDirNonDir=true",
        enc(container),
        enc(&target_dir)
    );
    if archive {
        q.push_str("&copyUIDGID=true");
    }
    let counted = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let result = put_stream(c, &q, rx, counted.clone()).await;
    if src != "-" {
        if let Ok(Err(e)) = producer.join() {
            if result.is_ok() {
                return Err(StatusError::new(1, e.to_string()).into());
            }
        }
    }
    result.map(|()| counted.load(std::sync::atomic::Ordering::Relaxed))
}

/// A PUT whose body is streamed from `rx`; `counted` adds up its bytes.
async fn put_stream(
    c: &Client,
    path: &str,
    rx: mpsc::Receiver<io::Result<Bytes>>,
    counted: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> anyhow::Result<()> {
    let version = c.version().await.map_err(daemon_error)?.to_string();
    let stream = c
        .connect_stream()
        .await
        .map_err(|e| StatusError::new(1, e.to_string()))?;
    let frames =
        futures_util::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), move |r| {
            r.map(|data| {
                counted.fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
                Frame::data(data)
            })
        });
    let body = http_body_util::StreamBody::new(frames);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = hyper::Request::builder()
        .method(Method::PUT)
        .uri(format!("/v{version}{path}"))
        .header("host", "api.moby.localhost")
        .header("content-type", "application/x-tar")
        .header("user-agent", concat!("berth/", env!("CARGO_PKG_VERSION")))
        .body(body)?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    if status.is_success() {
        return Ok(());
    }
    let message = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["message"].as_str().map(String::from))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
    Err(StatusError::new(1, format!("Error response from daemon: {message}")).into())
}

/// Tar bytes from the walker thread to the request body.
struct Sender {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl Write for Sender {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 256 << 10 {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
    }
}

/// The response body, read by the extraction thread.
struct BlockingReader {
    rx: std::sync::mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl BlockingReader {
    fn new(rx: std::sync::mpsc::Receiver<io::Result<Bytes>>) -> BlockingReader {
        BlockingReader {
            rx,
            current: Bytes::new(),
        }
    }
}

impl Read for BlockingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => self.current = chunk,
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        bytes::Buf::advance(&mut self.current, n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_split_as_docker() {
        let s = split_arg("c1:/tmp");
        assert_eq!(
            (s.container.as_deref(), s.path.as_str()),
            (Some("c1"), "/tmp")
        );
        let s = split_arg("./a:b");
        assert_eq!((s.container.as_deref(), s.path.as_str()), (None, "./a:b"));
        let s = split_arg("/x:y");
        assert_eq!(s.container, None);
        let s = split_arg("-");
        assert_eq!((s.container, s.path.as_str()), (None, "-"));
    }

    #[test]
    fn sizes_as_go_units() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(2048), "2.05kB");
        assert_eq!(human_size(20_480), "20.5kB");
        assert_eq!(human_size(204_800), "205kB");
        assert_eq!(human_size(1_000_000), "1MB");
    }

    #[test]
    fn paths_split_keeping_a_trailing_dot() {
        assert_eq!(split_dir_entry("/a/b/."), ("/a/b".into(), ".".into()));
        assert_eq!(split_dir_entry("/a/b/"), ("/a".into(), "b".into()));
        assert_eq!(split_dir_entry("b"), (".".into(), "b".into()));
        assert_eq!(split_dir_entry("/b"), ("/".into(), "b".into()));
        assert_eq!(split_dir_entry("x/../y/z"), ("y".into(), "z".into()));
        assert!(asserts_directory("/a/"));
        assert!(!asserts_directory("/a"));
    }
}
