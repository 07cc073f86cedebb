//! API versions: the `/vX.Y/` prefix of a request path, and the one place
//! where behaviour differs between versions.

use std::cmp::Ordering;
use std::fmt;

/// An API version, `major.minor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiVersion {
    pub major: u32,
    pub minor: u32,
}

impl ApiVersion {
    pub const CURRENT: ApiVersion = ApiVersion {
        major: 1,
        minor: 51,
    };
    pub const MIN: ApiVersion = ApiVersion {
        major: 1,
        minor: 24,
    };

    /// Parses `1.51` (no leading `v`).
    pub fn parse(s: &str) -> Option<ApiVersion> {
        let (major, minor) = s.split_once('.')?;
        Some(ApiVersion {
            major: major.parse().ok()?,
            minor: minor.parse().ok()?,
        })
    }

    pub fn at_least(self, major: u32, minor: u32) -> bool {
        self.cmp(&ApiVersion { major, minor }) != Ordering::Less
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// A path's version prefix, and the path after it. A path without a prefix
/// is served at the current version. `None`: the prefix is no version.
pub fn split_version(path: &str) -> Option<(ApiVersion, &str)> {
    let Some(rest) = path.strip_prefix("/v") else {
        return Some((ApiVersion::CURRENT, path));
    };
    let (version, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    match ApiVersion::parse(version) {
        Some(v) => Some((v, tail)),
        // "/volumes" starts with "/v" too: only a digit after it is a version.
        None if !version.starts_with(|c: char| c.is_ascii_digit()) => {
            Some((ApiVersion::CURRENT, path))
        }
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let v = |major, minor| ApiVersion { major, minor };
        assert_eq!(
            split_version("/v1.51/containers/json"),
            Some((v(1, 51), "/containers/json"))
        );
        assert_eq!(split_version("/v1.24/_ping"), Some((v(1, 24), "/_ping")));
        assert_eq!(split_version("/v1.99/info"), Some((v(1, 99), "/info")));
        assert_eq!(
            split_version("/_ping"),
            Some((ApiVersion::CURRENT, "/_ping"))
        );
        assert_eq!(
            split_version("/volumes"),
            Some((ApiVersion::CURRENT, "/volumes"))
        );
        assert_eq!(split_version("/v1/x"), None);
        assert!(v(1, 41).at_least(1, 40));
        assert!(!v(1, 24).at_least(1, 40));
    }
}
