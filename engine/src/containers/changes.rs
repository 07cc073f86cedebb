//! `docker diff` and `docker export`: the container's snapshot as the
//! supervisor reads it.

use bytes::Bytes;
use futures_util::stream::BoxStream;
use serde_json::{json, Value};

use super::{Container, ContainerError, Result};
use crate::Engine;

/// The mount points the runtime makes in the container's own layer (Docker
/// keeps them in an init layer beneath it): not the container's changes.
const MOUNT_POINTS: [&str; 9] = [
    "/etc/hosts",
    "/etc/hostname",
    "/etc/resolv.conf",
    "/dev/pts",
    "/dev/shm",
    "/dev/console",
    "/dev/mqueue",
    "/proc",
    "/sys",
];

/// Drops the runtime's mount points and the directories that are listed
/// as modified only because one was made in them.
fn without_mount_points(changes: Vec<(String, i32)>) -> Vec<(String, i32)> {
    let is_mount_point = |p: &str| {
        MOUNT_POINTS
            .iter()
            .any(|m| p == *m || p.starts_with(&format!("{m}/")))
    };
    let kept: Vec<(String, i32)> = changes
        .into_iter()
        .filter(|(p, _)| !is_mount_point(p))
        .collect();
    let parents_of_mount_points: Vec<&str> = MOUNT_POINTS
        .iter()
        .filter_map(|m| m.rsplit_once('/').map(|(d, _)| d))
        .collect();
    kept.iter()
        .filter(|(p, kind)| {
            let only_for_mount_points = *kind == 0
                && parents_of_mount_points.contains(&p.as_str())
                && !kept.iter().any(|(q, _)| q.starts_with(&format!("{p}/")));
            !only_for_mount_points
        })
        .cloned()
        .collect()
}

/// `GET /containers/{id}/changes`.
pub async fn changes(engine: &Engine, c: &Container) -> Result<Value> {
    let list = engine
        .supervisor
        .changes(&c.id)
        .await
        .map_err(ContainerError::backend(format!("changes of {}", c.id)))?;
    let list = without_mount_points(list);
    if list.is_empty() {
        return Ok(Value::Null);
    }
    Ok(Value::Array(
        list.into_iter()
            .map(|(path, kind)| json!({"Path": path, "Kind": kind}))
            .collect(),
    ))
}

/// `GET /containers/{id}/export`: a tar stream.
pub async fn export(
    engine: &Engine,
    c: &Container,
) -> Result<BoxStream<'static, std::result::Result<Bytes, crate::backend::BackendError>>> {
    engine
        .supervisor
        .export(&c.id)
        .await
        .map_err(ContainerError::backend(format!("export {}", c.id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_not_changes() {
        let c = |p: &str, k| (p.to_string(), k);
        let got = without_mount_points(vec![
            c("/dev", 0),
            c("/dev/pts", 1),
            c("/etc", 0),
            c("/etc/hosts", 1),
            c("/proc", 1),
            c("/tmp", 0),
            c("/tmp/x", 1),
        ]);
        assert_eq!(got, vec![c("/tmp", 0), c("/tmp/x", 1)]);
        let got = without_mount_points(vec![c("/etc", 0), c("/etc/hosts", 1), c("/etc/passwd", 0)]);
        assert_eq!(got, vec![c("/etc", 0), c("/etc/passwd", 0)]);
    }
}
