//! Images through berthd with the real docker CLI: pull from the test
//! registry (open, and behind htpasswd with `docker login`), images,
//! inspect, tag, push, history, rmi, save and load, import, prune.
//!
//! Each test starts its own berthd (and the supervisor it manages) on a
//! temporary data root, exec root and socket; dropping the fixture stops it
//! (SIGTERM, then SIGKILL) and removes the tree.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use integration_tests::images::{image_set, push};
use integration_tests::registry::{require_program, run_with_timeout, Auth, Registry};
use integration_tests::{build_binary, require_root, wait_until};

const DOCKER: &str = "/usr/local/bin/docker";
const DOCKER_TIMEOUT: Duration = Duration::from_secs(120);

/// berthd on a private tree, with a docker config directory of its own.
struct Berthd {
    child: Child,
    dir: tempfile::TempDir,
}

impl Berthd {
    fn start() -> Berthd {
        require_root();
        assert!(
            Path::new(DOCKER).exists(),
            "the docker CLI 28 is expected at {DOCKER}"
        );
        let dir = tempfile::tempdir().expect("temporary directory");
        fs::create_dir_all(dir.path().join("docker-config")).expect("docker config directory");
        let socket = dir.path().join("berth.sock");
        let log = fs::File::create(dir.path().join("berthd.log")).expect("berthd log file");
        let child = Command::new(build_binary("BERTHD", "berthd"))
            // In the host's network namespace: no networking set up.
            .args(["--bridge", "none"])
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .arg("--data-root")
            .arg(dir.path().join("data"))
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start berthd");
        let berthd = Berthd { child, dir };
        wait_until("berthd's socket", Duration::from_secs(30), || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        });
        berthd
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("berth.sock")
    }

    fn docker_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(DOCKER);
        cmd.env("DOCKER_HOST", format!("unix://{}", self.socket().display()))
            .env("DOCKER_CONFIG", self.dir.path().join("docker-config"))
            .env_remove("DOCKER_CONTEXT")
            .args(args);
        cmd
    }

    /// Runs `docker ARGS`; its output, whatever its status.
    #[track_caller]
    fn docker(&self, args: &[&str]) -> Output {
        run_with_timeout(self.docker_command(args), DOCKER_TIMEOUT)
    }

    /// Runs `docker ARGS`, which must succeed; its stdout.
    #[track_caller]
    fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed ({}):\nstdout: {}\nstderr: {}\nberthd log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.path().join("berthd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Berthd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("berthd log:\n{}", self.log_tail());
        }
        let pid = self.child.id() as i32;
        // SAFETY: kill has no memory effects; the pid is our own child's.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                _ if std::time::Instant::now() > deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn pull_inspect_tag_push_save_load_and_remove() {
    require_program("docker-registry", "docker-registry");
    let set = image_set();
    let registry = Registry::start(Auth::None);
    push(&set.layered_ref(), &registry, "busybox:latest");
    let berthd = Berthd::start();
    let image = format!("{}/busybox:latest", registry.host());

    let out = berthd.docker_ok(&["pull", &image]);
    assert!(out.contains("latest: Pulling from busybox"), "{out}");
    assert!(out.contains("Pull complete"), "{out}");
    assert!(
        out.contains(&format!("Digest: {}", set.layered.manifest.digest)),
        "{out}"
    );
    assert!(
        out.contains(&format!("Status: Downloaded newer image for {image}")),
        "{out}"
    );
    let again = berthd.docker_ok(&["pull", &image]);
    assert!(
        again.contains(&format!("Status: Image is up to date for {image}")),
        "{again}"
    );

    // Listed and inspected as Docker shows them.
    let listed = berthd.docker_ok(&["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]);
    let config = &set.layered.config.digest;
    let short = &config["sha256:".len().."sha256:".len() + 12];
    assert_eq!(listed.trim(), format!("{image} {short}"));
    let id = berthd.docker_ok(&["inspect", "-f", "{{.Id}}", &image]);
    assert_eq!(id.trim(), config);
    for name in [short, &config["sha256:".len()..], config.as_str()] {
        let os = berthd.docker_ok(&["image", "inspect", "-f", "{{.Os}}/{{.Architecture}}", name]);
        assert_eq!(os.trim(), "linux/amd64", "{name}");
    }
    let layers = berthd.docker_ok(&[
        "inspect",
        "-f",
        "{{len .RootFS.Layers}} {{.RootFS.Type}}",
        &image,
    ]);
    assert_eq!(layers.trim(), "3 layers");
    let digests = berthd.docker_ok(&["inspect", "-f", "{{json .RepoDigests}}", &image]);
    assert!(digests.contains(&set.layered.manifest.digest), "{digests}");
    let history = berthd.docker_ok(&["history", "-q", &image]);
    assert_eq!(history.lines().next(), Some(short), "{history}");

    // A container uses it: rmi refuses, as dockerd does.
    berthd.docker_ok(&["create", "--name", "user", &image, "true"]);
    let out = berthd.docker(&["rmi", &image]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!(
            "conflict: unable to remove repository reference \"{image}\" (must force) - container"
        )),
        "{}",
        stderr(&out)
    );
    let out = berthd.docker(&["rmi", short]);
    assert!(
        stderr(&out).contains("image is being used by stopped container"),
        "{}",
        stderr(&out)
    );
    berthd.docker_ok(&["rm", "user"]);

    // Tag and push under another name; read back from the registry.
    let copy = format!("{}/copy:v1", registry.host());
    berthd.docker_ok(&["tag", &image, &copy]);
    let out = berthd.docker_ok(&["push", &copy]);
    assert!(
        out.contains(&format!(
            "The push refers to repository [{}/copy]",
            registry.host()
        )),
        "{out}"
    );
    assert!(out.contains("v1: digest: sha256:"), "{out}");
    let pulled_again = berthd.docker_ok(&["pull", &copy]);
    assert!(
        pulled_again.contains("Image is up to date"),
        "{pulled_again}"
    );

    // Two names: rmi untags one.
    let out = berthd.docker_ok(&["rmi", &copy]);
    assert_eq!(out.trim(), format!("Untagged: {copy}"));
    let out = berthd.docker(&["rmi", "nothing-here:1"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("No such image"), "{}", stderr(&out));

    // Save, remove, load: the same id back.
    let tarball = berthd.path("saved.tar");
    berthd.docker_ok(&["save", "-o", tarball.to_str().unwrap(), &image]);
    assert!(fs::metadata(&tarball).unwrap().len() > 1024);
    let out = berthd.docker_ok(&["rmi", &image]);
    assert!(out.contains(&format!("Untagged: {image}")), "{out}");
    assert!(out.contains(&format!("Deleted: {config}")), "{out}");
    assert_eq!(berthd.docker_ok(&["images", "-q"]).trim(), "");
    let out = berthd.docker_ok(&["load", "-i", tarball.to_str().unwrap()]);
    assert!(out.contains(&format!("Loaded image: {image}")), "{out}");
    let id = berthd.docker_ok(&["inspect", "-f", "{{.Id}}", &image]);
    assert_eq!(id.trim(), config);

    // Saved by its id, an image travels without its names, as with dockerd.
    let by_id = berthd.path("by-id.tar");
    berthd.docker_ok(&["save", "-o", by_id.to_str().unwrap(), config]);
    let listed = std::process::Command::new("tar")
        .arg("-xOf")
        .arg(&by_id)
        .arg("manifest.json")
        .output()
        .unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(
        manifest[0]["RepoTags"],
        serde_json::Value::Null,
        "{manifest}"
    );
    let out = berthd.docker_ok(&["load", "-i", by_id.to_str().unwrap()]);
    assert_eq!(out.trim(), format!("Loaded image ID: {config}"));

    let out = berthd.docker(&["push", &format!("{}/absent:1", registry.host())]);
    assert!(
        stderr(&out).contains("An image does not exist locally with the tag"),
        "{}",
        stderr(&out)
    );

    // What happened, as `docker events` reports it.
    let events = berthd.docker_ok(&[
        "events",
        "--since",
        "1",
        "--until",
        &format!(
            "{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + 1
        ),
        "--filter",
        "type=image",
        "--format",
        "{{.Action}}",
    ]);
    for action in ["pull", "tag", "push", "untag", "delete", "save", "load"] {
        assert!(
            events.lines().any(|l| l == action),
            "no {action} event in:\n{events}"
        );
    }

    // Prune leaves tagged images.
    let out = berthd.docker_ok(&["image", "prune", "-f"]);
    assert!(out.contains("Total reclaimed space"), "{out}");
    assert!(berthd.docker_ok(&["images", "-q"]).contains(short));
}

#[test]
fn import_a_root_filesystem_tarball() {
    let berthd = Berthd::start();
    let root = berthd.path("rootfs");
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/hello"), "hello\n").unwrap();
    let tarball = berthd.path("rootfs.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    let out = berthd.docker_ok(&[
        "import",
        "--change",
        "CMD [\"/bin/sh\"]",
        "-m",
        "imported",
        tarball.to_str().unwrap(),
        "imported:1",
    ]);
    let id = out.trim();
    assert!(id.starts_with("sha256:"), "{out}");
    let cmd = berthd.docker_ok(&[
        "inspect",
        "-f",
        "{{json .Config.Cmd}} {{.Comment}} {{.Id}}",
        "imported:1",
    ]);
    assert_eq!(cmd.trim(), format!("[\"/bin/sh\"] imported {id}"));
    let out = berthd.docker_ok(&["rmi", "imported:1"]);
    assert!(out.contains("Deleted: sha256:"), "{out}");
}

