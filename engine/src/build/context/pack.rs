//! The client's half of a context: a directory packed as the tar that
//! `POST /build` takes, leaving out what `.dockerignore` excludes, except
//! the Dockerfile and `.dockerignore` themselves, which are always sent
//! (the daemon drops them from the context again when the patterns exclude
//! them, as Docker does). Entries are written in name order, with their
//! modes and times, owned by root; symbolic links are stored as links.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::build::dockerignore::Ignore;

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("read {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("write the context: {0}")]
    Write(io::Error),
    #[error("{0}")]
    Ignore(#[from] crate::build::dockerignore::IgnoreError),
}

/// The `.dockerignore` of a context directory (empty when there is none).
pub fn read_ignore(dir: &Path) -> Result<Ignore, PackError> {
    match fs::read_to_string(dir.join(".dockerignore")) {
        Ok(text) => Ok(Ignore::parse(&text)?),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Ignore::default()),
        Err(source) => Err(PackError::Read {
            path: dir.join(".dockerignore").display().to_string(),
            source,
        }),
    }
}

/// Writes `dir` as a tar to `out`; `dockerfile` is the Dockerfile's path
/// relative to `dir`, always included. Returns the number of entries.
pub fn pack_dir(dir: &Path, dockerfile: &str, out: impl Write) -> Result<u64, PackError> {
    let ignore = read_ignore(dir)?;
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    let keep = [
        crate::build::dockerignore::clean(dockerfile),
        ".dockerignore".to_string(),
    ];
    let mut count = 0;
    walk(dir, "", &ignore, &keep, &mut builder, &mut count)?;
    builder.finish().map_err(PackError::Write)?;
    Ok(count)
}

fn walk<W: Write>(
    root: &Path,
    rel: &str,
    ignore: &Ignore,
    keep: &[String],
    builder: &mut tar::Builder<W>,
    count: &mut u64,
) -> Result<(), PackError> {
    let dir = root.join(rel);
    let read_error = |source| PackError::Read {
        path: dir.display().to_string(),
        source,
    };
    let mut names: Vec<String> = fs::read_dir(&dir)
        .map_err(read_error)?
        .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()
        .map_err(|source| PackError::Read {
            path: dir.display().to_string(),
            source,
        })?;
    names.sort();
    for name in names {
        let path = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let full = root.join(&path);
        let meta = fs::symlink_metadata(&full).map_err(|source| PackError::Read {
            path: full.display().to_string(),
            source,
        })?;
        let kept = keep.contains(&path);
        let excluded = !kept && ignore.excludes(&path);
        if meta.is_dir() {
            // An excluded directory may still hold exceptions (`!dir/keep`),
            // or the Dockerfile.
            let inside_kept = keep.iter().any(|k| k.starts_with(&format!("{path}/")));
            if excluded && !ignore.has_exceptions() && !inside_kept {
                continue;
            }
            if !excluded {
                append(builder, &full, &path, &meta)?;
                *count += 1;
            }
            walk(root, &path, ignore, keep, builder, count)?;
        } else if !excluded {
            append(builder, &full, &path, &meta)?;
            *count += 1;
        }
    }
    Ok(())
}

