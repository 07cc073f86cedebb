//! Pull and push: the supervisor's per-blob progress turned into the JSON
//! progress messages dockerd writes (`Pulling fs layer`, `Downloading`
//! with a bar, `Pull complete`, `Digest: ...`, `Status: ...`; `Preparing`,
//! `Pushing`, `Pushed`, `<tag>: digest: ... size: ...`).

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_client::reference::Reference;
use berth_proto::images::v1 as pb;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::auth::AuthConfig;
use super::names::{familiar, short_id};
use super::ImageError;
use crate::backend::BackendError;
use crate::events::Kind;
use crate::Engine;

/// One line of Docker's JSON progress stream.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Message {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(rename = "progressDetail", skip_serializing_if = "Option::is_none")]
    pub progress_detail: Option<Detail>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "errorDetail", skip_serializing_if = "Option::is_none")]
    pub error_detail: Option<ErrorDetail>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aux: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Detail {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ErrorDetail {
    pub message: String,
}

impl Message {
    pub fn status(status: impl Into<String>) -> Message {
        Message {
            status: Some(status.into()),
            ..Default::default()
        }
    }

    /// A status about one layer, with an empty progressDetail as Docker
    /// writes it.
    fn layer(status: &str, id: &str) -> Message {
        Message {
            status: Some(status.to_string()),
            progress_detail: Some(Detail::default()),
            id: Some(id.to_string()),
            ..Default::default()
        }
    }

    fn bar(status: &str, id: &str, current: i64, total: i64) -> Message {
        Message {
            status: Some(status.to_string()),
            progress_detail: Some(Detail {
                current: Some(current),
                total: Some(total),
            }),
            progress: Some(progress_bar(current, total)),
            id: Some(id.to_string()),
            ..Default::default()
        }
    }

    pub fn stream(text: impl Into<String>) -> Message {
        Message {
            stream: Some(text.into()),
            ..Default::default()
        }
    }

    pub fn error(message: impl Into<String>) -> Message {
        let message = message.into();
        Message {
            error_detail: Some(ErrorDetail {
                message: message.clone(),
            }),
            error: Some(message),
            ..Default::default()
        }
    }

    /// The line as dockerd writes it: Go's encoder escapes `<`, `>` and
    /// `&` inside strings, and each message ends with a newline.
    pub fn to_line(&self) -> Vec<u8> {
        let json = serde_json::to_string(self).unwrap_or_default();
        let mut line = json
            .replace('<', "\\u003c")
            .replace('>', "\\u003e")
            .replace('&', "\\u0026");
        line.push_str("\r\n");
        line.into_bytes()
    }
}

/// Docker's decimal size with 4 significant digits: `2.152MB`, `512B`.
pub fn human_size(size: i64) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut size = size as f64;
    let mut unit = 0;
    while size >= 1000.0 && unit < UNITS.len() - 1 {
        size /= 1000.0;
        unit += 1;
    }
    // Go's %.4g: 4 significant digits, trailing zeros dropped.
    let digits = if size >= 100.0 {
        1
    } else if size >= 10.0 {
        2
    } else {
        3
    };
    let mut text = format!("{size:.digits$}");
    if text.contains('.') {
        text = text.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{text}{}", UNITS[unit])
}

/// The bar and numbers dockerd puts in `progress`.
pub fn progress_bar(current: i64, total: i64) -> String {
    if current <= 0 && total <= 0 {
        return String::new();
    }
    if total <= 0 {
        return format!("{:>8}", human_size(current));
    }
    let percent = ((current as f64 / total as f64 * 100.0) as i64 / 2).clamp(0, 50) as usize;
    let bar = format!("[{}>{}] ", "=".repeat(percent), " ".repeat(50 - percent));
    let numbers = if current > total {
        format!("{:>8}", human_size(current))
    } else {
        format!("{:>8}/{}", human_size(current), human_size(total))
    };
    bar + &numbers
}

/// Where each layer of a transfer stands, to say only what changed.
#[derive(Default)]
pub struct LayerLog {
    seen: BTreeMap<String, Seen>,
    pushing: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Seen {
    Announced,
    Waiting,
    Moving(i64),
    Finished,
}

impl LayerLog {
    pub fn for_push() -> LayerLog {
        LayerLog {
            pushing: true,
            ..Default::default()
        }
    }

    /// The messages for one progress report; `ids` names layers (pull: the
    /// blob digest's 12 digits; push: the diff id's).
    pub fn update(
        &mut self,
        progress: &[pb::Progress],
        id_of: &dyn Fn(&str) -> String,
    ) -> Vec<Message> {
        use pb::ProgressState as S;
        let mut out = Vec::new();
        let moving = progress
            .iter()
            .any(|p| p.state == S::Downloading as i32 || p.state == S::Uploading as i32);
        for p in progress.iter().filter(|p| p.kind == "layer") {
            let id = id_of(&p.digest);
            let state = S::try_from(p.state).unwrap_or(S::Waiting);
            let before = self.seen.get(&p.digest).copied();
            let mut now = before;
            if before.is_none() {
                if state == S::Exists {
                    let text = if self.pushing {
                        "Layer already exists"
                    } else {
                        "Already exists"
                    };
                    out.push(Message::layer(text, &id));
                    self.seen.insert(p.digest.clone(), Seen::Finished);
                    continue;
                }
                let text = if self.pushing {
                    "Preparing"
                } else {
                    "Pulling fs layer"
                };
                out.push(Message::layer(text, &id));
                now = Some(Seen::Announced);
            }
            match state {
                S::Waiting if moving && now == Some(Seen::Announced) => {
                    out.push(Message::layer("Waiting", &id));
                    now = Some(Seen::Waiting);
                }
                S::Downloading | S::Uploading => {
                    let last = match now {
                        Some(Seen::Moving(o)) => o,
                        _ => -1,
                    };
                    if p.offset > last && p.offset > 0 {
                        let text = if self.pushing {
                            "Pushing"
                        } else {
                            "Downloading"
                        };
                        out.push(Message::bar(text, &id, p.offset, p.total));
                        now = Some(Seen::Moving(p.offset));
                    }
                }
                S::Unpacking if !self.pushing => {
                    if !matches!(now, Some(Seen::Moving(_))) {
                        out.push(Message::layer("Verifying Checksum", &id));
                        out.push(Message::layer("Download complete", &id));
                    }
                    out.push(Message::bar("Extracting", &id, p.offset.max(1), p.total));
                    now = Some(Seen::Moving(i64::MAX));
                }
                S::Done if now != Some(Seen::Finished) => {
                    if self.pushing {
                        out.push(Message::layer("Pushed", &id));
                    } else {
                        if now != Some(Seen::Moving(i64::MAX)) {
                            out.push(Message::layer("Verifying Checksum", &id));
                            out.push(Message::layer("Download complete", &id));
                            out.push(Message::bar("Extracting", &id, p.total, p.total));
                        }
                        out.push(Message::layer("Pull complete", &id));
                    }
                    now = Some(Seen::Finished);
                }
                S::Exists if now != Some(Seen::Finished) => {
                    let text = if self.pushing {
                        "Layer already exists"
                    } else {
                        "Already exists"
                    };
                    out.push(Message::layer(text, &id));
                    now = Some(Seen::Finished);
                }
                _ => {}
            }
            if let Some(now) = now {
                self.seen.insert(p.digest.clone(), now);
            }
        }
        out
    }
}

/// What `POST /images/create?fromImage=` asks for.
#[derive(Clone, Debug, Default)]
pub struct PullOptions {
    pub image: String,
    /// A tag or a digest; empty: the one in `image`, else `latest`.
    pub tag: String,
    pub platform: String,
    pub auth: Option<AuthConfig>,
}

/// The reference a pull asks for.
pub fn pull_reference(image: &str, tag: &str) -> Result<Reference, ImageError> {
    let text = match tag {
        "" => image.to_string(),
        t if t.contains(':') => format!("{image}@{t}"),
        t => format!("{image}:{t}"),
    };
    Ok(Reference::parse(&text)?)
}

/// A reference as Docker shows it in messages (`busybox:latest`).
fn shown(r: &Reference) -> String {
    familiar(&r.to_string())
}

/// Maps a failure of a pull's first step to Docker's errors.
fn pull_error(r: &Reference, e: BackendError) -> ImageError {
    match e {
        BackendError::Unauthorized(message) => ImageError::PullAccessDenied {
            repository: familiar(&r.name()),
            message,
        },
        BackendError::NotFound(message) if message.contains("manifest") => {
            ImageError::ManifestUnknown {
                reference: shown(r),
            }
        }
        BackendError::NotFound(message) => ImageError::PullAccessDenied {
            repository: familiar(&r.name()),
            message,
        },
        e => ImageError::Backend(e),
    }
}

/// Starts a pull. Errors of its first step (no such repository or tag,
/// access refused) are returned; later ones end the stream as an error
/// message.
pub async fn pull(
    engine: Arc<Engine>,
    opts: PullOptions,
) -> Result<BoxStream<'static, Message>, ImageError> {
    let r = pull_reference(&opts.image, &opts.tag)?;
    let name = r.to_string();
    let before = engine
        .supervisor
        .get_image(&name)
        .await
        .ok()
        .and_then(|i| i.target)
        .map(|t| t.digest);
    let req = pb::PullRequest {
        reference: name.clone(),
        platform: opts.platform.clone(),
        auth: opts.auth.as_ref().map(AuthConfig::to_pb),
        no_unpack: false,
    };
    let mut upstream = engine
        .supervisor
        .pull(req)
        .await
        .map_err(|e| pull_error(&r, e))?;
    // Until the manifest is found, failures are the request's.
    let mut held = Vec::new();
    loop {
        match upstream.next().await {
            None => break,
            Some(Err(e)) => return Err(pull_error(&r, e)),
            Some(Ok(msg)) => {
                let past_index =
                    msg.image.is_some() || msg.progress.iter().any(|p| p.kind != "index");
                held.push(Ok(msg));
                if past_index {
                    break;
                }
            }
        }
    }
    let (tx, rx) = mpsc::channel::<Message>(64);
    tokio::spawn(async move {
        let tag_or_digest = r.tag_or_digest().to_string();
        let first = Message {
            status: Some(format!("Pulling from {}", r.repository)),
            id: Some(tag_or_digest),
            ..Default::default()
        };
        if tx.send(first).await.is_err() {
            return;
        }
        let mut log = LayerLog::default();
        let id_of = |digest: &str| short_id(digest).to_string();
        let mut held_back: Vec<Message> = Vec::new();
        let mut moved = false;
        let mut upstream = futures_util::stream::iter(held).chain(upstream);
        // Bytes fetched per blob, for the metrics.
        let mut fetched: BTreeMap<String, i64> = BTreeMap::new();
        let mut present = std::collections::BTreeSet::new();
        while let Some(item) = upstream.next().await {
            let msg = match item {
                Ok(msg) => msg,
                Err(e) => {
                    let _ = tx.send(Message::error(pull_error(&r, e).to_string())).await;
                    return;
                }
            };
            // A blob already here says "exists" and is not counted.
            for p in &msg.progress {
                let seen = match p.state() {
                    pb::ProgressState::Exists => {
                        present.insert(p.digest.clone());
                        fetched.remove(&p.digest);
                        None
                    }
                    pb::ProgressState::Downloading | pb::ProgressState::Done
                        if !present.contains(&p.digest) =>
                    {
                        Some(fetched.entry(p.digest.clone()).or_default())
                    }
                    _ => None,
                };
                if let Some(seen) = seen {
                    *seen = (*seen).max(p.offset);
                }
            }
            for line in log.update(&msg.progress, &id_of) {
                // An image already here says nothing of its layers (as
                // dockerd): "Already exists" waits until something moves.
                let exists = line.status.as_deref() == Some("Already exists");
                if before.is_some() && exists && !moved {
                    held_back.push(line);
                    continue;
                }
                moved = true;
                for line in held_back.drain(..).chain([line]) {
                    if tx.send(line).await.is_err() {
                        return;
                    }
                }
            }
            if let Some(image) = msg.image {
                let digest = image.target.map(|t| t.digest).unwrap_or_default();
                let up_to_date = before.as_deref() == Some(digest.as_str());
                if !up_to_date {
                    for line in held_back.drain(..) {
                        if tx.send(line).await.is_err() {
                            return;
                        }
                    }
                }
                let status = if up_to_date {
                    format!("Status: Image is up to date for {}", shown(&r))
                } else {
                    format!("Status: Downloaded newer image for {}", shown(&r))
                };
                crate::metrics::image_pulled(fetched.values().map(|n| (*n).max(0) as u64).sum());
                let _ = tx.send(Message::status(format!("Digest: {digest}"))).await;
                let _ = tx.send(Message::status(status)).await;
                let attributes = BTreeMap::from([("name".to_string(), familiar(&r.name()))]);
                engine
                    .events
                    .emit(Kind::Image, "pull", &shown(&r), attributes);
                return;
            }
        }
        let _ = tx
            .send(Message::error("pull ended before the image was stored"))
            .await;
    });
    Ok(ReceiverStream::new(rx).boxed())
}

/// Pushes `name` (a repository) with `tag`, or every tag of the
/// repository when `tag` is empty.
pub async fn push(
    engine: Arc<Engine>,
    name: &str,
    tag: &str,
    auth: Option<AuthConfig>,
) -> Result<BoxStream<'static, Message>, ImageError> {
    let repository = Reference::parse(name)?;
    let wanted: Vec<String> = if tag.is_empty() && name.contains(':') && repository.tag.is_some() {
        vec![repository.to_string()]
    } else if tag.is_empty() {
        let repo = repository.name();
        let mut all: Vec<String> = super::catalog(&engine)
            .await?
            .into_iter()
            .map(|i| i.name)
            .filter(|n| super::names::repository_of(n) == repo && super::names::is_tagged(n))
            .collect();
        all.sort();
        all.dedup();
        all
    } else {
        vec![pull_reference(&repository.name(), tag)?.to_string()]
    };
    // Each named image must exist before anything is streamed.
    let mut images = Vec::new();
    for n in &wanted {
        let found = match super::lookup(&engine, n).await {
            Err(ImageError::NotFound(_)) => return Err(ImageError::NoLocalTag(familiar(n))),
            other => other?,
        };
        images.push((n.clone(), found.image));
    }
    if images.is_empty() {
        return Err(ImageError::NoLocalTag(familiar(&repository.name())));
    }
    let (tx, rx) = mpsc::channel::<Message>(64);
    let shown_repo = familiar(&repository.name());
    tokio::spawn(async move {
        let first = Message::status(format!("The push refers to repository [{shown_repo}]"));
        if tx.send(first).await.is_err() {
            return;
        }
        for (name, image) in images {
            if let Err(e) = push_one(&engine, &name, &image, auth.as_ref(), &tx).await {
                let _ = tx.send(Message::error(e.to_string())).await;
                return;
            }
        }
    });
    Ok(ReceiverStream::new(rx).boxed())
}

