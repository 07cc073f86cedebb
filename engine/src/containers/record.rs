//! What the engine keeps of a container: its configuration as created and
//! its Docker-level state, one JSON record in the engine's database, written
//! before a client hears that a change succeeded.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::types::{ContainerConfig, HostConfig, NetworkingConfig};

/// A container's state as Docker names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Restarting => "restarting",
            Status::Removing => "removing",
            Status::Exited => "exited",
            Status::Dead => "dead",
        }
    }

    /// Whether a task (the container's processes) is alive.
    pub fn is_running(self) -> bool {
        matches!(self, Status::Running | Status::Paused | Status::Restarting)
    }

    pub fn parse(s: &str) -> Option<Status> {
        [
            Status::Created,
            Status::Running,
            Status::Paused,
            Status::Restarting,
            Status::Removing,
            Status::Exited,
            Status::Dead,
        ]
        .into_iter()
        .find(|st| st.name() == s)
    }
}

/// The running side of a container.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RunState {
    pub status: Status,
    pub pid: u32,
    pub exit_code: i64,
    pub error: String,
    pub oom_killed: bool,
    pub started_at: Option<SystemTime>,
    pub finished_at: Option<SystemTime>,
    /// Whether the user stopped or killed it since its last start (for
    /// `unless-stopped`, at daemon start too).
    pub stopped_by_user: bool,
    /// Its health check's state, once it has one.
    pub health: Option<super::health::Health>,
}

/// A container as the engine keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    /// Without the leading `/`.
    pub name: String,
    pub created: SystemTime,
    /// The image as the client named it (`Config.Image`).
    pub image: String,
    /// The image's id (its config digest) when created.
    pub image_id: String,
    /// The name the supervisor stores the image under.
    pub image_ref: String,
    /// The configuration, merged with the image's as Docker merges it.
    pub config: ContainerConfig,
    pub host_config: HostConfig,
    #[serde(default)]
    pub networking_config: Option<NetworkingConfig>,
    /// The process: entrypoint and command joined.
    pub path: String,
    pub args: Vec<String>,
    #[serde(default)]
    pub state: RunState,
    #[serde(default)]
    pub restart_count: i64,
    /// The process's user, resolved in the container's files at create.
    #[serde(default)]
    pub user: super::spec::ResolvedUser,
    /// `HostConfig.GroupAdd` as gids.
    #[serde(default)]
    pub group_add: Vec<u32>,
    /// Its volumes (and the binds of `--volumes-from`).
    #[serde(default)]
    pub mount_points: Vec<crate::volumes::mounts::MountPoint>,
}

/// RFC 3339 with nanoseconds in UTC, as Go's `time.RFC3339Nano` writes it;
/// Docker's zero time when unset.
pub fn format_time(t: Option<SystemTime>) -> String {
    match t {
        Some(t) => {
            let s = humantime::format_rfc3339_nanos(t).to_string();
            // Go trims trailing zeros of the fraction (and the dot with them).
            match s.strip_suffix('Z').and_then(|s| s.split_once('.')) {
                Some((whole, frac)) => {
                    let frac = frac.trim_end_matches('0');
                    if frac.is_empty() {
                        format!("{whole}Z")
                    } else {
                        format!("{whole}.{frac}Z")
                    }
                }
                None => s,
            }
        }
        None => "0001-01-01T00:00:00Z".to_string(),
    }
}

/// Parses an RFC 3339 time from the supervisor.
pub fn parse_time(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s.trim_end_matches('Z')).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn times_as_go_writes_them() {
        assert_eq!(format_time(None), "0001-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 120_000_000);
        assert_eq!(format_time(Some(t)), "2023-11-14T22:13:20.12Z");
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 0);
        assert_eq!(format_time(Some(t)), "2023-11-14T22:13:20Z");
        assert_eq!(
            parse_time("2023-11-14T22:13:20.12Z"),
            Some(UNIX_EPOCH + Duration::new(1_700_000_000, 120_000_000))
        );
        assert_eq!(Status::parse("exited"), Some(Status::Exited));
    }
}
