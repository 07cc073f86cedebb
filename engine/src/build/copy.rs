//! COPY, ADD (of local files) and WORKDIR: a snapshot prepared on the
//! image so far, mounted by the engine, written into, unmounted, and its
//! diff committed as the step's layer. Every path in the image is resolved
//! inside its root ([`resolve_in_scope`]): a symbolic link in the image
//! never sends a write outside it.
//!
//! Docker's rules: a directory source copies what it holds; several
//! sources need a destination directory ending in `/`; a relative
//! destination is taken from WORKDIR; files and the directories made for
//! them belong to root, or to `--chown`'s user (names resolved in the
//! image's /etc/passwd and /etc/group); `--chmod` sets their modes; times
//! are kept.

use std::fs;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::context::resolve_in_scope;
use super::dockerfile::instructions::Copy;
use super::mount::Mounted;
use super::pipeline::{BuildError, Built};
use super::run::{commit_layer, prepare};
use super::sources::{find_sources, sources_hash, Source};
use crate::Engine;

/// How the files a step writes are owned and moded.
#[derive(Clone, Copy, Debug, Default)]
struct Attributes {
    owner: Option<(u32, u32)>,
    mode: Option<u32>,
}

fn write_error(path: &Path) -> impl Fn(io::Error) -> BuildError + '_ {
    move |e| BuildError::Write(format!("{}: {e}", path.display()))
}

/// Runs `work` on the mounted snapshot of a new step, then commits it.
async fn in_snapshot<F>(
    engine: &Engine,
    built: &mut Built,
    owner: Option<&str>,
    created_by: &str,
    created: &str,
    work: F,
) -> Result<(), BuildError>
where
    F: FnOnce(&Path, Option<(u32, u32)>) -> Result<(), BuildError> + Send + 'static,
{
    let supervisor = &engine.supervisor;
    let key = prepare(engine, built).await?;
    let written = async {
        let owner = match owner {
            None => None,
            Some(user) => {
                let (uid, gid, _) = supervisor
                    .resolve_user(&key, user)
                    .await
                    .map_err(|e| BuildError::Write(format!("--chown={user}: {e}")))?;
                Some((uid, gid))
            }
        };
        let mounts = supervisor.snapshot_mounts(&key).await?;
        let target = engine.paths.engine_dir().join("build-mounts").join(&key);
        tokio::task::spawn_blocking(move || {
            let mounted =
                Mounted::mount(&mounts, &target).map_err(|e| BuildError::Write(e.to_string()))?;
            work(mounted.root(), owner)
        })
        .await
        .map_err(|e| BuildError::Write(format!("the copy stopped: {e}")))?
    }
    .await;
    if let Err(e) = written {
        let _ = supervisor.remove_snapshot(&key).await;
        return Err(e);
    }
    commit_layer(engine, built, &key, created_by, created).await
}

/// Another stage's (or an image's) file system, mounted for `COPY --from`
/// to read: a snapshot prepared on its layers, unmounted and removed on
/// drop.
pub struct StageMount {
    mounted: Option<Mounted>,
    key: String,
    supervisor: std::sync::Arc<dyn crate::backend::Supervisor>,
}

impl StageMount {
    pub fn root(&self) -> &Path {
        self.mounted
            .as_ref()
            .map_or(Path::new("/nonexistent"), |m| m.root())
    }
}

impl Drop for StageMount {
    fn drop(&mut self) {
        // Unmounted first, then the snapshot goes.
        drop(self.mounted.take());
        let supervisor = std::sync::Arc::clone(&self.supervisor);
        let key = std::mem::take(&mut self.key);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Err(e) = supervisor.remove_snapshot(&key).await {
                    tracing::warn!(snapshot = %key, error = %e, "remove a COPY --from snapshot");
                }
            });
        }
    }
}

/// Mounts the file system of `built` for reading.
pub async fn mount_stage(engine: &Engine, built: &Built) -> Result<StageMount, BuildError> {
    let key = prepare(engine, built).await?;
    let mut stage = StageMount {
        mounted: None,
        key: key.clone(),
        supervisor: std::sync::Arc::clone(&engine.supervisor),
    };
    let mounts = engine.supervisor.snapshot_mounts(&key).await?;
    let target = engine.paths.engine_dir().join("build-mounts").join(&key);
    let mounted = tokio::task::spawn_blocking(move || Mounted::mount(&mounts, &target))
        .await
        .map_err(|e| BuildError::Write(format!("mount a stage: {e}")))?
        .map_err(|e| BuildError::Write(e.to_string()))?;
    stage.mounted = Some(mounted);
    Ok(stage)
}

