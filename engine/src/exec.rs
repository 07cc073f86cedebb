//! `docker exec`: processes run in a running container. An exec is created
//! (its config kept here, in memory, as Docker keeps it), then started
//! attached or detached; its exit is recorded before an attached client's
//! stream ends, so the client's inspect right after sees the exit code.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use berth_proto::tasks::v1 as tasks;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};

use crate::backend::{AttachInput, BackendError};
use crate::containers::attach::parse_detach_keys;
use crate::containers::{Container, ContainerError, Status};
use crate::events::Kind;
use crate::names;
use crate::Engine;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("No such exec instance: {0}")]
    NotFound(String),
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error("Container {0} is paused, unpause the container before exec")]
    Paused(String),
    #[error("Container {0} is restarting, wait until the container is running")]
    Restarting(String),
    #[error("Error: Exec command {0} is already running")]
    AlreadyRunning(String),
    #[error("Error: Exec command {0} has already run")]
    AlreadyRan(String),
    #[error("No exec command specified")]
    NoCommand,
    #[error("{what}: {source}")]
    Backend { what: String, source: BackendError },
    #[error("invalid exec process: {0}")]
    InvalidProcess(String),
}

/// `POST /containers/{id}/exec`'s body.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ExecConfig {
    pub attach_stdin: bool,
    pub attach_stdout: bool,
    pub attach_stderr: bool,
    /// docker-py spells it `detachKeys` (Go's JSON decoding ignores case).
    #[serde(alias = "detachKeys")]
    pub detach_keys: String,
    pub tty: bool,
    pub env: Option<Vec<String>>,
    pub cmd: Vec<String>,
    pub privileged: bool,
    pub user: String,
    pub working_dir: String,
    pub console_size: Option<Vec<u32>>,
}

#[derive(Clone, Debug, Default)]
struct ExecState {
    started: bool,
    running: bool,
    exit_code: Option<i64>,
    pid: u32,
}

/// One exec instance.
pub struct Exec {
    pub id: String,
    pub container: Arc<Container>,
    pub config: ExecConfig,
    state: Mutex<ExecState>,
    changes: watch::Sender<u64>,
}

impl Exec {
    fn state(&self) -> ExecState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut ExecState)) {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()));
        self.changes.send_modify(|n| *n += 1);
    }
}

/// Every exec instance of the engine's life.
#[derive(Default)]
pub struct Execs {
    map: Mutex<BTreeMap<String, Arc<Exec>>>,
}

impl Execs {
    pub fn get(&self, id: &str) -> Result<Arc<Exec>, ExecError> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(id)
            .cloned()
            .ok_or_else(|| ExecError::NotFound(id.to_string()))
    }

    /// The exec ids of a container.
    pub fn of_container(&self, container_id: &str) -> Vec<String> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.values()
            .filter(|e| e.container.id == container_id)
            .map(|e| e.id.clone())
            .collect()
    }

    /// Forgets one exec (a health probe that ended).
    pub fn forget(&self, id: &str) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(id);
    }

    /// Forgets the execs of a removed container.
    pub fn forget_container(&self, container_id: &str) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, e| e.container.id != container_id);
    }
}

/// Registers an exec in a running container.
pub fn create(
    engine: &Engine,
    c: &Arc<Container>,
    config: ExecConfig,
) -> Result<String, ExecError> {
    match c.status() {
        Status::Running => {}
        Status::Restarting => return Err(ExecError::Restarting(c.id.clone())),
        Status::Paused => return Err(ExecError::Paused(c.id.clone())),
        _ => return Err(ContainerError::NotRunning(c.id.clone()).into()),
    }
    if config.cmd.is_empty() {
        return Err(ExecError::NoCommand);
    }
    if !config.detach_keys.is_empty() {
        parse_detach_keys(&config.detach_keys)?;
    }
    let id = names::new_id();
    let exec = Arc::new(Exec {
        id: id.clone(),
        container: c.clone(),
        config,
        state: Mutex::new(ExecState::default()),
        changes: watch::channel(0).0,
    });
    let action = format!("exec_create: {}", exec.config.cmd.join(" "));
    engine
        .execs
        .map
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id.clone(), exec);
    emit(engine, c, &action, &id);
    Ok(id)
}

fn emit(engine: &Engine, c: &Container, action: &str, exec_id: &str) {
    let record = c.record();
    let mut attrs = record.config.labels.clone().unwrap_or_default();
    attrs.insert("image".into(), record.image);
    attrs.insert("name".into(), record.name);
    attrs.insert("execID".into(), exec_id.to_string());
    engine.events.emit(Kind::Container, action, &c.id, attrs);
}

