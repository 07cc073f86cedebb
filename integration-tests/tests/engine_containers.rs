//! berthd's containers through the real docker CLI: run (attached, piped
//! stdin, a terminal, detached), exec, logs, inspect templates, ps formats,
//! wait, stop, kill, pause, rename, top, stats, rm; and the errors a user
//! meets, with Docker's messages and exit codes.

use std::time::Duration;

use integration_tests::engine::Berthd;
use integration_tests::wait_until;

#[test]
fn run_attached_gives_output_and_exit_code() {
    let d = Berthd::start();
    let out = d.docker(&["run", "--rm", "busybox", "echo", "hello"]).ok();
    assert_eq!(out.stdout, "hello\n");
    let out = d.docker(&[
        "run",
        "--name",
        "failing",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(out.code, 3, "{out:?}");
    assert_eq!(out.stdout, "out\n");
    assert_eq!(out.stderr, "err\n");
    let ps = d
        .docker(&["ps", "-a", "--format", "{{.Names}} {{.Status}}"])
        .ok();
    assert!(ps.stdout.starts_with("failing Exited (3)"), "{}", ps.stdout);
    let code = d
        .docker(&[
            "inspect",
            "-f",
            "{{.State.ExitCode}} {{.State.Status}} {{.Name}}",
            "failing",
        ])
        .ok();
    assert_eq!(code.stdout, "3 exited /failing\n");
    // --rm removed the first one.
    let all = d.docker(&["ps", "-aq"]).ok();
    assert_eq!(all.stdout.lines().count(), 1, "{}", all.stdout);
    // ps -s measures what a container wrote.
    d.docker(&[
        "run",
        "--name",
        "writer",
        "busybox",
        "dd",
        "if=/dev/zero",
        "of=/blob",
        "bs=1k",
        "count=300",
    ])
    .ok();
    let size = d
        .docker(&[
            "ps",
            "-a",
            "-s",
            "--filter",
            "name=writer",
            "--format",
            "{{.Size}}",
        ])
        .ok();
    assert!(
        size.stdout.starts_with("31") && size.stdout.contains("kB (virtual"),
        "{}",
        size.stdout
    );
    d.docker(&["rm", "failing", "writer"]).ok();
    // Logs are bounded: a bad option is refused, a good one accepted.
    d.docker(&[
        "run",
        "--rm",
        "--log-opt",
        "max-size=lots",
        "busybox",
        "true",
    ])
    .fails_with(125, "max-size");
    d.docker(&["run", "--rm", "--log-opt", "nope=1", "busybox", "true"])
        .fails_with(125, "unknown log opt 'nope'");
    d.docker(&[
        "run",
        "--rm",
        "--log-opt",
        "max-size=1m",
        "--log-opt",
        "max-file=2",
        "busybox",
        "true",
    ])
    .ok();
}

#[test]
fn stdin_piped_and_a_terminal() {
    let d = Berthd::start();
    let out = d
        .docker_input(
            &["run", "-i", "--rm", "busybox", "sh", "-c", "cat; echo done"],
            b"line one\nline two\n",
        )
        .ok();
    assert_eq!(out.stdout, "line one\nline two\ndone\n");
    // A terminal, under script(1).
    let sock = d.socket();
    let cmd = format!(
        "DOCKER_HOST=unix://{} DOCKER_CONFIG={} docker run -it --rm busybox sh -c 'tty; echo rows=$(stty size)'",
        sock.display(),
        d.dir().join("docker-config").display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("/dev/pts/0"), "{text}");
    assert!(text.contains("rows="), "{text}");
}

#[test]
fn detached_exec_logs_and_stop() {
    let d = Berthd::start();
    let id = d
        .docker(&[
            "run",
            "-d",
            "--name",
            "ticker",
            "busybox",
            "sh",
            "-c",
            "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done",
        ])
        .ok()
        .stdout;
    let id = id.trim();
    assert_eq!(id.len(), 64, "{id}");
    let out = d.docker(&["exec", "ticker", "sh", "-c", "echo in $(hostname); exit 4"]);
    assert_eq!(out.code, 4, "{out:?}");
    assert_eq!(out.stdout, format!("in {}\n", &id[..12]));
    let out = d
        .docker_input(&["exec", "-i", "ticker", "cat"], b"piped\n")
        .ok();
    assert_eq!(out.stdout, "piped\n");
    wait_until("three ticks in the log", Duration::from_secs(10), || {
        d.docker(&["logs", "ticker"]).stdout.lines().count() >= 3
    });
    let logs = d.docker(&["logs", "--tail", "2", "ticker"]).ok();
    assert_eq!(logs.stdout.lines().count(), 2, "{}", logs.stdout);
    let ts = d.docker(&["logs", "-t", "--tail", "1", "ticker"]).ok();
    assert!(ts.stdout.starts_with("20"), "{}", ts.stdout);
    // logs -f follows until the container stops.
    let follower = d
        .docker_command(&["logs", "-f", "ticker"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let top = d.docker(&["top", "ticker"]).ok();
    assert!(
        top.stdout.contains("PID") && top.stdout.contains("sh -c"),
        "{}",
        top.stdout
    );
    let stats = d.docker(&["stats", "--no-stream", "ticker"]).ok();
    assert!(stats.stdout.contains("ticker"), "{}", stats.stdout);
    d.docker(&["pause", "ticker"]).ok();
    let st = d
        .docker(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.Paused}}",
            "ticker",
        ])
        .ok();
    assert_eq!(st.stdout, "paused true\n");
    d.docker(&["unpause", "ticker"]).ok();
    d.docker(&["stop", "-t", "1", "ticker"]).ok();
    let followed = follower.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&followed.stdout).contains("tick 2"));
    let st = d
        .docker(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.ExitCode}}",
            "ticker",
        ])
        .ok();
    assert_eq!(st.stdout, "exited 137\n");
    d.docker(&["rename", "ticker", "ticked"]).ok();
    d.docker(&["start", "ticked"]).ok();
    let st = d
        .docker(&["inspect", "-f", "{{.State.Running}}", "ticked"])
        .ok();
    assert_eq!(st.stdout, "true\n");
    d.docker(&["kill", "ticked"]).ok();
    let w = d.docker(&["wait", "ticked"]).ok();
    assert_eq!(w.stdout, "137\n");
    d.docker(&["rm", "ticked"]).ok();
}

