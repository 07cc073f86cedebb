use serde_json::json;

use super::super::tests::build_with;
use super::*;
use crate::types::{ContainerConfig, TmpfsOptions};

fn spec_mounts(hc: HostConfig) -> Result<Vec<Value>, String> {
    build_with(ContainerConfig::default(), hc)
        .map(|b| b.spec["mounts"].as_array().cloned().unwrap_or_default())
        .map_err(|e| e.to_string())
}

fn find<'a>(mounts: &'a [Value], dest: &str) -> &'a Value {
    mounts
        .iter()
        .find(|m| m["destination"] == dest)
        .unwrap_or_else(|| panic!("no mount on {dest}: {mounts:?}"))
}

fn binds(b: &[&str]) -> HostConfig {
    HostConfig {
        binds: Some(b.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    }
}

#[test]
fn binds_parse_as_docker_parses_them() {
    let table: &[(&str, Value)] = &[
        (
            "/srv/data:/data",
            json!({"destination": "/data", "type": "bind", "source": "/srv/data",
                   "options": ["rbind", "rprivate"]}),
        ),
        (
            "/srv/data:/data:ro",
            json!({"destination": "/data", "type": "bind", "source": "/srv/data",
                   "options": ["rbind", "ro", "rprivate"]}),
        ),
        (
            "/srv/data/:/data/./x/:rw,z,rslave",
            json!({"destination": "/data/x", "type": "bind", "source": "/srv/data",
                   "options": ["rbind", "rslave"]}),
        ),
    ];
    for (raw, want) in table {
        let m = spec_mounts(binds(&[raw])).unwrap();
        let dest = want["destination"].as_str().unwrap();
        assert_eq!(find(&m, dest), want, "{raw}");
    }
    let errors: &[(&str, &str)] = &[
        ("/a:/b:c:d", "invalid volume specification: '/a:/b:c:d'"),
        ("/srv:/x:ro,rw", "invalid mode: ro,rw"),
        ("/srv:/x:bogus", "invalid mode: bogus"),
        (
            "/srv:rel",
            "invalid mount config for type \"bind\": invalid mount path: 'rel' mount path must be absolute",
        ),
        ("/srv:/", "invalid mount config for type \"bind\": destination can't be '/'"),
        ("myvol:/data", "named volumes are not supported yet: myvol"),
        (":/data", "invalid volume specification: ':/data'"),
    ];
    for (raw, want) in errors {
        assert_eq!(spec_mounts(binds(&[raw])).unwrap_err(), *want, "{raw}");
    }
    assert_eq!(
        spec_mounts(binds(&["/srv:/x", "/srv/data:/x/"])).unwrap_err(),
        "Duplicate mount point: /x"
    );
}

#[test]
fn a_missing_bind_source_is_created_for_v_and_refused_for_mount() {
    let built = build_with(ContainerConfig::default(), binds(&["/new/dir:/d"])).unwrap();
    assert_eq!(built.missing_bind_sources, [PathBuf::from("/new/dir")]);
    let hc = HostConfig {
        mounts: Some(vec![Mount {
            kind: "bind".into(),
            source: "/new/dir".into(),
            target: "/d".into(),
            ..Default::default()
        }]),
        ..Default::default()
    };
    assert_eq!(
        spec_mounts(hc).unwrap_err(),
        "invalid mount config for type \"bind\": bind source path does not exist: /new/dir"
    );
}

#[test]
fn api_mounts_bind_and_tmpfs() {
    let hc = HostConfig {
        mounts: Some(vec![
            Mount {
                kind: "bind".into(),
                source: "/srv/data".into(),
                target: "/data".into(),
                read_only: true,
                bind_options: Some(json!({"Propagation": "rshared", "NonRecursive": true})),
                ..Default::default()
            },
            Mount {
                kind: "tmpfs".into(),
                target: "/scratch".into(),
                tmpfs_options: Some(TmpfsOptions {
                    size_bytes: Some(64 << 20),
                    mode: Some(0o1777),
                    options: None,
                }),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    let built = build_with(ContainerConfig::default(), hc).unwrap();
    let m = built.spec["mounts"].as_array().unwrap();
    assert_eq!(
        find(m, "/data")["options"],
        json!(["bind", "ro", "rshared"])
    );
    assert_eq!(built.spec["linux"]["rootfsPropagation"], "shared");
    assert_eq!(
        find(m, "/scratch")["options"],
        json!([
            "noexec",
            "nosuid",
            "nodev",
            "rprivate",
            "mode=1777",
            "size=64m"
        ])
    );
    let bad = |kind: &str, source: &str, target: &str| {
        spec_mounts(HostConfig {
            mounts: Some(vec![Mount {
                kind: kind.into(),
                source: source.into(),
                target: target.into(),
                ..Default::default()
            }]),
            ..Default::default()
        })
        .unwrap_err()
    };
    assert_eq!(
        bad("bind", "", "/x"),
        "invalid mount config for type \"bind\": field Source must not be empty"
    );
    assert_eq!(
        bad("bind", "/srv", ""),
        "invalid mount config for type \"bind\": field Target must not be empty"
    );
    assert_eq!(
        bad("tmpfs", "/srv", "/x"),
        "invalid mount config for type \"tmpfs\": field Source must not be specified"
    );
    assert_eq!(
        bad("npipe", "/srv", "/x"),
        "invalid mount config for type \"npipe\": mount type unknown"
    );
}

#[test]
fn tmpfs_options_merge_with_later_ones_winning() {
    let hc = HostConfig {
        tmpfs: Some(
            [
                ("/run".to_string(), "size=10m,mode=755,exec".to_string()),
                ("/tmp".to_string(), String::new()),
            ]
            .into(),
        ),
        ..Default::default()
    };
    let m = spec_mounts(hc).unwrap();
    assert_eq!(
        find(&m, "/run")["options"],
        json!(["nosuid", "nodev", "rprivate", "size=10m", "mode=755", "exec"])
    );
    assert_eq!(
        find(&m, "/tmp")["options"],
        json!(["noexec", "nosuid", "nodev", "rprivate"])
    );
    let bad = HostConfig {
        tmpfs: Some([("/run".to_string(), "bogus=1".to_string())].into()),
        ..Default::default()
    };
    assert_eq!(
        spec_mounts(bad).unwrap_err(),
        "invalid tmpfs option \"bogus=1\""
    );
    let opts = |o: &[&str]| o.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        merge_tmpfs_options(&opts(&["size=1m", "ro", "rw", "size=2m", "defaults"])).unwrap(),
        ["rw", "size=2m"]
    );
}

#[test]
fn shm_size_ipc_none_and_user_mounts_over_defaults() {
    let hc = HostConfig {
        shm_size: 1 << 20,
        ..Default::default()
    };
    let m = spec_mounts(hc).unwrap();
    assert_eq!(find(&m, "/dev/shm")["options"][4], "size=1048576");
    let none = HostConfig {
        ipc_mode: "none".into(),
        ..Default::default()
    };
    let m = spec_mounts(none).unwrap();
    assert!(!m.iter().any(|m| m["destination"] == "/dev/shm"));
    // A bind on /etc/hosts replaces the engine's file; one on /dev drops
    // every default mount below /dev.
    let m = spec_mounts(binds(&["/etc/hosts:/etc/hosts:ro", "/srv:/dev"])).unwrap();
    assert_eq!(find(&m, "/etc/hosts")["source"], "/etc/hosts");
    assert!(!m.iter().any(|m| m["destination"] == "/dev/pts"));
    let dests: Vec<_> = m
        .iter()
        .map(|m| m["destination"].as_str().unwrap())
        .collect();
    assert_eq!(
        dests,
        [
            "/proc",
            "/sys",
            "/sys/fs/cgroup",
            "/dev",
            "/etc/hosts",
            "/etc/resolv.conf",
            "/etc/hostname"
        ]
    );
}

#[test]
fn tmpfs_mounts_come_after_binds_of_the_same_depth() {
    let hc = HostConfig {
        tmpfs: Some([("/etc/cache".to_string(), String::new())].into()),
        mounts: Some(vec![Mount {
            kind: "tmpfs".into(),
            target: "/b".into(),
            ..Default::default()
        }]),
        binds: Some(vec!["/srv:/a".into(), "/srv:/etc/conf".into()]),
        ..Default::default()
    };
    let m = spec_mounts(hc).unwrap();
    let dests: Vec<_> = m[7..]
        .iter()
        .map(|m| m["destination"].as_str().unwrap())
        .collect();
    assert_eq!(
        dests,
        [
            "/a",
            "/b",
            "/etc/conf",
            "/etc/resolv.conf",
            "/etc/hostname",
            "/etc/hosts",
            "/etc/cache"
        ]
    );
    let dup = HostConfig {
        tmpfs: Some([("/a".to_string(), String::new())].into()),
        binds: Some(vec!["/srv:/a".into()]),
        ..Default::default()
    };
    assert_eq!(spec_mounts(dup).unwrap_err(), "Duplicate mount point: /a");
}

#[test]
fn clean_is_lexical() {
    for (raw, want) in [
        ("/a/./b/", "/a/b"),
        ("//a//b", "/a/b"),
        ("/a/../..", "/"),
        ("/", "/"),
    ] {
        assert_eq!(clean(raw), want);
    }
}
