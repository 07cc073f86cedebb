//! Restart policies (`--restart`): after an exit the container's policy
//! says whether it starts again, and when. The back-off is dockerd's: the
//! delay starts at 100 ms and doubles with each consecutive restart up to a
//! minute, and starts over once the container ran at least 10 s. While it
//! waits the container is `restarting` (it counts as running, as in Docker:
//! `stop`, `kill` and `rm -f` apply to it and end the loop). A stop or kill
//! by the user cancels restarts until the next start by the user; the
//! record keeps whether the user stopped it, so `unless-stopped` remembers
//! it across daemon restarts. At daemon start the containers whose policy
//! says so are started again ([`start_at_boot`]). As with dockerd 20.10, a
//! restart by policy shows as `die` then `start` events (`restart` is the
//! user's `docker restart`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::record::Status;
use super::{Container, ContainerError, Result};
use crate::types::RestartPolicy;
use crate::Engine;

/// The first delay before a restart.
pub const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest delay.
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// A container that ran this long starts over with [`FIRST_DELAY`].
pub const RESET_AFTER: Duration = Duration::from_secs(10);

/// A restart policy by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    No,
    Always,
    UnlessStopped,
    /// `on-failure[:N]`; 0 is no limit.
    OnFailure(i64),
}

impl Policy {
    /// The policy of `HostConfig.RestartPolicy`, judged as dockerd 20.10
    /// judges it at create and update (its messages).
    pub fn parse(p: &RestartPolicy) -> std::result::Result<Policy, String> {
        match p.name.as_str() {
            "" | "no" | "always" | "unless-stopped" if p.maximum_retry_count != 0 => {
                if p.name.is_empty() {
                    // Docker before 25 wrote an empty name with any count.
                    return Ok(Policy::No);
                }
                Err(format!(
                    "maximum retry count cannot be used with restart policy '{}'",
                    p.name
                ))
            }
            "" | "no" => Ok(Policy::No),
            "always" => Ok(Policy::Always),
            "unless-stopped" => Ok(Policy::UnlessStopped),
            "on-failure" if p.maximum_retry_count < 0 => {
                Err("maximum retry count cannot be negative".into())
            }
            "on-failure" => Ok(Policy::OnFailure(p.maximum_retry_count)),
            other => Err(format!("invalid restart policy '{other}'")),
        }
    }

    /// Whether a container that exited with `exit_code`, restarted
    /// `restart_count` times, restarts by this policy.
    pub fn restarts(self, exit_code: i64, restart_count: i64, stopped_by_user: bool) -> bool {
        match self {
            Policy::No => false,
            Policy::Always => true,
            Policy::UnlessStopped => !stopped_by_user,
            Policy::OnFailure(max) => exit_code != 0 && (max == 0 || restart_count < max),
        }
    }
}

/// Checks a policy as create and update do.
pub fn validate(p: &RestartPolicy) -> Result<()> {
    Policy::parse(p)
        .map(|_| ())
        .map_err(ContainerError::InvalidConfig)
}

/// A container's restart state for the engine's life (dockerd's restart
/// manager): the last delay, and whether the user ended the loop.
#[derive(Default)]
pub struct Manager {
    state: Mutex<ManagerState>,
    /// Bumped when the user cancels; a waiting restart watches it.
    cancels: watch::Sender<u64>,
}

#[derive(Default)]
struct ManagerState {
    delay: Duration,
    cancelled: bool,
    /// A restart of this engine waits for its delay.
    pending: bool,
}

impl Manager {
    fn state(&self) -> std::sync::MutexGuard<'_, ManagerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The delay before the next restart, or `None` when there is none.
    /// `ran` is how long the container ran before this exit.
    pub fn next(
        &self,
        policy: Policy,
        exit_code: i64,
        restart_count: i64,
        stopped_by_user: bool,
        ran: Duration,
    ) -> Option<Duration> {
        if policy == Policy::No {
            return None;
        }
        let mut s = self.state();
        if s.cancelled {
            return None;
        }
        if ran >= RESET_AFTER {
            s.delay = Duration::ZERO;
        }
        s.delay = if s.delay.is_zero() {
            FIRST_DELAY
        } else {
            (s.delay * 2).min(MAX_DELAY)
        };
        policy
            .restarts(exit_code, restart_count, stopped_by_user)
            .then_some(s.delay)
    }

