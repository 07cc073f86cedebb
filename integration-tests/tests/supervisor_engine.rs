//! What the engine needs of the supervisor for `docker logs`, `diff` and
//! `export`, end to end (a real supervisor, shim and runtime on busybox):
//! a container log at the path the task was created with, kept after the
//! task is deleted, appended by the container's next task, rotated, still
//! written after the supervisor restarts, and none at all with `no_log`
//! while attached clients still get the output; a bad log path refused
//! with nothing started. Snapshots.Changes lists what a container added,
//! changed and deleted; Snapshots.Export streams the merged root
//! filesystem, of a running container and of a stopped one, leaving no
//! mount behind. Snapshots.AddPaths makes Docker's init layer, which keeps
//! mount points out of a container's changes; Snapshots.ResolveUser reads
//! a container's users as its files show them. Tasks.Stats carries what
//! `docker stats` reads.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_client::Client;
use berth_proto::containers::v1 as cpb;
use berth_proto::snapshots::v1 as spb;
use berth_proto::tasks::v1 as tpb;
use integration_tests::registry::{Auth, Registry};
use integration_tests::supervisor::{connect, push_layered, runtime, top_chain, Supervisor};
use serde_json::Value;
use tonic::Code;

const DEADLINE: Duration = Duration::from_secs(30);

fn setup(repo: &str, ns: &str) -> (Registry, Supervisor, String) {
    let (registry, sup, image, _) = setup_chain(repo, ns);
    (registry, sup, image)
}

/// `setup`, and the snapshot of the image's top layer.
fn setup_chain(repo: &str, ns: &str) -> (Registry, Supervisor, String, String) {
    let registry = Registry::start(Auth::None);
    let pushed = push_layered(&registry, &format!("{repo}:v1"));
    let sup = Supervisor::start();
    let image = format!("{}/{repo}:v1", registry.host());
    sup.ctr_ns(ns, &["images", "pull", &image]).ok();
    (registry, sup, image, top_chain(pushed))
}

