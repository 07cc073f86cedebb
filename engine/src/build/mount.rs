//! A snapshot mounted by the engine for a build step to write into (COPY,
//! ADD, WORKDIR): the supervisor's mounts for it, done in a private
//! directory, undone on drop.

use std::path::{Path, PathBuf};

use berth_proto::types::v1::Mount;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mount the build snapshot on {target}: {source}")]
    Mount { target: PathBuf, source: nix::Error },
    #[error("mount the build snapshot: unsupported mount type {0:?}")]
    Kind(String),
    #[error("mount the build snapshot: no mounts")]
    Empty,
    #[error("make the mount point {target}: {source}")]
    MountPoint {
        target: PathBuf,
        source: std::io::Error,
    },
}

/// A mounted snapshot, unmounted (and its mount point removed) on drop.
#[derive(Debug)]
pub struct Mounted {
    root: PathBuf,
}

impl Mounted {
    pub fn mount(mounts: &[Mount], target: &Path) -> Result<Mounted, MountError> {
        let Some(first) = mounts.first() else {
            return Err(MountError::Empty);
        };
        std::fs::create_dir_all(target).map_err(|source| MountError::MountPoint {
            target: target.to_path_buf(),
            source,
        })?;
        let mounted = Mounted {
            root: target.to_path_buf(),
        };
        // A snapshot is one mount: an overlay, or a bind of one directory.
        let (flags, data) = match first.r#type.as_str() {
            "overlay" => {
                let data: Vec<&str> = first
                    .options
                    .iter()
                    .map(String::as_str)
                    .filter(|o| *o != "rw" && *o != "ro")
                    .collect();
                (MsFlags::MS_NODEV | MsFlags::MS_NOSUID, Some(data.join(",")))
            }
            "bind" => (MsFlags::MS_BIND | MsFlags::MS_REC, None),
            other => return Err(MountError::Kind(other.to_string())),
        };
        mount(
            Some(first.source.as_str()),
            target,
            Some(first.r#type.as_str()),
            flags,
            data.as_deref(),
        )
        .map_err(|source| MountError::Mount {
            target: target.to_path_buf(),
            source,
        })?;
        Ok(mounted)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        // Not mounted (a failed mount) is fine: the directory goes anyway.
        let _ = umount2(&self.root, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&self.root);
    }
}