    /// The user stopped or killed the container: no more restarts until it
    /// is started again by the user.
    pub fn cancel(&self) {
        self.state().cancelled = true;
        self.cancels.send_modify(|n| *n += 1);
    }

    /// A start by the user: the loop begins afresh.
    pub fn reset(&self) {
        let mut s = self.state();
        s.cancelled = false;
        s.delay = Duration::ZERO;
    }

    fn is_cancelled(&self) -> bool {
        self.state().cancelled
    }

    /// Whether this engine has a restart of the container waiting (a
    /// `restarting` record without one was left by an engine that died).
    pub fn is_pending(&self) -> bool {
        self.state().pending
    }

    fn set_pending(&self, pending: bool) {
        self.state().pending = pending;
    }
}

/// After an exit, under the container's `op`: whether it restarts, with
/// the record saying so (`restarting`, the count one up). The caller
/// records the exit either way and then calls [`schedule`] with the delay.
pub fn decide(c: &Container, exit_code: i64, finished: Option<SystemTime>) -> Option<Duration> {
    let r = c.record();
    let policy = Policy::parse(&r.host_config.restart_policy).ok()?;
    let ran = match (r.state.started_at, finished) {
        (Some(start), Some(end)) => end.duration_since(start).unwrap_or_default(),
        _ => Duration::ZERO,
    };
    c.restart
        .next(
            policy,
            exit_code,
            r.restart_count,
            r.state.stopped_by_user,
            ran,
        )
        .inspect(|_| {
            c.update(|r| {
                r.restart_count += 1;
                r.state.status = Status::Restarting;
            });
        })
}

/// Starts the container again after `delay`, unless the user ends the loop
/// first (then it is `exited`).
pub fn schedule(engine: &Engine, c: &Arc<Container>, delay: Duration) {
    let Some(engine) = engine.arc() else {
        return;
    };
    let c = c.clone();
    let mut cancels = c.restart.cancels.subscribe();
    c.restart.set_pending(true);
    tokio::spawn(async move {
        tracing::debug!(container = %c.id, ms = delay.as_millis() as u64, "restart scheduled");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = cancels.changed() => {}
        }
        // Held from the check of the cancellation to the running task.
        let _op = c.op.lock().await;
        c.restart.set_pending(false);
        if c.is_removed() || c.status() != Status::Restarting {
            return;
        }
        if c.restart.is_cancelled() {
            stopped(&engine, &c);
            return;
        }
        if let Err(e) = super::lifecycle::start_task(&engine, &c).await {
            tracing::warn!(container = %c.id, error = %e, "restart by policy");
            if c.status() == Status::Restarting {
                stopped(&engine, &c);
            }
        }
    });
}

/// A restarting container whose restart will not come: exited.
fn stopped(engine: &Engine, c: &Container) {
    c.update(|r| r.state.status = Status::Exited);
    if let Err(e) = engine.containers.persist(c) {
        tracing::warn!(container = %c.id, error = %e, "record a cancelled restart");
    }
}

/// Whether a container found stopped at daemon start starts again: the
/// policy's rule on its last exit, for containers that ran before.
fn starts_at_boot(c: &Container) -> bool {
    let r = c.record();
    if r.state.status != Status::Exited || r.state.started_at.is_none() {
        return false;
    }
    Policy::parse(&r.host_config.restart_policy).is_ok_and(|p| {
        p != Policy::No && p.restarts(r.state.exit_code, r.restart_count, r.state.stopped_by_user)
    })
}

