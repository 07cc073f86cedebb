//! `POST /build/prune` forgets the build cache; `POST /commit` makes an
//! image of a container.
//!
//! `POST /build`, the legacy builder's API (what `DOCKER_BUILDKIT=0 docker
//! build` and `berth build` speak): the query decoded, the context body
//! streamed into a per-build directory, the build run, its messages
//! streamed back. An error before the first message is an HTTP error (as
//! dockerd answers a bad Dockerfile); after it, an `errorDetail` message.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::BodyStream;
use hyper::Method;
use tokio::sync::mpsc;

use super::{ApiError, Reply, Req};
use crate::build::context::ContextDir;
use crate::build::pipeline::{self, BuildError, BuildOptions};
use crate::images::transfer::Message;
use crate::Engine;

pub async fn handle(engine: &Arc<Engine>, req: Req) -> Reply {
    let segments = req.segments();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (&req.method, segments.as_slice()) {
        (&Method::POST, ["build"]) => build(engine, req).await,
        (&Method::POST, ["commit"]) => commit(engine, req).await,
        (&Method::POST, ["build", "prune"]) => {
            let removed = engine
                .build_cache
                .prune()
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            tracing::info!(entries = removed, "build cache pruned");
            // The layers are the images' (the collector frees the unused
            // ones); the cache's own records take no space worth counting.
            super::json(
                hyper::StatusCode::OK,
                &serde_json::json!({"CachesDeleted": null, "SpaceReclaimed": 0}),
            )
        }
        _ => Err(ApiError::NoRoute),
    }
}

fn json_map<T: serde::de::DeserializeOwned + Default>(req: &Req, key: &str) -> Result<T, ApiError> {
    match req.query.get(key).filter(|v| !v.is_empty()) {
        None => Ok(T::default()),
        Some(text) => serde_json::from_str(text)
            .map_err(|e| ApiError::BadRequest(format!("invalid {key}: {e}"))),
    }
}

fn options(req: &Req) -> Result<BuildOptions, ApiError> {
    if req.query.get("remote").is_some_and(|r| !r.is_empty()) {
        return Err(ApiError::BadRequest(
            "a remote build context is not supported: send the context as the body".into(),
        ));
    }
    let build_args: BTreeMap<String, Option<String>> = json_map(req, "buildargs")?;
    let labels: BTreeMap<String, String> = json_map(req, "labels")?;
    Ok(BuildOptions {
        // The first value, as Go's FormValue reads it: docker-py sends a
        // Dockerfile from outside the context as `dockerfile=<its name in
        // the tar>` and then again with its content.
        dockerfile: req
            .query
            .get_all("dockerfile")
            .first()
            .copied()
            .filter(|d| !d.is_empty())
            .unwrap_or("Dockerfile")
            .to_string(),
        tags: req
            .query
            .get_all("t")
            .into_iter()
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
        build_args,
        labels,
        target: req
            .query
            .get("target")
            .filter(|t| !t.is_empty())
            .map(str::to_string),
        quiet: req.query.flag("q"),
        pull: req.query.flag("pull"),
        no_cache: req.query.flag("nocache"),
        cache_from: json_map(req, "cachefrom")?,
        auth: None,
        registries: crate::images::auth::RegistryConfig::decode(
            req.headers
                .get("x-registry-config")
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
        )?,
        host_config: run_host_config(req)?,
        platform: req
            .query
            .get("platform")
            .filter(|p| !p.is_empty())
            .map(str::to_string),
    })
}

