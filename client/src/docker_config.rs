//! Registry credentials from a docker `config.json`: the one reader of that
//! file in berth. `berth-ctr` sends the user's credentials with a pull or
//! push ([`docker_credentials`]); the supervisor loads its registry
//! configuration with [`DockerConfig::load`].
//!
//! The file is read as docker reads it: `auths` maps a registry key (a host,
//! or a URL such as `https://index.docker.io/v1/`) to `auth` (base64 of
//! `user:password`), `username`/`password`, or `identitytoken`. Keys are
//! compared as hosts ([`normalise_host`]): no scheme or path, lowercase,
//! Docker Hub's aliases folded into [`DOCKER_HUB`]. Entries kept by a
//! credential helper (`credsStore`) hold no secret and are skipped.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use berth_proto::images::v1::RegistryAuth;
use serde::Deserialize;

/// Docker Hub's canonical registry name.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that serves Docker Hub's registry API.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// The key `docker login` writes for Docker Hub.
pub const DOCKER_HUB_LOGIN_KEY: &str = "https://index.docker.io/v1/";
/// The other host names of Docker Hub's registry, folded into [`DOCKER_HUB`].
pub const DOCKER_HUB_ALIASES: &[&str] =
    &["index.docker.io", DOCKER_HUB_API, "registry.hub.docker.com"];

#[derive(Debug, thiserror::Error)]
pub enum DockerConfigError {
    #[error("read docker config {}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("parse docker config {}", path.display())]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("docker config {}: {problem}", path.display())]
    Entry {
        path: PathBuf,
        problem: AuthEntryError,
    },
}

/// What is wrong with one `auths` entry.
#[derive(Debug, thiserror::Error)]
pub enum AuthEntryError {
    #[error("auths.{registry:?}.auth is not base64 of user:password")]
    NotBase64 { registry: String },
    #[error("auths.{registry:?}.auth does not decode to \"username:password\"")]
    NotUserPassword { registry: String },
}

/// How to authenticate to a registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token, exchanged at the token server for access tokens.
    IdentityToken(String),
}

// Hand-written so that secrets never reach a log line.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Credentials::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

/// What one `auths` entry holds, decoded (docker's `AuthConfig`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AuthEntry {
    pub username: String,
    pub password: String,
    pub identity_token: String,
}

// Hand-written so that secrets never reach a log line.
impl fmt::Debug for AuthEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthEntry")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("identity_token", &"<redacted>")
            .finish()
    }
}

impl AuthEntry {
    /// Whether the entry holds nothing to authenticate with.
    pub fn is_empty(&self) -> bool {
        self.username.is_empty() && self.password.is_empty() && self.identity_token.is_empty()
    }

    /// The credentials a registry client uses: the identity token when there
    /// is one, else user and password; `None` for an empty entry.
    pub fn credentials(&self) -> Option<Credentials> {
        if !self.identity_token.is_empty() {
            return Some(Credentials::IdentityToken(self.identity_token.clone()));
        }
        if self.username.is_empty() && self.password.is_empty() {
            return None;
        }
        Some(Credentials::Basic {
            username: self.username.clone(),
            password: self.password.clone(),
        })
    }

    /// The entry as a pull or push request carries it.
    pub fn to_registry_auth(&self) -> RegistryAuth {
        RegistryAuth {
            username: self.username.clone(),
            password: self.password.clone(),
            identity_token: self.identity_token.clone(),
        }
    }
}

impl From<RegistryAuth> for AuthEntry {
    fn from(auth: RegistryAuth) -> AuthEntry {
        AuthEntry {
            username: auth.username,
            password: auth.password,
            identity_token: auth.identity_token,
        }
    }
}

/// A docker `config.json`: the credentials of each registry host, and the
/// `insecure-registries` list (dockerd's key, which berth's supervisor reads
/// from the same file).
#[derive(Clone, Debug, Default)]
pub struct DockerConfig {
    /// By normalised host.
    auths: BTreeMap<String, AuthEntry>,
    /// As written: `host[:port]` or a CIDR.
    pub insecure_registries: Vec<String>,
}

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, RawEntry>,
    #[serde(default, rename = "insecure-registries")]
    insecure_registries: Vec<String>,
}

#[derive(Deserialize)]
struct RawEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

