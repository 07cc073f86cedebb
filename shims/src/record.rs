//! Files in the shim's state directory that must survive a crash: written to
//! a temporary file, synced, renamed into place, and the directory synced,
//! so a reader finds either the old content or the whole new one.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::protocol::ExitInfo;

/// Name of the init's exit record in the state directory.
pub const EXIT_FILE: &str = "exit.json";

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("parse {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// The exit record of the init (`None`) or of an exec'd process.
pub fn exit_file(state_dir: &Path, exec_id: Option<&str>) -> PathBuf {
    match exec_id {
        None => state_dir.join(EXIT_FILE),
        Some(exec_id) => state_dir.join(format!("exec-{exec_id}.exit.json")),
    }
}

/// Writes `data` to `path` durably (temporary file, fsync, rename, fsync of
/// the directory).
pub fn write_durably(path: &Path, data: &[u8]) -> Result<(), RecordError> {
    let err = |source| RecordError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = File::create(&tmp).map_err(err)?;
    file.write_all(data).map_err(err)?;
    file.sync_all().map_err(err)?;
    drop(file);
    fs::rename(&tmp, path).map_err(err)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(err)
}

/// Records how a process ended.
pub fn write_exit(path: &Path, exit: &ExitInfo) -> Result<(), RecordError> {
    let mut data = serde_json::to_vec(exit).map_err(|e| RecordError::Write {
        path: path.to_path_buf(),
        source: io::Error::other(e),
    })?;
    data.push(b'\n');
    write_durably(path, &data)
}

/// Reads an exit record; `Ok(None)` when there is none (the process has not
/// exited, or its shim never saw it exit).
pub fn read_exit(path: &Path) -> Result<Option<ExitInfo>, RecordError> {
    let data = match fs::read(path) {
        Ok(data) => data,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(RecordError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    serde_json::from_slice(&data)
        .map(Some)
        .map_err(|source| RecordError::Parse {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = exit_file(dir.path(), None);
        assert_eq!(read_exit(&path).unwrap(), None);
        let exit = ExitInfo {
            exit_status: 143,
            exited_at: "2024-01-02T03:04:05.000000006Z".into(),
        };
        write_exit(&path, &exit).unwrap();
        assert_eq!(read_exit(&path).unwrap(), Some(exit));
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("exit.json")]);
        assert_eq!(
            exit_file(dir.path(), Some("e1")),
            dir.path().join("exec-e1.exit.json")
        );
    }
}
