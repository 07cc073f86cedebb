use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use super::*;
use crate::cri::container::host::{HostDevice, Propagation};
use crate::cri::container::security::capabilities;

/// A machine described by tables.
struct FakeHost {
    files: HashMap<PathBuf, String>,
    /// Existing paths and the mount (and its propagation) each is on.
    paths: HashMap<PathBuf, (PathBuf, Propagation)>,
    devices: HashMap<PathBuf, HostDevice>,
    min_oom: i64,
    cgroup_v2: bool,
}

impl Default for FakeHost {
    fn default() -> Self {
        let null = HostDevice {
            kind: 'c',
            major: 1,
            minor: 3,
            file_mode: 0o666,
            uid: 0,
            gid: 0,
        };
        let mut paths = HashMap::new();
        for p in [
            "/data",
            "/pod/hostname",
            "/pod/hosts",
            "/pod/resolv.conf",
            "/pod/shm",
            "/dev/shm",
        ] {
            paths.insert(PathBuf::from(p), (PathBuf::from("/"), Propagation::Private));
        }
        paths.insert(
            PathBuf::from("/shared/x"),
            (PathBuf::from("/shared"), Propagation::Shared),
        );
        paths.insert(
            PathBuf::from("/slave/x"),
            (PathBuf::from("/slave"), Propagation::Slave),
        );
        FakeHost {
            files: HashMap::from([(
                PathBuf::from("/profiles/deny-mkdir.json"),
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO"}]}"#.to_string(),
            )]),
            paths,
            devices: HashMap::from([(PathBuf::from("/dev/null"), null)]),
            min_oom: -1000,
            cgroup_v2: false,
        }
    }
}

