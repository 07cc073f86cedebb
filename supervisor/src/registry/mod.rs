//! Registry access over the OCI distribution spec.
//!
//! [`Client`] speaks the distribution API (`/v2/<name>/manifests/<ref>`,
//! `/v2/<name>/blobs/<digest>`, blob uploads) to one or many registries:
//!
//! - **Scheme.** HTTPS with verified certificates. Loopback hosts and hosts
//!   listed as insecure get HTTPS without certificate verification first
//!   and plain HTTP when the TLS connection fails; the choice is remembered
//!   per host. Other hosts never get plain HTTP, not even by redirect.
//! - **Auth.** Requests go out anonymously (or with a token or Basic
//!   credentials this client already knows the host wants). A 401 is
//!   answered from its `WWW-Authenticate` challenge: `Basic` resends with the
//!   credentials, `Bearer` fetches a token from the realm (Basic credentials,
//!   or the OAuth2 refresh-token grant for identity tokens) and caches it per
//!   host, scope and credentials until it expires. A second 401 is
//!   [`RegistryError::Unauthorized`].
//! - **Redirects** are followed (blob GETs go to storage); the
//!   `Authorization` header never follows a redirect to another host.
//! - **Timeouts.** Connecting is limited; a response or a body that stops
//!   arriving for [`ClientOptions::stall_timeout`] fails; large bodies have
//!   no overall limit.
//!
//! - **Mirrors.** A hosts.toml directory (`hosts`) sends a registry's
//!   requests to the first endpoint with the capability they need (resolve
//!   a tag; pull by digest; push), over the scheme it names, with the CA
//!   files it lists.
//!
//! Here: the client, its errors, and answering a 401 (`send`); `transport`
//! sends one request (scheme, TLS client, redirects, stall timeout, error
//! bodies); `auth` parses challenges and caches tokens; `pull` and `push`
//! are the distribution API's calls.

mod auth;
mod config;
pub mod hosts;
mod pull;
mod push;
mod transport;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use reqwest::header::{HeaderMap, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode, Url};
use tracing::debug;

pub use auth::{parse_challenges, parse_token_response, Challenge, Token};
pub use config::{is_loopback, Credentials, RegistryConfig};
pub use hosts::Capability;

use crate::reference::{Reference, ReferenceError};
use auth::{credentials_key, TokenCache, TokenKey};
use transport::{authority, shown, url_allows_insecure, InsecureRedirect, Scheme};

/// Largest manifest or index accepted.
pub const MANIFEST_LIMIT: u64 = 4 << 20;

/// Largest error or token response body read.
const SMALL_BODY_LIMIT: u64 = 1 << 20;

/// Redirects followed per request.
const MAX_REDIRECTS: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("invalid digest {0:?}: want sha256:<64 lowercase hex digits>")]
    InvalidDigest(String),
    #[error("{what} {reference} not found")]
    NotFound {
        what: &'static str,
        reference: String,
    },
    #[error("{}", unauthorized_message(.registry, .repository, *.had_credentials))]
    Unauthorized {
        registry: String,
        repository: String,
        /// Whether credentials were offered (and refused).
        had_credentials: bool,
    },
    #[error("content from the registry has digest {actual}, expected {expected}")]
    DigestMismatch { expected: String, actual: String },
    #[error("{what} from {url} is larger than the {limit}-byte limit")]
    TooLarge {
        what: &'static str,
        url: String,
        limit: u64,
    },
    #[error("{url}: registry answered {status}: {message}")]
    Status {
        status: u16,
        url: String,
        message: String,
    },
    #[error("{url}: {reason}")]
    InvalidResponse { url: String, reason: String },
    #[error("request to {url} failed: {}", error_chain(.source))]
    Transport { url: String, source: reqwest::Error },
    #[error("{url}: nothing received for {seconds} s")]
    Stalled { url: String, seconds: u64 },
    #[error(
        "refusing plain HTTP to {host}: only loopback hosts and insecure registries may use it"
    )]
    InsecureRefused { host: String },
    #[error("read registry config {path}: {source}")]
    ReadConfig {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid registry config {path}: {reason}")]
    InvalidConfig { path: PathBuf, reason: String },
    #[error("blob file for {digest} has {actual} bytes, the descriptor says {expected}")]
    BlobFileSize {
        digest: String,
        expected: u64,
        actual: u64,
    },
    #[error("read blob file for {digest}: {source}")]
    ReadBlobFile {
        digest: String,
        source: std::io::Error,
    },
    #[error("build HTTP client: {0}")]
    BuildClient(reqwest::Error),
}

