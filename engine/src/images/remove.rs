//! `POST /images/{name}/tag`, `DELETE /images/{name}` and
//! `POST /images/prune`, with Docker's rules: removing a name untags it;
//! the image goes with its last name, unless a container uses it; a
//! container using an image protects it from an unforced removal.

use std::collections::BTreeMap;

use berth_client::reference::Reference;
use berth_proto::tasks::v1 as tasks;
use serde::Serialize;

use super::list::{grouped, repo_tags, Filters};
use super::names::{familiar, is_tagged, repository_of, short_id};
use super::{lookup, Image, ImageError};
use crate::backend::BackendError;
use crate::containers::record::Status;
use crate::events::Kind;
use crate::Engine;

/// One entry of a delete's answer: `{"Untagged": name}` or `{"Deleted": id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Removed {
    Untagged(String),
    Deleted(String),
}

/// `POST /images/prune`'s answer.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Pruned {
    pub images_deleted: Option<Vec<Removed>>,
    pub space_reclaimed: i64,
}

/// A container of the engine's namespace that uses an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub running: bool,
}

fn backend(e: BackendError) -> ImageError {
    ImageError::Backend(e)
}

fn emit(engine: &Engine, action: &str, id: &str, name: &str) {
    let attributes = BTreeMap::from([("name".to_string(), name.to_string())]);
    engine.events.emit(Kind::Image, action, id, attributes);
}

/// `POST /images/{name}/tag?repo=&tag=`.
pub async fn tag(engine: &Engine, name: &str, repo: &str, tag: &str) -> Result<(), ImageError> {
    let found = lookup(engine, name).await?;
    let target = match tag {
        "" => Reference::parse(repo)?,
        t => Reference::parse(&format!("{repo}:{t}"))?,
    };
    if target.digest.is_some() {
        return Err(ImageError::InvalidArgument(
            "refusing to create a tag with a digest reference".into(),
        ));
    }
    let target = target.to_string();
    if found.names.contains(&target) {
        return Ok(());
    }
    // Another image under that name loses it, as `docker tag` moves tags.
    match engine.supervisor.delete_image(&target).await {
        Ok(()) | Err(BackendError::NotFound(_)) => {}
        Err(e) => return Err(backend(e)),
    }
    engine
        .supervisor
        .tag_image(&found.image.name, &target)
        .await
        .map_err(backend)?;
    emit(engine, "tag", &found.image.id, &familiar(&target));
    Ok(())
}

/// The containers that use the image (by one of its names or its id).
pub async fn users(
    engine: &Engine,
    image: &Image,
    names: &[String],
) -> Result<Vec<User>, ImageError> {
    let containers = engine.supervisor.list_containers().await.map_err(backend)?;
    let tasks = engine.supervisor.list_tasks().await.map_err(backend)?;
    let running: Vec<&str> = tasks
        .iter()
        .filter(|t| {
            t.status == tasks::Status::Running as i32 || t.status == tasks::Status::Paused as i32
        })
        .map(|t| t.container_id.as_str())
        .collect();
    let stored: Vec<String> = engine
        .supervisor
        .list_images()
        .await
        .map_err(backend)?
        .into_iter()
        .map(|i| i.name)
        .collect();
    let hex = image.id.strip_prefix("sha256:").unwrap_or(&image.id);
    // A container whose image lost its last tag names a name that is gone;
    // the image kept for it has a digest name of the same repository.
    let kept_for = |c: &str| {
        !stored.iter().any(|n| n == c)
            && names
                .iter()
                .any(|n| !is_tagged(n) && repository_of(n) == repository_of(c))
    };
    // The engine's records name the image by id, as Docker's do.
    let mut users: Vec<User> = engine
        .containers
        .all()
        .iter()
        .map(|c| (c.record(), c.status()))
        .filter(|(r, _)| r.image_id == image.id)
        .map(|(r, status)| User {
            id: r.id,
            running: matches!(
                status,
                Status::Running | Status::Paused | Status::Restarting
            ),
        })
        .collect();
    for c in containers {
        let uses =
            names.contains(&c.image) || c.image == image.id || c.image == hex || kept_for(&c.image);
        if uses && !users.iter().any(|u| u.id == c.id) {
            users.push(User {
                running: running.contains(&c.id.as_str()),
                id: c.id,
            });
        }
    }
    Ok(users)
}

