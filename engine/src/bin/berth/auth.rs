//! login and logout: the registry credentials in `~/.docker/config.json`
//! (or `$DOCKER_CONFIG/config.json`), written in docker's format (`auths`
//! keyed by registry, `auth` = base64 of user:password, tab-indented, mode
//! 0600), after the daemon checked them (`POST /auth`).

use std::path::PathBuf;

use base64::Engine as _;
use clap::Args;
use hyper::Method;
use serde_json::{json, Value};

use crate::client::Client;
use crate::StatusError;

#[derive(Args)]
pub struct LoginArgs {
    /// Username
    #[arg(short = 'u', long)]
    pub username: Option<String>,
    /// Password or Personal Access Token (PAT)
    #[arg(short = 'p', long)]
    pub password: Option<String>,
    /// Take the Password or Personal Access Token (PAT) from stdin
    #[arg(long = "password-stdin")]
    pub password_stdin: bool,
    pub server: Option<String>,
}

#[derive(Args)]
pub struct LogoutArgs {
    pub server: Option<String>,
}

/// The registry a login or logout names: Docker Hub's login key by default.
fn server_key(server: Option<&str>) -> String {
    match server {
        None => berth_client::docker_config::DOCKER_HUB_LOGIN_KEY.to_string(),
        Some(s) => {
            let host = berth_client::docker_config::normalise_host(s);
            if host == berth_client::docker_config::DOCKER_HUB {
                berth_client::docker_config::DOCKER_HUB_LOGIN_KEY.to_string()
            } else {
                s.trim_start_matches("https://")
                    .trim_start_matches("http://")
                    .trim_end_matches('/')
                    .to_string()
            }
        }
    }
}

pub(crate) fn config_path() -> anyhow::Result<PathBuf> {
    berth_client::docker_config::default_path().ok_or_else(|| {
        anyhow::anyhow!("no docker config file: neither DOCKER_CONFIG nor HOME is set")
    })
}

pub(crate) fn load_config(path: &PathBuf) -> anyhow::Result<Value> {
    match std::fs::read(path) {
        Ok(text) => Ok(serde_json::from_slice(&text)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(json!({"auths": {}})),
        Err(e) => Err(e.into()),
    }
}

/// Writes config.json as docker does (tab-indented, mode 0600), through a
/// temporary file renamed over it.
pub(crate) fn save_config(path: &PathBuf, config: &Value) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut text = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut text, fmt);
    serde::Serialize::serialize(config, &mut ser)?;
    let tmp = path.with_extension("json.tmp");
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()?;
    }
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

pub async fn login(c: &Client, a: LoginArgs) -> anyhow::Result<()> {
    let key = server_key(a.server.as_deref());
    let mut password = a.password.clone();
    if password.is_some() {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
    }
    if a.password_stdin {
        if password.is_some() {
            return Err(StatusError::new(
                1,
                "--password and --password-stdin are mutually exclusive",
            )
            .into());
        }
        if a.username.is_none() {
            return Err(
                StatusError::new(1, "Must provide --username with --password-stdin").into(),
            );
        }
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
        password = Some(text.trim_end_matches(['\n', '\r']).to_string());
    }
    let mut username = a.username.clone();
    if username.is_none() || password.is_none() {
        // Interactive, as docker login: only on a terminal.
        if !nix::unistd::isatty(std::io::stdin()).unwrap_or(false) {
            return Err(StatusError::new(
                1,
                "Error: Cannot perform an interactive login from a non TTY device",
            )
            .into());
        }
        if username.is_none() {
            let typed = prompt("Username: ")?;
            if typed.is_empty() {
                return Err(StatusError::new(1, "Error: Non-null Username Required").into());
            }
            username = Some(typed);
        }
        if password.is_none() {
            let typed = prompt_hidden("Password: ")?;
            if typed.is_empty() {
                return Err(StatusError::new(1, "Error: Password Required").into());
            }
            password = Some(typed);
        }
    }
    let (Some(username), Some(password)) = (username, password) else {
        return Err(StatusError::new(1, "Error: Non-null Username Required").into());
    };
    let body = json!({"username": username, "password": password, "serveraddress": key});
    let resp: Value = c.json(Method::POST, "/auth", Some(&body)).await?;
    let path = config_path()?;
    let mut config = load_config(&path)?;
    if !config["auths"].is_object() {
        config["auths"] = json!({});
    }
    let mut entry = json!({
        "auth": base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}")),
    });
    if let Some(token) = resp["IdentityToken"].as_str().filter(|t| !t.is_empty()) {
        entry = json!({"auth": "", "identitytoken": token});
    }
    config["auths"][&key] = entry;
    save_config(&path, &config)?;
    eprintln!(
        "\nWARNING! Your credentials are stored unencrypted in '{}'.\n\
         Configure a credential helper to remove this warning. See\n\
         https://docs.docker.com/go/credential-store/\n",
        path.display()
    );
    println!(
        "{}",
        resp["Status"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or("Login Succeeded")
    );
    Ok(())
}

/// Asks on the terminal; the answer without its newline.
fn prompt(question: &str) -> anyhow::Result<String> {
    use std::io::Write;
    print!("{question}");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\n', '\r']).trim().to_string())
}

/// Asks on the terminal with echo off (a password).
fn prompt_hidden(question: &str) -> anyhow::Result<String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin)?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&stdin, SetArg::TCSANOW, &quiet)?;
    let answer = prompt(question);
    // The terminal gets its echo back whatever the read did.
    let restored = tcsetattr(&stdin, SetArg::TCSANOW, &saved);
    println!();
    restored?;
    answer
}

pub fn logout(a: LogoutArgs) -> anyhow::Result<()> {
    let key = server_key(a.server.as_deref());
    let path = config_path()?;
    let mut config = load_config(&path)?;
    let host = berth_client::docker_config::normalise_host(&key);
    let keys: Vec<String> = config["auths"]
        .as_object()
        .map(|m| {
            m.keys()
                .filter(|k| berth_client::docker_config::normalise_host(k) == host)
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    // docker says so whether or not there was anything to remove.
    println!("Removing login credentials for {key}");
    if keys.is_empty() {
        return Ok(());
    }
    if let Some(m) = config["auths"].as_object_mut() {
        for k in keys {
            m.remove(&k);
        }
    }
    save_config(&path, &config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_keys() {
        assert_eq!(server_key(None), "https://index.docker.io/v1/");
        assert_eq!(server_key(Some("docker.io")), "https://index.docker.io/v1/");
        assert_eq!(server_key(Some("127.0.0.1:5000")), "127.0.0.1:5000");
        assert_eq!(server_key(Some("https://reg.example/")), "reg.example");
    }
}
