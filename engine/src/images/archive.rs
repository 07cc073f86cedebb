//! `docker save`, `docker load` and `docker import`: the supervisor reads
//! and writes image tarballs; an import of a root file system tarball is
//! wrapped here as a one-layer `docker save` archive (`manifest.json`,
//! `config.json`, `layer.tar`) and imported like a load.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_client::reference::Reference;
use berth_proto::images::v1 as pb;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use super::names::{familiar, is_tagged};
use super::transfer::Message;
use super::{lookup, ImageError};
use crate::events::Kind;
use crate::Engine;

/// The body of a request, as it arrives.
pub type Body = BoxStream<'static, Result<Bytes, ImageError>>;

fn emit(engine: &Engine, action: &str, id: &str, name: &str) {
    let attributes = BTreeMap::from([("name".to_string(), name.to_string())]);
    engine.events.emit(Kind::Image, action, id, attributes);
}

/// `GET /images/get?names=` and `GET /images/{name}/get`: a `docker save`
/// tarball of the named images.
pub async fn save(
    engine: &Engine,
    names: &[String],
) -> Result<BoxStream<'static, Result<Bytes, ImageError>>, ImageError> {
    if names.is_empty() {
        return Err(ImageError::InvalidArgument("no image named".into()));
    }
    let mut stored = Vec::new();
    let mut unnamed = Vec::new();
    let mut by_name = Vec::new();
    for name in names {
        let found = lookup(engine, name).await?;
        emit(engine, "save", &found.image.id, &found.image.id);
        if found.by_id {
            // As dockerd: an image named by its id is saved without its
            // names (loading it back gives the image, untagged).
            if let Some(first) = found.names.into_iter().next() {
                unnamed.push(first.clone());
                stored.push(first);
            } else {
                stored.push(found.image.name);
            }
        } else {
            by_name.push(found.image.name.clone());
            stored.push(found.image.name);
        }
    }
    // A name asked for by name too keeps its name.
    unnamed.retain(|u| !by_name.contains(u));
    stored.dedup();
    let stream = engine
        .supervisor
        .export_images(stored, unnamed, pb::ArchiveFormat::Docker)
        .await
        .map_err(ImageError::Backend)?;
    Ok(stream.map(|r| r.map_err(ImageError::Backend)).boxed())
}

/// Forwards a body to the supervisor; a body that fails to arrive stops
/// the stream early (the import then fails on the truncated archive) and
/// its error is kept for the answer.
fn forward(
    body: Body,
) -> (
    BoxStream<'static, Bytes>,
    Arc<std::sync::Mutex<Option<ImageError>>>,
) {
    let failed = Arc::new(std::sync::Mutex::new(None));
    let keep = Arc::clone(&failed);
    let stream = body
        .scan((), move |_, item| {
            let next = match item {
                Ok(bytes) => Some(bytes),
                Err(e) => {
                    *keep.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    None
                }
            };
            futures_util::future::ready(next)
        })
        .boxed();
    (stream, failed)
}

/// `POST /images/load`: imports a `docker save` (or OCI layout) tarball;
/// one `Loaded image` message per image.
pub async fn load(engine: &Engine, body: Body) -> Result<Vec<Message>, ImageError> {
    let (data, failed) = forward(body);
    let options = pb::ImportOptions::default();
    let result = engine.supervisor.import_images(options, data).await;
    if let Some(e) = failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(e);
    }
    let images = result.map_err(|e| ImageError::Archive(e.to_string()))?;
    let mut out = Vec::new();
    for record in images {
        let name = record.name.clone();
        let image = super::resolve_record(engine, record).await?;
        if is_tagged(&name) {
            out.push(Message::stream(format!(
                "Loaded image: {}\n",
                familiar(&name)
            )));
        } else {
            out.push(Message::stream(format!("Loaded image ID: {}\n", image.id)));
        }
        emit(engine, "load", &image.id, &image.id);
    }
    out.dedup();
    Ok(out)
}

