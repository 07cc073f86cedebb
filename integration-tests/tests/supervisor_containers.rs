//! The supervisor's containers end to end: created from a pulled image with
//! overrides, the spec checked as stored, the snapshot prepared on the
//! image's top layer, listed with filters, updated, kept alive across an
//! `images rm`, deleted with nothing left; bad input refused with clear
//! errors and nothing left behind; events published.

use std::collections::HashMap;
use std::time::Duration;

use berth_proto::containers::v1 as pb;
use berth_proto::events::v1 as events_pb;
use berth_proto::snapshots::v1 as snapshots_pb;
use integration_tests::registry::{Auth, Registry};
use integration_tests::supervisor::{
    assert_store_empty, connect, push_layered, runtime, top_chain, Supervisor,
};
use integration_tests::CONTAINER_PATH;
use serde_json::Value;
use tonic::Code;

/// (topic, id, image) of the next `count` events on `stream`.
fn read_events(
    rt: &tokio::runtime::Runtime,
    stream: &mut tonic::Streaming<events_pb::Envelope>,
    count: usize,
) -> Vec<(String, String, String)> {
    rt.block_on(async {
        let mut out = Vec::new();
        while out.len() < count {
            let e = tokio::time::timeout(Duration::from_secs(20), stream.message())
                .await
                .unwrap_or_else(|_| panic!("only {} of {count} events came: {out:?}", out.len()))
                .expect("event stream")
                .expect("stream ended");
            let attr = |k: &str| e.attributes.get(k).cloned().unwrap_or_default();
            out.push((e.topic.clone(), attr("id"), attr("image")));
        }
        out
    })
}

/// key → (parent, kind) from `berth-ctr snapshots ls`.
fn snapshots(sup: &Supervisor) -> HashMap<String, (String, String)> {
    let out = sup.ctr(&["snapshots", "ls"]).ok();
    out.stdout
        .lines()
        .skip(1)
        .map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            match cols[..] {
                [key, kind] => (key.to_string(), (String::new(), kind.to_string())),
                [key, parent, kind] => (key.to_string(), (parent.to_string(), kind.to_string())),
                _ => panic!("snapshots ls line {line:?}"),
            }
        })
        .collect()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn ids(list: &[pb::Container]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|c| c.id.clone()).collect();
    v.sort();
    v
}