/// How RUN containers run: `networkmode`, `extrahosts` (repeated),
/// `shmsize` and the resource options, as dockerd reads them.
fn run_host_config(req: &Req) -> Result<crate::types::HostConfig, ApiError> {
    let q = &req.query;
    let int = |key: &str| q.int(key).map(Option::unwrap_or_default);
    let text = |key: &str| q.get(key).unwrap_or("").to_string();
    let ulimits: Option<Vec<crate::types::Ulimit>> = q.json("ulimits")?;
    let resources = crate::types::HostConfig {
        shm_size: int("shmsize")?,
        memory: int("memory")?,
        memory_swap: int("memswap")?,
        cpu_shares: int("cpushares")?,
        cpu_period: int("cpuperiod")?,
        cpu_quota: int("cpuquota")?,
        cpuset_cpus: text("cpusetcpus"),
        cpuset_mems: text("cpusetmems"),
        cgroup_parent: text("cgroupparent"),
        ulimits: ulimits.filter(|u| !u.is_empty()),
        ..Default::default()
    };
    if resources.shm_size < 0 {
        return Err(ApiError::BadRequest(
            "SHM size can not be less than 0".into(),
        ));
    }
    let extra_hosts = q
        .get_all("extrahosts")
        .into_iter()
        .filter(|h| !h.is_empty())
        .map(str::to_string)
        .collect();
    Ok(crate::build::container::host_config(
        q.get("networkmode").unwrap_or(""),
        extra_hosts,
        resources,
    ))
}

/// Reads a channel of chunks as a byte stream (on a blocking thread).
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

fn build_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

async fn build(engine: &Arc<Engine>, mut req: Req) -> Reply {
    let opts = options(&req)?;
    let context = ContextDir::create(&engine.paths.engine_dir().join("builds"), &build_id())
        .map_err(BuildError::from)?;
    // The body streams into the unpacker; nothing is held whole.
    let (chunks, rx) = mpsc::channel::<Bytes>(8);
    let unpacker = tokio::task::spawn_blocking(move || {
        let result = context.unpack(ChannelReader {
            rx,
            current: Bytes::new(),
        });
        (context, result)
    });
    let mut read_error = None;
    if let Some(body) = req.body.take() {
        let mut frames = BodyStream::new(body);
        while let Some(frame) = frames.next().await {
            match frame {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        if chunks.send(data).await.is_err() {
                            // The unpacker stopped: its error says why.
                            break;
                        }
                    }
                }
                Err(e) => {
                    read_error = Some(e.to_string());
                    break;
                }
            }
        }
    }
    drop(chunks);
    let (context, unpacked) = unpacker
        .await
        .map_err(|e| ApiError::Internal(format!("unpack the build context: {e}")))?;
    if let Some(e) = read_error {
        return Err(ApiError::BadRequest(format!("read the build context: {e}")));
    }
    unpacked.map_err(BuildError::from)?;

    let (tx, mut rx) = mpsc::channel::<Message>(64);
    let engine = Arc::clone(engine);
    let task = tokio::spawn(async move {
        let result = pipeline::build(&engine, &opts, context.root(), &tx).await;
        if let Err(e) = &result {
            tracing::info!(error = %e, "build failed");
            let _ = tx.send(Message::error(e.to_string())).await;
        }
        // The context goes when the build ends, however it ends.
        drop(context);
        result
    });
    let first = rx.recv().await;
    match first {
        Some(message) if message.error.is_none() => {
            let rest = tokio_stream::wrappers::ReceiverStream::new(rx);
            let messages = futures_util::stream::once(async move { message }).chain(rest);
            super::images::progress_response(messages.boxed())
        }
        _ => match task.await {
            Ok(Err(e)) => Err(e.into()),
            Ok(Ok(_)) => Err(ApiError::Internal("the build ended without output".into())),
            Err(e) => Err(ApiError::Internal(format!("the build stopped: {e}"))),
        },
    }
}

async fn commit(engine: &Arc<Engine>, req: Req) -> Reply {
    let q = &req.query;
    let text = |key: &str| q.get(key).unwrap_or("").to_string();
    let opts = crate::build::commit::CommitOptions {
        container: text("container"),
        repo: text("repo"),
        tag: text("tag"),
        comment: text("comment"),
        author: text("author"),
        changes: q
            .get_all("changes")
            .into_iter()
            .flat_map(|c| c.split('\n'))
            .filter(|c| !c.trim().is_empty())
            .map(str::to_string)
            .collect(),
        // Docker pauses unless told not to.
        pause: !matches!(q.get("pause"), Some("0" | "false" | "False")),
    };
    if opts.container.is_empty() {
        return Err(ApiError::BadRequest("container is required".into()));
    }
    let id = crate::build::commit::commit(engine, &opts).await?;
    super::json(hyper::StatusCode::CREATED, &serde_json::json!({"Id": id}))
}
