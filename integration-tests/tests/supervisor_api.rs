//! berth-supervisord's API end to end, as a user of berth-ctr or of the
//! gRPC services sees it: archives skopeo wrote are imported and archives
//! berth wrote are read by skopeo; snapshots are prepared, mounted, changed,
//! diffed and committed; content is written in two streams and kept or
//! collected by leases; namespaces keep things apart; bad requests get clear
//! errors from a daemon that keeps serving; SIGTERM stops it cleanly.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_client::Client;
use berth_proto::content::v1 as content_pb;
use berth_proto::images::v1 as images_pb;
use berth_proto::leases::v1 as leases_pb;
use berth_proto::namespaces::v1 as namespaces_pb;
use berth_proto::snapshots::v1 as snapshots_pb;
use berth_proto::types::v1 as types_pb;
use integration_tests::images::{self, image_set};
use integration_tests::registry::{Auth, Registry};
use integration_tests::supervisor::{
    assert_rootfs_matches, assert_store_empty, connect, push_layered, runtime, top_chain,
    with_view, Mounted, Supervisor,
};
use serde_json::Value;
use tonic::{Code, Status};

// ---------------------------------------------------------------------------
// Helpers

/// Runs `program args` with `input` on stdin; its stdout. It must succeed.
fn filter(program: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("wait");
    let _ = writer.join();
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// One member of a tar file.
fn tar_member(archive: &Path, member: &str) -> Vec<u8> {
    let out = Command::new("tar")
        .arg("-xOf")
        .arg(archive)
        .arg(member)
        .output()
        .expect("run tar");
    assert!(
        out.status.success(),
        "tar -xOf {} {member}: {}",
        archive.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(500)])
        )
    })
}

/// The config of the image tagged `tag` in the OCI layout `layout`.
fn layout_config(layout: &Path, tag: &str) -> Value {
    let blob = |digest: &str| {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        std::fs::read(layout.join("blobs/sha256").join(hex)).expect("layout blob")
    };
    let index = json(&std::fs::read(layout.join("index.json")).expect("index.json"));
    let entry = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no {tag} in {index}"))
        .clone();
    let manifest = json(&blob(entry["digest"].as_str().expect("digest")));
    json(&blob(
        manifest["config"]["digest"]
            .as_str()
            .expect("config digest"),
    ))
}

/// The target descriptor of image `name` in `ns`.
fn image_target(rt: &tokio::runtime::Runtime, client: &Client, name: &str) -> types_pb::Descriptor {
    rt.block_on(client.images().get(images_pb::GetImageRequest {
        name: name.to_string(),
    }))
    .unwrap_or_else(|e| panic!("get image {name} in {}: {e}", client.namespace()))
    .into_inner()
    .target
    .expect("image target")
}

/// A blob's bytes, through Content.Read.
async fn read_blob(client: &Client, digest: &str) -> Result<Vec<u8>, Status> {
    let mut stream = client
        .content()
        .read(content_pb::ReadContentRequest {
            digest: digest.to_string(),
            offset: 0,
            size: 0,
        })
        .await?
        .into_inner();
    let mut data = Vec::new();
    while let Some(msg) = stream.message().await? {
        assert_eq!(msg.offset as usize, data.len(), "read offsets");
        data.extend_from_slice(&msg.data);
    }
    Ok(data)
}

async fn content_info(client: &Client, digest: &str) -> Result<content_pb::ContentInfo, Status> {
    client
        .content()
        .info(content_pb::InfoRequest {
            digest: digest.to_string(),
        })
        .await
        .map(|r| r.into_inner())
}

/// The error a streaming call ends with, whether the call itself fails or
/// its stream does; panics when it succeeds.
async fn stream_error<T>(
    what: &str,
    call: Result<tonic::Response<tonic::Streaming<T>>, Status>,
) -> Status {
    let mut stream = match call {
        Err(status) => return status,
        Ok(r) => r.into_inner(),
    };
    loop {
        match stream.message().await {
            Err(status) => return status,
            Ok(None) => panic!("{what} succeeded"),
            Ok(Some(_)) => {}
        }
    }
}

#[track_caller]
fn assert_status(result: Result<impl std::fmt::Debug, Status>, code: Code, needle: &str) {
    match result {
        Ok(v) => panic!("expected {code:?} mentioning {needle:?}, got {v:?}"),
        Err(s) => {
            assert_eq!(s.code(), code, "{s:?}");
            assert!(
                s.message().contains(needle),
                "{code:?} should mention {needle:?}: {}",
                s.message()
            );
        }
    }
}

/// Deterministic pseudo-random bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// One Content.Write stream: each request is answered before the next.
struct WriteStream {
    tx: tokio::sync::mpsc::Sender<content_pb::WriteContentRequest>,
    rx: tonic::Streaming<content_pb::WriteContentResponse>,
}

