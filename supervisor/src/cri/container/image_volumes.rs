//! Image volumes (KEP-4639): a CRI Mount whose `image` is set mounts that
//! image's root filesystem, all its layers, read-only at its
//! `container_path` (or only its `image_sub_path`), as containerd 2.x and
//! CRI-O do. kubelet pulls the image first; the mount names it by
//! reference or id, resolved as CreateContainer resolves its own image.
//!
//! For mount `i` of container `<id>`: a view snapshot
//! `cri-image-volume/<id>/<i>` on the image's chain (a root of the garbage
//! collector, so the layers stay while the container exists, even when
//! the image's names are removed), mounted read-only at
//! `<state>/cri/image-volumes/<id>/<i>` (the one layer bound, or an
//! overlay of the layers without an upper directory), and that directory
//! (or its sub path) bound into the container. Made at CreateContainer
//! before the container's record (undone when the create fails),
//! mounted again at StartContainer when it is not mounted (a reboot),
//! and removed at RemoveContainer; [`sweep`] removes at start what a
//! supervisor killed between those steps left.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use berth_proto::cri::v1 as cri;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::{blocking, CtrError};
use crate::containers::ContainerError;
use crate::cri::images as cri_images;
use crate::cri::{Cri, NAMESPACE};
use crate::images::Images;
use crate::metadata::SnapshotKind;
use crate::snapshots::{Mount, SnapshotError};

/// The prefix of the view snapshots' keys.
pub const KEY_PREFIX: &str = "cri-image-volume/";
/// The label naming a view's container.
pub const CONTAINER_LABEL: &str = "io.berth.cri.image-volume.container";

fn key(id: &str, index: usize) -> String {
    format!("{KEY_PREFIX}{id}/{index}")
}

/// Where a container's image volumes are mounted on the host.
pub fn dir(cri: &Cri, id: &str) -> PathBuf {
    cri.config.state_dir.join("image-volumes").join(id)
}

fn invalid(reason: String) -> CtrError {
    CtrError::Invalid {
        what: "image volume",
        reason,
    }
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> CtrError {
    move |source| CtrError::Io { what, source }
}

fn snapshot_err(e: SnapshotError) -> CtrError {
    CtrError::Container(ContainerError::from(e))
}

/// The image volumes of one create, undone when dropped unless kept.
pub struct Prepared {
    images: Arc<Images>,
    dir: PathBuf,
    /// Mount index → the host path bound into the container.
    sources: BTreeMap<usize, PathBuf>,
    keys: Vec<String>,
    kept: bool,
}

impl Prepared {
    /// The config the spec is built from: each image mount a read-only
    /// bind of its host path.
    pub fn spec_config(&self, config: &cri::ContainerConfig) -> cri::ContainerConfig {
        let mut out = config.clone();
        for (i, source) in &self.sources {
            let m = &mut out.mounts[*i];
            m.host_path = source.to_string_lossy().into_owned();
            m.image = None;
            m.image_sub_path.clear();
        }
        out
    }

    /// The container was made: its volumes stay until it is removed.
    pub fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if !self.kept && (!self.keys.is_empty() || self.dir.exists()) {
            undo(&self.images, &self.dir, &self.keys);
        }
    }
}

/// Checks a mount before anything is made: read-only, no host path, a
/// relative sub path that stays in the image.
fn check(m: &cri::Mount) -> Result<(), CtrError> {
    let image = m.image.as_ref().map(|i| i.image.as_str()).unwrap_or("");
    if image.is_empty() {
        return Err(invalid(format!(
            "no image named for {:?}",
            m.container_path
        )));
    }
    if !m.host_path.is_empty() {
        return Err(invalid(format!(
            "host path {:?} given with image {image:?}: they exclude each other",
            m.host_path
        )));
    }
    if !m.readonly {
        // containerd's words.
        return Err(invalid(format!(
            "readonly must be true while mount image {image:?} at {:?}",
            m.container_path
        )));
    }
    let sub = Path::new(&m.image_sub_path);
    if sub.is_absolute()
        || sub
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(invalid(format!(
            "sub path {:?} of image {image:?} must be relative, without \"..\"",
            m.image_sub_path
        )));
    }
    Ok(())
}

