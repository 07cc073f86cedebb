//! Health checks: the image's `HEALTHCHECK` or `Config.Healthcheck`, probed
//! while the container runs. Each probe is an exec through the supervisor
//! (so `exec_create`/`exec_start`/`exec_die` events show it, as with
//! dockerd) with its output kept to 4 KiB; one past its timeout is killed
//! and counts as a failure. `State.Health` (status, failing streak, the
//! last five results) lives in the container's record, so after a daemon
//! restart the probes of running containers resume where they were; a
//! change of status is a `health_status: …` event.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::create::emit;
use super::record::{format_time, Status};
use super::{Container, ContainerError, Result};
use crate::exec::ExecConfig;
use crate::Engine;

/// Docker's defaults.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_RETRIES: i64 = 3;
pub const DEFAULT_START_INTERVAL: Duration = Duration::from_secs(5);
/// The shortest duration a health check may set (Docker's
/// `MinimumDuration`).
pub const MINIMUM: Duration = Duration::from_millis(1);
/// How many results `State.Health.Log` keeps.
pub const KEEP_RESULTS: usize = 5;
/// How much of a probe's output is kept.
pub const MAX_OUTPUT: usize = 4096;
/// How long a probe's exec stays known after it ended.
const FORGET_AFTER: Duration = Duration::from_secs(10);

/// `State.Health.Status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    #[default]
    Starting,
    Healthy,
    Unhealthy,
}

impl HealthStatus {
    pub fn name(self) -> &'static str {
        match self {
            HealthStatus::Starting => "starting",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

/// One probe's result.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProbeResult {
    pub start: SystemTime,
    pub end: SystemTime,
    pub exit_code: i64,
    pub output: String,
}

/// `State.Health`, as the record keeps it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Health {
    pub status: HealthStatus,
    pub failing_streak: i64,
    pub log: Vec<ProbeResult>,
}

impl Health {
    /// Inspect's `State.Health`.
    pub fn to_json(&self) -> Value {
        let log: Vec<Value> = self
            .log
            .iter()
            .map(|r| {
                serde_json::json!({
                    "Start": format_time(Some(r.start)),
                    "End": format_time(Some(r.end)),
                    "ExitCode": r.exit_code,
                    "Output": r.output,
                })
            })
            .collect();
        serde_json::json!({
            "Status": self.status.name(),
            "FailingStreak": self.failing_streak,
            "Log": log,
        })
    }

    /// What `docker ps` adds to "Up …": `health: starting`, `healthy`.
    pub fn ps_text(&self) -> &'static str {
        match self.status {
            HealthStatus::Starting => "health: starting",
            s => s.name(),
        }
    }

    /// Takes a result as dockerd does; the new status when it changed.
    fn record(
        &mut self,
        result: ProbeResult,
        check: &Check,
        started_at: Option<SystemTime>,
    ) -> Option<HealthStatus> {
        let old = self.status;
        if self.log.len() >= KEEP_RESULTS {
            self.log.drain(..=self.log.len() - KEEP_RESULTS);
        }
        let (code, start) = (result.exit_code, result.start);
        self.log.push(result);
        if code == 0 {
            self.failing_streak = 0;
            self.status = HealthStatus::Healthy;
        } else {
            // Failures in the start period do not count while starting.
            let in_start_period = self.status == HealthStatus::Starting
                && started_at
                    .and_then(|s| start.duration_since(s).ok())
                    .is_some_and(|ran| ran < check.start_period);
            if !in_start_period {
                self.failing_streak += 1;
                if self.failing_streak >= check.retries {
                    self.status = HealthStatus::Unhealthy;
                }
            }
        }
        (self.status != old).then_some(self.status)
    }
}

/// A container's health check, with Docker's defaults filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    /// The probe's command line.
    pub command: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: i64,
    pub start_period: Duration,
    pub start_interval: Duration,
}