fn append<W: Write>(
    builder: &mut tar::Builder<W>,
    full: &Path,
    path: &str,
    meta: &fs::Metadata,
) -> Result<(), PackError> {
    let mut header = tar::Header::new_gnu();
    header.set_metadata(meta);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(meta.mtime().max(0) as u64);
    let read_error = |source| PackError::Read {
        path: full.display().to_string(),
        source,
    };
    let file_type = meta.file_type();
    if file_type.is_symlink() {
        let target = fs::read_link(full).map_err(read_error)?;
        header.set_size(0);
        builder
            .append_link(&mut header, path, target)
            .map_err(PackError::Write)
    } else if file_type.is_dir() {
        header.set_size(0);
        builder
            .append_data(&mut header, format!("{path}/"), io::empty())
            .map_err(PackError::Write)
    } else if file_type.is_file() {
        let file = fs::File::open(full).map_err(read_error)?;
        builder
            .append_data(&mut header, path, file)
            .map_err(PackError::Write)
    } else {
        // Sockets, fifos and devices are not sent.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{symlink, PermissionsExt};

    use super::*;

    fn names(tar: &[u8]) -> Vec<String> {
        let mut archive = tar::Archive::new(tar);
        archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect()
    }

    fn context() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(root.join("Dockerfile"), "FROM busybox\n").unwrap();
        fs::create_dir_all(root.join("src/deep")).unwrap();
        fs::write(root.join("src/main.rs"), "fn main() {}\n").unwrap();
        fs::write(root.join("src/deep/x.log"), "log").unwrap();
        fs::create_dir_all(root.join("target/debug")).unwrap();
        fs::write(root.join("target/debug/big"), "big").unwrap();
        fs::write(root.join("target/keep.txt"), "keep").unwrap();
        fs::write(root.join("run.sh"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(root.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        symlink("run.sh", root.join("link")).unwrap();
        dir
    }

    #[test]
    fn everything_is_sent_without_a_dockerignore() {
        let dir = context();
        let mut out = Vec::new();
        pack_dir(dir.path(), "Dockerfile", &mut out).unwrap();
        assert_eq!(
            names(&out),
            vec![
                "Dockerfile",
                "link",
                "run.sh",
                "src/",
                "src/deep/",
                "src/deep/x.log",
                "src/main.rs",
                "target/",
                "target/debug/",
                "target/debug/big",
                "target/keep.txt",
            ]
        );
        let mut archive = tar::Archive::new(out.as_slice());
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let header = entry.header();
            assert_eq!(header.uid().unwrap(), 0);
            if entry.path().unwrap().to_str() == Some("run.sh") {
                assert_eq!(header.mode().unwrap() & 0o777, 0o755);
            }
            if entry.path().unwrap().to_str() == Some("link") {
                assert_eq!(entry.link_name().unwrap().unwrap().to_str(), Some("run.sh"));
            }
        }
    }

    #[test]
    fn the_dockerignore_leaves_out_but_keeps_exceptions_and_itself() {
        let dir = context();
        fs::write(
            dir.path().join(".dockerignore"),
            "target\n!target/keep.txt\n**/*.log\nDockerfile\n.dockerignore\n",
        )
        .unwrap();
        let mut out = Vec::new();
        pack_dir(dir.path(), "Dockerfile", &mut out).unwrap();
        assert_eq!(
            names(&out),
            vec![
                ".dockerignore",
                "Dockerfile",
                "link",
                "run.sh",
                "src/",
                "src/deep/",
                "src/main.rs",
                "target/keep.txt",
            ]
        );
    }

    #[test]
    fn a_dockerfile_inside_an_excluded_directory_is_sent() {
        let dir = context();
        fs::create_dir_all(dir.path().join("build")).unwrap();
        fs::write(dir.path().join("build/Dockerfile.dev"), "FROM x\n").unwrap();
        fs::write(dir.path().join(".dockerignore"), "build\n").unwrap();
        let mut out = Vec::new();
        pack_dir(dir.path(), "./build/Dockerfile.dev", &mut out).unwrap();
        assert!(names(&out).contains(&"build/Dockerfile.dev".to_string()));
    }

    #[test]
    fn a_packed_context_unpacks_the_same() {
        let dir = context();
        let mut out = Vec::new();
        pack_dir(dir.path(), "Dockerfile", &mut out).unwrap();
        let parent = tempfile::tempdir().unwrap();
        let unpacked = super::super::ContextDir::create(parent.path(), "c").unwrap();
        unpacked.unpack(out.as_slice()).unwrap();
        let root = unpacked.root();
        assert_eq!(
            fs::read_to_string(root.join("src/main.rs")).unwrap(),
            "fn main() {}\n"
        );
        assert_eq!(
            fs::read_link(root.join("link")).unwrap().to_str(),
            Some("run.sh")
        );
        let before = fs::metadata(dir.path().join("run.sh")).unwrap();
        let after = fs::metadata(root.join("run.sh")).unwrap();
        assert_eq!(before.mode() & 0o7777, after.mode() & 0o7777);
        assert_eq!(before.mtime(), after.mtime());
    }
}