/// Makes the image volumes of container `id` (nothing when it has none)
/// and records in `config` each image's id as its `image_ref`.
pub async fn prepare(
    cri: &Cri,
    id: &str,
    config: &mut cri::ContainerConfig,
) -> Result<Prepared, CtrError> {
    let mut prepared = Prepared {
        images: Arc::clone(&cri.images),
        dir: dir(cri, id),
        sources: BTreeMap::new(),
        keys: Vec::new(),
        kept: false,
    };
    let wanted: Vec<usize> = (0..config.mounts.len())
        .filter(|i| config.mounts[*i].image.is_some())
        .collect();
    for i in &wanted {
        check(&config.mounts[*i])?;
    }
    if wanted.is_empty() {
        return Ok(prepared);
    }
    // No collection between finding the image and the view holding it.
    let _gc = Arc::clone(&cri.images.gc_lock).read_owned().await;
    for i in wanted {
        let m = config.mounts[i].clone();
        let reference = m.image.clone().unwrap_or_default().image;
        let images = Arc::clone(&cri.images);
        let (key, target) = (key(id, i), prepared.dir.join(i.to_string()));
        let labels = BTreeMap::from([(CONTAINER_LABEL.to_string(), id.to_string())]);
        let (image, mounts) = {
            let (key, reference) = (key.clone(), reference.clone());
            blocking(move || {
                let image = cri_images::find(&images, &reference)?
                    .ok_or_else(|| CtrError::ImageNotFound(reference.clone()))?;
                let mounts = images
                    .snapshots
                    .prepare(
                        &images.meta,
                        NAMESPACE,
                        &key,
                        Some(&image.chain_id),
                        SnapshotKind::View,
                        labels.into_iter().collect(),
                    )
                    .map_err(snapshot_err)?;
                Ok((image, mounts))
            })
            .await?
        };
        prepared.keys.push(key);
        mount_all(&mounts, &target)?;
        let source = sub_path(&target, &m.image_sub_path).map_err(|why| {
            invalid(format!(
                "sub path {:?} of image {reference:?}: {why}",
                m.image_sub_path
            ))
        })?;
        prepared.sources.insert(i, source);
        if let Some(spec) = config.mounts[i].image.as_mut() {
            spec.image_ref = image.id.clone();
        }
        tracing::debug!(container = id, image = %image.id, target = %target.display(), "image volume mounted");
    }
    Ok(prepared)
}

/// The sub path of a mounted image, which must exist and, its symlinks
/// followed, stay inside the image.
fn sub_path(root: &Path, sub: &str) -> Result<PathBuf, String> {
    if sub.is_empty() {
        return Ok(root.to_path_buf());
    }
    let root = fs::canonicalize(root).map_err(|e| e.to_string())?;
    let real = fs::canonicalize(root.join(sub)).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "does not exist in the image".to_string(),
        _ => e.to_string(),
    })?;
    if !real.starts_with(&root) {
        return Err("leads out of the image".to_string());
    }
    Ok(real)
}

/// Mounts a view's mounts at `target` (made first), read-only.
fn mount_all(mounts: &[Mount], target: &Path) -> Result<(), CtrError> {
    fs::create_dir_all(target).map_err(io(format!("create {}", target.display())))?;
    for m in mounts {
        let failed = |e: nix::Error| CtrError::Io {
            what: format!("mount the image volume at {}", target.display()),
            source: e.into(),
        };
        if m.kind == "bind" {
            let flags = MsFlags::MS_BIND | MsFlags::MS_REC;
            mount(
                Some(m.source.as_str()),
                target,
                None::<&str>,
                flags,
                None::<&str>,
            )
            .map_err(failed)?;
            let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
            if let Err(e) = mount(None::<&str>, target, None::<&str>, ro, None::<&str>) {
                let _ = umount2(target, MntFlags::MNT_DETACH);
                return Err(failed(e));
            }
        } else {
            let data: Vec<&str> = m
                .options
                .iter()
                .map(String::as_str)
                .filter(|o| *o != "ro")
                .collect();
            mount(
                Some(m.source.as_str()),
                target,
                Some(m.kind.as_str()),
                MsFlags::MS_RDONLY,
                Some(data.join(",").as_str()),
            )
            .map_err(failed)?;
        }
    }
    Ok(())
}

/// Whether `path` is a mount point (by /proc/self/mountinfo).
fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    info.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .is_some_and(|m| m.replace("\\040", " ") == want)
    })
}

/// Before a start: mounts again the volumes that are not mounted (after a
/// reboot emptied the state directory).
pub async fn ensure(cri: &Cri, id: &str, config: &cri::ContainerConfig) -> Result<(), CtrError> {
    let indexes: Vec<usize> = (0..config.mounts.len())
        .filter(|i| config.mounts[*i].image.is_some())
        .collect();
    if indexes.is_empty() {
        return Ok(());
    }
    let images = Arc::clone(&cri.images);
    let dir = dir(cri, id);
    let id = id.to_string();
    blocking(move || {
        for i in indexes {
            let target = dir.join(i.to_string());
            if is_mount_point(&target) {
                continue;
            }
            let mounts = {
                let rx = images.meta.read().map_err(ContainerError::from)?;
                images
                    .snapshots
                    .mounts(&rx, NAMESPACE, &key(&id, i))
                    .map_err(snapshot_err)?
            };
            mount_all(&mounts, &target)?;
            tracing::info!(container = %id, target = %target.display(), "image volume mounted again");
        }
        Ok(())
    })
    .await
}

