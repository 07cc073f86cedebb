//! Container paths as strings, before any file is touched: Docker's
//! cleaning, its split of a requested path into the directory resolved in
//! the container and the last element kept as given, and the names an
//! archive's entries get. Pure functions; the resolution itself is in
//! [`super::fs`].

/// Go's `path.Clean` for an absolute path: no `.` or `..` elements, no
/// doubled or trailing slashes. `..` above the root stays at the root.
pub fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Whether Go's `filepath.Base` of `path` is `.`.
fn specifies_current_dir(path: &str) -> bool {
    path == "." || path.ends_with("/.")
}

/// A requested path as Docker reads it: absolute and clean, but keeping a
/// trailing `/.` or `/` (they mean "the directory's content" and "must be
/// a directory").
pub fn absolute(path: &str) -> String {
    let mut abs = clean(&format!("/{path}"));
    if specifies_current_dir(path) && !specifies_current_dir(&abs) {
        if !abs.ends_with('/') {
            abs.push('/');
        }
        abs.push('.');
    }
    if path.ends_with('/') && !abs.ends_with('/') {
        abs.push('/');
    }
    abs
}

/// Splits an [`absolute`] path after its last slash: the directory (to
/// resolve, following symbolic links in the container) and the last
/// element (kept; empty or `.` for the directory itself).
pub fn split(abs: &str) -> (&str, &str) {
    match abs.rfind('/') {
        Some(i) => (&abs[..=i], &abs[i + 1..]),
        None => ("/", abs),
    }
}

/// Go's `filepath.Base`: the last element, trailing slashes ignored;
/// `/` for the root.
pub fn base(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return "/";
    }
    match trimmed.rfind('/') {
        Some(i) => &trimmed[i + 1..],
        None => trimmed,
    }
}

/// Joins a clean absolute directory and a relative path.
pub fn join(dir: &str, rel: &str) -> String {
    clean(&format!("{dir}/{rel}"))
}

/// The parent of a clean absolute path and its last element; `None` for
/// the root.
pub fn parent_and_name(path: &str) -> Option<(&str, &str)> {
    if path == "/" {
        return None;
    }
    let i = path.rfind('/')?;
    let parent = if i == 0 { "/" } else { &path[..i] };
    Some((parent, &path[i + 1..]))
}

/// Where a tar entry (or a hard link's target) named `name` goes when
/// extracted into `dest` (absolute, clean), as Docker's untar, which runs
/// chrooted in the container, computes it: joined and cleaned, so `..`
/// stops at the container's root and a leading `/` means `dest`; `None`
/// when the result is not `dest` or beneath it.
pub fn entry_path(dest: &str, name: &str) -> Option<String> {
    let path = join(dest, name);
    let inside = dest == "/" || path == dest || path.starts_with(&format!("{dest}/"));
    inside.then_some(path)
}

/// The name of an archive entry for `rel` (relative to the copied
/// resource, empty for the resource itself) under `rebase`, the name the
/// resource gets; directories end with `/`. A directory's content
/// (`dir/.`) comes as `./`, `./a`, and the root as `/`, `/a`, as Docker's.
pub fn entry_name(rebase: &str, rel: &str, is_dir: bool) -> String {
    let mut name = match (rebase, rel.is_empty()) {
        (".", true) => ".".to_string(),
        (".", false) => format!("./{rel}"),
        ("/", true) => "/".to_string(),
        ("/", false) => format!("/{rel}"),
        (r, true) => r.to_string(),
        (r, false) => format!("{r}/{rel}"),
    };
    if is_dir && !name.ends_with('/') {
        name.push('/');
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_like_go() {
        assert_eq!(clean("/a/../../b/./c//"), "/b/c");
        assert_eq!(clean(""), "/");
        assert_eq!(clean("/.."), "/");
    }

    #[test]
    fn keeps_trailing_dot_and_slash() {
        assert_eq!(absolute("dir/."), "/dir/.");
        assert_eq!(absolute("/dir/"), "/dir/");
        assert_eq!(absolute("/dir"), "/dir");
        assert_eq!(absolute("."), "/.");
        assert_eq!(absolute("/"), "/");
        assert_eq!(absolute("/a/../b/"), "/b/");
        assert_eq!(split("/dir/."), ("/dir/", "."));
        assert_eq!(split("/dir/"), ("/dir/", ""));
        assert_eq!(split("/a/b"), ("/a/", "b"));
    }

    #[test]
    fn base_as_go() {
        assert_eq!(base("/dir/."), ".");
        assert_eq!(base("/link/"), "link");
        assert_eq!(base("/"), "/");
        assert_eq!(base("/a/b"), "b");
    }

    #[test]
    fn entries_never_climb_out() {
        assert_eq!(
            entry_path("/d", "/etc/passwd").as_deref(),
            Some("/d/etc/passwd")
        );
        assert_eq!(entry_path("/d", "a/../b").as_deref(), Some("/d/b"));
        assert_eq!(entry_path("/d", "./").as_deref(), Some("/d"));
        assert_eq!(
            entry_path("/tmp", "../../../tmp/x").as_deref(),
            Some("/tmp/x")
        );
        assert_eq!(entry_path("/d", "../x"), None);
        assert_eq!(entry_path("/d", "a/../../x"), None);
        assert_eq!(entry_path("/d", "../dx"), None);
        assert_eq!(entry_path("/", "../../x").as_deref(), Some("/x"));
    }

    #[test]
    fn names_entries_as_docker() {
        assert_eq!(entry_name("dir", "", true), "dir/");
        assert_eq!(entry_name("dir", "a/b", false), "dir/a/b");
        assert_eq!(entry_name(".", "", true), "./");
        assert_eq!(entry_name("/", "", true), "/");
        assert_eq!(entry_name("/", "bin", true), "/bin/");
        assert_eq!(entry_name(".", "a", true), "./a/");
        assert_eq!(entry_name("f", "", false), "f");
        assert_eq!(parent_and_name("/a/b"), Some(("/a", "b")));
        assert_eq!(parent_and_name("/a"), Some(("/", "a")));
        assert_eq!(parent_and_name("/"), None);
    }
}
