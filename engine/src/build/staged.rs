//! COPY and ADD sources that are not files of the context: here-documents
//! (`COPY <<EOF /dst`, several in one step, their variables expanded when
//! the delimiter is unquoted) and, for ADD, http(s) URLs, downloaded with
//! reqwest (`--checksum=sha256:<hex>` checked, mode 0600 and the
//! `Last-Modified` time as Docker sets them, the name from the URL's last
//! segment). They are written into a private directory under the engine's
//! builds directory, and from there copied as context files are, so the
//! step's cache key is their content; the directory goes with the step.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::StreamExt;
use sha2::{Digest as _, Sha256};

use super::context::ContextDir;
use super::dockerfile::instructions::Copy;
use super::dockerfile::parser::parse_heredoc;
use super::dockerfile::shell::expand_heredoc;
use super::pipeline::BuildError;

/// Sources written for one step.
pub struct Staged {
    dir: ContextDir,
    /// The instruction with its sources renamed to the staged files.
    pub copy: Copy,
    /// Whether they came from URLs (ADD does not extract those).
    pub remote: bool,
}

impl Staged {
    pub fn root(&self) -> &Path {
        self.dir.root()
    }
}

/// Whether a source is a URL ADD downloads.
pub fn is_url(source: &str) -> bool {
    source.starts_with("http://") || source.starts_with("https://")
}

/// Whether a step has sources to stage.
pub fn needs_staging(copy: &Copy, what: &str) -> bool {
    !copy.heredocs.is_empty() || (what == "ADD" && copy.sources.iter().any(|s| is_url(s)))
}

fn unique() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "staged-{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn write_error(path: &Path, e: std::io::Error) -> BuildError {
    BuildError::Write(format!("{}: {e}", path.display()))
}

/// Writes the step's heredocs and downloads its URLs into a directory of
/// their own under `parent`; `env` expands unquoted heredocs.
pub async fn stage(
    parent: &Path,
    copy: &Copy,
    what: &str,
    env: &[(String, String)],
    escape: char,
) -> Result<Staged, BuildError> {
    let dir = ContextDir::create(parent, &unique())?;
    let mut heredocs = copy.heredocs.iter();
    let mut sources = Vec::new();
    let mut remote = false;
    let mut local = false;
    for source in &copy.sources {
        if let Some(opener) = parse_heredoc(source) {
            let doc = heredocs
                .find(|d| d.name == opener.name)
                .ok_or_else(|| BuildError::Write(format!("{what} {source}: no such heredoc")))?;
            let content = if doc.expand {
                expand_heredoc(&doc.content, &env, escape).map_err(|e| BuildError::Expand {
                    word: doc.content.clone(),
                    source: e,
                })?
            } else {
                doc.content.clone()
            };
            let path = dir.root().join(&doc.name);
            std::fs::write(&path, content).map_err(|e| write_error(&path, e))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
                .map_err(|e| write_error(&path, e))?;
            sources.push(doc.name.clone());
            local = true;
        } else if what == "ADD" && is_url(source) {
            let name = url_file_name(source, &copy.dest)?;
            let path = dir.root().join(&name);
            download(source, &path, copy.checksum.as_deref()).await?;
            sources.push(name);
            remote = true;
        } else {
            return Err(BuildError::Unsupported(format!(
                "{what} of context files together with heredocs or URLs in one step"
            )));
        }
    }
    if copy.checksum.is_some() && !remote {
        return Err(BuildError::Write(
            "checksum can't be specified for non-HTTP(S) sources".into(),
        ));
    }
    if remote && local {
        return Err(BuildError::Unsupported(format!(
            "{what} of heredocs together with URLs in one step"
        )));
    }
    Ok(Staged {
        dir,
        copy: Copy {
            sources,
            heredocs: Vec::new(),
            ..copy.clone()
        },
        remote,
    })
}

/// The file name a URL's content takes: its path's last segment (the
/// destination names the file when it is not a directory).
fn url_file_name(url: &str, dest: &str) -> Result<String, BuildError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| BuildError::Fetch {
        url: url.to_string(),
        message: e.to_string(),
    })?;
    let last = parsed
        .path_segments()
        .and_then(|mut s| s.next_back())
        .unwrap_or("")
        .to_string();
    if last.is_empty() || last == "." || last == ".." {
        if dest.ends_with('/') {
            return Err(BuildError::Fetch {
                url: url.to_string(),
                message: "cannot determine filename from url".into(),
            });
        }
        return Ok("download".into());
    }
    Ok(last)
}

/// An error and what caused it (reqwest's own words say little: "error
/// sending request").
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// `sha256:<64 hex>` as `--checksum` gives it.
fn parse_checksum(text: &str) -> Result<String, BuildError> {
    let hex = text
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
        .ok_or_else(|| {
            BuildError::Write(format!(
                "invalid checksum {text:?}: expected sha256:<64 hex digits>"
            ))
        })?;
    Ok(hex.to_ascii_lowercase())
}

/// Downloads `url` into `path`: mode 0600, the server's Last-Modified as
/// its time, its digest checked against `checksum`.
async fn download(url: &str, path: &Path, checksum: Option<&str>) -> Result<(), BuildError> {
    let expected = checksum.map(parse_checksum).transpose()?;
    let fetch = |message: String| BuildError::Fetch {
        url: url.to_string(),
        message,
    };
    let response = reqwest::Client::new()
        .get(url)
        .send()
        .await
        .map_err(|e| fetch(with_causes(&e)))?;
    let status = response.status();
    if !status.is_success() {
        return Err(fetch(format!("status {status}")));
    }
    let modified = response
        .headers()
        .get(reqwest::header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    let mut file = std::fs::File::create(path).map_err(|e| write_error(path, e))?;
    let mut digest = Sha256::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| fetch(with_causes(&e)))?;
        digest.update(&chunk);
        file.write_all(&chunk).map_err(|e| write_error(path, e))?;
    }
    let got = hex::encode(digest.finalize());
    if let Some(expected) = expected {
        if got != expected {
            return Err(BuildError::Checksum {
                url: url.to_string(),
                expected: format!("sha256:{expected}"),
                got: format!("sha256:{got}"),
            });
        }
    }
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|e| write_error(path, e))?;
    if let Some(time) = modified {
        file.set_modified(time).map_err(|e| write_error(path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_checksums() {
        assert_eq!(
            url_file_name("http://h/a/b/file.txt?x=1", "/d/").unwrap(),
            "file.txt"
        );
        assert_eq!(url_file_name("http://h/", "/d/file").unwrap(), "download");
        assert!(url_file_name("http://h/", "/d/").is_err());
        let hex = "ab".repeat(32);
        assert_eq!(parse_checksum(&format!("sha256:{hex}")).unwrap(), hex);
        assert!(parse_checksum("md5:00").is_err());
        assert!(parse_checksum("sha256:zz").is_err());
        assert!(is_url("https://x/y"));
        assert!(!is_url("file.txt"));
    }
}