/// `Config.Healthcheck` as it is sent (durations in nanoseconds); written
/// back as Go writes it, without its empty fields.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", default)]
struct HealthConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    test: Option<Vec<String>>,
    #[serde(skip_serializing_if = "is_zero")]
    interval: i64,
    #[serde(skip_serializing_if = "is_zero")]
    timeout: i64,
    #[serde(skip_serializing_if = "is_zero")]
    start_period: i64,
    #[serde(skip_serializing_if = "is_zero")]
    start_interval: i64,
    #[serde(skip_serializing_if = "is_zero")]
    retries: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

fn parse_config(v: &Value) -> Result<HealthConfig> {
    serde_json::from_value(v.clone())
        .map_err(|e| ContainerError::InvalidConfig(format!("invalid Healthcheck: {e}")))
}

/// The container's `Healthcheck` over the image's, as dockerd merges them:
/// a missing test and zero fields are the image's.
pub fn merge(mine: Option<Value>, image: Option<&Value>) -> Option<Value> {
    let Some(image) = image else {
        return mine;
    };
    let Some(mine) = mine else {
        return Some(image.clone());
    };
    let (Ok(mut m), Ok(i)) = (parse_config(&mine), parse_config(image)) else {
        return Some(mine);
    };
    if m.test.as_ref().is_none_or(Vec::is_empty) {
        m.test = i.test;
    }
    for (mine, theirs) in [
        (&mut m.interval, i.interval),
        (&mut m.timeout, i.timeout),
        (&mut m.start_period, i.start_period),
        (&mut m.start_interval, i.start_interval),
        (&mut m.retries, i.retries),
    ] {
        if *mine == 0 {
            *mine = theirs;
        }
    }
    serde_json::to_value(m).ok()
}

/// Checks `Config.Healthcheck` as dockerd does at create.
pub fn validate(v: Option<&Value>) -> Result<()> {
    let Some(v) = v else { return Ok(()) };
    let h = parse_config(v)?;
    let min = MINIMUM.as_nanos() as i64;
    for (name, value) in [
        ("Interval", h.interval),
        ("Timeout", h.timeout),
        ("StartPeriod", h.start_period),
        ("StartInterval", h.start_interval),
    ] {
        if value != 0 && value < min {
            return Err(ContainerError::InvalidConfig(format!(
                "{name} in Healthcheck cannot be less than {}",
                go_duration(MINIMUM)
            )));
        }
    }
    if h.retries < 0 {
        return Err(ContainerError::InvalidConfig(
            "Retries in Healthcheck cannot be negative".into(),
        ));
    }
    Ok(())
}

/// The check a container's config asks for; `None` for none (no config,
/// an empty test, `NONE`, or a kind Docker does not know).
pub fn check(v: Option<&Value>, shell: Option<&[String]>) -> Option<Check> {
    let h = parse_config(v?).ok()?;
    let test = h.test?;
    let command = match test.first().map(String::as_str) {
        Some("CMD") => test[1..].to_vec(),
        Some("CMD-SHELL") => {
            let mut cmd = match shell.filter(|s| !s.is_empty()) {
                Some(s) => s.to_vec(),
                None => vec!["/bin/sh".to_string(), "-c".to_string()],
            };
            cmd.push(test[1..].join(" "));
            cmd
        }
        _ => return None,
    };
    if command.is_empty() {
        return None;
    }
    let or = |ns: i64, default: Duration| {
        if ns > 0 {
            Duration::from_nanos(ns as u64)
        } else {
            default
        }
    };
    Some(Check {
        command,
        interval: or(h.interval, DEFAULT_INTERVAL),
        timeout: or(h.timeout, DEFAULT_TIMEOUT),
        retries: if h.retries > 0 {
            h.retries
        } else {
            DEFAULT_RETRIES
        },
        start_period: or(h.start_period, Duration::ZERO),
        start_interval: or(h.start_interval, DEFAULT_START_INTERVAL),
    })
}

fn check_of(c: &Container) -> Option<Check> {
    let r = c.record();
    check(r.config.healthcheck.as_ref(), r.config.shell.as_deref())
}

