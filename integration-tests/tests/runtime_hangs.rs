//! Never hang: bundles whose init dies at every stage of set-up make
//! `create` and `run` fail within a second, with their stdio on pipes (as a
//! shim or a conformance harness drives them), leaving no process, mount,
//! cgroup or state; a `/proc` or `/sys` that is a symlink in the image is
//! refused with runc's words, never followed; and a seccomp agent at
//! `linux.seccomp.listenerPath` receives the notify listener as runc sends
//! it, and answers the container's syscalls.
//!
//! Against runc (`BERTH_RUNTIME=$(which runc)`), skip `berth_only_`: those
//! cases are where runc 1.1.5 itself waits (a hook leaving a child on its
//! output) or checks later than berth.

use std::fs;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use integration_tests::*;
use serde_json::{json, Value};

/// How long a failing `create` or `run` may take.
const DEADLINE: Duration = Duration::from_secs(1);

/// What one command under the deadline did.
struct Piped {
    code: i32,
    stderr: String,
    took: Duration,
}

/// What the runtime and its descendants are doing, for a hang's message.
fn describe_processes(root_pid: u32) -> String {
    let mut out = String::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return out;
    };
    for pid in entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
    {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat
            .rfind(')')
            .and_then(|e| stat[e + 1..].split_whitespace().nth(1))
            .unwrap_or_default()
            .to_owned();
        if pid == root_pid.to_string() || ppid == root_pid.to_string() {
            let wchan = fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
            let stack = fs::read_to_string(format!("/proc/{pid}/stack")).unwrap_or_default();
            out.push_str(&format!("  {stat}\n    wchan {wchan}\n{stack}\n"));
        }
    }
    out
}

/// Runs the runtime with `args`, stdin /dev/null and stdout/stderr on
/// pipes, and fails the test if it has not exited within `DEADLINE`.
#[track_caller]
fn run_piped(rt: &Runtime, args: &[&str]) -> Piped {
    let start = Instant::now();
    let mut child = Command::new(runtime_binary())
        .arg("--root")
        .arg(rt.state_root())
        .arg("--log")
        .arg(rt.log_path())
        .arg("--log-format")
        .arg("json")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the runtime");
    // The pipes are read on threads: whoever keeps their write ends open
    // (a leaked process) must not hang the test itself.
    let (tx, rx) = mpsc::channel();
    for mut pipe in [
        Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().expect("stderr")),
    ] {
        let tx = tx.clone();
        thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            let _ = tx.send(text);
        });
    }
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the runtime") {
            break status;
        }
        if start.elapsed() > DEADLINE {
            let procs = describe_processes(child.id());
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`runtime {}` did not return within {DEADLINE:?}; it and its children were:\n{procs}",
                args.join(" ")
            );
        }
        thread::sleep(Duration::from_millis(2));
    };
    let took = start.elapsed();
    // stderr is the second pipe; both arrive once every writer is gone.
    let mut texts = Vec::new();
    for _ in 0..2 {
        match rx.recv_timeout(DEADLINE) {
            Ok(t) => texts.push(t),
            Err(_) => panic!(
                "`runtime {}` returned but something still holds its stdout or stderr: {:?}",
                args.join(" "),
                processes_of(args.last().copied().unwrap_or_default())
            ),
        }
    }
    Piped {
        code: exit_code(&status),
        stderr: texts.join("\n"),
        took,
    }
}

/// Live host processes (other than this one) whose command line contains
/// `needle`, or whose working directory or root lies under it: until it
/// execs, a container's init is a copy of the runtime with its command line
/// (berth) or sits in the rootfs (runc).
fn processes_of(needle: &str) -> Vec<String> {
    host_processes(|pid, cmdline| {
        let in_tree = ["cwd", "root"].iter().any(|l| {
            fs::read_link(format!("/proc/{pid}/{l}"))
                .is_ok_and(|p| p.to_string_lossy().starts_with(needle))
        });
        cmdline.contains(needle) || in_tree
    })
}