/// What `POST /images/create?fromSrc=-` asks for.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    pub repo: String,
    pub tag: String,
    pub message: String,
    /// Dockerfile instructions applied to the config (`CMD`, `ENV`, ...).
    pub changes: Vec<String>,
}

/// Imports a root file system tarball (plain or gzip) as a one-layer
/// image; its id.
pub async fn import(
    engine: &Engine,
    opts: ImportOptions,
    body: Body,
) -> Result<String, ImageError> {
    let name = match (opts.repo.as_str(), opts.tag.as_str()) {
        ("", _) => None,
        (repo, "") => Some(Reference::parse(repo)?),
        (repo, tag) => Some(Reference::parse(&format!("{repo}:{tag}"))?),
    };
    let mut config = serde_json::json!({});
    for change in &opts.changes {
        apply_change(&mut config, change)?;
    }
    let dir = engine.paths.engine_dir().join("tmp");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| ImageError::Archive(format!("create {}: {e}", dir.display())))?;
    let raw = tempfile_in(&dir, "import-raw");
    let layer = tempfile_in(&dir, "import-layer");
    let result = import_files(engine, &opts, name, config, body, &raw, &layer).await;
    let _ = tokio::fs::remove_file(&raw).await;
    let _ = tokio::fs::remove_file(&layer).await;
    result
}

fn tempfile_in(dir: &Path, prefix: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    dir.join(format!("{prefix}-{}-{nanos}", std::process::id()))
}

async fn import_files(
    engine: &Engine,
    opts: &ImportOptions,
    name: Option<Reference>,
    config: serde_json::Value,
    mut body: Body,
    raw: &Path,
    layer: &Path,
) -> Result<String, ImageError> {
    let io = |what: &str, e: std::io::Error| ImageError::Archive(format!("{what}: {e}"));
    let mut file = tokio::fs::File::create(raw)
        .await
        .map_err(|e| io("create temporary file", e))?;
    while let Some(chunk) = body.next().await {
        file.write_all(&chunk?)
            .await
            .map_err(|e| io("write temporary file", e))?;
    }
    file.flush()
        .await
        .map_err(|e| io("write temporary file", e))?;
    drop(file);
    // Decompressed (when gzip) into the layer file, hashed on the way.
    let (raw2, layer2) = (raw.to_path_buf(), layer.to_path_buf());
    let (diff_id, size) = tokio::task::spawn_blocking(move || uncompress_hashed(&raw2, &layer2))
        .await
        .map_err(|e| ImageError::Archive(e.to_string()))?
        .map_err(|e| io("read the tarball", e))?;

    let now = super::list::format_time(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
        0,
    );
    let mut history = serde_json::json!({ "created": now, "created_by": "" });
    if !opts.message.is_empty() {
        history["comment"] = opts.message.clone().into();
    }
    let mut document = serde_json::json!({
        "architecture": crate::go_arch(),
        "os": "linux",
        "created": now,
        "config": config,
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        "history": [history],
    });
    if !opts.message.is_empty() {
        document["comment"] = opts.message.clone().into();
    }
    let config_bytes =
        serde_json::to_vec(&document).map_err(|e| ImageError::Archive(e.to_string()))?;
    let repo_tags: Vec<String> = name.iter().map(|r| familiar(&r.to_string())).collect();
    let manifest = serde_json::json!([{
        "Config": "config.json",
        "RepoTags": repo_tags,
        "Layers": ["layer.tar"],
    }]);
    let manifest_bytes =
        serde_json::to_vec(&manifest).map_err(|e| ImageError::Archive(e.to_string()))?;

    let mut head = Vec::new();
    tar_entry(&mut head, "manifest.json", &manifest_bytes);
    tar_entry(&mut head, "config.json", &config_bytes);
    head.extend_from_slice(&tar_header("layer.tar", size));
    let mut tail = vec![0u8; padding(size)];
    tail.extend_from_slice(&[0u8; 1024]);

    let file = tokio::fs::File::open(layer)
        .await
        .map_err(|e| io("open the layer", e))?;
    let layer_stream = futures_util::stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 1 << 20];
        match file.read(&mut buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Bytes::from(buf), file))
            }
        }
    });
    let data = futures_util::stream::iter([Bytes::from(head)])
        .chain(layer_stream)
        .chain(futures_util::stream::iter([Bytes::from(tail)]))
        .boxed();
    let options = pb::ImportOptions {
        name: name.map(|r| r.to_string()).unwrap_or_default(),
        ..Default::default()
    };
    let images = engine
        .supervisor
        .import_images(options, data)
        .await
        .map_err(|e| ImageError::Archive(e.to_string()))?;
    let record = images
        .into_iter()
        .next()
        .ok_or_else(|| ImageError::Archive("the import stored no image".into()))?;
    let image = super::resolve_record(engine, record).await?;
    emit(engine, "import", &image.id, &image.id);
    Ok(image.id)
}