/// Go's `time.Duration.String()`, as Docker's messages print durations.
pub fn go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    let trim = |whole: u128, frac: u128, digits: usize| {
        let frac = format!("{frac:0digits$}");
        let frac = frac.trim_end_matches('0');
        if frac.is_empty() {
            whole.to_string()
        } else {
            format!("{whole}.{frac}")
        }
    };
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{}µs", trim(ns / 1_000, ns % 1_000, 3));
    }
    if ns < 1_000_000_000 {
        return format!("{}ms", trim(ns / 1_000_000, ns % 1_000_000, 6));
    }
    let secs = ns / 1_000_000_000;
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let s = format!("{}s", trim(s, ns % 1_000_000_000, 9));
    match (h, m) {
        (0, 0) => s,
        (0, m) => format!("{m}m{s}"),
        (h, m) => format!("{h}h{m}m{s}"),
    }
}

/// The probe loop of a running container, if any.
#[derive(Default)]
pub struct Prober {
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Prober {
    /// Replaces the probe loop; whether one was running.
    fn set(&self, task: Option<tokio::task::JoinHandle<()>>) -> bool {
        let mut slot = self.task.lock().unwrap_or_else(|p| p.into_inner());
        let old = slot.take();
        *slot = task;
        old.map(|t| t.abort()).is_some()
    }
}

/// A container started (its record already `starting`, see [`at_start`]):
/// its probes begin. Nothing for a container without a check.
pub fn started(engine: &Engine, c: &Arc<Container>) {
    if check_of(c).is_none() {
        stopped(c);
        return;
    }
    resume(engine, c);
}

/// The health a start writes with the running state, in the same record
/// (so a start costs one durable write): `starting` with its streak reset
/// for a container with a check, else what it had.
pub fn at_start(c: &Container, health: Option<Health>) -> Option<Health> {
    if check_of(c).is_none() {
        return health;
    }
    let mut h = health.unwrap_or_default();
    h.status = HealthStatus::Starting;
    h.failing_streak = 0;
    Some(h)
}

/// Probes a running container's health from where its record left it
/// (after a daemon restart, or an unpause).
pub fn resume(engine: &Engine, c: &Arc<Container>) {
    let (Some(check), Some(engine)) = (check_of(c), engine.arc()) else {
        return;
    };
    if c.record().state.health.is_none() {
        c.update(|r| r.state.health = Some(Health::default()));
    }
    let container = c.clone();
    let task = tokio::spawn(async move { probe_loop(engine, container, check).await });
    c.health.set(Some(task));
}

/// The container stopped or paused: no more probes, and its health is
/// `unhealthy` (as dockerd marks it when its monitor stops). The caller
/// persists the record.
pub fn stopped(c: &Container) {
    if c.health.set(None) {
        c.update(|r| {
            if let Some(h) = &mut r.state.health {
                h.status = HealthStatus::Unhealthy;
            }
        });
    }
}

async fn probe_loop(engine: Arc<Engine>, c: Arc<Container>, check: Check) {
    loop {
        let r = c.record();
        let starting = r
            .state
            .health
            .as_ref()
            .is_none_or(|h| h.status == HealthStatus::Starting);
        let in_start_period = r
            .state
            .started_at
            .and_then(|s| s.elapsed().ok())
            .is_some_and(|ran| ran < check.start_period);
        let wait = if starting && in_start_period {
            check.start_interval
        } else {
            check.interval
        };
        tokio::time::sleep(wait).await;
        if c.status() != Status::Running || c.is_removed() {
            return;
        }
        let result = probe(&engine, &c, &check).await;
        tracing::debug!(container = %c.id, exit_code = result.exit_code, "health probe done");
        let changed = {
            let _op = c.op.lock().await;
            if c.status() != Status::Running {
                return;
            }
            let started_at = c.record().state.started_at;
            let changed = c.update(|r| {
                r.state
                    .health
                    .get_or_insert_with(Health::default)
                    .record(result, &check, started_at)
            });
            if let Err(e) = engine.containers.persist(&c) {
                tracing::warn!(container = %c.id, error = %e, "record a health probe");
            }
            changed
        };
        if let Some(status) = changed {
            emit(&engine, &c, &format!("health_status: {}", status.name()));
        }
    }
}

/// Output kept as dockerd keeps it: 4 KiB, then `...`.
#[derive(Default)]
struct Limited {
    buf: Vec<u8>,
    truncated: bool,
}

impl Limited {
    fn write(&mut self, data: &[u8]) {
        let keep = MAX_OUTPUT.saturating_sub(self.buf.len()).min(data.len());
        self.buf.extend_from_slice(&data[..keep]);
        self.truncated |= keep < data.len();
    }

