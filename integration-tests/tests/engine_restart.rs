//! Live restore: berthd and its supervisor die (`kill -9`) with containers
//! running; a new berthd finds them running under the same names, records
//! the true exit of one that ended while no daemon ran, and still serves
//! their logs and controls them.

use std::time::Duration;

use integration_tests::engine::Berthd;
use integration_tests::{pid_alive, wait_until};

const RUNNING: usize = 20;

#[test]
fn containers_outlive_kill_9_of_both_daemons() {
    let mut d = Berthd::start();
    for i in 0..RUNNING {
        let name = format!("c{i}");
        let script = format!("echo started {name}; exec sleep 1000");
        d.docker(&["run", "-d", "--name", &name, "busybox", "sh", "-c", &script])
            .ok();
    }
    d.docker(&[
        "run",
        "-d",
        "--name",
        "quitter",
        "busybox",
        "sh",
        "-c",
        "sleep 2; exit 7",
    ])
    .ok();
    let pid: i64 = d
        .docker(&["inspect", "-f", "{{.State.Pid}}", "quitter"])
        .ok()
        .stdout
        .trim()
        .parse()
        .unwrap();
    let sup = d.supervisor_pid().expect("the supervisor berthd started");
    d.kill9();
    // SAFETY: kill(2) of the test's own supervisor.
    unsafe { libc::kill(sup, libc::SIGKILL) };
    wait_until(
        "quitter to exit while no daemon runs",
        Duration::from_secs(20),
        || !pid_alive(pid),
    );
    d.spawn();
    let ps = d.docker(&["ps", "--format", "{{.Names}} {{.State}}"]).ok();
    let mut running: Vec<&str> = ps.stdout.lines().collect();
    running.sort();
    let mut want: Vec<String> = (0..RUNNING).map(|i| format!("c{i} running")).collect();
    want.sort();
    assert_eq!(running, want);
    let q = d
        .docker(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.ExitCode}}",
            "quitter",
        ])
        .ok();
    assert_eq!(q.stdout, "exited 7\n");
    let logs = d.docker(&["logs", "c3"]).ok();
    assert_eq!(logs.stdout, "started c3\n");
    d.docker(&["exec", "c4", "true"]).ok();
    d.docker(&["stop", "-t", "0", "c5"]).ok();
    let st = d.docker(&["inspect", "-f", "{{.State.Status}}", "c5"]).ok();
    assert_eq!(st.stdout, "exited\n");
}

#[test]
fn a_graceful_stop_leaves_containers_running() {
    let mut d = Berthd::start();
    d.docker(&["run", "-d", "--name", "kept", "busybox", "sleep", "1000"])
        .ok();
    let pid: i64 = d
        .docker(&["inspect", "-f", "{{.State.Pid}}", "kept"])
        .ok()
        .stdout
        .trim()
        .parse()
        .unwrap();
    let status = d.stop().expect("berthd was running");
    assert!(status.success(), "berthd exited with {status}");
    assert!(pid_alive(pid), "the container died with the daemon");
    d.spawn();
    let st = d
        .docker(&["inspect", "-f", "{{.State.Status}} {{.State.Pid}}", "kept"])
        .ok();
    assert_eq!(st.stdout, format!("running {pid}\n"));
    // And the supervisor that berthd restarts after a kill -9 serves too.
    let sup = d.supervisor_pid().expect("the supervisor");
    // SAFETY: kill(2) of the test's own supervisor.
    unsafe { libc::kill(sup, libc::SIGKILL) };
    wait_until("a new supervisor", Duration::from_secs(20), || {
        d.supervisor_pid().is_some_and(|p| p != sup)
    });
    wait_until("the container stops", Duration::from_secs(20), || {
        d.docker(&["stop", "-t", "0", "kept"]).code == 0
    });
    let st = d
        .docker(&["inspect", "-f", "{{.State.Status}}", "kept"])
        .ok();
    assert_eq!(st.stdout, "exited\n");
}
