//! The shim's control protocol, shared by the shim and its clients.
//!
//! A connection to the control socket carries newline-delimited JSON: one
//! request per line, answered in order by one response per line,
//! `{"ok": VALUE}` or `{"error": "message", "kind": "not_found"}` (see
//! [`Response`]). A request names its operation in `op`; see [`Request`]
//! for the fields of each and the type of its `ok` value. The `kind` of a
//! refusal ([`ErrorKind`]) is what a client acts on; the message is for
//! people.
//!
//! `attach` turns its connection into a byte stream once the shim has
//! answered `{"ok":{}}`: the shim sends the process's output as frames of
//! Docker's stdcopy format, an 8-byte header `[stream, 0, 0, 0, len (u32,
//! big-endian)]` then `len` bytes, with stream [`STDOUT`] or [`STDERR`] (a
//! terminal's output is [`STDOUT`]); the client sends stdin as frames with
//! stream [`STDIN`], and a frame of length 0 closes the process's stdin. The
//! shim closes the stream once the process has exited and its output is
//! drained.
//!
//! `events` turns its connection into a one-way stream of [`ShimEvent`]s,
//! one JSON object per line, once the shim has answered `{"ok":{}}`. The
//! shim first sends an `exit` event for every process (the init, and exec'd
//! processes not yet deleted) that has already exited, oldest first, then
//! each event as it happens, until the shim exits and closes the
//! connection. An exit is sent after it is recorded durably. What the client
//! sends on the connection is read and ignored; its end of file closes the
//! stream. Several connections may subscribe at once; one that does not read
//! is disconnected once 8 MiB are queued for it.
//!
//! OOM kills are found by watching the init's memory cgroup, as
//! `/proc/<pid>/cgroup` names it just after the container is created: with
//! cgroup v1, an eventfd registered for `memory.oom_control` in
//! `cgroup.event_control`; with cgroup v2, inotify on `memory.events`. Each
//! wakeup re-reads the `oom_kill` counter and sends one `oom` event per kill.
//! An OOM kill that ends the init is sent before the init's `exit`. OOMs are
//! not replayed to a later subscriber.

use std::time::SystemTime;

use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// Stream number of stdin frames (client to shim).
pub const STDIN: u8 = 0;
/// Stream number of stdout frames (shim to client); a terminal's output too.
pub const STDOUT: u8 = 1;
/// Stream number of stderr frames (shim to client).
pub const STDERR: u8 = 2;
/// Length of a frame header.
pub const FRAME_HEADER_LEN: usize = 8;
/// Largest frame either side sends or accepts.
pub const MAX_FRAME_LEN: usize = 1 << 20;
/// Longest request line the shim reads (an exec's process JSON included).
pub const MAX_REQUEST_LEN: usize = 1 << 20;

/// Builds a frame header for `len` bytes of `stream`.
pub fn frame_header(stream: u8, len: usize) -> [u8; FRAME_HEADER_LEN] {
    // Frames are at most MAX_FRAME_LEN long, which fits a u32.
    let len = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    [stream, 0, 0, 0, len[0], len[1], len[2], len[3]]
}

/// Splits a frame header into its stream and length.
pub fn parse_frame_header(header: &[u8; FRAME_HEADER_LEN]) -> (u8, usize) {
    let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    (header[0], len as usize)
}

/// One request line. `exec_id` absent means the container's init process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// The state of the container (or of one exec'd process): [`ProcessState`].
    State {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exec_id: Option<String>,
    },
    /// `berth-runtime start`: the init runs its process. Answers [`Started`];
    /// with `trace`, with the steps of the start (the shim's and the
    /// runtime's own, see [`TraceSpan`]). A shim that predates `trace`
    /// ignores it.
    Start {
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        trace: bool,
    },
    /// Sends a signal (a number) to the init (with `all`, to every process
    /// of the container) or to an exec'd process.
    Kill {
        signal: i32,
        #[serde(default)]
        all: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exec_id: Option<String>,
    },
    /// Registers one more process (an OCI `process` object) under `exec_id`;
    /// it runs at `start_exec`, so a client can attach first.
    Exec {
        exec_id: String,
        process: Value,
        #[serde(default)]
        terminal: bool,
    },
    /// `berth-runtime exec` of a registered process. Answers [`Started`].
    StartExec {
        exec_id: String,
    },
    /// Sets the size of the process's terminal.
    Resize {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exec_id: Option<String>,
        width: u16,
        height: u16,
    },
    /// Closes the process's stdin (once what is queued for it is written).
    CloseStdin {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exec_id: Option<String>,
    },
    /// The container's processes (`berth-runtime ps`): [`Pids`].
    Pids,
    /// The container's cgroup statistics, as `berth-runtime events --stats`
    /// prints them (`{"type":"stats","id":…,"data":{"cpu":…,"memory":…}}`).
    Stats,
    Pause,
    Resume,
    /// Changes the container's resource limits (an OCI `linux.resources`
    /// object) with `berth-runtime update --resources`.
    Update {
        resources: Value,
    },
    /// Answers [`ExitInfo`] once the process has exited (at once if it has).
    Wait {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exec_id: Option<String>,
    },
    /// Without `exec_id`: deletes the stopped (or never started) container
    /// with `berth-runtime delete`, answers its [`ExitInfo`], and the shim
    /// exits. With `exec_id`: forgets an exited exec'd process.
    Delete {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exec_id: Option<String>,
    },
    /// Exits the shim, deleting the container's runtime state. Refused while
    /// the container's init is alive, unless `force` (which kills it first).
    Shutdown {
        #[serde(default)]
        force: bool,
    },
    /// Switches the connection to the framed byte stream (see the module
    /// documentation); with `stdin`, the client's frames feed the process.
    Attach {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exec_id: Option<String>,
        #[serde(default)]
        stdin: bool,
    },
    /// Switches the connection to the stream of [`ShimEvent`] lines (see the
    /// module documentation).
    Events,
    /// Reopens the container log at its path (after it was moved away:
    /// kubelet's rotation of a CRI log).
    ReopenLog,
    /// The steps of the create recorded by a shim started with `--trace`,
    /// once: [`Traced`].
    Trace,
}