async fn push_one(
    engine: &Engine,
    name: &str,
    image: &super::Image,
    auth: Option<&AuthConfig>,
    tx: &mpsc::Sender<Message>,
) -> Result<(), ImageError> {
    let req = pb::PushRequest {
        name: image.name.clone(),
        reference: name.to_string(),
        auth: auth.map(AuthConfig::to_pb),
        platform: String::new(),
    };
    let diff_ids: BTreeMap<String, String> = image
        .layers
        .iter()
        .zip(&image.config.rootfs.diff_ids)
        .map(|(l, d)| (l.digest.clone(), short_id(d).to_string()))
        .collect();
    let id_of = |digest: &str| {
        diff_ids
            .get(digest)
            .cloned()
            .unwrap_or_else(|| short_id(digest).to_string())
    };
    let mut upstream = engine.supervisor.push(req).await.map_err(push_error)?;
    let mut log = LayerLog::for_push();
    let mut digest = String::new();
    while let Some(item) = upstream.next().await {
        let msg = item.map_err(push_error)?;
        for line in log.update(&msg.progress, &id_of) {
            if tx.send(line).await.is_err() {
                return Ok(());
            }
        }
        if !msg.digest.is_empty() {
            digest = msg.digest;
        }
    }
    let size = engine
        .supervisor
        .read_blob(&digest)
        .await
        .map(|b| b.len())
        .unwrap_or(0);
    let r = Reference::parse(name)?;
    let tag = r.tag.clone().unwrap_or_default();
    let _ = tx
        .send(Message::status(format!(
            "{tag}: digest: {digest} size: {size}"
        )))
        .await;
    let aux = Message {
        progress_detail: Some(Detail::default()),
        aux: Some(serde_json::json!({ "Tag": tag, "Digest": digest, "Size": size })),
        ..Default::default()
    };
    let _ = tx.send(aux).await;
    let attributes = BTreeMap::from([("name".to_string(), familiar(&r.name()))]);
    engine
        .events
        .emit(Kind::Image, "push", &shown(&r), attributes);
    Ok(())
}