async fn create_container(client: &Client, id: &str, image: &str, script: &str) {
    client
        .containers()
        .create(cpb::CreateContainerRequest {
            id: id.to_string(),
            image: image.to_string(),
            overrides: Some(cpb::Overrides {
                args: vec!["sh".into(), "-c".into(), script.into()],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("create container {id}: {e}"));
}

async fn create_task(client: &Client, req: tpb::CreateTaskRequest) -> Result<u32, tonic::Status> {
    client.tasks().create(req).await.map(|r| r.into_inner().pid)
}

fn logged(id: &str, log: &Path) -> tpb::CreateTaskRequest {
    tpb::CreateTaskRequest {
        container_id: id.to_string(),
        log_path: log.to_string_lossy().into_owned(),
        ..Default::default()
    }
}

async fn start(client: &Client, id: &str) {
    client
        .tasks()
        .start(tpb::StartRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("start {id}: {e}"));
}

async fn wait(client: &Client, id: &str) -> u32 {
    let mut tasks = client.tasks();
    let waited = tasks.wait(tpb::WaitRequest {
        container_id: id.to_string(),
        exec_id: String::new(),
    });
    tokio::time::timeout(DEADLINE, waited)
        .await
        .unwrap_or_else(|_| panic!("{id} did not exit within {DEADLINE:?}"))
        .expect("wait")
        .into_inner()
        .exit_status
}

async fn delete_task(client: &Client, id: &str) {
    client
        .tasks()
        .delete(tpb::DeleteTaskRequest {
            container_id: id.to_string(),
        })
        .await
        .unwrap_or_else(|e| panic!("delete task {id}: {e}"));
}

async fn delete_container(client: &Client, id: &str) {
    client
        .containers()
        .delete(cpb::DeleteContainerRequest { id: id.to_string() })
        .await
        .unwrap_or_else(|e| panic!("delete container {id}: {e}"));
}

/// Runs one task of container `id` to its end, then deletes the task.
async fn run_task(client: &Client, req: tpb::CreateTaskRequest) -> u32 {
    let id = req.container_id.clone();
    create_task(client, req)
        .await
        .unwrap_or_else(|e| panic!("create task {id}: {e}"));
    start(client, &id).await;
    let status = wait(client, &id).await;
    delete_task(client, &id).await;
    status
}

/// The (stream, text) of each entry of a json-file log.
fn entries(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read log {}: {e}", path.display()));
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}"));
            assert!(v["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{v}");
            (
                v["stream"].as_str().expect("stream").to_string(),
                v["log"].as_str().expect("log").to_string(),
            )
        })
        .collect()
}

fn entry(stream: &str, text: &str) -> (String, String) {
    (stream.to_string(), text.to_string())
}

/// The task bundles of `ns` under the supervisor's state.
fn bundles(sup: &Supervisor, ns: &str) -> Vec<String> {
    sup.task_dirs()
        .into_iter()
        .filter(|(n, _)| n == ns)
        .map(|(_, id)| id)
        .collect()
}

#[test]
fn container_logs_go_where_the_task_says() {
    let ns = "engine-logs";
    let (_registry, mut sup, image) = setup("test/engine-logs", ns);
    let logs = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
    let client = connect(&rt, &sup, ns);
    let log = logs.path().join("c1-json.log");

    rt.block_on(async {
        // Bad log paths: refused, nothing started.
        create_container(&client, "c1", &image, "echo one; echo two >&2").await;
        for (path, text) in [
            (PathBuf::from("rel/c1.log"), "absolute"),
            (logs.path().join("missing/c1.log"), "does not exist"),
            (logs.path().to_path_buf(), "is a directory"),
        ] {
            let e = create_task(&client, logged("c1", &path)).await.unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
            assert!(e.message().contains(text), "{e:?}");
            assert!(e.message().contains("log path"), "{e:?}");
        }
        assert!(bundles(&sup, ns).is_empty(), "a refused task left a bundle");

        // The log lands at log_path and outlives the task.
        assert_eq!(run_task(&client, logged("c1", &log)).await, 0);
        let first = entries(&log);
        assert_eq!(first.len(), 2, "{first:?}");
        assert!(first.contains(&entry("stdout", "one\n")), "{first:?}");
        assert!(first.contains(&entry("stderr", "two\n")), "{first:?}");
        // The container's next task appends to it.
        assert_eq!(run_task(&client, logged("c1", &log)).await, 0);
        let both = entries(&log);
        assert_eq!(both.len(), 4, "{both:?}");
        assert_eq!(both[..2], first[..]);
        delete_container(&client, "c1").await;
        assert!(
            log.exists(),
            "the container's delete removes nothing of the engine's"
        );

        // Rotation: at most 3 files of at most 400 bytes.
        let rot = logs.path().join("rot.log");
        create_container(
            &client,
            "rot",
            &image,
            "i=0; while [ $i -lt 60 ]; do echo line $i; i=$((i+1)); done",
        )
        .await;
        let mut req = logged("rot", &rot);
        req.log_max_size = 400;
        req.log_max_files = 3;
        assert_eq!(run_task(&client, req).await, 0);
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", rot.display()));
        for path in [rot.clone(), numbered(1), numbered(2)] {
            let size = std::fs::metadata(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
                .len();
            assert!(size > 0 && size <= 400, "{}: {size} bytes", path.display());
        }
        assert!(!numbered(3).exists(), "more than 3 files kept");
        let last = entries(&rot);
        assert_eq!(last.last(), Some(&entry("stdout", "line 59\n")));
        // The newest entries, in order, across the files.
        let mut kept: Vec<(String, String)> = entries(&numbered(2));
        kept.extend(entries(&numbered(1)));
        kept.extend(last);
        let first_kept: usize = kept[0].1.trim()["line ".len()..].parse().expect("n");
        let want: Vec<_> = (first_kept..60)
            .map(|i| entry("stdout", &format!("line {i}\n")))
            .collect();
        assert_eq!(kept, want);
        delete_container(&client, "rot").await;

        // no_log: no file anywhere, but an attached client gets the output.
        let quiet = logs.path().join("quiet.log");
        create_container(&client, "quiet", &image, "echo hello; echo oops >&2").await;
        let mut req = logged("quiet", &quiet);
        req.no_log = true;
        create_task(&client, req).await.expect("create quiet");
        let output = attach(&client, "quiet").await;
        start(&client, "quiet").await;
        assert_eq!(wait(&client, "quiet").await, 0);
        let (out, err) = tokio::time::timeout(DEADLINE, output)
            .await
            .expect("attach ends")
            .expect("attach task");
        assert_eq!(
            (out.as_slice(), err.as_slice()),
            (&b"hello\n"[..], &b"oops\n"[..])
        );
        let bundle = sup.dir().join("state/shims").join(ns).join("quiet");
        assert!(
            !bundle.join("log.json").exists(),
            "no_log wrote the default log"
        );
        assert!(!quiet.exists(), "no_log wrote log_path");
        delete_task(&client, "quiet").await;
        delete_container(&client, "quiet").await;

        // Without log_path, the shim's directory as before.
        create_container(&client, "plain", &image, "echo plain").await;
        create_task(
            &client,
            tpb::CreateTaskRequest {
                container_id: "plain".into(),
                ..Default::default()
            },
        )
        .await
        .expect("create plain");
        start(&client, "plain").await;
        assert_eq!(wait(&client, "plain").await, 0);
        let default_log = sup
            .dir()
            .join("state/shims")
            .join(ns)
            .join("plain/log.json");
        assert_eq!(entries(&default_log), vec![entry("stdout", "plain\n")]);
        delete_task(&client, "plain").await;
        delete_container(&client, "plain").await;

        // A task that outlives the supervisor keeps writing to its log.
        create_container(
            &client,
            "kept",
            &image,
            "echo before; while [ ! -e /go ]; do busybox sleep 0.05; done; echo after",
        )
        .await;
        let kept_log = logs.path().join("kept.log");
        create_task(&client, logged("kept", &kept_log))
            .await
            .expect("create kept");
        start(&client, "kept").await;
    });
    drop(client);
    let deadline = Instant::now() + DEADLINE;
    while !log_has(&logs.path().join("kept.log"), "before\n") {
        assert!(Instant::now() < deadline, "no 'before' in the log");
        std::thread::sleep(Duration::from_millis(20));
    }
    sup.kill9();
    sup.start_again();
    let client = connect(&rt, &sup, ns);
    let bundle = sup.dir().join("state/shims").join(ns).join("kept");
    std::fs::write(bundle.join("rootfs/go"), "").expect("touch /go");
    rt.block_on(async {
        assert_eq!(wait(&client, "kept").await, 0);
        delete_task(&client, "kept").await;
        delete_container(&client, "kept").await;
    });
    assert_eq!(
        entries(&logs.path().join("kept.log")),
        vec![entry("stdout", "before\n"), entry("stdout", "after\n")]
    );
    assert!(bundles(&sup, ns).is_empty(), "bundles left");
}

/// Whether the log at `path` has an entry of `text` yet.
fn log_has(path: &Path, text: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|log| {
        log.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|v| v["log"] == text)
    })
}

