//! CRI image volumes (KEP-4639) through berth-supervisord: a container
//! mounts a second image read-only (by reference, by id, with a sub path),
//! sees its files, cannot write them, keeps them across a `kill -9` of the
//! daemon and a removal of the image's names, and leaves no mount, view
//! snapshot or directory once removed; bad image mounts are refused and
//! leave nothing. The daemon runs in the fixture's network namespace, so
//! the images are imported into `k8s.io` with `berth-ctr images import`
//! (as kubelet's pull would leave them): the three-layer test busybox as
//! the container's image (and an overlay-mounted volume) and a one-layer
//! image made here (a bound volume).

use std::path::Path;
use std::process::Command;

use berth_proto::cri::v1 as cri;
use berth_proto::cri::v1::runtime_service_client::RuntimeServiceClient;
use integration_tests::cri::{PodOptions, PodSupervisor};
use integration_tests::images::{self, sha256_file};
use integration_tests::supervisor::{ctr_binary, runtime};
use serde_json::{json, Value};

const IMAGE: &str = "docker.io/library/busybox:latest";
const VOL: &str = "docker.io/library/vol:1";
const HELLO: &str = "hello from the volume\n";

fn ctr(sup: &PodSupervisor, args: &[&str]) -> String {
    let out = Command::new(ctr_binary())
        .arg("--address")
        .arg(sup.socket())
        .args(["-n", "k8s.io"])
        .args(args)
        .env("DOCKER_CONFIG", sup.dir().join("no-docker-config"))
        .output()
        .expect("run berth-ctr");
    assert!(
        out.status.success(),
        "berth-ctr {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A docker archive of one layer: `hello.txt`, `dir/inner.txt` and
/// `escape`, a symlink to the host's `/etc`.
fn vol_archive(dir: &Path) -> std::path::PathBuf {
    let tree = dir.join("vol-tree");
    std::fs::create_dir_all(tree.join("rootfs/dir")).expect("mkdir");
    std::fs::write(tree.join("rootfs/hello.txt"), HELLO).expect("write");
    std::fs::write(tree.join("rootfs/dir/inner.txt"), "inner\n").expect("write");
    std::os::unix::fs::symlink("/etc", tree.join("rootfs/escape")).expect("symlink");
    let tar = |args: &[&str]| {
        let st = Command::new("tar").args(args).status().expect("run tar");
        assert!(st.success(), "tar {args:?}");
    };
    let layer = tree.join("layer.tar");
    tar(&[
        "-C",
        &tree.join("rootfs").display().to_string(),
        "--owner=0",
        "--group=0",
        "-cf",
        &layer.display().to_string(),
        ".",
    ]);
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let config = json!({
        "architecture": arch, "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [sha256_file(&layer)]}
    });
    std::fs::write(tree.join("config.json"), config.to_string()).expect("write");
    let manifest = json!([{"Config": "config.json", "RepoTags": [VOL], "Layers": ["layer.tar"]}]);
    std::fs::write(tree.join("manifest.json"), manifest.to_string()).expect("write");
    let archive = dir.join("vol.tar");
    tar(&[
        "-C",
        &tree.display().to_string(),
        "-cf",
        &archive.display().to_string(),
        "manifest.json",
        "config.json",
        "layer.tar",
    ]);
    archive
}

/// A daemon with [`IMAGE`] and [`VOL`]; their ids.
fn start() -> (PodSupervisor, String, String) {
    let sup = PodSupervisor::start(PodOptions::default());
    let busybox = sup.dir().join("busybox.tar");
    images::docker_archive(&images::image_set().layered_ref(), &busybox, IMAGE);
    ctr(&sup, &["images", "import", &busybox.display().to_string()]);
    let vol = vol_archive(sup.dir());
    ctr(&sup, &["images", "import", &vol.display().to_string()]);
    let id = |name: &str| {
        let out = sup.crictl_ok(&["inspecti", "-o", "json", name]);
        let v: Value = serde_json::from_str(&out).expect("inspecti JSON");
        v["status"]["id"].as_str().expect("image id").to_string()
    };
    let (image_id, vol_id) = (id(IMAGE), id(VOL));
    assert_ne!(image_id, vol_id);
    (sup, image_id, vol_id)
}

fn pod(sup: &PodSupervisor, name: &str) -> (String, cri::PodSandboxConfig) {
    let config = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        log_directory: sup.dir().join("logs").display().to_string(),
        linux: Some(Default::default()),
        ..Default::default()
    };
    let id = runtime().block_on(async {
        let mut client = RuntimeServiceClient::new(sup.channel().await);
        client
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .expect("RunPodSandbox")
            .into_inner()
            .pod_sandbox_id
    });
    (id, config)
}

fn image_mount(path: &str, image: &str, sub: &str) -> cri::Mount {
    cri::Mount {
        container_path: path.into(),
        readonly: true,
        image: Some(cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        image_sub_path: sub.into(),
        ..Default::default()
    }
}

fn container(name: &str, mounts: Vec<cri::Mount>) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: IMAGE.into(),
            ..Default::default()
        }),
        command: vec![
            "/bin/sh".into(),
            "-c".into(),
            "while true; do sleep 1; done".into(),
        ],
        mounts,
        linux: Some(Default::default()),
        ..Default::default()
    }
}

