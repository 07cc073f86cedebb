//! The runtime's own step timings, for a traced start (`berth run
//! --trace`): when the environment names a file in [`TRACE_ENV`], `create`
//! and `start` append their steps to it as JSON lines,
//! `{"name":"pivot_root","start_ns":…,"end_ns":…}`, stamped with
//! `CLOCK_MONOTONIC` nanoseconds (the clock every process on the host
//! shares). The init records its steps after clone and sends them to the
//! runtime before it reports ready. Without the variable nothing is
//! recorded: one flag test per step.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};

/// The environment variable naming the file the steps are appended to.
pub const TRACE_ENV: &str = "BERTH_RUNTIME_TRACE";

/// One timed step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    pub start_ns: u64,
    pub end_ns: u64,
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static FILE: OnceLock<PathBuf> = OnceLock::new();
static STEPS: Mutex<Vec<Step>> = Mutex::new(Vec::new());

/// Turns recording on when [`TRACE_ENV`] names a file (called once by
/// `main`, before any step).
pub fn init_from_env() {
    if let Some(path) = std::env::var_os(TRACE_ENV).filter(|p| !p.is_empty()) {
        let _ = FILE.set(PathBuf::from(path));
        ENABLED.store(true, Ordering::Relaxed);
    }
}

/// Whether steps are recorded.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Now on `CLOCK_MONOTONIC`, in nanoseconds.
pub fn now_ns() -> u64 {
    // CLOCK_MONOTONIC cannot fail on Linux; 0 would only misplace a step.
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// A step's start: `Some(now)` when recording, else `None`.
pub fn begin() -> Option<u64> {
    enabled().then(now_ns)
}

/// Records `name` from `start` (a [`begin`]) until now; returns now, the
/// start of a step that follows at once.
pub fn end(name: &str, start: Option<u64>) -> Option<u64> {
    let start = start?;
    let end_ns = now_ns();
    add([Step {
        name: name.to_string(),
        start_ns: start,
        end_ns,
    }]);
    Some(end_ns)
}

/// Records steps timed elsewhere (the init's).
pub fn add(steps: impl IntoIterator<Item = Step>) {
    if !enabled() {
        return;
    }
    // The runtime is single-threaded; a poisoned lock still holds a Vec.
    STEPS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend(steps);
}

/// The steps recorded so far, leaving none.
pub fn take() -> Vec<Step> {
    std::mem::take(&mut *STEPS.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Appends the recorded steps to the trace file. A trace that cannot be
/// written is lost, never the command's failure.
pub fn write() {
    let Some(path) = FILE.get().filter(|_| enabled()) else {
        return;
    };
    let steps = take();
    if steps.is_empty() {
        return;
    }
    let mut text = Vec::new();
    for step in &steps {
        if serde_json::to_writer(&mut text, step).is_ok() {
            text.push(b'\n');
        }
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path);
    if let Ok(mut f) = file {
        let _ = f.write_all(&text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_json_lines_with_monotonic_stamps() {
        let step = Step {
            name: "pivot_root".into(),
            start_ns: 1,
            end_ns: 2,
        };
        assert_eq!(
            serde_json::to_string(&step).unwrap(),
            r#"{"name":"pivot_root","start_ns":1,"end_ns":2}"#
        );
        let a = now_ns();
        let b = now_ns();
        assert!(a > 0 && b >= a);
    }

    #[test]
    fn nothing_is_recorded_when_off() {
        // The tests' environment has no BERTH_RUNTIME_TRACE.
        assert!(!enabled());
        assert_eq!(begin(), None);
        assert_eq!(end("step", None), None);
        add([Step {
            name: "x".into(),
            start_ns: 1,
            end_ns: 2,
        }]);
        assert!(take().is_empty());
    }
}
