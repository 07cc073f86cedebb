//! The sources of a COPY or ADD in the context: each resolved inside it
//! (`..` never leaves it, symbolic links are followed inside it), patterns
//! matched as Go's `filepath.Match` against every path of the context, and
//! the hash of what they hold, which names them in the step's history line
//! (`COPY file:<hash> in /dst `) and so in its cache key. As in Docker's
//! legacy builder the hash covers names, modes, sizes, link targets and
//! contents, not times: a file touched but unchanged keeps the cache.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::context::{resolve_in_scope, ContextError};
use super::dockerignore::{clean, has_wildcards, path_match};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("Forbidden path outside the build context: {0} ()")]
    Outside(String),
    #[error(
        "file not found in build context or excluded by .dockerignore: stat {0}: file does not exist"
    )]
    NotFound(String),
    #[error("no source files were specified")]
    NoMatch,
    #[error("bad pattern {0:?}")]
    BadPattern(String),
    #[error("read {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error(transparent)]
    Context(#[from] ContextError),
}

/// One source found: where it is, its path in the context, its hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub path: PathBuf,
    /// Relative to the context, cleaned.
    pub rel: String,
    pub is_dir: bool,
    /// `file:<hex>` or `dir:<hex>`.
    pub hash: String,
}

/// Resolves the sources of one instruction, in order.
pub fn find_sources(root: &Path, sources: &[String]) -> Result<Vec<Source>, SourceError> {
    let mut found = Vec::new();
    for source in sources {
        let rel = relative(source)?;
        if has_wildcards(&rel) {
            let before = found.len();
            let mut all = Vec::new();
            list_all(root, "", &mut all)?;
            let mut skip_under: Option<String> = None;
            for (path, is_dir) in all {
                if let Some(prefix) = &skip_under {
                    if path.starts_with(prefix.as_str()) {
                        continue;
                    }
                    skip_under = None;
                }
                let hit =
                    path_match(&rel, &path).map_err(|_| SourceError::BadPattern(source.clone()))?;
                if hit {
                    found.push(source_at(root, &path)?);
                    if is_dir {
                        // A matched directory is copied whole.
                        skip_under = Some(format!("{path}/"));
                    }
                }
            }
            if found.len() == before {
                return Err(SourceError::NoMatch);
            }
        } else {
            found.push(source_at(root, &rel)?);
        }
    }
    Ok(found)
}

/// The hash COPY's history line shows for its sources: the one source's,
/// or `multi:<hex>` of them all.
pub fn sources_hash(sources: &[Source]) -> String {
    match sources {
        [one] => one.hash.clone(),
        many => {
            let joined: Vec<&str> = many.iter().map(|s| s.hash.as_str()).collect();
            format!(
                "multi:{}",
                hex::encode(Sha256::digest(joined.join(",").as_bytes()))
            )
        }
    }
}

/// A source as a cleaned path relative to the context, refused if it
/// climbs out.
fn relative(source: &str) -> Result<String, SourceError> {
    let cleaned = clean(&format!("/{source}"));
    // Cleaning a rooted path drops the `..` that climb above the root, so
    // compare with the relative cleaning.
    let relative_clean = clean(source.trim_start_matches('/'));
    if relative_clean == ".." || relative_clean.starts_with("../") {
        return Err(SourceError::Outside(source.to_string()));
    }
    Ok(cleaned.trim_start_matches('/').to_string())
}

fn source_at(root: &Path, rel: &str) -> Result<Source, SourceError> {
    let path = resolve_in_scope(root, rel, true)?;
    let meta = fs::metadata(&path).map_err(|_| SourceError::NotFound(rel_or_dot(rel)))?;
    let mut hasher = Sha256::new();
    let hash = if meta.is_dir() {
        hash_dir(&path, "", &mut hasher)?;
        format!("dir:{}", hex::encode(hasher.finalize()))
    } else {
        hash_entry(&path, name_of(rel), &meta, &mut hasher)?;
        format!("file:{}", hex::encode(hasher.finalize()))
    };
    Ok(Source {
        path,
        rel: rel.to_string(),
        is_dir: meta.is_dir(),
        hash,
    })
}

fn rel_or_dot(rel: &str) -> String {
    if rel.is_empty() {
        ".".to_string()
    } else {
        rel.to_string()
    }
}

fn name_of(rel: &str) -> &str {
    rel.rsplit('/').next().unwrap_or(rel)
}

fn read_error(path: &Path) -> impl Fn(io::Error) -> SourceError + '_ {
    move |source| SourceError::Read {
        path: path.display().to_string(),
        source,
    }
}