/// Unmounts and removes a container's volumes and their views.
pub async fn remove(cri: &Cri, id: &str, config: &cri::ContainerConfig) -> Result<(), CtrError> {
    let keys: Vec<String> = (0..config.mounts.len())
        .filter(|i| config.mounts[*i].image.is_some())
        .map(|i| key(id, i))
        .collect();
    let dir = dir(cri, id);
    if keys.is_empty() && !dir.exists() {
        return Ok(());
    }
    let images = Arc::clone(&cri.images);
    blocking(move || {
        unmount_dir(&dir)?;
        let tx = images.meta.write().map_err(ContainerError::from)?;
        let mut storage = Vec::new();
        for k in &keys {
            match images.snapshots.remove_in(&tx, NAMESPACE, k) {
                Ok(s) => storage.push(s),
                Err(SnapshotError::NotFound(_)) => {}
                Err(e) => return Err(snapshot_err(e)),
            }
        }
        tx.commit().map_err(ContainerError::from)?;
        for s in storage {
            let _ = images.snapshots.remove_storage(s);
        }
        Ok(())
    })
    .await
}

/// Unmounts every volume under a container's directory and removes it.
fn unmount_dir(dir: &Path) -> Result<(), CtrError> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let path = e.path();
        // Detached: a process still in the directory does not hold it.
        while is_mount_point(&path) {
            umount2(&path, MntFlags::MNT_DETACH).map_err(|e| CtrError::Io {
                what: format!("unmount the image volume {}", path.display()),
                source: e.into(),
            })?;
        }
        fs::remove_dir(&path).map_err(io(format!("remove {}", path.display())))?;
    }
    fs::remove_dir(dir).map_err(io(format!("remove {}", dir.display())))
}

/// What a failed create made: the mounts, the directory, the views.
fn undo(images: &Images, dir: &Path, keys: &[String]) {
    if let Err(e) = unmount_dir(dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "image volumes not removed");
    }
    for k in keys {
        if let Err(e) = images.snapshots.remove(&images.meta, NAMESPACE, k) {
            tracing::warn!(snapshot = %k, error = %e, "image volume view not removed");
        }
    }
}

/// At start: the volumes and views of containers that no longer exist (a
/// supervisor killed in the middle of a create or a removal).
pub fn sweep(cri: &Cri) {
    let mut ids = std::collections::BTreeSet::new();
    if let Ok(rx) = cri.images.meta.read() {
        for s in cri
            .images
            .snapshots
            .list(&rx, NAMESPACE)
            .unwrap_or_default()
        {
            if let Some(rest) = s.name.strip_prefix(KEY_PREFIX) {
                ids.insert(rest.split('/').next().unwrap_or("").to_string());
            }
        }
    }
    let root = cri.config.state_dir.join("image-volumes");
    for e in fs::read_dir(&root).into_iter().flatten().flatten() {
        ids.insert(e.file_name().to_string_lossy().into_owned());
    }
    for id in ids {
        if matches!(cri.store.container(&id), Ok(Some(_))) || id.is_empty() {
            continue;
        }
        let prefix = format!("{KEY_PREFIX}{id}/");
        let keys: Vec<String> = cri
            .images
            .meta
            .read()
            .ok()
            .and_then(|rx| cri.images.snapshots.list(&rx, NAMESPACE).ok())
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.name)
            .filter(|n| n.starts_with(&prefix))
            .collect();
        tracing::info!(container = %id, "removing the image volumes of a container that is gone");
        undo(&cri.images, &dir(cri, &id), &keys);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(sub: &str) -> cri::Mount {
        cri::Mount {
            container_path: "/vol".into(),
            readonly: true,
            image: Some(cri::ImageSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
            image_sub_path: sub.into(),
            ..Default::default()
        }
    }

    #[test]
    fn mounts_are_checked_before_anything_is_made() {
        check(&mount("")).unwrap();
        check(&mount("etc/./x")).unwrap();
        for bad in ["/etc", "../x", "a/../../b"] {
            let e = check(&mount(bad)).unwrap_err().to_string();
            assert!(e.contains("must be relative"), "{bad}: {e}");
        }
        let mut writable = mount("");
        writable.readonly = false;
        let e = check(&writable).unwrap_err().to_string();
        assert!(e.contains("readonly must be true"), "{e}");
        let mut both = mount("");
        both.host_path = "/tmp".into();
        assert!(check(&both).is_err());
        let mut unnamed = mount("");
        unnamed.image = Some(Default::default());
        assert!(check(&unnamed).is_err());
    }

    #[test]
    fn sub_paths_must_exist_and_stay_in_the_image() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        fs::create_dir_all(root.join("etc/inner")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("out")).unwrap();
        std::os::unix::fs::symlink("etc/inner", root.join("in")).unwrap();
        let real = fs::canonicalize(&root).unwrap();
        assert_eq!(sub_path(&root, "").unwrap(), root);
        assert_eq!(sub_path(&root, "etc").unwrap(), real.join("etc"));
        assert_eq!(sub_path(&root, "in").unwrap(), real.join("etc/inner"));
        assert!(sub_path(&root, "missing")
            .unwrap_err()
            .contains("does not exist"));
        assert!(sub_path(&root, "out").unwrap_err().contains("leads out"));
    }
}