    fn text(&self) -> String {
        let mut s = String::from_utf8_lossy(&self.buf).into_owned();
        if self.truncated {
            s.push_str("...");
        }
        s
    }
}

/// One probe: an exec of the check's command, killed past its timeout.
async fn probe(engine: &Arc<Engine>, c: &Arc<Container>, check: &Check) -> ProbeResult {
    let start = SystemTime::now();
    let failed = |output: String| ProbeResult {
        start,
        end: SystemTime::now(),
        exit_code: -1,
        output,
    };
    let config = ExecConfig {
        attach_stdout: true,
        attach_stderr: true,
        cmd: check.command.clone(),
        ..ExecConfig::default()
    };
    let id = match crate::exec::create(engine, c, config) {
        Ok(id) => id,
        Err(e) => return failed(e.to_string()),
    };
    let result = run_probe(engine, c, &id, check, start).await;
    // Forgotten once the monitor has seen its exit (its `exec_die`, the
    // supervisor's process deleted), as dockerd's exec GC forgets probes.
    let forget = engine.clone();
    tokio::spawn(async move {
        tokio::time::sleep(FORGET_AFTER).await;
        forget.execs.forget(&id);
    });
    result.unwrap_or_else(failed)
}

async fn run_probe(
    engine: &Arc<Engine>,
    c: &Container,
    id: &str,
    check: &Check,
    start: SystemTime,
) -> std::result::Result<ProbeResult, String> {
    let exec = engine.execs.get(id).map_err(|e| e.to_string())?;
    let session = crate::exec::start(engine, &exec, false)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "the probe was not attached".to_string())?;
    let _ = session.go.send(());
    drop(session.input);
    let mut output = session.output;
    let mut out = Limited::default();
    let read = tokio::time::timeout(check.timeout, async {
        while let Some((_, data)) = output.recv().await {
            out.write(&data);
        }
    })
    .await;
    if read.is_err() {
        tracing::debug!(container = %c.id, "health check taking too long");
        let kill = engine
            .supervisor
            .kill(&c.id, id, nix::sys::signal::Signal::SIGKILL as u32, false)
            .await;
        if let Err(e) = kill {
            tracing::warn!(container = %c.id, error = %e, "kill a health probe past its timeout");
        }
        // Its end, so that dying probes do not pile up.
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while output.recv().await.is_some() {}
        })
        .await;
        let text = out.text();
        let timeout = go_duration(check.timeout);
        let output = if text.is_empty() {
            format!("Health check exceeded timeout ({timeout})")
        } else {
            format!("Health check exceeded timeout ({timeout}): {text}")
        };
        return Ok(ProbeResult {
            start,
            end: SystemTime::now(),
            exit_code: -1,
            output,
        });
    }
    let exit_code = crate::exec::inspect(&exec)["ExitCode"]
        .as_i64()
        .ok_or_else(|| format!("healthcheck for container {} has no exit code!", c.id))?;
    Ok(ProbeResult {
        start,
        end: SystemTime::now(),
        exit_code,
        output: out.text(),
    })
}

/// The `health` filter's value of a container: its status, or `none`.
pub fn filter_value(c: &super::ContainerRecord) -> &'static str {
    if check(c.config.healthcheck.as_ref(), None).is_none() {
        return "none";
    }
    c.state.health.as_ref().map_or("none", |h| h.status.name())
}

