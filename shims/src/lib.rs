//! berth-shim: one process per container, between the supervisor and the
//! OCI runtime. It is the container's parent and reaper, keeps its stdio
//! (pipes or the pty master) and its log, records its exit durably, and
//! serves a control socket; see `shims/README.md` for the protocol.
//!
//! The library holds the binary's logic (`daemon`, `server`, `oom`) and what
//! clients share with it: [`protocol`] (requests, typed answers, refusals
//! with their [`protocol::ErrorKind`], states), [`options`] (the command
//! line) and [`client`] (a synchronous client, [`client::spawn_shim`], and
//! [`client::StateDir`], what a client may learn from a shim's directory;
//! the files in it are this crate's business).

pub mod client;
pub mod daemon;
pub mod logfile;
pub mod oom;
pub mod options;
pub mod process;
pub mod protocol;
pub(crate) mod record;
pub mod runtime;
pub mod server;
mod sys;
pub mod time;
pub mod trace;
