//! The images domain over the in-memory supervisor.

use std::sync::Arc;

use berth_proto::containers::v1 as containers;
use berth_proto::images::v1 as pb;
use berth_proto::types::v1::Descriptor;
use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest as _, Sha256};

use super::auth::{self, AuthConfig};
use super::list::{self, Filters};
use super::remove::{self, Removed};
use super::transfer::{self, PullOptions};
use super::*;
use crate::backend::fake::Fake;
use crate::config::Paths;

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn tar_layer(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, path, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// An image record and its blobs: layers as given, a config naming them.
fn image(name: &str, created: &str, layers: &[Vec<u8>]) -> (pb::Image, Vec<(String, Bytes)>) {
    let diff_ids: Vec<String> = layers.iter().map(|l| digest(l)).collect();
    let config = serde_json::json!({
        "architecture": crate::go_arch(),
        "os": "linux",
        "created": created,
        "config": { "Cmd": ["sh"], "Labels": { "app": if name.contains("alpine") { "alpine" } else { "other" } } },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "history": layers.iter().map(|_| serde_json::json!({"created_by": "ADD x"})).collect::<Vec<_>>(),
    });
    let config = serde_json::to_vec(&config).unwrap();
    let layer_descs: Vec<serde_json::Value> = layers
        .iter()
        .map(|l| {
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": digest(l),
                "size": l.len(),
            })
        })
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": digest(&config),
            "size": config.len(),
        },
        "layers": layer_descs,
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let mut blobs = vec![
        (digest(&manifest), Bytes::from(manifest.clone())),
        (digest(&config), Bytes::from(config)),
    ];
    for l in layers {
        blobs.push((digest(l), Bytes::from(l.clone())));
    }
    let record = pb::Image {
        name: name.to_string(),
        target: Some(Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: digest(&manifest),
            size: manifest.len() as i64,
            annotations: Default::default(),
        }),
        size: 1234,
        ..Default::default()
    };
    (record, blobs)
}

pub(crate) async fn engine(fake: &Fake) -> (Arc<Engine>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::new(dir.path().join("data"), dir.path().join("exec"));
    std::fs::create_dir_all(paths.engine_dir()).unwrap();
    let engine = Engine::open(Arc::new(fake.clone()), paths).unwrap();
    (Arc::new(engine), dir)
}

pub(crate) const BUSYBOX: &str = "docker.io/library/busybox:latest";

pub(crate) fn add(fake: &Fake, name: &str, created: &str, layers: &[Vec<u8>]) -> String {
    let (record, blobs) = image(name, created, layers);
    fake.add_image(record, blobs.clone());
    blobs[1].0.clone()
}

#[tokio::test]
async fn names_ids_and_prefixes() {
    let fake = Fake::new();
    let id = add(
        &fake,
        BUSYBOX,
        "2024-01-01T00:00:00Z",
        &[tar_layer(&[("a", b"1")])],
    );
    let (engine, _dir) = engine(&fake).await;
    let hex = id.strip_prefix("sha256:").unwrap();
    for name in [
        "busybox",
        "busybox:latest",
        BUSYBOX,
        &id,
        hex,
        &hex[..12],
        &format!("sha256:{}", &hex[..5]),
    ] {
        let found = lookup(&engine, name).await.unwrap();
        assert_eq!(found.image.id, id, "{name}");
        assert_eq!(found.names, [BUSYBOX], "{name}");
    }
    assert!(!lookup(&engine, "busybox").await.unwrap().by_id);
    let missing = lookup(&engine, "nope").await.unwrap_err().to_string();
    assert_eq!(missing, "No such image: nope:latest");
    assert!(lookup(&engine, &hex[..12]).await.unwrap().by_id);
    assert!(matches!(
        lookup(&engine, "alpine").await,
        Err(ImageError::NotFound(_))
    ));
    assert!(matches!(
        lookup(&engine, "Bad/Name").await,
        Err(ImageError::InvalidReference(_))
    ));
}