impl WriteStream {
    async fn open(client: &Client) -> Result<WriteStream, Status> {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let requests =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|m| (m, rx)) },
            );
        let rx = client.content().write(requests).await?.into_inner();
        Ok(WriteStream { tx, rx })
    }

    async fn send(
        &mut self,
        request: content_pb::WriteContentRequest,
    ) -> Result<content_pb::WriteContentResponse, Status> {
        if self.tx.send(request).await.is_err() {
            return Err(Status::unknown("the write stream is closed"));
        }
        match self.rx.message().await? {
            Some(r) => Ok(r),
            None => Err(Status::unknown("the write stream ended without an answer")),
        }
    }

    async fn stat(&mut self, reference: &str) -> Result<i64, Status> {
        let r = self
            .send(content_pb::WriteContentRequest {
                action: content_pb::WriteAction::Stat as i32,
                r#ref: reference.to_string(),
                ..Default::default()
            })
            .await?;
        Ok(r.offset)
    }

    async fn write(&mut self, reference: &str, offset: i64, data: &[u8]) -> Result<i64, Status> {
        let r = self
            .send(content_pb::WriteContentRequest {
                action: content_pb::WriteAction::Write as i32,
                r#ref: reference.to_string(),
                offset,
                data: data.to_vec(),
                ..Default::default()
            })
            .await?;
        Ok(r.offset)
    }

    async fn commit(
        &mut self,
        reference: &str,
        total: i64,
        expected: &str,
    ) -> Result<content_pb::WriteContentResponse, Status> {
        self.send(content_pb::WriteContentRequest {
            action: content_pb::WriteAction::Commit as i32,
            r#ref: reference.to_string(),
            total,
            expected: expected.to_string(),
            offset: total,
            ..Default::default()
        })
        .await
    }
}

/// A stream on `reference` that has answered a STAT, and that offset. A
/// stream the client just dropped may still hold the ref for a moment
/// (FailedPrecondition "being written by another writer"): retried until a
/// deadline.
async fn open_and_stat(client: &Client, reference: &str) -> (WriteStream, i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut stream = WriteStream::open(client).await.expect("open write stream");
        match stream.stat(reference).await {
            Ok(offset) => return (stream, offset),
            Err(s)
                if s.code() == Code::FailedPrecondition
                    && s.message().contains("another writer")
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(s) => panic!("STAT {reference}: {s:?}"),
        }
    }
}

/// Writes a whole blob in one stream, committing it.
async fn write_blob(client: &Client, reference: &str, data: &[u8]) -> String {
    let digest = images::sha256_digest(data);
    let (mut stream, offset) = open_and_stat(client, reference).await;
    assert_eq!(offset, 0, "fresh ref {reference}");
    let mut at = 0i64;
    for chunk in data.chunks(1 << 20) {
        at = stream
            .write(reference, at, chunk)
            .await
            .expect("write chunk");
    }
    let r = stream
        .commit(reference, data.len() as i64, &digest)
        .await
        .expect("commit");
    assert_eq!(r.digest, digest);
    digest
}

// ---------------------------------------------------------------------------
// 1. Import what skopeo exported

