//! berth-supervisord's CRI image service, driven by the real `crictl` and
//! by raw gRPC calls: a local `docker-registry` serves the test image as
//! `pause:3.9` and `library/busybox:latest`, and hosts.toml files make it
//! the mirror and server of `registry.k8s.io` and `docker.io` (behind a
//! dead mirror the pulls move on from), so the pulls below name those
//! registries and never leave the machine.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use berth_proto::cri::v1 as cri;
use berth_proto::cri::v1::image_service_client::ImageServiceClient;
use berth_proto::cri::v1::runtime_service_client::RuntimeServiceClient;
use integration_tests::build_dir;
use integration_tests::registry::{run_with_timeout, Auth, Registry};
use integration_tests::supervisor::{push_layered, runtime, Supervisor};

/// A prebuilt tool from ../shared/tools, unpacked once into target/tools.
fn tool(name: &str) -> PathBuf {
    let dir = build_dir().join("../tools");
    let path = dir.join(name);
    if !path.exists() {
        let packed = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/tools")
            .join(format!("{name}.xz"));
        assert!(packed.exists(), "{} is missing", packed.display());
        std::fs::create_dir_all(&dir).expect("mkdir target/tools");
        let tmp = dir.join(format!("{name}.{}", std::process::id()));
        let out = std::fs::File::create(&tmp).expect("create tool");
        let status = Command::new("xz")
            .arg("-dc")
            .arg(&packed)
            .stdout(out)
            .status()
            .expect("run xz");
        assert!(status.success(), "unpack {}", packed.display());
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::rename(&tmp, &path).expect("install tool");
    }
    path
}

/// The mirror configuration for a registry: a dead mirror first (the pull
/// moves on from it), then the local registry as mirror and as server, so
/// nothing is ever asked of the real registry.
fn hosts_toml(mirror: &str) -> String {
    format!(
        "server = \"http://{mirror}\"\n\n\
         [host.\"http://127.0.0.1:1\"]\n  capabilities = [\"pull\", \"resolve\"]\n\n\
         [host.\"http://{mirror}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
    )
}

struct Setup {
    registry: Registry,
    sup: Supervisor,
    /// The pushed image's config digest: its CRI id.
    id: String,
}

fn setup() -> Setup {
    let registry = Registry::start(Auth::None);
    let image = push_layered(&registry, "pause:3.9");
    push_layered(&registry, "library/busybox:latest");
    let mirror = registry.host();
    let sup = Supervisor::start_with_hosts(&[
        ("registry.k8s.io", hosts_toml(&mirror)),
        ("docker.io", hosts_toml(&mirror)),
    ]);
    integration_tests::wait_until("the CRI socket", Duration::from_secs(10), || {
        std::os::unix::net::UnixStream::connect(sup.cri_socket()).is_ok()
    });
    Setup {
        id: image.config.digest.clone(),
        registry,
        sup,
    }
}

fn crictl(sup: &Supervisor, args: &[&str]) -> std::process::Output {
    let endpoint = format!("unix://{}", sup.cri_socket().display());
    // Its own config file: never the host's /etc/crictl.yaml.
    let config = sup.dir().join("crictl.yaml");
    std::fs::write(
        &config,
        format!("runtime-endpoint: {endpoint}\nimage-endpoint: {endpoint}\n"),
    )
    .expect("write crictl.yaml");
    let mut cmd = Command::new(tool("crictl"));
    cmd.arg("--config")
        .arg(&config)
        .args([
            "--runtime-endpoint",
            &endpoint,
            "--image-endpoint",
            &endpoint,
        ])
        .args(["--timeout", "60s"])
        .args(args);
    run_with_timeout(cmd, Duration::from_secs(120))
}

