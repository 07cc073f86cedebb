//! Contexts: named daemon endpoints, stored as the docker CLI stores them
//! (`$DOCKER_CONFIG/contexts/meta/<sha256 of name>/meta.json`, TLS files
//! under `contexts/tls/<sha256 of name>/docker/`, the current one in
//! config.json's `currentContext`), so `docker context` and `berth context`
//! share them; which daemon a command speaks to is decided here, with
//! docker's precedence: `--context`, `-H`, `DOCKER_HOST`, `DOCKER_CONTEXT`,
//! `currentContext`, then the default context.

use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::client::DEFAULT_SOCKET;
use crate::transport::{client_config, Endpoint, TlsFiles};
use crate::StatusError;

/// The default context's name; it lives in no store.
pub const DEFAULT: &str = "default";
const DEFAULT_DESCRIPTION: &str = "Current DOCKER_HOST based configuration";

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("context {0:?} does not exist")]
    NotFound(String),
    #[error("context {0:?} already exists")]
    Exists(String),
    #[error("{0:?} is a reserved context name")]
    Reserved(String),
    #[error("context name {0:?} is invalid, names are validated against regexp \"^[a-zA-Z0-9][a-zA-Z0-9_.+-]+$\"")]
    BadName(String),
    #[error("Conflicting options: either specify --host or --context, not both")]
    HostAndContext,
    #[error("invalid --docker value {value:?}: {reason}")]
    BadEndpoint { value: String, reason: String },
    #[error("no docker config directory: neither DOCKER_CONFIG nor HOME is set")]
    NoConfigDir,
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("context {name:?}: bad meta.json {path}: {source}")]
    BadMeta {
        name: String,
        path: PathBuf,
        source: serde_json::Error,
    },
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ContextError {
    let path = path.to_path_buf();
    move |source| ContextError::Io {
        action,
        path,
        source,
    }
}

/// The global options that choose a daemon.
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    pub host: Option<String>,
    pub context: Option<String>,
    pub tls: Option<bool>,
    pub tlsverify: Option<bool>,
    pub tlscacert: Option<PathBuf>,
    pub tlscert: Option<PathBuf>,
    pub tlskey: Option<PathBuf>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// `$DOCKER_CONFIG`, else `~/.docker`.
pub fn config_dir() -> Result<PathBuf, ContextError> {
    berth_client::docker_config::default_path()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .ok_or(ContextError::NoConfigDir)
}

/// A context's directory name in the store: the sha256 of its name.
pub fn context_id(name: &str) -> String {
    hex::encode(Sha256::digest(name.as_bytes()))
}

fn meta_dir(name: &str) -> Result<PathBuf, ContextError> {
    Ok(config_dir()?
        .join("contexts")
        .join("meta")
        .join(context_id(name)))
}

fn tls_dir(name: &str) -> Result<PathBuf, ContextError> {
    Ok(config_dir()?
        .join("contexts")
        .join("tls")
        .join(context_id(name)))
}

/// The TLS files a context keeps for its docker endpoint.
const TLS_FILES: [&str; 3] = ["ca.pem", "cert.pem", "key.pem"];

/// A stored context.
#[derive(Clone, Debug)]
pub struct Context {
    pub name: String,
    /// meta.json as docker wrote it (fields berth does not know are kept).
    pub meta: Value,
}