fn push_error(e: BackendError) -> ImageError {
    match e {
        BackendError::Unauthorized(m) => ImageError::Unauthorized(m),
        e => ImageError::Backend(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::ProgressState as S;

    fn p(digest: &str, state: S, offset: i64, total: i64) -> pb::Progress {
        pb::Progress {
            digest: digest.into(),
            kind: "layer".into(),
            state: state as i32,
            offset,
            total,
        }
    }

    #[test]
    fn sizes_and_bars() {
        assert_eq!(human_size(512), "512B");
        assert_eq!(human_size(22477), "22.48kB");
        assert_eq!(human_size(2152262), "2.152MB");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size(2100000), "2.1MB");
        assert_eq!(
            progress_bar(22477, 2152262),
            format!("[>{}]  22.48kB/2.152MB", " ".repeat(50))
        );
        assert_eq!(
            progress_bar(2152262, 2152262),
            format!("[{}>]  2.152MB/2.152MB", "=".repeat(50))
        );
    }

    #[test]
    fn lines_escape_as_go_does() {
        let line = Message::bar("Downloading", "abc", 1, 2).to_line();
        let text = String::from_utf8(line).unwrap();
        assert!(text.starts_with(
            r#"{"status":"Downloading","progressDetail":{"current":1,"total":2},"progress":"[=========================\u003e"#
        ), "{text}");
        assert!(text.ends_with("\"id\":\"abc\"}\r\n"));
        let err = String::from_utf8(Message::error("boom").to_line()).unwrap();
        assert_eq!(
            err,
            "{\"errorDetail\":{\"message\":\"boom\"},\"error\":\"boom\"}\r\n"
        );
    }

    #[test]
    fn pull_progress_becomes_docker_lines() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let id = |d: &str| short_id(d).to_string();
        let mut log = LayerLog::default();
        let mut all = Vec::new();
        all.extend(log.update(&[p(&a, S::Waiting, 0, 100), p(&b, S::Exists, 50, 50)], &id));
        all.extend(log.update(
            &[p(&a, S::Downloading, 40, 100), p(&b, S::Exists, 50, 50)],
            &id,
        ));
        all.extend(log.update(&[p(&a, S::Done, 100, 100), p(&b, S::Exists, 50, 50)], &id));
        all.extend(log.update(&[p(&a, S::Done, 100, 100)], &id));
        let statuses: Vec<(String, String)> = all
            .iter()
            .map(|m| (m.status.clone().unwrap(), m.id.clone().unwrap()))
            .collect();
        let aa = "a".repeat(12);
        let bb = "b".repeat(12);
        let want = [
            ("Pulling fs layer", &aa),
            ("Already exists", &bb),
            ("Downloading", &aa),
            ("Verifying Checksum", &aa),
            ("Download complete", &aa),
            ("Extracting", &aa),
            ("Pull complete", &aa),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(s, i)| (s.to_string(), i.to_string()))
            .collect();
        assert_eq!(statuses, want);
        assert_eq!(
            all[2].progress_detail,
            Some(Detail {
                current: Some(40),
                total: Some(100)
            })
        );
    }

    #[test]
    fn waiting_when_others_download() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let id = |d: &str| short_id(d).to_string();
        let mut log = LayerLog::default();
        log.update(&[p(&a, S::Waiting, 0, 9), p(&b, S::Waiting, 0, 9)], &id);
        let lines = log.update(&[p(&a, S::Downloading, 3, 9), p(&b, S::Waiting, 0, 9)], &id);
        let statuses: Vec<&str> = lines.iter().filter_map(|m| m.status.as_deref()).collect();
        assert_eq!(statuses, ["Downloading", "Waiting"]);
    }

    #[test]
    fn push_progress_lines() {
        let a = format!("sha256:{}", "a".repeat(64));
        let id = |_: &str| "diffid".to_string();
        let mut log = LayerLog::for_push();
        let mut all = log.update(&[p(&a, S::Waiting, 0, 9)], &id);
        all.extend(log.update(&[p(&a, S::Uploading, 9, 9)], &id));
        all.extend(log.update(&[p(&a, S::Done, 9, 9)], &id));
        let statuses: Vec<&str> = all.iter().filter_map(|m| m.status.as_deref()).collect();
        assert_eq!(statuses, ["Preparing", "Pushing", "Pushed"]);
    }

    #[test]
    fn references_and_registries() {
        assert_eq!(
            pull_reference("busybox", "").unwrap().to_string(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            pull_reference("localhost:5000/a", "1").unwrap().to_string(),
            "localhost:5000/a:1"
        );
        let digest = format!("sha256:{}", "c".repeat(64));
        assert_eq!(
            pull_reference("a", &digest).unwrap().to_string(),
            format!("docker.io/library/a@{digest}")
        );
    }
}
