//! Starting, stopping, killing, pausing, renaming, waiting for and removing
//! containers. Exits are recorded by [`super::monitor`]; these functions
//! wait for them where Docker waits.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use berth_client::trace::{self, Layer};
use nix::sys::signal::Signal;

use super::create::{emit, emit_with};
use super::record::{RunState, Status};
use super::{Container, ContainerError, Result};
use crate::backend::{BackendError, TaskOptions};
use crate::names;
use crate::network::NetworkError;
use crate::Engine;

/// A container's log is bounded unless its options say otherwise: this
/// size per file (Docker's `local` driver's figures)...
pub const DEFAULT_LOG_MAX_SIZE: u64 = 20 << 20;
/// ...and this many files in all.
pub const DEFAULT_LOG_MAX_FILES: u32 = 5;

/// Docker's default stop timeout, seconds.
pub const DEFAULT_STOP_TIMEOUT: i64 = 10;

/// Starts a created or stopped container.
pub async fn start(engine: &Engine, c: &Arc<Container>) -> Result<()> {
    let _op = c.op.lock().await;
    match c.status() {
        Status::Running | Status::Paused | Status::Restarting => {
            return Err(ContainerError::AlreadyRunning(c.id.clone()))
        }
        Status::Removing | Status::Dead => {
            return Err(ContainerError::InvalidConfig(format!(
                "container is marked for removal and cannot be started: {}",
                c.id
            )))
        }
        Status::Created | Status::Exited => {}
    }
    // A start by the user begins the restart policy's loop afresh.
    c.restart.reset();
    c.update(|r| r.restart_count = 0);
    start_task(engine, c).await
}

/// Creates and starts the container's task; the caller holds its `op`
/// (and has judged its state: [`start`], or a restart by policy).
pub(crate) async fn start_task(engine: &Engine, c: &Arc<Container>) -> Result<()> {
    let began = std::time::Instant::now();
    let record = c.record();
    let id = &c.id;
    let log = &record.host_config.log_config;
    let opts = TaskOptions {
        stdin: record.config.open_stdin,
        log_path: Some(engine.paths.container_log(id)),
        log_max_size: log
            .config
            .get("max-size")
            .and_then(|s| parse_size(s))
            .unwrap_or(DEFAULT_LOG_MAX_SIZE),
        log_max_files: log
            .config
            .get("max-file")
            .and_then(|s| s.parse().ok())
            .unwrap_or(if log.config.contains_key("max-size") {
                1
            } else {
                DEFAULT_LOG_MAX_FILES
            }),
        no_log: log.kind == "none",
    };
    let sup = &engine.supervisor;
    let span = trace::span(Layer::Engine, "volumes mounted, network attached");
    crate::volumes::mounts::on_start(engine, &record)?;
    let failed_record = &record;
    let network_failed = |e: NetworkError| async move {
        crate::volumes::mounts::on_stop(engine, failed_record);
        // As for a failed task: an AutoRemove container goes.
        if failed_record.host_config.auto_remove {
            if let Err(e) = remove_stopped(engine, c).await {
                tracing::warn!(container = %id, error = %e, "remove after a failed start");
            }
        }
        ContainerError::Network(Box::new(e))
    };
    if let Err(e) = crate::network::attach_unpublished(engine, &record).await {
        return Err(network_failed(e).await);
    }
    drop(span);
    // The task is made while the ports are published: neither needs the
    // other, and the process runs only at the task's start, after both.
    let create = async {
        // A task left by an exit not yet recorded goes first.
        let mut created = sup.create_task(id, opts.clone()).await;
        if let Err(BackendError::AlreadyExists(_)) = created {
            let _ = sup.delete_task(id).await;
            created = sup.create_task(id, opts).await;
        }
        created
    };
    let span = trace::span(Layer::Engine, "task created, ports published");
    let (created, published) = tokio::join!(create, crate::network::publish(engine, &record));
    drop(span);
    if let Err(e) = published {
        // (`publish` released the network)
        if created.is_ok() {
            let _ = sup.delete_task(id).await;
        }
        return Err(network_failed(e).await);
    }
    let started = match created {
        Ok(_) => {
            let span = trace::span(Layer::Engine, "task output connected");
            c.pending.connect(engine, id).await;
            drop(span);
            sup.start(id, "").await
        }
        Err(e) => Err(e),
    };
    let pid = match started {
        Ok(pid) => pid,
        Err(e) => {
            let _ = sup.delete_task(id).await;
            crate::volumes::mounts::on_stop(engine, &record);
            crate::network::release(engine, id).await;
            let code = start_failure_code(&e);
            c.update(|r| {
                r.state.error = e.to_string();
                r.state.exit_code = code;
                if r.state.status != Status::Created {
                    r.state.status = Status::Exited;
                }
            });
            let _ = engine.containers.persist(c);
            c.note_exit();
            // Docker removes an AutoRemove container whose start failed;
            // `docker run --rm` waits for that.
            if record.host_config.auto_remove {
                if let Err(e) = remove_stopped(engine, c).await {
                    tracing::warn!(container = %id, error = %e, "remove after a failed start");
                }
            }
            return Err(ContainerError::StartFailed {
                id: id.clone(),
                source: e,
            });
        }
    };
    let _span = trace::span(Layer::Engine, "state recorded, events sent");
    let health = super::health::at_start(c, c.record().state.health);
    c.update(|r| {
        let finished_at = r.state.finished_at;
        r.state = RunState {
            status: Status::Running,
            pid,
            started_at: Some(SystemTime::now()),
            finished_at,
            health,
            ..RunState::default()
        };
    });
    engine.containers.persist(c)?;
    tracing::info!(container = %id, pid, "container started");
    crate::metrics::container_started(began.elapsed());
    emit(engine, c, "start");
    super::health::started(engine, c);
    Ok(())
}