impl DockerConfig {
    /// Reads the config file at `path`; a missing file is an empty
    /// configuration.
    pub fn load(path: &Path) -> Result<DockerConfig, DockerConfigError> {
        match std::fs::read(path) {
            Ok(text) => DockerConfig::parse(path, &text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(DockerConfig::default()),
            Err(source) => Err(DockerConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Parses the text of the config file at `path` (named in errors).
    /// Every entry is decoded, so a bad one fails the whole file.
    pub fn parse(path: &Path, text: &[u8]) -> Result<DockerConfig, DockerConfigError> {
        let file: ConfigFile =
            serde_json::from_slice(text).map_err(|source| DockerConfigError::Parse {
                path: path.to_path_buf(),
                source,
            })?;
        let mut ranked: BTreeMap<String, (u8, AuthEntry)> = BTreeMap::new();
        // Keys in sorted order; a later key replaces an earlier one for the
        // same host only if it ranks strictly better, so the choice is stable.
        for (key, raw) in file.auths {
            let entry = decode_entry(&key, raw).map_err(|problem| DockerConfigError::Entry {
                path: path.to_path_buf(),
                problem,
            })?;
            if entry.is_empty() {
                continue;
            }
            let host = normalise_host(&key);
            let rank = key_rank(&key, &host);
            match ranked.get(&host) {
                Some((best, _)) if *best <= rank => {}
                _ => {
                    ranked.insert(host, (rank, entry));
                }
            }
        }
        Ok(DockerConfig {
            auths: ranked
                .into_iter()
                .map(|(host, (_, entry))| (host, entry))
                .collect(),
            insecure_registries: file.insecure_registries,
        })
    }

    /// The entry for a registry host (`host[:port]`, compared normalised).
    pub fn auth(&self, host: &str) -> Option<&AuthEntry> {
        self.auths.get(&normalise_host(host))
    }

    /// Every entry with a secret, by normalised host.
    pub fn auths(&self) -> impl Iterator<Item = (&str, &AuthEntry)> {
        self.auths
            .iter()
            .map(|(host, entry)| (host.as_str(), entry))
    }
}

/// Which of several keys for one host wins, lowest first: the host itself,
/// then `docker login`'s key and Docker Hub's aliases in order, then any other.
fn key_rank(key: &str, host: &str) -> u8 {
    if key == host {
        return 0;
    }
    if key == DOCKER_HUB_LOGIN_KEY {
        return 1;
    }
    match DOCKER_HUB_ALIASES.iter().position(|a| *a == key) {
        Some(i) => 2 + i as u8,
        None => u8::MAX,
    }
}

/// One `auths` entry: `auth` gives user and password (and wins over
/// `username`/`password`, as in docker); `identitytoken` is kept beside them.
fn decode_entry(key: &str, raw: RawEntry) -> Result<AuthEntry, AuthEntryError> {
    let mut entry = AuthEntry {
        username: raw.username.unwrap_or_default(),
        password: raw.password.unwrap_or_default(),
        identity_token: raw.identitytoken.unwrap_or_default(),
    };
    if let Some(encoded) = raw.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| AuthEntryError::NotBase64 {
                registry: key.to_string(),
            })?;
        let not_pair = || AuthEntryError::NotUserPassword {
            registry: key.to_string(),
        };
        let decoded = String::from_utf8(decoded).map_err(|_| not_pair())?;
        let (username, password) = decoded.split_once(':').ok_or_else(not_pair)?;
        entry.username = username.to_string();
        entry.password = password.to_string();
    }
    Ok(entry)
}

/// Config keys and hosts compared the same way: no scheme or path, lowercase,
/// Docker Hub's aliases folded into [`DOCKER_HUB`].
pub fn normalise_host(host: &str) -> String {
    let host = host.trim();
    let host = host
        .strip_prefix("https://")
        .or_else(|| host.strip_prefix("http://"))
        .unwrap_or(host);
    let host = host.split('/').next().unwrap_or(host).to_ascii_lowercase();
    if DOCKER_HUB_ALIASES.contains(&host.as_str()) {
        return DOCKER_HUB.to_string();
    }
    host
}

/// The registry an image reference names: the part before the first '/' when
/// it looks like a host (has a '.' or ':', or is "localhost"), else docker.io.
pub fn registry_host(reference: &str) -> &str {
    match reference.split_once('/') {
        Some((host, _)) if host.contains(['.', ':']) || host == "localhost" => host,
        _ => DOCKER_HUB,
    }
}

/// The docker config file of this user: `$DOCKER_CONFIG/config.json`, else
/// `~/.docker/config.json`; `None` without either variable.
pub fn default_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(PathBuf::from(home).join(".docker").join("config.json"))
}

/// The credentials for `registry_host` in a docker config file: `config_path`,
/// else [`default_path`]. A missing file, or one without an entry for the
/// registry, gives `None`.
pub fn docker_credentials(
    config_path: Option<&Path>,
    registry_host: &str,
) -> Result<Option<RegistryAuth>, DockerConfigError> {
    let path = match config_path {
        Some(p) => p.to_path_buf(),
        None => match default_path() {
            Some(p) => p,
            None => return Ok(None),
        },
    };
    let config = DockerConfig::load(&path)?;
    Ok(config.auth(registry_host).map(AuthEntry::to_registry_auth))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_config(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("config.json");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn basic(u: &str, p: &str) -> Credentials {
        Credentials::Basic {
            username: u.to_string(),
            password: p.to_string(),
        }
    }

    fn credentials(config: &DockerConfig, host: &str) -> Option<Credentials> {
        config.auth(host).and_then(AuthEntry::credentials)
    }

    #[test]
    fn registry_host_of_references() {
        assert_eq!(registry_host("busybox"), "docker.io");
        assert_eq!(registry_host("library/busybox:1.36"), "docker.io");
        assert_eq!(registry_host("docker.io/library/busybox"), "docker.io");
        assert_eq!(registry_host("127.0.0.1:5000/app:1"), "127.0.0.1:5000");
        assert_eq!(registry_host("localhost/app"), "localhost");
        assert_eq!(
            registry_host("registry.example/team/app@sha256:ab"),
            "registry.example"
        );
        assert_eq!(registry_host("team/app"), "docker.io");
    }

    #[test]
    fn auth_field_is_user_and_password() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            r#"{{"auths": {{"127.0.0.1:5000": {{"auth": "{}"}}}}}}"#,
            b64("alice:s3cr:et")
        );
        let path = write_config(dir.path(), &text);
        let auth = docker_credentials(Some(&path), "127.0.0.1:5000")
            .unwrap()
            .unwrap();
        assert_eq!(auth.username, "alice");
        assert_eq!(auth.password, "s3cr:et");
        assert_eq!(auth.identity_token, "");
        assert_eq!(
            docker_credentials(Some(&path), "other.example").unwrap(),
            None
        );
    }