/// Asserts that container `id` of `bundle` left nothing: no state entry,
/// cgroup or mount (the fixture's check) and no process.
#[track_caller]
fn assert_gone(rt: &Runtime, bundle: &Bundle, id: &str) {
    rt.assert_nothing_left(id, bundle.cgroups_path().as_deref());
    let dir = bundle.path().to_string_lossy().into_owned();
    // A killed init is reaped by the host's init a moment later.
    let deadline = Instant::now() + DEADLINE;
    let mut left = [processes_of(id), processes_of(&dir)].concat();
    while !left.is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
        left = [processes_of(id), processes_of(&dir)].concat();
    }
    assert!(left.is_empty(), "processes left by {id}: {left:?}");
}

/// `create` then, on a fresh id, `run` of a bundle made by `edit` and
/// `prepare` (which may change the rootfs): both must fail within the
/// deadline, mention `needle` in stderr (when given), and leave nothing.
#[track_caller]
fn both_fail_fast(
    rt: &Runtime,
    name: &str,
    needle: Option<&str>,
    edit: impl Fn(&mut Spec),
    prepare: impl Fn(&Bundle),
) {
    for command in ["create", "run"] {
        let id = rt.new_id(&format!("{name}-{command}"));
        let bundle = rt.bundle(&id, &edit);
        prepare(&bundle);
        let dir = bundle.path().to_str().expect("utf-8 path").to_owned();
        let out = run_piped(rt, &[command, "--bundle", &dir, &id]);
        assert_ne!(
            out.code, 0,
            "`{command}` of the {name} bundle succeeded; stderr: {}",
            out.stderr
        );
        if let Some(needle) = needle {
            assert!(
                out.stderr.contains(needle),
                "`{command}` of the {name} bundle: expected {needle:?} in stderr: {}",
                out.stderr
            );
        }
        assert!(out.took < DEADLINE, "{name}: {command} took {:?}", out.took);
        assert_gone(rt, &bundle, &id);
    }
}

fn replace_with_symlink(bundle: &Bundle, dir: &str, target: &str) {
    let path = bundle.rootfs().join(dir);
    let _ = fs::remove_dir_all(&path);
    std::os::unix::fs::symlink(target, &path).expect("make the symlink");
}

const NOT_ORDINARY_PROC: &str = "filesystem \"proc\" must be mounted on ordinary directory";
const NOT_ORDINARY_SYSFS: &str = "filesystem \"sysfs\" must be mounted on ordinary directory";

#[test]
fn symlinked_proc_is_refused_at_once_never_followed() {
    let rt = Runtime::new();
    let elsewhere = rt.host_dir("elsewhere");
    for (n, target) in [
        "proc".to_owned(),
        "/proc".to_owned(),
        "./proc".to_owned(),
        "/tmp".to_owned(),
        "/symlink".to_owned(),
        elsewhere.display().to_string(),
    ]
    .iter()
    .enumerate()
    {
        both_fail_fast(
            &rt,
            &format!("proclink{n}"),
            Some(NOT_ORDINARY_PROC),
            |_| {},
            |b| replace_with_symlink(b, "proc", target),
        );
    }
    // Nothing was mounted through the link, on the host or in the rootfs.
    assert_eq!(fs::read_dir(&elsewhere).expect("read dir").count(), 0);
}

#[test]
fn symlinked_sys_is_refused_at_once_never_followed() {
    let rt = Runtime::new();
    let elsewhere = rt.host_dir("elsewhere");
    for (n, target) in [
        "sys".to_owned(),
        "/sys".to_owned(),
        "/tmp".to_owned(),
        elsewhere.display().to_string(),
    ]
    .iter()
    .enumerate()
    {
        both_fail_fast(
            &rt,
            &format!("syslink{n}"),
            Some(NOT_ORDINARY_SYSFS),
            |_| {},
            |b| replace_with_symlink(b, "sys", target),
        );
    }
    assert_eq!(fs::read_dir(&elsewhere).expect("read dir").count(), 0);
}

#[test]
fn symlinked_proc_and_sys_together_are_refused() {
    let rt = Runtime::new();
    both_fail_fast(
        &rt,
        "bothlinks",
        Some("must be mounted on ordinary directory"),
        |_| {},
        |b| {
            replace_with_symlink(b, "proc", "proc");
            replace_with_symlink(b, "sys", "sys");
        },
    );
}