#[test]
fn containers_from_a_pulled_image() {
    let registry = Registry::start(Auth::None);
    let image = push_layered(&registry, "test/containers:v1");
    let sup = Supervisor::start();
    let name = format!("{}/test/containers:v1", registry.host());
    sup.ctr(&["images", "pull", &name]).ok();
    let top = top_chain(image);

    let rt = runtime();
    let client = connect(&rt, &sup, "default");
    let mut events = rt
        .block_on(client.events().subscribe(events_pb::SubscribeRequest {
            topics: vec!["/containers/".to_string()],
            after_sequence: None,
        }))
        .expect("subscribe")
        .into_inner();

    // With overrides, through berth-ctr.
    let out = sup
        .ctr(&[
            "containers",
            "create",
            "--env",
            "FOO=bar",
            "--env",
            "PATH=/custom/bin",
            "--cwd",
            "/tmp",
            "--user",
            "1000:1001",
            "--tty",
            &name,
            "web",
            "sh",
            "-c",
            "echo hi",
        ])
        .ok();
    assert_eq!(out.stdout.trim(), "web");
    let info: Value = serde_json::from_str(&sup.ctr(&["containers", "info", "web"]).ok().stdout)
        .expect("info is JSON");
    assert_eq!(info["id"], "web");
    assert_eq!(info["image"], name.as_str());
    assert_eq!(info["snapshot_key"], "web");
    assert_eq!(info["runtime"], "berth-runtime");
    let process = &info["spec"]["process"];
    assert_eq!(process["args"], serde_json::json!(["sh", "-c", "echo hi"]));
    // The image's PATH replaced in place, FOO added, TERM for the tty.
    assert_eq!(
        process["env"],
        serde_json::json!(["PATH=/custom/bin", "FOO=bar", "TERM=xterm"])
    );
    assert_eq!(process["cwd"], "/tmp");
    assert_eq!(process["user"]["uid"], 1000);
    assert_eq!(process["user"]["gid"], 1001);
    assert_eq!(process["terminal"], true);
    assert_eq!(info["spec"]["root"]["path"], "rootfs");

    // Without overrides, through the API: the image's own process.
    let plain = rt
        .block_on(client.containers().create(pb::CreateContainerRequest {
            id: "plain".to_string(),
            image: name.clone(),
            labels: [("tier".to_string(), "db".to_string())].into(),
            ..Default::default()
        }))
        .expect("create plain")
        .into_inner();
    let spec: Value = serde_json::from_slice(&plain.spec).expect("spec JSON");
    assert_eq!(spec["process"]["args"], serde_json::json!(["sh"]));
    assert_eq!(spec["process"]["env"], serde_json::json!([CONTAINER_PATH]));
    assert_eq!(spec["process"]["cwd"], "/");
    assert_eq!(spec["process"]["user"]["uid"], 0);
    assert_eq!(spec["process"]["terminal"], false);

    // Each has an active snapshot named after it on the image's top layer.
    let snaps = snapshots(&sup);
    for id in ["web", "plain"] {
        assert_eq!(
            snaps.get(id),
            Some(&(top.clone(), "Active".to_string())),
            "{snaps:?}"
        );
    }

    // A container on a snapshot of the caller's: delete leaves it.
    rt.block_on(
        client
            .snapshots()
            .prepare(snapshots_pb::PrepareSnapshotRequest {
                key: "mine".to_string(),
                parent: top.clone(),
                labels: Default::default(),
            }),
    )
    .expect("prepare mine");
    rt.block_on(client.containers().create(pb::CreateContainerRequest {
        id: "own".to_string(),
        image: name.clone(),
        snapshot_key: "mine".to_string(),
        ..Default::default()
    }))
    .expect("create own");
    sup.ctr(&["containers", "rm", "own"]).ok();
    assert!(snapshots(&sup).contains_key("mine"));
    sup.ctr(&["snapshots", "rm", "mine"]).ok();

    // Lists, with filters.
    let list = |image: &str, labels: &[&str]| {
        rt.block_on(client.containers().list(pb::ListContainersRequest {
            image: image.to_string(),
            labels: strings(labels),
        }))
        .expect("list")
        .into_inner()
        .containers
    };
    assert_eq!(ids(&list("", &[])), strings(&["plain", "web"]));
    assert_eq!(ids(&list(&name, &[])), strings(&["plain", "web"]));
    assert_eq!(ids(&list("other/image:1", &[])), Vec::<String>::new());
    assert_eq!(ids(&list("", &["tier=db"])), strings(&["plain"]));
    assert_eq!(ids(&list("", &["tier"])), strings(&["plain"]));
    assert_eq!(ids(&list("", &["tier=web"])), Vec::<String>::new());
    let ls = sup.ctr(&["containers", "ls"]).ok().stdout;
    let lines: Vec<&str> = ls.lines().collect();
    assert_eq!(lines.len(), 3, "{ls}");
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("RUNTIME"),
        "{ls}"
    );
    assert!(
        lines[2].starts_with("web ") && lines[2].contains(&name),
        "{ls}"
    );
    assert!(lines[2].contains("berth-runtime"), "{ls}");
    assert_eq!(
        sup.ctr(&["containers", "ls", "-q"]).ok().stdout,
        "plain\nweb\n"
    );

    // Update: labels set and removed.
    let updated = rt
        .block_on(client.containers().update(pb::UpdateContainerRequest {
            id: "plain".to_string(),
            set_labels: [("a".to_string(), "1".to_string())].into(),
            remove_labels: strings(&["tier"]),
            spec: Vec::new(),
        }))
        .expect("update")
        .into_inner();
    assert_eq!(
        updated.labels,
        HashMap::from([("a".to_string(), "1".to_string())])
    );
    assert_eq!(updated.spec, plain.spec);
    let t = |c: &pb::Container| c.updated_at.map(|t| (t.seconds, t.nanos));
    assert!(t(&updated) > t(&plain), "{updated:?}");

    // Bad input: a clear error, and nothing created.
    let before = snapshots(&sup);
    sup.ctr(&["containers", "create", &name, "web"])
        .failed_with("container \"web\" already exists");
    sup.ctr(&["containers", "create", "no/such:image", "x1"])
        .failed_with("image \"no/such:image\" not found");
    sup.ctr(&["containers", "create", &name, "bad/id"])
        .failed_with("invalid container id");
    sup.ctr(&["containers", "create", "--env", "NOEQUALS", &name, "x2"])
        .failed_with("\"NOEQUALS\" is not KEY=VALUE");
    sup.ctr(&["containers", "create", "--cwd", "relative", &name, "x3"])
        .failed_with("not an absolute path");
    sup.ctr(&["containers", "create", "--user", "nosuchuser", &name, "x4"])
        .failed_with("unable to find user nosuchuser: no matching entries in passwd file");
    sup.ctr(&[
        "containers",
        "create",
        "--user",
        "nobody:wheel",
        &name,
        "x4",
    ])
    .failed_with("unable to find group wheel: no matching entries in group file");
    let create = |r: pb::CreateContainerRequest| {
        rt.block_on(client.containers().create(r))
            .expect_err("refused")
    };
    let err = create(pb::CreateContainerRequest {
        id: "x5".to_string(),
        image: name.clone(),
        overrides: Some(pb::Overrides {
            args: strings(&["sh", "a\0b"]),
            ..Default::default()
        }),
        ..Default::default()
    });
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("NUL"), "{err:?}");
    let err = create(pb::CreateContainerRequest {
        id: "x6".to_string(),
        image: name.clone(),
        spec: b"{not json".to_vec(),
        ..Default::default()
    });
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("invalid spec"), "{err:?}");
    let err = create(pb::CreateContainerRequest {
        id: "web".to_string(),
        image: name.clone(),
        ..Default::default()
    });
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    let err = create(pb::CreateContainerRequest {
        id: "x7".to_string(),
        image: "no/such:image".to_string(),
        ..Default::default()
    });
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert_eq!(ids(&list("", &[])), strings(&["plain", "web"]));
    assert_eq!(snapshots(&sup), before);
    let err = rt
        .block_on(client.containers().get(pb::GetContainerRequest {
            id: "x1".to_string(),
        }))
        .expect_err("no x1");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // The image's name goes; its layers stay while containers use them.
    sup.ctr(&["images", "rm", &name]).ok();
    assert!(!sup.snapshot_dirs().is_empty());
    assert!(snapshots(&sup).contains_key(&top));
    sup.ctr(&["containers", "rm", "web", "plain"]).ok();
    sup.ctr(&["containers", "rm", "web"])
        .failed_with("container \"web\" not found");
    assert_store_empty(&sup);

    // Events: create web, plain, own; delete own; update plain; delete
    // web, plain.
    let seen = read_events(&rt, &mut events, 7);
    let want = [
        ("/containers/create", "web"),
        ("/containers/create", "plain"),
        ("/containers/create", "own"),
        ("/containers/delete", "own"),
        ("/containers/update", "plain"),
        ("/containers/delete", "web"),
        ("/containers/delete", "plain"),
    ];
    let got: Vec<(&str, &str)> = seen
        .iter()
        .map(|(t, id, _)| (t.as_str(), id.as_str()))
        .collect();
    assert_eq!(got, want);
    assert!(seen.iter().all(|(_, _, image)| image == &name), "{seen:?}");
}