/// Attaches to the init before it starts; its (stdout, stderr) once it
/// ends.
async fn attach(client: &Client, id: &str) -> tokio::task::JoinHandle<(Vec<u8>, Vec<u8>)> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(tpb::AttachRequest {
        container_id: id.to_string(),
        ..Default::default()
    })
    .await
    .expect("queue");
    let mut stream = client
        .tasks()
        .attach(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("attach")
        .into_inner();
    tokio::spawn(async move {
        let _keep_open = tx;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        while let Some(msg) = stream.message().await.expect("attach stream") {
            match msg.stream {
                2 => err.extend(msg.data),
                _ => out.extend(msg.data),
            }
        }
        (out, err)
    })
}

async fn changes(client: &Client, key: &str) -> Vec<String> {
    let list = client
        .snapshots()
        .changes(spb::ChangesRequest {
            key: key.to_string(),
        })
        .await
        .unwrap_or_else(|e| panic!("changes of {key}: {e}"))
        .into_inner()
        .changes;
    list.iter()
        .map(|c| {
            let letter = match spb::ChangeKind::try_from(c.kind) {
                Ok(spb::ChangeKind::ChangeModified) => 'C',
                Ok(spb::ChangeKind::ChangeAdded) => 'A',
                Ok(spb::ChangeKind::ChangeDeleted) => 'D',
                Err(_) => '?',
            };
            format!("{letter} {}", c.path)
        })
        .collect()
}