fn unauthorized_message(registry: &str, repository: &str, had_credentials: bool) -> String {
    if had_credentials {
        format!("registry {registry} refused the credentials for {repository}")
    } else {
        format!("registry {registry} requires credentials for {repository} (none were given)")
    }
}

/// A reqwest error with its causes: reqwest's own message is only
/// "error sending request", the reason is further down.
fn error_chain(e: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        let text = err.to_string();
        if !parts.iter().any(|p: &String| p.contains(&text)) {
            parts.push(text);
        }
        source = err.source();
    }
    if parts.is_empty() {
        // reqwest's own message ends with " (<url>)", which the variant
        // already names.
        let text = e.to_string();
        match e.url() {
            Some(url) => text.replace(&format!(" ({url})"), ""),
            None => text,
        }
    } else {
        parts.join(": ")
    }
}

/// Tunables of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Limit on establishing a connection (TCP and TLS).
    pub connect_timeout: Duration,
    /// Longest wait for a response, or for the next piece of a body, before
    /// giving up. Uploads are not limited while their body is being sent.
    pub stall_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            connect_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(120),
        }
    }
}

/// A body arriving from a registry.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, RegistryError>> + Send>>;

/// A blob being fetched.
pub struct BlobStream {
    /// Where in the blob `body` starts: the requested offset, or 0 when the
    /// registry sent the whole blob.
    pub offset: u64,
    /// The blob's total size, when the registry said.
    pub total: Option<u64>,
    /// The bytes from `offset` on. A connection lost before the end is an
    /// error item, never a silent end.
    pub body: ByteStream,
}

impl fmt::Debug for BlobStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobStream")
            .field("offset", &self.offset)
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

impl Stream for BlobStream {
    type Item = Result<Bytes, RegistryError>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.body.as_mut().poll_next(cx)
    }
}

/// A registry client; cheap to clone, clones share connections and tokens.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: RegistryConfig,
    options: ClientOptions,
    /// Verifies certificates.
    strict: reqwest::Client,
    /// Accepts any certificate: for loopback and insecure hosts only.
    lenient: reqwest::Client,
    /// Verifies against the system's and the endpoint's own CA files: per
    /// hosts.toml endpoint (`host[:port]`) that lists some.
    with_ca: HashMap<String, reqwest::Client>,
    /// The scheme that worked, per loopback or insecure host.
    schemes: Mutex<HashMap<String, Scheme>>,
    tokens: TokenCache,
    /// Hosts that asked for Basic auth: later requests send it at once.
    basic_hosts: Mutex<HashSet<String>>,
}

/// What a request is for: its reference, the host that serves it, the token
/// scope it needs, and the credentials to offer.
struct Target<'a> {
    reference: &'a Reference,
    host: String,
    /// The scheme a hosts.toml endpoint names; `None`: chosen per host.
    scheme: Option<Scheme>,
    scope: String,
    creds: Option<Credentials>,
}

/// Where a request goes: a path on the registry, or a URL the registry gave.
enum Endpoint {
    Path(String),
    Url(Url),
}

#[derive(Clone)]
enum Auth {
    Basic(String, String),
    Bearer(String),
}

impl Client {
    pub fn new(config: RegistryConfig) -> Result<Client, RegistryError> {
        Client::with_options(config, ClientOptions::default())
    }

