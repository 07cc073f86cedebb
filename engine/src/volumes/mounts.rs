//! A container's volumes. At create, [`prepare`] turns `-v name:/path`,
//! `-v /path`, `--mount type=volume`, `--volumes-from` and the image's
//! `VOLUME`s into [`MountPoint`]s (kept in the container's record), making
//! the named volumes that do not exist yet and an anonymous volume for each
//! unnamed one; [`spec_host_config`] hands them to the spec builder as
//! binds of their host directories; [`copy_up`] copies the image's content
//! at each destination into new, empty volumes. [`on_start`] and
//! [`on_stop`] mount and unmount volumes with driver options and emit
//! `mount` and `unmount`; [`on_remove`] releases them, removing the
//! anonymous ones for `docker rm -v` and `--rm`. [`inspect`] is the
//! container's `Mounts`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{CreateOptions, VolumeError, ANONYMOUS_LABEL, LOCAL};
use crate::containers::record::ContainerRecord;
use crate::containers::spec::mounts::clean;
use crate::events::Kind;
use crate::types::HostConfig;
use crate::Engine;

/// A volume (or, inherited with `--volumes-from`, a bind) a container
/// mounts, as inspect shows it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct MountPoint {
    /// `volume` or `bind`.
    pub kind: String,
    /// The volume's name (empty for a bind).
    pub name: String,
    /// The host path mounted (a volume's `_data`, or a path below it).
    pub source: String,
    pub destination: String,
    pub driver: String,
    /// Docker's Mode: the `-v` options as given (`z` for a named volume).
    pub mode: String,
    pub rw: bool,
    pub propagation: String,
    /// Whether the image's content at the destination is copied into a
    /// new, empty volume (`nocopy` turns it off).
    pub copy_data: bool,
    /// `volume-subpath`: the path inside the volume that is mounted.
    pub subpath: String,
}

/// A volume a mount point needs: by name, or anonymous (made with a new
/// name), with the options `--mount` gave it.
#[derive(Clone, Debug)]
struct Wanted {
    point: MountPoint,
    /// None: anonymous.
    name: Option<String>,
    labels: BTreeMap<String, String>,
    options: BTreeMap<String, String>,
}

fn invalid(spec: &str, reason: impl std::fmt::Display) -> VolumeError {
    VolumeError::InvalidOption(format!("invalid volume specification: '{spec}': {reason}"))
}

fn check_destination(spec: &str, dest: &str) -> Result<String, VolumeError> {
    if !dest.starts_with('/') {
        return Err(invalid(
            spec,
            format!("invalid mount config for type \"volume\": invalid mount path: '{dest}' mount path must be absolute"),
        ));
    }
    let clean = clean(dest);
    if clean == "/" {
        return Err(invalid(
            spec,
            "invalid mount config for type \"volume\": destination can't be '/'",
        ));
    }
    Ok(clean)
}

/// `-v` entries that name volumes: `name:/dst[:opts]` and `/dst`.
fn from_binds(hc: &HostConfig) -> Result<Vec<Wanted>, VolumeError> {
    let mut out = Vec::new();
    for raw in hc.binds.iter().flatten() {
        let parts: Vec<&str> = raw.split(':').collect();
        let (name, dest, mode) = match parts[..] {
            [d] => (None, d, ""),
            [s, d] if !s.starts_with('/') => (Some(s), d, ""),
            [s, d, m] if !s.starts_with('/') => (Some(s), d, m),
            _ => continue,
        };
        if name.is_some_and(str::is_empty) || dest.is_empty() {
            return Err(invalid(raw, "empty section"));
        }
        if let Some(n) = name {
            super::validate_name(n)?;
        }
        let destination = check_destination(raw, dest)?;
        let (mut rw, mut copy) = (true, true);
        for m in mode.split(',').filter(|m| !m.is_empty()) {
            match m {
                "ro" => rw = false,
                "rw" => rw = true,
                "nocopy" => copy = false,
                "z" | "Z" | "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" => {}
                _ => return Err(VolumeError::InvalidOption(format!("invalid mode: {mode}"))),
            }
        }
        out.push(Wanted {
            point: MountPoint {
                kind: "volume".into(),
                destination,
                driver: LOCAL.into(),
                mode: if name.is_some() && mode.is_empty() {
                    "z".into()
                } else {
                    mode.into()
                },
                rw,
                copy_data: copy,
                ..MountPoint::default()
            },
            name: name.map(String::from),
            labels: BTreeMap::new(),
            options: BTreeMap::new(),
        });
    }
    Ok(out)
}