impl Host for FakeHost {
    fn kernel(&self) -> (u32, u32) {
        (6, 1)
    }
    fn last_cap(&self) -> u32 {
        40
    }
    fn grantable_caps(&self) -> u64 {
        u64::MAX
    }
    fn cgroup_v2(&self) -> bool {
        self.cgroup_v2
    }
    fn hostname(&self) -> String {
        "node1".into()
    }
    fn resolve(&self, path: &Path) -> io::Result<PathBuf> {
        if self.paths.contains_key(path) || self.devices.contains_key(path) {
            Ok(path.to_path_buf())
        } else {
            Err(io::Error::from(io::ErrorKind::NotFound))
        }
    }
    fn mount_of(&self, path: &Path) -> io::Result<(PathBuf, Propagation)> {
        self.paths
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
    fn device(&self, path: &Path) -> io::Result<Option<HostDevice>> {
        match self.devices.get(path) {
            Some(d) => Ok(Some(d.clone())),
            None if self.paths.contains_key(path) => Ok(None),
            None => Err(io::Error::from(io::ErrorKind::NotFound)),
        }
    }
    fn host_devices(&self) -> Vec<(PathBuf, HostDevice)> {
        self.devices
            .iter()
            .map(|(p, d)| (p.clone(), d.clone()))
            .collect()
    }
    fn read_file(&self, path: &Path) -> io::Result<String> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
    fn min_oom_score_adj(&self) -> i64 {
        self.min_oom
    }
}

fn pod() -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "web".into(),
            uid: "u1".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "web-pod".into(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: "/kubepods/pod1".into(),
            sysctls: HashMap::from([("net.ipv4.ip_forward".to_string(), "1".to_string())]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn image_config() -> ProcessConfig {
    ProcessConfig {
        entrypoint: Some(vec!["/entry".into()]),
        cmd: Some(vec!["serve".into(), "--port=80".into()]),
        env: Some(vec!["PATH=/image/bin".into(), "A=image".into()]),
        working_dir: Some("/srv".into()),
        user: None,
    }
}

fn accounts() -> Accounts {
    Accounts {
        passwd: "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33::/var/www:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n".into(),
        group: "root:x:0:\nwww:x:33:\nweb:x:500:www\nwheel:x:10:root\n".into(),
    }
}

fn container() -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: "app".into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: "busybox".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn with_sc(
    mut c: cri::ContainerConfig,
    sc: cri::LinuxContainerSecurityContext,
) -> cri::ContainerConfig {
    c.linux
        .get_or_insert_with(Default::default)
        .security_context = Some(sc);
    c
}

fn sandbox(config: &cri::PodSandboxConfig) -> Sandbox<'_> {
    Sandbox {
        id: "sb1",
        config,
        pid: 42,
        netns: Some(Path::new("/run/netns/cni-1")),
        hostname_file: Some(Path::new("/pod/hostname")),
        hosts_file: Some(Path::new("/pod/hosts")),
        resolv_conf: Some(Path::new("/pod/resolv.conf")),
        shm: Some(Path::new("/pod/shm")),
    }
}

fn build_with(
    c: &cri::ContainerConfig,
    p: &cri::PodSandboxConfig,
    host: &FakeHost,
) -> Result<Value, SpecError> {
    let image = image_config();
    let accounts = accounts();
    let sb = sandbox(p);
    build(
        &SpecInput {
            id: "c1",
            config: c,
            sandbox: &sb,
            image: Image {
                name: "docker.io/library/busybox:latest",
                process: &image,
                accounts: &accounts,
            },
            target_pid: None,
        },
        host,
    )
}

fn spec_of(c: &cri::ContainerConfig) -> Value {
    build_with(c, &pod(), &FakeHost::default()).unwrap()
}

fn mount<'a>(spec: &'a Value, dest: &str) -> Option<&'a Value> {
    spec["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == dest)
}

#[test]
fn command_replaces_entrypoint_and_args_replace_cmd() {
    let image = image_config();
    let mut c = container();
    assert_eq!(args(&c, &image).unwrap(), ["/entry", "serve", "--port=80"]);
    c.args = vec!["x".into()];
    assert_eq!(args(&c, &image).unwrap(), ["/entry", "x"]);
    c.command = vec!["/bin/sh".into()];
    c.args = vec![];
    assert_eq!(
        args(&c, &image).unwrap(),
        ["/bin/sh"],
        "the image's Cmd is not used"
    );
    c.args = vec!["-c".into(), "true".into()];
    assert_eq!(args(&c, &image).unwrap(), ["/bin/sh", "-c", "true"]);
    let bare = ProcessConfig::default();
    assert!(matches!(
        args(&container(), &bare),
        Err(SpecError::NoCommand)
    ));
    let empty_entry = ProcessConfig {
        entrypoint: Some(vec![String::new()]),
        cmd: Some(vec!["sh".into()]),
        ..Default::default()
    };
    assert_eq!(args(&container(), &empty_entry).unwrap(), ["sh"]);
}

#[test]
fn env_merges_image_and_config_with_hostname() {
    let mut c = container();
    c.envs = vec![
        cri::KeyValue {
            key: "A".into(),
            value: "mine".into(),
        },
        cri::KeyValue {
            key: "B".into(),
            value: "b".into(),
        },
    ];
    c.tty = true;
    let spec = spec_of(&c);
    assert_eq!(
        spec["process"]["env"],
        json!([
            "PATH=/image/bin",
            "HOSTNAME=web-pod",
            "A=mine",
            "B=b",
            "TERM=xterm"
        ])
    );
    assert_eq!(spec["process"]["terminal"], true);
    c.envs = vec![cri::KeyValue {
        key: "X=Y".into(),
        value: "1".into(),
    }];
    assert!(build_with(&c, &pod(), &FakeHost::default()).is_err());
}

#[test]
fn working_dir_from_config_or_image() {
    assert_eq!(spec_of(&container())["process"]["cwd"], "/srv");
    let mut c = container();
    c.working_dir = "/work".into();
    assert_eq!(spec_of(&c)["process"]["cwd"], "/work");
    c.working_dir = "rel".into();
    let err = build_with(&c, &pod(), &FakeHost::default()).unwrap_err();
    assert!(err.to_string().contains("not an absolute path"), "{err}");
}

#[test]
fn users_resolve_in_the_image() {
    let user = |sc: cri::LinuxContainerSecurityContext| {
        spec_of(&with_sc(container(), sc))["process"]["user"].clone()
    };
    assert_eq!(
        user(Default::default()),
        json!({"uid": 0, "gid": 0, "additionalGids": [10]})
    );
    let by_name = cri::LinuxContainerSecurityContext {
        run_as_username: "www".into(),
        ..Default::default()
    };
    assert_eq!(
        user(by_name),
        json!({"uid": 33, "gid": 33, "additionalGids": [500]})
    );
    let by_uid = cri::LinuxContainerSecurityContext {
        run_as_user: Some(cri::Int64Value { value: 1000 }),
        run_as_group: Some(cri::Int64Value { value: 2000 }),
        supplemental_groups: vec![3000, 3001],
        ..Default::default()
    };
    assert_eq!(
        user(by_uid),
        json!({"uid": 1000, "gid": 2000, "additionalGids": [3000, 3001]})
    );
    let unknown = with_sc(
        container(),
        cri::LinuxContainerSecurityContext {
            run_as_username: "nobody-here".into(),
            ..Default::default()
        },
    );
    let err = build_with(&unknown, &pod(), &FakeHost::default()).unwrap_err();
    assert!(err.to_string().contains("nobody-here"), "{err}");
    let group_only = with_sc(
        container(),
        cri::LinuxContainerSecurityContext {
            run_as_group: Some(cri::Int64Value { value: 5 }),
            ..Default::default()
        },
    );
    assert!(matches!(
        build_with(&group_only, &pod(), &FakeHost::default()),
        Err(SpecError::GroupWithoutUser(5))
    ));
}

#[test]
fn image_user_is_used_without_one_given() {
    let image = ProcessConfig {
        user: Some("www:web".into()),
        ..image_config()
    };
    let accounts = accounts();
    let p = pod();
    let sb = sandbox(&p);
    let spec = build(
        &SpecInput {
            id: "c1",
            config: &container(),
            sandbox: &sb,
            image: Image {
                name: "i",
                process: &image,
                accounts: &accounts,
            },
            target_pid: None,
        },
        &FakeHost::default(),
    )
    .unwrap();
    assert_eq!(spec["process"]["user"]["uid"], 33);
    assert_eq!(spec["process"]["user"]["gid"], 500);
}

#[test]
fn capabilities_add_drop_and_all() {
    let host = FakeHost::default();
    let caps = |add: &[&str], drop: &[&str]| {
        capabilities(
            &cri::LinuxContainerSecurityContext {
                capabilities: Some(cri::Capability {
                    add_capabilities: add.iter().map(|s| s.to_string()).collect(),
                    drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &host,
        )
    };
    let c = caps(&["NET_ADMIN"], &["CHOWN"]).unwrap();
    assert!(c.contains(&"CAP_NET_ADMIN".into()) && !c.contains(&"CAP_CHOWN".into()));
    assert_eq!(c.len(), DEFAULT_CAPABILITIES.len());
    assert_eq!(caps(&["SYS_ADMIN"], &["ALL"]).unwrap(), ["CAP_SYS_ADMIN"]);
    let all = caps(&["ALL"], &["CHOWN"]).unwrap();
    assert_eq!(all.len(), 40);
    assert!(!all.contains(&"CAP_CHOWN".into()));
    assert!(matches!(
        caps(&["BOGUS"], &[]),
        Err(SpecError::UnknownCapability(_))
    ));
    let spec = spec_of(&container());
    assert_eq!(
        spec["process"]["capabilities"]["bounding"],
        json!(DEFAULT_CAPABILITIES)
    );
}

#[test]
fn privileged_needs_a_privileged_pod_and_gets_everything() {
    let sc = cri::LinuxContainerSecurityContext {
        privileged: true,
        seccomp: Some(cri::SecurityProfile {
            profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        }),
        ..Default::default()
    };
    let c = with_sc(container(), sc);
    assert!(matches!(
        build_with(&c, &pod(), &FakeHost::default()),
        Err(SpecError::PrivilegedNotAllowed)
    ));
    let mut p = pod();
    p.linux.as_mut().unwrap().security_context = Some(cri::LinuxSandboxSecurityContext {
        privileged: true,
        ..Default::default()
    });
    let spec = build_with(&c, &p, &FakeHost::default()).unwrap();
    assert_eq!(
        spec["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap()
            .len(),
        41
    );
    assert!(spec["linux"].get("seccomp").is_none());
    assert!(spec["linux"].get("maskedPaths").is_none());
    assert_eq!(spec["linux"]["devices"][0]["path"], "/dev/null");
    assert_eq!(
        spec["linux"]["resources"]["devices"],
        json!([{"allow": true, "access": "rwm"}])
    );
    assert_eq!(mount(&spec, "/sys").unwrap()["options"][3], "rw");
}

#[test]
#[allow(deprecated, reason = "the deprecated path field is still read")]
fn seccomp_profiles() {
    use cri::security_profile::ProfileType;
    let with = |t: ProfileType, r: &str| {
        with_sc(
            container(),
            cri::LinuxContainerSecurityContext {
                seccomp: Some(cri::SecurityProfile {
                    profile_type: t as i32,
                    localhost_ref: r.into(),
                }),
                ..Default::default()
            },
        )
    };
    assert!(spec_of(&container())["linux"].get("seccomp").is_none());
    assert!(spec_of(&with(ProfileType::Unconfined, ""))["linux"]
        .get("seccomp")
        .is_none());
    let default = spec_of(&with(ProfileType::RuntimeDefault, ""));
    assert_eq!(
        default["linux"]["seccomp"]["defaultAction"],
        "SCMP_ACT_ERRNO"
    );
    let local = spec_of(&with(ProfileType::Localhost, "/profiles/deny-mkdir.json"));
    assert_eq!(
        local["linux"]["seccomp"]["syscalls"][0]["names"],
        json!(["mkdir"])
    );
    let err = build_with(
        &with(ProfileType::Localhost, "/profiles/missing.json"),
        &pod(),
        &FakeHost::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("/profiles/missing.json"), "{err}");
    let deprecated = with_sc(
        container(),
        cri::LinuxContainerSecurityContext {
            seccomp_profile_path: "runtime/default".into(),
            ..Default::default()
        },
    );
    assert!(spec_of(&deprecated)["linux"].get("seccomp").is_some());
}

#[test]
fn readonly_root_no_new_privs_masked_and_readonly_paths() {
    let spec = spec_of(&container());
    assert_eq!(spec["root"], json!({"path": "rootfs", "readonly": false}));
    assert_eq!(spec["process"]["noNewPrivileges"], false);
    assert_eq!(spec["linux"]["maskedPaths"], json!(DEFAULT_MASKED_PATHS));
    assert_eq!(
        spec["linux"]["readonlyPaths"],
        json!(DEFAULT_READONLY_PATHS)
    );
    let c = with_sc(
        container(),
        cri::LinuxContainerSecurityContext {
            readonly_rootfs: true,
            no_new_privs: true,
            masked_paths: vec!["/proc/x".into()],
            readonly_paths: vec!["/proc/y".into()],
            ..Default::default()
        },
    );
    let spec = spec_of(&c);
    assert_eq!(spec["root"]["readonly"], true);
    assert_eq!(spec["process"]["noNewPrivileges"], true);
    assert_eq!(spec["linux"]["maskedPaths"], json!(["/proc/x"]));
    assert_eq!(spec["linux"]["readonlyPaths"], json!(["/proc/y"]));
    // The pod's files follow the root's read-only flag.
    assert_eq!(mount(&spec, "/etc/hosts").unwrap()["options"][2], "ro");
}

#[test]
fn namespaces_join_the_pod() {
    use cri::NamespaceMode as M;
    let with = |net: M, pid: M, ipc: M| {
        with_sc(
            container(),
            cri::LinuxContainerSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: net as i32,
                    pid: pid as i32,
                    ipc: ipc as i32,
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
    };
    let spec = spec_of(&with(M::Pod, M::Container, M::Pod));
    assert_eq!(
        spec["linux"]["namespaces"],
        json!([{"type": "mount"}, {"type": "network", "path": "/run/netns/cni-1"},
               {"type": "ipc", "path": "/proc/42/ns/ipc"}, {"type": "uts", "path": "/proc/42/ns/uts"},
               {"type": "pid"}])
    );
    let spec = spec_of(&with(M::Pod, M::Pod, M::Pod));
    assert_eq!(
        spec["linux"]["namespaces"][4],
        json!({"type": "pid", "path": "/proc/42/ns/pid"})
    );
    let spec = spec_of(&with(M::Node, M::Node, M::Node));
    assert_eq!(spec["linux"]["namespaces"], json!([{"type": "mount"}]));
    assert!(spec["process"]["env"]
        .as_array()
        .unwrap()
        .contains(&json!("HOSTNAME=node1")));
    assert_eq!(mount(&spec, "/dev/shm").unwrap()["source"], "/dev/shm");
    let err = build_with(
        &with(M::Pod, M::Target, M::Pod),
        &pod(),
        &FakeHost::default(),
    );
    assert!(err.is_err());
    let v2 = FakeHost {
        cgroup_v2: true,
        ..Default::default()
    };
    let spec = build_with(&container(), &pod(), &v2).unwrap();
    assert!(spec["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .contains(&json!({"type": "cgroup"})));
}

#[test]
fn mounts_with_propagation() {
    use cri::MountPropagation as P;
    let with = |host: &str, dest: &str, p: P, ro: bool| {
        let mut c = container();
        c.mounts = vec![cri::Mount {
            container_path: dest.into(),
            host_path: host.into(),
            readonly: ro,
            propagation: p as i32,
            ..Default::default()
        }];
        c
    };
    let spec = spec_of(&with("/data", "/var/data", P::PropagationPrivate, true));
    assert_eq!(
        mount(&spec, "/var/data").unwrap(),
        &json!({"destination": "/var/data", "type": "bind", "source": "/data",
                "options": ["rbind", "rprivate", "ro"]})
    );
    assert!(spec["linux"].get("rootfsPropagation").is_none());
    let spec = spec_of(&with(
        "/slave/x",
        "/m",
        P::PropagationHostToContainer,
        false,
    ));
    assert_eq!(
        mount(&spec, "/m").unwrap()["options"],
        json!(["rbind", "rslave", "rw"])
    );
    assert_eq!(spec["linux"]["rootfsPropagation"], "rslave");
    let spec = spec_of(&with("/shared/x", "/m", P::PropagationBidirectional, false));
    assert_eq!(spec["linux"]["rootfsPropagation"], "rshared");
    let host = FakeHost::default();
    let err = build_with(
        &with("/data", "/m", P::PropagationBidirectional, false),
        &pod(),
        &host,
    )
    .unwrap_err();
    assert!(matches!(err, SpecError::NotShared { .. }), "{err}");
    let err = build_with(
        &with("/data", "/m", P::PropagationHostToContainer, false),
        &pod(),
        &host,
    )
    .unwrap_err();
    assert!(matches!(err, SpecError::NotSharedOrSlave { .. }), "{err}");
    let err = build_with(
        &with("/missing/dir", "/m", P::PropagationPrivate, false),
        &pod(),
        &host,
    )
    .unwrap_err();
    assert!(err.to_string().contains("\"/missing/dir\""), "{err}");
}

#[test]
fn pod_files_and_shm_unless_the_container_mounts_them() {
    let spec = spec_of(&container());
    assert_eq!(mount(&spec, "/etc/hosts").unwrap()["source"], "/pod/hosts");
    assert_eq!(
        mount(&spec, "/etc/resolv.conf").unwrap()["source"],
        "/pod/resolv.conf"
    );
    assert_eq!(
        mount(&spec, "/etc/hostname").unwrap()["source"],
        "/pod/hostname"
    );
    assert_eq!(mount(&spec, "/dev/shm").unwrap()["source"], "/pod/shm");
    assert_eq!(mount(&spec, "/etc/hosts").unwrap()["options"][2], "rw");
    let mut c = container();
    c.mounts = vec![cri::Mount {
        container_path: "/etc/hosts".into(),
        host_path: "/data".into(),
        ..Default::default()
    }];
    let spec = spec_of(&c);
    assert_eq!(mount(&spec, "/etc/hosts").unwrap()["source"], "/data");
    let hosts = spec["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["destination"] == "/etc/hosts");
    assert_eq!(hosts.count(), 1);
    // A pod without files gets a /dev/shm of its own.
    let p = pod();
    let sb = Sandbox {
        shm: None,
        hosts_file: None,
        ..sandbox(&p)
    };
    let image = image_config();
    let accounts = accounts();
    let spec = build(
        &SpecInput {
            id: "c1",
            config: &container(),
            sandbox: &sb,
            image: Image {
                name: "i",
                process: &image,
                accounts: &accounts,
            },
            target_pid: None,
        },
        &FakeHost::default(),
    )
    .unwrap();
    assert_eq!(mount(&spec, "/dev/shm").unwrap()["type"], "tmpfs");
    assert!(mount(&spec, "/etc/hosts").is_none());
}

#[test]
fn devices_need_nodes() {
    let mut c = container();
    c.devices = vec![cri::Device {
        container_path: "/dev/mynull".into(),
        host_path: "/dev/null".into(),
        permissions: "rw".into(),
    }];
    let spec = spec_of(&c);
    assert_eq!(spec["linux"]["devices"][0]["path"], "/dev/mynull");
    let rules = spec["linux"]["resources"]["devices"].as_array().unwrap();
    assert_eq!(
        rules.last().unwrap(),
        &json!({"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rw"})
    );
    c.devices[0].host_path = "/data".into();
    let err = build_with(&c, &pod(), &FakeHost::default()).unwrap_err();
    assert!(err.to_string().contains("not a device node"), "{err}");
    c.devices[0].host_path = "/dev/null".into();
    c.devices[0].permissions = "rwx".into();
    assert!(build_with(&c, &pod(), &FakeHost::default()).is_err());
}

#[test]
fn resources_cgroups_oom_and_sysctls() {
    let mut c = container();
    c.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            cpu_period: 100000,
            cpu_quota: 50000,
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            oom_score_adj: -999,
            cpuset_cpus: "0".into(),
            hugepage_limits: vec![cri::HugepageLimit {
                page_size: "2MB".into(),
                limit: 0,
            }],
            ..Default::default()
        }),
        security_context: None,
    });
    let host = FakeHost {
        min_oom: 0,
        ..Default::default()
    };
    let spec = build_with(&c, &pod(), &host).unwrap();
    let r = &spec["linux"]["resources"];
    assert_eq!(
        r["cpu"],
        json!({"shares": 512, "quota": 50000, "period": 100000, "cpus": "0"})
    );
    assert_eq!(r["memory"], json!({"limit": 64 << 20, "swap": 64 << 20}));
    assert_eq!(r["hugepageLimits"][0]["pageSize"], "2MB");
    assert_eq!(
        spec["process"]["oomScoreAdj"], 0,
        "clamped to what may be given"
    );
    assert_eq!(spec["linux"]["cgroupsPath"], "/kubepods/pod1/c1");
    assert_eq!(spec["linux"]["sysctl"], json!({"net.ipv4.ip_forward": "1"}));
    assert_eq!(spec["annotations"]["io.kubernetes.cri.sandbox-id"], "sb1");
    assert_eq!(
        spec["annotations"]["io.kubernetes.cri.container-name"],
        "app"
    );
    assert_eq!(
        cgroups_path(&cri::PodSandboxConfig::default(), "c1"),
        "/berth/k8s.io/c1"
    );
}
