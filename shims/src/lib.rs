//! berth-shim: one process per container, between the supervisor and the
//! OCI runtime. It is the container's parent and reaper, keeps its stdio
//! (pipes or the pty master) and its log, records its exit durably, and
//! serves a control socket; see `shims/README.md` for the protocol.
//!
//! The library holds the binary's logic (`daemon`, `server`, `oom`) and what
//! clients share with it: [`protocol`] (requests, responses, states),
//! [`options`] (the command line) and [`client`] (a synchronous client and
//! [`client::spawn_shim`]).

pub mod client;
pub mod daemon;
pub mod logfile;
pub mod oom;
pub mod options;
pub mod process;
pub mod protocol;
pub mod record;
pub mod runtime;
pub mod server;
mod sys;
pub mod time;
pub mod trace;