/// WORKDIR's directory, made (root's, 0755) if missing.
pub async fn make_workdir(
    engine: &Engine,
    built: &mut Built,
    dir: &str,
    created_by: &str,
    created: &str,
) -> Result<(), BuildError> {
    let dir = dir.to_string();
    in_snapshot(engine, built, None, created_by, created, move |root, _| {
        make_dirs(root, &dir, Attributes::default()).map(|_| ())
    })
    .await
}

/// Refuses what this builder does not do yet: heredoc sources, URLs.
pub fn check_supported(copy: &Copy, what: &str) -> Result<(), BuildError> {
    if !copy.heredocs.is_empty() {
        return Err(BuildError::Unsupported(format!("{what} of a heredoc")));
    }
    if what == "ADD" && copy.sources.iter().any(|s| s.contains("://")) {
        return Err(BuildError::Unsupported("ADD of a URL".into()));
    }
    Ok(())
}

/// How one COPY or ADD step writes.
pub struct CopyStep<'a> {
    /// `COPY` or `ADD`, for messages and the history.
    pub what: &'static str,
    /// Whether archives are extracted (ADD of local files).
    pub extract: bool,
    pub workdir: &'a str,
    pub shell: &'a [String],
    pub created: &'a str,
}

/// COPY or ADD of files of the context (or of a staged directory).
pub async fn copy_step(
    engine: &Engine,
    built: &mut Built,
    context: &Path,
    copy: &Copy,
    step: &CopyStep<'_>,
) -> Result<(), BuildError> {
    let CopyStep {
        what,
        extract,
        workdir,
        shell,
        created,
    } = *step;
    check_supported(copy, what)?;
    let sources = find_sources(context, &copy.sources)
        .map_err(|source| BuildError::Source { what, source })?;
    let many = sources.len() > 1;
    if many && !copy.dest.ends_with('/') {
        return Err(BuildError::Write(format!(
            "When using {what} with more than one source file, the destination must be a directory and end with a /"
        )));
    }
    let mode = match &copy.chmod {
        None => None,
        Some(text) => Some(
            u32::from_str_radix(text, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| BuildError::Write(format!("invalid chmod parameter: {text:?}")))?,
        ),
    };
    let dest = if copy.dest.starts_with('/') {
        copy.dest.clone()
    } else {
        let base = if workdir.is_empty() { "/" } else { workdir };
        format!("{}/{}", base.trim_end_matches('/'), copy.dest)
    };
    let comment = format!("{what} {} in {} ", sources_hash(&sources), copy.dest);
    let created_by = super::image::nop_string_created_by(shell, &comment);
    in_snapshot(
        engine,
        built,
        copy.chown.as_deref(),
        &created_by,
        created,
        move |root, owner| copy_all(root, &sources, &dest, Attributes { owner, mode }, extract),
    )
    .await
}

/// Whether ADD extracts a file: compressed (by its magic bytes), or a tar
/// whose first header reads (its checksum holds), as Docker decides.
fn is_archive(path: &Path) -> bool {
    let Ok(mut file) = fs::File::open(path) else {
        return false;
    };
    let mut head = [0u8; 6];
    let n = io::Read::read(&mut file, &mut head).unwrap_or(0);
    if super::context::Compression::detect(&head[..n]) != super::context::Compression::None {
        return true;
    }
    let Ok(file) = fs::File::open(path) else {
        return false;
    };
    let mut archive = tar::Archive::new(file);
    archive
        .entries()
        .ok()
        .and_then(|mut entries| entries.next())
        .is_some_and(|first| first.is_ok())
}

/// ADD of a local tar: extracted into the destination directory.
fn extract_archive(
    root: &Path,
    source: &Source,
    dest: &str,
    attrs: Attributes,
) -> Result<(), BuildError> {
    let dir = make_dirs(root, dest, attrs)?;
    let file = fs::File::open(&source.path).map_err(write_error(&source.path))?;
    super::context::unpack_archive(file, &dir).map_err(|e| match e {
        super::context::ContextError::Outside(entry) => BuildError::Write(format!(
            "ADD {}: archive entry {entry:?} leaves the destination",
            source.rel
        )),
        other => BuildError::Write(format!("ADD {}: {other}", source.rel)),
    })
}