#[test]
fn a_mount_that_fails_fails_fast() {
    let rt = Runtime::new();
    both_fail_fast(
        &rt,
        "badmount",
        None,
        |s| {
            s.mount("/mnt/bad", "tmpfs", "tmpfs", &["size=not-a-size"]);
        },
        |_| {},
    );
}

#[test]
fn an_exec_that_fails_fails_fast() {
    let rt = Runtime::new();
    both_fail_fast(
        &rt,
        "badexec",
        None,
        |s| {
            s.args(&["/no/such/program"]);
        },
        |_| {},
    );
}

#[test]
fn a_cwd_that_is_a_file_fails_fast() {
    let rt = Runtime::new();
    both_fail_fast(
        &rt,
        "badcwd",
        Some("not a directory"),
        |s| {
            s.cwd("/etc/passwd");
        },
        |_| {},
    );
}

#[test]
fn a_failing_hook_fails_fast() {
    let rt = Runtime::new();
    for kind in ["prestart", "createRuntime", "createContainer"] {
        both_fail_fast(
            &rt,
            &format!("hook-{}", kind.to_lowercase()),
            Some("exit status 3"),
            |s| {
                s.hook(
                    kind,
                    json!({"path": "/bin/sh", "args": ["sh", "-c", "exit 3"]}),
                );
            },
            |_| {},
        );
    }
}

/// The init killed by SIGKILL in the middle of its set-up, while the
/// runtime runs a hook (prestart, createRuntime) that kills it by the pid
/// in the state on its stdin.
#[test]
fn an_init_killed_by_a_signal_fails_fast() {
    let rt = Runtime::new();
    for kind in ["prestart", "createRuntime"] {
        both_fail_fast(
            &rt,
            &format!("killed-{}", kind.to_lowercase()),
            None,
            |s| {
                s.hook(
                    kind,
                    json!({"path": "/bin/sh", "args": ["sh", "-c",
                        "pid=$(sed -n 's/.*\"pid\" *: *\\([0-9]*\\).*/\\1/p'); kill -9 $pid; sleep 0.1"]}),
                );
            },
            |_| {},
        );
    }
}

/// A failing hook that leaves a child holding its output: runc 1.1.5 waits
/// for that output to close (so it waits for the child); berth does not.
#[test]
fn berth_only_a_failing_hook_leaving_a_child_on_its_output_fails_fast() {
    let rt = Runtime::new();
    both_fail_fast(
        &rt,
        "hook-child",
        Some("exit status 3"),
        |s| {
            s.hook(
                "prestart",
                json!({"path": "/bin/sh", "args": ["sh", "-c", "sleep 3 & exit 3"]}),
            );
        },
        |_| {},
    );
}

// ---------------------------------------------------------------------------
// The seccomp agent

/// `struct seccomp_notif` and `struct seccomp_notif_resp` of linux/seccomp.h.
#[repr(C)]
#[derive(Default)]
struct SeccompNotif {
    id: u64,
    pid: u32,
    flags: u32,
    nr: i32,
    arch: u32,
    instruction_pointer: u64,
    args: [u64; 6],
}

#[repr(C)]
#[derive(Default)]
struct SeccompNotifResp {
    id: u64,
    val: i64,
    error: i32,
    flags: u32,
}

const fn iowr(nr: u64, size: usize) -> u64 {
    (3 << 30) | ((size as u64) << 16) | ((b'!' as u64) << 8) | nr
}
const SECCOMP_IOCTL_NOTIF_RECV: u64 = iowr(0, std::mem::size_of::<SeccompNotif>());
const SECCOMP_IOCTL_NOTIF_SEND: u64 = iowr(1, std::mem::size_of::<SeccompNotifResp>());
const SECCOMP_USER_NOTIF_FLAG_CONTINUE: u32 = 1;

