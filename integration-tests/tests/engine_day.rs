//! A user's day with the real docker CLI against berthd, end to end, in the
//! order people do things: push an image to a registry and pull it back,
//! run a web server with a published port, exec and logs, a named volume,
//! a user network where containers find each other by name, a build and
//! its cached rebuild, a commit, save and load, events, a restart policy,
//! and the prunes at the end of the day.
//!
//! berthd runs with networking in a network namespace of its own; the
//! registry (Debian's docker-registry) runs in that namespace too, on its
//! loopback, where berthd's pulls and pushes reach it.

#![allow(
    clippy::unwrap_used,
    reason = "the helpers of a test: a failure is the test's panic"
)]

use std::process::{Child, Stdio};
use std::time::Duration;

use integration_tests::engine::{Berthd, DockerOutput};
use integration_tests::registry::require_program;
use integration_tests::wait_until;

/// A docker-registry in berthd's network namespace, killed on drop.
struct NetnsRegistry {
    child: Child,
    port: u16,
}

impl NetnsRegistry {
    fn start(d: &Berthd, port: u16) -> NetnsRegistry {
        let program = require_program("docker-registry", "docker-registry");
        let dir = d.dir().join("registry");
        std::fs::create_dir_all(dir.join("storage")).unwrap();
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\n  secret: berth-day\n",
                dir.join("storage").display()
            ),
        )
        .unwrap();
        let child = d
            .in_netns(program.to_str().unwrap())
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let registry = NetnsRegistry { child, port };
        wait_until("the registry answers", Duration::from_secs(20), || {
            d.in_netns("curl")
                .args(["-sf", "-o", "/dev/null"])
                .arg(format!("http://127.0.0.1:{port}/v2/"))
                .status()
                .is_ok_and(|s| s.success())
        });
        registry
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for NetnsRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `docker ARGS` that must succeed: its stdout.
fn ok(d: &Berthd, args: &[&str]) -> String {
    d.docker(args).ok().stdout
}

fn inspect(d: &Berthd, format: &str, what: &str) -> String {
    ok(d, &["inspect", "-f", format, what]).trim().to_string()
}

