//! berth-runtime as a runtime of the real dockerd (`dockerd --add-runtime
//! berth=berth-runtime`, `docker run --runtime berth`), which reaches it
//! through containerd and containerd's runc shim.

use std::time::{Duration, Instant};

use integration_tests::interop::{Docker, PtyProcess, IMAGE};
use integration_tests::{cgroup_read, cgroup_v2};

#[test]
fn docker_run_prints_the_output_and_exit_code() {
    let docker = Docker::start();
    let out = docker
        .docker(&[
            "run",
            "--runtime",
            "berth",
            "--rm",
            "--network",
            "none",
            IMAGE,
            "echo",
            "ok",
        ])
        .ok();
    assert_eq!(out.stdout, "ok\n", "{out}");

    let out = docker.docker(&[
        "run",
        "--runtime",
        "berth",
        "--rm",
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        "echo out; echo err >&2; exit 5",
    ]);
    assert_eq!(out.code(), 5, "{out}");
    assert_eq!(out.stdout, "out\n", "{out}");
    assert!(out.stderr.contains("err"), "{out}");
}

#[test]
fn docker_detached_exec_top_pause_update_stop() {
    let docker = Docker::start();
    // An init that exits 3 on SIGTERM: `docker stop` must deliver it.
    let out = docker
        .docker(&[
            "run",
            "--runtime",
            "berth",
            "--detach",
            "--network",
            "none",
            IMAGE,
            "sh",
            "-c",
            "trap 'exit 3' TERM; while :; do sleep 0.1; done",
        ])
        .ok();
    let id = out.stdout.trim().to_owned();
    assert_eq!(docker.inspect(&id, "{{.State.Status}}"), "running");

    let out = docker.docker(&["exec", &id, "echo", "hi"]).ok();
    assert_eq!(out.stdout, "hi\n", "{out}");
    let out = docker.docker(&["exec", &id, "sh", "-c", "exit 4"]);
    assert_eq!(out.code(), 4, "{out}");

    // top (the runtime's ps), pause and unpause (its freezer), update (its
    // `update --resources -`, with the zero values docker sends for what
    // it leaves alone).
    let out = docker.docker(&["top", &id]).ok();
    assert!(out.stdout.contains("while :"), "{out}");
    docker.docker(&["pause", &id]).ok();
    assert_eq!(docker.inspect(&id, "{{.State.Status}}"), "paused");
    docker.docker(&["unpause", &id]).ok();
    assert_eq!(docker.inspect(&id, "{{.State.Status}}"), "running");
    docker
        .docker(&[
            "update",
            "--memory",
            "64m",
            "--memory-swap",
            "128m",
            "--pids-limit",
            "20",
            &id,
        ])
        .ok();
    let cgroup = format!("{}/{id}", docker.containerd().cgroup_parent());
    if cgroup_v2() {
        assert_eq!(cgroup_read("memory", &cgroup, "memory.max"), "67108864");
    } else {
        assert_eq!(
            cgroup_read("memory", &cgroup, "memory.limit_in_bytes"),
            "67108864"
        );
    }
    assert_eq!(cgroup_read("pids", &cgroup, "pids.max"), "20");

    let started = Instant::now();
    docker.docker(&["stop", "--time", "10", &id]).ok();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "docker stop took {took:?}: SIGTERM did not reach the container"
    );
    assert_eq!(docker.inspect(&id, "{{.State.Status}}"), "exited");
    assert_eq!(docker.inspect(&id, "{{.State.ExitCode}}"), "3");
    docker.docker(&["rm", &id]).ok();

    // An init that ignores SIGTERM (pid 1 without a handler): stop kills it
    // after the timeout.
    let out = docker
        .docker(&[
            "run",
            "--runtime",
            "berth",
            "--detach",
            "--network",
            "none",
            IMAGE,
            "sleep",
            "1000",
        ])
        .ok();
    let id = out.stdout.trim().to_owned();
    let started = Instant::now();
    docker.docker(&["stop", "--time", "1", &id]).ok();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(6),
        "docker stop --time 1 took {took:?}"
    );
    assert_eq!(docker.inspect(&id, "{{.State.ExitCode}}"), "137");
    docker.docker(&["rm", &id]).ok();
    assert!(
        docker.runtime_state_entries().is_empty(),
        "runtime state left: {:?}",
        docker.runtime_state_entries()
    );
}

#[test]
fn docker_run_interactive_with_a_terminal() {
    let docker = Docker::start();
    let cmd = docker.docker_command(&[
        "run",
        "--runtime",
        "berth",
        "--rm",
        "--interactive",
        "--tty",
        "--network",
        "none",
        IMAGE,
        "sh",
    ]);
    let mut pty = PtyProcess::spawn(cmd, 30, 100);
    pty.read_until("# ", Duration::from_secs(10));
    pty.write(b"tty; echo $((6 * 7))\n");
    let text = pty.read_until("42\n", Duration::from_secs(10));
    assert!(text.contains("/dev/pts/"), "{text:?}");
    pty.write(b"exit 7\n");
    let (code, text) = pty.wait(Duration::from_secs(10));
    assert_eq!(code, 7, "{text:?}");
}

/// Deletes, when dropped, the `docker0` bridge the test made.
struct MadeBridge(Option<&'static str>);

impl Drop for MadeBridge {
    fn drop(&mut self) {
        if let Some(name) = self.0 {
            let _ = std::process::Command::new("ip")
                .args(["link", "del", name])
                .status();
        }
    }
}

fn link_exists(name: &str) -> bool {
    std::process::Command::new("ip")
        .args(["link", "show", name])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The host's Docker keeps its bridge: the private dockerd (started with
/// `--bridge=none`, which deletes any `docker0` it can see) runs in a
/// network namespace of its own. When the host has no `docker0`, the test
/// makes one for the check and removes it afterwards.
#[test]
fn docker_fixture_leaves_the_hosts_docker0() {
    let made = if link_exists("docker0") {
        MadeBridge(None)
    } else {
        integration_tests::host("ip", &["link", "add", "name", "docker0", "type", "bridge"]);
        MadeBridge(Some("docker0"))
    };
    let docker = Docker::start();
    let out = docker
        .docker(&[
            "run",
            "--runtime",
            "berth",
            "--rm",
            "--network",
            "none",
            IMAGE,
            "true",
        ])
        .ok();
    assert!(out.stdout.is_empty(), "{out}");
    assert!(link_exists("docker0"), "dockerd deleted the host's docker0");
    drop(docker);
    assert!(
        link_exists("docker0"),
        "the host's docker0 is gone after dockerd stopped"
    );
    drop(made);
}
