//! Exits and OOM kills, from the supervisor's events: the container's record
//! takes the exit, its task is deleted (freeing its shim and mount), `die`
//! is emitted, its health probes stop, its restart policy may start it again
//! ([`super::restart`]), and an `AutoRemove` container goes. At start-up the engine
//! reconciles its records with the supervisor's tasks (live restore): those
//! still running are running, those that exited while the engine was away
//! get their true exit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use berth_proto::tasks::v1::Status as TaskStatus;
use futures_util::StreamExt;

use super::create::emit_with;
use super::record::{parse_time, Status};
use super::{Container, Result};
use crate::backend::BackendError;
use crate::Engine;

/// How long an exit waits for attached clients to read the last output.
const DRAIN: Duration = Duration::from_secs(5);

/// Follows the supervisor's exit and OOM events for the engine's life.
pub async fn follow(engine: Arc<Engine>, ready: tokio::sync::oneshot::Sender<()>) {
    let topics = vec!["/tasks/exit".to_string(), "/tasks/oom".to_string()];
    let mut ready = Some(ready);
    let mut after: Option<u64> = None;
    let mut resubscribed = false;
    loop {
        let stream = engine.supervisor.subscribe(topics.clone(), after).await;
        if let Some(ready) = ready.take() {
            let _ = ready.send(());
        }
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "subscribe to the supervisor's events");
                resubscribed = true;
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if std::mem::take(&mut resubscribed) {
            // Exits while no subscription stood (the supervisor restarted)
            // are not all replayed: the tasks say what happened.
            let engine = engine.clone();
            tokio::spawn(async move {
                if let Err(e) = recover(&engine).await {
                    tracing::warn!(error = %e, "reconcile with the supervisor's tasks");
                }
            });
        }
        while let Some(event) = stream.next().await {
            let event = match event {
                Ok(event) => event,
                Err(e) => {
                    tracing::debug!(error = %e, "supervisor events ended");
                    break;
                }
            };
            after = Some(event.sequence);
            let attrs = &event.attributes;
            let Some(id) = attrs.get("container_id") else {
                continue;
            };
            match event.topic.as_str() {
                "/tasks/exit" => {
                    let status = attrs
                        .get("exit_status")
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    let at = attrs.get("exited_at").and_then(|s| parse_time(s));
                    match attrs.get("exec_id") {
                        Some(exec_id) => crate::exec::exited(&engine, exec_id, status),
                        None => {
                            if let Ok(c) = engine.containers.get(id) {
                                let engine = engine.clone();
                                tokio::spawn(async move {
                                    if let Err(e) = exited(&engine, &c, status, at).await {
                                        tracing::warn!(container = %c.id, error = %e, "record an exit");
                                    }
                                });
                            }
                        }
                    }
                }
                "/tasks/oom" => {
                    if let Ok(c) = engine.containers.get(id) {
                        c.update(|r| r.state.oom_killed = true);
                        emit_with(&engine, &c, "oom", BTreeMap::new());
                    }
                }
                _ => {}
            }
        }
        resubscribed = true;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Records the exit of a container's init.
pub async fn exited(
    engine: &Engine,
    c: &Arc<Container>,
    status: u32,
    at: Option<SystemTime>,
) -> Result<()> {
    let began = std::time::Instant::now();
    let _op = c.op.lock().await;
    if !c.status().is_running() {
        return Ok(());
    }
    // Attached clients read the output to its end before the task goes.
    let mut rx = c.watch();
    let _ = tokio::time::timeout(DRAIN, async {
        while c.attached() > 0 {
            if rx.changed().await.is_err() {
                break;
            }
        }
    })
    .await;
    // The task (its shim, runtime state and rootfs mount) and the network
    // (namespace, published ports, addresses) go together: neither needs
    // the other, and both are done before the exit is recorded.
    let (deleted, ()) = tokio::join!(
        engine.supervisor.delete_task(&c.id),
        crate::network::release(engine, &c.id)
    );
    let (status, at) = match deleted {
        Ok(resp) => {
            let at = resp
                .exited_at
                .and_then(|t| SystemTime::try_from(t).ok())
                .or(at);
            (resp.exit_status, at)
        }
        Err(BackendError::NotFound(_)) => (status, at),
        Err(e) => {
            tracing::warn!(container = %c.id, error = %e, "delete the exited task");
            (status, at)
        }
    };
    let auto_remove = c.record().host_config.auto_remove;
    // An AutoRemove container's exit is not written: its record goes next
    // (and after a crash in between, recovery finds no task and removes it).
    record_exit(engine, c, i64::from(status), at, !auto_remove)?;
    crate::volumes::mounts::on_stop(engine, &c.record());
    if auto_remove {
        super::lifecycle::remove_exited(engine, c).await?;
    }
    // The engine benchmark's per-phase timing reads this.
    let micros = began.elapsed().as_micros() as u64;
    tracing::debug!(container = %c.id, micros, "exit handled");
    Ok(())
}

fn record_exit(
    engine: &Engine,
    c: &Arc<Container>,
    code: i64,
    at: Option<SystemTime>,
    persist: bool,
) -> Result<()> {
    let finished = at.unwrap_or_else(SystemTime::now);
    super::health::stopped(c);
    // `restarting` (and counted) when the policy starts it again.
    let restart = super::restart::decide(c, code, Some(finished));
    c.update(|r| {
        if restart.is_none() {
            r.state.status = Status::Exited;
        }
        r.state.pid = 0;
        r.state.exit_code = code;
        r.state.finished_at = Some(finished);
    });
    if persist || restart.is_some() {
        engine.containers.persist(c)?;
    }
    tracing::info!(container = %c.id, exit_code = code, "container exited");
    let attrs = BTreeMap::from([("exitCode".to_string(), code.to_string())]);
    emit_with(engine, c, "die", attrs);
    c.note_exit();
    if let Some(delay) = restart {
        super::restart::schedule(engine, c, delay);
    }
    Ok(())
}

/// Matches the records with the supervisor's tasks after a (re)start of
/// either daemon, one container at a time under its operation lock (so a
/// start or an exit in progress is never undone).
pub async fn recover(engine: &Engine) -> Result<()> {
    for c in engine.containers.all() {
        let op = c.op.lock().await;
        if c.is_removed() {
            continue;
        }
        let task = match engine.supervisor.get_task(&c.id, "").await {
            Ok(task) => Some(task),
            Err(BackendError::NotFound(_)) => None,
            Err(e) => {
                return Err(super::ContainerError::Backend {
                    what: format!("the task of {}", c.id),
                    source: e,
                })
            }
        };
        let task_status = task
            .as_ref()
            .map(|t| TaskStatus::try_from(t.status).unwrap_or(TaskStatus::Unknown));
        match (c.status().is_running(), task_status) {
            (_, Some(TaskStatus::Running)) | (_, Some(TaskStatus::Paused)) => {
                let paused = task_status == Some(TaskStatus::Paused);
                let pid = task.as_ref().map(|t| t.pid).unwrap_or(0);
                c.update(|r| {
                    r.state.status = if paused {
                        Status::Paused
                    } else {
                        Status::Running
                    };
                    r.state.pid = pid;
                });
                engine.containers.persist(&c)?;
                if !paused {
                    super::health::resume(engine, &c);
                }
            }
            (_, None) if c.status() == Status::Restarting => {
                // Waiting for its restart in this engine: left to it. Left
                // by an engine that stopped while a restart waited: the
                // daemon's start decides ([`super::restart::start_at_boot`]).
                if !c.restart.is_pending() {
                    c.update(|r| r.state.status = Status::Exited);
                    engine.containers.persist(&c)?;
                }
            }
            (true, Some(TaskStatus::Stopped)) | (true, Some(TaskStatus::Created)) => {
                let status = task.as_ref().map(|t| t.exit_status).unwrap_or(0);
                let at = task
                    .as_ref()
                    .and_then(|t| t.exited_at)
                    .and_then(|t| SystemTime::try_from(t).ok());
                drop(op);
                exited(engine, &c, status, at).await?;
            }
            (true, Some(TaskStatus::Unknown)) => {
                tracing::warn!(container = %c.id, "its shim does not answer; left as it is");
            }
            (true, None) => {
                // Gone without a trace (the host rebooted): Docker's code
                // for a container killed with the machine.
                c.update(|r| r.state.error = "the container's task is gone".into());
                crate::network::release(engine, &c.id).await;
                record_exit(engine, &c, 128 + 9, None, true)?;
                if c.record().host_config.auto_remove {
                    super::lifecycle::remove_stopped(engine, &c).await?;
                }
            }
            (false, Some(_)) => {
                // A task left from a start the record did not see, or an
                // exit recorded before its task was deleted.
                let _ = engine.supervisor.delete_task(&c.id).await;
            }
            (false, None) => {}
        }
    }
    Ok(())
}