/// The regular files of an export's tar with their contents, and every
/// entry's name.
async fn export(client: &Client, key: &str) -> (BTreeMap<String, Vec<u8>>, Vec<String>) {
    let mut stream = client
        .snapshots()
        .export(spb::ExportRequest {
            key: key.to_string(),
        })
        .await
        .unwrap_or_else(|e| panic!("export {key}: {e}"))
        .into_inner();
    let mut tar = Vec::new();
    while let Some(chunk) = stream.message().await.expect("export stream") {
        assert!(chunk.data.len() <= 1 << 20);
        tar.extend(chunk.data);
    }
    let mut files = BTreeMap::new();
    let mut names = Vec::new();
    let mut archive = tar::Archive::new(tar.as_slice());
    for e in archive.entries().expect("tar") {
        let mut e = e.expect("tar entry");
        let name = e.path().expect("path").display().to_string();
        names.push(name.clone());
        if e.header().entry_type() == tar::EntryType::Regular {
            let mut data = Vec::new();
            e.read_to_end(&mut data).expect("read entry");
            files.insert(name, data);
        }
    }
    (files, names)
}

/// Mounts of the supervisor's snapshot views.
fn view_mounts(sup: &Supervisor) -> Vec<String> {
    let views = sup.dir().join("state/views");
    let views = std::fs::canonicalize(&views).unwrap_or(views);
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    info.lines()
        .filter(|l| l.contains(views.to_str().expect("utf-8")))
        .map(str::to_owned)
        .collect()
}