/// Copies `raw` (a tar, perhaps gzip-compressed) to `layer` uncompressed:
/// the sha256 digest and size of what was written.
fn uncompress_hashed(raw: &Path, layer: &Path) -> std::io::Result<(String, u64)> {
    let mut input = std::fs::File::open(raw)?;
    let mut magic = [0u8; 2];
    let n = input.read(&mut magic)?;
    drop(input);
    let input = std::fs::File::open(raw)?;
    let mut reader: Box<dyn Read> = if n == 2 && magic == [0x1f, 0x8b] {
        Box::new(flate2::read::MultiGzDecoder::new(input))
    } else {
        Box::new(input)
    };
    let mut out = std::fs::File::create(layer)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        std::io::Write::write_all(&mut out, &buf[..n])?;
        size += n as u64;
    }
    out.sync_all()?;
    Ok((format!("sha256:{}", hex::encode(hasher.finalize())), size))
}

fn padding(size: u64) -> usize {
    ((512 - size % 512) % 512) as usize
}

/// A ustar header for a regular file.
fn tar_header(name: &str, size: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..107].copy_from_slice(b"0000644");
    h[108..115].copy_from_slice(b"0000000");
    h[116..123].copy_from_slice(b"0000000");
    let size = format!("{size:011o}");
    h[124..135].copy_from_slice(size.as_bytes());
    h[136..147].copy_from_slice(b"00000000000");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let sum = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(sum.as_bytes());
    h
}

fn tar_entry(out: &mut Vec<u8>, name: &str, data: &[u8]) {
    out.extend_from_slice(&tar_header(name, data.len() as u64));
    out.extend_from_slice(data);
    out.extend(std::iter::repeat_n(0u8, padding(data.len() as u64)));
}