/// crictl's stdout, asserting success.
fn crictl_ok(sup: &Supervisor, args: &[&str]) -> String {
    let out = crictl(sup, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "crictl {args:?} failed:\nstdout: {stdout}\nstderr: {}\nsupervisor log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        sup.log()
    );
    stdout
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

#[test]
fn crictl_version_info_and_images_through_a_hosts_toml_mirror() {
    let s = setup();
    let sup = &s.sup;

    let version = crictl_ok(sup, &["version"]);
    assert!(version.contains("RuntimeName:  berth"), "{version}");
    assert!(version.contains("RuntimeApiVersion:  v1"), "{version}");

    let info = json(&crictl_ok(sup, &["info", "-o", "json"]));
    let conditions = info["status"]["conditions"].as_array().expect("conditions");
    let ready = |t: &str| {
        conditions
            .iter()
            .find(|c| c["type"] == t)
            .unwrap_or_else(|| panic!("no {t} in {info}"))["status"]
            .as_bool()
    };
    assert_eq!(ready("RuntimeReady"), Some(true));
    assert_eq!(ready("NetworkReady"), Some(false));

    // registry.k8s.io, through the mirror.
    let pulled = crictl_ok(sup, &["pull", "registry.k8s.io/pause:3.9"]);
    assert!(pulled.contains(&s.id), "{pulled}");
    // It moved on from the dead mirror (the daemon logs at debug level).
    let log = sup.log();
    assert!(
        log.contains("trying the next host") && log.contains("127.0.0.1:1"),
        "{log}"
    );
    // docker.io's short names, normalised as kubelet does.
    let pulled = crictl_ok(sup, &["pull", "busybox"]);
    assert!(pulled.contains(&s.id), "{pulled}");

    let listed = json(&crictl_ok(sup, &["images", "-o", "json"]));
    let images = listed["images"].as_array().expect("images");
    assert_eq!(images.len(), 1, "one config, two names: {listed}");
    let image = &images[0];
    assert_eq!(image["id"], s.id.as_str());
    let tags: Vec<&str> = image["repoTags"]
        .as_array()
        .expect("repoTags")
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    assert_eq!(
        tags,
        [
            "docker.io/library/busybox:latest",
            "registry.k8s.io/pause:3.9"
        ]
    );
    let digests = image["repoDigests"].as_array().expect("repoDigests");
    assert_eq!(digests.len(), 2, "{image}");
    assert!(
        digests.iter().any(|d| d
            .as_str()
            .is_some_and(|d| d.starts_with("registry.k8s.io/pause@sha256:"))),
        "{image}"
    );
    assert!(image["size"].as_str().and_then(|s| s.parse::<u64>().ok()) > Some(0));

    let table = crictl_ok(sup, &["images"]);
    assert!(
        table.contains("registry.k8s.io/pause") && table.contains("3.9"),
        "{table}"
    );

    // By name, by id, and verbose.
    // (The 13 characters of the id `crictl images` shows find it too.)
    let short = &s.id["sha256:".len().."sha256:".len() + 13];
    for wanted in ["registry.k8s.io/pause:3.9", s.id.as_str(), "busybox", short] {
        let status = json(&crictl_ok(sup, &["inspecti", wanted]));
        assert_eq!(status["status"]["id"], s.id.as_str(), "{wanted}: {status}");
        assert_eq!(
            status["info"]["imageSpec"]["rootfs"]["type"], "layers",
            "{status}"
        );
        assert!(status["info"]["chainID"]
            .as_str()
            .is_some_and(|c| c.starts_with("sha256:")));
    }

    let fs = json(&crictl_ok(sup, &["imagefsinfo", "-o", "json"]));
    let usage = &fs["status"]["imageFilesystems"][0];
    let used: u64 = usage["usedBytes"]["value"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("usedBytes in {fs}"));
    assert!(used > 0, "{fs}");
    assert!(usage["fsId"]["mountpoint"]
        .as_str()
        .is_some_and(|m| m.ends_with("snapshots")));

    // rmi removes the image, every name of it.
    crictl_ok(sup, &["rmi", "registry.k8s.io/pause:3.9"]);
    let listed = json(&crictl_ok(sup, &["images", "-o", "json"]));
    assert_eq!(
        listed["images"].as_array().map(Vec::len),
        Some(0),
        "{listed}"
    );
    drop(s.registry);
}

#[test]
fn raw_calls_answer_with_containerds_codes_and_fields() {
    let s = setup();
    let rt = runtime();
    let (mut images, mut runtime_svc) = rt.block_on(async {
        let channel = berth_client::connect(&s.sup.cri_socket())
            .await
            .expect("connect to the CRI");
        (
            ImageServiceClient::new(channel.clone()),
            RuntimeServiceClient::new(channel),
        )
    });
    let spec = |image: &str| {
        Some(cri::ImageSpec {
            image: image.to_string(),
            ..Default::default()
        })
    };
    rt.block_on(async {
        let v = runtime_svc
            .version(cri::VersionRequest::default())
            .await
            .expect("version")
            .into_inner();
        assert_eq!(
            (v.runtime_name.as_str(), v.runtime_api_version.as_str()),
            ("berth", "v1")
        );
        let config = runtime_svc
            .runtime_config(cri::RuntimeConfigRequest {})
            .await
            .expect("runtime config")
            .into_inner();
        assert_eq!(
            config.linux.map(|l| l.cgroup_driver),
            Some(cri::CgroupDriver::Cgroupfs as i32)
        );
        let e = runtime_svc
            .run_pod_sandbox(cri::RunPodSandboxRequest::default())
            .await
            .expect_err("a sandbox without a config");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("sandbox config"), "{e}");

        // Unknown: an empty answer, not an error.
        let status = images
            .image_status(cri::ImageStatusRequest {
                image: spec("registry.k8s.io/none:1"),
                verbose: false,
            })
            .await
            .expect("status of an unknown image")
            .into_inner();
        assert!(status.image.is_none());

        // A bad reference is the caller's error.
        let e = images
            .pull_image(cri::PullImageRequest {
                image: spec("Not A/Reference"),
                ..Default::default()
            })
            .await
            .expect_err("bad reference");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
        // A missing image is not found, naming it.
        let e = images
            .pull_image(cri::PullImageRequest {
                image: spec("registry.k8s.io/missing:1"),
                ..Default::default()
            })
            .await
            .expect_err("missing image");
        assert_eq!(e.code(), tonic::Code::NotFound, "{e}");
        assert!(e.message().contains("registry.k8s.io/missing:1"), "{e}");

        // Credentials and a sandbox config are accepted (the registry is
        // open, so they are not needed).
        let pulled = images
            .pull_image(cri::PullImageRequest {
                image: spec("registry.k8s.io/pause:3.9"),
                auth: Some(cri::AuthConfig {
                    username: "kubelet".into(),
                    password: "secret".into(),
                    ..Default::default()
                }),
                sandbox_config: Some(cri::PodSandboxConfig::default()),
            })
            .await
            .expect("pull")
            .into_inner();
        assert_eq!(pulled.image_ref, s.id);

        let status = images
            .image_status(cri::ImageStatusRequest {
                image: spec("registry.k8s.io/pause:3.9"),
                verbose: true,
            })
            .await
            .expect("status")
            .into_inner();
        let image = status.image.expect("image");
        assert_eq!(image.id, s.id);
        assert_eq!(image.repo_tags, ["registry.k8s.io/pause:3.9"]);
        assert!(image.size > 0);
        let info = json(status.info.get("info").expect("verbose info"));
        assert!(info["imageSpec"]["rootfs"]["diff_ids"].is_array(), "{info}");

        let listed = images
            .list_images(cri::ListImagesRequest {
                filter: Some(cri::ImageFilter {
                    image: spec("registry.k8s.io/pause:3.9"),
                }),
            })
            .await
            .expect("list")
            .into_inner();
        assert_eq!(listed.images.len(), 1);
        let listed = images
            .list_images(cri::ListImagesRequest {
                filter: Some(cri::ImageFilter {
                    image: spec("docker.io/library/other:1"),
                }),
            })
            .await
            .expect("list")
            .into_inner();
        assert!(listed.images.is_empty());

        // Remove twice: the second is no error.
        for _ in 0..2 {
            images
                .remove_image(cri::RemoveImageRequest { image: spec(&s.id) })
                .await
                .expect("remove");
        }
        let status = images
            .image_status(cri::ImageStatusRequest {
                image: spec(&s.id),
                verbose: false,
            })
            .await
            .expect("status")
            .into_inner();
        assert!(status.image.is_none());
    });
    // The k8s.io namespace is the supervisor's own: its images are there.
    let out = s.sup.ctr_ns("k8s.io", &["images", "ls", "-q"]).ok();
    assert!(!out.stdout.contains("pause"), "{}", out.stdout);
}