impl Request {
    /// The `op` names the shim knows.
    pub const OPS: &'static [&'static str] = &[
        "state",
        "start",
        "kill",
        "exec",
        "start_exec",
        "resize",
        "close_stdin",
        "pids",
        "stats",
        "pause",
        "resume",
        "update",
        "wait",
        "delete",
        "shutdown",
        "attach",
        "events",
        "reopen_log",
        "trace",
    ];
}

/// One response line: `{"ok": VALUE}`, or `{"error": "message", "kind":
/// "…"}` when the shim refuses the request. A refusal without `kind` (from
/// a shim that predates it) decodes as [`ErrorKind::FailedPrecondition`],
/// and so does a kind this version does not know.
#[derive(Clone, Debug, PartialEq)]
pub enum Response {
    Ok(Value),
    Error(Refusal),
}

impl Response {
    /// The `ok` value of a typed answer.
    pub fn ok<T: Serialize>(answer: &T) -> Response {
        // The answers are plain structs of strings and numbers, which
        // always serialize; a failure would answer null.
        Response::Ok(serde_json::to_value(answer).unwrap_or(Value::Null))
    }

    /// A refusal of `kind`.
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Response {
        Response::Error(Refusal {
            kind,
            message: message.into(),
        })
    }
}

impl Serialize for Response {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Response::Ok(value) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("ok", value)?;
                map.end()
            }
            Response::Error(refusal) => {
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("error", &refusal.message)?;
                map.serialize_entry("kind", &refusal.kind)?;
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Response {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// `{"ok": null}` is an answer: a present `ok` is `Some` even when
        /// it is null.
        fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
            Value::deserialize(d).map(Some)
        }
        #[derive(Deserialize)]
        struct Wire {
            #[serde(default, deserialize_with = "present")]
            ok: Option<Value>,
            #[serde(default)]
            error: Option<String>,
            #[serde(default)]
            kind: Option<ErrorKind>,
        }
        // An object, not a sequence of the fields.
        let object = serde_json::Map::<String, Value>::deserialize(deserializer)?;
        let wire = Wire::deserialize(Value::Object(object)).map_err(serde::de::Error::custom)?;
        match (wire.ok, wire.error) {
            (Some(value), None) => Ok(Response::Ok(value)),
            (None, Some(message)) => Ok(Response::Error(Refusal {
                kind: wire.kind.unwrap_or_default(),
                message,
            })),
            _ => Err(serde::de::Error::custom(
                "a response has exactly one of \"ok\" and \"error\"",
            )),
        }
    }
}

/// Why the shim refused a request: what a client decides by (a gRPC code,
/// a retry), where the message is for people.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The exec'd process named does not exist.
    NotFound,
    /// An exec'd process of that id exists already.
    AlreadyExists,
    /// The request itself is wrong: malformed, an unknown op, a bad field,
    /// id, signal, process or resources.
    InvalidArgument,
    /// The shim failed at its own work (a file, a terminal, the runtime's
    /// output).
    Internal,
    /// The request does not fit the process's state (start a running
    /// container, exec in a stopped one, delete a live one), or the
    /// runtime refused it. Also what a refusal without a kind, or of a
    /// kind this version does not know, means.
    #[default]
    #[serde(other)]
    FailedPrecondition,
}

/// A refused request: its [`ErrorKind`] and the shim's message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub kind: ErrorKind,
    pub message: String,
}