/// Applies one Dockerfile instruction of `--change` to an image config.
pub fn apply_change(config: &mut serde_json::Value, change: &str) -> Result<(), ImageError> {
    let change = change.trim();
    let (instruction, rest) = change
        .split_once(char::is_whitespace)
        .unwrap_or((change, ""));
    let rest = rest.trim();
    let bad = || ImageError::InvalidArgument(format!("invalid change {change:?}"));
    let list = |rest: &str| -> Vec<String> {
        match serde_json::from_str::<Vec<String>>(rest) {
            Ok(v) => v,
            Err(_) => vec!["/bin/sh".into(), "-c".into(), rest.to_string()],
        }
    };
    let key_values = |rest: &str| -> Vec<(String, String)> {
        if !rest.contains('=') {
            return match rest.split_once(char::is_whitespace) {
                Some((k, v)) => vec![(k.to_string(), v.trim().to_string())],
                None => vec![(rest.to_string(), String::new())],
            };
        }
        rest.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
            .collect()
    };
    let obj = config.as_object_mut().ok_or_else(bad)?;
    match instruction.to_ascii_uppercase().as_str() {
        "CMD" => {
            obj.insert("Cmd".into(), list(rest).into());
        }
        "ENTRYPOINT" => {
            obj.insert("Entrypoint".into(), list(rest).into());
        }
        "WORKDIR" => {
            obj.insert("WorkingDir".into(), rest.into());
        }
        "USER" => {
            obj.insert("User".into(), rest.into());
        }
        "STOPSIGNAL" => {
            obj.insert("StopSignal".into(), rest.into());
        }
        "ENV" => {
            let env = obj.entry("Env").or_insert_with(|| serde_json::json!([]));
            if let Some(env) = env.as_array_mut() {
                for (k, v) in key_values(rest) {
                    env.retain(|e| !e.as_str().is_some_and(|s| s.starts_with(&format!("{k}="))));
                    env.push(format!("{k}={v}").into());
                }
            }
        }
        "LABEL" => {
            let labels = obj.entry("Labels").or_insert_with(|| serde_json::json!({}));
            if let Some(labels) = labels.as_object_mut() {
                for (k, v) in key_values(rest) {
                    labels.insert(k, v.into());
                }
            }
        }
        "EXPOSE" => {
            let ports = obj
                .entry("ExposedPorts")
                .or_insert_with(|| serde_json::json!({}));
            if let Some(ports) = ports.as_object_mut() {
                for p in rest.split_whitespace() {
                    let p = if p.contains('/') {
                        p.to_string()
                    } else {
                        format!("{p}/tcp")
                    };
                    ports.insert(p, serde_json::json!({}));
                }
            }
        }
        "VOLUME" => {
            let volumes = obj
                .entry("Volumes")
                .or_insert_with(|| serde_json::json!({}));
            if let Some(volumes) = volumes.as_object_mut() {
                let paths = serde_json::from_str::<Vec<String>>(rest)
                    .unwrap_or_else(|_| rest.split_whitespace().map(String::from).collect());
                for p in paths {
                    volumes.insert(p, serde_json::json!({}));
                }
            }
        }
        _ => {
            return Err(ImageError::InvalidArgument(format!(
                "{instruction} is not a valid change command"
            )))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_apply_to_the_config() {
        let mut c = serde_json::json!({});
        apply_change(&mut c, r#"CMD ["/bin/sh"]"#).unwrap();
        apply_change(&mut c, "ENTRYPOINT echo hi").unwrap();
        apply_change(&mut c, "ENV A=1 B=2").unwrap();
        apply_change(&mut c, "ENV A=3").unwrap();
        apply_change(&mut c, "LABEL x=y").unwrap();
        apply_change(&mut c, "WORKDIR /w").unwrap();
        apply_change(&mut c, "EXPOSE 80").unwrap();
        assert_eq!(c["Cmd"], serde_json::json!(["/bin/sh"]));
        assert_eq!(
            c["Entrypoint"],
            serde_json::json!(["/bin/sh", "-c", "echo hi"])
        );
        assert_eq!(c["Env"], serde_json::json!(["B=2", "A=3"]));
        assert_eq!(c["Labels"]["x"], "y");
        assert_eq!(c["WorkingDir"], "/w");
        assert!(c["ExposedPorts"]["80/tcp"].is_object());
        assert!(apply_change(&mut c, "RUN true").is_err());
    }

    #[test]
    fn tar_headers_are_read_back() {
        let mut out = Vec::new();
        tar_entry(&mut out, "a.json", b"{}");
        out.extend_from_slice(&[0u8; 1024]);
        let mut archive = tar::Archive::new(&out[..]);
        let mut entries = archive.entries().unwrap();
        let mut e = entries.next().unwrap().unwrap();
        assert_eq!(e.path().unwrap().to_str(), Some("a.json"));
        let mut s = String::new();
        e.read_to_string(&mut s).unwrap();
        assert_eq!(s, "{}");
    }
}
