//! How imported images are named (and how an export shows a name to
//! Docker). First rule that applies:
//! 1. the descriptor's `io.containerd.image.name` annotation;
//! 2. its `org.opencontainers.image.ref.name` when that is a full reference
//!    (it holds a '/', ':' or '@', as containerd decides);
//! 3. a `docker save` entry's `RepoTags` (also for a Docker 25+ archive's
//!    index.json entry that has no name of its own), one image per tag;
//! 4. a bare tag from `ref.name` goes on the repository of
//!    `ImportOptions::name` (its tag dropped), else on `import-<hex12>`;
//! 5. when the archive names nothing: `ImportOptions::name` if exactly one
//!    image is unnamed, else `<repository of the name>@sha256:<hex>` or,
//!    without a name, `import-<hex12>@sha256:<hex>`, hex12 being the first
//!    12 hex digits of the image's digest.
//!
//! Every name goes through `image_name`, so it is stored as a pull stores
//! it. Two different images under one name are refused.

use super::*;

/// Splits a name into repository, tag and digest: the tag follows the last
/// ':' after the last '/', the digest follows '@'.
pub(super) fn split_name(name: &str) -> (&str, Option<&str>, Option<&str>) {
    let (rest, digest) = match name.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (name, None),
    };
    let slash = rest.rfind('/').map_or(0, |i| i + 1);
    match rest[slash..].rfind(':') {
        Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..]), digest),
        None => (rest, None, digest),
    }
}

/// How Docker shows a name: without `docker.io/` and `library/`.
pub(super) fn familiar(repository: &str) -> &str {
    match repository.strip_prefix("docker.io/") {
        Some(rest) => rest
            .strip_prefix("library/")
            .filter(|r| !r.contains('/'))
            .unwrap_or(rest),
        None => repository,
    }
}

/// The first 12 hex digits of a digest.
fn short_hex(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    hex.get(..12).unwrap_or(hex)
}

/// Naming rules 1, 2 and 4 (see the module's documentation).
pub(super) fn annotated_name(desc: &Descriptor, base: Option<&str>) -> Option<String> {
    if let Some(name) = desc
        .annotations
        .get(ANNOTATION_IMAGE_NAME)
        .filter(|n| !n.is_empty())
    {
        return Some(image_name(name));
    }
    let r = desc
        .annotations
        .get(oci::ANNOTATION_REF_NAME)
        .filter(|n| !n.is_empty())?;
    if r.contains(['/', ':', '@']) {
        return Some(image_name(r));
    }
    let repository = match base {
        Some(b) => split_name(b).0.to_string(),
        None => format!("import-{}", short_hex(&desc.digest)),
    };
    Some(image_name(&format!("{repository}:{r}")))
}

/// Naming rule 5 (see the module's documentation).
pub(super) fn unnamed_name(digest: &str, base: Option<&str>, only_one: bool) -> String {
    match base {
        Some(b) if only_one => image_name(b),
        Some(b) => image_name(&format!("{}@{digest}", split_name(b).0)),
        None => image_name(&format!("import-{}@{digest}", short_hex(digest))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_rules() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let with = |pairs: &[(&str, &str)]| {
            let mut d = descriptor(oci::MEDIA_OCI_MANIFEST, digest.clone(), 1);
            for (k, v) in pairs {
                d.annotations.insert(k.to_string(), v.to_string());
            }
            d
        };
        let full = with(&[
            (ANNOTATION_IMAGE_NAME, "r.io/a/b:c"),
            (oci::ANNOTATION_REF_NAME, "c"),
        ]);
        assert_eq!(
            annotated_name(&full, Some("x")),
            Some(image_name("r.io/a/b:c"))
        );
        let reference = with(&[(oci::ANNOTATION_REF_NAME, "r.io/a/b:c")]);
        assert_eq!(
            annotated_name(&reference, None),
            Some(image_name("r.io/a/b:c"))
        );
        let tag = with(&[(oci::ANNOTATION_REF_NAME, "v2")]);
        assert_eq!(
            annotated_name(&tag, Some("localhost:5000/me/app:old")),
            Some(image_name("localhost:5000/me/app:v2"))
        );
        assert_eq!(
            annotated_name(&tag, None),
            Some(image_name(
                "import-ababababab:v2"
                    .replace("ababababab", "abababababab")
                    .as_str()
            ))
        );
        assert_eq!(annotated_name(&with(&[]), Some("x")), None);
        assert_eq!(
            unnamed_name(&digest, Some("me/app:1"), true),
            image_name("me/app:1")
        );
        assert_eq!(
            unnamed_name(&digest, Some("me/app:1"), false),
            image_name(&format!("me/app@{digest}"))
        );
        assert_eq!(
            unnamed_name(&digest, None, true),
            image_name(&format!("import-abababababab@{digest}"))
        );
        assert_eq!(familiar("docker.io/library/busybox"), "busybox");
        assert_eq!(familiar("docker.io/user/x"), "user/x");
        assert_eq!(familiar("quay.io/a/b"), "quay.io/a/b");
        assert_eq!(
            split_name("localhost:5000/a/b:t@sha256:x"),
            ("localhost:5000/a/b", Some("t"), Some("sha256:x"))
        );
        assert_eq!(
            split_name("localhost:5000/a"),
            ("localhost:5000/a", None, None)
        );
    }
}
