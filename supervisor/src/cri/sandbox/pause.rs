//! berth's own pause image: the static `berth-pause` binary (built from
//! `supervisor/pause/pause.rs` by the build script and embedded here) in
//! one uncompressed layer, with a config that runs `/pause` as user
//! 65535. When the first pod needs it, the supervisor imports it into
//! [`NAMESPACE`] under the default pause image's name (unless an image
//! has that name), so no pull is needed; any other name is pulled.

use std::io;

use sha2::{Digest as _, Sha256};

use crate::cri::NAMESPACE;
use crate::images::{ImageError, Images};
use crate::metadata::ImageRecord;
use crate::oci::{Descriptor, MEDIA_OCI_CONFIG, MEDIA_OCI_LAYER, MEDIA_OCI_MANIFEST};

/// The pause binary.
pub const PAUSE_BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/berth-pause"));

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The layer: `/pause` and the empty directories the runtime mounts on
/// (the root is read-only), with fixed owners and times so the image is
/// the same on every start.
fn layer() -> io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    for dir in ["dev/", "etc/", "proc/", "sys/"] {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(0);
        h.set_mtime(0);
        tar.append_data(&mut h, dir, io::empty())?;
    }
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o755);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(PAUSE_BINARY.len() as u64);
    h.set_mtime(0);
    tar.append_data(&mut h, "pause", PAUSE_BINARY)?;
    tar.into_inner()
}

/// The image's blobs: (layer, config, manifest), each with its digest.
fn blobs(architecture: &str) -> io::Result<[(String, Vec<u8>); 3]> {
    let layer = layer()?;
    let layer_digest = sha256(&layer);
    let config = serde_json::json!({
        "architecture": architecture,
        "os": "linux",
        "config": {
            "Entrypoint": ["/pause"],
            "User": "65535:65535",
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created_by": "berth-supervisord: berth-pause", "comment": "berth's pause image"}],
    })
    .to_string()
    .into_bytes();
    let config_digest = sha256(&config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_MANIFEST,
        "config": {"mediaType": MEDIA_OCI_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": MEDIA_OCI_LAYER, "digest": layer_digest, "size": layer.len()}],
    })
    .to_string()
    .into_bytes();
    Ok([
        (layer_digest, layer),
        (config_digest, config),
        (sha256(&manifest), manifest),
    ])
}

/// Imports berth's pause image as `name` unless an image has that name;
/// the record made, `None` when there was one already.
pub fn import_if_absent(images: &Images, name: &str) -> Result<Option<ImageRecord>, ImageError> {
    match images.get(NAMESPACE, name) {
        Ok(_) => return Ok(None),
        Err(ImageError::NotFound(_)) => {}
        Err(e) => return Err(e),
    }
    let blobs = blobs(&images.platform.architecture)
        .map_err(|e| ImageError::Internal(format!("build the pause image: {e}")))?;
    for (digest, bytes) in &blobs {
        images.store_bytes(digest, bytes)?;
    }
    let (digest, manifest) = &blobs[2];
    let target = Descriptor {
        media_type: MEDIA_OCI_MANIFEST.to_string(),
        digest: digest.clone(),
        size: manifest.len() as i64,
        urls: Vec::new(),
        annotations: Default::default(),
        platform: None,
    };
    let record = images.create(NAMESPACE, name, target)?;
    tracing::info!(image = %record.name, digest = %record.target.digest, "imported berth's pause image");
    Ok(Some(record))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_binary_is_a_small_static_executable() {
        assert_eq!(&PAUSE_BINARY[..4], b"\x7fELF");
        assert!(
            PAUSE_BINARY.len() < 16 << 10,
            "{} bytes",
            PAUSE_BINARY.len()
        );
        // No program interpreter: static.
        let text = String::from_utf8_lossy(PAUSE_BINARY);
        assert!(!text.contains("ld-linux"), "dynamically linked");
    }

    #[test]
    fn the_image_is_the_same_every_time_and_runs_pause() {
        let a = blobs("amd64").unwrap();
        let b = blobs("amd64").unwrap();
        assert_eq!(a[2].0, b[2].0);
        let config: serde_json::Value = serde_json::from_slice(&a[1].1).unwrap();
        assert_eq!(config["config"]["Entrypoint"][0], "/pause");
        assert_eq!(config["rootfs"]["diff_ids"][0], a[0].0.as_str());
        let mut archive = tar::Archive::new(a[0].1.as_slice());
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert!(names.contains(&"pause".to_string()), "{names:?}");
    }

    #[test]
    fn the_pause_binary_exits_0_on_sigterm() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pause");
        std::fs::write(&path, PAUSE_BINARY).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let mut child = std::process::Command::new(&path).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(
            child.try_wait().unwrap().is_none(),
            "pause exited by itself"
        );
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        assert_eq!(child.wait().unwrap().code(), Some(0));
    }
}