/// `--mount type=volume,...` entries.
fn from_mounts(hc: &HostConfig) -> Result<Vec<Wanted>, VolumeError> {
    let mut out = Vec::new();
    for m in hc.mounts.iter().flatten().filter(|m| m.kind == "volume") {
        let fail = |reason: &str| {
            VolumeError::InvalidOption(format!(
                "invalid mount config for type \"volume\": {reason}"
            ))
        };
        if m.target.is_empty() {
            return Err(fail("field Target must not be empty"));
        }
        if !m.target.starts_with('/') {
            let t = &m.target;
            return Err(fail(&format!(
                "invalid mount path: '{t}' mount path must be absolute"
            )));
        }
        if m.bind_options.is_some() {
            return Err(fail("field BindOptions must not be specified"));
        }
        if m.tmpfs_options.is_some() {
            return Err(fail("field TmpfsOptions must not be specified"));
        }
        if !m.source.is_empty() {
            super::validate_name(&m.source)?;
        }
        let vo = m.volume_options.clone().unwrap_or(Value::Null);
        let str_map = |v: &Value| -> BTreeMap<String, String> {
            v.as_object()
                .map(|o| {
                    o.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default()
        };
        let driver = vo["DriverConfig"]["Name"].as_str().unwrap_or("");
        if !driver.is_empty() && driver != LOCAL {
            return Err(VolumeError::UnknownDriver(driver.to_string()));
        }
        let options = str_map(&vo["DriverConfig"]["Options"]);
        super::local::validate_options(&options)?;
        let subpath = vo["Subpath"].as_str().unwrap_or("").to_string();
        if subpath.starts_with('/') || subpath.split('/').any(|p| p == "..") {
            return Err(fail(&format!(
                "subpath must be a relative path within the volume: {subpath}"
            )));
        }
        out.push(Wanted {
            point: MountPoint {
                kind: "volume".into(),
                destination: clean(&m.target),
                driver: LOCAL.into(),
                mode: "z".into(),
                rw: !m.read_only,
                copy_data: !vo["NoCopy"].as_bool().unwrap_or(false),
                subpath,
                ..MountPoint::default()
            },
            name: (!m.source.is_empty()).then(|| m.source.clone()),
            labels: str_map(&vo["Labels"]),
            options,
        });
    }
    Ok(out)
}

/// The destinations the container mounts something else at (binds, bind
/// and tmpfs `--mount`s, `--tmpfs`).
fn other_destinations(hc: &HostConfig) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for raw in hc.binds.iter().flatten() {
        let parts: Vec<&str> = raw.split(':').collect();
        if parts.len() >= 2 && parts[0].starts_with('/') {
            out.insert(clean(parts[1]));
        }
    }
    for m in hc.mounts.iter().flatten().filter(|m| m.kind != "volume") {
        out.insert(clean(&m.target));
    }
    for dest in hc.tmpfs.iter().flatten().map(|(d, _)| d) {
        out.insert(clean(dest));
    }
    out
}

/// What `--volumes-from ID[:ro|rw]` brings: the other container's volumes
/// and binds.
fn from_containers(engine: &Engine, hc: &HostConfig) -> crate::containers::Result<Vec<MountPoint>> {
    let mut out = Vec::new();
    for spec in hc.volumes_from.iter().flatten() {
        let (id, mode) = match spec.rsplit_once(':') {
            Some((id, m)) if m == "ro" || m == "rw" => (id, Some(m == "rw")),
            Some(_) => {
                return Err(VolumeError::InvalidOption(format!(
                    "invalid mode for volumes-from: {spec}"
                ))
                .into())
            }
            None => (spec.as_str(), None),
        };
        // A 400, not the 404 on which the docker CLI would pull the image.
        let source = match engine.containers.get(id) {
            Ok(c) => c.record(),
            Err(crate::containers::ContainerError::NotFound(_)) => {
                return Err(VolumeError::InvalidOption(format!("No such container: {id}")).into())
            }
            Err(e) => return Err(e),
        };
        let mut points = source.mount_points.clone();
        for raw in source.host_config.binds.iter().flatten() {
            let parts: Vec<&str> = raw.split(':').collect();
            if parts.len() < 2 || !parts[0].starts_with('/') {
                continue;
            }
            let mode = parts.get(2).copied().unwrap_or("");
            points.push(MountPoint {
                kind: "bind".into(),
                source: clean(parts[0]),
                destination: clean(parts[1]),
                mode: mode.into(),
                rw: !mode.split(',').any(|m| m == "ro"),
                propagation: propagation_of(mode),
                ..MountPoint::default()
            });
        }
        for m in source.host_config.mounts.iter().flatten() {
            if m.kind == "bind" {
                points.push(MountPoint {
                    kind: "bind".into(),
                    source: clean(&m.source),
                    destination: clean(&m.target),
                    rw: !m.read_only,
                    propagation: "rprivate".into(),
                    ..MountPoint::default()
                });
            }
        }
        for mut p in points {
            if let Some(rw) = mode {
                p.rw = rw;
                p.mode = if rw { "rw" } else { "ro" }.into();
            }
            p.copy_data = false;
            out.retain(|o: &MountPoint| o.destination != p.destination);
            out.push(p);
        }
    }
    Ok(out)
}

fn propagation_of(mode: &str) -> String {
    mode.split(',')
        .find(|m| {
            [
                "private", "rprivate", "shared", "rshared", "slave", "rslave",
            ]
            .contains(m)
        })
        .unwrap_or("rprivate")
        .to_string()
}

/// Makes the container's mount points: checks every volume it names,
/// then makes the missing ones and claims them for `record.id`. On an
/// error nothing is left made or claimed.
pub fn prepare(engine: &Engine, record: &ContainerRecord) -> crate::containers::Result<Prepared> {
    let hc = &record.host_config;
    let mut wanted = from_binds(hc)?;
    wanted.extend(from_mounts(hc)?);
    let others = other_destinations(hc);
    for (i, w) in wanted.iter().enumerate() {
        let dest = &w.point.destination;
        if others.contains(dest) || wanted[..i].iter().any(|o| &o.point.destination == dest) {
            return Err(crate::containers::spec::SpecError::DuplicateMount(dest.clone()).into());
        }
    }
    let taken = |d: &str, wanted: &[Wanted]| {
        others.contains(d) || wanted.iter().any(|w| w.point.destination == d)
    };
    let mut points: Vec<MountPoint> = from_containers(engine, hc)?
        .into_iter()
        .filter(|p| !taken(&p.destination, &wanted))
        .collect();
    for dest in record.config.volumes.iter().flatten().map(|(d, _)| d) {
        let Ok(dest) = check_destination(dest, dest) else {
            return Err(VolumeError::InvalidOption(format!(
                "invalid volume specification: '{dest}': the destination must be absolute"
            ))
            .into());
        };
        if taken(&dest, &wanted) || points.iter().any(|p| p.destination == dest) {
            continue;
        }
        wanted.push(Wanted {
            point: MountPoint {
                kind: "volume".into(),
                destination: dest,
                driver: LOCAL.into(),
                rw: true,
                copy_data: true,
                ..MountPoint::default()
            },
            name: None,
            labels: BTreeMap::new(),
            options: BTreeMap::new(),
        });
    }
    let volumes = &engine.volumes;
    let mut made: Vec<String> = Vec::new();
    let undo = |made: &[String]| {
        volumes.release(&record.id);
        for name in made {
            let _ = volumes.remove(&engine.events, name, true);
        }
    };
    for w in wanted {
        let mut labels = w.labels.clone();
        if w.name.is_none() {
            labels.insert(ANONYMOUS_LABEL.into(), String::new());
        }
        let opts = CreateOptions {
            name: w.name.clone().unwrap_or_default(),
            driver: LOCAL.into(),
            driver_opts: Some(w.options.clone()),
            labels: Some(labels),
        };
        let (volume, new) = match volumes.create_for(&engine.events, opts, Some(&record.id)) {
            Ok(v) => v,
            Err(e) => {
                undo(&made);
                return Err(e.into());
            }
        };
        if new {
            made.push(volume.name.clone());
        }
        let mut point = w.point;
        let data = volumes.mountpoint(&volume.name);
        point.source = if point.subpath.is_empty() {
            data.display().to_string()
        } else {
            data.join(&point.subpath).display().to_string()
        };
        point.name = volume.name;
        points.push(point);
    }
    let names = points
        .iter()
        .filter(|p| p.kind == "volume")
        .map(|p| p.name.clone())
        .collect();
    if let Err(e) = volumes.claim(&record.id, names) {
        undo(&made);
        return Err(e.into());
    }
    points.sort_by(|a, b| a.destination.cmp(&b.destination));
    Ok(Prepared { points, made })
}

/// What [`prepare`] did: the mount points, and the volumes it made.
#[derive(Debug, Default)]
pub struct Prepared {
    pub points: Vec<MountPoint>,
    pub made: Vec<String>,
}

impl Prepared {
    /// Undoes [`prepare`] for a container that was not made: releases its
    /// volumes and removes the ones made for it.
    pub fn undo(&self, engine: &Engine, id: &str) {
        engine.volumes.release(id);
        for name in &self.made {
            if engine.volumes.users(name).is_empty() {
                let _ = engine.volumes.remove(&engine.events, name, true);
            }
        }
    }
}

fn remove_anonymous(engine: &Engine, points: &[MountPoint]) {
    for p in points.iter().filter(|p| p.kind == "volume") {
        let anonymous = engine.volumes.get(&p.name).is_ok_and(|v| v.anonymous());
        if anonymous && engine.volumes.users(&p.name).is_empty() {
            if let Err(e) = engine.volumes.remove(&engine.events, &p.name, true) {
                tracing::warn!(volume = %p.name, error = %e, "remove an anonymous volume");
            }
        }
    }
}

/// The HostConfig the spec is built from: the container's, with its
/// volumes as binds of their host directories in place of `-v name:/dst`,
/// `-v /dst` and `--mount type=volume`.
pub fn spec_host_config(record: &ContainerRecord) -> HostConfig {
    let mut hc = record.host_config.clone();
    let mut binds: Vec<String> = hc
        .binds
        .iter()
        .flatten()
        .filter(|b| {
            let parts: Vec<&str> = b.split(':').collect();
            parts.len() >= 2 && parts[0].starts_with('/')
        })
        .cloned()
        .collect();
    for p in &record.mount_points {
        let mut mode = vec![if p.rw { "rw" } else { "ro" }];
        if p.kind == "bind" && !p.propagation.is_empty() {
            mode.push(&p.propagation);
        }
        binds.push(format!("{}:{}:{}", p.source, p.destination, mode.join(",")));
    }
    hc.binds = (!binds.is_empty() || hc.binds.is_some()).then_some(binds);
    if let Some(mounts) = &mut hc.mounts {
        mounts.retain(|m| m.kind != "volume");
    }
    hc
}

/// The volumes a container's mount points name.
pub fn volume_names(points: &[MountPoint]) -> BTreeSet<String> {
    points
        .iter()
        .filter(|p| p.kind == "volume")
        .map(|p| p.name.clone())
        .collect()
}

/// Copies the image's content at each destination into the container's
/// new, empty volumes (those without driver options), reading the image
/// through a read-only mount of the container's snapshot
/// (`Snapshots.Mounts`). A subpath that does not exist afterwards is an
/// error.
pub async fn copy_up(
    engine: &Engine,
    id: &str,
    points: &[MountPoint],
) -> crate::containers::Result<()> {
    let volumes = &engine.volumes;
    let targets: Vec<(String, PathBuf)> = points
        .iter()
        .filter(|p| p.kind == "volume" && p.copy_data && p.subpath.is_empty())
        .filter(|p| volumes.get(&p.name).is_ok_and(|v| v.options.is_empty()))
        .map(|p| (p.destination.clone(), volumes.mountpoint(&p.name)))
        .filter(|(_, data)| super::copy::is_empty_dir(data))
        .collect();
    if !targets.is_empty() {
        let mounts = engine.supervisor.snapshot_mounts(id).await.map_err(
            crate::containers::ContainerError::backend(format!("read the image of container {id}")),
        )?;
        let scratch = engine
            .paths
            .engine_dir()
            .join("tmp")
            .join(format!("{id}-copyup"));
        tokio::task::spawn_blocking(move || {
            super::copy::from_snapshot(&mounts, &scratch, &targets)
        })
        .await
        .map_err(|e| VolumeError::Mount(format!("copy image content: {e}")))??;
    }
    for p in points.iter().filter(|p| !p.subpath.is_empty()) {
        if !Path::new(&p.source).exists() {
            return Err(VolumeError::InvalidOption(format!(
                "cannot access path {}: no such file or directory",
                p.source
            ))
            .into());
        }
    }
    Ok(())
}

fn event_attrs(id: &str, p: &MountPoint) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("container".to_string(), id.to_string()),
        ("driver".to_string(), p.driver.clone()),
    ])
}