/// Receives one message with a descriptor (SCM_RIGHTS): its data and the fd.
fn recv_with_fd(conn: &UnixStream) -> (Vec<u8>, OwnedFd) {
    let mut data = vec![0u8; 64 * 1024];
    let mut control = [0u8; 64];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len() as _;
    // SAFETY: msg points at iov and control, both alive and large enough
    // for the lengths given.
    let n = unsafe { libc::recvmsg(conn.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    assert!(n > 0, "recvmsg: {}", std::io::Error::last_os_error());
    // SAFETY: msg was filled by recvmsg; CMSG_FIRSTHDR reads its control
    // fields only.
    let cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    assert!(!cmsg.is_null(), "no control message with the data");
    // SAFETY: cmsg points into `control`, as recvmsg laid it out.
    let header: libc::cmsghdr = unsafe { std::ptr::read_unaligned(cmsg) };
    assert_eq!(
        (header.cmsg_level, header.cmsg_type),
        (libc::SOL_SOCKET, libc::SCM_RIGHTS)
    );
    // SAFETY: CMSG_DATA only computes an address inside the message.
    let data_ptr = unsafe { libc::CMSG_DATA(cmsg) };
    // SAFETY: an SCM_RIGHTS message carries at least one int after its
    // header; read_unaligned copes with the alignment of `control`.
    let fd: RawFd = unsafe { std::ptr::read_unaligned(data_ptr.cast()) };
    data.truncate(n as usize);
    // SAFETY: the kernel installed this descriptor for us; nobody owns it.
    (data, unsafe { OwnedFd::from_raw_fd(fd) })
}

/// What the agent saw.
struct AgentReport {
    states: Vec<Value>,
    syscalls: Vec<i32>,
}

/// Answers the notified syscalls on one listener: the first fails with
/// EROFS, the others go on (SECCOMP_USER_NOTIF_FLAG_CONTINUE). Returns the
/// syscall numbers once no process uses the filter any more, or after the
/// test's wait timeout.
fn serve_listener(fd: OwnedFd) -> Vec<i32> {
    let deadline = Instant::now() + WAIT_TIMEOUT;
    let mut syscalls = Vec::new();
    loop {
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd, alive for the call.
        let r = unsafe { libc::poll(&mut pfd, 1, 100) };
        if Instant::now() > deadline || (r > 0 && pfd.revents & libc::POLLHUP != 0) {
            return syscalls;
        }
        if r <= 0 || pfd.revents & libc::POLLIN == 0 {
            continue;
        }
        let mut req = SeccompNotif::default();
        // SAFETY: the ioctl fills a struct seccomp_notif, which `req` is.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), SECCOMP_IOCTL_NOTIF_RECV as _, &mut req) };
        if r < 0 {
            continue;
        }
        let first = syscalls.is_empty();
        syscalls.push(req.nr);
        let resp = SeccompNotifResp {
            id: req.id,
            val: 0,
            error: if first { -libc::EROFS } else { 0 },
            flags: if first {
                0
            } else {
                SECCOMP_USER_NOTIF_FLAG_CONTINUE
            },
        };
        // SAFETY: the ioctl reads a struct seccomp_notif_resp, which `resp` is.
        unsafe { libc::ioctl(fd.as_raw_fd(), SECCOMP_IOCTL_NOTIF_SEND as _, &resp) };
    }
}

/// A seccomp agent on `path`: accepts `connections` listeners, each served
/// on its own thread by `serve_listener`.
fn start_agent(path: &Path, connections: usize) -> thread::JoinHandle<AgentReport> {
    let listener = UnixListener::bind(path).expect("bind the agent's socket");
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).expect("chmod");
    thread::spawn(move || {
        let mut states = Vec::new();
        let mut servers = Vec::new();
        // Nobody connecting is a failure the test reports, not a hang.
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let deadline = Instant::now() + WAIT_TIMEOUT;
        while states.len() < connections && Instant::now() < deadline {
            let conn = match listener.accept() {
                Ok((conn, _)) => conn,
                Err(_) => {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                }
            };
            conn.set_nonblocking(false).expect("blocking connection");
            let (data, fd) = recv_with_fd(&conn);
            states.push(serde_json::from_slice(&data).expect("the state is JSON"));
            servers.push(thread::spawn(move || serve_listener(fd)));
        }
        let syscalls = servers
            .into_iter()
            .flat_map(|t| t.join().expect("a listener's server"))
            .collect();
        AgentReport { states, syscalls }
    })
}

fn notify_profile(listener: &Path) -> Value {
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": listener,
        "listenerMetadata": "berth-test-metadata",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]
    })
}