fn copy_all(
    root: &Path,
    sources: &[Source],
    dest: &str,
    attrs: Attributes,
    extract: bool,
) -> Result<(), BuildError> {
    for source in sources {
        if extract && !source.is_dir && is_archive(&source.path) {
            extract_archive(root, source, dest, attrs)?;
            continue;
        }
        let dest_is_dir = dest.ends_with('/') || {
            let resolved = resolve_in_scope(root, dest, true)?;
            resolved.is_dir()
        };
        if source.is_dir {
            let target = make_dirs(root, dest, attrs)?;
            copy_tree(&source.path, &target, attrs)?;
        } else {
            let target = if dest_is_dir {
                let dir = make_dirs(root, dest, attrs)?;
                dir.join(source.path.file_name().unwrap_or_default())
            } else {
                let (parent, name) = match dest.trim_end_matches('/').rsplit_once('/') {
                    Some((parent, name)) => (parent, name),
                    None => ("", dest),
                };
                make_dirs(root, parent, attrs)?.join(name)
            };
            copy_file(&source.path, &target, attrs)?;
        }
    }
    Ok(())
}

/// Makes `dir` (absolute in the image) and its missing parents, resolved
/// inside `root`; the real path.
fn make_dirs(root: &Path, dir: &str, attrs: Attributes) -> Result<PathBuf, BuildError> {
    let resolved = resolve_in_scope(root, dir, true)?;
    if resolved.is_dir() {
        return Ok(resolved);
    }
    let mut current = root.to_path_buf();
    let rel = resolved.strip_prefix(root).unwrap_or(Path::new(""));
    for part in rel.components() {
        current.push(part);
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(BuildError::Write(format!(
                    "{}: not a directory",
                    current.strip_prefix(root).unwrap_or(&current).display()
                )))
            }
            Err(_) => {
                fs::create_dir(&current).map_err(write_error(&current))?;
                fs::set_permissions(&current, fs::Permissions::from_mode(0o755))
                    .map_err(write_error(&current))?;
                own(&current, attrs)?;
            }
        }
    }
    Ok(resolved)
}

fn own(path: &Path, attrs: Attributes) -> Result<(), BuildError> {
    let (uid, gid) = attrs.owner.unwrap_or((0, 0));
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(write_error(path))
}

fn copy_file(source: &Path, target: &Path, attrs: Attributes) -> Result<(), BuildError> {
    let meta = fs::symlink_metadata(source).map_err(write_error(source))?;
    if let Ok(existing) = fs::symlink_metadata(target) {
        if existing.is_dir() {
            fs::remove_dir_all(target).map_err(write_error(target))?;
        } else {
            fs::remove_file(target).map_err(write_error(target))?;
        }
    }
    if meta.file_type().is_symlink() {
        let link = fs::read_link(source).map_err(write_error(source))?;
        symlink(&link, target).map_err(write_error(target))?;
        return own(target, attrs);
    }
    fs::copy(source, target).map_err(write_error(target))?;
    let mode = attrs.mode.unwrap_or(meta.permissions().mode() & 0o7777);
    fs::set_permissions(target, fs::Permissions::from_mode(mode)).map_err(write_error(target))?;
    own(target, attrs)?;
    let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    fs::File::options()
        .write(true)
        .open(target)
        .and_then(|f| f.set_modified(modified))
        .map_err(write_error(target))
}

fn copy_tree(source: &Path, target: &Path, attrs: Attributes) -> Result<(), BuildError> {
    let mut names: Vec<_> = fs::read_dir(source)
        .map_err(write_error(source))?
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for name in names {
        let from = source.join(&name);
        let to = target.join(&name);
        let meta = fs::symlink_metadata(&from).map_err(write_error(&from))?;
        if meta.is_dir() {
            if !fs::symlink_metadata(&to).is_ok_and(|m| m.is_dir()) {
                let _ = fs::remove_file(&to);
                fs::create_dir(&to).map_err(write_error(&to))?;
            }
            let mode = attrs.mode.unwrap_or(meta.permissions().mode() & 0o7777);
            fs::set_permissions(&to, fs::Permissions::from_mode(mode)).map_err(write_error(&to))?;
            own(&to, attrs)?;
            copy_tree(&from, &to, attrs)?;
        } else {
            copy_file(&from, &to, attrs)?;
        }
    }
    Ok(())
}