/// Before a container's task is made: mounts the volumes whose driver
/// options say so (for their first user), and emits `mount`.
pub fn on_start(engine: &Engine, record: &ContainerRecord) -> Result<(), VolumeError> {
    let volumes: Vec<&MountPoint> = record
        .mount_points
        .iter()
        .filter(|p| p.kind == "volume")
        .collect();
    for (i, p) in volumes.iter().enumerate() {
        if let Err(e) = engine.volumes.activate(&p.name, &record.id) {
            for done in &volumes[..i] {
                engine.volumes.deactivate(&done.name, &record.id);
            }
            return Err(e);
        }
    }
    for p in volumes {
        let mut attrs = event_attrs(&record.id, p);
        attrs.insert("destination".into(), p.destination.clone());
        attrs.insert("propagation".into(), p.propagation.clone());
        attrs.insert("read/write".into(), p.rw.to_string());
        engine.events.emit(Kind::Volume, "mount", &p.name, attrs);
    }
    Ok(())
}

/// After a container's task is gone: unmounts what [`on_start`] mounted
/// (for the last user), and emits `unmount`.
pub fn on_stop(engine: &Engine, record: &ContainerRecord) {
    for p in record.mount_points.iter().filter(|p| p.kind == "volume") {
        engine.volumes.deactivate(&p.name, &record.id);
        engine
            .events
            .emit(Kind::Volume, "unmount", &p.name, event_attrs(&record.id, p));
    }
}