#[test]
fn a_seccomp_agent_receives_the_listener_and_answers() {
    let rt = Runtime::new();
    let id = rt.new_id("agent");
    let socket = rt.host_dir("agent").join("agent.sock");
    let agent = start_agent(&socket, 1);
    let bundle = rt.bundle(&id, |s| {
        s.readonly_root(false);
        s.set("/linux/seccomp", notify_profile(&socket));
        s.sh(
            "mkdir /tmp/first; echo first=$?; mkdir /tmp/second; echo second=$?; ls -d /tmp/second",
        );
    });
    let out = rt.run_container(&bundle, &id, &[]).ok();
    let report = agent.join().expect("the agent");
    assert!(out.stdout.contains("first=1"), "{out}");
    assert!(
        out.stderr.contains("Read-only file system") || out.stdout.contains("Read-only"),
        "{out}"
    );
    assert!(out.stdout.contains("second=0"), "{out}");
    assert!(out.stdout.contains("/tmp/second"), "{out}");
    assert_eq!(report.states.len(), 1);
    let s = &report.states[0];
    assert_eq!(s["fds"], json!(["seccompFd"]), "{s}");
    assert_eq!(s["metadata"], "berth-test-metadata", "{s}");
    assert!(s["ociVersion"].is_string(), "{s}");
    assert_eq!(s["state"]["id"], id.as_str(), "{s}");
    assert_eq!(s["state"]["status"], "creating", "{s}");
    assert!(s["pid"].as_i64().is_some_and(|p| p > 0), "{s}");
    assert_eq!(s["pid"], s["state"]["pid"], "{s}");
    assert_eq!(
        Path::new(s["state"]["bundle"].as_str().unwrap_or_default()),
        fs::canonicalize(bundle.path()).expect("canonical bundle")
    );
    let mkdirs = [libc::SYS_mkdir as i32, libc::SYS_mkdirat as i32];
    assert!(
        report.syscalls.len() >= 2 && report.syscalls.iter().all(|nr| mkdirs.contains(nr)),
        "notified syscalls: {:?}",
        report.syscalls
    );
    assert_gone(&rt, &bundle, &id);
}

/// A created container's listener goes to the agent during `create`; an
/// `exec`'d process gets its own, with the container's state as running.
#[test]
fn a_seccomp_agent_gets_a_listener_per_process() {
    let rt = Runtime::new();
    let id = rt.new_id("agent2");
    let socket = rt.host_dir("agent").join("agent.sock");
    let agent = start_agent(&socket, 2);
    let bundle = rt.bundle(&id, |s| {
        s.readonly_root(false);
        s.set("/linux/seccomp", notify_profile(&socket));
        s.sh("trap 'exit 0' TERM; sleep 1000 & wait");
    });
    rt.create(&bundle, &id, &[]).ok();
    rt.run(&["start", &id]).ok();
    let out = rt
        .exec(
            &id,
            &[
                "sh",
                "-c",
                "mkdir /tmp/x; echo x=$?; mkdir /tmp/y; echo y=$?",
            ],
        )
        .ok();
    assert!(
        out.stdout.contains("x=1") && out.stdout.contains("y=0"),
        "{out}"
    );
    let init = rt.pid(&id);
    rt.run(&["kill", &id, "KILL"]).ok();
    rt.wait_status(&id, "stopped");
    rt.run(&["delete", &id]).ok();
    let report = agent.join().expect("the agent");
    assert_eq!(report.states.len(), 2);
    assert_eq!(report.states[0]["state"]["status"], "creating");
    assert_eq!(report.states[0]["pid"], init);
    assert_eq!(report.states[1]["state"]["status"], "running");
    assert_eq!(report.states[1]["state"]["pid"], init);
    assert_ne!(report.states[1]["pid"], init);
    assert_gone(&rt, &bundle, &id);
}

/// No agent listening: the create fails at once and leaves nothing.
#[test]
fn a_missing_seccomp_agent_fails_fast() {
    let rt = Runtime::new();
    let socket = rt.host_dir("agent").join("nobody.sock");
    both_fail_fast(
        &rt,
        "noagent",
        None,
        |s| {
            s.set("/linux/seccomp", notify_profile(&socket));
        },
        |_| {},
    );
}