/// `curl` from berthd's namespace: the body, or `None` when it fails.
fn curl(d: &Berthd, url: &str) -> Option<String> {
    let out = d
        .in_netns("curl")
        .args(["-sf", "--max-time", "5", url])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn a_users_day_with_the_docker_cli() {
    let d = Berthd::start_networked(&[]);
    let day_began = ok(&d, &["version", "-f", "{{.Server.Version}}"]);
    assert!(!day_began.trim().is_empty());
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();

    // Morning: the team's registry. Push the base image, forget it, pull
    // it back.
    let registry = NetnsRegistry::start(&d, 5123);
    let base = format!("{}/team/busybox:1", registry.host());
    ok(&d, &["tag", "busybox:latest", &base]);
    let pushed = ok(&d, &["push", &base]);
    assert!(pushed.contains("1: digest: sha256:"), "{pushed}");
    ok(&d, &["rmi", &base]);
    let pulled = ok(&d, &["pull", &base]);
    assert!(
        pulled.contains(&format!("Status: Downloaded newer image for {base}")),
        "{pulled}"
    );

    // A web server with a published port, exec and logs.
    ok(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "web",
            "-p",
            "127.0.0.1:18081:80",
            &base,
            "sh",
            "-c",
            "mkdir -p /www && echo morning > /www/index.html && echo web up && \
             exec httpd -f -v -p 80 -h /www",
        ],
    );
    wait_until("the web server answers", Duration::from_secs(20), || {
        curl(&d, "http://127.0.0.1:18081/").as_deref() == Some("morning\n")
    });
    assert_eq!(ok(&d, &["port", "web", "80"]).trim(), "127.0.0.1:18081");
    ok(
        &d,
        &[
            "exec",
            "web",
            "sh",
            "-c",
            "echo afternoon > /www/index.html",
        ],
    );
    assert_eq!(
        curl(&d, "http://127.0.0.1:18081/").as_deref(),
        Some("afternoon\n")
    );
    let logs = d.docker(&["logs", "web"]).ok();
    assert!(logs.stdout.contains("web up"), "{logs:?}");

    // A named volume outlives the container that wrote it.
    ok(&d, &["volume", "create", "notes"]);
    ok(
        &d,
        &[
            "run",
            "--rm",
            "-v",
            "notes:/notes",
            &base,
            "sh",
            "-c",
            "echo kept > /notes/n",
        ],
    );
    let read = ok(
        &d,
        &[
            "run",
            "--rm",
            "-v",
            "notes:/notes:ro",
            &base,
            "cat",
            "/notes/n",
        ],
    );
    assert_eq!(read, "kept\n");

    // A user network: containers find each other by name and alias.
    ok(&d, &["network", "create", "team"]);
    ok(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "db",
            "--network",
            "team",
            "--network-alias",
            "database",
            &base,
            "sleep",
            "600",
        ],
    );
    for name in ["db", "database"] {
        ok(
            &d,
            &[
                "run",
                "--rm",
                "--network",
                "team",
                &base,
                "ping",
                "-c",
                "1",
                "-W",
                "5",
                name,
            ],
        );
    }

    // A build, its cached rebuild, and its image run.
    let ctx = d.dir().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {base}\nENV STAGE=day\nCOPY greeting /greeting\n\
             RUN cat /greeting > /built\nCMD [\"sh\", \"-c\", \"cat /built; echo $STAGE\"]\n"
        ),
    )
    .unwrap();
    std::fs::write(ctx.join("greeting"), "built here\n").unwrap();
    let build = |args: &[&str]| -> DockerOutput {
        let mut cmd = d.docker_command(args);
        cmd.env("DOCKER_BUILDKIT", "0");
        let out = integration_tests::registry::run_with_timeout(cmd, Duration::from_secs(300));
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        DockerOutput {
            args: args.iter().map(|a| a.to_string()).collect(),
            code: 0,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    };
    let ctx_arg = ctx.to_str().unwrap();
    let first = build(&["build", "-t", "app:1", ctx_arg]);
    assert!(
        first.stdout.contains("Successfully tagged app:1"),
        "{first:?}"
    );
    let again = build(&["build", "-t", "app:1", ctx_arg]);
    assert_eq!(
        again.stdout.matches("Using cache").count(),
        4,
        "every step from the cache: {}",
        again.stdout
    );
    assert_eq!(ok(&d, &["run", "--rm", "app:1"]), "built here\nday\n");

    // A commit of the running web server, with a new command.
    ok(
        &d,
        &[
            "commit",
            "--change",
            "CMD [\"cat\", \"/www/index.html\"]",
            "web",
            "web:snapshot",
        ],
    );
    assert_eq!(ok(&d, &["run", "--rm", "web:snapshot"]), "afternoon\n");

    // Save and load.
    let tar = d.dir().join("app.tar");
    ok(&d, &["save", "-o", tar.to_str().unwrap(), "app:1"]);
    ok(&d, &["rmi", "app:1"]);
    let loaded = ok(&d, &["load", "-i", tar.to_str().unwrap()]);
    assert!(loaded.contains("Loaded image: app:1"), "{loaded}");
    assert_eq!(ok(&d, &["run", "--rm", "app:1"]), "built here\nday\n");

    // A restart policy: a job that fails is tried again, twice.
    ok(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "flaky",
            "--restart",
            "on-failure:2",
            &base,
            "sh",
            "-c",
            "exit 3",
        ],
    );
    wait_until("two restarts, then rest", Duration::from_secs(30), || {
        inspect(
            &d,
            "{{.RestartCount}} {{.State.Status}} {{.State.ExitCode}}",
            "flaky",
        ) == "2 exited 3"
    });

    // Events of the day.
    // Until a second from now: a later time would make the CLI wait for it.
    let until = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1)
    .to_string();
    let events = ok(
        &d,
        &[
            "events",
            "--since",
            &since,
            "--until",
            &until,
            "--filter",
            "container=web",
            "--format",
            "{{.Action}}",
        ],
    );
    for action in [
        "create",
        "start",
        "exec_start: sh -c echo afternoon > /www/index.html",
    ] {
        assert!(
            events.lines().any(|l| l.trim() == action),
            "no {action:?} event:\n{events}"
        );
    }

    // Evening: stop, and the prunes.
    ok(&d, &["rm", "-f", "web", "db"]);
    let pruned = ok(&d, &["container", "prune", "-f"]);
    assert!(pruned.contains("Total reclaimed space"), "{pruned}");
    assert_eq!(ok(&d, &["ps", "-aq"]).trim(), "", "no container left");
    ok(&d, &["network", "prune", "-f"]);
    assert_eq!(
        ok(&d, &["network", "ls", "-q", "--filter", "type=custom"]).trim(),
        ""
    );
    ok(&d, &["volume", "prune", "-af"]);
    assert_eq!(ok(&d, &["volume", "ls", "-q"]).trim(), "");
    ok(&d, &["image", "prune", "-af"]);
    assert_eq!(ok(&d, &["images", "-q"]).trim(), "", "every image pruned");
    let df = ok(
        &d,
        &["system", "df", "--format", "{{.Type}} {{.TotalCount}}"],
    );
    assert!(df.contains("Images 0"), "{df}");
    assert!(df.contains("Containers 0"), "{df}");

    // Nothing of the day is left in berthd's namespace.
    // Veths go with their namespaces and bridges after their removal
    // answered, both in the background.
    let links = d.links_once_gone();
    assert!(
        !links.contains("veth") && !links.contains("br-"),
        "no veth or user bridge left:\n{links}"
    );
}
