//! `berth-shim`: one shim per container, driven through its control socket
//! with the crate's client, over the real `berth-runtime` and busybox
//! bundles.
//!
//! The test process makes itself a child subreaper, so the shims (which
//! daemonize and leave their starter) are reparented to it and reaped here.
//! Every [`TestShim`] is shut down (force) or killed on drop, before the
//! [`Runtime`] guard force-deletes the containers and checks that no state,
//! cgroup, mount or process is left.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Once;
use std::thread;
use std::time::{Duration, Instant};

use berth_shim::client::{spawn_shim, Attach, Client, ClientError, Events};
use berth_shim::options::Options;
use berth_shim::protocol::{ExitInfo, Response, ShimEvent, Status, STDOUT};
use integration_tests::*;
use serde_json::{json, Value};

/// The shim binary under test: `$BERTH_SHIM`, or this build's.
fn shim_binary() -> PathBuf {
    let path = build_binary("BERTH_SHIM", "berth-shim");
    assert!(
        path.is_file(),
        "shim binary {} not found: build it (`cargo build -p berth-shim`) or set BERTH_SHIM",
        path.display()
    );
    path
}

/// Makes this test process the reaper of the shims it starts.
fn become_subreaper() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes plain integers and
        // touches no memory of this process.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        assert_eq!(rc, 0, "PR_SET_CHILD_SUBREAPER failed");
    });
}

fn setup() -> Runtime {
    let rt = Runtime::new();
    become_subreaper();
    rt
}

/// Reaps `pid` if it is this process's child and has exited; true once
/// it is gone (reaped, or not ours and no longer alive).
fn reaped(pid: i32) -> bool {
    let mut status = 0;
    // SAFETY: waitpid writes only to `status`, a live local.
    let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    rc == pid || (rc < 0 && !pid_alive(pid as i64))
}

fn process_session(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name: state, ppid, pgrp, session.
    rest.split_whitespace().nth(3)?.parse().ok()
}

fn vm_rss_kib(pid: i32) -> u64 {
    let status = read(format!("/proc/{pid}/status"));
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"));
    line.split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("bad VmRSS line {line:?}"))
}

/// A shim started by the test; shut down (or killed) and reaped on drop.
struct TestShim {
    opts: Options,
    pid: i32,
}

/// Options for a shim of container `id` under the test's private tree.
fn shim_options(rt: &Runtime, id: &str, bundle: &Bundle) -> Options {
    let dir = rt.tmp().join("shims").join(id);
    Options::new(
        runtime_binary(),
        rt.state_root(),
        bundle.path(),
        id,
        dir.join("shim.sock"),
        dir,
    )
}

impl TestShim {
    /// Starts a shim for a new container whose bundle `edit` shapes.
    fn start(rt: &Runtime, prefix: &str, edit: impl FnOnce(&mut Spec)) -> (TestShim, Client) {
        Self::start_with(rt, prefix, edit, |_| {})
    }

    fn start_with(
        rt: &Runtime,
        prefix: &str,
        edit: impl FnOnce(&mut Spec),
        options: impl FnOnce(&mut Options),
    ) -> (TestShim, Client) {
        let id = rt.new_id(prefix);
        let bundle = rt.bundle(&id, edit);
        let mut opts = shim_options(rt, &id, &bundle);
        options(&mut opts);
        let client = spawn_shim(&shim_binary(), &opts)
            .unwrap_or_else(|e| panic!("spawn shim for {id}: {e}"));
        client
            .set_timeout(Some(COMMAND_TIMEOUT))
            .expect("set timeout");
        let shim = TestShim::adopt(opts);
        (shim, client)
    }

    /// Takes charge of a shim already running with `opts`.
    fn adopt(opts: Options) -> TestShim {
        let pid_file = opts.state_dir.join("shim.pid");
        let pid = read(&pid_file)
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()));
        TestShim { opts, pid }
    }

    fn id(&self) -> &str {
        &self.opts.id
    }

    fn dir(&self) -> &Path {
        &self.opts.state_dir
    }

    /// A new connection.
    fn client(&self) -> Client {
        let client = Client::connect(&self.opts.socket)
            .unwrap_or_else(|e| panic!("connect to the shim of {}: {e}", self.id()));
        client
            .set_timeout(Some(COMMAND_TIMEOUT))
            .expect("set timeout");
        client
    }

    /// A new connection, attached to a process.
    fn attach(&self, exec_id: Option<&str>, stdin: bool) -> Attach {
        let attach = self
            .client()
            .attach(exec_id, stdin)
            .unwrap_or_else(|e| panic!("attach: {e}"));
        attach
            .set_read_timeout(Some(WAIT_TIMEOUT))
            .expect("set timeout");
        attach
    }

    /// A new connection, subscribed to the shim's events.
    fn events(&self) -> Events {
        let events = self
            .client()
            .events()
            .unwrap_or_else(|e| panic!("subscribe to events: {e}"));
        events
            .set_read_timeout(Some(WAIT_TIMEOUT))
            .expect("set timeout");
        events
    }

    /// The container log's entries (`log.json` in the state directory).
    fn log_entries(&self) -> Vec<Value> {
        log_file_entries(&self.dir().join("log.json"))
    }

    fn exit_record(&self, name: &str) -> Value {
        serde_json::from_str(&read(self.dir().join(name))).expect("exit record is JSON")
    }

    /// Waits for the shim process to exit and reaps it.
    #[track_caller]
    fn wait_gone(&self) {
        let pid = self.pid;
        wait_until(&format!("shim {pid} to exit"), WAIT_TIMEOUT, || reaped(pid));
    }
}