#[test]
fn changes_and_export_of_a_container() {
    let ns = "engine-rootfs";
    let (_registry, sup, image) = setup("test/engine-rootfs", ns);
    let rt = runtime();
    let client = connect(&rt, &sup, ns);
    let script = "set -e; cd /etc/berth-test; echo new > added.txt; echo more >> a.txt; \
                  rm layer3.txt; mkdir -p /newdir/sub; echo x > /newdir/sub/f; \
                  echo done > /ready; while [ ! -e /go ]; do busybox sleep 0.05; done";
    rt.block_on(async {
        create_container(&client, "c1", &image, script).await;
        let key = client
            .containers()
            .get(cpb::GetContainerRequest { id: "c1".into() })
            .await
            .expect("get container")
            .into_inner()
            .snapshot_key;
        // Nothing changed yet (the runtime may have made mount points).
        let before = changes(&client, &key).await;
        assert!(
            before.iter().all(|c| !c.contains("berth-test")),
            "{before:?}"
        );
        create_task(
            &client,
            tpb::CreateTaskRequest {
                container_id: "c1".into(),
                ..Default::default()
            },
        )
        .await
        .expect("create task");
        start(&client, "c1").await;
        let deadline = Instant::now() + DEADLINE;
        while !changes(&client, &key)
            .await
            .contains(&"A /ready".to_string())
        {
            assert!(
                Instant::now() < deadline,
                "the container's changes never showed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let got = changes(&client, &key).await;
        eprintln!("changes of a running container: {got:?}");
        let wanted = [
            "C /etc/berth-test",
            "C /etc/berth-test/a.txt",
            "A /etc/berth-test/added.txt",
            "D /etc/berth-test/layer3.txt",
            "A /newdir",
            "A /newdir/sub",
            "A /newdir/sub/f",
            "A /ready",
        ];
        let mine: Vec<&String> = got
            .iter()
            .filter(|c| {
                c.contains("/etc/berth-test") || c.contains("/newdir") || c.contains("/ready")
            })
            .collect();
        assert_eq!(mine, wanted.iter().collect::<Vec<_>>(), "{got:?}");
        // berth-ctr prints them as docker diff does.
        let out = sup.ctr_ns(ns, &["snapshots", "changes", &key]).ok();
        assert!(
            out.stdout.contains("A /etc/berth-test/added.txt\n"),
            "{out:?}"
        );
        assert!(
            out.stdout.contains("D /etc/berth-test/layer3.txt\n"),
            "{out:?}"
        );
        // A parent comes before what is in it.
        let at = |s: &str| {
            got.iter()
                .position(|c| c == s)
                .unwrap_or_else(|| panic!("{s} missing: {got:?}"))
        };
        assert!(at("A /newdir") < at("A /newdir/sub"));

        // What `docker stats` reads, for this host's cgroup version.
        let stats = client
            .tasks()
            .stats(tpb::StatsRequest {
                container_id: "c1".into(),
            })
            .await
            .expect("stats")
            .into_inner();
        let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let (version, inactive) = match v2 {
            true => (2, "inactive_file"),
            false => (1, "total_inactive_file"),
        };
        assert_eq!(stats.cgroup_version, version, "{stats:?}");
        assert!(stats.memory_stats.contains_key(inactive), "{stats:?}");
        assert!(
            stats.memory_usage > 0 && stats.pids_current >= 1,
            "{stats:?}"
        );
        if version == 1 {
            assert!(!stats.cpu_percpu_ns.is_empty(), "{stats:?}");
        }

        // Export while it runs, then once it is stopped and its task gone.
        let check = |files: &BTreeMap<String, Vec<u8>>, names: &[String]| {
            let text = |n: &str| String::from_utf8_lossy(&files[n]).into_owned();
            assert_eq!(text("etc/berth-test/added.txt"), "new\n");
            assert!(text("etc/berth-test/a.txt").ends_with("more\n"));
            assert_eq!(text("newdir/sub/f"), "x\n");
            // The image's files, merged.
            assert!(files.contains_key("bin/busybox"), "{names:?}");
            assert!(
                files.contains_key("etc/berth-test/dir/new.txt"),
                "{names:?}"
            );
            // Deleted by the container, and by a layer of the image.
            for gone in [
                "etc/berth-test/layer3.txt",
                "etc/berth-test/gone.txt",
                "etc/berth-test/dir/old.txt",
            ] {
                assert!(!names.iter().any(|n| n == gone), "{gone} exported");
            }
            assert!(
                !names.iter().any(|n| n.contains(".wh.")),
                "a whiteout exported"
            );
        };
        let (files, names) = export(&client, &key).await;
        check(&files, &names);
        assert!(view_mounts(&sup).is_empty(), "{:?}", view_mounts(&sup));
        let bundle = sup.dir().join("state/shims").join(ns).join("c1");
        std::fs::write(bundle.join("rootfs/go"), "").expect("touch /go");
        assert_eq!(wait(&client, "c1").await, 0);
        delete_task(&client, "c1").await;
        let (files, names) = export(&client, &key).await;
        check(&files, &names);
        assert!(files.contains_key("go"));
        let out = sup.ctr_ns(ns, &["snapshots", "export", &key]).ok();
        let mut names = Vec::new();
        for e in tar::Archive::new(out.raw_stdout.as_slice())
            .entries()
            .expect("tar")
        {
            names.push(
                e.expect("entry")
                    .path()
                    .expect("path")
                    .display()
                    .to_string(),
            );
        }
        assert!(
            names.contains(&"etc/berth-test/added.txt".to_string()),
            "{names:?}"
        );
        assert!(view_mounts(&sup).is_empty(), "{:?}", view_mounts(&sup));
        // A client that stops reading mid-export leaves no mount either.
        let mut stream = client
            .snapshots()
            .export(spb::ExportRequest { key: key.clone() })
            .await
            .expect("export")
            .into_inner();
        stream.message().await.expect("first chunk");
        drop(stream);
        let deadline = Instant::now() + DEADLINE;
        while !view_mounts(&sup).is_empty() {
            assert!(Instant::now() < deadline, "{:?}", view_mounts(&sup));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // Unknown snapshots.
        for e in [
            client
                .snapshots()
                .changes(spb::ChangesRequest { key: "nope".into() })
                .await
                .unwrap_err(),
            client
                .snapshots()
                .export(spb::ExportRequest { key: "nope".into() })
                .await
                .map(|_| ())
                .expect_err("export of nothing"),
        ] {
            assert_eq!(e.code(), Code::NotFound, "{e:?}");
            assert!(e.message().contains("nope"), "{e:?}");
        }
        delete_container(&client, "c1").await;
    });
}

fn path(path: &str, kind: spb::PathType) -> spb::PathToAdd {
    spb::PathToAdd {
        path: path.to_string(),
        r#type: kind as i32,
        target: String::new(),
    }
}

#[test]
fn an_init_layer_keeps_mount_points_out_of_the_changes() {
    let ns = "engine-init";
    let (_registry, sup, image, top) = setup_chain("test/engine-init", ns);
    let rt = runtime();
    let client = connect(&rt, &sup, ns);
    rt.block_on(async {
        let mut snapshots = client.snapshots();
        snapshots
            .prepare(spb::PrepareSnapshotRequest {
                key: "c1-init-a".into(),
                parent: top.clone(),
                labels: Default::default(),
            })
            .await
            .expect("prepare the init layer");
        let mut mtab = path("/etc/mtab", spb::PathType::PathSymlink);
        mtab.target = "/proc/mounts".into();
        let added = snapshots
            .add_paths(spb::AddPathsRequest {
                key: "c1-init-a".into(),
                paths: vec![
                    path("/etc/hosts", spb::PathType::PathFile),
                    path("/etc/passwd", spb::PathType::PathFile),
                    path("/dev/shm", spb::PathType::PathDirectory),
                    path("/.dockerenv", spb::PathType::PathFile),
                    mtab,
                ],
            })
            .await
            .expect("add paths")
            .into_inner()
            .added;
        // The image has /etc/passwd: left alone.
        assert!(!added.contains(&"/etc/passwd".to_string()), "{added:?}");
        assert!(added.contains(&"/etc/hosts".to_string()), "{added:?}");
        assert!(added.contains(&"/.dockerenv".to_string()), "{added:?}");
        let init = changes(&client, "c1-init-a").await;
        assert!(init.contains(&"A /etc/hosts".to_string()), "{init:?}");
        assert!(!init.iter().any(|c| c.contains("passwd")), "{init:?}");
        for (req, code) in [
            (
                spb::AddPathsRequest {
                    key: "c1-init-a".into(),
                    paths: vec![path("etc/hosts", spb::PathType::PathFile)],
                },
                Code::InvalidArgument,
            ),
            (
                spb::AddPathsRequest {
                    key: "nope".into(),
                    paths: vec![],
                },
                Code::NotFound,
            ),
            (
                spb::AddPathsRequest {
                    key: top.clone(),
                    paths: vec![],
                },
                Code::FailedPrecondition,
            ),
        ] {
            let e = snapshots.add_paths(req).await.unwrap_err();
            assert_eq!(e.code(), code, "{e:?}");
        }
        snapshots
            .commit(spb::CommitSnapshotRequest {
                name: "c1-init".into(),
                key: "c1-init-a".into(),
                labels: Default::default(),
            })
            .await
            .expect("commit the init layer");
        snapshots
            .prepare(spb::PrepareSnapshotRequest {
                key: "c1".into(),
                parent: "c1-init".into(),
                labels: Default::default(),
            })
            .await
            .expect("prepare the container's layer");
        client
            .containers()
            .create(cpb::CreateContainerRequest {
                id: "c1".into(),
                image: image.clone(),
                snapshot_key: "c1".into(),
                overrides: Some(cpb::Overrides {
                    args: vec![
                        "sh".into(),
                        "-c".into(),
                        "cat /etc/hosts; echo x > /added; \
                         echo late:x:2000:2001::/:/bin/sh >> /etc/passwd"
                            .into(),
                    ],
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("create container");
        assert_eq!(
            run_task(
                &client,
                tpb::CreateTaskRequest {
                    container_id: "c1".into(),
                    ..Default::default()
                }
            )
            .await,
            0
        );
        // Only what the container did.
        assert_eq!(
            changes(&client, "c1").await,
            vec!["A /added".to_string(), "C /etc/passwd".to_string()]
        );
        // Users as the container's files show them now.
        let resolve = |user: &str| {
            let mut snapshots = client.snapshots();
            let user = user.to_string();
            async move {
                snapshots
                    .resolve_user(spb::ResolveUserRequest {
                        key: "c1".into(),
                        user,
                    })
                    .await
                    .map(|r| r.into_inner())
            }
        };
        let late = resolve("late").await.expect("late");
        assert_eq!((late.uid, late.gid), (2000, 2001));
        let user = resolve("user").await.expect("user");
        assert_eq!((user.uid, user.gid), (1000, 1000));
        let root = resolve("").await.expect("root");
        assert_eq!((root.uid, root.gid), (0, 0));
        for bad in ["nosuch", "user:nosuchgroup", ":"] {
            let e = resolve(bad).await.unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{bad}: {e:?}");
        }
        let (files, _) = export(&client, "c1").await;
        assert_eq!(files.get(".dockerenv").map(Vec::len), Some(0));
        assert_eq!(files.get("added").map(Vec::as_slice), Some(&b"x\n"[..]));
        delete_container(&client, "c1").await;
        for key in ["c1", "c1-init"] {
            snapshots
                .remove(spb::RemoveSnapshotRequest { key: key.into() })
                .await
                .unwrap_or_else(|e| panic!("remove {key}: {e}"));
        }
    });
}