/// At daemon start, after the records were matched with the tasks: the
/// stopped containers whose policy says so are started (as the user would,
/// their count starting over). Running ones were reattached already.
pub async fn start_at_boot(engine: &Engine) {
    for c in engine.containers.all() {
        if !starts_at_boot(&c) {
            continue;
        }
        tracing::info!(container = %c.id, "started at daemon start by its restart policy");
        if let Err(e) = super::lifecycle::start(engine, &c).await {
            tracing::warn!(container = %c.id, error = %e, "start at daemon start");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str, n: i64) -> RestartPolicy {
        RestartPolicy {
            name: name.into(),
            maximum_retry_count: n,
        }
    }

    #[test]
    fn policies_judged_as_dockerd() {
        assert_eq!(Policy::parse(&policy("", 0)), Ok(Policy::No));
        assert_eq!(
            Policy::parse(&policy("on-failure", 2)),
            Ok(Policy::OnFailure(2))
        );
        assert_eq!(
            Policy::parse(&policy("on-failure", -1)).unwrap_err(),
            "maximum retry count cannot be negative"
        );
        assert_eq!(
            Policy::parse(&policy("always", 3)).unwrap_err(),
            "maximum retry count cannot be used with restart policy 'always'"
        );
        assert_eq!(
            Policy::parse(&policy("sometimes", 0)).unwrap_err(),
            "invalid restart policy 'sometimes'"
        );
    }

    #[test]
    fn who_restarts() {
        assert!(Policy::Always.restarts(0, 100, true));
        assert!(!Policy::UnlessStopped.restarts(1, 0, true));
        assert!(Policy::UnlessStopped.restarts(0, 0, false));
        assert!(!Policy::OnFailure(0).restarts(0, 0, false));
        assert!(Policy::OnFailure(0).restarts(1, 1000, false));
        assert!(Policy::OnFailure(2).restarts(1, 1, false));
        assert!(!Policy::OnFailure(2).restarts(1, 2, false));
        assert!(!Policy::No.restarts(1, 0, false));
    }

    /// Waits (at most 5 s) until `cond` holds.
    async fn until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !cond() {
            assert!(tokio::time::Instant::now() < deadline, "waited for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn on_failure_restarts_on_the_fake_until_its_limit() {
        use crate::backend::fake::Fake;
        use crate::containers::{create, lifecycle};
        use crate::images::tests::{add, engine, BUSYBOX};
        let fake = Fake::new();
        add(&fake, BUSYBOX, "2024-01-01T00:00:00Z", &[]);
        let (engine, _dir) = engine(&fake).await;
        engine.start_monitor().await.unwrap();
        let req = serde_json::from_value(serde_json::json!({
            "Image": "busybox", "Cmd": ["false"],
            "HostConfig": {"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 1}}
        }))
        .unwrap();
        let c = create::create(&engine, None, req).await.unwrap();
        lifecycle::start(&engine, &c).await.unwrap();
        fake.exit(&c.id, 3);
        until("the restart", || {
            c.status() == Status::Running && c.record().restart_count == 1
        })
        .await;
        let starts = |calls: Vec<String>| calls.iter().filter(|l| l.starts_with("start ")).count();
        assert_eq!(starts(fake.calls()), 2);
        fake.exit(&c.id, 3);
        until("the final exit", || c.status() == Status::Exited).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(c.status(), Status::Exited);
        assert_eq!(starts(fake.calls()), 2);
        assert_eq!(c.record().state.exit_code, 3);

        // `always`, ended by a stop while it waits to restart.
        let req = serde_json::from_value(serde_json::json!({
            "Image": "busybox", "Cmd": ["false"],
            "HostConfig": {"RestartPolicy": {"Name": "always"}}
        }))
        .unwrap();
        let c = create::create(&engine, None, req).await.unwrap();
        lifecycle::start(&engine, &c).await.unwrap();
        // Many quick exits make the next delay long enough to catch.
        for n in 1..=4 {
            fake.exit(&c.id, 0);
            until("a restart", || {
                c.status() == Status::Running && c.record().restart_count == n
            })
            .await;
        }
        fake.exit(&c.id, 0);
        until("restarting", || c.status() == Status::Restarting).await;
        lifecycle::stop(&engine, &c, None, Some(0)).await.unwrap();
        assert_eq!(c.status(), Status::Exited);
        assert!(c.record().state.stopped_by_user);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(c.status(), Status::Exited);
    }

    #[test]
    fn back_off_doubles_caps_and_resets() {
        let m = Manager::default();
        let short = Duration::from_secs(1);
        let delays: Vec<_> = (0..4)
            .map(|i| m.next(Policy::Always, 1, i, false, short).unwrap())
            .collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800].map(Duration::from_millis).to_vec()
        );
        for i in 0..20 {
            m.next(Policy::Always, 1, i, false, short);
        }
        assert_eq!(m.next(Policy::Always, 1, 0, false, short), Some(MAX_DELAY));
        assert_eq!(
            m.next(Policy::Always, 1, 0, false, RESET_AFTER),
            Some(FIRST_DELAY)
        );
        m.cancel();
        assert_eq!(m.next(Policy::Always, 1, 0, false, short), None);
        m.reset();
        assert_eq!(
            m.next(Policy::Always, 1, 0, false, short),
            Some(FIRST_DELAY)
        );
    }
}