#[test]
fn errors_as_docker_gives_them() {
    let d = Berthd::start();
    d.docker(&["inspect", "nope"])
        .fails_with(1, "No such object: nope");
    d.docker(&["stop", "nope"])
        .fails_with(1, "No such container: nope");
    d.docker(&["logs", "nope"])
        .fails_with(1, "No such container: nope");
    d.docker(&["create", "--name", "dup", "busybox"]).ok();
    d.docker(&["create", "--name", "dup", "busybox"])
        .fails_with(
            1,
            "The container name \"/dup\" is already in use by container",
        );
    d.docker(&["run", "--name", "bad name", "busybox"])
        .fails_with(125, "Invalid container name");
    d.docker(&["run", "--pull", "never", "127.0.0.1:1/missing:latest"])
        .fails_with(125, "No such image");
    d.docker(&["run", "--rm", "busybox", "/no/such/binary"])
        .fails_with(127, "no such file or directory");
    d.docker(&["exec", "dup", "true"])
        .fails_with(1, "is not running");
    d.docker(&["kill", "dup"]).fails_with(1, "is not running");
    d.docker(&["run", "-d", "--name", "busy", "busybox", "sleep", "100"])
        .ok();
    d.docker(&["rm", "busy"]).fails_with(
        1,
        "container is running: stop the container before removing or force remove",
    );
    d.docker(&["rm", "-f", "busy", "dup"]).ok();
    // Raw requests: a malformed body, an unknown route, an old version.
    let (status, body) = d
        .request("POST", "/containers/create", Some(b"{not json"))
        .unwrap();
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("invalid JSON"));
    // A body declared larger than the daemon reads is refused up front.
    let mut s = std::os::unix::net::UnixStream::connect(d.socket()).unwrap();
    let head = "POST /containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: 17825792\r\n\r\n{";
    std::io::Write::write_all(&mut s, head.as_bytes()).unwrap();
    let mut answer = [0u8; 64];
    let n = std::io::Read::read(&mut s, &mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let (status, _) = d.request("GET", "/v1.12/containers/json", None).unwrap();
    assert_eq!(status, 400);
    let (status, _) = d.request("GET", "/nothing/here", None).unwrap();
    assert_eq!(status, 404);
    // Nothing half-made: no container record, no directory.
    let (_, body) = d.request("GET", "/containers/json?all=1", None).unwrap();
    assert_eq!(String::from_utf8_lossy(&body), "[]");
    let dirs: Vec<_> = std::fs::read_dir(d.data_root().join("engine/containers"))
        .unwrap()
        .collect();
    assert!(dirs.is_empty(), "{dirs:?}");
}