/// `DELETE /images/{name}?force=&noprune=`.
pub async fn delete(engine: &Engine, input: &str, force: bool) -> Result<Vec<Removed>, ImageError> {
    let found = lookup(engine, input).await?;
    let image = found.image.clone();
    let users = users(engine, &image, &found.names).await?;
    let short = short_id(&image.id).to_string();
    let mut out = Vec::new();
    let mut remaining = found.names.clone();

    if !found.by_id {
        let name = image.name.clone();
        if !force && found.names.len() == 1 {
            if let Some(user) = users.first() {
                return Err(ImageError::Conflict(format!(
                    "unable to remove repository reference \"{}\" (must force) - container {} is using its referenced image {short}",
                    input,
                    short_id(&user.id)
                )));
            }
        }
        // A tag removed: digest names of the same repository go with the
        // repository's last tag.
        let repo = repository_of(&name).to_string();
        let mut to_remove = vec![name.clone()];
        if is_tagged(&name)
            && !remaining
                .iter()
                .any(|n| *n != name && repository_of(n) == repo && is_tagged(n))
        {
            to_remove.extend(
                remaining
                    .iter()
                    .filter(|n| repository_of(n) == repo && !is_tagged(n))
                    .cloned(),
            );
        }
        let all_gone = remaining.iter().all(|n| to_remove.contains(n));
        // A container still uses it: Docker leaves it dangling (untagged).
        let keep = users.iter().any(|u| u.running) || (!force && !users.is_empty());
        if all_gone && keep {
            let keep_name = format!("{repo}@{}", image.target_digest);
            if !to_remove.contains(&keep_name) {
                engine
                    .supervisor
                    .tag_image(&image.name, &keep_name)
                    .await
                    .map_err(backend)?;
            }
            to_remove.retain(|n| *n != keep_name);
        }
        for n in &to_remove {
            untag(engine, &image, n, &mut out, &mut remaining).await?;
        }
        if !all_gone || keep {
            return Ok(out);
        }
    } else {
        let repos: std::collections::BTreeSet<&str> =
            found.names.iter().map(|n| repository_of(n)).collect();
        if !force && repos.len() > 1 {
            return Err(ImageError::Conflict(format!(
                "unable to delete {short} (must be forced) - image is referenced in multiple repositories"
            )));
        }
        if let Some(user) = users.iter().find(|u| u.running) {
            return Err(ImageError::Conflict(format!(
                "unable to delete {short} (cannot be forced) - image is being used by running container {}",
                short_id(&user.id)
            )));
        }
        if let (false, Some(user)) = (force, users.first()) {
            return Err(ImageError::Conflict(format!(
                "unable to delete {short} (must be forced) - image is being used by stopped container {}",
                short_id(&user.id)
            )));
        }
        for n in found.names.clone() {
            untag(engine, &image, &n, &mut out, &mut remaining).await?;
        }
    }
    out.push(Removed::Deleted(image.id.clone()));
    out.extend(released_layers(engine, &image).await?);
    emit(engine, "delete", &image.id, &image.id);
    Ok(out)
}

/// The chain ids of an image's layers, bottom first: the first diff id,
/// then `sha256(parent + " " + diff_id)` for each layer above.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    use sha2::{Digest as _, Sha256};
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match out.last() {
            None => diff_id.clone(),
            Some(parent) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{parent} {diff_id}")))
            ),
        };
        out.push(next);
    }
    out
}

/// `Deleted` entries for the layers of a deleted image that no remaining
/// image has, top first (as dockerd lists them).
async fn released_layers(engine: &Engine, image: &Image) -> Result<Vec<Removed>, ImageError> {
    let mut kept = std::collections::BTreeSet::new();
    for other in super::catalog(engine).await? {
        kept.extend(chain_ids(&other.config.rootfs.diff_ids));
    }
    Ok(chain_ids(&image.config.rootfs.diff_ids)
        .into_iter()
        .rev()
        .filter(|c| !kept.contains(c))
        .map(Removed::Deleted)
        .collect())
}

async fn untag(
    engine: &Engine,
    image: &Image,
    name: &str,
    out: &mut Vec<Removed>,
    remaining: &mut Vec<String>,
) -> Result<(), ImageError> {
    match engine.supervisor.delete_image(name).await {
        Ok(()) | Err(BackendError::NotFound(_)) => {}
        Err(e) => return Err(backend(e)),
    }
    remaining.retain(|n| n != name);
    out.push(Removed::Untagged(familiar(name)));
    emit(engine, "untag", &image.id, &image.id);
    Ok(())
}

/// `POST /images/prune`: images without tags (or, with `dangling=false`,
/// every image) that no container uses.
pub async fn prune(engine: &Engine, filters: &Filters) -> Result<Pruned, ImageError> {
    let only_dangling = filters.dangling.unwrap_or(true);
    let mut deleted = Vec::new();
    let mut reclaimed = 0;
    for (image, names) in grouped(engine).await? {
        if only_dangling && !repo_tags(&names).is_empty() {
            continue;
        }
        if !filters.label.is_empty() {
            let labels = image.config.config.labels.clone().unwrap_or_default();
            let ok = filters.label.iter().all(|l| match l.split_once('=') {
                Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
                None => labels.contains_key(l),
            });
            if !ok {
                continue;
            }
        }
        if !users(engine, &image, &names).await?.is_empty() {
            continue;
        }
        let mut remaining = names.clone();
        for n in &names {
            if is_tagged(n) {
                untag(engine, &image, n, &mut deleted, &mut remaining).await?;
            } else {
                match engine.supervisor.delete_image(n).await {
                    Ok(()) | Err(BackendError::NotFound(_)) => {}
                    Err(e) => return Err(backend(e)),
                }
            }
        }
        deleted.push(Removed::Deleted(image.id.clone()));
        deleted.extend(released_layers(engine, &image).await?);
        emit(engine, "delete", &image.id, &image.id);
        reclaimed += image.record.size;
    }
    Ok(Pruned {
        images_deleted: (!deleted.is_empty()).then_some(deleted),
        space_reclaimed: reclaimed,
    })
}
