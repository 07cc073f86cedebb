//! One request on the wire: the scheme chosen per host (HTTPS, or plain
//! HTTP where allowed after HTTPS fails to connect), the client that
//! verifies certificates or the one that does not, credentials kept to the
//! registry's own host across redirects, the stall timeout, and the
//! registry's error messages.

use std::fmt;

use bytes::Bytes;
use futures_util::StreamExt as _;
use reqwest::header::LOCATION;
use reqwest::{RequestBuilder, Response, StatusCode, Url};
use tracing::debug;

use super::{
    error_chain, Auth, ByteStream, Client, Endpoint, RegistryConfig, RegistryError, Target,
    SMALL_BODY_LIMIT,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scheme {
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

/// The error a redirect to plain HTTP on a secure host fails with.
#[derive(Debug)]
pub(super) struct InsecureRedirect(pub(super) String);

impl fmt::Display for InsecureRedirect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "redirect to plain HTTP on {}", self.0)
    }
}

impl std::error::Error for InsecureRedirect {}

/// `host[:port]` of a URL, as references spell registries (IPv6 in brackets,
/// the scheme's default port left out).
pub(super) fn authority(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// A URL for messages and logs: without its query, which may carry upload
/// state or a storage signature.
pub(super) fn shown(url: &Url) -> String {
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
pub(super) fn url_allows_insecure(config: &RegistryConfig, url: &Url) -> bool {
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

impl Client {
    pub(super) fn http_for(&self, url: &Url) -> &reqwest::Client {
        if url.scheme() == "https" {
            if let Some(client) = self.inner.with_ca.get(&authority(url)) {
                return client;
            }
        }
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
    pub(super) async fn dispatch(
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
        let scheme = if t.scheme.is_some() {
            t.scheme
        } else if may_fall_back {
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
    pub(super) async fn timed(
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
    pub(super) async fn read_body(
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
    pub(super) fn body_stream(&self, response: Response) -> ByteStream {
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
    pub(super) async fn status_error(&self, response: Response) -> RegistryError {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::Reference;
    use crate::registry::hosts;
    use crate::registry::Capability;

    #[test]
    fn hosts_toml_endpoints_take_the_requests_they_may() {
        let mut config = RegistryConfig::default();
        config.set_credentials(
            "registry.k8s.io",
            crate::registry::Credentials::IdentityToken("upstream".into()),
        );
        let text = "[host.\"http://10.1.2.3:5000\"]\ncapabilities = [\"pull\", \"resolve\"]\n";
        let mirrors = hosts::parse("registry.k8s.io", text).unwrap();
        config.set_hosts([("registry.k8s.io".to_string(), mirrors)].into());
        let client = Client::new(config).unwrap();
        let r = Reference::parse("registry.k8s.io/pause:3.9").unwrap();
        for need in [Capability::Resolve, Capability::Pull] {
            let t = client.target(&r, need, None).unwrap();
            assert_eq!(t.host, "10.1.2.3:5000");
            assert_eq!(t.scheme, Some(Scheme::Http));
            // Configured credentials are the mirror's own, never the upstream's.
            assert!(t.creds.is_none());
        }
        // Without a server line, the registry itself is tried after the mirror.
        let hosts: Vec<String> = client
            .targets(&r, Capability::Resolve, None)
            .unwrap()
            .into_iter()
            .map(|t| t.host)
            .collect();
        assert_eq!(hosts, ["10.1.2.3:5000", "registry.k8s.io"]);
        // The mirror may not push: the registry itself gets it.
        let t = client.target(&r, Capability::Push, None).unwrap();
        assert_eq!((t.host.as_str(), t.scheme), ("registry.k8s.io", None));
        assert!(t.creds.is_some());
        // A plain-HTTP mirror is an insecure host, other registries are not.
        assert!(client.config().allows_insecure("10.1.2.3:5000"));
        let other = Reference::parse("quay.io/a/b:1").unwrap();
        let t = client.target(&other, Capability::Pull, None).unwrap();
        assert_eq!((t.host.as_str(), t.scheme), ("quay.io", None));
    }

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
        let t = client.target(&r, Capability::Pull, None).unwrap();
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
