//! `exec`: docker's sequence: create the exec, start it attached (the
//! connection upgrade) or detached, relay stdio, then inspect it for its
//! exit code.

use clap::Args;
use hyper::Method;
use serde_json::{json, Value};

use crate::client::{enc, Client};
use crate::opts::{parse_env_file, resolve_env};
use crate::stream::{relay, RelayEnd, RelayOptions};
use crate::terminal::{self, DEFAULT_DETACH_KEYS};
use crate::StatusError;

#[derive(Args)]
pub struct ExecArgs {
    /// Detached mode: run command in the background
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Keep STDIN open even if not attached
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Set environment variables
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Read in a file of environment variables
    #[arg(long = "env-file")]
    pub env_file: Vec<String>,
    /// Username or UID (format: "<name|uid>[:<group|gid>]")
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Working directory inside the container
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// Give extended privileges to the command
    #[arg(long)]
    pub privileged: bool,
    /// Override the key sequence for detaching a container
    #[arg(long = "detach-keys")]
    pub detach_keys: Option<String>,
    pub container: String,
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND [ARG...]"
    )]
    pub command: Vec<String>,
}

pub async fn exec(c: &Client, a: ExecArgs) -> anyhow::Result<()> {
    if !a.detach {
        crate::run::check_tty_input(a.tty, a.interactive)?;
    }
    let mut env = Vec::new();
    for f in &a.env_file {
        env.extend(parse_env_file(std::path::Path::new(f))?);
    }
    env.extend(a.env.iter().map(|e| resolve_env(e)));
    let attach = !a.detach;
    let mut body = json!({
        "User": a.user.clone().unwrap_or_default(),
        "Privileged": a.privileged,
        "Tty": a.tty,
        "AttachStdin": attach && a.interactive,
        "AttachStdout": attach,
        "AttachStderr": attach,
        "Detach": a.detach,
        "Cmd": a.command,
        "Env": env,
        "WorkingDir": a.workdir.clone().unwrap_or_default(),
    });
    if let Some(k) = &a.detach_keys {
        body["DetachKeys"] = json!(k);
    }
    if a.tty {
        if let Some((rows, cols)) = terminal::size(libc::STDOUT_FILENO) {
            body["ConsoleSize"] = json!([rows, cols]);
        }
    }
    let created: Value = c
        .json(
            Method::POST,
            &format!("/containers/{}/exec", enc(&a.container)),
            Some(&body),
        )
        .await?;
    let id = created["Id"].as_str().unwrap_or_default().to_string();
    let start = json!({"Detach": a.detach, "Tty": a.tty});
    if a.detach {
        c.bytes(Method::POST, &format!("/exec/{id}/start"), Some(&start))
            .await?;
        return Ok(());
    }
    let keys = match &a.detach_keys {
        Some(k) => terminal::detach_keys(k)?,
        None => DEFAULT_DETACH_KEYS.to_vec(),
    };
    let conn = c
        .upgrade(Method::POST, &format!("/exec/{id}/start"), Some(&start))
        .await?;
    if a.tty {
        if let Some((rows, cols)) = terminal::size(libc::STDOUT_FILENO) {
            let _ = c
                .post(&format!("/exec/{id}/resize?h={rows}&w={cols}"))
                .await;
        }
    }
    let end = relay(
        conn,
        RelayOptions {
            tty: a.tty,
            stdin: a.interactive,
            detach_keys: keys,
        },
    )
    .await?;
    if end == RelayEnd::Detached {
        return Ok(());
    }
    let info: Value = c
        .json(Method::GET, &format!("/exec/{id}/json"), None)
        .await?;
    match info["ExitCode"].as_i64().unwrap_or(0) {
        0 => Ok(()),
        code => Err(StatusError::silent(code as i32).into()),
    }
}
