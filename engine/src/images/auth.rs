//! Registry credentials as Docker's clients send them: the
//! `X-Registry-Auth` header of pull and push, the body of `POST /auth`; and
//! the login check, which asks the registry through the supervisor.

use base64::Engine as _;
use berth_proto::images::v1 as pb;
use serde::Deserialize;

use super::ImageError;
use crate::backend::BackendError;
use crate::Engine;

/// `X-Registry-Auth`: base64url JSON. Empty or `{}` is no credentials.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct AuthConfig {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    /// `base64(user:password)`, as config.json holds it.
    #[serde(default)]
    pub auth: String,
    #[serde(default)]
    pub serveraddress: String,
    #[serde(default)]
    pub identitytoken: String,
}

impl AuthConfig {
    /// Decodes the header's value (padded or not, URL or standard alphabet).
    pub fn decode(header: &str) -> Result<Option<AuthConfig>, ImageError> {
        let header = header.trim();
        if header.is_empty() {
            return Ok(None);
        }
        let engines = [
            &base64::engine::general_purpose::URL_SAFE,
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            &base64::engine::general_purpose::STANDARD,
            &base64::engine::general_purpose::STANDARD_NO_PAD,
        ];
        let bytes = engines
            .iter()
            .find_map(|e| e.decode(header).ok())
            .ok_or_else(|| ImageError::InvalidArgument("invalid X-Registry-Auth header".into()))?;
        let mut config: AuthConfig = serde_json::from_slice(&bytes).map_err(|e| {
            ImageError::InvalidArgument(format!("invalid X-Registry-Auth header: {e}"))
        })?;
        config.fill_from_auth();
        Ok((config != AuthConfig::default()).then_some(config))
    }

    /// Username and password from `auth` when they are not given.
    pub fn fill_from_auth(&mut self) {
        if !self.username.is_empty() || self.auth.is_empty() {
            return;
        }
        let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(self.auth.trim()) else {
            return;
        };
        if let Some((user, password)) = String::from_utf8_lossy(&bytes).split_once(':') {
            self.username = user.to_string();
            self.password = password.to_string();
        }
    }

    pub fn to_pb(&self) -> pb::RegistryAuth {
        pb::RegistryAuth {
            username: self.username.clone(),
            password: self.password.clone(),
            identity_token: self.identitytoken.clone(),
        }
    }
}

/// `X-Registry-Config` of `POST /build`: base64url JSON of registry (as
/// the client's config.json names it: `host:port`, a URL, Docker Hub's
/// `https://index.docker.io/v1/`) to credentials, for the base images a
/// build pulls.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistryConfig(std::collections::BTreeMap<String, AuthConfig>);

impl RegistryConfig {
    /// Decodes the header's value; empty is no credentials.
    pub fn decode(header: &str) -> Result<RegistryConfig, ImageError> {
        let header = header.trim();
        if header.is_empty() {
            return Ok(RegistryConfig::default());
        }
        let engines = [
            &base64::engine::general_purpose::URL_SAFE,
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            &base64::engine::general_purpose::STANDARD,
            &base64::engine::general_purpose::STANDARD_NO_PAD,
        ];
        let bytes = engines
            .iter()
            .find_map(|e| e.decode(header).ok())
            .ok_or_else(|| {
                ImageError::InvalidArgument("invalid X-Registry-Config header".into())
            })?;
        let mut map: std::collections::BTreeMap<String, AuthConfig> =
            serde_json::from_slice(&bytes).map_err(|e| {
                ImageError::InvalidArgument(format!("invalid X-Registry-Config header: {e}"))
            })?;
        for config in map.values_mut() {
            config.fill_from_auth();
        }
        Ok(RegistryConfig(map))
    }

    /// The credentials for the registry of image `reference`, if given.
    pub fn for_image(&self, reference: &str) -> Option<AuthConfig> {
        let normal = super::names::normalize(reference).ok()?;
        let domain = normal.split('/').next().unwrap_or("");
        self.0
            .iter()
            .find(|(key, _)| registry_of(key) == domain)
            .map(|(_, auth)| auth.clone())
    }
}

/// `POST /auth`: checks the credentials against their registry.
pub async fn login(engine: &Engine, auth: AuthConfig) -> Result<(), ImageError> {
    let mut auth = auth;
    auth.fill_from_auth();
    let registry = registry_of(&auth.serveraddress);
    engine
        .supervisor
        .check_auth(&registry, auth.to_pb())
        .await
        .map_err(|e| match e {
            BackendError::Unauthorized(_) => ImageError::Unauthorized(format!(
                "login attempt to {} failed with status: 401 Unauthorized",
                login_url(&auth.serveraddress, &registry)
            )),
            e => ImageError::Backend(e),
        })
}

/// The registry host a login's server address names (Docker Hub when
/// empty).
fn registry_of(address: &str) -> String {
    let host = address
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or("");
    match host {
        "" | "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".to_string(),
        h => h.to_string(),
    }
}

fn login_url(address: &str, registry: &str) -> String {
    if address.starts_with("http") {
        let base = address.trim_end_matches('/');
        if base.ends_with("/v1") || base.ends_with("/v2") {
            return format!("{base}/");
        }
        return format!("{base}/v2/");
    }
    format!("https://{registry}/v2/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_config_names_credentials_per_registry() {
        let json = r#"{"127.0.0.1:5000": {"username": "u", "password": "p"},
            "https://index.docker.io/v1/": {"auth": "aHViOnNlY3JldA=="}}"#;
        let header = base64::engine::general_purpose::URL_SAFE.encode(json);
        let config = RegistryConfig::decode(&header).unwrap();
        let local = config.for_image("127.0.0.1:5000/app:1").unwrap();
        assert_eq!(
            (local.username.as_str(), local.password.as_str()),
            ("u", "p")
        );
        let hub = config.for_image("busybox").unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("hub", "secret")
        );
        assert_eq!(config.for_image("127.0.0.1:6000/app"), None);
        assert_eq!(
            RegistryConfig::decode("").unwrap(),
            RegistryConfig::default()
        );
        assert!(RegistryConfig::decode("!!").is_err());
    }

    #[test]
    fn registry_auth_header() {
        use base64::engine::general_purpose::URL_SAFE;
        let json = r#"{"username":"u","password":"p?>","serveraddress":"localhost:5000"}"#;
        let auth = AuthConfig::decode(&URL_SAFE.encode(json)).unwrap().unwrap();
        assert_eq!(
            (auth.username.as_str(), auth.password.as_str()),
            ("u", "p?>")
        );
        assert_eq!(AuthConfig::decode("").unwrap(), None);
        assert_eq!(AuthConfig::decode(&URL_SAFE.encode("{}")).unwrap(), None);
        let basic = base64::engine::general_purpose::STANDARD.encode("me:secret");
        let json = format!(r#"{{"auth":"{basic}"}}"#);
        let auth = AuthConfig::decode(&URL_SAFE.encode(json)).unwrap().unwrap();
        assert_eq!(auth.username, "me");
        assert!(AuthConfig::decode("%%%").is_err());
    }

    #[test]
    fn registries_of_server_addresses() {
        assert_eq!(registry_of(""), "docker.io");
        assert_eq!(registry_of("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(registry_of("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(
            login_url("127.0.0.1:5000", "127.0.0.1:5000"),
            "https://127.0.0.1:5000/v2/"
        );
        assert_eq!(login_url("http://r:1", "r:1"), "http://r:1/v2/");
    }
}