#[tokio::test]
async fn ambiguous_prefixes_name_nothing() {
    let fake = Fake::new();
    let mut ids = Vec::new();
    for i in 0..40 {
        let name = format!("docker.io/library/img{i}:latest");
        ids.push(add(
            &fake,
            &name,
            "2024-01-01T00:00:00Z",
            &[tar_layer(&[("a", format!("{i}").as_bytes())])],
        ));
    }
    let (engine, _dir) = engine(&fake).await;
    // 40 ids over 16 first digits: some first digit is shared.
    let first: Vec<&str> = ids.iter().map(|i| &i[7..8]).collect();
    let shared = first
        .iter()
        .find(|d| first.iter().filter(|x| x == d).count() > 1)
        .unwrap();
    assert!(matches!(
        lookup(&engine, shared).await,
        Err(ImageError::NotFound(_))
    ));
}

#[tokio::test]
async fn list_groups_names_and_filters() {
    let fake = Fake::new();
    let layer = tar_layer(&[("a", b"1")]);
    let id = add(
        &fake,
        BUSYBOX,
        "2024-01-01T00:00:00Z",
        std::slice::from_ref(&layer),
    );
    add(
        &fake,
        "127.0.0.1:5000/busybox:1",
        "2024-01-01T00:00:00Z",
        &[layer],
    );
    let newer = add(
        &fake,
        "docker.io/library/alpine:3",
        "2024-06-01T00:00:00Z",
        &[tar_layer(&[("b", b"2")])],
    );
    let (engine, _dir) = engine(&fake).await;

    let all = list::list(&engine, false, &Filters::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].id, newer, "newest first");
    let busybox = &all[1];
    assert_eq!(busybox.id, id);
    assert_eq!(
        busybox.repo_tags,
        ["127.0.0.1:5000/busybox:1", "busybox:latest"]
    );
    assert_eq!(busybox.created, 1704067200);

    let by = |json: serde_json::Value| Filters::parse(Some(&json)).unwrap();
    let only = list::list(
        &engine,
        false,
        &by(serde_json::json!({"reference": ["alp*"]})),
    )
    .await
    .unwrap();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].id, newer);
    let labelled = list::list(
        &engine,
        false,
        &by(serde_json::json!({"label": {"app=alpine": true}})),
    )
    .await
    .unwrap();
    assert_eq!(labelled.len(), 1);
    let before = list::list(
        &engine,
        false,
        &by(serde_json::json!({"before": ["alpine:3"]})),
    )
    .await
    .unwrap();
    assert_eq!(before.len(), 1);
    assert_eq!(before[0].id, id);
    let since = list::list(
        &engine,
        false,
        &by(serde_json::json!({"since": ["busybox"]})),
    )
    .await
    .unwrap();
    assert_eq!(since.len(), 1);
    assert_eq!(since[0].id, newer);
    let dangling = list::list(
        &engine,
        false,
        &by(serde_json::json!({"dangling": ["true"]})),
    )
    .await
    .unwrap();
    assert!(dangling.is_empty());
}

#[tokio::test]
async fn inspect_and_history() {
    let fake = Fake::new();
    let id = add(
        &fake,
        BUSYBOX,
        "2024-01-01T00:00:00Z",
        &[tar_layer(&[("a", b"1")]), tar_layer(&[("b", b"2")])],
    );
    let (engine, _dir) = engine(&fake).await;
    let inspect = list::inspect(&engine, "busybox").await.unwrap();
    let json = serde_json::to_value(&inspect).unwrap();
    assert_eq!(json["Id"], id.as_str());
    assert_eq!(json["RepoTags"], serde_json::json!(["busybox:latest"]));
    assert!(json["RepoDigests"][0]
        .as_str()
        .unwrap()
        .starts_with("busybox@sha256:"));
    assert_eq!(json["Config"]["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(json["RootFS"]["Type"], "layers");
    assert_eq!(json["RootFS"]["Layers"].as_array().unwrap().len(), 2);
    assert_eq!(json["GraphDriver"]["Name"], "overlay2");
    assert_eq!(json["Os"], "linux");
    assert!(json["Metadata"]["LastTagTime"].is_string());

    let history = list::history(&engine, &id).await.unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].id, id);
    assert_eq!(history[0].tags, Some(vec!["busybox:latest".to_string()]));
    assert_eq!(history[1].id, "<missing>");
    assert_eq!(history[0].created_by, "ADD x");
}