/// The exit code Docker gives a process that could not start, from the
/// runtime's words (runc's, which Docker's clients read the same way): 127
/// for a program not found, 126 for one that cannot run, else 128.
pub fn start_failure_code(e: &BackendError) -> i64 {
    let text = e.to_string();
    if text.contains("executable file not found") || text.contains("no such file or directory") {
        127
    } else if text.contains("permission denied") {
        126
    } else {
        128
    }
}

/// `10m`, `1g`, `512k`, `100` (bytes), as Docker's log options take them.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let s = s.strip_suffix('b').unwrap_or(&s);
    let (num, mult) = match s.chars().last()? {
        'k' => (&s[..s.len() - 1], 1u64 << 10),
        'm' => (&s[..s.len() - 1], 1 << 20),
        'g' => (&s[..s.len() - 1], 1 << 30),
        't' => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    let n: f64 = num.trim().parse().ok()?;
    (n >= 0.0).then_some((n * mult as f64) as u64)
}

/// A signal by name (`SIGTERM`, `TERM`, case-insensitive) or number.
pub fn parse_signal(s: &str) -> Result<Signal> {
    let invalid = || ContainerError::InvalidSignal(s.to_string());
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| invalid());
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>().map_err(|_| invalid())
}

/// Sends a signal to the container's init.
pub async fn kill(engine: &Engine, c: &Arc<Container>, signal: Option<&str>) -> Result<()> {
    let signal = match signal.filter(|s| !s.is_empty()) {
        Some(s) => parse_signal(s)?,
        None => Signal::SIGKILL,
    };
    match c.status() {
        Status::Running | Status::Restarting => {}
        Status::Paused if signal == Signal::SIGKILL => {}
        Status::Paused => return Err(ContainerError::Paused(c.id.clone())),
        _ => return Err(ContainerError::NotRunning(c.id.clone())),
    }
    // As dockerd: the stop signal or SIGKILL ends the restart policy's
    // loop; any signal from the user counts as a stop for
    // `unless-stopped`.
    let stop_signal = c
        .record()
        .config
        .stop_signal
        .as_deref()
        .and_then(|s| parse_signal(s).ok())
        .unwrap_or(Signal::SIGTERM);
    if signal == Signal::SIGKILL || signal == stop_signal {
        c.restart.cancel();
    }
    stopped_by_user(engine, c);
    if c.status() == Status::Restarting {
        // No process to signal; a cancelled restart does not come.
        if signal != Signal::SIGKILL && signal != stop_signal {
            return Ok(());
        }
        if !settle_restart(c).await {
            return Ok(());
        }
    }
    let all = signal == Signal::SIGKILL;
    engine
        .supervisor
        .kill(&c.id, "", signal as u32, all)
        .await
        .map_err(ContainerError::backend(format!("kill {}", c.id)))?;
    let attrs = BTreeMap::from([("signal".to_string(), (signal as i32).to_string())]);
    emit_with(engine, c, "kill", attrs);
    // As dockerd: a SIGKILL is answered once the container is down, so a
    // client's next inspect sees it exited (other signals may be handled).
    if signal == Signal::SIGKILL && !wait_stopped(c, KILL_WAIT).await {
        tracing::warn!(container = %c.id, "still running after SIGKILL");
    }
    Ok(())
}