/// Status of the container or of an exec'd process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Created and waiting for `start` (an exec: registered, not started).
    Created,
    Running,
    Paused,
    /// Exited; the exit status is known and recorded.
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// Answer to `state`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProcessState {
    /// The container id.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_id: Option<String>,
    pub bundle: String,
    /// Host pid; absent before the process exists.
    #[serde(default)]
    pub pid: Option<i32>,
    pub status: Status,
    pub terminal: bool,
    /// Exit status (128+N for signal N) once stopped.
    #[serde(default)]
    pub exit_status: Option<i32>,
    /// RFC 3339 time of the exit once stopped.
    #[serde(default)]
    pub exited_at: Option<String>,
}

/// How a process ended: answer to `wait` and `delete`, and the content of
/// `exit.json` (and `exec-<exec_id>.exit.json`) in the shim's state
/// directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// The exit code, or 128+N when signal N killed the process.
    pub exit_status: i32,
    /// When the shim reaped it, RFC 3339 with nanoseconds, UTC.
    pub exited_at: String,
}

impl ExitInfo {
    /// `exited_at` as a time, if it is in the shim's format.
    pub fn exited_at_time(&self) -> Option<SystemTime> {
        crate::time::parse_rfc3339(&self.exited_at)
    }
}

/// One line of an `events` stream, tagged by `type`:
/// `{"type":"exit","exec_id":"e1","pid":42,"exit_status":137,"exited_at":"…"}`
/// (no `exec_id` for the init) or `{"type":"oom"}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ShimEvent {
    /// A process exited (its exit is already recorded durably).
    Exit {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exec_id: Option<String>,
        /// Host pid; 0 for an exec'd process that never ran (its
        /// `start_exec` failed).
        pid: i32,
        /// The exit code, or 128+N when signal N killed the process.
        exit_status: i32,
        /// When the shim reaped it, RFC 3339 with nanoseconds, UTC.
        exited_at: String,
    },
    /// The kernel's OOM killer acted in the container's memory cgroup.
    Oom,
}

/// Answer of the requests that return nothing (`kill`, `exec`, `resize`,
/// `close_stdin`, `pause`, `resume`, `update`, `shutdown`, and `attach` and
/// `events` before their streams): `{}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {}

/// Answer to `start` and `start_exec`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Started {
    pub pid: i32,
    /// The steps of a traced start; absent otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trace: Vec<TraceSpan>,
}

/// Answer to `trace`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traced {
    pub spans: Vec<TraceSpan>,
}

/// The layer a [`TraceSpan`] was recorded in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TraceLayer {
    Shim,
    Runtime,
}

/// One timed step of a traced create or start, on `CLOCK_MONOTONIC`
/// (nanoseconds), the clock every process on the host shares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceSpan {
    pub layer: TraceLayer,
    pub name: String,
    pub start_ns: u64,
    pub end_ns: u64,
}