#[tokio::test]
async fn tag_untag_and_delete() {
    let fake = Fake::new();
    let layer = tar_layer(&[("a", b"1")]);
    let id = add(
        &fake,
        BUSYBOX,
        "2024-01-01T00:00:00Z",
        std::slice::from_ref(&layer),
    );
    let (engine, _dir) = engine(&fake).await;
    let (_, mut events) = engine.events.subscribe();

    remove::tag(&engine, "busybox", "localhost:5000/bb", "v1")
        .await
        .unwrap();
    let tagged = lookup(&engine, "localhost:5000/bb:v1").await.unwrap();
    assert_eq!(tagged.image.id, id);
    assert_eq!(tagged.names.len(), 2);
    let event = events.try_recv().unwrap();
    assert_eq!(
        (event.action.as_str(), event.actor.id.as_str()),
        ("tag", id.as_str())
    );
    assert_eq!(event.actor.attributes["name"], "localhost:5000/bb:v1");

    // Two names: removing one untags.
    let removed = remove::delete(&engine, "localhost:5000/bb:v1", false)
        .await
        .unwrap();
    assert_eq!(removed, [Removed::Untagged("localhost:5000/bb:v1".into())]);
    assert_eq!(events.try_recv().unwrap().action, "untag");

    // The last name: the image goes.
    let removed = remove::delete(&engine, "busybox", false).await.unwrap();
    assert_eq!(
        removed,
        [
            Removed::Untagged("busybox:latest".into()),
            Removed::Deleted(id.clone()),
            Removed::Deleted(digest(&layer)),
        ]
    );
    let json = serde_json::to_value(&removed).unwrap();
    assert_eq!(json[0], serde_json::json!({"Untagged": "busybox:latest"}));
    assert_eq!(json[1], serde_json::json!({"Deleted": id}));
    assert!(matches!(
        lookup(&engine, "busybox").await,
        Err(ImageError::NotFound(_))
    ));
}

#[tokio::test]
async fn containers_protect_their_image() {
    let fake = Fake::new();
    let id = add(
        &fake,
        BUSYBOX,
        "2024-01-01T00:00:00Z",
        &[tar_layer(&[("a", b"1")])],
    );
    let (engine, _dir) = engine(&fake).await;
    let c = "c0ffee".repeat(10) + "abcd";
    use crate::backend::Supervisor as _;
    fake.create_container(containers::CreateContainerRequest {
        id: c.clone(),
        image: BUSYBOX.into(),
        ..Default::default()
    })
    .await
    .unwrap();

    let err = remove::delete(&engine, "busybox", false).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ImageError::Conflict(_)));
    assert!(
        text.starts_with("conflict: unable to remove repository reference \"busybox\" (must force) - container c0ffeec0ffee is using its referenced image"),
        "{text}"
    );
    let hex = id.strip_prefix("sha256:").unwrap();
    let err = remove::delete(&engine, &hex[..12], false)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("(must be forced) - image is being used by stopped container c0ffeec0ffee"),
        "{err}"
    );

    // A running container: not even forced.
    fake.create_task(&c, Default::default()).await.unwrap();
    fake.start(&c, "").await.unwrap();
    let err = remove::delete(&engine, hex, true)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("(cannot be forced) - image is being used by running container"),
        "{err}"
    );

    // Forced by name: untagged, kept (dangling) for the container.
    let removed = remove::delete(&engine, "busybox", true).await.unwrap();
    assert_eq!(removed, [Removed::Untagged("busybox:latest".into())]);
    let dangling = Filters::parse(Some(&serde_json::json!({"dangling": ["true"]}))).unwrap();
    let left = list::list(&engine, false, &dangling).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, id);
    assert!(left[0].repo_tags.is_empty());
    // Prune leaves it: a container uses it.
    let pruned = remove::prune(&engine, &Filters::default()).await.unwrap();
    assert!(pruned.images_deleted.is_none());
}

