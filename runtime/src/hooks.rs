//! OCI hooks: programs run at points of the lifecycle, with the container's
//! state on their standard input.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("error running hook #{index}: {stage} hook {path}: start: {source}")]
    Start {
        stage: &'static str,
        index: usize,
        path: PathBuf,
        source: std::io::Error,
    },
    /// runc's words ("error running hook #N: … exit status N, stdout: …,
    /// stderr: …"), with the stage and path.
    #[error("error running hook #{index}: {stage} hook {path}: {status}, stdout: {stdout}, stderr: {stderr}")]
    Failed {
        stage: &'static str,
        index: usize,
        path: PathBuf,
        status: String,
        stdout: String,
        stderr: String,
    },
    #[error("error running hook #{index}: {stage} hook {path}: hook ran past specified timeout of {seconds}.0s")]
    Timeout {
        stage: &'static str,
        index: usize,
        path: PathBuf,
        seconds: i64,
    },
}

/// Runs each hook in order, stopping at the first failure. A hook without
/// `env` inherits the runtime's environment, as runc's hooks do (Go's exec
/// with no environment given); one with `env` gets exactly that.
pub fn run_hooks(stage: &'static str, hooks: &[Hook], state: &[u8]) -> Result<(), HookError> {
    for (index, hook) in hooks.iter().enumerate() {
        run_hook(stage, index, hook, state, None)?;
    }
    Ok(())
}

/// `run_hooks` for the hooks the container's init runs (createContainer,
/// startContainer): a hook without `env` gets `env`, the container
/// process's environment, which runc's init holds when it runs them.
pub fn run_hooks_with_env(
    stage: &'static str,
    hooks: &[Hook],
    state: &[u8],
    env: &[String],
) -> Result<(), HookError> {
    for (index, hook) in hooks.iter().enumerate() {
        run_hook(stage, index, hook, state, Some(env))?;
    }
    Ok(())
}

/// Replaces the command's environment with `env`, in order (a later entry
/// for the same name wins, as in Go's exec). An entry without `=` cannot be
/// passed by std's Command and is left out.
fn set_env(cmd: &mut Command, env: &[String]) {
    cmd.env_clear();
    for kv in env {
        match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                cmd.env(k, v);
            }
            _ => tracing::debug!(entry = %kv, "hook environment entry without a name left out"),
        }
    }
}

/// How much of a hook's stdout and stderr is kept for the error message.
const KEPT_OUTPUT: usize = 64 * 1024;

/// A running hook's pipes, moved without blocking.
struct HookIo<'a> {
    stdin: Option<std::process::ChildStdin>,
    input: &'a [u8],
    written: usize,
    stdout: Option<std::process::ChildStdout>,
    stderr: Option<std::process::ChildStderr>,
    out: Vec<u8>,
    err: Vec<u8>,
}

impl HookIo<'_> {
    fn make_nonblocking(&self) {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        let fds = [
            self.stdin.as_ref().map(|p| p.as_fd()),
            self.stdout.as_ref().map(|p| p.as_fd()),
            self.stderr.as_ref().map(|p| p.as_fd()),
        ];
        for fd in fds.into_iter().flatten() {
            let _ = fcntl(fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
        }
    }

    /// Writes what the hook will take of its input (closing stdin when all
    /// is written or the hook stops reading) and reads what it wrote.
    fn pump(&mut self) {
        if let Some(stdin) = self.stdin.as_mut() {
            let rest = &self.input[self.written..];
            let done = match stdin.write(rest) {
                _ if rest.is_empty() => true,
                Ok(n) => {
                    self.written += n;
                    self.written == self.input.len()
                }
                Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
            };
            if done {
                self.stdin = None;
            }
        }
        read_available(&mut self.stdout, &mut self.out);
        read_available(&mut self.stderr, &mut self.err);
    }
}

/// Reads what a non-blocking pipe holds into `kept` (up to KEPT_OUTPUT,
/// the rest read and dropped); closes it at end of file.
fn read_available(pipe: &mut Option<impl Read>, kept: &mut Vec<u8>) {
    let Some(p) = pipe.as_mut() else { return };
    let mut buf = [0u8; 4096];
    loop {
        match p.read(&mut buf) {
            Ok(0) => {
                *pipe = None;
                return;
            }
            Ok(n) => {
                let room = KEPT_OUTPUT.saturating_sub(kept.len()).min(n);
                kept.extend_from_slice(&buf[..room]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(_) => {
                *pipe = None;
                return;
            }
        }
    }
}

/// Go's words for how a process ended ("exit status 3", "signal: killed").
fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => match nix::sys::signal::Signal::try_from(sig) {
            Ok(nix::sys::signal::Signal::SIGKILL) => "signal: killed".into(),
            Ok(s) => format!("signal: {s}"),
            Err(_) => format!("signal: {sig}"),
        },
        _ => status.to_string(),
    }
}