impl Drop for TestShim {
    fn drop(&mut self) {
        if reaped(self.pid) {
            return;
        }
        if let Ok(mut client) = Client::connect(&self.opts.socket) {
            let _ = client.set_timeout(Some(COMMAND_TIMEOUT));
            let _ = client.shutdown(true);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if reaped(self.pid) {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        // SAFETY: kill has no memory-safety preconditions; the pid is a
        // shim this test started and has not reaped.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !reaped(self.pid) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        if !thread::panicking() {
            panic!("shim {} did not exit on shutdown; killed it", self.pid);
        }
    }
}

fn log_file_entries(path: &Path) -> Vec<Value> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("log line {l:?}: {e}")))
        .collect()
}

/// The `log` fields of a stream's entries, concatenated.
fn logged(entries: &[Value], stream: &str) -> String {
    entries
        .iter()
        .filter(|e| e["stream"] == stream)
        .map(|e| e["log"].as_str().expect("log is a string"))
        .collect()
}

/// Reads frames until `needle` appears in the stream's text; returns it.
#[track_caller]
fn read_until(attach: &mut Attach, stream: u8, needle: &str) -> String {
    let deadline = Instant::now() + WAIT_TIMEOUT;
    let mut text = Vec::new();
    loop {
        let now = String::from_utf8_lossy(&text).into_owned();
        if now.contains(needle) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {needle:?}; read {now:?}"
        );
        match attach.read_frame() {
            Ok(Some((s, data))) if s == stream => text.extend_from_slice(&data),
            Ok(Some(_)) => {}
            Ok(None) => panic!("stream ended before {needle:?}; read {now:?}"),
            Err(e) => panic!("reading the attach stream: {e}; read {now:?}"),
        }
    }
}

/// The bundle's process with other arguments, for `exec`.
fn exec_process(shim: &TestShim, args: &[&str]) -> Value {
    let config: Value =
        serde_json::from_str(&read(Path::new(&shim.opts.bundle).join("config.json")))
            .expect("bundle config.json");
    let mut process = config["process"].clone();
    process["args"] = json!(args);
    process
}

/// The next event; panics at the end of the stream or on a timeout.
#[track_caller]
fn next_event(events: &mut Events) -> ShimEvent {
    match events.next() {
        Ok(Some(event)) => event,
        Ok(None) => panic!("the event stream ended"),
        Err(e) => panic!("reading the event stream: {e}"),
    }
}

/// Reads events until the stream ends (the shim exited); what came first.
#[track_caller]
fn events_to_end(events: &mut Events) -> Vec<ShimEvent> {
    let mut rest = Vec::new();
    loop {
        match events.next() {
            Ok(Some(event)) => rest.push(event),
            Ok(None) => return rest,
            Err(e) => panic!("reading the event stream after {rest:?}: {e}"),
        }
    }
}

fn exit_event(exec_id: Option<&str>, pid: i32, exit: &ExitInfo) -> ShimEvent {
    ShimEvent::Exit {
        exec_id: exec_id.map(str::to_owned),
        pid,
        exit_status: exit.exit_status,
        exited_at: exit.exited_at.clone(),
    }
}

