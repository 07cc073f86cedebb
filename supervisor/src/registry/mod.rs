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

mod auth;
mod config;
mod pull;
mod push;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use reqwest::header::{HeaderMap, LOCATION, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode, Url};
use tracing::debug;

pub use auth::{parse_challenges, parse_token_response, Challenge, Token};
pub use config::{is_loopback, Credentials, RegistryConfig};

use crate::reference::{Reference, ReferenceError};
use auth::{credentials_key, TokenCache, TokenKey};

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Https,
    Http,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Https => "https",
            Scheme::Http => "http",
        }
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
    /// The scheme that worked, per loopback or insecure host.
    schemes: Mutex<HashMap<String, Scheme>>,
    tokens: TokenCache,
    /// Hosts that asked for Basic auth: later requests send it at once.
    basic_hosts: Mutex<HashSet<String>>,
}

/// The error a redirect to plain HTTP on a secure host fails with.
#[derive(Debug)]
struct InsecureRedirect(String);

impl fmt::Display for InsecureRedirect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "redirect to plain HTTP on {}", self.0)
    }
}

impl std::error::Error for InsecureRedirect {}

/// `host[:port]` of a URL, as references spell registries (IPv6 in brackets,
/// the scheme's default port left out).
fn authority(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// A URL for messages and logs: without its query, which may carry upload
/// state or a storage signature.
fn shown(url: &Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.to_string()
}

/// Whether a URL points at a registry host given as `host[:port]`.
fn same_host(url: &Url, host: &str) -> bool {
    match Url::parse(&format!("{}://{host}/", url.scheme())) {
        Ok(other) => {
            url.host_str() == other.host_str()
                && url.port_or_known_default() == other.port_or_known_default()
        }
        Err(_) => false,
    }
}

/// Whether plain HTTP (or unverified TLS) is allowed for a URL's host.
fn url_allows_insecure(config: &RegistryConfig, url: &Url) -> bool {
    let with_port = authority(url);
    let bare = url.host_str().unwrap_or_default();
    let with_default_port = match url.port_or_known_default() {
        Some(port) => format!("{bare}:{port}"),
        None => with_port.clone(),
    };
    config.allows_insecure(&with_port)
        || config.allows_insecure(bare)
        || config.allows_insecure(&with_default_port)
}

/// What a request is for: its reference, the host that serves it, the token
/// scope it needs, and the credentials to offer.
struct Target<'a> {
    reference: &'a Reference,
    host: String,
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
        let build = |accept_invalid: bool| {
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
            reqwest::Client::builder()
                .connect_timeout(options.connect_timeout)
                .redirect(policy)
                .danger_accept_invalid_certs(accept_invalid)
                .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(RegistryError::BuildClient)
        };
        Ok(Client {
            inner: Arc::new(Inner {
                strict: build(false)?,
                lenient: build(true)?,
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

    fn target<'a>(
        &self,
        r: &'a Reference,
        push: bool,
        creds: Option<&Credentials>,
    ) -> Result<Target<'a>, RegistryError> {
        r.validate()?;
        let actions = if push { "pull,push" } else { "pull" };
        Ok(Target {
            reference: r,
            host: r.api_host().to_string(),
            scope: format!("repository:{}:{actions}", r.repository),
            creds: creds
                .cloned()
                .or_else(|| self.inner.config.credentials(&r.registry)),
        })
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
        let mut scopes = vec![t.scope.clone()];
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

    fn http_for(&self, url: &Url) -> &reqwest::Client {
        if url_allows_insecure(&self.inner.config, url) {
            &self.inner.lenient
        } else {
            &self.inner.strict
        }
    }

    fn known_scheme(&self, host: &str) -> Option<Scheme> {
        self.inner
            .schemes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(host)
            .copied()
    }

    fn remember_scheme(&self, host: &str, scheme: Scheme) {
        self.inner
            .schemes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(host.to_string(), scheme);
    }

    /// Sends one request, choosing the scheme for registry paths.
    async fn dispatch(
        &self,
        t: &Target<'_>,
        endpoint: &Endpoint,
        build: &(dyn Fn(&reqwest::Client, Url) -> RequestBuilder + Send + Sync),
        auth: Option<&Auth>,
        timed: bool,
    ) -> Result<Response, RegistryError> {
        let path = match endpoint {
            Endpoint::Url(url) => {
                if url.scheme() != "https" && !url_allows_insecure(&self.inner.config, url) {
                    return Err(RegistryError::InsecureRefused {
                        host: authority(url),
                    });
                }
                return self
                    .execute(t, url.clone(), build, auth, timed)
                    .await
                    .map_err(|e| self.transport(url, e));
            }
            Endpoint::Path(path) => path,
        };
        let url_for = |scheme: Scheme| {
            let text = format!("{}://{}{path}", scheme.as_str(), t.host);
            Url::parse(&text).map_err(|e| RegistryError::InvalidResponse {
                url: text,
                reason: format!("not a URL: {e}"),
            })
        };
        let may_fall_back = self.inner.config.allows_insecure(&t.host);
        let scheme = if may_fall_back {
            self.known_scheme(&t.host)
        } else {
            Some(Scheme::Https)
        };
        if let Some(scheme) = scheme {
            let url = url_for(scheme)?;
            return self
                .execute(t, url.clone(), build, auth, timed)
                .await
                .map_err(|e| self.transport(&url, e));
        }
        let https = url_for(Scheme::Https)?;
        match self.execute(t, https.clone(), build, auth, timed).await {
            Ok(response) => {
                self.remember_scheme(&t.host, Scheme::Https);
                Ok(response)
            }
            Err(Failure::Reqwest(e)) if e.is_connect() => {
                debug!(host = %t.host, error = %error_chain(&e), "HTTPS failed, trying plain HTTP");
                let http = url_for(Scheme::Http)?;
                let response = self
                    .execute(t, http.clone(), build, auth, timed)
                    .await
                    .map_err(|e| self.transport(&http, e))?;
                self.remember_scheme(&t.host, Scheme::Http);
                Ok(response)
            }
            Err(e) => Err(self.transport(&https, e)),
        }
    }

    async fn execute(
        &self,
        t: &Target<'_>,
        url: Url,
        build: &(dyn Fn(&reqwest::Client, Url) -> RequestBuilder + Send + Sync),
        auth: Option<&Auth>,
        timed: bool,
    ) -> Result<Response, Failure> {
        let lenient = url_allows_insecure(&self.inner.config, &url);
        let http = self.http_for(&url);
        let mut builder = build(http, url.clone());
        // Credentials go to the registry's own host only.
        if same_host(&url, &t.host) {
            builder = match auth {
                Some(Auth::Basic(user, pass)) => builder.basic_auth(user, Some(pass)),
                Some(Auth::Bearer(token)) => builder.bearer_auth(token),
                None => builder,
            };
        }
        let response = self.execute_one(http, builder, timed).await?;
        if !lenient || !response.status().is_redirection() {
            return Ok(response);
        }
        // The unverifying client stops at redirects to hosts that must be
        // verified (see `with_options`); the verifying one takes over,
        // without credentials: it is another host.
        let next = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| response.url().join(v).ok());
        match next {
            Some(next) if next.scheme() == "https" => {
                debug!(url = %shown(&next), "following redirect with verified TLS");
                let strict = &self.inner.strict;
                self.execute_one(strict, build(strict, next), timed).await
            }
            _ => Ok(response),
        }
    }

    async fn execute_one(
        &self,
        http: &reqwest::Client,
        builder: RequestBuilder,
        timed: bool,
    ) -> Result<Response, Failure> {
        let request = builder.build().map_err(Failure::Reqwest)?;
        debug!(method = %request.method(), url = %shown(request.url()), "registry request");
        let response = if timed {
            let stall = self.inner.options.stall_timeout;
            tokio::time::timeout(stall, http.execute(request))
                .await
                .map_err(|_| Failure::Stalled)?
        } else {
            http.execute(request).await
        }
        .map_err(Failure::Reqwest)?;
        debug!(
            status = response.status().as_u16(),
            url = %shown(response.url()),
            "registry response"
        );
        Ok(response)
    }

    fn transport(&self, url: &Url, failure: Failure) -> RegistryError {
        match failure {
            Failure::Stalled => RegistryError::Stalled {
                url: shown(url),
                seconds: self.inner.options.stall_timeout.as_secs(),
            },
            Failure::Reqwest(source) => {
                let mut cause = std::error::Error::source(&source);
                while let Some(err) = cause {
                    if let Some(InsecureRedirect(host)) = err.downcast_ref::<InsecureRedirect>() {
                        return RegistryError::InsecureRefused { host: host.clone() };
                    }
                    cause = err.source();
                }
                RegistryError::Transport {
                    url: shown(url),
                    source,
                }
            }
        }
    }

    /// Waits for a response no longer than the stall timeout.
    async fn timed(
        &self,
        url: &Url,
        fut: impl std::future::Future<Output = reqwest::Result<Response>>,
    ) -> Result<Response, RegistryError> {
        tokio::time::timeout(self.inner.options.stall_timeout, fut)
            .await
            .map_err(|_| Failure::Stalled)
            .and_then(|r| r.map_err(Failure::Reqwest))
            .map_err(|f| self.transport(url, f))
    }

    /// Reads a whole body of at most `limit` bytes.
    async fn read_body(
        &self,
        response: Response,
        limit: u64,
        what: &'static str,
    ) -> Result<Bytes, RegistryError> {
        let url = shown(response.url());
        let too_large = || RegistryError::TooLarge {
            what,
            url: url.clone(),
            limit,
        };
        if response.content_length().is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let mut body = self.body_stream(response);
        let mut out = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            if (out.len() + chunk.len()) as u64 > limit {
                return Err(too_large());
            }
            out.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(out))
    }

    /// A response body whose every piece must arrive within the stall timeout.
    fn body_stream(&self, response: Response) -> ByteStream {
        let stall = self.inner.options.stall_timeout;
        let url = shown(response.url());
        let inner = Box::pin(response.bytes_stream());
        Box::pin(futures_util::stream::unfold(
            Some((inner, url)),
            move |state| async move {
                let (mut inner, url) = state?;
                match tokio::time::timeout(stall, inner.next()).await {
                    Err(_) => {
                        let seconds = stall.as_secs();
                        Some((Err(RegistryError::Stalled { url, seconds }), None))
                    }
                    Ok(None) => None,
                    Ok(Some(Ok(bytes))) => Some((Ok(bytes), Some((inner, url)))),
                    Ok(Some(Err(source))) => {
                        Some((Err(RegistryError::Transport { url, source }), None))
                    }
                }
            },
        ))
    }

    /// The error for an unexpected status, with the registry's own messages.
    async fn status_error(&self, response: Response) -> RegistryError {
        let status = response.status();
        let url = shown(response.url());
        let body = self
            .read_body(response, SMALL_BODY_LIMIT, "error response")
            .await
            .unwrap_or_default();
        RegistryError::Status {
            status: status.as_u16(),
            url,
            message: error_message(status, &body),
        }
    }
}

/// Why a single attempt failed, before it becomes a [`RegistryError`].
enum Failure {
    Reqwest(reqwest::Error),
    Stalled,
}

/// The distribution spec's `{"errors": [{"code", "message", "detail"}]}`
/// messages, else the start of the body, else the status's reason.
fn error_message(status: StatusCode, body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorEntry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(errors) = serde_json::from_slice::<Errors>(body) {
        let messages: Vec<String> = errors
            .errors
            .into_iter()
            .filter_map(|e| match (e.code.is_empty(), e.message.is_empty()) {
                (_, false) => Some(e.message),
                (false, true) => Some(e.code.to_lowercase()),
                (true, true) => None,
            })
            .collect();
        if !messages.is_empty() {
            return messages.join("; ");
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if !text.is_empty() {
        let short: String = text.chars().take(200).collect();
        return short.split_whitespace().collect::<Vec<_>>().join(" ");
    }
    status
        .canonical_reason()
        .unwrap_or("no message")
        .to_lowercase()
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
    fn error_messages_come_from_the_registry() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}},{"code":"DENIED"}]}"#;
        assert_eq!(
            error_message(StatusCode::NOT_FOUND, body),
            "manifest unknown; denied"
        );
        assert_eq!(
            error_message(StatusCode::BAD_GATEWAY, b"  upstream\n  broke "),
            "upstream broke"
        );
        assert_eq!(
            error_message(StatusCode::SERVICE_UNAVAILABLE, b""),
            "service unavailable"
        );
    }

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

    #[test]
    fn plain_http_only_for_loopback_and_insecure_urls() {
        let mut config = RegistryConfig::default();
        config.add_insecure("reg.lan:5000");
        config.add_insecure("plain.lan");
        let allows = |u: &str| url_allows_insecure(&config, &Url::parse(u).unwrap());
        assert!(allows("http://127.0.0.1:5000/v2/"));
        assert!(allows("http://localhost/v2/"));
        assert!(allows("http://[::1]:80/v2/"));
        assert!(allows("http://reg.lan:5000/v2/"));
        assert!(allows("http://plain.lan/v2/"));
        assert!(allows("http://plain.lan:80/v2/"));
        assert!(!allows("http://reg.lan/v2/"));
        assert!(!allows("http://storage.example.com/blob"));
        assert!(!allows("http://10.0.0.1:5000/v2/"));
        assert_eq!(
            authority(&Url::parse("http://[::1]:5/x").unwrap()),
            "[::1]:5"
        );
        assert_eq!(
            authority(&Url::parse("https://a.io:443/x").unwrap()),
            "a.io"
        );
    }

    #[tokio::test]
    async fn secure_hosts_never_get_plain_http_urls() {
        let client = Client::new(RegistryConfig::default()).unwrap();
        let r = Reference::parse("registry.example/app:v1").unwrap();
        let t = client.target(&r, false, None).unwrap();
        let url = Url::parse("http://registry.example/v2/app/blobs/uploads/x").unwrap();
        let err = client
            .dispatch(&t, &Endpoint::Url(url), &|c, u| c.get(u), None, true)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, RegistryError::InsecureRefused { host } if host == "registry.example"),
            "{err}"
        );
    }
}
