//! Per-registry hosts in containerd's `hosts.toml` layout: a directory
//! with one subdirectory per registry (`docker.io`, `registry.k8s.io`,
//! `127.0.0.1:5000`, or `_default` for every registry without its own),
//! each holding a `hosts.toml`:
//!
//! ```toml
//! server = "https://registry.k8s.io"          # the upstream (optional)
//! [host."http://127.0.0.1:5000"]             # mirrors, tried before it
//!   capabilities = ["pull", "resolve"]        # default: pull, resolve, push
//!   skip_verify = true                        # TLS without verification
//!   ca = "/etc/berth/certs.d/my-ca.pem"       # or a list of files
//! ```
//!
//! A pull by tag tries the endpoints that may `resolve` in turn, a pull by
//! digest and blob fetches those that may `pull`, moving on when one
//! fails; a push goes to the first that may `push`. The `server` (default:
//! the registry itself) comes last and may do all three. Endpoint URLs may
//! end in `/v2` but carry no other path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_client::docker_config::normalise_host;
use reqwest::Url;

use super::RegistryError;

/// The registry directory that applies to registries without their own.
pub const DEFAULT_HOST_DIR: &str = "_default";

/// What an endpoint may be used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capability {
    /// Fetch manifests by digest, and blobs.
    Pull,
    /// Resolve a tag to a manifest.
    Resolve,
    /// Push.
    Push,
}

/// One endpoint a registry is reached at: a mirror or its server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `host[:port]`.
    pub authority: String,
    /// `http` or `https`.
    pub plain_http: bool,
    pub skip_verify: bool,
    /// PEM files of certificate authorities this endpoint's TLS is verified
    /// against (besides the system's).
    pub ca: Vec<PathBuf>,
    pub pull: bool,
    pub resolve: bool,
    pub push: bool,
}

impl Endpoint {
    pub fn can(&self, need: Capability) -> bool {
        match need {
            Capability::Pull => self.pull,
            Capability::Resolve => self.resolve,
            Capability::Push => self.push,
        }
    }
}