fn shim_error(result: Result<impl std::fmt::Debug, ClientError>) -> String {
    match result {
        Err(ClientError::Shim(refusal)) => refusal.message,
        other => panic!("expected an error from the shim, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------

#[test]
fn output_goes_to_the_log_and_wait_reports_exit_zero() {
    let rt = setup();
    let (shim, mut client) = TestShim::start(&rt, "shim-echo", |s| {
        s.sh("echo hello; echo oops >&2");
    });
    let state = client.state(None).unwrap();
    assert_eq!(state.status, Status::Created);
    assert!(state.pid.is_some_and(|p| p > 0));
    let pid = client.start().unwrap();
    assert_eq!(Some(pid), state.pid);
    let exit = client.wait(None).unwrap();
    assert_eq!(exit.exit_status, 0);
    assert!(exit.exited_at_time().is_some(), "{exit:?}");
    // The log is complete when wait answers.
    let entries = shim.log_entries();
    assert_eq!(logged(&entries, "stdout"), "hello\n");
    assert_eq!(logged(&entries, "stderr"), "oops\n");
    for entry in &entries {
        let time = entry["time"].as_str().unwrap();
        assert!(berth_shim::time::parse_rfc3339(time).is_some(), "{entry}");
    }
    assert_eq!(
        shim.exit_record("exit.json"),
        json!({"exit_status": 0, "exited_at": exit.exited_at})
    );
    let state = client.state(None).unwrap();
    assert_eq!(state.status, Status::Stopped);
    assert_eq!(state.exit_status, Some(0));
    client.delete().unwrap();
    shim.wait_gone();
}

#[test]
fn exit_status_is_reported() {
    let rt = setup();
    let (shim, mut client) = TestShim::start(&rt, "shim-exit", |s| {
        s.sh("exit 3");
    });
    client.start().unwrap();
    assert_eq!(client.wait(None).unwrap().exit_status, 3);
    assert_eq!(shim.exit_record("exit.json")["exit_status"], 3);
    assert_eq!(client.delete().unwrap().exit_status, 3);
    shim.wait_gone();
}

#[test]
fn sigterm_ends_a_sleep_with_status_143() {
    let rt = setup();
    // Without a pid namespace of its own, so that sleep is not a namespace's
    // init (which ignores signals it has no handler for) and SIGTERM kills it.
    let (shim, mut client) = TestShim::start(&rt, "shim-term", |s| {
        s.args(&["sleep", "1000"]);
        s.remove_namespace("pid");
    });
    client.start().unwrap();
    assert_eq!(client.state(None).unwrap().status, Status::Running);
    client.kill(libc::SIGTERM, false).unwrap();
    let exit = client.wait(None).unwrap();
    assert_eq!(exit.exit_status, 128 + libc::SIGTERM);
    let message = shim_error(client.kill(libc::SIGTERM, false));
    assert!(message.contains("not running"), "{message}");
    client.delete().unwrap();
    shim.wait_gone();
}

#[test]
fn sigkill_of_the_namespace_init_is_137() {
    let rt = setup();
    let (shim, mut client) = TestShim::start(&rt, "shim-kill", |s| {
        s.args(&["sleep", "1000"]);
    });
    client.start().unwrap();
    client.kill(libc::SIGKILL, true).unwrap();
    assert_eq!(client.wait(None).unwrap().exit_status, 137);
    client.delete().unwrap();
    shim.wait_gone();
}

#[test]
fn stdin_is_echoed_through_attach_and_closed() {
    let rt = setup();
    let (shim, mut client) = TestShim::start(&rt, "shim-cat", |s| {
        s.args(&["cat"]);
    });
    let mut attach = shim.attach(None, true);
    client.start().unwrap();
    attach.write_stdin(b"hello stdin\n").unwrap();
    read_until(&mut attach, STDOUT, "hello stdin\n");
    attach.write_stdin(b"second line\n").unwrap();
    read_until(&mut attach, STDOUT, "second line\n");
    // A frame of length 0 closes stdin: cat sees end of file and exits,
    // and the stream ends.
    attach.close_stdin().unwrap();
    let (rest, err) = attach.read_to_end().unwrap();
    assert!(rest.is_empty() && err.is_empty(), "{rest:?} {err:?}");
    assert_eq!(client.wait(None).unwrap().exit_status, 0);
    assert_eq!(
        logged(&shim.log_entries(), "stdout"),
        "hello stdin\nsecond line\n"
    );
    client.delete().unwrap();
    shim.wait_gone();
}

#[test]
fn close_stdin_request_ends_cat() {
    let rt = setup();
    let (shim, mut client) = TestShim::start(&rt, "shim-close", |s| {
        s.args(&["cat"]);
    });
    client.start().unwrap();
    let mut input = shim.attach(None, true);
    input.write_stdin(b"via attach\n").unwrap();
    read_until(&mut input, STDOUT, "via attach\n");
    client.close_stdin(None).unwrap();
    assert_eq!(client.wait(None).unwrap().exit_status, 0);
    client.delete().unwrap();
    shim.wait_gone();
}

#[test]
fn tty_container_attach_and_resize() {
    let rt = setup();
    let (shim, mut client) = TestShim::start(&rt, "shim-tty", |s| {
        s.terminal(true);
        s.args(&["sh"]);
    });
    assert!(client.state(None).unwrap().terminal);
    // Before start: the pty exists (the runtime sent its master at create).
    client.resize(None, 100, 40).unwrap();
    let mut attach = shim.attach(None, true);
    client.start().unwrap();
    attach.write_stdin(b"stty size\n").unwrap();
    read_until(&mut attach, STDOUT, "40 100");
    client.resize(None, 132, 51).unwrap();
    attach.write_stdin(b"stty size\n").unwrap();
    read_until(&mut attach, STDOUT, "51 132");
    attach.write_stdin(b"tty\n").unwrap();
    read_until(&mut attach, STDOUT, "/dev/pts/");
    attach.write_stdin(b"exit 4\n").unwrap();
    let (_, err) = attach.read_to_end().unwrap();
    assert!(err.is_empty(), "a terminal has no separate stderr: {err:?}");
    assert_eq!(client.wait(None).unwrap().exit_status, 4);
    let entries = shim.log_entries();
    assert!(logged(&entries, "stdout").contains("51 132"), "{entries:?}");
    assert_eq!(logged(&entries, "stderr"), "");
    client.delete().unwrap();
    shim.wait_gone();
}

#[test]
fn exec_runs_a_second_process_with_its_own_stdio_and_status() {
    let rt = setup();
    let (shim, mut client) = TestShim::start(&rt, "shim-exec", |s| {
        s.args(&["sleep", "1000"]);
    });
    client.start().unwrap();
    let process = exec_process(
        &shim,
        &["sh", "-c", "echo from exec; echo to err >&2; exit 7"],
    );
    client.exec("e1", process, false).unwrap();
    assert_eq!(client.state(Some("e1")).unwrap().status, Status::Created);
    let mut attach = shim.attach(Some("e1"), false);
    let pid = client.start_exec("e1").unwrap();
    assert!(pid > 0);
    let (out, err) = attach.read_to_end().unwrap();
    assert_eq!(String::from_utf8_lossy(&out), "from exec\n");
    assert_eq!(String::from_utf8_lossy(&err), "to err\n");
    let exit = client.wait(Some("e1")).unwrap();
    assert_eq!(exit.exit_status, 7);
    assert_eq!(shim.exit_record("exec-e1.exit.json")["exit_status"], 7);
    let state = client.state(Some("e1")).unwrap();
    assert_eq!(
        (state.status, state.exit_status),
        (Status::Stopped, Some(7))
    );
    // Exec output is the client's, not the container log's.
    assert_eq!(logged(&shim.log_entries(), "stdout"), "");
    // The container still runs; a duplicate id is refused.
    assert_eq!(client.state(None).unwrap().status, Status::Running);
    let process = exec_process(&shim, &["true"]);
    let message = shim_error(client.exec("e1", process, false));
    assert!(message.contains("already exists"), "{message}");

    // An exec with a terminal, sized before it starts.
    let process = exec_process(&shim, &["sh", "-c", "stty size"]);
    client.exec("e2", process, true).unwrap();
    client.resize(Some("e2"), 90, 30).unwrap();
    let mut attach = shim.attach(Some("e2"), false);
    client.start_exec("e2").unwrap();
    let (out, _) = attach.read_to_end().unwrap();
    assert_eq!(String::from_utf8_lossy(&out).trim(), "30 90");
    assert_eq!(client.wait(Some("e2")).unwrap().exit_status, 0);
    assert_eq!(client.delete_exec("e2").unwrap().exit_status, 0);
    let message = shim_error(client.state(Some("e2")));
    assert!(message.contains("no such exec"), "{message}");

    // A program that does not exist: start_exec fails, wait says 127.
    let process = exec_process(&shim, &["/no/such/program"]);
    client.exec("e3", process, false).unwrap();
    shim_error(client.start_exec("e3"));
    assert_eq!(client.wait(Some("e3")).unwrap().exit_status, 127);

    // An exec killed by a signal.
    let process = exec_process(&shim, &["sleep", "1000"]);
    client.exec("e4", process, false).unwrap();
    client.start_exec("e4").unwrap();
    client.kill_exec("e4", libc::SIGKILL).unwrap();
    assert_eq!(client.wait(Some("e4")).unwrap().exit_status, 137);

    client.kill(libc::SIGKILL, false).unwrap();
    assert_eq!(client.wait(None).unwrap().exit_status, 137);
    client.delete().unwrap();
    shim.wait_gone();
}

#[test]
fn pause_and_resume_show_in_the_state() {
    let rt = setup();
    let (shim, mut client) = TestShim::start(&rt, "shim-pause", |s| {
        s.args(&["sleep", "1000"]);
    });
    client.start().unwrap();
    client.pause().unwrap();
    assert_eq!(client.state(None).unwrap().status, Status::Paused);
    assert_eq!(rt.status(shim.id()), "paused");
    let process = exec_process(&shim, &["true"]);
    let message = shim_error(client.exec("e1", process, false));
    assert!(message.contains("paused"), "{message}");
    let message = shim_error(client.pause());
    assert!(message.contains("paused"), "{message}");
    client.resume().unwrap();
    assert_eq!(client.state(None).unwrap().status, Status::Running);
    assert_eq!(rt.status(shim.id()), "running");
    client.kill(libc::SIGKILL, false).unwrap();
    client.wait(None).unwrap();
    client.delete().unwrap();
    shim.wait_gone();
}

#[test]
fn pids_lists_the_init() {
    let rt = setup();
    let (shim, mut client) = TestShim::start(&rt, "shim-pids", |s| {
        s.args(&["sleep", "1000"]);
    });
    let pid = client.start().unwrap();
    let pids = client.pids().unwrap();
    assert!(pids.contains(&pid), "{pids:?} lacks the init {pid}");
    client.kill(libc::SIGKILL, false).unwrap();
    client.wait(None).unwrap();
    client.delete().unwrap();
    shim.wait_gone();
}

#[test]
fn stats_are_the_runtimes_json() {
    let rt = setup();
    let (shim, mut client) = TestShim::start(&rt, "shim-stats", |s| {
        s.args(&["sleep", "1000"]);
    });
    client.start().unwrap();
    let stats = client.stats().unwrap();
    assert_eq!(stats["type"], "stats", "{stats}");
    assert_eq!(stats["id"], shim.id(), "{stats}");
    assert!(stats["data"]["cpu"]["usage"]["total"].is_u64(), "{stats}");
    assert!(
        stats["data"]["memory"]["usage"]["usage"]
            .as_u64()
            .is_some_and(|u| u > 0),
        "{stats}"
    );
    assert_eq!(stats["data"]["pids"]["current"], 1, "{stats}");
    client.kill(libc::SIGKILL, false).unwrap();
    client.wait(None).unwrap();
    client.delete().unwrap();
    shim.wait_gone();
}

#[test]
fn the_shim_survives_its_starter_being_killed() {
    let rt = setup();
    let id = rt.new_id("shim-orphan");
    let bundle = rt.bundle(&id, |s| {
        s.args(&["sleep", "1000"]);
    });
    let opts = shim_options(&rt, &id, &bundle);
    // The starter: a shell in its own process group that runs the shim and
    // then lingers, like a supervisor that is about to die.
    let mut starter = Command::new("sh")
        .arg("-c")
        .arg("\"$0\" \"$@\" || exit 1; echo started; exec sleep 1000")
        .arg(shim_binary())
        .args(opts.to_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()
        .expect("spawn the starter");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(starter.stdout.take().expect("piped")),
        &mut line,
    )
    .expect("read the starter");
    assert_eq!(line, "started\n", "the shim did not start");
    let shim = TestShim::adopt(opts);
    // The shim left the starter's session and process group.
    assert_eq!(process_session(shim.pid), Some(shim.pid));
    let starter_pid = starter.id() as i32;
    // SAFETY: kill has no memory-safety preconditions; the process group is
    // the starter's own (process_group(0)).
    assert_eq!(unsafe { libc::kill(-starter_pid, libc::SIGKILL) }, 0);
    let status = starter.wait().expect("reap the starter");
    assert_eq!(exit_code(&status), 137);
    assert!(pid_alive(shim.pid as i64), "the shim died with its starter");
    let mut client = shim.client();
    assert_eq!(client.state(None).unwrap().status, Status::Created);
    client.start().unwrap();
    assert_eq!(client.state(None).unwrap().status, Status::Running);
    client.kill(libc::SIGKILL, false).unwrap();
    assert_eq!(client.wait(None).unwrap().exit_status, 137);
    client.delete().unwrap();
    shim.wait_gone();
}

#[test]
fn an_exit_nobody_watched_is_recorded_and_reported_later() {
    let rt = setup();
    let (shim, mut client) = TestShim::start(&rt, "shim-unwatched", |s| {
        s.sh("sleep 0.2; echo bye; exit 5");
    });
    client.start().unwrap();
    drop(client);
    let exit_file = shim.dir().join("exit.json");
    wait_until("exit.json", WAIT_TIMEOUT, || exit_file.exists());
    let recorded = shim.exit_record("exit.json");
    assert_eq!(recorded["exit_status"], 5);
    let mut client = shim.client();
    let exit = client.wait(None).unwrap();
    assert_eq!(exit.exit_status, 5);
    assert_eq!(json!(exit.exited_at), recorded["exited_at"]);
    let state = client.state(None).unwrap();
    assert_eq!(state.status, Status::Stopped);
    assert_eq!(state.exited_at.as_deref(), Some(exit.exited_at.as_str()));
    assert_eq!(logged(&shim.log_entries(), "stdout"), "bye\n");
    client.delete().unwrap();
    shim.wait_gone();
}

#[test]
fn waiters_on_several_connections_all_get_the_exit() {
    let rt = setup();
    let (shim, mut client) = TestShim::start(&rt, "shim-waiters", |s| {
        s.args(&["sleep", "1000"]);
    });
    client.start().unwrap();
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let mut c = shim.client();
            thread::spawn(move || c.wait(None).map(|e| e.exit_status))
        })
        .collect();
    // The waiters are blocked; the shim still serves others.
    thread::sleep(Duration::from_millis(100));
    assert_eq!(client.state(None).unwrap().status, Status::Running);
    client.kill(libc::SIGKILL, false).unwrap();
    for waiter in waiters {
        assert_eq!(waiter.join().unwrap().unwrap(), 137);
    }
    client.delete().unwrap();
    shim.wait_gone();
}

#[test]
fn the_log_rotates_at_its_maximum_size() {
    let rt = setup();
    let (shim, mut client) = TestShim::start_with(
        &rt,
        "shim-rotate",
        |s| {
            s.sh("i=1; while [ $i -le 300 ]; do echo line-$i; i=$((i+1)); done");
        },
        |o| {
            o.log_max_size = Some(2000);
            o.log_max_files = 3;
        },
    );
    client.start().unwrap();
    assert_eq!(client.wait(None).unwrap().exit_status, 0);
    let dir = shim.dir();
    for name in ["log.json", "log.json.1", "log.json.2"] {
        let size = fs::metadata(dir.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .len();
        assert!(size > 0 && size <= 2000, "{name} is {size} bytes");
    }
    assert!(!dir.join("log.json.3").exists(), "more than 3 files kept");
    // The files hold the newest lines, in order, ending with the last.
    let mut lines = Vec::new();
    for name in ["log.json.2", "log.json.1", "log.json"] {
        lines.extend(
            log_file_entries(&dir.join(name))
                .iter()
                .map(|e| e["log"].as_str().unwrap().trim_end().to_owned()),
        );
    }
    let numbers: Vec<u32> = lines
        .iter()
        .map(|l| l.strip_prefix("line-").unwrap().parse().unwrap())
        .collect();
    assert_eq!(numbers.last(), Some(&300));
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "lines missing or out of order: {numbers:?}"
    );
    client.delete().unwrap();
    shim.wait_gone();
}

#[test]
fn bad_requests_get_errors_and_the_shim_keeps_serving() {
    let rt = setup();
    let (shim, mut client) = TestShim::start(&rt, "shim-bad", |s| {
        s.sh("sleep 0.3; exit 2");
    });
    let error = |client: &mut Client, line: &str| match client.call_raw(line.as_bytes()) {
        Ok(Response::Error(refusal)) => refusal.message,
        other => panic!("{line}: expected an error, got {other:?}"),
    };
    let cases: &[(&str, &str)] = &[
        ("{not json", "malformed request"),
        ("[1, 2]", "no \"op\""),
        (r#"{"signal": 9}"#, "no \"op\""),
        (r#"{"op": "fly"}"#, "unknown op \"fly\""),
        (r#"{"op": 7}"#, "no \"op\""),
        (
            r#"{"op": "kill"}"#,
            "bad kill request: missing field `signal`",
        ),
        (r#"{"op": "kill", "signal": 999}"#, "invalid signal 999"),
        (r#"{"op": "kill", "signal": "TERM"}"#, "bad kill request"),
        (
            r#"{"op": "state", "exec_id": "nope"}"#,
            "no such exec process \"nope\"",
        ),
        (
            r#"{"op": "wait", "exec_id": "nope"}"#,
            "no such exec process",
        ),
        (
            r#"{"op": "start_exec", "exec_id": "nope"}"#,
            "no such exec process",
        ),
        (
            r#"{"op": "attach", "exec_id": "nope"}"#,
            "no such exec process",
        ),
        (
            r#"{"op": "resize", "width": 10, "height": 10}"#,
            "has no terminal",
        ),
        (
            r#"{"op": "resize", "width": -1, "height": 10}"#,
            "bad resize request",
        ),
        (r#"{"op": "pause"}"#, "is created: cannot pause"),
        (
            r#"{"op": "exec", "exec_id": "../x", "process": {"args": ["true"]}}"#,
            "invalid exec id",
        ),
        (
            r#"{"op": "exec", "exec_id": "e1", "process": {"args": []}}"#,
            "process.args",
        ),
        (
            r#"{"op": "exec", "exec_id": "e1", "process": "sh"}"#,
            "must be a JSON object",
        ),
        (r#"{"op": "shutdown"}"#, "cannot shut down while it runs"),
    ];
    for (line, needle) in cases {
        let message = error(&mut client, line);
        assert!(
            message.contains(needle),
            "{line}: {message:?} lacks {needle:?}"
        );
    }
    // An attached client that sends an oversized frame is dropped (frames
    // of other streams are ignored); the container is still created.
    {
        use std::io::{Read, Write};
        let (mut reader, mut writer) = shim.attach(None, true).into_parts();
        writer
            .write_all(&[7, 0, 0, 0, 0, 0, 0, 3, b'a', b'b', b'c'])
            .unwrap();
        writer
            .write_all(&[0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff])
            .unwrap();
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "{rest:?}");
    }
    // Blank lines are skipped; requests still work on the same connection.
    match client.call_raw(b"\n  \n{\"op\": \"state\"}") {
        Ok(Response::Ok(state)) => assert_eq!(state["status"], "created"),
        other => panic!("state after blank lines: {other:?}"),
    }
    client.start().unwrap();
    let message = shim_error(client.start());
    assert!(message.contains("cannot start"), "{message}");
    let message = shim_error(client.delete());
    assert!(message.contains("kill it first"), "{message}");
    assert_eq!(client.wait(None).unwrap().exit_status, 2);
    // Exec into the stopped container.
    let process = exec_process(&shim, &["true"]);
    let message = shim_error(client.exec("late", process, false));
    assert!(message.contains("is stopped: cannot exec"), "{message}");
    // A client that sends half a request and leaves, and one that sends an
    // oversized line, do not hurt the shim.
    {
        use std::io::Write;
        let mut raw = std::os::unix::net::UnixStream::connect(&shim.opts.socket).unwrap();
        raw.write_all(br#"{"op": "sta"#).unwrap();
    }
    {
        use std::io::{Read, Write};
        let mut raw = std::os::unix::net::UnixStream::connect(&shim.opts.socket).unwrap();
        raw.set_read_timeout(Some(WAIT_TIMEOUT)).unwrap();
        let big = vec![b'x'; (1 << 20) + 10];
        let _ = raw.write_all(&big);
        let mut answer = String::new();
        let _ = raw.read_to_string(&mut answer);
        assert!(answer.contains("request longer than"), "{answer:?}");
    }
    // Random bytes (invalid UTF-8, NULs, braces) each get an error line.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut garbage = shim.client();
    for round in 0..200 {
        let len = (round % 97) + 1;
        let line: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                match (seed % 251) as u8 {
                    b'\n' => b'{',
                    b => b,
                }
            })
            .collect();
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match garbage.call_raw(&line) {
            Ok(Response::Error(_)) => {}
            other => panic!("garbage {line:?} got {other:?}"),
        }
    }
    let mut other = shim.client();
    assert_eq!(other.state(None).unwrap().status, Status::Stopped);
    assert_eq!(client.state(None).unwrap().exit_status, Some(2));
    client.delete().unwrap();
    shim.wait_gone();
}

#[test]
fn a_bad_bundle_fails_spawn_with_the_runtimes_reason() {
    let rt = setup();
    let id = rt.new_id("shim-badbundle");
    let bundle = rt.bundle(&id, |s| {
        s.args(&["/no/such/program"]);
    });
    let opts = shim_options(&rt, &id, &bundle);
    let err = match spawn_shim(&shim_binary(), &opts) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("the shim started a container with a missing program"),
    };
    assert!(err.contains("create container"), "{err}");
    assert!(err.contains("/no/such/program"), "{err}");
    assert!(!opts.socket.exists(), "socket left behind");
    assert!(
        !opts.state_dir.join("shim.pid").exists(),
        "pid file left behind"
    );
    assert!(!rt.state_entries().contains(&id));
}

#[test]
fn delete_ends_the_shim_and_removes_the_runtime_state() {
    let rt = setup();
    let (shim, mut client) = TestShim::start(&rt, "shim-delete", |s| {
        s.args(&["sleep", "1000"]);
    });
    let cgroups = format!("{CGROUP_PARENT}/{}", shim.id());
    client.start().unwrap();
    assert!(rt.state_entries().contains(&shim.id().to_owned()));
    client.kill(libc::SIGKILL, false).unwrap();
    client.wait(None).unwrap();
    let exit = client.delete().unwrap();
    assert_eq!(exit.exit_status, 137);
    shim.wait_gone();
    assert!(!shim.opts.socket.exists(), "the socket outlived the shim");
    rt.assert_nothing_left(shim.id(), Some(&cgroups));
    // What the supervisor reads after the shim is gone stays.
    assert_eq!(shim.exit_record("exit.json")["exit_status"], 137);
}

#[test]
fn delete_of_a_created_container_kills_its_init() {
    let rt = setup();
    let (shim, mut client) = TestShim::start(&rt, "shim-delcreated", |s| {
        s.args(&["sleep", "1000"]);
    });
    let pid = client.state(None).unwrap().pid.unwrap();
    let exit = client.delete().unwrap();
    assert_eq!(exit.exit_status, 137);
    shim.wait_gone();
    assert!(!pid_alive(pid as i64));
    rt.assert_nothing_left(shim.id(), Some(&format!("{CGROUP_PARENT}/{}", shim.id())));
}

#[test]
fn shim_memory_holding_a_running_container() {
    let rt = setup();
    let (shim, mut client) = TestShim::start(&rt, "shim-rss", |s| {
        s.args(&["sleep", "1000"]);
    });
    client.start().unwrap();
    // Exercise the paths a supervisor uses, then measure.
    client.state(None).unwrap();
    client.pids().unwrap();
    client.stats().unwrap();
    let rss = vm_rss_kib(shim.pid);
    let status = read(format!("/proc/{}/status", shim.pid));
    let parts: Vec<String> = status
        .lines()
        .filter(|l| l.starts_with("Rss"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    eprintln!(
        "VmRSS of {} holding a running sleep: {rss} KiB ({})",
        shim_binary().display(),
        parts.join(", ")
    );
    // The 2 MiB target is for the release build; a debug build is larger.
    let limit = if shim_binary()
        .components()
        .any(|c| c.as_os_str() == "release")
    {
        2048
    } else {
        8192
    };
    assert!(rss < limit, "the shim uses {rss} KiB (limit {limit} KiB)");
    client.kill(libc::SIGKILL, false).unwrap();
    client.wait(None).unwrap();
    client.delete().unwrap();
    shim.wait_gone();
}

#[test]
fn megabytes_through_stdin_and_stdout_arrive_whole_and_in_order() {
    let rt = setup();
    let (shim, mut client) = TestShim::start(&rt, "shim-bulk", |s| {
        s.args(&["cat"]);
    });
    let attach = shim.attach(None, true);
    client.start().unwrap();
    let input: Vec<u8> = (0..200_000)
        .flat_map(|i| format!("line {i:07} of the bulk test\n").into_bytes())
        .collect();
    let (mut reader, mut writer) = attach.into_parts();
    let sent = input.clone();
    // The writer sends stdin frames while this thread reads the output:
    // the shim must keep both moving (neither side's buffers hold it all).
    let feeder = thread::spawn(move || {
        use std::io::Write;
        for chunk in sent.chunks(300_000) {
            writer
                .write_all(&berth_shim::protocol::frame_header(0, chunk.len()))
                .unwrap();
            writer.write_all(chunk).unwrap();
        }
        writer
            .write_all(&berth_shim::protocol::frame_header(0, 0))
            .unwrap();
        writer
    });
    let mut output = Vec::new();
    loop {
        use std::io::Read;
        let mut header = [0u8; 8];
        match reader.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => panic!("read the output after {} bytes: {e}", output.len()),
        }
        let (stream, len) = berth_shim::protocol::parse_frame_header(&header);
        assert_eq!(stream, STDOUT);
        let mut data = vec![0u8; len];
        reader.read_exact(&mut data).unwrap();
        output.extend_from_slice(&data);
    }
    let _writer = feeder.join().unwrap();
    assert_eq!(output.len(), input.len());
    assert!(output == input, "the output differs from the input");
    assert_eq!(client.wait(None).unwrap().exit_status, 0);
    let entries = shim.log_entries();
    assert_eq!(entries.len(), 200_000);
    assert!(logged(&entries, "stdout").as_bytes() == input.as_slice());
    client.delete().unwrap();
    shim.wait_gone();
}

#[test]
fn a_second_shim_on_the_same_socket_is_refused() {
    let rt = setup();
    let (shim, mut client) = TestShim::start(&rt, "shim-twice", |s| {
        s.args(&["sleep", "1000"]);
    });
    let bundle_dir = PathBuf::from(&shim.opts.bundle);
    let mut second = shim.opts.clone();
    second.id = rt.new_id("shim-twice-b");
    let err = match spawn_shim(&shim_binary(), &second) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("two shims serve {}", shim.opts.socket.display()),
    };
    assert!(err.contains("already serving"), "{err}");
    assert!(bundle_dir.is_dir());
    // The first shim's files and service are intact.
    assert_eq!(
        read(shim.dir().join("shim.pid")).trim(),
        shim.pid.to_string()
    );
    assert_eq!(client.state(None).unwrap().status, Status::Created);
    assert!(!rt.state_entries().contains(&second.id));
    client.delete().unwrap();
    shim.wait_gone();
}

#[test]
fn update_changes_the_resource_limits() {
    let rt = setup();
    let (shim, mut client) = TestShim::start(&rt, "shim-update", |s| {
        s.args(&["sleep", "1000"]);
    });
    let cgroups = format!("{CGROUP_PARENT}/{}", shim.id());
    client.start().unwrap();
    client.update(json!({"pids": {"limit": 42}})).unwrap();
    assert_eq!(cgroup_read("pids", &cgroups, "pids.max"), "42");
    let message = shim_error(client.update(json!("lots")));
    assert!(message.contains("must be a JSON object"), "{message}");
    client.kill(libc::SIGKILL, false).unwrap();
    client.wait(None).unwrap();
    let message = shim_error(client.update(json!({"pids": {"limit": 7}})));
    assert!(message.contains("cannot update"), "{message}");
    client.delete().unwrap();
    shim.wait_gone();
}

#[test]
fn descriptors_leaked_by_the_starter_are_not_kept() {
    use std::os::fd::AsRawFd;
    let rt = setup();
    let leaked_path = rt.tmp().join("leaked-by-the-starter");
    let leaked = fs::File::create(&leaked_path).unwrap();
    // SAFETY: fcntl on a descriptor this test owns; F_SETFD takes an int.
    let rc = unsafe { libc::fcntl(leaked.as_raw_fd(), libc::F_SETFD, 0) };
    assert_eq!(rc, 0, "clear FD_CLOEXEC");
    let (shim, mut client) = TestShim::start(&rt, "shim-fds", |s| {
        s.args(&["sleep", "1000"]);
    });
    drop(leaked);
    client.start().unwrap();
    let init = client.state(None).unwrap().pid.unwrap();
    for pid in [shim.pid, init] {
        let targets: Vec<PathBuf> = fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
            .collect();
        assert!(
            !targets.contains(&leaked_path),
            "process {pid} holds the starter's descriptor: {targets:?}"
        );
    }
    client.kill(libc::SIGKILL, false).unwrap();
    client.wait(None).unwrap();
    client.delete().unwrap();
    shim.wait_gone();
}

#[test]
fn events_report_the_init_exit_live_and_replay_it() {
    let rt = setup();
    let (shim, mut client) = TestShim::start(&rt, "shim-events", |s| {
        s.sh("exit 3");
    });
    let init = client.state(None).unwrap().pid.unwrap();
    let mut live = shim.events();
    client.start().unwrap();
    let event = next_event(&mut live);
    let exit = client.wait(None).unwrap();
    assert_eq!(exit.exit_status, 3);
    assert_eq!(event, exit_event(None, init, &exit));
    // Sent after the exit was recorded.
    assert_eq!(shim.exit_record("exit.json")["exited_at"], exit.exited_at);
    // A subscriber that comes later gets the exit replayed.
    let mut late = shim.events();
    assert_eq!(next_event(&mut late), exit_event(None, init, &exit));
    // Delete ends the shim and both streams, with no second exit.
    assert_eq!(client.delete().unwrap(), exit);
    shim.wait_gone();
    assert_eq!(events_to_end(&mut live), vec![]);
    assert_eq!(events_to_end(&mut late), vec![]);
}

#[test]
fn events_report_exec_exits_with_their_exec_id() {
    use std::io::{BufRead, BufReader, Write};
    let rt = setup();
    let (shim, mut client) = TestShim::start(&rt, "shim-events-exec", |s| {
        s.args(&["sleep", "1000"]);
    });
    let init = client.start().unwrap();
    let mut first = shim.events();
    // A raw subscriber that also sends bytes, which the shim ignores.
    let mut raw = std::os::unix::net::UnixStream::connect(&shim.opts.socket).unwrap();
    raw.set_read_timeout(Some(WAIT_TIMEOUT)).unwrap();
    raw.write_all(b"{\"op\":\"events\"}\n{\"op\":\"state\"}\nnot json\n")
        .unwrap();
    let mut raw_lines = BufReader::new(raw.try_clone().unwrap()).lines();
    let mut raw_line = move || -> Value {
        let line = raw_lines
            .next()
            .expect("a line before the end of the stream")
            .expect("read the raw events connection");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    };
    assert_eq!(raw_line(), json!({"ok": {}}));

    let process = exec_process(&shim, &["sh", "-c", "exit 7"]);
    client.exec("e1", process, false).unwrap();
    let exec_pid = client.start_exec("e1").unwrap();
    let exec_exit = client.wait(Some("e1")).unwrap();
    assert_eq!(exec_exit.exit_status, 7);
    let exec_event = exit_event(Some("e1"), exec_pid, &exec_exit);
    assert_eq!(next_event(&mut first), exec_event);
    assert_eq!(
        serde_json::from_value::<ShimEvent>(raw_line()).unwrap(),
        exec_event
    );
    raw.write_all(b"more bytes with no newline").unwrap();

    client.kill(libc::SIGKILL, false).unwrap();
    let init_exit = client.wait(None).unwrap();
    assert_eq!(init_exit.exit_status, 137);
    let init_event = exit_event(None, init, &init_exit);
    assert_eq!(next_event(&mut first), init_event);
    let line = raw_line();
    assert_eq!(line["type"], "exit", "{line}");
    assert!(line.get("exec_id").is_none(), "{line}");
    assert_eq!(
        serde_json::from_value::<ShimEvent>(line).unwrap(),
        init_event
    );

    // A late subscriber gets both exits, oldest first; once the exec'd
    // process is deleted, only the init's.
    let mut late = shim.events();
    assert_eq!(next_event(&mut late), exec_event);
    assert_eq!(next_event(&mut late), init_event);
    client.delete_exec("e1").unwrap();
    let mut later = shim.events();
    assert_eq!(next_event(&mut later), init_event);

    // End of file from a subscriber closes its stream; the others go on.
    raw.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut raw, &mut rest).unwrap();
    assert_eq!(rest, "");

    client.delete().unwrap();
    shim.wait_gone();
    for events in [&mut first, &mut late, &mut later] {
        assert_eq!(events_to_end(events), vec![]);
    }
}

#[test]
fn an_oom_kill_is_reported_before_the_exit() {
    let rt = setup();
    let limit = 16 << 20;
    let (shim, mut client) = TestShim::start(&rt, "shim-oom", |s| {
        // dd allocates its 64 MiB buffer and fills it from /dev/zero; with
        // swap equal to the limit, it cannot swap.
        s.args(&["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"]);
        s.resources(json!({"memory": {"limit": limit, "swap": limit}}));
    });
    // The cgroup is the test's own, removed by the Runtime guard.
    let config: Value =
        serde_json::from_str(&read(Path::new(&shim.opts.bundle).join("config.json"))).unwrap();
    assert_eq!(
        config["linux"]["cgroupsPath"],
        format!("{CGROUP_PARENT}/{}", shim.id())
    );
    let mut events = shim.events();
    let init = client.start().unwrap();
    let mut ooms = 0;
    let exit = loop {
        match next_event(&mut events) {
            ShimEvent::Oom => ooms += 1,
            exit @ ShimEvent::Exit { .. } => break exit,
        }
    };
    let recorded = client.wait(None).unwrap();
    assert_eq!(recorded.exit_status, 137, "dd was not OOM-killed");
    assert_eq!(exit, exit_event(None, init, &recorded));
    assert_eq!(ooms, 1, "one oom event (dd's kill) before the exit");
    client.delete().unwrap();
    shim.wait_gone();
    // Removing the cgroup is not an OOM.
    assert_eq!(events_to_end(&mut events), vec![]);
}