impl Context {
    pub fn description(&self) -> String {
        self.meta["Metadata"]["Description"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn host(&self) -> String {
        self.meta["Endpoints"]["docker"]["Host"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn skip_tls_verify(&self) -> bool {
        self.meta["Endpoints"]["docker"]["SkipTLSVerify"]
            .as_bool()
            .unwrap_or(false)
    }

    /// The TLS files stored for the docker endpoint.
    fn tls_files(&self) -> Result<Vec<PathBuf>, ContextError> {
        let dir = tls_dir(&self.name)?.join("docker");
        Ok(TLS_FILES
            .iter()
            .map(|f| dir.join(f))
            .filter(|p| p.exists())
            .collect())
    }
}

/// Reads a stored context.
pub fn load(name: &str) -> Result<Context, ContextError> {
    let path = meta_dir(name)?.join("meta.json");
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ContextError::NotFound(name.to_string()))
        }
        Err(e) => return Err(io_error("read", &path)(e)),
    };
    let meta: Value = serde_json::from_slice(&text).map_err(|source| ContextError::BadMeta {
        name: name.to_string(),
        path: path.clone(),
        source,
    })?;
    Ok(Context {
        name: name.to_string(),
        meta,
    })
}

/// Every stored context, by name.
pub fn list() -> Result<Vec<Context>, ContextError> {
    let dir = config_dir()?.join("contexts").join("meta");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error("read", &dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path().join("meta.json");
        let Ok(text) = std::fs::read(&path) else {
            continue;
        };
        let Ok(meta) = serde_json::from_slice::<Value>(&text) else {
            continue;
        };
        if let Some(name) = meta["Name"].as_str() {
            out.push(Context {
                name: name.to_string(),
                meta,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The current context of config.json (`DOCKER_CONTEXT` not included).
fn configured_current() -> Option<String> {
    let path = crate::auth::config_path().ok()?;
    let config = crate::auth::load_config(&path).ok()?;
    config["currentContext"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// The host the default context stands for: `-H`, `BERTH_HOST`,
/// `DOCKER_HOST`, then berthd's socket.
pub fn default_host(flag: Option<&str>) -> String {
    flag.map(str::to_string)
        .or_else(|| env("BERTH_HOST"))
        .or_else(|| env("DOCKER_HOST"))
        .unwrap_or_else(|| format!("unix://{DEFAULT_SOCKET}"))
}

/// The name of the context a command uses, by docker's precedence.
pub fn current_name(opts: &ConnectOptions) -> Result<String, ContextError> {
    if let Some(name) = opts.context.as_deref().filter(|s| !s.is_empty()) {
        if opts.host.is_some() {
            return Err(ContextError::HostAndContext);
        }
        return Ok(name.to_string());
    }
    if opts.host.is_some() || env("BERTH_HOST").is_some() || env("DOCKER_HOST").is_some() {
        return Ok(DEFAULT.to_string());
    }
    if let Some(name) = env("DOCKER_CONTEXT") {
        return Ok(name);
    }
    Ok(configured_current().unwrap_or_else(|| DEFAULT.to_string()))
}

/// The TLS of the default context, from the flags and the environment as
/// docker reads them: `--tlsverify` (or `DOCKER_TLS_VERIFY`) verifies the
/// server against the CA and implies `--tls`; `--tls` (or `DOCKER_TLS`)
/// alone takes any server certificate. Files default to `ca.pem`,
/// `cert.pem`, `key.pem` in `DOCKER_CERT_PATH`, else the config directory;
/// a default client certificate that does not exist is not sent.
fn default_tls(opts: &ConnectOptions) -> Result<Option<TlsFiles>, anyhow::Error> {
    let verify = opts
        .tlsverify
        .unwrap_or_else(|| env("DOCKER_TLS_VERIFY").is_some());
    let tls = opts.tlsverify.is_some()
        || verify
        || opts.tls.unwrap_or_else(|| env("DOCKER_TLS").is_some());
    if !tls {
        return Ok(None);
    }
    let dir = match env("DOCKER_CERT_PATH") {
        Some(d) => PathBuf::from(d),
        None => config_dir()?,
    };
    let given_or_default = |given: &Option<PathBuf>, file: &str| match given {
        Some(p) => Some(p.clone()),
        None => Some(dir.join(file)).filter(|p| p.exists()),
    };
    Ok(Some(TlsFiles {
        ca: if verify {
            given_or_default(&opts.tlscacert, "ca.pem")
        } else {
            None
        },
        cert: given_or_default(&opts.tlscert, "cert.pem"),
        key: given_or_default(&opts.tlskey, "key.pem"),
        skip_verify: !verify,
    }))
}

/// The context the command runs in, once [`resolve_endpoint`] chose it.
static IN_USE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The name of the context in use ("default" before one is chosen).
pub fn in_use() -> String {
    IN_USE.get().cloned().unwrap_or_else(|| DEFAULT.to_string())
}

/// The daemon endpoint the options and the environment choose.
pub fn resolve_endpoint(opts: &ConnectOptions) -> anyhow::Result<Endpoint> {
    let name = current_name(opts).map_err(|e| StatusError::new(1, e.to_string()))?;
    let _ = IN_USE.set(name.clone());
    if name == DEFAULT {
        let host = default_host(opts.host.as_deref());
        let tls = match default_tls(opts)? {
            Some(files) if host.starts_with("tcp://") => Some(client_config(&files)?),
            _ => None,
        };
        return Ok(Endpoint::parse(&host, tls)?);
    }
    let ctx = load(&name).map_err(|e| StatusError::new(1, e.to_string()))?;
    context_endpoint(&ctx)
}

fn context_endpoint(ctx: &Context) -> anyhow::Result<Endpoint> {
    let files = ctx.tls_files()?;
    let tls = if files.is_empty() && !ctx.skip_tls_verify() {
        None
    } else {
        let dir = tls_dir(&ctx.name)?.join("docker");
        let pick = |f: &str| Some(dir.join(f)).filter(|p| p.exists());
        Some(client_config(&TlsFiles {
            ca: pick("ca.pem"),
            cert: pick("cert.pem"),
            key: pick("key.pem"),
            skip_verify: ctx.skip_tls_verify(),
        })?)
    };
    Ok(Endpoint::parse(&ctx.host(), tls)?)
}

mod commands;
pub use commands::{run, ContextCommand};