/// The endpoints of one registry, in the order they are tried.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostsConfig {
    /// The mirrors, then the `server` when the file names one.
    pub endpoints: Vec<Endpoint>,
    /// Whether the last endpoint is a `server` line; without one, the
    /// registry itself is tried last.
    pub has_server: bool,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct HostsFile {
    server: Option<String>,
    #[serde(default)]
    host: toml::Table,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct HostEntry {
    capabilities: Option<Vec<String>>,
    #[serde(default)]
    skip_verify: bool,
    ca: Option<StringOrList>,
    #[serde(default)]
    override_path: bool,
    /// Extra request headers: accepted, not sent (yet).
    #[serde(default)]
    header: toml::Table,
    /// Client certificates: refused below, as they are not supported.
    client: Option<toml::Value>,
}

impl HostEntry {
    /// The `server` line: every capability, verified TLS.
    fn server() -> HostEntry {
        HostEntry {
            capabilities: None,
            skip_verify: false,
            ca: None,
            override_path: false,
            header: toml::Table::new(),
            client: None,
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum StringOrList {
    One(String),
    Many(Vec<String>),
}

/// Reads every `<dir>/<registry>/hosts.toml`, keyed by the registry as
/// references name it (`docker.io`, `registry.k8s.io`, `_default`). A
/// missing directory is no configuration; a directory without hosts.toml
/// is skipped.
pub fn load_dir(dir: &Path) -> Result<BTreeMap<String, HostsConfig>, RegistryError> {
    let mut out = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(source) => {
            return Err(RegistryError::ReadConfig {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    for entry in entries {
        let entry = entry.map_err(|source| RegistryError::ReadConfig {
            path: dir.to_path_buf(),
            source,
        })?;
        let file = entry.path().join("hosts.toml");
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            // A subdirectory that is a file, or another reason.
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => continue,
            Err(source) => return Err(RegistryError::ReadConfig { path: file, source }),
        };
        let name = entry.file_name().to_string_lossy().into_owned();
        let registry = if name == DEFAULT_HOST_DIR {
            name
        } else {
            normalise_host(&name)
        };
        let config = parse(&registry, &text).map_err(|reason| RegistryError::InvalidConfig {
            path: file.clone(),
            reason,
        })?;
        out.insert(registry, config);
    }
    Ok(out)
}

/// Parses one hosts.toml (of `registry`, named in messages).
pub fn parse(registry: &str, text: &str) -> Result<HostsConfig, String> {
    let file: HostsFile =
        toml::from_str(text).map_err(|e| format!("{registry}: {}", e.message()))?;
    let mut endpoints = Vec::new();
    for (url, value) in file.host {
        let entry: HostEntry = value
            .try_into()
            .map_err(|e: toml::de::Error| format!("host {url:?}: {}", e.message()))?;
        endpoints.push(endpoint(&url, entry)?);
    }
    // Without a server line the registry itself is the last endpoint,
    // which the client falls back to on its own.
    let server = file
        .server
        .map(|url| endpoint(&url, HostEntry::server()))
        .transpose()?;
    let has_server = server.is_some();
    endpoints.extend(server);
    Ok(HostsConfig {
        endpoints,
        has_server,
    })
}

fn endpoint(url: &str, entry: HostEntry) -> Result<Endpoint, String> {
    let parsed = Url::parse(url).map_err(|e| format!("host {url:?} is not a URL: {e}"))?;
    let plain_http = match parsed.scheme() {
        "http" => true,
        "https" => false,
        other => {
            return Err(format!(
                "host {url:?}: scheme {other:?} is neither http nor https"
            ))
        }
    };
    let path = parsed.path().trim_end_matches('/');
    if !(path.is_empty() || path == "/v2") || entry.override_path {
        return Err(format!(
            "host {url:?}: path prefixes (and override_path) are not supported"
        ));
    }
    if entry.client.is_some() {
        return Err(format!(
            "host {url:?}: client certificates are not supported"
        ));
    }
    let _ = entry.header;
    let authority = match (parsed.host_str(), parsed.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        (None, _) => return Err(format!("host {url:?} names no host")),
    };
    let capabilities = entry
        .capabilities
        .unwrap_or_else(|| vec!["pull".into(), "resolve".into(), "push".into()]);
    let mut e = Endpoint {
        authority,
        plain_http,
        skip_verify: entry.skip_verify,
        ca: match entry.ca {
            None => Vec::new(),
            Some(StringOrList::One(p)) => vec![PathBuf::from(p)],
            Some(StringOrList::Many(ps)) => ps.into_iter().map(PathBuf::from).collect(),
        },
        pull: false,
        resolve: false,
        push: false,
    };
    for c in capabilities {
        match c.as_str() {
            "pull" => e.pull = true,
            "resolve" => e.resolve = true,
            "push" => e.push = true,
            other => {
                return Err(format!(
                    "host {url:?}: unknown capability {other:?} (want pull, resolve or push)"
                ))
            }
        }
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_in_file_order_then_the_server() {
        let text = r#"
server = "https://registry.k8s.io"
[host."http://127.0.0.1:5000"]
  capabilities = ["pull", "resolve"]
[host."https://mirror.example:8443/v2"]
  skip_verify = true
  ca = ["/a.pem", "/b.pem"]
"#;
        let c = parse("registry.k8s.io", text).unwrap();
        let names: Vec<_> = c.endpoints.iter().map(|e| e.authority.as_str()).collect();
        assert_eq!(
            names,
            ["127.0.0.1:5000", "mirror.example:8443", "registry.k8s.io"]
        );
        assert!(c.endpoints[0].plain_http && !c.endpoints[0].push);
        assert!(c.endpoints[0].can(Capability::Resolve));
        assert!(c.endpoints[1].skip_verify && c.endpoints[1].push);
        assert_eq!(c.endpoints[1].ca.len(), 2);
        assert!(!c.endpoints[2].plain_http && c.endpoints[2].push);
        assert!(c.has_server);
        let mirrors_only = parse("r.io", "[host.\"http://m\"]\n").unwrap();
        assert!(!mirrors_only.has_server);
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let err = |text: &str| parse("r.io", text).unwrap_err();
        assert!(err("[host.\"ftp://x\"]").contains("neither http nor https"));
        assert!(err("[host.\"http://x/prefix\"]").contains("path prefixes"));
        assert!(err("[host.\"http://x\"]\ncapabilities = [\"fly\"]").contains("\"fly\""));
        assert!(err("sever = \"https://x\"").contains("sever"));
        assert!(err("[host.\"http://x\"]\nclient = \"/c.pem\"").contains("client certificates"));
    }

    #[test]
    fn a_directory_per_registry() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [
            ("docker.io", "[host.\"http://127.0.0.1:5000\"]\n"),
            ("_default", "[host.\"http://127.0.0.1:5001\"]\n"),
        ] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
            std::fs::write(dir.path().join(name).join("hosts.toml"), text).unwrap();
        }
        std::fs::create_dir(dir.path().join("empty")).unwrap();
        let all = load_dir(dir.path()).unwrap();
        assert_eq!(all.keys().collect::<Vec<_>>(), ["_default", "docker.io"]);
        assert!(load_dir(&dir.path().join("missing")).unwrap().is_empty());
    }
}