fn run_hook(
    stage: &'static str,
    index: usize,
    hook: &Hook,
    state: &[u8],
    default_env: Option<&[String]>,
) -> Result<(), HookError> {
    let path = hook.path().clone();
    let mut cmd = Command::new(&path);
    if let Some(args) = hook.args() {
        if let Some((argv0, rest)) = args.split_first() {
            cmd.arg0(argv0).args(rest);
        }
    }
    match (hook.env().as_deref(), default_env) {
        (Some(env), _) | (None, Some(env)) => set_env(&mut cmd, env),
        (None, None) => {}
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| HookError::Start {
        stage,
        index,
        path: path.clone(),
        source,
    })?;
    // Input and output move while the hook runs, without blocking: a hook
    // that does not read a large state, or writes more than a pipe holds,
    // or leaves a child holding its stdout, must not hang us.
    let mut io = HookIo {
        stdin: child.stdin.take(),
        input: state,
        written: 0,
        stdout: child.stdout.take(),
        stderr: child.stderr.take(),
        out: Vec::new(),
        err: Vec::new(),
    };
    io.make_nonblocking();
    let deadline = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| (t, Instant::now() + Duration::from_secs(t as u64)));
    let status = loop {
        io.pump();
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(source) => {
                return Err(HookError::Start {
                    stage,
                    index,
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
                    index,
                    path,
                    seconds,
                });
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    io.pump();
    if status.success() {
        return Ok(());
    }
    let shown = |bytes: &[u8]| {
        String::from_utf8_lossy(bytes)
            .trim()
            .chars()
            .take(500)
            .collect::<String>()
    };
    let stdout = shown(&io.out);
    let stderr = shown(&io.err);
    Err(HookError::Failed {
        stage,
        index,
        path,
        status: describe(status),
        stdout,
        stderr,
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
    fn env_is_exact_when_given_and_inherited_when_not() {
        // The test process has HOME; a hook with `env` must not see it.
        assert!(std::env::var_os("HOME").is_some());
        let with_env = |env: Option<&[&str]>, script: &str| {
            let mut v = serde_json::json!({"path": "/bin/sh", "args": ["sh", "-c", script]});
            if let Some(env) = env {
                v["env"] = serde_json::json!(env);
            }
            serde_json::from_value::<Hook>(v).unwrap()
        };
        let exact = with_env(
            Some(&["A=1", "B=x=y", "A=2"]),
            r#"[ "$A" = 2 ] && [ "$B" = x=y ] && [ -z "$HOME" ]"#,
        );
        run_hooks("test", std::slice::from_ref(&exact), b"").unwrap();
        let empty = with_env(Some(&[]), r#"[ -z "$HOME" ]"#);
        run_hooks("test", &[empty], b"").unwrap();
        let inherits = with_env(None, r#"[ -n "$HOME" ]"#);
        run_hooks("test", &[inherits], b"").unwrap();
        // In the container's init: the process's environment, unless given.
        let process_env = ["C=3".to_string()];
        let defaulted = with_env(None, r#"[ "$C" = 3 ] && [ -z "$HOME" ]"#);
        run_hooks_with_env("test", &[defaulted], b"", &process_env).unwrap();
        run_hooks_with_env("test", &[exact], b"", &process_env).unwrap();
    }

    #[test]
    fn failure_speaks_runcs_words() {
        let err = run_hooks(
            "prestart",
            &[
                hook(&["sh", "-c", "true"], None),
                hook(&["sh", "-c", "echo out; echo err >&2; exit 3"], None),
            ],
            b"",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("error running hook #1: prestart hook /bin/sh: exit status 3"),
            "{err}"
        );
        assert!(err.ends_with("stdout: out, stderr: err"), "{err}");
        let err = run_hooks("test", &[hook(&["sh", "-c", "kill -9 $$"], None)], b"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("signal: killed"), "{err}");
    }

    #[test]
    fn big_input_big_output_and_lingering_children_do_not_hang() {
        let started = Instant::now();
        // Never reads its 1 MiB of input.
        let state = vec![b'x'; 1 << 20];
        run_hooks("test", &[hook(&["sh", "-c", "exit 0"], None)], &state).unwrap();
        // Writes 1 MiB before it fails: the start of it is reported.
        let err = run_hooks(
            "test",
            &[hook(
                &["sh", "-c", "head -c 1048576 /dev/zero | tr '\\0' y; exit 1"],
                None,
            )],
            b"",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("stdout: yyyy"),
            "{}",
            &err[..200.min(err.len())]
        );
        // Leaves a child holding its stdout and stderr.
        let err = run_hooks(
            "test",
            &[hook(&["sh", "-c", "sleep 30 & exit 2"], None)],
            b"",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("exit status 2"), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn timeout_kills() {
        let err = run_hooks("test", &[hook(&["sh", "-c", "sleep 5"], Some(1))], b"").unwrap_err();
        assert!(matches!(err, HookError::Timeout { .. }));
        assert!(
            err.to_string()
                .contains("hook ran past specified timeout of 1.0s"),
            "{err}"
        );
    }
}