#[test]
fn import_docker_and_oci_archives_written_by_skopeo() {
    let set = image_set();
    let image = &set.layered;
    let sup = Supervisor::start();
    let rt = runtime();
    let dir = tempfile::tempdir().expect("archives");

    // A docker save tarball: skopeo names the image docker.io/test/...;
    // its layers are stored uncompressed, so the manifest is rebuilt but the
    // config (the image id) and the diff ids are the layout's.
    let docker = dir.path().join("docker.tar");
    images::docker_archive(&set.layered_ref(), &docker, "test/layered:v1");
    let name = "docker.io/test/layered:v1";
    let out = sup
        .ctr_ns(
            "docker",
            &["images", "import", docker.to_str().expect("utf-8")],
        )
        .ok();
    assert!(out.stdout.contains(name), "{}", out.stdout);
    let ls = sup.ctr_ns("docker", &["images", "ls"]).ok().stdout;
    assert!(ls.contains(name), "{ls}");
    let client = connect(&rt, &sup, "docker");
    let target = image_target(&rt, &client, name);
    let manifest = json(
        &rt.block_on(read_blob(&client, &target.digest))
            .expect("manifest"),
    );
    assert_eq!(manifest["config"]["digest"], image.config.digest.as_str());
    assert_rootfs_matches(&sup, "docker", image);

    // An OCI layout tarball: skopeo's oci-archive:FILE:v1 names the image
    // by its tag alone, so --name gives the repository.
    let oci = dir.path().join("oci.tar");
    images::oci_archive(&set.layered_ref(), &oci, "v1");
    let index = json(&tar_member(&oci, "index.json"));
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"], "v1",
        "what skopeo wrote: {index}"
    );
    let out = sup
        .ctr_ns(
            "oci",
            &[
                "images",
                "import",
                "--name",
                "test/oci",
                oci.to_str().expect("utf-8"),
            ],
        )
        .ok();
    let name = "docker.io/test/oci:v1";
    assert!(out.stdout.contains(name), "{}", out.stdout);
    let ls = sup.ctr_ns("oci", &["images", "ls"]).ok().stdout;
    assert!(ls.contains(name), "{ls}");
    assert!(ls.contains(&image.manifest.digest), "{ls}");
    let client = connect(&rt, &sup, "oci");
    assert_eq!(
        image_target(&rt, &client, name).digest,
        image.manifest.digest
    );
    assert_rootfs_matches(&sup, "oci", image);

    // The same archive on stdin.
    let out = sup
        .ctr_input(
            "stdin",
            &["images", "import", "--name", "test/stdin", "-"],
            Some(&oci),
        )
        .ok();
    let name = "docker.io/test/stdin:v1";
    assert!(out.stdout.contains(name), "{}", out.stdout);
    let ls = sup.ctr_ns("stdin", &["images", "ls", "-q"]).ok().stdout;
    assert_eq!(ls.trim(), name);
    assert_rootfs_matches(&sup, "stdin", image);

    // Each namespace holds its own copy; removing all frees everything.
    sup.ctr_ns("docker", &["images", "rm", "docker.io/test/layered:v1"])
        .ok();
    sup.ctr_ns("oci", &["images", "rm", "docker.io/test/oci:v1"])
        .ok();
    sup.ctr_ns("stdin", &["images", "rm", "docker.io/test/stdin:v1"])
        .ok();
    assert_store_empty(&sup);
}

// ---------------------------------------------------------------------------
// 2. Export what skopeo can read

#[test]
fn export_archives_that_skopeo_reads_and_berth_imports_again() {
    let registry = Registry::start(Auth::None);
    let image = push_layered(&registry, "test/export:v1");
    let sup = Supervisor::start();
    let rt = runtime();
    let name = format!("{}/test/export:v1", registry.host());
    sup.ctr(&["images", "pull", &name]).ok();
    let dir = tempfile::tempdir().expect("archives");

    // OCI: skopeo finds the image by its tag and sees the same manifest.
    let oci = dir.path().join("out-oci.tar");
    let oci_s = oci.to_str().expect("utf-8");
    sup.ctr(&["images", "export", "--format", "oci", oci_s, &name])
        .ok();
    let inspect =
        json(images::skopeo_ok(&["inspect", &format!("oci-archive:{oci_s}:v1")]).as_bytes());
    assert_eq!(
        inspect["Digest"],
        image.manifest.digest.as_str(),
        "{inspect}"
    );
    let layers: Vec<&str> = image
        .layers
        .iter()
        .map(|l| l.descriptor.digest.as_str())
        .collect();
    assert_eq!(inspect["Layers"], serde_json::json!(layers), "{inspect}");

    // Docker: skopeo copies it into an OCI layout with the same layers.
    let docker = dir.path().join("out-docker.tar");
    let docker_s = docker.to_str().expect("utf-8");
    sup.ctr(&["images", "export", "--format", "docker", docker_s, &name])
        .ok();
    let layout = dir.path().join("from-docker");
    images::skopeo_ok(&[
        "copy",
        "--quiet",
        &format!("docker-archive:{docker_s}"),
        &format!("oci:{}:x", layout.display()),
    ]);
    let config = layout_config(&layout, "x");
    let diff_ids: Vec<&str> = image.layers.iter().map(|l| l.diff_id.as_str()).collect();
    assert_eq!(
        config["rootfs"]["diff_ids"],
        serde_json::json!(diff_ids),
        "{config}"
    );

    // Imported into another namespace: the same image, unpacked again.
    let out = sup.ctr_ns("again", &["images", "import", oci_s]).ok();
    assert!(out.stdout.contains(&name), "{}", out.stdout);
    let client = connect(&rt, &sup, "again");
    assert_eq!(
        image_target(&rt, &client, &name).digest,
        image.manifest.digest
    );
    assert_rootfs_matches(&sup, "again", image);
}

// ---------------------------------------------------------------------------
// 3. Snapshots and diff over gRPC

