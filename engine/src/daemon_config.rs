//! `berthd`'s settings from its flags and from `/etc/berth/daemon.json`
//! (`--config-file`), read as dockerd reads its daemon.json: the keys are
//! the long flags' names (`hosts` for `-H`), a key set both in the file and
//! by a flag is an error naming it, an unknown key is an error naming it,
//! and malformed JSON names its line. A missing file at the default path is
//! no settings; a missing file the user named is an error.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Where the file is read from unless `--config-file` says otherwise.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/berth/daemon.json";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read the configuration file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "unable to configure berthd with file {path}: invalid JSON at line {line}, column \
         {column}: {message}"
    )]
    Malformed {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("unable to configure berthd with file {path}: the top level must be a JSON object")]
    NotAnObject { path: PathBuf },
    #[error(
        "unable to configure berthd with file {path}: the following directives don't match \
         any configuration option: {keys}"
    )]
    UnknownKeys { path: PathBuf, keys: String },
    #[error("unable to configure berthd with file {path}: {key}: {message}")]
    BadValue {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error(
        "unable to configure berthd with file {path}: the following directives are \
         specified both as a flag and in the configuration file: {conflicts}"
    )]
    Conflict { path: PathBuf, conflicts: String },
    #[error("invalid settings: {0}")]
    Invalid(String),
}

/// What berthd can be told: each field is its flag's long name and its
/// daemon.json key; unset ones are absent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Settings {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_root: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exec_root: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pidfile: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supervisor: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supervisor_binary: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bip: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debug: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tlsverify: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tlscacert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tlscert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tlskey: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_addr: Option<String>,
}

/// The keys daemon.json may hold.
pub const KEYS: &[&str] = &[
    "hosts",
    "data-root",
    "exec-root",
    "pidfile",
    "supervisor",
    "supervisor-binary",
    "bridge",
    "bip",
    "dns",
    "debug",
    "log-level",
    "tls",
    "tlsverify",
    "tlscacert",
    "tlscert",
    "tlskey",
    "metrics-addr",
];

/// The log levels dockerd accepts.
pub const LOG_LEVELS: &[&str] = &["debug", "info", "warn", "error", "fatal"];

impl Settings {
    fn to_map(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(map)) => map,
            // A struct of strings, paths and bools always serialises to an object.
            _ => Map::new(),
        }
    }

    /// Checks values a type cannot: the log level.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(level) = &self.log_level {
            if !LOG_LEVELS.contains(&level.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "log-level {level:?}: must be one of {}",
                    LOG_LEVELS.join(", ")
                )));
            }
        }
        Ok(())
    }
}

/// Reads the file's settings; `None` when the file is absent and the user
/// did not name it.
pub fn load(path: &Path, named: bool) -> Result<Option<Settings>, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound && !named => return Ok(None),
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    parse(path, &text).map(Some)
}

/// Parses daemon.json's text.
pub fn parse(path: &Path, text: &str) -> Result<Settings, ConfigError> {
    let value: Value = serde_json::from_str(text).map_err(|e| ConfigError::Malformed {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        message: strip_position(&e.to_string()),
    })?;
    let Value::Object(map) = value else {
        return Err(ConfigError::NotAnObject {
            path: path.to_path_buf(),
        });
    };
    let unknown: Vec<&str> = map
        .keys()
        .map(String::as_str)
        .filter(|k| !KEYS.contains(k))
        .collect();
    if !unknown.is_empty() {
        return Err(ConfigError::UnknownKeys {
            path: path.to_path_buf(),
            keys: unknown.join(", "),
        });
    }
    // Each key alone, so a wrong type names its key.
    for (key, value) in &map {
        let one = Map::from_iter([(key.clone(), value.clone())]);
        if let Err(e) = serde_json::from_value::<Settings>(Value::Object(one)) {
            return Err(ConfigError::BadValue {
                path: path.to_path_buf(),
                key: key.clone(),
                message: e.to_string(),
            });
        }
    }
    serde_json::from_value(Value::Object(map)).map_err(|e| ConfigError::BadValue {
        path: path.to_path_buf(),
        key: "(file)".to_string(),
        message: e.to_string(),
    })
}