/// The OCI process of an exec: the container's own, with the exec's
/// command, environment, directory, user and terminal.
async fn process(engine: &Engine, exec: &Exec) -> Result<Value, ExecError> {
    let container = engine
        .supervisor
        .get_container(&exec.container.id)
        .await
        .map_err(|source| ExecError::Backend {
            what: "read the container's spec".into(),
            source,
        })?;
    let spec: Value = serde_json::from_slice(&container.spec)
        .map_err(|e| ExecError::InvalidProcess(format!("container spec: {e}")))?;
    let mut process = spec.get("process").cloned().unwrap_or_else(|| json!({}));
    let cfg = &exec.config;
    let mut env: Vec<String> = process["env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    for entry in cfg.env.iter().flatten() {
        let key = entry.split('=').next().unwrap_or(entry);
        env.retain(|e| e.split('=').next().unwrap_or(e) != key);
        env.push(entry.clone());
    }
    if cfg.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    process["args"] = json!(cfg.cmd);
    process["env"] = json!(env);
    process["terminal"] = json!(cfg.tty);
    if !cfg.working_dir.is_empty() {
        process["cwd"] = json!(cfg.working_dir);
    }
    if !cfg.user.is_empty() {
        let (uid, gid, gids) = match parse_numeric_user(&cfg.user) {
            Some((uid, Some(gid))) => (uid, gid, Vec::new()),
            _ => engine
                .supervisor
                .resolve_user(&exec.container.id, &cfg.user)
                .await
                .map_err(|e| ExecError::InvalidProcess(e.to_string()))?,
        };
        process["user"] = json!({ "uid": uid, "gid": gid, "additionalGids": gids });
    }
    if let Some(size) = &cfg.console_size {
        if size.len() == 2 {
            process["consoleSize"] = json!({ "height": size[0], "width": size[1] });
        }
    }
    if cfg.privileged {
        if let Some(caps) = spec["process"]["capabilities"]["bounding"].as_array() {
            let all = json!(caps);
            process["capabilities"] = json!({"bounding": all, "effective": all, "permitted": all});
        }
    }
    Ok(process)
}

/// `uid[:gid]` with numbers.
fn parse_numeric_user(user: &str) -> Option<(u32, Option<u32>)> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let uid = u.parse().ok()?;
    let gid = match g {
        Some(g) => Some(g.parse().ok()?),
        None => None,
    };
    Some((uid, gid))
}

/// An attached exec's streams.
pub struct ExecSession {
    /// Send once the client holds the connection: the process starts then.
    pub go: oneshot::Sender<()>,
    pub tty: bool,
    pub input: Option<mpsc::Sender<AttachInput>>,
    /// Output until the process has exited and its exit is recorded.
    pub output: mpsc::Receiver<(u8, Bytes)>,
    pub detach_keys: Vec<u8>,
}

/// Starts an exec; attached, its streams.
pub async fn start(
    engine: &Arc<Engine>,
    exec: &Arc<Exec>,
    detach: bool,
) -> Result<Option<ExecSession>, ExecError> {
    {
        let state = exec.state();
        if state.running {
            return Err(ExecError::AlreadyRunning(exec.id.clone()));
        }
        if state.started {
            return Err(ExecError::AlreadyRan(exec.id.clone()));
        }
    }
    let c = &exec.container;
    if c.status() == Status::Paused {
        return Err(ExecError::Paused(c.id.clone()));
    }
    if c.status() == Status::Restarting {
        return Err(ExecError::Restarting(c.id.clone()));
    }
    if !c.status().is_running() {
        return Err(ContainerError::NotRunning(c.id.clone()).into());
    }
    exec.update(|s| s.started = true);
    let process = process(engine, exec).await?;
    let cfg = &exec.config;
    let stdin = cfg.attach_stdin && !detach;
    let request = tasks::ExecProcessRequest {
        container_id: c.id.clone(),
        exec_id: exec.id.clone(),
        stdin,
        terminal: cfg.tty,
        spec: serde_json::to_vec(&process).unwrap_or_default(),
    };
    let sup = &engine.supervisor;
    let backend = |what: &str| {
        let what = what.to_string();
        move |source| ExecError::Backend { what, source }
    };
    sup.exec(request).await.map_err(backend("exec"))?;
    let attached = if detach {
        None
    } else {
        Some(
            sup.attach(&c.id, &exec.id, stdin)
                .await
                .map_err(backend("attach"))?,
        )
    };
    let Some(attached) = attached else {
        // Detached: started now; a failure is the request's answer.
        launch(engine, exec).await?;
        return Ok(None);
    };
    let detach_keys = parse_detach_keys(if cfg.detach_keys.is_empty() {
        "ctrl-p,ctrl-q"
    } else {
        &cfg.detach_keys
    })
    .map_err(ExecError::Container)?;
    let (tx, rx) = mpsc::channel(64);
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let (want_out, want_err) = (cfg.attach_stdout, cfg.attach_stderr);
    let mut output = attached.output;
    let exec = exec.clone();
    let engine = engine.clone();
    tokio::spawn(async move {
        // The process starts once the client holds the upgraded
        // connection: output written with the 101's headers would be lost
        // to a client that reads them through a buffer (docker-py does).
        if go_rx.await.is_err() {
            let _ = engine
                .supervisor
                .delete_process(&exec.container.id, &exec.id)
                .await;
            return;
        }
        if let Err(e) = launch(&engine, &exec).await {
            // As dockerd: the error in the stream, the exit code 126/127.
            let _ = tx.send((1, Bytes::from(format!("{e}\r\n")))).await;
            return;
        }
        while let Some(item) = output.next().await {
            let Ok((stream, data)) = item else { break };
            let stream = if stream == 2 { 2 } else { 1 };
            if (stream == 1 && !want_out) || (stream == 2 && !want_err) {
                continue;
            }
            if tx.send((stream, data)).await.is_err() {
                break;
            }
        }
        // The exit is known before the client's stream ends.
        if let Ok(w) = engine.supervisor.wait(&exec.container.id, &exec.id).await {
            record_exit(&exec, i64::from(w.exit_status));
        }
        drop(tx);
    });
    Ok(Some(ExecSession {
        tty: cfg.tty,
        input: attached.input,
        output: rx,
        detach_keys,
        go: go_tx,
    }))
}