/// Hashes one entry: its name, kind, mode, size, link target, contents.
fn hash_entry(
    path: &Path,
    name: &str,
    meta: &fs::Metadata,
    hasher: &mut Sha256,
) -> Result<(), SourceError> {
    let kind = if meta.file_type().is_symlink() {
        'l'
    } else if meta.is_dir() {
        'd'
    } else {
        'f'
    };
    hasher.update(
        format!(
            "{name}\0{kind}\0{:o}\0{}\0",
            meta.permissions().mode() & 0o7777,
            meta.len()
        )
        .as_bytes(),
    );
    match kind {
        'l' => {
            let target = fs::read_link(path).map_err(read_error(path))?;
            hasher.update(target.to_string_lossy().as_bytes());
        }
        'f' => {
            // The contents' own digest (remembered when the context was
            // unpacked or the file last hashed), not the contents again.
            let digest =
                super::context::digests::file_digest(path, meta).map_err(read_error(path))?;
            hasher.update(digest);
        }
        _ => {}
    }
    hasher.update(b"\0");
    Ok(())
}

/// Hashes a directory's entries, recursively, in name order (links are
/// hashed as links, not followed).
fn hash_dir(dir: &Path, rel: &str, hasher: &mut Sha256) -> Result<(), SourceError> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map_err(read_error(dir))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()
        .map_err(read_error(dir))?;
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let child = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let meta = fs::symlink_metadata(&path).map_err(read_error(&path))?;
        hash_entry(&path, &child, &meta, hasher)?;
        if meta.is_dir() {
            hash_dir(&path, &child, hasher)?;
        }
    }
    Ok(())
}

/// Every path of the context, depth first in name order, with whether it
/// is a directory (links not followed).
fn list_all(root: &Path, rel: &str, out: &mut Vec<(String, bool)>) -> Result<(), SourceError> {
    let dir = root.join(rel);
    let mut names: Vec<String> = fs::read_dir(&dir)
        .map_err(read_error(&dir))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()
        .map_err(read_error(&dir))?;
    names.sort();
    for name in names {
        let child = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let is_dir = fs::symlink_metadata(root.join(&child)).is_ok_and(|m| m.is_dir());
        out.push((child.clone(), is_dir));
        if is_dir {
            list_all(root, &child, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn context() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(root.join("a.txt"), "a").unwrap();
        fs::write(root.join("b.txt"), "b").unwrap();
        fs::create_dir_all(root.join("src/sub")).unwrap();
        fs::write(root.join("src/x.rs"), "x").unwrap();
        fs::write(root.join("src/sub/y.rs"), "y").unwrap();
        symlink("/etc", root.join("etc-link")).unwrap();
        dir
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn files_and_directories_by_path() {
        let dir = context();
        let found = find_sources(dir.path(), &strings(&["a.txt", "./src/"])).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].rel, "a.txt");
        assert!(found[0].hash.starts_with("file:"));
        assert!(found[1].is_dir);
        assert!(found[1].hash.starts_with("dir:"));
        assert!(sources_hash(&found).starts_with("multi:"));
        assert_eq!(sources_hash(&found[..1]), found[0].hash);
    }

    #[test]
    fn wildcards_match_within_one_element() {
        let dir = context();
        let found = find_sources(dir.path(), &strings(&["*.txt"])).unwrap();
        let rels: Vec<&str> = found.iter().map(|s| s.rel.as_str()).collect();
        assert_eq!(rels, vec!["a.txt", "b.txt"]);
        let found = find_sources(dir.path(), &strings(&["src/*.rs"])).unwrap();
        assert_eq!(found.len(), 1);
        let found = find_sources(dir.path(), &strings(&["s?c"])).unwrap();
        assert!(found[0].is_dir);
        assert!(matches!(
            find_sources(dir.path(), &strings(&["*.none"])),
            Err(SourceError::NoMatch)
        ));
    }

    #[test]
    fn paths_out_of_the_context_are_refused() {
        let dir = context();
        for source in ["../x", "src/../../x", ".."] {
            let err = find_sources(dir.path(), &strings(&[source])).unwrap_err();
            assert!(matches!(err, SourceError::Outside(_)), "{source}: {err}");
        }
        // An absolute source is taken from the context's root.
        assert_eq!(
            find_sources(dir.path(), &strings(&["/a.txt"])).unwrap()[0].rel,
            "a.txt"
        );
    }

    #[test]
    fn a_link_out_of_the_context_stays_inside() {
        let dir = context();
        let err = find_sources(dir.path(), &strings(&["etc-link/passwd"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "file not found in build context or excluded by .dockerignore: stat etc-link/passwd: file does not exist"
        );
    }

    #[test]
    fn the_hash_follows_content_and_mode_not_time() {
        let dir = context();
        let hash = |p: &str| {
            find_sources(dir.path(), &strings(&[p])).unwrap()[0]
                .hash
                .clone()
        };
        let (file, folder) = (hash("a.txt"), hash("src"));
        // Touched, unchanged: the same.
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(100);
        fs::File::options()
            .write(true)
            .open(dir.path().join("a.txt"))
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert_eq!(hash("a.txt"), file);
        fs::write(dir.path().join("a.txt"), "changed").unwrap();
        assert_ne!(hash("a.txt"), file);
        fs::set_permissions(
            dir.path().join("src/sub/y.rs"),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        assert_ne!(hash("src"), folder);
    }
}
