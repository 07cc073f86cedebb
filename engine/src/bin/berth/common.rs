//! What several commands share: running one request per named container
//! as docker does (each name printed when it succeeds, the errors printed
//! together, exit 1), image references as docker normalises them, the
//! `X-Registry-Auth` header from config.json, `--filter` and `--format`.

use std::future::Future;

use base64::Engine as _;
use berth_client::docker_config::{self, DockerConfig};

use crate::output::template::{self, Format, FormatKind};
use crate::StatusError;

/// Runs `f` for every target: on success prints what it returns (when
/// not empty); the errors go to stderr together and make the exit code 1.
pub async fn for_each<F, Fut>(targets: &[String], mut f: F) -> anyhow::Result<()>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = anyhow::Result<Option<String>>>,
{
    let mut errors = Vec::new();
    for target in targets {
        match f(target.clone()).await {
            Ok(Some(line)) => println!("{line}"),
            Ok(None) => {}
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(StatusError::new(1, errors.join("\n")).into())
    }
}

/// An image reference split as the API takes it: repository (as given,
/// familiar) and tag or digest.
#[derive(Debug, PartialEq)]
pub struct Reference {
    pub repo: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Reference {
    pub fn parse(text: &str) -> Reference {
        let (rest, digest) = match text.split_once('@') {
            Some((r, d)) => (r, Some(d.to_string())),
            None => (text, None),
        };
        let slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (repo, tag) = match rest[slash..].rfind(':') {
            Some(i) => (&rest[..slash + i], Some(rest[slash + i + 1..].to_string())),
            None => (rest, None),
        };
        Reference {
            repo: repo.to_string(),
            tag,
            digest,
        }
    }

    /// The tag or digest the API's `tag` parameter takes ("latest" by default).
    pub fn tag_or_digest(&self) -> String {
        self.digest
            .clone()
            .or_else(|| self.tag.clone())
            .unwrap_or_else(|| "latest".into())
    }

    /// The fully qualified name docker prints after a pull
    /// ("docker.io/library/busybox:latest").
    pub fn full(&self) -> String {
        let repo = full_repo(&self.repo);
        match (&self.digest, &self.tag) {
            (Some(d), _) => format!("{repo}@{d}"),
            (None, Some(t)) => format!("{repo}:{t}"),
            (None, None) => format!("{repo}:latest"),
        }
    }
}

/// "busybox" → "docker.io/library/busybox"; names with a registry host as is.
pub fn full_repo(repo: &str) -> String {
    if docker_config::registry_host(repo) != docker_config::DOCKER_HUB {
        return repo.to_string();
    }
    let path = repo.strip_prefix("docker.io/").unwrap_or(repo);
    if path.contains('/') {
        format!("docker.io/{path}")
    } else {
        format!("docker.io/library/{path}")
    }
}

/// The `X-Registry-Auth` header for `reference`: the credentials of its
/// registry in config.json, or `{}`; base64url of the JSON, as docker sends.
pub fn registry_auth(reference: &str) -> String {
    let host = docker_config::registry_host(reference);
    let entry = docker_config::default_path()
        .and_then(|p| DockerConfig::load(&p).ok())
        .and_then(|c| c.auth(host).cloned());
    let body = match entry {
        Some(e) if !e.identity_token.is_empty() => serde_json::json!({
            "identitytoken": e.identity_token, "serveraddress": host,
        }),
        Some(e) => serde_json::json!({
            "username": e.username, "password": e.password, "serveraddress": host,
        }),
        None => serde_json::json!({}),
    };
    base64::engine::general_purpose::URL_SAFE.encode(body.to_string())
}

/// `--filter key=value` flags as the API's `filters` JSON
/// (`{"key": {"value": true}}`), or None without any.
pub fn filters_json(filters: &[String]) -> anyhow::Result<Option<String>> {
    if filters.is_empty() {
        return Ok(None);
    }
    let mut map = serde_json::Map::new();
    for f in filters {
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| StatusError::new(125, "bad format of filter (expected name=value)"))?;
        let entry = map
            .entry(k.trim().to_lowercase())
            .or_insert_with(|| serde_json::json!({}));
        if let Some(obj) = entry.as_object_mut() {
            obj.insert(v.trim().to_string(), serde_json::Value::Bool(true));
        }
    }
    Ok(Some(serde_json::Value::Object(map).to_string()))
}

/// Prints rows as `--format` asks (the command's default table when it
/// asks for none), `headers` naming each field's column.
pub fn print_rows(
    format: Option<&str>,
    default_table: &str,
    rows: &[serde_json::Value],
    headers: &[(&str, &str)],
) -> anyhow::Result<()> {
    let text = match template::kind(format) {
        FormatKind::DefaultTable => Format::parse(default_table)?.render_rows(rows, headers)?,
        FormatKind::Json => Format::parse("{{json .}}")?.render_rows(rows, headers)?,
        FormatKind::Template(t) => Format::parse(t)
            .map_err(|e| StatusError::new(1, e.to_string()))?
            .render_rows(rows, headers)?,
    };
    print!("{text}");
    Ok(())
}

/// Asks "Are you sure you want to continue? [y/N]" after `warning`; true
/// when the user answers yes.
pub fn confirm(warning: &str) -> bool {
    use std::io::Write;
    eprint!("{warning}\nAre you sure you want to continue? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    if std::io::stdin().read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim().to_lowercase().as_str(), "y" | "yes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_and_normalise() {
        let r = Reference::parse("localhost:5000/a/b:v1");
        assert_eq!(
            (r.repo.as_str(), r.tag.as_deref()),
            ("localhost:5000/a/b", Some("v1"))
        );
        assert_eq!(r.full(), "localhost:5000/a/b:v1");
        let r = Reference::parse("busybox");
        assert_eq!(r.tag_or_digest(), "latest");
        assert_eq!(r.full(), "docker.io/library/busybox:latest");
        let r = Reference::parse("127.0.0.1:5000/x@sha256:ab");
        assert_eq!(
            (r.repo.as_str(), r.tag_or_digest().as_str()),
            ("127.0.0.1:5000/x", "sha256:ab")
        );
        assert_eq!(full_repo("user/app"), "docker.io/user/app");
    }

    #[test]
    fn filters_become_the_api_map() {
        let f = filters_json(&["status=exited".into(), "label=a=b".into()]).unwrap();
        assert_eq!(
            f.unwrap(),
            r#"{"label":{"a=b":true},"status":{"exited":true}}"#
        );
        assert!(filters_json(&[]).unwrap().is_none());
        assert!(filters_json(&["nokey".into()]).is_err());
    }
}