/// critest's own image tests against berth (scripts/critest-images.sh
/// builds the images they want and mirrors their registries locally).
/// Every one passes but the digest-pinned pull: its digest names an image
/// on gcr.io that cannot be made offline.
#[test]
fn critest_image_manager() {
    integration_tests::require_root();
    tool("critest");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/critest-images.sh");
    let mut cmd = Command::new(script);
    cmd.env("BERTH_SUPERVISORD", build_dir().join("berth-supervisord"))
        .args(["--ginkgo.no-color"]);
    let out = run_with_timeout(cmd, Duration::from_secs(300));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = format!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let summary = stdout
        .lines()
        .find(|l| l.contains("Passed") && l.contains("Failed"))
        .unwrap_or_else(|| panic!("no summary:\n{report}"));
    assert!(
        summary.contains("9 Passed") && summary.contains("1 Failed"),
        "{summary}\n{report}"
    );
    let failures: Vec<&str> = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("[FAIL]"))
        .collect();
    assert_eq!(failures.len(), 1, "{report}");
    assert!(failures[0].contains("public image with digest"), "{report}");
}

/// A hosts.toml that cannot be used stops the daemon at start with a
/// message naming the file and the problem, before any socket is made.
#[test]
fn a_bad_hosts_toml_stops_the_start() {
    integration_tests::require_root();
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("certs.d/registry.k8s.io");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(
        dir.join("hosts.toml"),
        "[host.\"http://127.0.0.1:5000\"]\n  capabilities = [\"pull\", \"fetch\"]\n",
    )
    .expect("write hosts.toml");
    let mut cmd = Command::new(integration_tests::supervisor::supervisord_binary());
    cmd.arg("--root")
        .arg(tmp.path().join("root"))
        .arg("--state")
        .arg(tmp.path().join("state"))
        .arg("--address")
        .arg(tmp.path().join("supervisor.sock"))
        .arg("--registry-config-dir")
        .arg(tmp.path().join("certs.d"));
    let out = run_with_timeout(cmd, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("certs.d/registry.k8s.io/hosts.toml")
            && stderr.contains("unknown capability \"fetch\""),
        "{stderr}"
    );
    assert!(!tmp.path().join("supervisor.sock").exists());
    assert!(!tmp.path().join("cri.sock").exists());
}
