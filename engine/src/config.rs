//! Where `berthd` keeps things: every path derives from the data root and
//! the exec root (dockerd's `--data-root` and `--exec-root`), so a daemon
//! started with both writes nothing outside them.

use std::path::PathBuf;

pub const DEFAULT_DATA_ROOT: &str = "/var/lib/berth";
pub const DEFAULT_EXEC_ROOT: &str = "/run/berth";

/// The daemon's directories and sockets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    pub data_root: PathBuf,
    pub exec_root: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Paths::new(DEFAULT_DATA_ROOT, DEFAULT_EXEC_ROOT)
    }
}

impl Paths {
    pub fn new(data_root: impl Into<PathBuf>, exec_root: impl Into<PathBuf>) -> Paths {
        Paths {
            data_root: data_root.into(),
            exec_root: exec_root.into(),
        }
    }

    /// The engine API socket: `<exec-root>/berth.sock`.
    pub fn socket(&self) -> PathBuf {
        self.exec_root.join("berth.sock")
    }

    /// The engine's own state: `<data-root>/engine`.
    pub fn engine_dir(&self) -> PathBuf {
        self.data_root.join("engine")
    }

    /// The engine's database.
    pub fn database(&self) -> PathBuf {
        self.engine_dir().join("engine.redb")
    }

    /// A container's directory: its log, its config files (hosts, resolv.conf).
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.engine_dir().join("containers").join(id)
    }

    /// The container's json-file log, named as Docker names it.
    pub fn container_log(&self, id: &str) -> PathBuf {
        self.container_dir(id).join(format!("{id}-json.log"))
    }

    /// The managed supervisor's persistent state.
    pub fn supervisor_root(&self) -> PathBuf {
        self.data_root.join("supervisor")
    }

    /// The managed supervisor's runtime state (shims, runtime state).
    pub fn supervisor_state(&self) -> PathBuf {
        self.exec_root.clone()
    }

    /// The managed supervisor's gRPC socket.
    pub fn supervisor_socket(&self) -> PathBuf {
        self.exec_root.join("supervisor.sock")
    }
}
