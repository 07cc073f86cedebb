//! `DOCKER_BUILDKIT=0 docker build` (the real CLI, speaking the legacy
//! `POST /build` API) against berthd: a Dockerfile of metadata
//! instructions whose image runs and shows what each promised, Docker's
//! output and history lines; RUN steps whose files the image holds, their
//! output streamed, a build argument in their history; a failed RUN (its
//! output, Docker's message, a non-zero exit, no container or step image
//! left); and the bad inputs: an unknown instruction (the line named), a
//! step this builder cannot run yet, a context that is not a tar. After
//! each, the daemon still serves and no build directory is left behind.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use integration_tests::engine::{Berthd, DockerOutput};
use integration_tests::registry::run_with_timeout;

const TIMEOUT: Duration = Duration::from_secs(120);

fn docker_build(berthd: &Berthd, args: &[&str]) -> DockerOutput {
    let mut cmd: Command = berthd.docker_command(args);
    cmd.env("DOCKER_BUILDKIT", "0");
    let out = run_with_timeout(cmd, TIMEOUT);
    DockerOutput {
        args: args.iter().map(|s| s.to_string()).collect(),
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn context(dockerfile: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("context directory");
    fs::write(dir.path().join("Dockerfile"), dockerfile).expect("write Dockerfile");
    fs::write(dir.path().join("ignored.txt"), "x").expect("write a file");
    dir
}

fn no_build_left(berthd: &Berthd) {
    let builds = berthd.data_root().join("engine/builds");
    let left: Vec<_> = fs::read_dir(&builds)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "build directories left: {left:?}");
}

fn path(dir: &Path) -> &str {
    dir.to_str().expect("a UTF-8 path")
}

#[test]
fn a_metadata_build_runs_as_its_instructions_promise() {
    let berthd = Berthd::start();
    let ctx = context(
        "ARG BASE=busybox\n\
         FROM $BASE\n\
         ARG WHO=world\n\
         ENV GREETING=\"hello $WHO\"\n\
         LABEL org.example.kind=test\n\
         EXPOSE 8080/tcp\n\
         VOLUME /data\n\
         USER 1000:1000\n\
         STOPSIGNAL SIGQUIT\n\
         HEALTHCHECK --interval=5s CMD true\n\
         ENTRYPOINT [\"/bin/sh\", \"-c\"]\n\
         CMD [\"echo $GREETING from $(id -u)\"]\n",
    );
    let out = docker_build(
        &berthd,
        &[
            "build",
            "-t",
            "built:1",
            "--build-arg",
            "WHO=berth",
            "--label",
            "extra=1",
            path(ctx.path()),
        ],
    )
    .ok();
    assert!(
        out.stdout.contains("Step 1/13 : ARG BASE=busybox\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("Step 2/13 : FROM $BASE\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("Step 13/13 : LABEL \"extra\"='1'\n"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("Successfully built "), "{}", out.stdout);
    assert!(
        out.stdout.contains("Successfully tagged built:1\n"),
        "{}",
        out.stdout
    );

    let run = berthd.docker(&["run", "--rm", "built:1"]).ok();
    assert_eq!(run.stdout, "hello berth from 1000\n");
    let inspect = |format: &str| {
        berthd
            .docker(&["image", "inspect", "-f", format, "built:1"])
            .ok()
            .stdout
            .trim()
            .to_string()
    };
    assert_eq!(
        inspect("{{json .Config.ExposedPorts}}"),
        r#"{"8080/tcp":{}}"#
    );
    assert_eq!(inspect("{{json .Config.Volumes}}"), r#"{"/data":{}}"#);
    assert_eq!(inspect("{{.Config.User}}"), "1000:1000");
    assert_eq!(inspect("{{.Config.StopSignal}}"), "SIGQUIT");
    assert_eq!(
        inspect("{{json .Config.Labels}}"),
        r#"{"extra":"1","org.example.kind":"test"}"#
    );
    assert_eq!(
        inspect("{{json .Config.Healthcheck.Test}}"),
        r#"["CMD-SHELL","true"]"#
    );
    let history = berthd
        .docker(&[
            "history",
            "--no-trunc",
            "--format",
            "{{.CreatedBy}}",
            "built:1",
        ])
        .ok()
        .stdout;
    assert!(
        history.contains("/bin/sh -c #(nop)  ENV GREETING=hello berth\n"),
        "{history}"
    );
    no_build_left(&berthd);
}

#[test]
fn bad_dockerfiles_and_contexts_fail_clearly_and_leave_nothing() {
    let berthd = Berthd::start();
    let ctx = context("FROM busybox\nFOO bar\n");
    docker_build(&berthd, &["build", path(ctx.path())])
        .fails_with(1, "Dockerfile parse error line 2: unknown instruction: FOO");
    let ctx = context("FROM busybox\nRUN --mount=type=cache,target=/c true\n");
    docker_build(&berthd, &["build", "-t", "never:1", path(ctx.path())])
        .fails_with(1, "RUN --mount is not supported by this builder yet");
    let ctx = context("FROM busybox\nCOPY ../outside /x\n");
    docker_build(&berthd, &["build", "-t", "never:1", path(ctx.path())])
        .fails_with(1, "Forbidden path outside the build context: ../outside");
    let ctx = context("FROM busybox\nCOPY missing.txt /x\n");
    docker_build(&berthd, &["build", "-t", "never:1", path(ctx.path())]).fails_with(
        1,
        "COPY failed: file not found in build context or excluded by .dockerignore: stat missing.txt",
    );
    berthd
        .docker(&["image", "inspect", "never:1"])
        .fails_with(1, "No such image");
    let (status, body) = berthd
        .request("POST", "/build", Some(&[b'x'; 4096]))
        .expect("berthd answers");
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    assert!(
        String::from_utf8_lossy(&body).contains("not a tar archive"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    berthd.docker(&["version"]).ok();
    no_build_left(&berthd);
}

#[test]
fn run_steps_make_layers_and_a_failed_one_leaves_nothing() {
    let berthd = Berthd::start();
    let ctx = context(
        "FROM busybox\n\
         ARG V=1\n\
         RUN echo building $V && mkdir /built && echo data-$V > /built/file\n\
         RUN <<EOF\n\
         echo from a heredoc > /built/heredoc\n\
         EOF\n\
         CMD cat /built/file /built/heredoc\n",
    );
    let out = docker_build(
        &berthd,
        &[
            "build",
            "-t",
            "ran:1",
            "--build-arg",
            "V=2",
            path(ctx.path()),
        ],
    )
    .ok();
    assert!(out.stdout.contains(" ---> Running in "), "{}", out.stdout);
    assert!(out.stdout.contains("building 2\n"), "{}", out.stdout);
    assert!(
        out.stdout.contains("Removing intermediate container "),
        "{}",
        out.stdout
    );
    let run = berthd.docker(&["run", "--rm", "ran:1"]).ok();
    assert_eq!(run.stdout, "data-2\nfrom a heredoc\n");
    let history = berthd
        .docker(&[
            "history",
            "--no-trunc",
            "--format",
            "{{.CreatedBy}}",
            "ran:1",
        ])
        .ok()
        .stdout;
    assert!(
        history.contains("|1 V=2 /bin/sh -c echo building $V && mkdir /built"),
        "{history}"
    );

    let ctx = context("FROM busybox\nRUN echo before-failure && false\nCMD true\n");
    let failed = docker_build(&berthd, &["build", "-t", "failed:1", path(ctx.path())]).fails_with(
        1,
        "The command '/bin/sh -c echo before-failure && false' returned a non-zero code: 1",
    );
    assert!(
        failed.stdout.contains("before-failure\n"),
        "{}",
        failed.stdout
    );
    let left = berthd.docker(&["ps", "-aq"]).ok().stdout;
    assert_eq!(left.trim(), "", "containers left");
    let images = berthd
        .docker(&["images", "-a", "--format", "{{.Repository}}:{{.Tag}}"])
        .ok()
        .stdout;
    assert!(!images.contains("build-step"), "{images}");
    assert!(!images.contains("failed"), "{images}");
    no_build_left(&berthd);
}

#[test]
fn copy_and_workdir_write_files_as_promised() {
    let berthd = Berthd::start();
    let ctx = context(
        "FROM busybox\n\
         WORKDIR /app\n\
         COPY ignored.txt ./\n\
         COPY --chown=1000:1000 --chmod=0640 dir/ /app/tree/\n\
         ADD ignored.txt one.txt /multi/\n\
         CMD ls -ln /app /app/tree /multi && cat /app/ignored.txt /app/tree/sub/deep.txt && pwd\n",
    );
    fs::create_dir_all(ctx.path().join("dir/sub")).expect("mkdir");
    fs::write(ctx.path().join("dir/sub/deep.txt"), "deep\n").expect("write");
    fs::write(ctx.path().join("one.txt"), "one\n").expect("write");
    let out = docker_build(&berthd, &["build", "-t", "copied:1", path(ctx.path())]).ok();
    assert!(
        out.stdout.contains("Successfully tagged copied:1"),
        "{}",
        out.stdout
    );
    let run = berthd.docker(&["run", "--rm", "copied:1"]).ok().stdout;
    assert!(run.contains("xdeep\n/app\n"), "{run}");
    let tree_line = run
        .lines()
        .find(|l| l.ends_with(" sub"))
        .unwrap_or_else(|| panic!("no sub in {run}"));
    assert!(tree_line.starts_with("drw-r-----"), "{tree_line}");
    assert!(tree_line.contains(" 1000 "), "{tree_line}");
    assert!(run.contains("one.txt"), "{run}");
    let history = berthd
        .docker(&[
            "history",
            "--no-trunc",
            "--format",
            "{{.CreatedBy}}",
            "copied:1",
        ])
        .ok()
        .stdout;
    assert!(
        history.contains("/bin/sh -c #(nop) WORKDIR /app\n"),
        "{history}"
    );
    assert!(
        history.contains("/bin/sh -c #(nop) COPY file:"),
        "{history}"
    );
    assert!(history.contains("/bin/sh -c #(nop) COPY dir:"), "{history}");
    assert!(
        history.contains("/bin/sh -c #(nop) ADD multi:"),
        "{history}"
    );
    no_build_left(&berthd);
}

fn built_id(out: &DockerOutput) -> String {
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("Successfully built "))
        .unwrap_or_else(|| panic!("no id in {}", out.stdout))
        .to_string()
}

#[test]
fn the_cache_reuses_unchanged_steps_across_a_restart() {
    let mut berthd = Berthd::start();
    let ctx = context(
        "FROM busybox\n\
         ARG V=1\n\
         RUN echo ran-$V > /ran\n\
         COPY ignored.txt /early.txt\n\
         COPY one.txt /late.txt\n\
         CMD cat /ran /early.txt /late.txt\n",
    );
    fs::write(ctx.path().join("one.txt"), "one\n").expect("write");
    let build = |berthd: &Berthd, extra: &[&str]| {
        let mut args = vec!["build", "-t", "cached:1"];
        args.extend_from_slice(extra);
        args.push(path(ctx.path()));
        docker_build(berthd, &args).ok()
    };
    let first = build(&berthd, &[]);
    assert!(!first.stdout.contains("Using cache"), "{}", first.stdout);
    // Unchanged: every step from the cache, the same image.
    let again = build(&berthd, &[]);
    assert_eq!(
        again.stdout.matches(" ---> Using cache\n").count(),
        5,
        "{}",
        again.stdout
    );
    assert!(!again.stdout.contains("Running in"), "{}", again.stdout);
    assert_eq!(built_id(&again), built_id(&first));
    // A file copied late changed: the steps before it still cached.
    fs::write(ctx.path().join("one.txt"), "two\n").expect("write");
    let changed = build(&berthd, &[]);
    assert_eq!(
        changed.stdout.matches(" ---> Using cache\n").count(),
        3,
        "{}",
        changed.stdout
    );
    let run = berthd.docker(&["run", "--rm", "cached:1"]).ok().stdout;
    assert_eq!(run, "ran-1\nxtwo\n");
    // A build argument changed: from the RUN on.
    let arg = build(&berthd, &["--build-arg", "V=2"]);
    assert_eq!(
        arg.stdout.matches(" ---> Using cache\n").count(),
        1,
        "{}",
        arg.stdout
    );
    assert!(arg.stdout.contains(" ---> Running in "), "{}", arg.stdout);
    // After a restart of the daemon, the cache is still there.
    berthd.stop();
    berthd.spawn();
    let restarted = build(&berthd, &["--build-arg", "V=2"]);
    assert_eq!(
        restarted.stdout.matches(" ---> Using cache\n").count(),
        5,
        "{}",
        restarted.stdout
    );
    assert_eq!(built_id(&restarted), built_id(&arg));
    // --no-cache runs everything.
    let fresh = build(&berthd, &["--no-cache"]);
    assert!(!fresh.stdout.contains("Using cache"), "{}", fresh.stdout);
    no_build_left(&berthd);
}

#[test]
fn berth_build_and_builder_prune() {
    let berthd = Berthd::start();
    let ctx = context("FROM busybox\nARG V=1\nRUN echo v$V > /v\nCMD cat /v\n");
    fs::write(ctx.path().join(".dockerignore"), "ignored.txt\n").expect("write");
    let berth = |args: &[&str]| {
        let mut cmd = Command::new(integration_tests::engine::berth_binary());
        cmd.arg("-H")
            .arg(format!("unix://{}", berthd.socket().display()))
            .args(args);
        run_with_timeout(cmd, TIMEOUT)
    };
    let out = berth(&[
        "build",
        "-t",
        "viaberth:1",
        "--build-arg",
        "V=3",
        path(ctx.path()),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Step 1/4 : FROM busybox\n"), "{stdout}");
    assert!(
        stdout.contains("Successfully tagged viaberth:1\n"),
        "{stdout}"
    );
    let run = berthd.docker(&["run", "--rm", "viaberth:1"]).ok();
    assert_eq!(run.stdout, "v3\n");

    let quiet = berth(&["build", "-q", "--build-arg", "V=3", path(ctx.path())]);
    let id = String::from_utf8_lossy(&quiet.stdout).trim().to_string();
    assert!(quiet.status.success());
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id:?}");

    // The file .dockerignore leaves out is not in the context.
    let ignored = context("FROM busybox\nCOPY ignored.txt /x\n");
    fs::write(ignored.path().join(".dockerignore"), "ignored.txt\n").expect("write");
    let out = berth(&["build", path(ignored.path())]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("file not found in build context"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let pruned = berth(&["builder", "prune", "-f"]);
    assert!(
        pruned.status.success(),
        "{}",
        String::from_utf8_lossy(&pruned.stderr)
    );
    assert!(String::from_utf8_lossy(&pruned.stdout).starts_with("Total:"));
    let out = berth(&["build", "--build-arg", "V=3", path(ctx.path())]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("Using cache"));
    no_build_left(&berthd);
}

#[test]
fn multi_stage_copies_from_a_stage_and_an_image_and_skips_the_rest() {
    let berthd = Berthd::start();
    let ctx = context(
        "FROM busybox AS build\n\
         RUN mkdir /out && echo built > /out/artifact\n\
         FROM busybox AS unused\n\
         RUN echo should-not-run && false\n\
         FROM scratch\n\
         COPY --from=build /out/artifact /artifact\n\
         COPY --from=busybox /bin/busybox /bin/busybox\n\
         CMD [\"/bin/busybox\", \"cat\", \"/artifact\"]\n",
    );
    let out = docker_build(&berthd, &["build", "-t", "multi:1", path(ctx.path())]).ok();
    assert!(!out.stdout.contains("should-not-run"), "{}", out.stdout);
    let run = berthd.docker(&["run", "--rm", "multi:1"]).ok();
    assert_eq!(run.stdout, "built\n");
    // --target builds that stage and what it needs only.
    let out = docker_build(
        &berthd,
        &[
            "build",
            "-t",
            "multi:build",
            "--target",
            "build",
            path(ctx.path()),
        ],
    )
    .ok();
    assert!(
        out.stdout.contains("Step 2/2 : RUN mkdir"),
        "{}",
        out.stdout
    );
    let run = berthd
        .docker(&["run", "--rm", "multi:build", "cat", "/out/artifact"])
        .ok();
    assert_eq!(run.stdout, "built\n");
    docker_build(&berthd, &["build", "--target", "nope", path(ctx.path())])
        .fails_with(1, "failed to reach build target nope in Dockerfile");
    no_build_left(&berthd);
}

#[test]
fn commit_of_a_running_container_runs() {
    let berthd = Berthd::start();
    berthd
        .docker(&[
            "run",
            "-d",
            "--name",
            "source",
            "busybox",
            "sh",
            "-c",
            "echo made > /made && sleep 100",
        ])
        .ok();
    integration_tests::wait_until("the container's file", Duration::from_secs(20), || {
        berthd.docker(&["exec", "source", "cat", "/made"]).code == 0
    });
    let out = berthd
        .docker(&[
            "commit",
            "-m",
            "a message",
            "-a",
            "Jo",
            "-c",
            "CMD [\"cat\", \"/made\"]",
            "-c",
            "ENV COMMITTED=1",
            "source",
            "committed:1",
        ])
        .ok();
    assert!(out.stdout.trim().starts_with("sha256:"), "{}", out.stdout);
    let run = berthd.docker(&["run", "--rm", "committed:1"]).ok();
    assert_eq!(run.stdout, "made\n");
    let env = berthd
        .docker(&[
            "image",
            "inspect",
            "-f",
            "{{json .Config.Env}}",
            "committed:1",
        ])
        .ok()
        .stdout;
    assert!(env.contains("COMMITTED=1"), "{env}");
    // The container still runs after its commit (it was paused, then resumed).
    let state = berthd
        .docker(&["inspect", "-f", "{{.State.Status}}", "source"])
        .ok()
        .stdout;
    assert_eq!(state.trim(), "running");
    // berth commit too, without pausing.
    let mut cmd = Command::new(integration_tests::engine::berth_binary());
    cmd.arg("-H")
        .arg(format!("unix://{}", berthd.socket().display()))
        .args(["commit", "-p=false", "source", "committed:2"]);
    let out = run_with_timeout(cmd, TIMEOUT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = berthd
        .docker(&["run", "--rm", "committed:2", "cat", "/made"])
        .ok();
    assert_eq!(run.stdout, "made\n");
    // berth history shows what docker history shows.
    let format = "{{.CreatedBy}}|{{.Size}}|{{.Comment}}";
    let docker = berthd
        .docker(&["history", "--format", format, "committed:1"])
        .ok()
        .stdout;
    let mut cmd = Command::new(integration_tests::engine::berth_binary());
    cmd.arg("-H")
        .arg(format!("unix://{}", berthd.socket().display()))
        .args(["history", "--format", format, "committed:1"]);
    let out = run_with_timeout(cmd, TIMEOUT);
    assert_eq!(String::from_utf8_lossy(&out.stdout), docker);
    assert!(docker.contains("|a message"), "{docker}");
    berthd.docker(&["rm", "-f", "source"]).ok();
}

#[test]
fn onbuild_triggers_run_in_the_child_build() {
    let berthd = Berthd::start();
    let parent =
        context("FROM busybox\nONBUILD RUN echo triggered > /t\nONBUILD ENV FROM_TRIGGER=1\n");
    docker_build(&berthd, &["build", "-t", "parent:1", path(parent.path())]).ok();
    let child = context("FROM parent:1\nCMD cat /t\n");
    let out = docker_build(&berthd, &["build", "-t", "child:1", path(child.path())]).ok();
    assert!(
        out.stdout.contains("# Executing 2 build triggers\n"),
        "{}",
        out.stdout
    );
    let run = berthd.docker(&["run", "--rm", "child:1"]).ok();
    assert_eq!(run.stdout, "triggered\n");
    let inspect = |format: &str| {
        berthd
            .docker(&["image", "inspect", "-f", format, "child:1"])
            .ok()
            .stdout
            .trim()
            .to_string()
    };
    assert!(inspect("{{json .Config.Env}}").contains("FROM_TRIGGER=1"));
    assert_eq!(inspect("{{json .Config.OnBuild}}"), "null");
}

/// A tar with one entry of any name (even ones `tar::Builder` refuses).
fn raw_tar(name: &str, data: &[u8]) -> Vec<u8> {
    let mut header = tar::Header::new_old();
    header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(1);
    header.set_cksum();
    let mut out = header.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.extend(std::iter::repeat_n(0u8, (512 - data.len() % 512) % 512));
    out.extend([0u8; 1024]);
    out
}

#[test]
fn add_extracts_a_local_tar_and_refuses_one_that_escapes() {
    let berthd = Berthd::start();
    let ctx = context("FROM busybox\nADD app.tar /opt/app/\nCMD cat /opt/app/inside.txt\n");
    fs::write(
        ctx.path().join("app.tar"),
        raw_tar("inside.txt", b"from the tar\n"),
    )
    .expect("write");
    docker_build(&berthd, &["build", "-t", "added:1", path(ctx.path())]).ok();
    let run = berthd.docker(&["run", "--rm", "added:1"]).ok();
    assert_eq!(run.stdout, "from the tar\n");

    for name in ["../evil.txt", "/evil.txt"] {
        let ctx = context("FROM busybox\nADD bad.tar /opt/\n");
        fs::write(ctx.path().join("bad.tar"), raw_tar(name, b"evil\n")).expect("write");
        docker_build(&berthd, &["build", "-t", "never:1", path(ctx.path())])
            .fails_with(1, "leaves the destination");
    }
    berthd.docker(&["version"]).ok();
    no_build_left(&berthd);
}
