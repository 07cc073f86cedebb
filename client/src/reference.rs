//! Image references: `[registry/]repository[:tag][@digest]`.
//!
//! Parsed and normalised the way Docker does it: a name whose first
//! component does not look like a host (no `.` or `:`, not `localhost`, all
//! lowercase) lives on `docker.io`; single-component names on `docker.io`
//! live under `library/`; a reference with neither tag nor digest means
//! `:latest`. Validation follows the distribution project's reference
//! grammar, with digests restricted to sha256, the only algorithm the
//! content store knows.

use std::fmt;
use std::str::FromStr;

pub use crate::docker_config::{DOCKER_HUB, DOCKER_HUB_API};
/// The tag a reference without tag or digest means.
pub const DEFAULT_TAG: &str = "latest";

/// Longest name (registry and repository) the grammar allows.
const NAME_MAX: usize = 255;
/// Longest tag the grammar allows.
const TAG_MAX: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid image reference: empty")]
    Empty,
    #[error("invalid image reference {reference:?}: registry {registry:?} is not a host[:port]")]
    InvalidRegistry { reference: String, registry: String },
    #[error("invalid image reference {reference:?}: repository name must be lowercase")]
    Uppercase { reference: String },
    #[error(
        "invalid image reference {reference:?}: repository component {component:?} must be \
         lowercase letters and digits separated by '.', '_', '__' or dashes"
    )]
    InvalidRepository {
        reference: String,
        component: String,
    },
    #[error(
        "invalid image reference {reference:?}: repository name cannot be a 64-digit hex \
         string (did you mean a digest, name@sha256:<hex>?)"
    )]
    HexRepository { reference: String },
    #[error(
        "invalid image reference {reference:?}: name is {length} characters long, at most 255 allowed"
    )]
    NameTooLong { reference: String, length: usize },
    #[error(
        "invalid image reference {reference:?}: tag {tag:?} must be 1 to 128 of letters, \
         digits, '_', '.' and '-', not starting with '.' or '-'"
    )]
    InvalidTag { reference: String, tag: String },
    #[error(
        "invalid image reference {reference:?}: digest {digest:?} must be sha256:<64 lowercase hex digits>"
    )]
    InvalidDigest { reference: String, digest: String },
}