fn create(
    sup: &PodSupervisor,
    pod: &(String, cri::PodSandboxConfig),
    config: cri::ContainerConfig,
) -> Result<String, tonic::Status> {
    runtime().block_on(async {
        let mut client = RuntimeServiceClient::new(sup.channel().await);
        client
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod.0.clone(),
                config: Some(config),
                sandbox_config: Some(pod.1.clone()),
            })
            .await
            .map(|r| r.into_inner().container_id)
    })
}

fn status(sup: &PodSupervisor, id: &str) -> cri::ContainerStatus {
    runtime().block_on(async {
        let mut client = RuntimeServiceClient::new(sup.channel().await);
        client
            .container_status(cri::ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })
            .await
            .expect("ContainerStatus")
            .into_inner()
            .status
            .expect("a status")
    })
}

/// ExecSync: (success, stdout, stderr).
fn exec(sup: &PodSupervisor, id: &str, cmd: &[&str]) -> (bool, String, String) {
    runtime().block_on(async {
        let mut client = RuntimeServiceClient::new(sup.channel().await);
        let r = client
            .exec_sync(cri::ExecSyncRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout: 30,
            })
            .await
            .unwrap_or_else(|e| panic!("ExecSync {cmd:?} in {id}: {e:?}"))
            .into_inner();
        (
            r.exit_code == 0,
            String::from_utf8_lossy(&r.stdout).into_owned(),
            String::from_utf8_lossy(&r.stderr).into_owned(),
        )
    })
}

fn cat(sup: &PodSupervisor, id: &str, path: &str) -> String {
    let (ok, out, err) = exec(sup, id, &["cat", path]);
    assert!(ok, "cat {path} in {id}: {err}\n{}", sup.log_tail());
    out
}

