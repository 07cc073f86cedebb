//! Restart policies and health checks with the real docker CLI against
//! berthd: `on-failure:2` restarts exactly twice with growing delays;
//! `always` survives its process being killed from the host; an
//! `unless-stopped` container the user stopped stays stopped across a
//! daemon restart; `always` containers come back after a simulated reboot
//! (kill -9 of berthd, its supervisor, the shims and the containers'
//! processes); a health check turns healthy, then unhealthy, with its
//! events; bad input is refused with nothing created.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use integration_tests::engine::Berthd;
use integration_tests::{host_processes, pid_alive, wait_until};

const WAIT: Duration = Duration::from_secs(30);

fn now_secs() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

fn inspect(d: &Berthd, format: &str, name: &str) -> String {
    let out = d.docker(&["inspect", "-f", format, name]);
    out.stdout.trim().to_string()
}

fn pid_of(d: &Berthd, name: &str) -> i64 {
    inspect(d, "{{.State.Pid}}", name).parse().unwrap_or(0)
}

/// The events of `name` between `since` and now: (action, time in ns).
fn events(d: &Berthd, since: &str, name: &str) -> Vec<(String, i64)> {
    let until = now_secs();
    let out = d
        .docker(&[
            "events",
            "--since",
            since,
            "--until",
            &until,
            "--filter",
            &format!("container={name}"),
            "--format",
            "{{.Action}}|{{.TimeNano}}",
        ])
        .ok();
    out.stdout
        .lines()
        .filter_map(|l| {
            let (action, t) = l.rsplit_once('|')?;
            Some((action.to_string(), t.parse().ok()?))
        })
        .collect()
}

/// A container's `start` times, and the time from each `die` to the next
/// `start` (the back-off and the start itself), from its events.
fn restarts(d: &Berthd, since: &str, name: &str) -> (Vec<Duration>, Vec<Duration>) {
    let events = events(d, since, name);
    let at = |t: i64| Duration::from_nanos(t as u64);
    let starts: Vec<Duration> = events
        .iter()
        .filter(|(a, _)| a == "start")
        .map(|(_, t)| at(*t))
        .collect();
    let dies: Vec<Duration> = events
        .iter()
        .filter(|(a, _)| a == "die")
        .map(|(_, t)| at(*t))
        .collect();
    assert_eq!(dies.len(), starts.len(), "{events:?}");
    let waits = dies
        .iter()
        .zip(starts.iter().skip(1))
        .map(|(d, s)| *s - *d)
        .collect();
    (starts, waits)
}

fn kill_pid(pid: i64, signal: i32) {
    // SAFETY: kill(2) of a process this test started (through berthd).
    unsafe { libc::kill(pid as i32, signal) };
}

#[test]
fn on_failure_restarts_exactly_twice_with_growing_delays() {
    let d = Berthd::start();
    let since = now_secs();
    d.docker(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        "busybox",
        "sh",
        "-c",
        "exit 3",
    ])
    .ok();
    wait_until("two restarts, then exited", WAIT, || {
        inspect(&d, "{{.State.Status}} {{.RestartCount}}", "flaky") == "exited 2"
    });
    // No third restart comes.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        inspect(
            &d,
            "{{.State.Status}} {{.RestartCount}} {{.State.ExitCode}} {{.State.Restarting}}",
            "flaky"
        ),
        "exited 2 3 false"
    );
    let (starts, waits) = restarts(&d, &since, "flaky");
    assert_eq!(starts.len(), 3);
    let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!(
        "on-failure:2: gaps between starts {gaps:?}, from each die to the next start {waits:?}"
    );
    // Each wait is at least its back-off (100 ms, then 200 ms).
    assert!(waits[0] >= Duration::from_millis(100), "{waits:?}");
    assert!(waits[1] >= Duration::from_millis(200), "{waits:?}");
    // The growth, where it is larger than a start's jitter: on-failure:5
    // waits 100, 200, 400, 800, 1600 ms.
    let since5 = now_secs();
    d.docker(&[
        "run",
        "-d",
        "--name",
        "flaky5",
        "--restart",
        "on-failure:5",
        "busybox",
        "false",
    ])
    .ok();
    wait_until("five restarts, then exited", WAIT, || {
        inspect(&d, "{{.State.Status}} {{.RestartCount}}", "flaky5") == "exited 5"
    });
    let (starts, waits) = restarts(&d, &since5, "flaky5");
    assert_eq!(starts.len(), 6);
    eprintln!("on-failure:5: from each die to the next start {waits:?}");
    for (wait, backoff) in waits.iter().zip([100, 200, 400, 800, 1600]) {
        assert!(*wait >= Duration::from_millis(backoff), "{waits:?}");
    }
    assert!(
        waits[2] < waits[3] && waits[3] < waits[4],
        "the delay grows: {waits:?}"
    );
    assert!(waits[4] < Duration::from_millis(1600 + 1000), "{waits:?}");
    // `docker start` by the user begins the count afresh.
    d.docker(&["start", "flaky"]).ok();
    wait_until("the new loop ends", WAIT, || {
        inspect(&d, "{{.State.Status}} {{.RestartCount}}", "flaky") == "exited 2"
    });
}