/// A normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// `host[:port]`; `docker.io` for Docker Hub.
    pub registry: String,
    /// Slash-separated path components, e.g. `library/busybox`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Reference {
    /// Parses and normalises `s`.
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let err_ref = || s.to_string();

        let (name_and_tag, digest) = match s.split_once('@') {
            Some((rest, digest)) => {
                if !is_valid_digest(digest) {
                    return Err(ReferenceError::InvalidDigest {
                        reference: err_ref(),
                        digest: digest.to_string(),
                    });
                }
                (rest, Some(digest.to_string()))
            }
            None => (s, None),
        };

        // A tag is after the last ':' that follows the last '/'; an earlier
        // ':' belongs to the registry's port.
        let last_slash = name_and_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_and_tag[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                let tag = &name_and_tag[at + 1..];
                if !is_valid_tag(tag) {
                    return Err(ReferenceError::InvalidTag {
                        reference: err_ref(),
                        tag: tag.to_string(),
                    });
                }
                (&name_and_tag[..at], Some(tag.to_string()))
            }
            None => (name_and_tag, None),
        };
        if name.is_empty() {
            return Err(ReferenceError::InvalidRepository {
                reference: err_ref(),
                component: String::new(),
            });
        }

        let (registry, path) = split_registry(name);
        if !is_valid_registry(registry) {
            return Err(ReferenceError::InvalidRegistry {
                reference: err_ref(),
                registry: registry.to_string(),
            });
        }
        let registry = if registry == "index.docker.io" {
            DOCKER_HUB
        } else {
            registry
        };
        validate_repository(path).map_err(|component| {
            if component.bytes().any(|b| b.is_ascii_uppercase()) {
                ReferenceError::Uppercase {
                    reference: err_ref(),
                }
            } else {
                ReferenceError::InvalidRepository {
                    reference: err_ref(),
                    component,
                }
            }
        })?;
        if path.len() == 64 && path.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ReferenceError::HexRepository {
                reference: err_ref(),
            });
        }
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        let length = registry.len() + 1 + repository.len();
        if length > NAME_MAX {
            return Err(ReferenceError::NameTooLong {
                reference: err_ref(),
                length,
            });
        }

        let tag = match (tag, &digest) {
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (tag, _) => tag,
        };
        Ok(Reference {
            registry: registry.to_string(),
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// What to ask the registry for: the digest if set, else the tag, else `latest`.
    pub fn tag_or_digest(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or(DEFAULT_TAG)
    }

    /// The host (and port) that serves the registry API for this reference.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// This reference pinned to `digest` (the tag, if any, is kept).
    pub fn with_digest(&self, digest: &str) -> Reference {
        Reference {
            digest: Some(digest.to_string()),
            ..self.clone()
        }
    }

    /// Checks the fields again, for references built by hand rather than
    /// parsed: everything that ends up in a URL must be well formed.
    pub fn validate(&self) -> Result<(), ReferenceError> {
        let reference = self.to_string();
        if !is_valid_registry(&self.registry) {
            return Err(ReferenceError::InvalidRegistry {
                reference,
                registry: self.registry.clone(),
            });
        }
        validate_repository(&self.repository).map_err(|component| {
            ReferenceError::InvalidRepository {
                reference: reference.clone(),
                component,
            }
        })?;
        if let Some(tag) = self.tag.as_deref().filter(|t| !is_valid_tag(t)) {
            return Err(ReferenceError::InvalidTag {
                reference,
                tag: tag.to_string(),
            });
        }
        if let Some(digest) = self.digest.as_deref().filter(|d| !is_valid_digest(d)) {
            return Err(ReferenceError::InvalidDigest {
                reference,
                digest: digest.to_string(),
            });
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Reference, ReferenceError> {
        Reference::parse(s)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Splits a name into registry and path the way Docker does.
fn split_registry(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (first, rest)
        }
        _ => (DOCKER_HUB, name),
    }
}

/// `sha256:` followed by 64 lowercase hex digits.
pub fn is_valid_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// `[\w][\w.-]{0,127}`.
pub fn is_valid_tag(s: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= TAG_MAX
        && word(bytes[0])
        && bytes[1..]
            .iter()
            .all(|&b| word(b) || b == b'.' || b == b'-')
}

/// `host[:port]` where host is a domain name, an IPv4 address or a
/// bracketed IPv6 address.
pub fn is_valid_registry(s: &str) -> bool {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        match rest.split_once(']') {
            Some((addr, after)) => {
                if addr.parse::<std::net::Ipv6Addr>().is_err() {
                    return false;
                }
                match after {
                    "" => return true,
                    _ => match after.strip_prefix(':') {
                        Some(port) => (None, Some(port)),
                        None => return false,
                    },
                }
            }
            None => return false,
        }
    } else {
        match s.rsplit_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(s), None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || port.parse::<u16>().is_err() {
            return false;
        }
    }
    match host {
        None => true,
        Some(host) => {
            !host.is_empty()
                && host.split('.').all(|label| {
                    let b = label.as_bytes();
                    !b.is_empty()
                        && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
                        && b[0] != b'-'
                        && b[b.len() - 1] != b'-'
                })
        }
    }
}

/// Checks each `/`-separated component against
/// `[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*`; the error is the bad component.
fn validate_repository(path: &str) -> Result<(), String> {
    for component in path.split('/') {
        if !is_valid_component(component) {
            return Err(component.to_string());
        }
    }
    Ok(())
}

fn is_valid_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let b = c.as_bytes();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: '.', '_', '__' or any number of '-'.
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|s| s == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest() -> String {
        format!("sha256:{}", "ab".repeat(32))
    }

    #[test]
    fn docker_hub_names_are_normalised() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "library/busybox");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        assert_eq!(r.digest, None);
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(r.name(), "docker.io/library/busybox");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.tag_or_digest(), "latest");

        let r = Reference::parse("user/app:1.0").unwrap();
        assert_eq!(r.to_string(), "docker.io/user/app:1.0");
        let r = Reference::parse("docker.io/busybox:1").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:1");
        let r = Reference::parse("index.docker.io/library/busybox").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
    }

    #[test]
    fn registries_are_recognised() {
        let r = Reference::parse("localhost/app").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("localhost", "app")
        );
        let r = Reference::parse("localhost:5000/a/b/c:v2").unwrap();
        assert_eq!(r.registry, "localhost:5000");
        assert_eq!(r.repository, "a/b/c");
        assert_eq!(r.tag.as_deref(), Some("v2"));
        assert_eq!(r.api_host(), "localhost:5000");
        let r = Reference::parse("127.0.0.1:5000/app").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.to_string(), "127.0.0.1:5000/app:latest");
        let r = Reference::parse("quay.io/org/app").unwrap();
        assert_eq!(r.registry, "quay.io");
        assert_eq!(r.repository, "org/app");
        let r = Reference::parse("[::1]:5000/app").unwrap();
        assert_eq!(r.registry, "[::1]:5000");
        // A lowercase first component without '.' or ':' is a path, not a host.
        let r = Reference::parse("myhost/app").unwrap();
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "myhost/app");
        // Without a '/', "localhost:5000" is Docker Hub's library/localhost at tag 5000.
        let r = Reference::parse("localhost:5000").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/localhost:5000");
    }

    #[test]
    fn digests_and_tags() {
        let d = digest();
        let r = Reference::parse(&format!("busybox@{d}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(d.as_str()));
        assert_eq!(r.tag_or_digest(), d);
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{d}"));

        let r = Reference::parse(&format!("host:1/app:v1@{d}")).unwrap();
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.tag_or_digest(), d);
        assert_eq!(r.to_string(), format!("host:1/app:v1@{d}"));
        assert_eq!(Reference::parse(&r.to_string()).unwrap(), r);

        let pinned = Reference::parse("app").unwrap().with_digest(&d);
        assert_eq!(pinned.tag_or_digest(), d);
        let tag = format!("a{}", "b".repeat(127));
        assert!(Reference::parse(&format!("app:{tag}")).is_ok());
        assert!(Reference::parse("app:V_1.2-rc").is_ok());
    }

    #[test]
    fn bad_references_say_what_is_wrong() {
        let err = |s: &str| Reference::parse(s).unwrap_err();
        assert_eq!(err(""), ReferenceError::Empty);
        assert!(matches!(err("Busybox"), ReferenceError::Uppercase { .. }));
        assert!(matches!(
            err("host.io/Org/app"),
            ReferenceError::Uppercase { .. }
        ));
        assert!(err("Busybox").to_string().contains("must be lowercase"));
        assert!(matches!(err("app:"), ReferenceError::InvalidTag { .. }));
        assert!(matches!(err("app:.x"), ReferenceError::InvalidTag { .. }));
        assert!(matches!(
            err(&format!("app:{}", "a".repeat(129))),
            ReferenceError::InvalidTag { .. }
        ));
        assert!(matches!(
            err("app@sha256:abc"),
            ReferenceError::InvalidDigest { .. }
        ));
        assert!(matches!(
            err(&format!("app@sha256:{}", "A".repeat(64))),
            ReferenceError::InvalidDigest { .. }
        ));
        assert!(matches!(
            err(&format!("app@md5:{}", "a".repeat(32))),
            ReferenceError::InvalidDigest { .. }
        ));
        assert!(matches!(
            err("a//b"),
            ReferenceError::InvalidRepository { .. }
        ));
        assert!(matches!(
            err("a/b/"),
            ReferenceError::InvalidRepository { .. }
        ));
        assert!(matches!(
            err("-app"),
            ReferenceError::InvalidRepository { .. }
        ));
        assert!(matches!(
            err("a..b"),
            ReferenceError::InvalidRepository { .. }
        ));
        assert!(matches!(
            err("a___b"),
            ReferenceError::InvalidRepository { .. }
        ));
        assert!(matches!(
            err("host:port/app"),
            ReferenceError::InvalidRegistry { .. }
        ));
        assert!(matches!(
            err("host:99999/app"),
            ReferenceError::InvalidRegistry { .. }
        ));
        assert!(matches!(
            err("-h.io/app"),
            ReferenceError::InvalidRegistry { .. }
        ));
        assert!(matches!(
            err(&"a".repeat(64)),
            ReferenceError::HexRepository { .. }
        ));
        assert!(matches!(
            err(&format!("h.io/{}", "a".repeat(260))),
            ReferenceError::NameTooLong { .. }
        ));
        let msg = err("app:.x").to_string();
        assert!(
            msg.starts_with("invalid image reference \"app:.x\": tag \".x\""),
            "{msg}"
        );

        // Separators the grammar allows.
        for ok in ["a.b", "a_b", "a__b", "a-b", "a---b", "a/b.c_d/e"] {
            assert!(Reference::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn validate_checks_hand_built_references() {
        let mut r = Reference::parse("h.io/app:v1").unwrap();
        assert!(r.validate().is_ok());
        r.repository = "../../etc".to_string();
        assert!(r.validate().is_err());
        let mut r = Reference::parse("h.io/app:v1").unwrap();
        r.tag = Some("a/b".to_string());
        assert!(r.validate().is_err());
        let mut r = Reference::parse("h.io/app:v1").unwrap();
        r.registry = "h.io/x".to_string();
        assert!(r.validate().is_err());
    }
}
