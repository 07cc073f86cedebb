//! Registry authentication: `WWW-Authenticate` challenges, token responses
//! and the token cache (Docker's token authentication specification).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::Credentials;

/// Lifetime assumed for a token without `expires_in`, and the least the
/// token specification lets a server grant.
const MIN_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// One challenge of a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The scheme, lowercase (`basic`, `bearer`).
    pub scheme: String,
    /// Auth parameters, names lowercase, values unquoted.
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// Parses every challenge in a `WWW-Authenticate` value, e.g.
/// `Bearer realm="https://auth.example/token",service="reg",scope="repository:a:pull"`
/// or `Basic realm="x", Bearer realm="y"`. Malformed parts are skipped.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut p = Parser {
        s: header.as_bytes(),
        i: 0,
    };
    let mut out = Vec::new();
    loop {
        p.skip(|c| c == b',' || c.is_ascii_whitespace());
        if p.done() {
            break;
        }
        let scheme = p.token();
        if scheme.is_empty() {
            // Not a token character: skip it and look for the next challenge.
            p.i += 1;
            continue;
        }
        let mut challenge = Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params: BTreeMap::new(),
        };
        loop {
            p.skip(|c| c == b',' || c.is_ascii_whitespace());
            let start = p.i;
            let name = p.token();
            p.skip(|c| c == b' ' || c == b'\t');
            if name.is_empty() || p.peek() != Some(b'=') {
                // The next challenge's scheme (or a token68 we do not use).
                p.i = start;
                if name.is_empty() {
                    break;
                }
                // A token68 is followed by '=' padding only; a scheme is not.
                p.token();
                p.skip(|c| c == b'=');
                p.skip(|c| c == b' ' || c == b'\t');
                if p.done() || p.peek() == Some(b',') {
                    continue;
                }
                p.i = start;
                break;
            }
            p.i += 1;
            p.skip(|c| c == b' ' || c == b'\t');
            let value = if p.peek() == Some(b'"') {
                p.quoted()
            } else {
                p.token()
            };
            challenge.params.insert(name.to_ascii_lowercase(), value);
        }
        out.push(challenge);
    }
    out
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn done(&self) -> bool {
        self.i >= self.s.len()
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip(&mut self, f: impl Fn(u8) -> bool) {
        while self.peek().is_some_and(&f) {
            self.i += 1;
        }
    }

    /// An RFC 9110 token.
    fn token(&mut self) -> String {
        let start = self.i;
        self.skip(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/:".contains(&c));
        String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
    }

    /// A quoted string starting at the opening quote, escapes resolved.
    fn quoted(&mut self) -> String {
        let mut out = Vec::new();
        self.i += 1;
        while let Some(c) = self.peek() {
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    if let Some(next) = self.peek() {
                        out.push(next);
                        self.i += 1;
                    }
                }
                _ => out.push(c),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// A token server's answer: `token` or `access_token`, and `expires_in` seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub token: String,
    pub expires_in: Duration,
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Parses a token response body. The error says what is wrong with it.
pub fn parse_token_response(body: &[u8]) -> Result<Token, String> {
    let response: TokenResponse =
        serde_json::from_slice(body).map_err(|e| format!("token response is not JSON: {e}"))?;
    let token = response
        .token
        .filter(|t| !t.is_empty())
        .or(response.access_token.filter(|t| !t.is_empty()))
        .ok_or("token response has neither \"token\" nor \"access_token\"")?;
    let expires_in = response
        .expires_in
        .map(Duration::from_secs)
        .unwrap_or(MIN_TOKEN_LIFETIME)
        .max(MIN_TOKEN_LIFETIME);
    Ok(Token { token, expires_in })
}

/// Which credentials a token was obtained with: tokens are only reused
/// for requests made with the same ones.
pub(crate) fn credentials_key(creds: Option<&Credentials>) -> String {
    let material = match creds {
        None => return "anonymous".to_string(),
        Some(Credentials::Basic { username, password }) => {
            format!("basic\0{username}\0{password}")
        }
        Some(Credentials::IdentityToken(token)) => format!("identity\0{token}"),
    };
    hex::encode(&Sha256::digest(material.as_bytes())[..16])
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct TokenKey {
    pub host: String,
    pub scope: String,
    pub credentials: String,
}

/// Bearer tokens by (host, scope, credentials), each until shortly before it expires.
#[derive(Default)]
pub(crate) struct TokenCache {
    tokens: Mutex<HashMap<TokenKey, (String, Instant)>>,
}

impl TokenCache {
    pub fn get(&self, key: &TokenKey) -> Option<String> {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        match tokens.get(key) {
            Some((token, until)) if Instant::now() < *until => Some(token.clone()),
            Some(_) => {
                tokens.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn insert(&self, key: TokenKey, token: &Token) {
        // Renew a little early, so a token does not expire in flight.
        let lifetime = token.expires_in - token.expires_in / 10;
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.insert(key, (token.token.clone(), Instant::now() + lifetime));
    }

    pub fn remove(&self, key: &TokenKey) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(c: &Challenge) -> Vec<(&str, &str)> {
        c.params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn parses_docker_hub_bearer_challenge() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(
            params(&c[0]),
            vec![
                ("realm", "https://auth.docker.io/token"),
                ("scope", "repository:library/busybox:pull"),
                ("service", "registry.docker.io"),
            ]
        );
    }

    #[test]
    fn parses_several_challenges_tokens_and_escapes() {
        let c = parse_challenges(
            r#"Basic realm="Registry \"Realm\"", Bearer realm=http://127.0.0.1:5/token , service=svc,scope="repository:a/b:pull,push""#,
        );
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].param("realm"), Some("Registry \"Realm\""));
        assert_eq!(c[1].scheme, "bearer");
        assert_eq!(c[1].param("realm"), Some("http://127.0.0.1:5/token"));
        assert_eq!(c[1].param("service"), Some("svc"));
        assert_eq!(c[1].param("scope"), Some("repository:a/b:pull,push"));

        let c = parse_challenges("BASIC REALM=\"x\"");
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].param("realm"), Some("x"));

        let c = parse_challenges("Negotiate abc==, Basic realm=\"r\"");
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c[0].scheme, "negotiate");
        assert_eq!(c[1].scheme, "basic");

        assert!(parse_challenges("").is_empty());
        assert_eq!(parse_challenges("Basic")[0].params.len(), 0);
        // Garbage does not panic.
        for junk in [
            "\"",
            "=",
            "Bearer realm=\"unterminated",
            ",,,",
            "Bearer =x",
            "Bearer a=\\",
        ] {
            let _ = parse_challenges(junk);
        }
    }

    #[test]
    fn token_responses() {
        let t = parse_token_response(
            br#"{"token":"abc","expires_in":300,"issued_at":"2024-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(t.token, "abc");
        assert_eq!(t.expires_in, Duration::from_secs(300));
        let t = parse_token_response(br#"{"access_token":"xyz"}"#).unwrap();
        assert_eq!(t.token, "xyz");
        assert_eq!(t.expires_in, Duration::from_secs(60));
        // Servers may send both; they are the same token.
        let t =
            parse_token_response(br#"{"token":"a","access_token":"a","expires_in":10}"#).unwrap();
        assert_eq!(t.token, "a");
        assert_eq!(t.expires_in, Duration::from_secs(60), "at least 60 s");
        let t = parse_token_response(br#"{"token":"","access_token":"b"}"#).unwrap();
        assert_eq!(t.token, "b");
        assert!(parse_token_response(br#"{"expires_in":300}"#)
            .unwrap_err()
            .contains("neither"));
        assert!(parse_token_response(b"<html>")
            .unwrap_err()
            .contains("not JSON"));
    }

    #[test]
    fn token_cache_keys_and_expiry() {
        let cache = TokenCache::default();
        let key = TokenKey {
            host: "h".into(),
            scope: "repository:a:pull".into(),
            credentials: credentials_key(None),
        };
        assert_eq!(cache.get(&key), None);
        cache.insert(
            key.clone(),
            &Token {
                token: "t".into(),
                expires_in: Duration::from_secs(60),
            },
        );
        assert_eq!(cache.get(&key).as_deref(), Some("t"));
        let other = TokenKey {
            credentials: credentials_key(Some(&Credentials::Basic {
                username: "u".into(),
                password: "p".into(),
            })),
            ..key.clone()
        };
        assert_eq!(cache.get(&other), None);
        cache.remove(&key);
        assert_eq!(cache.get(&key), None);
        assert_ne!(
            credentials_key(Some(&Credentials::IdentityToken("x".into()))),
            credentials_key(Some(&Credentials::Basic {
                username: "x".into(),
                password: String::new()
            }))
        );
    }
}