/// Checks the values of the `health` filter.
pub fn check_filter(value: &str) -> Result<()> {
    match value {
        "starting" | "healthy" | "unhealthy" | "none" => Ok(()),
        other => Err(ContainerError::InvalidConfig(format!(
            "Unrecognised filter value for health: {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn checks_from_config() {
        let c = check(
            Some(&json!({"Test": ["CMD-SHELL", "test -f /ok"], "Interval": 1_000_000_000})),
            None,
        )
        .unwrap();
        assert_eq!(c.command, ["/bin/sh", "-c", "test -f /ok"]);
        assert_eq!(c.interval, Duration::from_secs(1));
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
        assert_eq!(c.retries, 3);
        assert_eq!(c.start_interval, DEFAULT_START_INTERVAL);
        let c = check(Some(&json!({"Test": ["CMD", "true", "x"]})), None).unwrap();
        assert_eq!(c.command, ["true", "x"]);
        assert!(check(Some(&json!({"Test": ["NONE"]})), None).is_none());
        assert!(check(Some(&json!({"Test": []})), None).is_none());
        assert!(check(None, None).is_none());
    }

    #[test]
    fn validated_as_dockerd() {
        assert!(validate(Some(&json!({"Interval": -1})))
            .is_err_and(|e| e.to_string() == "Interval in Healthcheck cannot be less than 1ms"));
        assert!(validate(Some(&json!({"Timeout": 999}))).is_err());
        assert!(validate(Some(&json!({"Retries": -1}))).is_err());
        assert!(validate(Some(&json!({"Interval": 1_000_000, "Retries": 0}))).is_ok());
    }

    #[test]
    fn merged_with_the_image() {
        let image = json!({"Test": ["CMD", "true"], "Interval": 5, "Retries": 2});
        let m = merge(Some(json!({"Interval": 7})), Some(&image)).unwrap();
        assert_eq!(m["Test"], json!(["CMD", "true"]));
        assert_eq!(m["Interval"], 7);
        assert_eq!(m["Retries"], 2);
        assert!(m.get("Timeout").is_none());
        assert_eq!(merge(None, Some(&image)), Some(image.clone()));
        let none = json!({"Test": ["NONE"]});
        assert_eq!(
            merge(Some(none.clone()), Some(&image)).unwrap()["Test"],
            none["Test"]
        );
    }

    #[test]
    fn results_move_the_status() {
        let check = check(Some(&json!({"Test": ["CMD", "x"], "Retries": 2})), None).unwrap();
        let now = SystemTime::now();
        let result = |code| ProbeResult {
            start: now,
            end: now,
            exit_code: code,
            output: String::new(),
        };
        let mut h = Health::default();
        assert_eq!(
            h.record(result(0), &check, None),
            Some(HealthStatus::Healthy)
        );
        assert_eq!(h.record(result(1), &check, None), None);
        assert_eq!(h.failing_streak, 1);
        assert_eq!(
            h.record(result(1), &check, None),
            Some(HealthStatus::Unhealthy)
        );
        for _ in 0..10 {
            h.record(result(1), &check, None);
        }
        assert_eq!(h.log.len(), KEEP_RESULTS);
        assert_eq!(h.to_json()["Log"].as_array().unwrap().len(), KEEP_RESULTS);
        // Failures in the start period do not count while starting.
        let mut h = Health::default();
        let check = Check {
            start_period: Duration::from_secs(60),
            ..check
        };
        h.record(result(1), &check, Some(now));
        assert_eq!((h.failing_streak, h.status), (0, HealthStatus::Starting));
    }

    #[test]
    fn output_bounded_and_durations_as_go() {
        let mut l = Limited::default();
        l.write(&[b'a'; 5000]);
        assert_eq!(l.text().len(), MAX_OUTPUT + 3);
        assert_eq!(go_duration(Duration::from_secs(1)), "1s");
        assert_eq!(go_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::from_millis(1)), "1ms");
    }
}