#[tokio::test]
async fn prune_removes_unused_dangling_images() {
    let fake = Fake::new();
    let (mut record, blobs) = image("x", "2024-01-01T00:00:00Z", &[tar_layer(&[("a", b"1")])]);
    record.name = format!(
        "docker.io/library/x@{}",
        record.target.clone().unwrap().digest
    );
    fake.add_image(record, blobs.clone());
    add(
        &fake,
        BUSYBOX,
        "2024-01-01T00:00:00Z",
        &[tar_layer(&[("b", b"2")])],
    );
    let (engine, _dir) = engine(&fake).await;
    let pruned = remove::prune(&engine, &Filters::default()).await.unwrap();
    assert_eq!(
        pruned.images_deleted.unwrap(),
        [
            Removed::Deleted(blobs[1].0.clone()),
            Removed::Deleted(digest(&tar_layer(&[("a", b"1")]))),
        ]
    );
    assert!(lookup(&engine, "busybox").await.is_ok());
    let everything = Filters::parse(Some(&serde_json::json!({"dangling": ["false"]}))).unwrap();
    let pruned = remove::prune(&engine, &everything).await.unwrap();
    assert_eq!(pruned.images_deleted.unwrap().len(), 3);
}

#[tokio::test]
async fn pull_streams_docker_progress() {
    let fake = Fake::new();
    let layer = tar_layer(&[("a", b"1")]);
    let (record, blobs) = image(
        BUSYBOX,
        "2024-01-01T00:00:00Z",
        std::slice::from_ref(&layer),
    );
    let layer_digest = digest(&layer);
    let manifest = record.target.clone().unwrap().digest;
    let p = |state: pb::ProgressState, offset: i64| pb::Progress {
        digest: layer_digest.clone(),
        kind: "layer".into(),
        state: state as i32,
        offset,
        total: 10,
    };
    fake.add_remote(
        record,
        blobs,
        vec![
            vec![p(pb::ProgressState::Waiting, 0)],
            vec![p(pb::ProgressState::Downloading, 5)],
            vec![p(pb::ProgressState::Done, 10)],
        ],
    );
    let (engine, _dir) = engine(&fake).await;
    let opts = PullOptions {
        image: "busybox".into(),
        tag: "latest".into(),
        ..Default::default()
    };
    let lines: Vec<_> = transfer::pull(Arc::clone(&engine), opts.clone())
        .await
        .unwrap()
        .collect()
        .await;
    let statuses: Vec<String> = lines.iter().filter_map(|m| m.status.clone()).collect();
    let short = &layer_digest[7..19];
    assert_eq!(lines[0].id.as_deref(), Some("latest"));
    assert_eq!(lines[1].id.as_deref(), Some(short));
    assert_eq!(
        statuses,
        [
            "Pulling from library/busybox".to_string(),
            "Pulling fs layer".into(),
            "Downloading".into(),
            "Verifying Checksum".into(),
            "Download complete".into(),
            "Extracting".into(),
            "Pull complete".into(),
            format!("Digest: {manifest}"),
            "Status: Downloaded newer image for busybox:latest".into(),
        ]
    );
    let (kept, _) = engine.events.subscribe();
    let pull = kept.iter().find(|e| e.action == "pull").unwrap();
    assert_eq!(pull.actor.id, "busybox:latest");
    assert_eq!(pull.actor.attributes["name"], "busybox");

    let again: Vec<_> = transfer::pull(Arc::clone(&engine), opts)
        .await
        .unwrap()
        .collect()
        .await;
    let last = again.last().unwrap().status.clone().unwrap();
    assert_eq!(last, "Status: Image is up to date for busybox:latest");

    // A first step that fails is the request's error, before any stream.
    let missing = PullOptions {
        image: "nope".into(),
        ..Default::default()
    };
    let err = transfer::pull(Arc::clone(&engine), missing)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, ImageError::ManifestUnknown { .. }), "{err}");
}