#[test]
fn login_and_pull_from_a_registry_with_htpasswd() {
    require_program("docker-registry", "docker-registry");
    let set = image_set();
    let registry = Registry::start(Auth::basic("berth", "s3cret"));
    push(&set.layered_ref(), &registry, "private:1");
    let berthd = Berthd::start();
    let image = format!("{}/private:1", registry.host());

    let out = berthd.docker(&["pull", &image]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("pull access denied"),
        "{}",
        stderr(&out)
    );

    let out = berthd.docker(&["login", "-u", "berth", "-p", "wrong", &registry.host()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("401 Unauthorized"),
        "{}",
        stderr(&out)
    );

    let out = berthd.docker_ok(&["login", "-u", "berth", "-p", "s3cret", &registry.host()]);
    assert!(out.contains("Login Succeeded"), "{out}");
    let out = berthd.docker_ok(&["pull", &image]);
    assert!(out.contains("Downloaded newer image"), "{out}");
    let pushed = format!("{}/private:2", registry.host());
    berthd.docker_ok(&["tag", &image, &pushed]);
    let out = berthd.docker_ok(&["push", &pushed]);
    assert!(out.contains("2: digest: sha256:"), "{out}");
    berthd.docker_ok(&["logout", &registry.host()]);
}

#[test]
fn login_and_pull_from_a_registry_with_bearer_tokens() {
    require_program("docker-registry", "docker-registry");
    let set = image_set();
    let registry = Registry::start(Auth::token("berth", "t0ken-pw"));
    push(&set.layered_ref(), &registry, "tokened:1");
    let berthd = Berthd::start();
    let image = format!("{}/tokened:1", registry.host());

    let out = berthd.docker(&["login", "-u", "berth", "-p", "nope", &registry.host()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("401 Unauthorized"),
        "{}",
        stderr(&out)
    );
    let out = berthd.docker_ok(&["login", "-u", "berth", "-p", "t0ken-pw", &registry.host()]);
    assert!(out.contains("Login Succeeded"), "{out}");
    let out = berthd.docker_ok(&["pull", &image]);
    assert!(out.contains("Downloaded newer image"), "{out}");
}
