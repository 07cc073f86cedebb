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

/// Checks an image reference as docker's `reference` package does before
/// sending it; the error is docker's text.
pub fn validate_reference(text: &str) -> Result<(), String> {
    const BAD: &str = "invalid reference format";
    let r = Reference::parse(text);
    if r.repo.is_empty() {
        return Err(BAD.into());
    }
    let (domain, path) = match r.repo.split_once('/') {
        Some((d, p)) if d.contains(['.', ':']) || d == "localhost" => (Some(d), p),
        _ => (None, r.repo.as_str()),
    };
    if let Some(d) = domain {
        let (host, port) = d.split_once(':').unwrap_or((d, ""));
        let host_ok = !host.is_empty()
            && host.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if !host_ok || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BAD.into());
        }
    }
    let component_ok = |c: &str| {
        let b = c.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|x| x.is_ascii_alphanumeric() || matches!(x, b'.' | b'_' | b'-'))
    };
    if !path.split('/').all(component_ok) {
        return Err(BAD.into());
    }
    if path.bytes().any(|b| b.is_ascii_uppercase()) {
        let shown = if domain.is_none() && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        return Err(format!(
            "{BAD}: repository name ({shown}) must be lowercase"
        ));
    }
    if let Some(tag) = &r.tag {
        let b = tag.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 128
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b.iter()
                .all(|x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'));
        if !ok {
            return Err(BAD.into());
        }
    }
    if let Some(digest) = &r.digest {
        let ok = match digest.split_once(':') {
            Some(("sha256", hex)) => hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
            Some((alg, hex)) => !alg.is_empty() && hex.len() >= 32,
            None => false,
        };
        if !ok {
            return Err(BAD.into());
        }
    }
    Ok(())
}

/// An I/O error worded as Go words it ("no such file or directory").
pub fn go_io_error(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = match text.find(" (os error") {
        Some(i) => &text[..i],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
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
/// asks for none, drawn for the terminal when stdout is one), `headers`
/// naming each field's column.
pub fn print_rows(
    format: Option<&str>,
    default_table: &str,
    rows: &[serde_json::Value],
    headers: &[(&str, &str)],
) -> anyhow::Result<()> {
    let text = match template::kind(format) {
        FormatKind::DefaultTable => {
            let table = Format::parse(default_table)?;
            // On a terminal: bold, coloured and cut to its width.
            match crate::output::style::terminal() {
                Some(columns) => {
                    crate::output::style::table(&table.render_unaligned(rows, headers)?, columns)
                }
                None => table.render_rows(rows, headers)?,
            }
        }
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

/// `berth network inspect`, `berth volume inspect`: `GET {base}/{name}` for
/// each name, printed as one indented JSON array or through `--format`;
/// the names not found are reported together at the end (exit status 1),
/// as the docker CLI does.
pub async fn inspect_each(
    c: &crate::client::Client,
    base: &str,
    names: &[String],
    format: Option<&str>,
) -> anyhow::Result<()> {
    use std::io::Write;
    let format = match format {
        Some(f) if !f.is_empty() && f != "json" => {
            Some(Format::parse(f).map_err(|e| StatusError::new(1, e.to_string()))?)
        }
        _ => None,
    };
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for name in names {
        let path = format!("{base}/{}", crate::client::enc(name));
        match c.bytes(hyper::Method::GET, &path, None).await {
            Ok(raw) => docs.push(raw.to_vec()),
            Err(e) if e.status() == Some(404) => errors.push(e.to_string()),
            Err(e) => return Err(e.into()),
        }
    }
    let mut out = std::io::stdout().lock();
    match format {
        None => out.write_all(crate::output::json::indented_array(&docs).as_bytes())?,
        Some(f) => {
            for doc in &docs {
                template::remember_key_order(&String::from_utf8_lossy(doc));
                let value: serde_json::Value = serde_json::from_slice(doc)?;
                let text = f
                    .render(&value)
                    .map_err(|e| StatusError::new(1, e.to_string()))?;
                writeln!(out, "{text}")?;
            }
        }
    }
    out.flush()?;
    if errors.is_empty() {
        Ok(())
    } else {
        Err(StatusError::new(1, errors.join("\n")).into())
    }
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
    fn references_are_checked_as_docker_does() {
        assert!(validate_reference("busybox").is_ok());
        assert!(validate_reference("127.0.0.1:5000/a/b-c_d.e:v1.0").is_ok());
        assert!(validate_reference(&format!("x@sha256:{}", "a".repeat(64))).is_ok());
        assert_eq!(
            validate_reference("nope/x@sha256:zzz").unwrap_err(),
            "invalid reference format"
        );
        assert_eq!(
            validate_reference("Bad:Tag").unwrap_err(),
            "invalid reference format: repository name (library/Bad) must be lowercase"
        );
        assert!(validate_reference("a:b:c").is_err());
        assert!(validate_reference("-a").is_err());
        let e = std::io::Error::from_raw_os_error(2);
        assert_eq!(go_io_error(&e), "no such file or directory");
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