/// At daemon start: the running containers' volumes are noted as mounted.
pub fn restore(engine: &Engine) {
    for c in engine.containers.all() {
        let r = c.record();
        if r.state.status.is_running() {
            for p in r.mount_points.iter().filter(|p| p.kind == "volume") {
                if let Err(e) = engine.volumes.activate(&p.name, &r.id) {
                    tracing::warn!(volume = %p.name, error = %e, "remount a volume");
                }
            }
        }
    }
}

/// A container is removed: its volumes are released, and its anonymous
/// ones removed when `remove_anonymous` (`rm -v`, `--rm`).
pub fn on_remove(engine: &Engine, record: &ContainerRecord, anonymous: bool) {
    engine.volumes.release(&record.id);
    if anonymous {
        remove_anonymous(engine, &record.mount_points);
    }
}

/// Inspect's `Mounts`: binds, `--mount` binds and tmpfs, and volumes, by
/// destination, as dockerd shows them.
pub fn inspect(record: &ContainerRecord) -> Value {
    let hc = &record.host_config;
    let mut out: Vec<(String, Value)> = Vec::new();
    for raw in hc.binds.iter().flatten() {
        let parts: Vec<&str> = raw.splitn(3, ':').collect();
        if parts.len() < 2 || !parts[0].starts_with('/') {
            continue;
        }
        let mode = parts.get(2).copied().unwrap_or("");
        let dest = clean(parts[1]);
        out.push((
            dest.clone(),
            json!({
                "Type": "bind", "Source": clean(parts[0]), "Destination": dest, "Mode": mode,
                "RW": !mode.split(',').any(|m| m == "ro"), "Propagation": propagation_of(mode),
            }),
        ));
    }
    for m in hc.mounts.iter().flatten().filter(|m| m.kind != "volume") {
        let propagation = match m.kind.as_str() {
            "bind" => m
                .bind_options
                .as_ref()
                .and_then(|o| o["Propagation"].as_str())
                .filter(|p| !p.is_empty())
                .unwrap_or("rprivate"),
            _ => "",
        };
        let dest = clean(&m.target);
        out.push((
            dest.clone(),
            json!({
                "Type": m.kind, "Source": m.source, "Destination": dest, "Mode": "",
                "RW": !m.read_only, "Propagation": propagation,
            }),
        ));
    }
    for p in &record.mount_points {
        let mut v = json!({
            "Type": p.kind, "Source": p.source, "Destination": p.destination,
            "Mode": p.mode, "RW": p.rw, "Propagation": p.propagation,
        });
        if p.kind == "volume" {
            v["Name"] = json!(p.name);
            v["Driver"] = json!(p.driver);
        }
        out.push((p.destination.clone(), v));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Value::Array(out.into_iter().map(|(_, v)| v).collect())
}

#[cfg(test)]
#[path = "mounts_tests.rs"]
mod tests;
