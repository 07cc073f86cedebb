//! Image names as Docker shows and takes them. The supervisor stores
//! normalised names (`docker.io/library/busybox:latest`); Docker shows them
//! familiar (`busybox:latest`). An image is also named by its id
//! (`sha256:<hex>`) or a unique prefix of the id's hex.

use berth_client::reference::{Reference, ReferenceError};

/// The normalised form of a reference, as the supervisor stores it.
pub fn normalize(name: &str) -> Result<String, ReferenceError> {
    Reference::parse(name).map(|r| r.to_string())
}

/// How Docker shows a stored name: without `docker.io/` and, for
/// single-component repositories, `library/`.
pub fn familiar(name: &str) -> String {
    match name.strip_prefix("docker.io/") {
        Some(rest) => match rest.strip_prefix("library/") {
            Some(short) if !repository_of(short).contains('/') => short.to_string(),
            _ => rest.to_string(),
        },
        None => name.to_string(),
    }
}

/// The repository part of a name (before its tag and digest).
pub fn repository_of(name: &str) -> &str {
    let name = name.split_once('@').map_or(name, |(r, _)| r);
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[slash..].rfind(':') {
        Some(i) => &name[..slash + i],
        None => name,
    }
}

/// Whether a stored name carries a tag (and not only a digest).
pub fn is_tagged(name: &str) -> bool {
    let name = name.split_once('@').map_or(name, |(r, _)| r);
    repository_of(name).len() < name.len()
}

/// Whether a stored name is `repository@digest`.
pub fn is_digested(name: &str) -> bool {
    name.contains('@')
}

/// The hex digits `s` gives as an id or id prefix: `sha256:` optional,
/// lowercase hex, 1 to 64 digits.
pub fn id_prefix(s: &str) -> Option<&str> {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    let ok = !hex.is_empty()
        && hex.len() <= 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    ok.then_some(hex)
}

/// Whether `s` is a full image id (with or without `sha256:`).
pub fn is_full_id(s: &str) -> bool {
    id_prefix(s).is_some_and(|hex| hex.len() == 64)
}

/// The 12 hex digits Docker shows of an id.
pub fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.get(..12).unwrap_or(hex)
}

/// Docker's glob match (`path.Match`): `*` matches any run of characters
/// but `/`, `?` any one character but `/`, `[...]` a class; `\` escapes.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    glob_at(&p, &t)
}

fn glob_at(p: &[char], t: &[char]) -> bool {
    match p.first() {
        None => t.is_empty(),
        Some('*') => {
            let rest = &p[1..];
            let mut i = 0;
            loop {
                if glob_at(rest, &t[i..]) {
                    return true;
                }
                if i == t.len() || t[i] == '/' {
                    return false;
                }
                i += 1;
            }
        }
        Some('?') => !t.is_empty() && t[0] != '/' && glob_at(&p[1..], &t[1..]),
        Some('[') => {
            let Some(close) = p.iter().position(|&c| c == ']') else {
                return false;
            };
            let Some(&c) = t.first() else {
                return false;
            };
            let class = &p[1..close];
            let (negate, class) = match class.first() {
                Some('^') => (true, &class[1..]),
                _ => (false, class),
            };
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == '-' {
                    hit |= class[i] <= c && c <= class[i + 2];
                    i += 3;
                } else {
                    hit |= class[i] == c;
                    i += 1;
                }
            }
            hit != negate && c != '/' && glob_at(&p[close + 1..], &t[1..])
        }
        Some('\\') if p.len() > 1 => t.first() == Some(&p[1]) && glob_at(&p[2..], &t[1..]),
        Some(&c) => t.first() == Some(&c) && glob_at(&p[1..], &t[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn familiar_names() {
        assert_eq!(
            familiar("docker.io/library/busybox:latest"),
            "busybox:latest"
        );
        assert_eq!(familiar("docker.io/foo/bar:1"), "foo/bar:1");
        assert_eq!(familiar("docker.io/library/a/b:1"), "library/a/b:1");
        assert_eq!(
            familiar("127.0.0.1:5000/busybox:latest"),
            "127.0.0.1:5000/busybox:latest"
        );
        assert_eq!(
            familiar("docker.io/library/busybox@sha256:ab"),
            "busybox@sha256:ab"
        );
    }

    #[test]
    fn parts_of_names() {
        assert_eq!(repository_of("localhost:5000/a/b:1"), "localhost:5000/a/b");
        assert_eq!(repository_of("localhost:5000/a/b"), "localhost:5000/a/b");
        assert_eq!(repository_of("a/b@sha256:00"), "a/b");
        assert!(is_tagged("a:1"));
        assert!(is_tagged("a:1@sha256:00"));
        assert!(!is_tagged("localhost:5000/a@sha256:00"));
        assert!(is_digested("a@sha256:00"));
        assert_eq!(
            normalize("busybox").unwrap(),
            "docker.io/library/busybox:latest"
        );
    }

    #[test]
    fn ids() {
        assert_eq!(id_prefix("sha256:abc"), Some("abc"));
        assert_eq!(id_prefix("abc123"), Some("abc123"));
        assert_eq!(id_prefix("busybox"), None);
        assert_eq!(id_prefix("ABC"), None);
        assert!(is_full_id(&"a".repeat(64)));
        assert!(!is_full_id("abc"));
        assert_eq!(
            short_id(&format!("sha256:{}", "0123456789abcdef")),
            "0123456789ab"
        );
    }

    #[test]
    fn globs() {
        assert!(glob_match("busy*", "busybox"));
        assert!(glob_match("busybox:*", "busybox:latest"));
        assert!(!glob_match("*", "foo/bar"));
        assert!(glob_match("*/*", "foo/bar"));
        assert!(glob_match("b?sybox", "busybox"));
        assert!(glob_match("[a-c]usybox", "busybox"));
        assert!(!glob_match("[^a-c]usybox", "busybox"));
        assert!(!glob_match("busy", "busybox"));
    }
}
