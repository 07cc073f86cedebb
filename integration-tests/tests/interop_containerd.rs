//! berth-runtime as the runtime of the real containerd: `ctr run
//! --runc-binary berth-runtime`, through containerd's runc shim
//! (containerd-shim-runc-v2), which drives the runtime with runc's command
//! line (`create --bundle --pid-file --console-socket`, `start`, `state`,
//! `exec --process --detach`, `ps --format json`, `pause`, `resume`, `kill`,
//! `delete`).

use std::time::Duration;

use integration_tests::interop::{Containerd, PtyProcess};
use integration_tests::{cgroup_read, cgroup_v2, wait_until};

#[test]
fn ctr_run_prints_the_output_and_exit_code() {
    let ctd = Containerd::start();
    let id = ctd.new_id("ctr-run");
    let out = ctd.run(&["--rm"], &id, &["echo", "ok"]).ok();
    assert_eq!(out.stdout, "ok\n", "{out}");

    let id = ctd.new_id("ctr-exit");
    let out = ctd.run(
        &["--rm"],
        &id,
        &["sh", "-c", "echo out; echo err >&2; exit 3"],
    );
    assert_eq!(out.code(), 3, "{out}");
    assert_eq!(out.stdout, "out\n", "{out}");
    assert!(out.stderr.contains("err"), "{out}");
    assert!(ctd.runtime_state_entries().is_empty());
}

#[test]
fn ctr_detached_task_exec_ps_pause_kill() {
    let ctd = Containerd::start();
    let id = ctd.new_id("ctr-task");
    ctd.run(
        &["--detach", "--memory-limit", "67108864"],
        &id,
        &["sleep", "1000"],
    )
    .ok();
    ctd.wait_task_status(&id, "RUNNING");
    let (init_pid, _) = ctd.task(&id).expect("task listed");
    assert!(
        ctd.runtime_state_entries()
            .iter()
            .any(|e| e.ends_with(&format!("/{id}"))),
        "no runtime state for {id}: {:?}",
        ctd.runtime_state_entries()
    );

    // exec: output, exit status, and the container's view of its pid 1.
    let out = ctd
        .exec(
            &[],
            &id,
            "x",
            &[
                "sh",
                "-c",
                "echo exec-ok; cat /proc/1/cmdline | tr '\\0' ' '",
            ],
        )
        .ok();
    assert_eq!(out.stdout, "exec-ok\nsleep 1000 ", "{out}");
    let out = ctd.exec(&[], &id, "y", &["sh", "-c", "exit 5"]);
    assert_eq!(out.code(), 5, "{out}");

    // ps: the init, and a detached exec beside it.
    ctd.exec(&["--detach"], &id, "bg", &["sleep", "1000"]).ok();
    wait_until(
        "ctr task ps to list the init and the detached exec",
        Duration::from_secs(10),
        || {
            let out = ctd.ctr(&["task", "ps", &id]).ok();
            let pids: Vec<i64> = out
                .stdout
                .lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().next()?.parse().ok())
                .collect();
            pids.len() == 2 && pids.contains(&init_pid)
        },
    );

    // pause and resume: the runtime's freezer.
    ctd.ctr(&["task", "pause", &id]).ok();
    ctd.wait_task_status(&id, "PAUSED");
    ctd.ctr(&["task", "resume", &id]).ok();
    ctd.wait_task_status(&id, "RUNNING");

    // The limit from the config, in the container's cgroup, and the
    // shim's metrics of that cgroup.
    let cgroup = format!("{}/{id}", ctd.cgroup_parent());
    let limit = if cgroup_v2() {
        cgroup_read("memory", &cgroup, "memory.max")
    } else {
        cgroup_read("memory", &cgroup, "memory.limit_in_bytes")
    };
    assert_eq!(limit, "67108864");
    let out = ctd.ctr(&["task", "metrics", &id]).ok();
    assert!(out.stdout.contains("memory."), "{out}");

    // kill: the task stops, and deleting it removes the runtime's state.
    ctd.ctr(&["task", "kill", "--signal", "SIGKILL", &id]).ok();
    ctd.wait_task_status(&id, "STOPPED");
    ctd.ctr(&["task", "delete", &id]).ok();
    ctd.ctr(&["containers", "delete", &id]).ok();
    assert!(ctd.task(&id).is_none());
    assert!(
        ctd.runtime_state_entries().is_empty(),
        "runtime state left: {:?}",
        ctd.runtime_state_entries()
    );
}

#[test]
fn ctr_run_with_a_terminal() {
    let ctd = Containerd::start();
    let id = ctd.new_id("ctr-tty");
    let args = ctd.run_args(&["--rm", "--tty"], &id, &["sh"]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut pty = PtyProcess::spawn(ctd.ctr_command(&refs), 30, 100);
    pty.read_until("# ", Duration::from_secs(10));
    // The terminal echoes what is typed: wait for what only the shell prints.
    pty.write(b"tty; echo tty-$((1 + 1))\n");
    let text = pty.read_until("tty-2\n", Duration::from_secs(10));
    assert!(text.contains("/dev/pts/"), "{text:?}");
    pty.write(b"stty size; exit 7\n");
    let (code, text) = pty.wait(Duration::from_secs(10));
    assert!(text.contains("30 100"), "{text:?}");
    assert_eq!(code, 7, "{text:?}");
}