#[tokio::test]
async fn load_says_what_it_loaded() {
    let fake = Fake::new();
    let (record, blobs) = image(
        BUSYBOX,
        "2024-01-01T00:00:00Z",
        &[tar_layer(&[("a", b"1")])],
    );
    for (d, b) in &blobs {
        // Blobs arrive with the archive; the fake keeps them up front.
        fake.add_image(
            pb::Image {
                name: format!("blob-{d}"),
                ..Default::default()
            },
            vec![(d.clone(), b.clone())],
        );
    }
    use crate::backend::Supervisor as _;
    for (d, _) in &blobs {
        fake.delete_image(&format!("blob-{d}")).await.unwrap();
    }
    fake.set_import(vec![record]);
    let (engine, _dir) = engine(&fake).await;
    let body = futures_util::stream::iter([Ok(Bytes::from_static(b"tarball"))]).boxed();
    let lines = archive::load(&engine, body).await.unwrap();
    let text: Vec<_> = lines.iter().filter_map(|m| m.stream.clone()).collect();
    assert_eq!(text, ["Loaded image: busybox:latest\n"]);
}

#[tokio::test]
async fn login_checks_with_the_registry() {
    let fake = Fake::new();
    fake.add_login("127.0.0.1:5000", "me", "secret");
    let (engine, _dir) = engine(&fake).await;
    let auth = |password: &str| AuthConfig {
        username: "me".into(),
        password: password.into(),
        serveraddress: "127.0.0.1:5000".into(),
        ..Default::default()
    };
    auth::login(&engine, auth("secret")).await.unwrap();
    let err = auth::login(&engine, auth("wrong")).await.unwrap_err();
    assert!(matches!(err, ImageError::Unauthorized(_)));
    assert!(err.to_string().contains("401 Unauthorized"), "{err}");
}

#[tokio::test]
async fn an_up_to_date_pull_names_no_layers() {
    let fake = Fake::new();
    let layer = tar_layer(&[("a", b"1")]);
    let (record, blobs) = image(
        BUSYBOX,
        "2024-01-01T00:00:00Z",
        std::slice::from_ref(&layer),
    );
    fake.add_image(record.clone(), blobs.clone());
    let exists = pb::Progress {
        digest: digest(&layer),
        kind: "layer".into(),
        state: pb::ProgressState::Exists as i32,
        offset: 10,
        total: 10,
    };
    fake.add_remote(record, blobs, vec![vec![exists]]);
    let (engine, _dir) = engine(&fake).await;
    let opts = PullOptions {
        image: "busybox".into(),
        ..Default::default()
    };
    let lines: Vec<_> = transfer::pull(Arc::clone(&engine), opts)
        .await
        .unwrap()
        .collect()
        .await;
    let statuses: Vec<&str> = lines.iter().filter_map(|m| m.status.as_deref()).collect();
    assert_eq!(statuses.len(), 3, "{statuses:?}");
    assert_eq!(statuses[0], "Pulling from library/busybox");
    assert!(statuses[1].starts_with("Digest: sha256:"));
    assert_eq!(
        statuses[2],
        "Status: Image is up to date for busybox:latest"
    );
}

#[test]
fn chain_ids_of_layers() {
    let a = format!("sha256:{}", "a".repeat(64));
    let b = format!("sha256:{}", "b".repeat(64));
    let chain = remove::chain_ids(&[a.clone(), b.clone()]);
    assert_eq!(chain[0], a);
    assert_eq!(chain[1], digest(format!("{a} {b}").as_bytes()));
}