/// How long a SIGKILL's answer waits for the container to go down.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// Waits until the container is not running, at most `timeout`; whether it
/// stopped.
async fn wait_stopped(c: &Container, timeout: Duration) -> bool {
    let mut rx = c.watch();
    let waited = tokio::time::timeout(timeout, async {
        loop {
            if !c.status().is_running() {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    waited.is_ok()
}

/// Docker's stop: the stop signal, `timeout` seconds (the container's
/// StopTimeout or 10 when `None`; -1 waits for ever), then SIGKILL.
pub async fn stop(
    engine: &Engine,
    c: &Arc<Container>,
    signal: Option<&str>,
    timeout: Option<i64>,
) -> Result<()> {
    if !c.status().is_running() {
        return Err(ContainerError::AlreadyStopped(c.id.clone()));
    }
    let record = c.record();
    let signal = match signal
        .filter(|s| !s.is_empty())
        .or(record.config.stop_signal.as_deref())
    {
        Some(s) => parse_signal(s)?,
        None => Signal::SIGTERM,
    };
    let timeout = timeout
        .or(record.config.stop_timeout)
        .unwrap_or(DEFAULT_STOP_TIMEOUT);
    c.restart.cancel();
    stopped_by_user(engine, c);
    if c.status() == Status::Restarting && !settle_restart(c).await {
        emit(engine, c, "stop");
        return Ok(());
    }
    if c.status() == Status::Paused {
        // A paused process gets no signal until it runs again.
        let _ = engine.supervisor.resume(&c.id).await;
    }
    let sent = engine
        .supervisor
        .kill(&c.id, "", signal as u32, false)
        .await;
    match sent {
        Ok(()) => {
            let attrs = BTreeMap::from([("signal".to_string(), (signal as i32).to_string())]);
            emit_with(engine, c, "kill", attrs);
            let limit = if timeout < 0 {
                Duration::MAX
            } else {
                Duration::from_secs(timeout as u64)
            };
            if wait_stopped(c, limit).await {
                emit(engine, c, "stop");
                return Ok(());
            }
        }
        // The process is gone already; its exit is on its way.
        Err(BackendError::NotFound(_)) | Err(BackendError::FailedPrecondition(_)) => {}
        Err(e) => {
            return Err(ContainerError::Backend {
                what: format!("stop {}", c.id),
                source: e,
            })
        }
    }
    if c.status().is_running() {
        match engine
            .supervisor
            .kill(&c.id, "", Signal::SIGKILL as u32, true)
            .await
        {
            Ok(()) | Err(BackendError::NotFound(_)) | Err(BackendError::FailedPrecondition(_)) => {}
            Err(e) => {
                return Err(ContainerError::Backend {
                    what: format!("kill {}", c.id),
                    source: e,
                })
            }
        }
        let attrs = BTreeMap::from([("signal".to_string(), (Signal::SIGKILL as i32).to_string())]);
        emit_with(engine, c, "kill", attrs);
        if !wait_stopped(c, Duration::from_secs(30)).await {
            return Err(ContainerError::InvalidConfig(format!(
                "cannot stop container {}: tried to kill container, but did not receive an exit event",
                c.id
            )));
        }
    }
    emit(engine, c, "stop");
    Ok(())
}

/// After [`super::restart::Manager::cancel`] of a `restarting` container:
/// waits for a restart already under way to finish, or for the cancelled
/// one to leave the container `exited`; whether it runs (and so is to be
/// signalled).
async fn settle_restart(c: &Container) -> bool {
    // A restart holds the operation lock from its check of the
    // cancellation to the running task.
    drop(c.op.lock().await);
    if c.status() == Status::Restarting && !wait_stopped(c, Duration::from_secs(30)).await {
        tracing::warn!(container = %c.id, "its cancelled restart did not end");
    }
    c.status().is_running()
}

/// Records that the user stopped the container (for `unless-stopped`,
/// across daemon restarts too).
fn stopped_by_user(engine: &Engine, c: &Container) {
    c.update(|r| r.state.stopped_by_user = true);
    if let Err(e) = engine.containers.persist(c) {
        tracing::warn!(container = %c.id, error = %e, "record a stop by the user");
    }
}

/// Stop (if running) then start.
pub async fn restart(
    engine: &Engine,
    c: &Arc<Container>,
    signal: Option<&str>,
    timeout: Option<i64>,
) -> Result<()> {
    match stop(engine, c, signal, timeout).await {
        Ok(()) | Err(ContainerError::AlreadyStopped(_)) => {}
        Err(e) => return Err(e),
    }
    start(engine, c).await?;
    c.update(|r| r.state.stopped_by_user = false);
    engine.containers.persist(c)?;
    emit(engine, c, "restart");
    Ok(())
}

pub async fn pause(engine: &Engine, c: &Arc<Container>) -> Result<()> {
    let _op = c.op.lock().await;
    match c.status() {
        Status::Running => {}
        Status::Paused => {
            return Err(ContainerError::InvalidConfig(format!(
                "Container {} is already paused",
                c.id
            )))
        }
        _ => return Err(ContainerError::NotRunning(c.id.clone())),
    }
    engine
        .supervisor
        .pause(&c.id)
        .await
        .map_err(ContainerError::backend("pause"))?;
    c.update(|r| r.state.status = Status::Paused);
    super::health::stopped(c);
    engine.containers.persist(c)?;
    emit(engine, c, "pause");
    Ok(())
}

pub async fn unpause(engine: &Engine, c: &Arc<Container>) -> Result<()> {
    let _op = c.op.lock().await;
    if c.status() != Status::Paused {
        return Err(ContainerError::NotPaused(c.id.clone()));
    }
    engine
        .supervisor
        .resume(&c.id)
        .await
        .map_err(ContainerError::backend("unpause"))?;
    c.update(|r| r.state.status = Status::Running);
    engine.containers.persist(c)?;
    super::health::resume(engine, c);
    emit(engine, c, "unpause");
    Ok(())
}

pub async fn rename(engine: &Engine, c: &Arc<Container>, new_name: &str) -> Result<()> {
    let _op = c.op.lock().await;
    let new_name = names::validate(new_name)?;
    let old = c.name();
    if new_name == old {
        return Err(ContainerError::InvalidConfig(
            "Renaming a container with the same name as its current name".into(),
        ));
    }
    engine.containers.reserve_name(&new_name, &c.id)?;
    c.update(|r| r.name = new_name.clone());
    if let Err(e) = engine.containers.persist(c) {
        c.update(|r| r.name = old.clone());
        engine.containers.release_name(&new_name, &c.id);
        return Err(e);
    }
    engine.containers.release_name(&old, &c.id);
    let attrs = BTreeMap::from([("oldName".to_string(), format!("/{old}"))]);
    emit_with(engine, c, "rename", attrs);
    Ok(())
}

/// What `wait` waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitCondition {
    NotRunning,
    NextExit,
    Removed,
}

impl WaitCondition {
    pub fn parse(s: &str) -> Option<WaitCondition> {
        match s {
            "" | "not-running" => Some(WaitCondition::NotRunning),
            "next-exit" => Some(WaitCondition::NextExit),
            "removed" => Some(WaitCondition::Removed),
            _ => None,
        }
    }
}

/// Waits for the condition; the exit code and error, as Docker reports them.
pub async fn wait(c: &Arc<Container>, condition: WaitCondition) -> (i64, Option<String>) {
    let mut rx = c.watch();
    let exits_before = c.exits();
    loop {
        let done = match condition {
            // As dockerd: an exit wakes the waiter even when the restart
            // policy starts the container again.
            WaitCondition::NotRunning => !c.status().is_running() || c.exits() > exits_before,
            WaitCondition::NextExit => c.exits() > exits_before,
            WaitCondition::Removed => c.is_removed(),
        };
        if done {
            break;
        }
        if rx.changed().await.is_err() {
            break;
        }
    }
    let record = c.record();
    let error = (!record.state.error.is_empty()).then_some(record.state.error);
    (record.state.exit_code, error)
}

/// Removes a container: with `force` a running one is killed first; with
/// `volumes` its anonymous volumes go too (`docker rm -v`).
pub async fn remove(engine: &Engine, c: &Arc<Container>, force: bool, volumes: bool) -> Result<()> {
    if volumes {
        c.remove_volumes
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
    if c.status().is_running() {
        if !force {
            return Err(ContainerError::RemoveRunning(c.name()));
        }
        c.restart.cancel();
        stopped_by_user(engine, c);
        if c.status() == Status::Restarting {
            settle_restart(c).await;
        }
        let _ = engine
            .supervisor
            .kill(&c.id, "", Signal::SIGKILL as u32, true)
            .await;
        if !wait_stopped(c, Duration::from_secs(30)).await {
            return Err(ContainerError::InvalidConfig(format!(
                "cannot remove container {}: could not kill it",
                c.id
            )));
        }
    }
    let _op = c.op.lock().await;
    remove_stopped(engine, c).await
}

/// Removes a container that is not running; the caller holds its `op`.
pub(crate) async fn remove_stopped(engine: &Engine, c: &Arc<Container>) -> Result<()> {
    if c.is_removed() {
        return Ok(());
    }
    if c.status().is_running() {
        return Err(ContainerError::RemoveRunning(c.name()));
    }
    // A task left by a crash between exit and record.
    match engine.supervisor.delete_task(&c.id).await {
        Ok(_) | Err(BackendError::NotFound(_)) => {}
        Err(e) => {
            return Err(ContainerError::Backend {
                what: "delete task".into(),
                source: e,
            })
        }
    }
    remove_exited(engine, c).await
}

/// Removes a container whose task is deleted; the caller holds its `op`.
pub(crate) async fn remove_exited(engine: &Engine, c: &Arc<Container>) -> Result<()> {
    if c.is_removed() {
        return Ok(());
    }
    let sup = &engine.supervisor;
    match sup.delete_container(&c.id).await {
        Ok(()) | Err(BackendError::NotFound(_)) => {}
        Err(e) => {
            return Err(ContainerError::Backend {
                what: "remove container".into(),
                source: e,
            })
        }
    }
    crate::network::release(engine, &c.id).await;
    engine.containers.forget(c)?;
    let record = c.record();
    let anonymous = record.host_config.auto_remove
        || c.remove_volumes.load(std::sync::atomic::Ordering::SeqCst);
    let dir = engine.paths.container_dir(&c.id);
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(container = %c.id, error = %e, "remove the container's directory");
        }
    }
    tracing::info!(container = %c.id, "container removed");
    emit(engine, c, "destroy");
    crate::volumes::mounts::on_remove(engine, &record, anonymous);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_and_sizes() {
        assert_eq!(parse_signal("SIGTERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("term").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert!(parse_signal("SIGFOO").is_err());
        assert!(parse_signal("99").is_err());
        assert_eq!(parse_size("10m"), Some(10 << 20));
        assert_eq!(parse_size("1k"), Some(1024));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("x"), None);
        assert_eq!(
            WaitCondition::parse("removed"),
            Some(WaitCondition::Removed)
        );
        assert_eq!(WaitCondition::parse("bogus"), None);
    }
}