/// Answer to `pids`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pids {
    pub pids: Vec<i32>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn trace_is_optional_both_ways() {
        // An untraced start is the same line as before `trace` existed.
        let start = Request::Start { trace: false };
        assert_eq!(
            serde_json::to_value(&start).unwrap(),
            json!({"op": "start"})
        );
        let traced = Request::Start { trace: true };
        let line = serde_json::to_string(&traced).unwrap();
        assert_eq!(line, r#"{"op":"start","trace":true}"#);
        // A shim that predates it (`Start` a unit variant) ignores the flag.
        #[derive(Debug, PartialEq, Deserialize)]
        #[serde(tag = "op", rename_all = "snake_case")]
        enum Older {
            Start,
        }
        assert_eq!(serde_json::from_str::<Older>(&line).unwrap(), Older::Start);
        // And its answer, without spans, reads as an untraced one.
        let started: Started = serde_json::from_str(r#"{"pid":7}"#).unwrap();
        assert_eq!(started.trace, Vec::new());
        assert_eq!(serde_json::to_value(&started).unwrap(), json!({"pid": 7}));
        let span = TraceSpan {
            layer: TraceLayer::Runtime,
            name: "pivot_root".into(),
            start_ns: 1,
            end_ns: 2,
        };
        assert_eq!(
            serde_json::to_value(&span).unwrap(),
            json!({"layer": "runtime", "name": "pivot_root", "start_ns": 1, "end_ns": 2})
        );
    }

    #[test]
    fn requests_have_the_documented_shape() {
        let kill = Request::Kill {
            signal: 15,
            all: true,
            exec_id: None,
        };
        assert_eq!(
            serde_json::to_value(&kill).unwrap(),
            json!({"op": "kill", "signal": 15, "all": true})
        );
        let parsed: Request = serde_json::from_str(r#"{"op":"start"}"#).unwrap();
        assert_eq!(parsed, Request::Start { trace: false });
        let parsed: Request = serde_json::from_str(r#"{"op":"wait","exec_id":"e1"}"#).unwrap();
        assert_eq!(
            parsed,
            Request::Wait {
                exec_id: Some("e1".into())
            }
        );
        let parsed: Request = serde_json::from_str(r#"{"op":"attach"}"#).unwrap();
        assert_eq!(
            parsed,
            Request::Attach {
                exec_id: None,
                stdin: false
            }
        );
    }

    #[test]
    fn every_op_name_parses() {
        for op in Request::OPS {
            let value = json!({"op": op, "signal": 1, "exec_id": "e", "process": {},
                               "width": 1, "height": 1, "resources": {}});
            serde_json::from_value::<Request>(value)
                .unwrap_or_else(|e| panic!("op {op} does not parse: {e}"));
        }
    }

    #[test]
    fn responses_are_ok_or_error() {
        let ok = Response::ok(&Started {
            pid: 3,
            trace: Vec::new(),
        });
        assert_eq!(serde_json::to_string(&ok).unwrap(), r#"{"ok":{"pid":3}}"#);
        assert_eq!(
            serde_json::to_string(&Response::ok(&Done {})).unwrap(),
            r#"{"ok":{}}"#
        );
        let err = Response::error(ErrorKind::NotFound, "no such exec process");
        assert_eq!(
            serde_json::to_string(&err).unwrap(),
            r#"{"error":"no such exec process","kind":"not_found"}"#
        );
        for response in [ok, err] {
            let line = serde_json::to_string(&response).unwrap();
            assert_eq!(serde_json::from_str::<Response>(&line).unwrap(), response);
        }
        assert_eq!(
            serde_json::from_str::<Response>(r#"{"ok":null}"#).unwrap(),
            Response::Ok(Value::Null)
        );
    }

    #[test]
    fn refusals_without_a_known_kind_are_failed_preconditions() {
        let old: Response = serde_json::from_str(r#"{"error":"is running"}"#).unwrap();
        assert_eq!(
            old,
            Response::error(ErrorKind::FailedPrecondition, "is running")
        );
        let newer: Response =
            serde_json::from_str(r#"{"error":"x","kind":"out_of_coffee"}"#).unwrap();
        assert_eq!(newer, Response::error(ErrorKind::FailedPrecondition, "x"));
        for kind in [
            ErrorKind::NotFound,
            ErrorKind::AlreadyExists,
            ErrorKind::InvalidArgument,
            ErrorKind::FailedPrecondition,
            ErrorKind::Internal,
        ] {
            let line = serde_json::to_string(&Response::error(kind, "m")).unwrap();
            match serde_json::from_str::<Response>(&line).unwrap() {
                Response::Error(refusal) => assert_eq!(refusal.kind, kind, "{line}"),
                other => panic!("{line}: {other:?}"),
            }
        }
        for bad in [r#"{}"#, r#"{"ok":1,"error":"x"}"#, r#"{"error":7}"#, "[1]"] {
            assert!(serde_json::from_str::<Response>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn events_have_the_documented_shape() {
        let parsed: Request = serde_json::from_str(r#"{"op":"events"}"#).unwrap();
        assert_eq!(parsed, Request::Events);
        assert_eq!(
            serde_json::to_value(Request::Events).unwrap(),
            json!({"op": "events"})
        );
        let init = ShimEvent::Exit {
            exec_id: None,
            pid: 42,
            exit_status: 3,
            exited_at: "2024-01-02T03:04:05.000000006Z".into(),
        };
        assert_eq!(
            serde_json::to_value(&init).unwrap(),
            json!({"type": "exit", "pid": 42, "exit_status": 3,
                   "exited_at": "2024-01-02T03:04:05.000000006Z"})
        );
        let exec: ShimEvent = serde_json::from_str(
            r#"{"type":"exit","exec_id":"e1","pid":7,"exit_status":137,"exited_at":"t"}"#,
        )
        .unwrap();
        assert_eq!(
            exec,
            ShimEvent::Exit {
                exec_id: Some("e1".into()),
                pid: 7,
                exit_status: 137,
                exited_at: "t".into(),
            }
        );
        assert_eq!(
            serde_json::to_string(&ShimEvent::Oom).unwrap(),
            r#"{"type":"oom"}"#
        );
        assert_eq!(
            serde_json::from_str::<ShimEvent>(r#"{"type":"oom"}"#).unwrap(),
            ShimEvent::Oom
        );
        assert!(serde_json::from_str::<ShimEvent>(r#"{"type":"start"}"#).is_err());
    }

    #[test]
    fn frame_headers_round_trip() {
        let header = frame_header(STDERR, 70_000);
        assert_eq!(header, [2, 0, 0, 0, 0, 1, 0x11, 0x70]);
        assert_eq!(parse_frame_header(&header), (STDERR, 70_000));
    }
}