#[test]
fn always_survives_its_process_killed_and_a_user_stop_ends_it() {
    let d = Berthd::start();
    d.docker(&[
        "run",
        "-d",
        "--name",
        "keeper",
        "--restart",
        "always",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok();
    let first = pid_of(&d, "keeper");
    assert!(first > 0);
    kill_pid(first, libc::SIGKILL);
    wait_until("a new process", WAIT, || {
        let pid = pid_of(&d, "keeper");
        pid > 0 && pid != first && inspect(&d, "{{.State.Status}}", "keeper") == "running"
    });
    assert_eq!(inspect(&d, "{{.RestartCount}}", "keeper"), "1");
    let ps = d
        .docker(&["ps", "--filter", "name=keeper", "--format", "{{.Status}}"])
        .ok();
    assert!(ps.stdout.starts_with("Up "), "{}", ps.stdout);
    // A stop by the user is final.
    d.docker(&["stop", "-t", "1", "keeper"]).ok();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(inspect(&d, "{{.State.Status}}", "keeper"), "exited");
    // A kill by the user too.
    d.docker(&["start", "keeper"]).ok();
    assert_eq!(inspect(&d, "{{.RestartCount}}", "keeper"), "0");
    d.docker(&["kill", "keeper"]).ok();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(inspect(&d, "{{.State.Status}}", "keeper"), "exited");
    // And `rm -f` of one in its back-off leaves nothing behind.
    d.docker(&[
        "run",
        "-d",
        "--name",
        "looper",
        "--restart",
        "always",
        "busybox",
        "false",
    ])
    .ok();
    wait_until("a few restarts", WAIT, || {
        inspect(&d, "{{.RestartCount}}", "looper")
            .parse::<i64>()
            .is_ok_and(|n| n >= 3)
    });
    // Waiting for its next start it is `restarting` (the delay is 800 ms
    // and more by now).
    wait_until("restarting", WAIT, || {
        inspect(
            &d,
            "{{.State.Status}} {{.State.Restarting}} {{.State.Running}}",
            "looper",
        ) == "restarting true true"
    });
    let ps = d
        .docker(&["ps", "--filter", "name=looper", "--format", "{{.Status}}"])
        .ok();
    assert!(ps.stdout.starts_with("Restarting (1) "), "{}", ps.stdout);
    d.docker(&["exec", "looper", "true"])
        .fails_with(1, "is restarting, wait until the container is running");
    d.docker(&["rm", "-f", "looper"]).ok();
    std::thread::sleep(Duration::from_millis(1500));
    let all = d.docker(&["ps", "-a", "--format", "{{.Names}}"]).ok();
    assert!(!all.stdout.contains("looper"), "{}", all.stdout);
}

#[test]
fn a_supervisor_restart_keeps_a_waiting_restart() {
    let d = Berthd::start();
    d.docker(&[
        "run",
        "-d",
        "--name",
        "looper",
        "--restart",
        "always",
        "busybox",
        "false",
    ])
    .ok();
    let count = || {
        inspect(&d, "{{.RestartCount}}", "looper")
            .parse::<i64>()
            .unwrap_or(0)
    };
    // By the fifth restart the delay is 1.6 s: time to kill the supervisor.
    wait_until("four restarts, then restarting", WAIT, || {
        count() >= 4 && inspect(&d, "{{.State.Status}}", "looper") == "restarting"
    });
    let before = count();
    let sup = d.supervisor_pid().expect("the supervisor");
    kill_pid(i64::from(sup), libc::SIGKILL);
    wait_until("a new supervisor", WAIT, || {
        d.supervisor_pid().is_some_and(|p| p != sup)
    });
    wait_until("the loop goes on", WAIT, || count() > before);
    d.docker(&["rm", "-f", "looper"]).ok();
}

#[test]
fn wait_returns_at_an_exit_that_restarts() {
    let d = Berthd::start();
    d.docker(&[
        "run",
        "-d",
        "--name",
        "waited",
        "--restart",
        "always",
        "busybox",
        "sh",
        "-c",
        "sleep 1; exit 5",
    ])
    .ok();
    let out = d.docker(&["wait", "waited"]).ok();
    assert_eq!(out.stdout, "5\n");
    d.docker(&["rm", "-f", "waited"]).ok();
}

#[test]
fn unless_stopped_remembers_a_user_stop_across_a_daemon_restart() {
    let mut d = Berthd::start();
    for name in ["stopped", "left"] {
        d.docker(&[
            "run",
            "-d",
            "--name",
            name,
            "--restart",
            "unless-stopped",
            "busybox",
            "sleep",
            "1000",
        ])
        .ok();
    }
    d.docker(&["stop", "-t", "1", "stopped"]).ok();
    // An `always` container the user stopped comes back at the daemon's
    // start, as in Docker.
    d.docker(&[
        "run",
        "-d",
        "--name",
        "always",
        "--restart",
        "always",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok();
    d.docker(&["stop", "-t", "1", "always"]).ok();
    let left = pid_of(&d, "left");
    let status = d.stop().expect("berthd ran");
    assert!(status.success(), "{status}");
    d.spawn();
    assert_eq!(inspect(&d, "{{.State.Status}}", "stopped"), "exited");
    wait_until("always to run again", WAIT, || {
        inspect(&d, "{{.State.Status}}", "always") == "running"
    });
    // The running one was reattached, not restarted.
    assert_eq!(
        inspect(&d, "{{.State.Status}} {{.State.Pid}}", "left"),
        format!("running {left}")
    );
    // Its process killed with no daemon: it is started at the next start.
    let status = d.stop().expect("berthd ran");
    assert!(status.success(), "{status}");
    kill_pid(left, libc::SIGKILL);
    wait_until("the process to die", WAIT, || !pid_alive(left));
    d.spawn();
    wait_until("left to run again", WAIT, || {
        inspect(&d, "{{.State.Status}}", "left") == "running" && pid_of(&d, "left") != left
    });
    assert_eq!(inspect(&d, "{{.State.Status}}", "stopped"), "exited");
}

#[test]
fn always_containers_come_back_after_a_simulated_reboot() {
    let mut d = Berthd::start();
    for name in ["a1", "a2"] {
        d.docker(&[
            "run",
            "-d",
            "--name",
            name,
            "--restart",
            "always",
            "busybox",
            "sleep",
            "1000",
        ])
        .ok();
    }
    d.docker(&["run", "-d", "--name", "plain", "busybox", "sleep", "1000"])
        .ok();
    // `on-failure` containers that exited cleanly stay down, as in dockerd.
    d.docker(&[
        "run",
        "-d",
        "--name",
        "clean",
        "--restart",
        "on-failure",
        "busybox",
        "true",
    ])
    .ok();
    wait_until("clean to exit", WAIT, || {
        inspect(&d, "{{.State.Status}}", "clean") == "exited"
    });
    let pids: Vec<i64> = ["a1", "a2", "plain"]
        .iter()
        .map(|n| pid_of(&d, n))
        .collect();
    let sup = d.supervisor_pid().expect("the supervisor");
    // The host goes down: every berth process and every container's.
    d.kill9();
    kill_pid(i64::from(sup), libc::SIGKILL);
    let state = d.dir().to_string_lossy().into_owned();
    let shims: Vec<i64> =
        host_processes(|_, cmdline| cmdline.contains("berth-shim") && cmdline.contains(&state))
            .iter()
            .filter_map(|p| p.split_whitespace().next()?.parse().ok())
            .collect();
    assert!(!shims.is_empty(), "no shims found under {state}");
    for pid in shims.iter().chain(&pids) {
        kill_pid(*pid, libc::SIGKILL);
    }
    wait_until("every process gone", WAIT, || {
        !shims.iter().chain(&pids).any(|p| pid_alive(*p))
    });
    d.spawn();
    for name in ["a1", "a2"] {
        wait_until(&format!("{name} running again"), WAIT, || {
            inspect(&d, "{{.State.Status}}", name) == "running"
        });
        let pid = pid_of(&d, name);
        assert!(pid > 0 && pid_alive(pid), "{name}: pid {pid}");
        d.docker(&["exec", name, "true"]).ok();
    }
    assert_eq!(inspect(&d, "{{.State.Status}}", "plain"), "exited");
    assert_eq!(inspect(&d, "{{.State.Status}}", "clean"), "exited");
}

#[test]
fn a_health_check_turns_healthy_then_unhealthy() {
    let d = Berthd::start();
    let since = now_secs();
    d.docker(&[
        "run",
        "-d",
        "--name",
        "doc",
        "--health-cmd",
        "cat /tmp/ok",
        "--health-interval",
        "300ms",
        "--health-retries",
        "2",
        "--health-timeout",
        "2s",
        "busybox",
        "sh",
        "-c",
        "echo fine > /tmp/ok; exec sleep 1000",
    ])
    .ok();
    wait_until("healthy", WAIT, || {
        inspect(&d, "{{.State.Health.Status}}", "doc") == "healthy"
    });
    let ps = d
        .docker(&[
            "ps",
            "--filter",
            "health=healthy",
            "--format",
            "{{.Names}} {{.Status}}",
        ])
        .ok();
    assert!(
        ps.stdout.starts_with("doc Up ") && ps.stdout.contains("(healthy)"),
        "{}",
        ps.stdout
    );
    let log = inspect(&d, "{{(index .State.Health.Log 0).Output}}", "doc");
    assert_eq!(log, "fine");
    d.docker(&["exec", "doc", "rm", "/tmp/ok"]).ok();
    wait_until("unhealthy", WAIT, || {
        inspect(&d, "{{.State.Health.Status}}", "doc") == "unhealthy"
    });
    let streak: i64 = inspect(&d, "{{.State.Health.FailingStreak}}", "doc")
        .parse()
        .unwrap();
    assert!(streak >= 2, "{streak}");
    let last = inspect(&d, "{{json .State.Health.Log}}", "doc");
    let results: serde_json::Value = serde_json::from_str(&last).unwrap();
    let results = results.as_array().unwrap();
    assert!(results.len() <= 5);
    let newest = results.last().unwrap();
    assert_eq!(newest["ExitCode"], 1);
    assert!(
        newest["Output"].as_str().unwrap().contains("No such file"),
        "{newest}"
    );
    let ps = d
        .docker(&[
            "ps",
            "--filter",
            "health=unhealthy",
            "--format",
            "{{.Names}} {{.Status}}",
        ])
        .ok();
    assert!(ps.stdout.contains("(unhealthy)"), "{}", ps.stdout);
    let all: Vec<String> = events(&d, &since, "doc")
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    // Each probe is an exec, with dockerd's events.
    let probes = all
        .iter()
        .filter(|a| *a == "exec_create: /bin/sh -c cat /tmp/ok")
        .count();
    let dies = all.iter().filter(|a| *a == "exec_die").count();
    assert!(probes >= 3 && dies + 1 >= probes, "{all:?}");
    let actions: Vec<&String> = all
        .iter()
        .filter(|a| a.starts_with("health_status"))
        .collect();
    assert_eq!(
        actions,
        ["health_status: healthy", "health_status: unhealthy"]
    );
    // A probe past its timeout is killed and counts as a failure.
    d.docker(&[
        "run",
        "-d",
        "--name",
        "slow",
        "--health-cmd",
        "sleep 30",
        "--health-interval",
        "200ms",
        "--health-timeout",
        "300ms",
        "--health-retries",
        "1",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok();
    wait_until("slow unhealthy", WAIT, || {
        inspect(&d, "{{.State.Health.Status}}", "slow") == "unhealthy"
    });
    let out = inspect(&d, "{{(index .State.Health.Log 0).Output}}", "slow");
    assert_eq!(out, "Health check exceeded timeout (300ms)");
    let probes = d.docker(&["top", "slow"]).ok();
    let sleeping = probes.stdout.matches("sleep 30").count();
    assert!(
        sleeping <= 1,
        "timed-out probes pile up:\n{}",
        probes.stdout
    );
    // Stopped: no more probes, `--no-healthcheck` has none at all.
    d.docker(&["rm", "-f", "slow", "doc"]).ok();
    d.docker(&[
        "run",
        "-d",
        "--name",
        "none",
        "--no-healthcheck",
        "busybox",
        "sleep",
        "1000",
    ])
    .ok();
    assert_eq!(inspect(&d, "{{.State.Health}}", "none"), "<nil>");
    let ps = d
        .docker(&["ps", "--filter", "health=none", "--format", "{{.Names}}"])
        .ok();
    assert_eq!(ps.stdout, "none\n");
}

#[test]
fn health_probes_resume_after_a_daemon_restart() {
    let mut d = Berthd::start();
    d.docker(&[
        "run",
        "-d",
        "--name",
        "probed",
        "--health-cmd",
        "test -f /tmp/ok",
        "--health-interval",
        "300ms",
        "--health-retries",
        "1",
        "busybox",
        "sh",
        "-c",
        "touch /tmp/ok; exec sleep 1000",
    ])
    .ok();
    wait_until("healthy", WAIT, || {
        inspect(&d, "{{.State.Health.Status}}", "probed") == "healthy"
    });
    d.stop().expect("berthd ran");
    d.spawn();
    assert_eq!(inspect(&d, "{{.State.Health.Status}}", "probed"), "healthy");
    // As dockerd: stopped, it is unhealthy; started, starting again.
    d.docker(&["stop", "-t", "0", "probed"]).ok();
    assert_eq!(
        inspect(
            &d,
            "{{.State.Health.Status}} {{.State.Health.FailingStreak}}",
            "probed"
        ),
        "unhealthy 0"
    );
    d.docker(&["start", "probed"]).ok();
    // (A first probe 300 ms later may have made it healthy already.)
    let status = inspect(&d, "{{.State.Health.Status}}", "probed");
    assert!(status == "starting" || status == "healthy", "{status}");
    wait_until("healthy again", WAIT, || {
        inspect(&d, "{{.State.Health.Status}}", "probed") == "healthy"
    });
    d.docker(&["exec", "probed", "rm", "/tmp/ok"]).ok();
    wait_until("unhealthy after the restart", WAIT, || {
        inspect(&d, "{{.State.Health.Status}}", "probed") == "unhealthy"
    });
    d.docker(&["rm", "-f", "probed"]).ok();
}

#[test]
fn berth_health_flags_send_what_the_docker_cli_sends() {
    let d = Berthd::start();
    let flags = [
        "--health-cmd",
        "test -f /ok",
        "--health-interval",
        "1m30s",
        "--health-timeout",
        "500ms",
        "--health-retries",
        "4",
        "--health-start-period",
        "2s",
        "--health-start-interval",
        "1.5s",
    ];
    let mut args = vec!["create", "--name", "by-docker"];
    args.extend(flags);
    args.push("busybox");
    d.docker(&args).ok();
    let mut args = vec!["create", "--name", "by-berth"];
    args.extend(flags);
    args.push("busybox");
    let (code, _, err) = d.berth(&args);
    assert_eq!(code, 0, "{err}");
    let format = "{{json .Config.Healthcheck}}";
    assert_eq!(
        inspect(&d, format, "by-berth"),
        inspect(&d, format, "by-docker")
    );
    // Only some flags: the others are left out, as the docker CLI does.
    d.docker(&[
        "create",
        "--name",
        "some-docker",
        "--health-cmd",
        "true",
        "busybox",
    ])
    .ok();
    let (code, _, err) = d.berth(&[
        "create",
        "--name",
        "some-berth",
        "--health-cmd",
        "true",
        "busybox",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        inspect(&d, format, "some-berth"),
        inspect(&d, format, "some-docker")
    );
    let (code, _, err) = d.berth(&["create", "--no-healthcheck", "busybox"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = d.berth(&[
        "create",
        "--health-interval",
        "-1s",
        "--health-cmd",
        "true",
        "busybox",
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("--health-interval cannot be negative"),
        "{err}"
    );
    let (code, _, err) = d.berth(&[
        "create",
        "--no-healthcheck",
        "--health-cmd",
        "true",
        "busybox",
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("--no-healthcheck conflicts with --health-* options"),
        "{err}"
    );
}

#[test]
fn bad_input_is_refused_and_nothing_is_created() {
    let d = Berthd::start();
    let count = || d.docker(&["ps", "-aq"]).ok().stdout.lines().count();
    d.docker(&[
        "create",
        "--health-cmd",
        "true",
        "--health-interval",
        "-1s",
        "busybox",
    ])
    .fails_with(125, "--health-interval cannot be negative");
    d.docker(&["create", "--restart", "on-failure:-1", "busybox"])
        .fails_with(1, "maximum retry count cannot be negative");
    d.docker(&["create", "--restart", "always:3", "busybox"])
        .fails_with(
            1,
            "maximum retry count cannot be used with restart policy 'always'",
        );
    d.docker(&["create", "--restart", "sometimes", "busybox"])
        .fails_with(1, "invalid restart policy 'sometimes'");
    d.docker(&["run", "--restart", "always", "--rm", "busybox", "true"])
        .fails_with(
            125,
            "conflicting options: cannot specify both --restart and --rm",
        );
    // The API judges what a client did not.
    let body = br#"{"Image":"busybox","Healthcheck":{"Test":["CMD","true"],"Interval":-1}}"#;
    let (status, reply) = d
        .request("POST", "/containers/create", Some(body))
        .expect("an answer");
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&reply));
    assert!(
        String::from_utf8_lossy(&reply).contains("Interval in Healthcheck cannot be less than 1ms")
    );
    let body = br#"{"Image":"busybox","HostConfig":{"AutoRemove":true,"RestartPolicy":{"Name":"always"}}}"#;
    let (status, _) = d
        .request("POST", "/containers/create", Some(body))
        .expect("an answer");
    assert_eq!(status, 400);
    assert_eq!(count(), 0);
    // `update --restart` is judged the same way, and applies.
    d.docker(&["create", "--name", "updated", "busybox", "false"])
        .ok();
    d.docker(&["update", "--restart", "on-failure:-1", "updated"])
        .fails_with(1, "maximum retry count cannot be negative");
    d.docker(&["update", "--restart", "on-failure:1", "updated"])
        .ok();
    assert_eq!(
        inspect(
            &d,
            "{{.HostConfig.RestartPolicy.Name}} {{.HostConfig.RestartPolicy.MaximumRetryCount}}",
            "updated"
        ),
        "on-failure 1"
    );
    d.docker(&["start", "updated"]).ok();
    wait_until("one restart, then exited", WAIT, || {
        inspect(&d, "{{.State.Status}} {{.RestartCount}}", "updated") == "exited 1"
    });
}