/// serde_json's message without its " at line L column C" (said apart).
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// The flags' settings over the file's; a key set in both is an error
/// naming each such key with both values.
pub fn merge(flags: &Settings, file: &Settings, path: &Path) -> Result<Settings, ConfigError> {
    let flag_map = flags.to_map();
    let mut merged = file.to_map();
    let mut conflicts = Vec::new();
    for (key, value) in flag_map {
        if let Some(in_file) = merged.get(&key) {
            conflicts.push(format!("{key}: (from flag: {value}, from file: {in_file})"));
        }
        merged.insert(key, value);
    }
    if !conflicts.is_empty() {
        return Err(ConfigError::Conflict {
            path: path.to_path_buf(),
            conflicts: conflicts.join(", "),
        });
    }
    serde_json::from_value(Value::Object(merged)).map_err(|e| ConfigError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path() -> PathBuf {
        PathBuf::from("/etc/berth/daemon.json")
    }

    #[test]
    fn keys_read_as_flags() {
        let s = parse(
            &path(),
            r#"{"hosts": ["unix:///run/b.sock", "tcp://0.0.0.0:2376"], "data-root": "/d",
                "tlsverify": true, "tlscacert": "/c/ca.pem", "debug": true,
                "metrics-addr": "127.0.0.1:9323", "dns": ["10.0.0.2"], "log-level": "warn"}"#,
        )
        .unwrap();
        assert_eq!(s.hosts.len(), 2);
        assert_eq!(s.data_root, Some(PathBuf::from("/d")));
        assert_eq!(s.tlsverify, Some(true));
        assert_eq!(s.metrics_addr.as_deref(), Some("127.0.0.1:9323"));
        s.validate().unwrap();
        // Every key of the struct is in KEYS, and the other way round.
        let all = Settings {
            hosts: vec!["x".into()],
            dns: vec!["x".into()],
            data_root: Some("x".into()),
            exec_root: Some("x".into()),
            pidfile: Some("x".into()),
            supervisor: Some("x".into()),
            supervisor_binary: Some("x".into()),
            bridge: Some("x".into()),
            bip: Some("x".into()),
            debug: Some(true),
            log_level: Some("x".into()),
            tls: Some(true),
            tlsverify: Some(true),
            tlscacert: Some("x".into()),
            tlscert: Some("x".into()),
            tlskey: Some("x".into()),
            metrics_addr: Some("x".into()),
        };
        let mut keys: Vec<String> = all.to_map().keys().cloned().collect();
        keys.sort();
        let mut want: Vec<String> = KEYS.iter().map(|k| k.to_string()).collect();
        want.sort();
        assert_eq!(keys, want);
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = parse(
            &path(),
            r#"{"debug": true, "storage-driver": "x", "bogus": 1}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("don't match any configuration option"),
            "{err}"
        );
        assert!(
            err.contains("storage-driver") && err.contains("bogus"),
            "{err}"
        );
    }

    #[test]
    fn malformed_json_names_the_line() {
        let err = parse(&path(), "{\n  \"debug\": true,\n  \"hosts\": [\n}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 4"), "{err}");
    }

    #[test]
    fn a_wrong_type_names_its_key() {
        let err = parse(&path(), r#"{"hosts": "tcp://x", "debug": true}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("hosts:"), "{err}");
    }

    #[test]
    fn flag_and_file_conflict_names_the_key() {
        let file = parse(&path(), r#"{"debug": true, "bip": "10.1.0.1/24"}"#).unwrap();
        let flags = Settings {
            debug: Some(true),
            data_root: Some("/x".into()),
            ..Settings::default()
        };
        let err = merge(&flags, &file, &path()).unwrap_err().to_string();
        assert!(err.contains("specified both as a flag and in the configuration file"));
        assert!(
            err.contains("debug: (from flag: true, from file: true)"),
            "{err}"
        );
        assert!(!err.contains("bip"), "{err}");
        let flags = Settings {
            data_root: Some("/x".into()),
            ..Settings::default()
        };
        let merged = merge(&flags, &file, &path()).unwrap();
        assert_eq!(merged.bip.as_deref(), Some("10.1.0.1/24"));
        assert_eq!(merged.data_root, Some(PathBuf::from("/x")));
    }

    #[test]
    fn a_missing_file_is_nothing_unless_named() {
        let p = Path::new("/nonexistent/daemon.json");
        assert!(load(p, false).unwrap().is_none());
        assert!(load(p, true).is_err());
    }

    #[test]
    fn bad_log_level_is_refused() {
        let s = Settings {
            log_level: Some("loud".into()),
            ..Settings::default()
        };
        assert!(s.validate().is_err());
    }
}