#[test]
fn prepare_change_diff_and_commit_a_snapshot() {
    let registry = Registry::start(Auth::None);
    let image = push_layered(&registry, "test/snap:v1");
    let sup = Supervisor::start();
    let rt = runtime();
    let name = format!("{}/test/snap:v1", registry.host());
    sup.ctr(&["images", "pull", &name]).ok();
    let client = connect(&rt, &sup, "default");
    let mut snapshots = client.snapshots();
    let top = top_chain(image);

    let mounts = rt
        .block_on(snapshots.prepare(snapshots_pb::PrepareSnapshotRequest {
            key: "work".into(),
            parent: top.clone(),
            labels: Default::default(),
        }))
        .expect("prepare")
        .into_inner()
        .mounts;
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    assert_eq!(mounts[0].r#type, "overlay", "{mounts:?}");
    assert!(
        mounts[0].options.iter().any(|o| o.starts_with("upperdir=")),
        "{mounts:?}"
    );
    let again = rt
        .block_on(snapshots.mounts(snapshots_pb::MountsRequest { key: "work".into() }))
        .expect("mounts")
        .into_inner()
        .mounts;
    assert_eq!(again, mounts);

    {
        let mut root = Mounted::new(&sup, &mounts[0]);
        let t = root.path().join("etc/berth-test");
        // The image is there, and writable.
        assert_eq!(
            std::fs::read(t.join("platform")).expect("platform"),
            images::AMD64_PLATFORM
        );
        std::fs::write(t.join("added.txt"), b"added by the test\n").expect("create a file");
        std::fs::remove_file(t.join("layer3.txt")).expect("delete a file");
        assert!(root.unmount(), "umount the active snapshot");
    }

    let diff = rt
        .block_on(snapshots.diff(snapshots_pb::DiffRequest {
            key: "work".into(),
            media_type: String::new(),
            labels: Default::default(),
        }))
        .expect("diff")
        .into_inner();
    let desc = diff.diff.expect("diff descriptor");
    assert_eq!(desc.media_type, images::GZIP_LAYER);
    let blob = rt.block_on(read_blob(&client, &desc.digest)).expect("read");
    assert_eq!(blob.len() as i64, desc.size);
    assert_eq!(images::sha256_digest(&blob), desc.digest);
    let via_ctr = sup.ctr(&["content", "get", &desc.digest]).ok().raw_stdout;
    assert!(via_ctr == blob, "content get differs from Content.Read");

    let tar = filter("gzip", &["-dc"], &blob);
    assert_eq!(images::sha256_digest(&tar), diff.diff_id, "diff_id");
    let listing = String::from_utf8(filter("tar", &["-tf", "-"], &tar)).expect("utf-8");
    let entries: BTreeSet<&str> = listing
        .lines()
        .map(|l| l.trim_start_matches("./").trim_end_matches('/'))
        .collect();
    assert_eq!(listing.lines().count(), entries.len(), "{listing}");
    assert_eq!(
        entries,
        BTreeSet::from([
            "etc",
            "etc/berth-test",
            "etc/berth-test/.wh.layer3.txt",
            "etc/berth-test/added.txt",
        ]),
        "the layer should hold the new file, the whiteout and their directories:\n{listing}"
    );
    assert_eq!(
        filter("tar", &["-xOf", "-", "etc/berth-test/added.txt"], &tar),
        b"added by the test\n"
    );

    rt.block_on(snapshots.commit(snapshots_pb::CommitSnapshotRequest {
        name: "committed-work".into(),
        key: "work".into(),
        labels: Default::default(),
    }))
    .expect("commit");
    let usage = rt
        .block_on(snapshots.usage(snapshots_pb::UsageRequest {
            key: "committed-work".into(),
        }))
        .expect("usage")
        .into_inner();
    assert!(usage.size > 0, "{usage:?}");
    assert!(usage.inodes >= 4, "{usage:?}");
    assert_status(
        rt.block_on(snapshots.remove(snapshots_pb::RemoveSnapshotRequest { key: top.clone() })),
        Code::FailedPrecondition,
        "committed-work",
    );

    // What the committed snapshot shows: the image with the two changes.
    with_view(&sup, "default", "committed-work", |root| {
        let t = root.join("etc/berth-test");
        assert_eq!(
            std::fs::read(t.join("added.txt")).expect("added.txt"),
            b"added by the test\n"
        );
        assert!(!t.join("layer3.txt").exists(), "layer3.txt is back");
        assert_eq!(
            std::fs::read(t.join("platform")).expect("platform"),
            images::AMD64_PLATFORM
        );
        assert_eq!(
            std::fs::read(root.join("data/blob.bin")).expect("blob.bin"),
            images::blob_bin()
        );
    });

    // One of each kind on the committed snapshot.
    rt.block_on(snapshots.prepare(snapshots_pb::PrepareSnapshotRequest {
        key: "active-2".into(),
        parent: "committed-work".into(),
        labels: Default::default(),
    }))
    .expect("prepare on the committed snapshot");
    rt.block_on(snapshots.view(snapshots_pb::ViewSnapshotRequest {
        key: "view-2".into(),
        parent: "committed-work".into(),
        labels: Default::default(),
    }))
    .expect("view of the committed snapshot");
    let ls = sup.ctr(&["snapshots", "ls"]).ok().stdout;
    let row = |key: &str| -> Vec<String> {
        ls.lines()
            .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .find(|cols| cols.first().map(String::as_str) == Some(key))
            .unwrap_or_else(|| panic!("no {key} in snapshots ls:\n{ls}"))
    };
    assert_eq!(
        row("committed-work"),
        ["committed-work", top.as_str(), "Committed"]
    );
    assert_eq!(row("active-2"), ["active-2", "committed-work", "Active"]);
    assert_eq!(row("view-2"), ["view-2", "committed-work", "View"]);
    assert_eq!(row(&top)[2], "Committed", "{ls}");
    // The three layers, committed-work, active-2 and view-2.
    assert_eq!(ls.lines().count(), 1 + 6, "{ls}");

    // A second change on top, diffed as zstd: a modified file, and a
    // directory removed and made again (which overlayfs marks opaque).
    let mounts = rt
        .block_on(snapshots.mounts(snapshots_pb::MountsRequest {
            key: "active-2".into(),
        }))
        .expect("mounts of active-2")
        .into_inner()
        .mounts;
    {
        let mut root = Mounted::new(&sup, &mounts[0]);
        let t = root.path().join("etc/berth-test");
        assert!(t.join("added.txt").exists(), "the parent's new file");
        std::fs::write(t.join("platform"), b"modified\n").expect("modify a file");
        std::fs::remove_dir_all(t.join("dir")).expect("remove a directory");
        std::fs::create_dir(t.join("dir")).expect("make it again");
        std::fs::write(t.join("dir/again.txt"), b"again\n").expect("fill it");
        assert!(root.unmount(), "umount active-2");
    }
    let diff = rt
        .block_on(snapshots.diff(snapshots_pb::DiffRequest {
            key: "active-2".into(),
            media_type: images::ZSTD_LAYER.into(),
            labels: Default::default(),
        }))
        .expect("zstd diff")
        .into_inner();
    let desc = diff.diff.expect("diff descriptor");
    assert_eq!(desc.media_type, images::ZSTD_LAYER);
    let blob = sup.ctr(&["content", "get", &desc.digest]).ok().raw_stdout;
    assert_eq!(images::sha256_digest(&blob), desc.digest);
    let tar = filter("zstd", &["-dc"], &blob);
    assert_eq!(images::sha256_digest(&tar), diff.diff_id, "diff_id");
    let listing = String::from_utf8(filter("tar", &["-tf", "-"], &tar)).expect("utf-8");
    let entries: BTreeSet<&str> = listing
        .lines()
        .map(|l| l.trim_start_matches("./").trim_end_matches('/'))
        .collect();
    assert_eq!(
        entries,
        BTreeSet::from([
            "etc",
            "etc/berth-test",
            "etc/berth-test/dir",
            "etc/berth-test/dir/.wh..wh..opq",
            "etc/berth-test/dir/again.txt",
            "etc/berth-test/platform",
        ]),
        "{listing}"
    );
    assert_eq!(
        filter("tar", &["-xOf", "-", "etc/berth-test/platform"], &tar),
        b"modified\n"
    );

    sup.ctr(&["snapshots", "rm", "active-2", "view-2", "committed-work"])
        .ok();
    sup.ctr(&["images", "rm", &name]).ok();
    let ls = sup.ctr(&["snapshots", "ls"]).ok().stdout;
    assert_eq!(ls.lines().count(), 1, "only the header is left:\n{ls}");
    assert_store_empty(&sup);
}

// ---------------------------------------------------------------------------
// 4. Content write with resume over gRPC, and leases

#[test]
fn content_write_resumes_commits_verifies_and_leases_keep_it() {
    let sup = Supervisor::start();
    let rt = runtime();
    let client = connect(&rt, &sup, "writes");
    let other = connect(&rt, &sup, "other");
    let data = noise(2_500_000 + 77, 1);
    let digest = images::sha256_digest(&data);
    let half = data.len() / 2;

    rt.block_on(async {
        // Half of it, then the client goes away.
        let (mut stream, offset) = open_and_stat(&client, "resumed").await;
        assert_eq!(offset, 0);
        let mut at = 0;
        for chunk in data[..half].chunks(1 << 20) {
            at = stream.write("resumed", at, chunk).await.expect("write");
        }
        assert_eq!(at as usize, half);
        drop(stream);

        // A new stream learns where it stopped and goes on.
        let (mut stream, offset) = open_and_stat(&client, "resumed").await;
        assert_eq!(offset as usize, half, "STAT after the interruption");
        let mut at = offset;
        for chunk in data[half..].chunks(1 << 20) {
            at = stream.write("resumed", at, chunk).await.expect("write");
        }
        assert_eq!(at as usize, data.len());
        let r = stream
            .commit("resumed", data.len() as i64, &digest)
            .await
            .expect("commit");
        assert_eq!(r.digest, digest);
    });
    let info = rt
        .block_on(content_info(&client, &digest))
        .expect("content info");
    assert_eq!(info.size as usize, data.len());
    assert_eq!(
        rt.block_on(read_blob(&client, &digest)).expect("read back"),
        data
    );
    assert_status(
        rt.block_on(content_info(&other, &digest)),
        Code::NotFound,
        &digest,
    );
    assert_status(
        rt.block_on(read_blob(&other, &digest)),
        Code::NotFound,
        &digest,
    );

    // A commit that names the wrong digest.
    let bad = noise(100_000, 2);
    let bad_digest = images::sha256_digest(&bad);
    let claimed = images::sha256_digest(b"something else");
    let result = rt.block_on(async {
        let (mut stream, _) = open_and_stat(&client, "wrong").await;
        stream.write("wrong", 0, &bad).await.expect("write");
        stream.commit("wrong", bad.len() as i64, &claimed).await
    });
    assert_status(result, Code::DataLoss, &claimed);
    for d in [&bad_digest, &claimed] {
        assert_status(rt.block_on(content_info(&client, d)), Code::NotFound, d);
        assert!(!sup.blob_files().contains(d), "{d} became a blob");
    }
    let statuses = rt
        .block_on(
            client
                .content()
                .list_statuses(content_pb::ListStatusesRequest {}),
        )
        .expect("statuses")
        .into_inner()
        .statuses;
    assert!(
        statuses.iter().all(|s| s.r#ref != "wrong"),
        "the refused write is still in progress: {statuses:?}"
    );

    // A blob written under a lease outlives a collection; the unleased one
    // does not.
    sup.ctr_ns("writes", &["leases", "create", "--id", "keep"])
        .ok();
    let kept = noise(300_000, 3);
    let leased = client.with_lease("keep").expect("lease client");
    let kept_digest = rt.block_on(write_blob(&leased, "kept", &kept));
    let resources = rt
        .block_on(
            client
                .leases()
                .list_resources(leases_pb::ListResourcesRequest { id: "keep".into() }),
        )
        .expect("lease resources")
        .into_inner()
        .resources;
    assert!(
        resources
            .iter()
            .any(|r| r.r#type == "content" && r.id == kept_digest),
        "{resources:?}"
    );
    // Deleting a lease collects garbage.
    sup.ctr_ns("writes", &["leases", "create", "--id", "trigger"])
        .ok();
    sup.ctr_ns("writes", &["leases", "rm", "trigger"]).ok();
    assert_status(
        rt.block_on(content_info(&client, &digest)),
        Code::NotFound,
        &digest,
    );
    assert!(!sup.blob_files().contains(&digest), "unleased blob kept");
    assert_eq!(
        rt.block_on(read_blob(&client, &kept_digest))
            .expect("leased blob after a collection"),
        kept
    );
    sup.ctr_ns("writes", &["leases", "rm", "keep"]).ok();
    assert_status(
        rt.block_on(content_info(&client, &kept_digest)),
        Code::NotFound,
        &kept_digest,
    );
    assert_store_empty(&sup);
}

/// What one namespace writes, another never sees: that holds for writes
/// in progress too (Content.Write refs, ListStatuses, Abort).
#[test]
fn writes_in_progress_are_private_to_their_namespace() {
    let sup = Supervisor::start();
    let rt = runtime();
    let a = connect(&rt, &sup, "team-a");
    let b = connect(&rt, &sup, "team-b");
    let secret = b"the first half of team-a's blob";
    let mut problems = Vec::new();
    rt.block_on(async {
        let (mut stream, _) = open_and_stat(&a, "upload-1").await;
        stream.write("upload-1", 0, secret).await.expect("write");
        drop(stream);

        let statuses = b
            .content()
            .list_statuses(content_pb::ListStatusesRequest {})
            .await
            .expect("statuses in team-b")
            .into_inner()
            .statuses;
        if !statuses.is_empty() {
            problems.push(format!(
                "ListStatuses in team-b shows team-a's write: {statuses:?}"
            ));
        }
        let (stream, offset) = open_and_stat(&b, "upload-1").await;
        drop(stream);
        if offset != 0 {
            problems.push(format!(
                "STAT of ref upload-1 in team-b reports offset {offset}: team-a's data"
            ));
        }
        match b
            .content()
            .abort(content_pb::AbortRequest {
                r#ref: "upload-1".into(),
            })
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => problems.push(format!("Abort in team-b: {s:?}")),
        }
        let (stream, offset) = open_and_stat(&a, "upload-1").await;
        drop(stream);
        if offset != secret.len() as i64 {
            problems.push(format!(
                "after team-b's Abort, team-a's write holds {offset} of {} bytes",
                secret.len()
            ));
        }
    });
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// SIGTERM lets a call in flight finish: a write the client completes
/// after the signal is committed, and the daemon then exits 0.
#[test]
fn sigterm_lets_a_call_in_flight_finish() {
    let mut sup = Supervisor::start();
    sup.ctr(&["leases", "create", "--id", "keep"]).ok();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let client = rt
        .block_on(Client::connect(&sup.socket(), "default"))
        .expect("connect");
    let leased = client.with_lease("keep").expect("lease client");
    let data = noise(1_500_000, 5);
    let digest = images::sha256_digest(&data);
    let half = data.len() / 2;
    let (mut stream, _) = rt.block_on(open_and_stat(&leased, "in-flight"));
    rt.block_on(stream.write("in-flight", 0, &data[..half]))
        .expect("write the first half");

    let kill = Command::new("kill")
        .args(["-TERM", &sup.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success(), "kill -TERM");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sup.log().contains("shutting down") {
        assert!(Instant::now() < deadline, "no shutdown:\n{}", sup.log());
        std::thread::sleep(Duration::from_millis(10));
    }
    let start = Instant::now();
    rt.block_on(async {
        stream
            .write("in-flight", half as i64, &data[half..])
            .await
            .expect("write the rest after SIGTERM");
        stream
            .commit("in-flight", data.len() as i64, &digest)
            .await
            .expect("commit after SIGTERM");
    });
    drop(stream);
    let status = sup.stop().expect("the daemon was running");
    assert!(status.success(), "exit status {status}:\n{}", sup.log());
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "the daemon waited {:?} after its last call ended",
        start.elapsed()
    );
    assert!(!sup.socket().exists(), "the socket file is still there");
    drop(client);
    drop(leased);
    sup.start_again();
    let rt = runtime();
    let client = connect(&rt, &sup, "default");
    assert_eq!(
        rt.block_on(read_blob(&client, &digest))
            .expect("the blob committed during shutdown"),
        data
    );
}

// ---------------------------------------------------------------------------
// 5. Namespaces

#[test]
fn namespaces_list_refuse_removal_while_used_and_calls_need_one() {
    let sup = Supervisor::start();
    let rt = runtime();
    sup.ctr_ns("alpha", &["leases", "create", "--id", "hold"])
        .ok();
    sup.ctr(&["namespaces", "create", "beta"]).ok();
    // Reading does not make a namespace.
    assert_eq!(
        sup.ctr_ns("peek", &["images", "ls", "-q"])
            .ok()
            .stdout
            .trim(),
        ""
    );
    let names = |sup: &Supervisor| -> BTreeSet<String> {
        sup.ctr(&["namespaces", "ls"])
            .ok()
            .stdout
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect()
    };
    assert_eq!(
        names(&sup),
        BTreeSet::from(["alpha".to_string(), "beta".to_string()])
    );

    sup.ctr(&["namespaces", "rm", "alpha"])
        .failed_with("not empty");
    let client = connect(&rt, &sup, "default");
    assert_status(
        rt.block_on(
            client
                .namespaces()
                .delete(namespaces_pb::DeleteNamespaceRequest {
                    name: "alpha".into(),
                }),
        ),
        Code::FailedPrecondition,
        "not empty",
    );
    sup.ctr(&["namespaces", "rm", "beta"]).ok();
    assert_eq!(names(&sup), BTreeSet::from(["alpha".to_string()]));
    sup.ctr_ns("alpha", &["leases", "rm", "hold"]).ok();
    sup.ctr(&["namespaces", "rm", "alpha"]).ok();
    assert_eq!(names(&sup), BTreeSet::new());
    sup.ctr(&["namespaces", "rm", "alpha"])
        .failed_with("not found");

    // Without the berth-namespace metadata.
    rt.block_on(async {
        let channel = berth_client::connect(&sup.socket()).await.expect("channel");
        use berth_proto::content::v1::content_client::ContentClient;
        use berth_proto::images::v1::images_client::ImagesClient;
        use berth_proto::leases::v1::leases_client::LeasesClient;
        use berth_proto::namespaces::v1::namespaces_client::NamespacesClient;
        use berth_proto::snapshots::v1::snapshots_client::SnapshotsClient;
        let key = berth_proto::NAMESPACE_KEY;
        assert_status(
            ImagesClient::new(channel.clone())
                .list(images_pb::ListImagesRequest {})
                .await,
            Code::FailedPrecondition,
            key,
        );
        assert_status(
            ContentClient::new(channel.clone())
                .list(content_pb::ListContentRequest {})
                .await,
            Code::FailedPrecondition,
            key,
        );
        assert_status(
            SnapshotsClient::new(channel.clone())
                .prepare(snapshots_pb::PrepareSnapshotRequest {
                    key: "k".into(),
                    ..Default::default()
                })
                .await,
            Code::FailedPrecondition,
            key,
        );
        assert_status(
            LeasesClient::new(channel.clone())
                .create(leases_pb::CreateLeaseRequest::default())
                .await,
            Code::FailedPrecondition,
            key,
        );
        // Namespaces themselves need none.
        NamespacesClient::new(channel)
            .list(namespaces_pb::ListNamespacesRequest {})
            .await
            .expect("namespaces list without a namespace");
    });
    assert_eq!(names(&sup), BTreeSet::new(), "a refused call made one");
    assert_store_empty(&sup);
}

// ---------------------------------------------------------------------------
// 6. Bad requests keep the daemon serving

#[test]
fn bad_requests_get_clear_errors_and_the_daemon_keeps_serving() {
    let sup = Supervisor::start();
    let rt = runtime();
    let client = connect(&rt, &sup, "default");

    sup.ctr(&["images", "pull", "UPPER/Case"])
        .failed_with("must be lowercase");
    let status = rt.block_on(async {
        let call = client
            .images()
            .pull(images_pb::PullRequest {
                reference: "UPPER/Case".into(),
                ..Default::default()
            })
            .await;
        stream_error("pull UPPER/Case", call).await
    });
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("UPPER/Case"), "{status:?}");

    sup.ctr(&["images", "rm", "nope"])
        .failed_with("image \"nope\" not found");
    assert_status(
        rt.block_on(client.images().delete(images_pb::DeleteImageRequest {
            name: "nope".into(),
        })),
        Code::NotFound,
        "nope",
    );
    sup.ctr(&["images", "push", "nope"])
        .failed_with("image \"nope\" not found");
    let status = rt.block_on(async {
        let call = client
            .images()
            .push(images_pb::PushRequest {
                name: "nope".into(),
                ..Default::default()
            })
            .await;
        stream_error("push nope", call).await
    });
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    sup.ctr(&["snapshots", "prepare", "k", "no-such-parent"])
        .failed_with("snapshot \"no-such-parent\" not found");
    assert_status(
        rt.block_on(
            client
                .snapshots()
                .prepare(snapshots_pb::PrepareSnapshotRequest {
                    key: "k".into(),
                    parent: "no-such-parent".into(),
                    labels: Default::default(),
                }),
        ),
        Code::NotFound,
        "no-such-parent",
    );
    // Nothing of the refused snapshot remains.
    assert_status(
        rt.block_on(
            client
                .snapshots()
                .stat(snapshots_pb::StatSnapshotRequest { key: "k".into() }),
        ),
        Code::NotFound,
        "\"k\"",
    );

    for digest in ["sha256:xyz", "md5:0123", "nothex"] {
        sup.ctr(&["content", "get", digest])
            .failed_with(&format!("invalid digest \"{digest}\""));
        assert_status(
            rt.block_on(read_blob(&client, digest)),
            Code::InvalidArgument,
            digest,
        );
    }
    let unknown = images::sha256_digest(b"never written");
    sup.ctr(&["content", "get", &unknown])
        .failed_with("not found");

    // A lease that does not exist.
    let leased = client.with_lease("no-such-lease").expect("lease client");
    assert_status(
        rt.block_on(
            leased
                .snapshots()
                .prepare(snapshots_pb::PrepareSnapshotRequest {
                    key: "leased".into(),
                    ..Default::default()
                }),
        ),
        Code::NotFound,
        "no-such-lease",
    );

    let version = sup.ctr(&["version"]).ok().stdout;
    assert!(version.contains("Server:"), "{version}");
    assert_eq!(sup.ctr(&["images", "ls", "-q"]).ok().stdout.trim(), "");
    assert_store_empty(&sup);
}

// ---------------------------------------------------------------------------
// 7. SIGTERM

#[test]
fn sigterm_exits_zero_and_removes_the_socket() {
    let mut sup = Supervisor::start();
    sup.ctr(&["leases", "create", "--id", "l"]).ok();
    // A client keeps its connection open across the stop, as the engine would.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let client = rt
        .block_on(Client::connect(&sup.socket(), "default"))
        .expect("connect");
    rt.block_on(client.version().version(())).expect("version");
    let start = Instant::now();
    let status = sup.stop().expect("the daemon was running");
    assert!(
        status.success(),
        "berth-supervisord exited with {status} on SIGTERM:\n{}",
        sup.log()
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "stopping took {:?} with an idle client connected",
        start.elapsed()
    );
    assert!(!sup.socket().exists(), "the socket file is still there");
    // What was committed is there after a restart.
    sup.start_again();
    let leases = sup.ctr(&["leases", "ls", "-q"]).ok().stdout;
    assert_eq!(leases.trim(), "l");
    drop(client);
}
