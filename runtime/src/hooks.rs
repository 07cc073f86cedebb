//! OCI hooks: programs run at points of the lifecycle, with the container's
//! state on their standard input.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{stage} hook {path}: start: {source}")]
    Start {
        stage: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{stage} hook {path}: {status}{detail}")]
    Failed {
        stage: &'static str,
        path: PathBuf,
        status: String,
        detail: String,
    },
    #[error("{stage} hook {path}: timed out after {seconds}s")]
    Timeout {
        stage: &'static str,
        path: PathBuf,
        seconds: i64,
    },
}

/// Runs each hook in order, stopping at the first failure.
pub fn run_hooks(stage: &'static str, hooks: &[Hook], state: &[u8]) -> Result<(), HookError> {
    for hook in hooks {
        run_hook(stage, hook, state)?;
    }
    Ok(())
}

/// What is in `pipe` now, without waiting for more or for its end.
fn read_available(mut pipe: impl Read + std::os::fd::AsFd) -> String {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let _ = fcntl(pipe.as_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    while bytes.len() < 64 * 1024 {
        match pipe.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn run_hook(stage: &'static str, hook: &Hook, state: &[u8]) -> Result<(), HookError> {
    let path = hook.path().clone();
    let mut cmd = Command::new(&path);
    if let Some(args) = hook.args() {
        if let Some((argv0, rest)) = args.split_first() {
            cmd.arg0(argv0).args(rest);
        }
    }
    cmd.env_clear();
    for kv in hook.env().iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| HookError::Start {
        stage,
        path: path.clone(),
        source,
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its input must not make us fail.
        let _ = stdin.write_all(state);
    }
    let deadline = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| (t, Instant::now() + Duration::from_secs(t as u64)));
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(source) => {
                return Err(HookError::Start {
                    stage,
                    path,
                    source,
                })
            }
        }
        if let Some((seconds, at)) = deadline {
            if Instant::now() >= at {
                let _ = child.kill();
                let _ = child.wait();
                return Err(HookError::Timeout {
                    stage,
                    path,
                    seconds,
                });
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    if status.success() {
        return Ok(());
    }
    // Only what the hook wrote is read, never waiting for the pipe to
    // close: a child it left behind may hold it open for ever.
    let mut output = child.stderr.take().map(read_available).unwrap_or_default();
    if output.trim().is_empty() {
        output = child.stdout.take().map(read_available).unwrap_or_default();
    }
    let detail = match output.trim() {
        "" => String::new(),
        text => format!(": {}", text.chars().take(500).collect::<String>()),
    };
    Err(HookError::Failed {
        stage,
        path,
        status: status.to_string(),
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(args: &[&str], timeout: Option<i64>) -> Hook {
        let mut v = serde_json::json!({"path": "/bin/sh", "args": args});
        if let Some(t) = timeout {
            v["timeout"] = t.into();
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn state_reaches_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let script = format!("cat > {}", out.display());
        run_hooks(
            "test",
            &[hook(&["sh", "-c", &script], None)],
            b"{\"id\":\"x\"}",
        )
        .unwrap();
        assert_eq!(std::fs::read_to_string(out).unwrap(), "{\"id\":\"x\"}");
    }

    #[test]
    fn failure_carries_stderr() {
        let err = run_hooks(
            "test",
            &[hook(&["sh", "-c", "echo boom >&2; exit 3"], None)],
            b"",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("boom") && err.contains("3"), "{err}");
    }

    #[test]
    fn timeout_kills() {
        let err = run_hooks("test", &[hook(&["sh", "-c", "sleep 5"], Some(1))], b"").unwrap_err();
        assert!(matches!(err, HookError::Timeout { .. }));
    }
}
