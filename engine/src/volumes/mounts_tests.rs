use super::*;
use crate::types::Mount;

fn hc(binds: &[&str]) -> HostConfig {
    HostConfig {
        binds: Some(binds.iter().map(|s| s.to_string()).collect()),
        ..HostConfig::default()
    }
}

#[test]
fn binds_that_name_volumes() {
    let w = from_binds(&hc(&[
        "/host:/h",
        "data:/data:ro,nocopy",
        "/anon",
        "v2:/x/../y",
    ]))
    .unwrap();
    assert_eq!(w.len(), 3);
    assert_eq!(w[0].name.as_deref(), Some("data"));
    assert!(!w[0].point.rw && !w[0].point.copy_data);
    assert_eq!(w[0].point.mode, "ro,nocopy");
    assert_eq!(w[1].name, None);
    assert_eq!(w[1].point.destination, "/anon");
    assert_eq!(w[2].point.destination, "/y");
    assert_eq!(w[2].point.mode, "z");
    let err = |b: &str| from_binds(&hc(&[b])).unwrap_err().to_string();
    assert!(err("data:rel").contains("must be absolute"));
    assert!(err("rel").contains("must be absolute"));
    assert!(err("data:/d:bogus").contains("invalid mode"));
    assert!(err("x:/d").contains("too short"));
}

#[test]
fn volume_mounts_with_options() {
    let m = Mount {
        kind: "volume".into(),
        source: "cache".into(),
        target: "/cache".into(),
        read_only: true,
        volume_options: Some(serde_json::json!({
            "NoCopy": true, "Subpath": "sub/dir", "Labels": {"a": "b"},
            "DriverConfig": {"Name": "local", "Options": {"type": "tmpfs", "device": "tmpfs"}}
        })),
        ..Mount::default()
    };
    let host = HostConfig {
        mounts: Some(vec![m.clone()]),
        ..HostConfig::default()
    };
    let w = from_mounts(&host).unwrap();
    assert_eq!(w[0].point.subpath, "sub/dir");
    assert!(!w[0].point.copy_data && !w[0].point.rw);
    assert_eq!(w[0].options.get("type").map(String::as_str), Some("tmpfs"));
    assert_eq!(w[0].labels.get("a").map(String::as_str), Some("b"));
    let bad = |f: &dyn Fn(&mut Mount)| {
        let mut m = m.clone();
        f(&mut m);
        from_mounts(&HostConfig {
            mounts: Some(vec![m]),
            ..HostConfig::default()
        })
        .unwrap_err()
        .to_string()
    };
    assert!(bad(&|m| m.target = "rel".into()).contains("must be absolute"));
    assert!(
        bad(&|m| m.volume_options = Some(serde_json::json!({"Subpath": "../x"})))
            .contains("subpath")
    );
    assert!(bad(&|m| {
        m.volume_options = Some(serde_json::json!({"DriverConfig": {"Name": "other"}}))
    })
    .contains("not found"));
}

fn record(points: Vec<MountPoint>, binds: &[&str]) -> ContainerRecord {
    let mut r: ContainerRecord = serde_json::from_value(serde_json::json!({
        "id": "c1", "name": "n", "created": {"secs_since_epoch": 0, "nanos_since_epoch": 0},
        "image": "busybox", "image_id": "sha256:x", "image_ref": "busybox",
        "config": {}, "host_config": {}, "networking_config": {},
        "path": "sh", "args": [], "state": {}, "restart_count": 0,
        "user": {"uid": 0, "gid": 0, "additional_gids": []}
    }))
    .unwrap();
    r.host_config = hc(binds);
    r.mount_points = points;
    r
}

#[test]
fn volumes_become_binds_for_the_spec_and_show_in_inspect() {
    let p = MountPoint {
        kind: "volume".into(),
        name: "data".into(),
        source: "/vol/data/_data".into(),
        destination: "/data".into(),
        driver: "local".into(),
        mode: "z".into(),
        rw: false,
        ..MountPoint::default()
    };
    let r = record(vec![p], &["/host:/h:ro", "data:/data", "/anon"]);
    let hc = spec_host_config(&r);
    assert_eq!(
        hc.binds.unwrap(),
        vec![
            "/host:/h:ro".to_string(),
            "/vol/data/_data:/data:ro".to_string()
        ]
    );
    let mounts = inspect(&r);
    assert_eq!(
        mounts,
        serde_json::json!([
            {"Type": "volume", "Name": "data", "Source": "/vol/data/_data", "Destination": "/data",
             "Driver": "local", "Mode": "z", "RW": false, "Propagation": ""},
            {"Type": "bind", "Source": "/host", "Destination": "/h", "Mode": "ro", "RW": false,
             "Propagation": "rprivate"},
        ])
    );
}