/// Starts a registered exec's process.
async fn launch(engine: &Engine, exec: &Arc<Exec>) -> Result<(), ExecError> {
    let c = &exec.container;
    let sup = &engine.supervisor;
    match sup.start(&c.id, &exec.id).await {
        Ok(pid) => {
            exec.update(|s| {
                s.running = true;
                s.pid = pid;
            });
            emit(
                engine,
                c,
                &format!("exec_start: {}", exec.config.cmd.join(" ")),
                &exec.id,
            );
            Ok(())
        }
        Err(e) => {
            let _ = sup.delete_process(&c.id, &exec.id).await;
            // An exec that cannot start is 126 unless its program is missing.
            let code = match crate::containers::lifecycle::start_failure_code(&e) {
                127 => 127,
                _ => 126,
            };
            exec.update(|s| s.exit_code = Some(code));
            Err(ExecError::Backend {
                what: "OCI runtime exec failed".into(),
                source: e,
            })
        }
    }
}

fn record_exit(exec: &Exec, code: i64) {
    exec.update(|s| {
        if s.exit_code.is_none() {
            s.exit_code = Some(code);
        }
        s.running = false;
    });
}

/// The monitor's report of an exec's exit.
pub fn exited(engine: &Arc<Engine>, exec_id: &str, status: u32) {
    let Ok(exec) = engine.execs.get(exec_id) else {
        return;
    };
    record_exit(&exec, i64::from(status));
    emit(engine, &exec.container, "exec_die", exec_id);
    let engine = engine.clone();
    let (cid, eid) = (exec.container.id.clone(), exec.id.clone());
    tokio::spawn(async move {
        let _ = engine.supervisor.delete_process(&cid, &eid).await;
    });
}

pub async fn resize(
    engine: &Engine,
    exec: &Exec,
    height: u32,
    width: u32,
) -> Result<(), ExecError> {
    engine
        .supervisor
        .resize(&exec.container.id, &exec.id, width, height)
        .await
        .map_err(|source| ExecError::Backend {
            what: "resize".into(),
            source,
        })
}

/// `GET /exec/{id}/json`.
pub fn inspect(exec: &Exec) -> Value {
    let s = exec.state();
    let cfg = &exec.config;
    json!({
        "ID": exec.id,
        "Running": s.running,
        "ExitCode": s.exit_code,
        "ProcessConfig": {
            "tty": cfg.tty,
            "entrypoint": cfg.cmd.first().cloned().unwrap_or_default(),
            "arguments": cfg.cmd.get(1..).unwrap_or(&[]),
            "privileged": cfg.privileged,
            "user": cfg.user,
        },
        "OpenStdin": cfg.attach_stdin,
        "OpenStderr": cfg.attach_stderr,
        "OpenStdout": cfg.attach_stdout,
        "CanRemove": false,
        "ContainerID": exec.container.id,
        "DetachKeys": cfg.detach_keys,
        "Pid": s.pid,
    })
}
