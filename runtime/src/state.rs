//! The runtime's record of a container: `<root>/<id>/state.json`, and the
//! status derived from it and from the live system.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

/// The name of the socket on which a created container's init waits for `start`.
pub const EXEC_SOCKET: &str = "exec.sock";
const STATE_FILE: &str = "state.json";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    // runc's words (libcontainer's errors), which tools look for.
    #[error("container id cannot be empty")]
    EmptyId,
    #[error(
        "invalid container ID format: {0:?} (use letters, digits, '_', '+', '-' and '.', not '.' or '..')"
    )]
    InvalidId(String),
    #[error("container with given ID already exists")]
    Exists(String),
    #[error("container does not exist")]
    NotFound(String),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state of container {id} is corrupt: {message}")]
    Corrupt { id: String, message: String },
}

/// A container's lifecycle status, as the runtime spec names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the runtime keeps about a container between commands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    /// Host pid of the container's init process.
    pub pid: i32,
    /// Start time of that pid (field 22 of /proc/PID/stat), so a reused pid
    /// is not mistaken for our process.
    pub pid_start: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// RFC 3339 creation time.
    pub created: String,
    pub owner: String,
    /// The cgroup path as given (or defaulted) in the config.
    pub cgroups_path: String,
    pub systemd_cgroup: bool,
    /// The configuration the container was created with.
    pub spec: Spec,
}

/// The OCI runtime-spec state document (`state` command, hooks' stdin).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OciState<'a> {
    pub oci_version: &'a str,
    pub id: &'a str,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    pub bundle: &'a Path,
    /// Left out when empty, as runc leaves it out (of `state` and of what
    /// hooks read).
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
}

/// Checks an id the way runc does, so it is safe as a path component.
pub fn validate_id(id: &str) -> Result<(), StateError> {
    if id.is_empty() {
        return Err(StateError::EmptyId);
    }
    let ok = id != "."
        && id != ".."
        && id.len() <= 1024
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(StateError::InvalidId(id.to_string()))
    }
}

/// The runtime's state root (`--root`).
#[derive(Debug, Clone)]
pub struct StateRoot {
    root: PathBuf,
}

impl StateRoot {
    pub fn new(root: PathBuf) -> Self {
        StateRoot { root }
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Claims the directory for a new container; fails if the id is taken.
    pub fn claim(&self, id: &str) -> Result<PathBuf, StateError> {
        validate_id(id)?;
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)
            .map_err(|source| StateError::Io {
                action: "create state root",
                path: self.root.clone(),
                source,
            })?;
        let dir = self.dir(id);
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(StateError::Exists(id.to_string()))
            }
            Err(source) => Err(StateError::Io {
                action: "create state directory",
                path: dir,
                source,
            }),
        }
    }

    /// Writes the record atomically (temporary file, fsync, rename).
    pub fn save(&self, record: &Record) -> Result<(), StateError> {
        let dir = self.dir(&record.id);
        let tmp = dir.join(".state.json.tmp");
        let io = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Io {
                action,
                path,
                source,
            }
        };
        let data = serde_json::to_vec(record).map_err(|e| StateError::Corrupt {
            id: record.id.clone(),
            message: e.to_string(),
        })?;
        let mut file = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
        file.write_all(&data).map_err(io("write", &tmp))?;
        std::fs::rename(&tmp, dir.join(STATE_FILE)).map_err(io("rename", &tmp))?;
        Ok(())
    }

    pub fn load(&self, id: &str) -> Result<Record, StateError> {
        validate_id(id)?;
        let path = self.dir(id).join(STATE_FILE);
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StateError::NotFound(id.to_string()))
            }
            Err(source) => {
                return Err(StateError::Io {
                    action: "read",
                    path,
                    source,
                })
            }
        };
        serde_json::from_slice(&data).map_err(|e| StateError::Corrupt {
            id: id.to_string(),
            message: e.to_string(),
        })
    }

    /// Whether a directory exists for `id` (possibly without a record, if a
    /// create was interrupted).
    pub fn exists(&self, id: &str) -> bool {
        validate_id(id).is_ok() && self.dir(id).is_dir()
    }

    pub fn remove(&self, id: &str) -> Result<(), StateError> {
        let dir = self.dir(id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::Io {
                action: "remove",
                path: dir,
                source,
            }),
        }
    }

    /// Ids of every container under the root, sorted.
    pub fn ids(&self) -> Result<Vec<String>, StateError> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(StateError::Io {
                    action: "list",
                    path: self.root.clone(),
                    source,
                })
            }
        };
        let mut ids: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join(STATE_FILE).exists())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        Ok(ids)
    }
}

/// Start time of a process, or None if it is gone or a zombie.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // fields[0] is field 3 (state); start time is field 22.
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

impl Record {
    /// Whether the init process recorded here is still alive (and not a
    /// different process that reused its pid).
    pub fn init_alive(&self) -> bool {
        self.pid > 0 && process_start_time(self.pid) == Some(self.pid_start)
    }

    pub fn oci_state(&self, status: Status) -> OciState<'_> {
        OciState {
            oci_version: self.spec.version(),
            id: &self.id,
            status,
            pid: (status != Status::Stopped).then_some(self.pid),
            bundle: &self.bundle,
            annotations: self.spec.annotations().clone().unwrap_or_default(),
        }
    }
}

/// RFC 3339 time of now, with nanoseconds, as runc's `created` field.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for ok in ["a", "abc-1.2_3+x", "0123456789abcdef"] {
            validate_id(ok).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "../x", "a b", "a\0b"] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn claim_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let root = StateRoot::new(dir.path().join("r"));
        root.claim("c1").unwrap();
        assert!(matches!(root.claim("c1"), Err(StateError::Exists(_))));
        assert!(matches!(root.load("c1"), Err(StateError::NotFound(_))));
    }

    #[test]
    fn own_start_time_is_readable() {
        let pid = std::process::id() as i32;
        assert!(process_start_time(pid).is_some());
    }
}