    pub fn with_options(
        config: RegistryConfig,
        options: ClientOptions,
    ) -> Result<Client, RegistryError> {
        let build = |accept_invalid: bool, roots: &[reqwest::Certificate]| {
            let policy_config = config.clone();
            let policy = reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    let hops = attempt.previous().len();
                    return attempt.error(format!("stopped after {hops} redirects"));
                }
                let url = attempt.url();
                let allowed = url_allows_insecure(&policy_config, url);
                if url.scheme() == "http" && !allowed {
                    let host = authority(url);
                    return attempt.error(InsecureRedirect(host));
                }
                if accept_invalid && !allowed {
                    // Certificates of this host must be verified: hand the
                    // redirect back, for the verifying client to follow.
                    return attempt.stop();
                }
                attempt.follow()
            });
            let mut builder = reqwest::Client::builder();
            for root in roots {
                builder = builder.add_root_certificate(root.clone());
            }
            builder
                .connect_timeout(options.connect_timeout)
                .redirect(policy)
                .danger_accept_invalid_certs(accept_invalid)
                .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(RegistryError::BuildClient)
        };
        let mut with_ca = HashMap::new();
        for endpoint in config.endpoints_with_ca() {
            let mut roots = Vec::new();
            for path in &endpoint.ca {
                let pem = std::fs::read(path).map_err(|source| RegistryError::ReadConfig {
                    path: path.clone(),
                    source,
                })?;
                roots.push(reqwest::Certificate::from_pem(&pem).map_err(|e| {
                    RegistryError::InvalidConfig {
                        path: path.clone(),
                        reason: format!("not a PEM certificate: {}", error_chain(&e)),
                    }
                })?);
            }
            with_ca.insert(endpoint.authority.clone(), build(false, &roots)?);
        }
        Ok(Client {
            inner: Arc::new(Inner {
                strict: build(false, &[])?,
                lenient: build(true, &[])?,
                with_ca,
                config,
                options,
                schemes: Mutex::new(HashMap::new()),
                tokens: TokenCache::default(),
                basic_hosts: Mutex::new(HashSet::new()),
            }),
        })
    }

    /// The configuration this client was made with.
    pub fn config(&self) -> &RegistryConfig {
        &self.inner.config
    }

    /// Where a request for `r` needing `need` goes first.
    fn target<'a>(
        &self,
        r: &'a Reference,
        need: Capability,
        creds: Option<&Credentials>,
    ) -> Result<Target<'a>, RegistryError> {
        let mut all = self.targets(r, need, creds)?;
        // `endpoints` never answers an empty list.
        Ok(all.swap_remove(0))
    }

    /// Every place a request for `r` needing `need` may go, in the order
    /// to try them (hosts.toml endpoints, then the registry itself).
    fn targets<'a>(
        &self,
        r: &'a Reference,
        need: Capability,
        creds: Option<&Credentials>,
    ) -> Result<Vec<Target<'a>>, RegistryError> {
        r.validate()?;
        let actions = if need == Capability::Push {
            "pull,push"
        } else {
            "pull"
        };
        let mut endpoints = self.inner.config.endpoints(&r.registry, need);
        if endpoints.is_empty() {
            endpoints.push(None);
        }
        Ok(endpoints
            .into_iter()
            .map(|endpoint| Target {
                reference: r,
                host: endpoint.map_or_else(|| r.api_host().to_string(), |e| e.authority.clone()),
                scheme: endpoint.map(|e| {
                    if e.plain_http {
                        Scheme::Http
                    } else {
                        Scheme::Https
                    }
                }),
                scope: format!("repository:{}:{actions}", r.repository),
                // Configured credentials are the serving host's own: a
                // mirror never gets the upstream registry's.
                creds: creds.cloned().or_else(|| {
                    let host = endpoint.map_or(r.registry.as_str(), |e| e.authority.as_str());
                    self.inner.config.credentials(host)
                }),
            })
            .collect())
    }

    /// Logs a failure on one host before the next is tried.
    fn next_host(&self, t: &Target<'_>, e: &RegistryError) {
        debug!(registry = %t.reference.registry, host = %t.host, error = %e, "trying the next host");
    }

    fn token_key(&self, t: &Target<'_>) -> TokenKey {
        TokenKey {
            host: t.host.clone(),
            scope: t.scope.clone(),
            credentials: credentials_key(t.creds.as_ref()),
        }
    }

    /// What to send before any challenge: a cached token, or Basic
    /// credentials to a host known to want them.
    fn known_auth(&self, t: &Target<'_>) -> Option<Auth> {
        if let Some(token) = self.inner.tokens.get(&self.token_key(t)) {
            return Some(Auth::Bearer(token));
        }
        let basic = self
            .inner
            .basic_hosts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&t.host);
        match (&t.creds, basic) {
            (Some(Credentials::Basic { username, password }), true) => {
                Some(Auth::Basic(username.clone(), password.clone()))
            }
            _ => None,
        }
    }

    fn unauthorized(&self, t: &Target<'_>, had_credentials: bool) -> RegistryError {
        RegistryError::Unauthorized {
            registry: t.reference.registry.clone(),
            repository: t.reference.repository.clone(),
            had_credentials,
        }
    }

    /// Sends a request made by `build` (called again for each attempt),
    /// answering one authentication challenge. `timed` limits the wait for
    /// the response to the stall timeout (not for uploads, whose response
    /// comes after the whole body).
    async fn send(
        &self,
        t: &Target<'_>,
        endpoint: &Endpoint,
        build: &(dyn Fn(&reqwest::Client, Url) -> RequestBuilder + Send + Sync),
        timed: bool,
    ) -> Result<Response, RegistryError> {
        let mut auth = self.known_auth(t);
        let mut answered = false;
        loop {
            let response = self
                .dispatch(t, endpoint, build, auth.as_ref(), timed)
                .await?;
            if response.status() != StatusCode::UNAUTHORIZED {
                return Ok(response);
            }
            let had_credentials = t.creds.is_some();
            if answered {
                return Err(self.unauthorized(t, had_credentials));
            }
            // A cached token may have expired or been revoked: drop it.
            if matches!(auth, Some(Auth::Bearer(_))) {
                self.inner.tokens.remove(&self.token_key(t));
            }
            auth = Some(self.answer(t, response.headers()).await?);
            answered = true;
        }
    }

    /// Works out how to authenticate from a 401's challenges.
    async fn answer(&self, t: &Target<'_>, headers: &HeaderMap) -> Result<Auth, RegistryError> {
        let challenges: Vec<Challenge> = headers
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(parse_challenges)
            .collect();
        debug!(host = %t.host, ?challenges, "registry asks for authentication");
        if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
            let token = self.fetch_token(t, bearer).await?;
            self.inner.tokens.insert(self.token_key(t), &token);
            return Ok(Auth::Bearer(token.token));
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            return match &t.creds {
                Some(Credentials::Basic { username, password }) => {
                    self.inner
                        .basic_hosts
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(t.host.clone());
                    Ok(Auth::Basic(username.clone(), password.clone()))
                }
                // An identity token is only good at a token server.
                Some(Credentials::IdentityToken(_)) => Err(self.unauthorized(t, true)),
                None => Err(self.unauthorized(t, false)),
            };
        }
        Err(self.unauthorized(t, t.creds.is_some()))
    }

    /// Gets a token from a Bearer challenge's realm.
    async fn fetch_token(
        &self,
        t: &Target<'_>,
        challenge: &Challenge,
    ) -> Result<Token, RegistryError> {
        let realm = challenge.param("realm").unwrap_or_default();
        let mut url = Url::parse(realm).map_err(|e| RegistryError::InvalidResponse {
            url: t.host.clone(),
            reason: format!("bearer challenge has an unusable realm {realm:?}: {e}"),
        })?;
        match url.scheme() {
            "https" => {}
            "http" if url_allows_insecure(&self.inner.config, &url) => {}
            "http" => {
                return Err(RegistryError::InsecureRefused {
                    host: authority(&url),
                })
            }
            other => {
                return Err(RegistryError::InvalidResponse {
                    url: realm.to_string(),
                    reason: format!("bearer realm has scheme {other:?}"),
                })
            }
        }
        let service = challenge.param("service");
        // A login check asks for no scope.
        let mut scopes: Vec<String> = Some(t.scope.clone())
            .filter(|s| !s.is_empty())
            .into_iter()
            .collect();
        if let Some(extra) = challenge.param("scope").filter(|s| *s != t.scope) {
            scopes.push(extra.to_string());
        }
        let http = self.http_for(&url);
        let request = match &t.creds {
            Some(Credentials::IdentityToken(refresh)) => {
                let mut form: Vec<(&str, &str)> = vec![
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh),
                    ("client_id", "berth"),
                ];
                if let Some(service) = service {
                    form.push(("service", service));
                }
                let joined = scopes.join(" ");
                form.push(("scope", &joined));
                http.post(url.clone()).form(&form)
            }
            creds => {
                {
                    let mut query = url.query_pairs_mut();
                    if let Some(service) = service {
                        query.append_pair("service", service);
                    }
                    for scope in &scopes {
                        query.append_pair("scope", scope);
                    }
                }
                let request = http.get(url.clone());
                match creds {
                    Some(Credentials::Basic { username, password }) => {
                        request.basic_auth(username, Some(password))
                    }
                    _ => request,
                }
            }
        };
        debug!(realm = %realm, scopes = ?scopes, "fetching registry token");
        let response = self.timed(&url, request.send()).await?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(self.unauthorized(t, t.creds.is_some()));
        }
        if !status.is_success() {
            return Err(self.status_error(response).await);
        }
        let body = self
            .read_body(response, SMALL_BODY_LIMIT, "token response")
            .await?;
        parse_token_response(&body).map_err(|reason| RegistryError::InvalidResponse {
            url: realm.to_string(),
            reason,
        })
    }
}

/// `sha256:<hex>` of some bytes.
fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::{Digest as _, Sha256};
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn check_digest(digest: &str) -> Result<(), RegistryError> {
    if crate::reference::is_valid_digest(digest) {
        Ok(())
    } else {
        Err(RegistryError::InvalidDigest(digest.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unauthorized_says_whether_credentials_were_refused() {
        let refused = RegistryError::Unauthorized {
            registry: "r.io".into(),
            repository: "a/b".into(),
            had_credentials: true,
        };
        assert_eq!(
            refused.to_string(),
            "registry r.io refused the credentials for a/b"
        );
        let missing = RegistryError::Unauthorized {
            registry: "r.io".into(),
            repository: "a/b".into(),
            had_credentials: false,
        };
        assert!(missing.to_string().contains("requires credentials"));
    }
}