    #[test]
    fn username_password_and_identity_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(
            dir.path(),
            r#"{"auths": {
                "https://registry.example/v2/": {"username": "bob", "password": "pw"},
                "tokens.example": {"auth": "PHRva2VuPjo=", "identitytoken": "refresh"}
            }, "credsStore": "desktop"}"#,
        );
        let auth = docker_credentials(Some(&path), "registry.example")
            .unwrap()
            .unwrap();
        assert_eq!(
            (auth.username.as_str(), auth.password.as_str()),
            ("bob", "pw")
        );
        let auth = docker_credentials(Some(&path), "tokens.example")
            .unwrap()
            .unwrap();
        assert_eq!(auth.username, "<token>");
        assert_eq!(auth.password, "");
        assert_eq!(auth.identity_token, "refresh");
    }

    #[test]
    fn docker_hub_uses_the_index_key() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            r#"{{"auths": {{"https://index.docker.io/v1/": {{"auth": "{}"}}}}}}"#,
            b64("carol:pw")
        );
        let path = write_config(dir.path(), &text);
        let host = registry_host("busybox:latest");
        let auth = docker_credentials(Some(&path), host).unwrap().unwrap();
        assert_eq!(auth.username, "carol");
    }

    #[test]
    fn entry_without_secret_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(dir.path(), r#"{"auths": {"registry.example": {}}}"#);
        assert_eq!(
            docker_credentials(Some(&path), "registry.example").unwrap(),
            None
        );
        let path = write_config(dir.path(), r#"{"credsStore": "pass"}"#);
        assert_eq!(
            docker_credentials(Some(&path), "registry.example").unwrap(),
            None
        );
    }

    #[test]
    fn missing_file_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.json");
        assert_eq!(docker_credentials(Some(&path), "docker.io").unwrap(), None);
    }

    #[test]
    fn malformed_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(dir.path(), "{ not json");
        let err = docker_credentials(Some(&path), "docker.io").unwrap_err();
        assert!(matches!(err, DockerConfigError::Parse { .. }));
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );

        let path = write_config(dir.path(), r#"{"auths": {"r.example": {"auth": "%%%"}}}"#);
        let err = docker_credentials(Some(&path), "r.example").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "docker config {}: auths.\"r.example\".auth is not base64 of user:password",
                path.display()
            )
        );
        let path = write_config(
            dir.path(),
            &format!(
                r#"{{"auths": {{"r.example": {{"auth": "{}"}}}}}}"#,
                b64("nocolon")
            ),
        );
        assert!(docker_credentials(Some(&path), "r.example").is_err());
    }

    #[test]
    fn loads_every_kind_of_entry() {
        let auth = b64("alice:s3cret:with:colons");
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(
            dir.path(),
            &format!(
                r#"{{
                "auths": {{
                    "reg.example:5000": {{"auth": "{auth}"}},
                    "https://index.docker.io/v1/": {{"username": "bob", "password": "pw"}},
                    "ghcr.io": {{"auth": "{auth}", "identitytoken": "refresh-me"}},
                    "helper.example": {{}}
                }},
                "credsStore": "desktop",
                "insecure-registries": ["reg.example:5000", "10.1.0.0/16"]
            }}"#
            ),
        );
        let config = DockerConfig::load(&path).unwrap();
        assert_eq!(
            credentials(&config, "reg.example:5000"),
            Some(basic("alice", "s3cret:with:colons"))
        );
        assert_eq!(credentials(&config, "docker.io"), Some(basic("bob", "pw")));
        assert_eq!(
            credentials(&config, "registry-1.docker.io"),
            Some(basic("bob", "pw"))
        );
        assert_eq!(
            credentials(&config, "GHCR.io"),
            Some(Credentials::IdentityToken("refresh-me".to_string()))
        );
        assert_eq!(credentials(&config, "helper.example"), None);
        assert_eq!(credentials(&config, "reg.example"), None);
        assert_eq!(
            config.insecure_registries,
            ["reg.example:5000", "10.1.0.0/16"]
        );
    }

    #[test]
    fn bad_entries_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(dir.path(), "{ \"auths\": [1, 2] }");
        let err = DockerConfig::load(&path).unwrap_err();
        assert!(matches!(err, DockerConfigError::Parse { .. }));

        let path = write_config(dir.path(), r#"{"auths": {"h": {"auth": "!!!"}}}"#);
        let msg = DockerConfig::load(&path).unwrap_err().to_string();
        assert!(msg.contains("not base64"), "{msg}");

        let path = write_config(
            dir.path(),
            &format!(r#"{{"auths": {{"h": {{"auth": "{}"}}}}}}"#, b64("alice")),
        );
        let msg = DockerConfig::load(&path).unwrap_err().to_string();
        assert!(msg.contains("username:password"), "{msg}");
    }

    #[test]
    fn the_hosts_own_key_wins_over_aliases() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(
            dir.path(),
            &format!(
                r#"{{"auths": {{
                    "https://index.docker.io/v1/": {{"auth": "{}"}},
                    "docker.io": {{"auth": "{}"}},
                    "registry-1.docker.io": {{"auth": "{}"}}
                }}}}"#,
                b64("login:pw"),
                b64("own:pw"),
                b64("api:pw")
            ),
        );
        let config = DockerConfig::load(&path).unwrap();
        assert_eq!(credentials(&config, "docker.io"), Some(basic("own", "pw")));
        let path = write_config(
            dir.path(),
            &format!(
                r#"{{"auths": {{
                    "registry-1.docker.io": {{"auth": "{}"}},
                    "https://index.docker.io/v1/": {{"auth": "{}"}}
                }}}}"#,
                b64("api:pw"),
                b64("login:pw")
            ),
        );
        let config = DockerConfig::load(&path).unwrap();
        assert_eq!(
            credentials(&config, "index.docker.io"),
            Some(basic("login", "pw"))
        );
    }

    #[test]
    fn normalised_hosts() {
        assert_eq!(normalise_host("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(normalise_host("Registry.Hub.Docker.com"), "docker.io");
        assert_eq!(
            normalise_host("http://Reg.example:5000/v2/"),
            "reg.example:5000"
        );
    }

    #[test]
    fn credentials_debug_hides_secrets() {
        let text = format!(
            "{:?} {:?} {:?}",
            basic("u", "hunter2"),
            Credentials::IdentityToken("tok".into()),
            AuthEntry {
                username: "u".into(),
                password: "hunter2".into(),
                identity_token: "tok".into(),
            }
        );
        assert!(
            !text.contains("hunter2") && !text.contains("tok\""),
            "{text}"
        );
    }

    #[test]
    fn registry_auth_becomes_credentials() {
        let entry = AuthEntry::from(RegistryAuth {
            username: "u".into(),
            password: "p".into(),
            identity_token: String::new(),
        });
        assert_eq!(entry.credentials(), Some(basic("u", "p")));
        assert_eq!(AuthEntry::default().credentials(), None);
    }
}
