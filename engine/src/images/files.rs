//! One file read out of an image's layers (`/etc/passwd` and `/etc/group`
//! for `-u name`), without unpacking: the layers are read top first, a
//! whiteout hides a file or directory of the layers below, an opaque
//! directory hides everything below it. Answers are cached per image id.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{LazyLock, Mutex};

use bytes::Bytes;

use super::{Image, ImageError};
use crate::Engine;

/// Cached answers kept at most (the cache starts over beyond).
const CACHE_MAX: usize = 256;
/// Symbolic and hard links followed at most.
const MAX_LINKS: usize = 8;

type Cache = Mutex<HashMap<(String, String), Option<Bytes>>>;
static CACHE: LazyLock<Cache> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// What a layer says about a path.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    File(Vec<u8>),
    /// A symbolic or hard link: the absolute path it names.
    Link(String),
    /// Deleted by a whiteout, or hidden by an opaque directory.
    Gone,
    /// Not in this layer; look below.
    Absent,
}

/// The contents of `path` in `image`, `None` when it has no such file.
pub async fn read_file(
    engine: &Engine,
    image: &Image,
    path: &str,
) -> Result<Option<Bytes>, ImageError> {
    let key = (image.id.clone(), path.to_string());
    if let Some(hit) = CACHE.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return Ok(hit.clone());
    }
    let mut wanted = clean(path);
    let mut answer = None;
    let mut hops = 0;
    'search: loop {
        for layer in image.layers.iter().rev() {
            let blob = engine
                .supervisor
                .read_blob(&layer.digest)
                .await
                .map_err(ImageError::Backend)?;
            let want = wanted.clone();
            let found = tokio::task::spawn_blocking(move || find_in_layer(&blob, &want))
                .await
                .map_err(|e| ImageError::Archive(e.to_string()))?
                .map_err(|e| ImageError::Archive(format!("read layer {}: {e}", layer.digest)))?;
            match found {
                Found::File(bytes) => {
                    answer = Some(Bytes::from(bytes));
                    break 'search;
                }
                Found::Gone => break 'search,
                Found::Absent => {}
                Found::Link(target) => {
                    hops += 1;
                    if hops > MAX_LINKS {
                        break 'search;
                    }
                    wanted = target;
                    continue 'search;
                }
            }
        }
        break;
    }
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if cache.len() >= CACHE_MAX {
        cache.clear();
    }
    cache.insert(key, answer.clone());
    Ok(answer)
}

/// `etc/passwd` from `/etc/passwd`, `./etc//passwd`.
fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// Looks for `want` (clean, relative to the root) in one layer blob
/// (tar, gzip or zstd).
fn find_in_layer(blob: &[u8], want: &str) -> std::io::Result<Found> {
    let reader: Box<dyn Read + '_> = if blob.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(blob))
    } else if blob.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::new(blob)?)
    } else {
        Box::new(blob)
    };
    let (dir, base) = match want.rsplit_once('/') {
        Some((d, b)) => (d.to_string(), b.to_string()),
        None => (String::new(), want.to_string()),
    };
    // The directories above `want`, each with its parent: (parent, name).
    let mut ancestors: Vec<(String, String)> = Vec::new();
    let mut path = String::new();
    for part in want.split('/') {
        ancestors.push((path.clone(), part.to_string()));
        path = if path.is_empty() {
            part.to_string()
        } else {
            format!("{path}/{part}")
        };
    }
    let mut archive = tar::Archive::new(reader);
    let mut result = Found::Absent;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = clean(&String::from_utf8_lossy(&entry.path_bytes()));
        let (entry_dir, entry_base) = match name.rsplit_once('/') {
            Some((d, b)) => (d, b),
            None => ("", name.as_str()),
        };
        if let Some(hidden) = entry_base.strip_prefix(".wh.") {
            if hidden == ".wh..opq" {
                // An opaque directory: `want` below it is hidden below.
                let below = entry_dir.is_empty()
                    || (want.starts_with(entry_dir) && want[entry_dir.len()..].starts_with('/'));
                if below && result == Found::Absent {
                    result = Found::Gone;
                }
                continue;
            }
            if ancestors
                .iter()
                .any(|(parent, part)| parent == entry_dir && part == hidden)
            {
                return Ok(Found::Gone);
            }
            continue;
        }
        if entry_dir == dir && entry_base == base {
            let kind = entry.header().entry_type();
            if kind.is_file() {
                let mut data = Vec::new();
                entry.read_to_end(&mut data)?;
                return Ok(Found::File(data));
            }
            if kind.is_symlink() || kind.is_hard_link() {
                let target = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                let target = if kind.is_symlink() && !target.starts_with('/') {
                    clean(&format!("{dir}/{target}"))
                } else {
                    clean(&target)
                };
                return Ok(Found::Link(target));
            }
            return Ok(Found::Gone);
        }
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, path, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn files_whiteouts_and_opaque_dirs() {
        let l = layer(&[("etc/passwd", b"root:x:0:0::/root:/bin/sh\n")]);
        assert_eq!(
            find_in_layer(&l, "etc/passwd").unwrap(),
            Found::File(b"root:x:0:0::/root:/bin/sh\n".to_vec())
        );
        assert_eq!(find_in_layer(&l, "etc/group").unwrap(), Found::Absent);
        let w = layer(&[("etc/.wh.passwd", b"")]);
        assert_eq!(find_in_layer(&w, "etc/passwd").unwrap(), Found::Gone);
        let w = layer(&[(".wh.etc", b"")]);
        assert_eq!(find_in_layer(&w, "etc/passwd").unwrap(), Found::Gone);
        let o = layer(&[("etc/.wh..wh..opq", b"")]);
        assert_eq!(find_in_layer(&o, "etc/passwd").unwrap(), Found::Gone);
        let o = layer(&[("etc/.wh..wh..opq", b""), ("etc/passwd", b"x")]);
        assert_eq!(
            find_in_layer(&o, "etc/passwd").unwrap(),
            Found::File(b"x".to_vec())
        );
        let other = layer(&[("var/.wh..wh..opq", b"")]);
        assert_eq!(find_in_layer(&other, "etc/passwd").unwrap(), Found::Absent);
    }

    #[test]
    fn gzip_layers_and_paths() {
        use std::io::Write;
        let l = layer(&[("./etc/group", b"root:x:0:\n")]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&l).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(
            find_in_layer(&gz, &clean("/etc/group")).unwrap(),
            Found::File(b"root:x:0:\n".to_vec())
        );
        assert_eq!(clean("/a/./b/../c"), "a/c");
    }
}