/// The daemon's image-volume mounts, view snapshots and directories.
fn volume_traces(sup: &PodSupervisor) -> (Vec<String>, Vec<String>, Vec<String>) {
    let mounts = sup
        .mounts()
        .into_iter()
        .filter(|m| m.contains("/image-volumes/"))
        .collect();
    let views = ctr(sup, &["snapshots", "ls"])
        .lines()
        .filter(|l| l.starts_with("cri-image-volume/"))
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .collect();
    let dirs = std::fs::read_dir(sup.state().join("cri/image-volumes"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().display().to_string())
        .collect();
    (mounts, views, dirs)
}

#[test]
fn an_image_volume_is_read_only_survives_a_kill_9_and_goes_with_its_container() {
    let (mut sup, image_id, vol_id) = start();
    let pod = pod(&sup, "vols");
    // /vol: the one-layer image by reference (a bind of its layer);
    // /layers: the three-layer image by id, its etc/berth-test only (an
    // overlay of its layers).
    let mounts = vec![
        image_mount("/vol", VOL, ""),
        image_mount("/layers", &image_id, "etc/berth-test"),
    ];
    let a = create(&sup, &pod, container("a", mounts.clone())).expect("create a");
    let b = create(&sup, &pod, container("b", mounts)).expect("create b");
    sup.crictl_ok(&["start", &a]);

    assert_eq!(cat(&sup, &a, "/vol/hello.txt"), HELLO);
    assert_eq!(cat(&sup, &a, "/vol/dir/inner.txt"), "inner\n");
    // The layers merged: layer 3's file, layer 1's, and layer 2's
    // whiteout of gone.txt.
    assert_eq!(cat(&sup, &a, "/layers/layer3.txt"), "layer3\n");
    assert_eq!(cat(&sup, &a, "/layers/a.txt"), "alpha\n");
    assert!(!exec(&sup, &a, &["test", "-e", "/layers/gone.txt"]).0);
    assert!(!exec(&sup, &a, &["test", "-e", "/layers/etc"]).0);
    for path in ["/vol/new", "/vol/hello.txt", "/layers/a.txt"] {
        let (ok, _, err) = exec(&sup, &a, &["sh", "-c", &format!("echo x > {path}")]);
        assert!(!ok, "{path} was written");
        assert!(err.contains("Read-only file system"), "{path}: {err}");
    }
    assert_eq!(cat(&sup, &a, "/vol/hello.txt"), HELLO);

    // ContainerStatus names each image volume's image id.
    let st = status(&sup, &a);
    let refs: Vec<(String, String)> = st
        .mounts
        .iter()
        .filter_map(|m| {
            m.image
                .as_ref()
                .map(|i| (m.container_path.clone(), i.image_ref.clone()))
        })
        .collect();
    assert_eq!(
        refs,
        vec![
            ("/vol".to_string(), vol_id.clone()),
            ("/layers".to_string(), image_id.clone())
        ]
    );

    let (mounts, views, dirs) = volume_traces(&sup);
    assert_eq!(mounts.len(), 4, "{mounts:?}");
    assert_eq!(views.len(), 4, "{views:?}");
    assert_eq!(dirs.len(), 2, "{dirs:?}");
    for id in [&a, &b] {
        for i in 0..2 {
            assert!(
                views.contains(&format!("cri-image-volume/{id}/{i}")),
                "{views:?}"
            );
        }
    }

    // The image's names go (RemoveImage collects garbage); the volume's
    // view keeps its layer.
    sup.crictl_ok(&["rmi", VOL]);
    let images = sup.crictl_ok(&["images", "-o", "json"]);
    assert!(!images.contains(VOL), "{images}");
    assert_eq!(cat(&sup, &a, "/vol/hello.txt"), HELLO);

    // A crash, and b's mounts lost as a reboot loses them: b still starts,
    // its volumes mounted again.
    sup.kill9();
    let b_dir = sup.state().join("cri/image-volumes").join(&b);
    for i in 0..2 {
        let st = Command::new("umount")
            .arg(b_dir.join(i.to_string()))
            .status()
            .expect("umount");
        assert!(st.success());
    }
    std::fs::remove_dir_all(&b_dir).expect("remove b's volume directory");
    sup.start_again();
    assert_eq!(cat(&sup, &a, "/vol/hello.txt"), HELLO);
    sup.crictl_ok(&["start", &b]);
    assert_eq!(cat(&sup, &b, "/vol/hello.txt"), HELLO);
    assert_eq!(cat(&sup, &b, "/layers/layer3.txt"), "layer3\n");
    assert!(!exec(&sup, &b, &["touch", "/vol/x"]).0);

    sup.crictl_ok(&["rm", "-f", &a]);
    let (mounts, views, _) = volume_traces(&sup);
    assert_eq!(mounts.len(), 2, "{mounts:?}");
    assert!(mounts.iter().all(|m| m.contains(&b)), "{mounts:?}");
    assert!(views.iter().all(|v| v.contains(&b)), "{views:?}");
    sup.crictl_ok(&["rm", "-f", &b]);
    let (mounts, views, dirs) = volume_traces(&sup);
    assert!(mounts.is_empty(), "{mounts:?}");
    assert!(views.is_empty(), "{views:?}");
    assert!(dirs.is_empty(), "{dirs:?}");
    sup.crictl_ok(&["rmp", "-f", &pod.0]);
}

#[test]
fn bad_image_volumes_are_refused_and_leave_nothing() {
    let (sup, image_id, _) = start();
    let pod = pod(&sup, "bad");
    let refused = |mounts: Vec<cri::Mount>| {
        create(&sup, &pod, container("c", mounts)).expect_err("a bad image volume was accepted")
    };

    let e = refused(vec![image_mount("/vol", "docker.io/library/nope:1", "")]);
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    assert!(
        e.message()
            .contains("failed to resolve image \"docker.io/library/nope:1\": not found"),
        "{e:?}"
    );
    // The first volume mounted, the second missing: the first is undone.
    let e = refused(vec![
        image_mount("/vol", VOL, ""),
        image_mount("/more", "sha256:0123456789abcdef", ""),
    ]);
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");

    let mut writable = image_mount("/vol", VOL, "");
    writable.readonly = false;
    let e = refused(vec![writable]);
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("readonly must be true"), "{e:?}");

    let mut both = image_mount("/vol", VOL, "");
    both.host_path = "/tmp".into();
    let e = refused(vec![both]);
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");

    for (sub, why) in [
        ("missing", "does not exist in the image"),
        ("../..", "must be relative"),
        ("/etc", "must be relative"),
        ("escape", "leads out of the image"),
        ("hello.txt/x", ""),
    ] {
        let e = refused(vec![
            image_mount("/layers", &image_id, ""),
            image_mount("/vol", VOL, sub),
        ]);
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{sub}: {e:?}");
        assert!(e.message().contains(why), "{sub}: {e:?}");
    }

    let (mounts, views, dirs) = volume_traces(&sup);
    assert!(mounts.is_empty(), "{mounts:?}");
    assert!(views.is_empty(), "{views:?}");
    assert!(dirs.is_empty(), "{dirs:?}");
    let ps = sup.crictl_ok(&["ps", "-a", "-q"]);
    assert!(ps.trim().is_empty(), "{ps}");
    // The daemon still serves: a good volume works after all that.
    let id = create(
        &sup,
        &pod,
        container("good", vec![image_mount("/vol", VOL, "dir")]),
    )
    .expect("create");
    sup.crictl_ok(&["start", &id]);
    assert_eq!(cat(&sup, &id, "/vol/inner.txt"), "inner\n");
    sup.crictl_ok(&["rmp", "-f", &pod.0]);
    let (mounts, views, dirs) = volume_traces(&sup);
    assert!(mounts.is_empty() && views.is_empty() && dirs.is_empty());
}
