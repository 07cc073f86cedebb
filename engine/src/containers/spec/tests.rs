//! The spec as a whole, and the fake machine every part's tests use.

use std::io;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::*;
use crate::types::{ContainerConfig, HostConfig};

/// A table row: how to change a HostConfig, and the error that gives.
pub type Case = (fn(&mut HostConfig), &'static str);

/// A machine of 4 CPUs on Linux 6.1 with cgroup v2, a few files and
/// devices.
pub struct FakeHost {
    pub last_cap: u32,
    pub grantable_caps: u64,
    pub cgroup_v2: bool,
}

impl Default for FakeHost {
    fn default() -> Self {
        FakeHost {
            last_cap: 40,
            grantable_caps: u64::MAX,
            cgroup_v2: true,
        }
    }
}

fn dev(kind: char, major: u64, minor: u64) -> HostDevice {
    HostDevice {
        kind,
        major,
        minor,
        file_mode: 0o666,
        uid: 0,
        gid: 0,
    }
}

impl Host for FakeHost {
    fn cpus(&self) -> Vec<u32> {
        vec![0, 1, 2, 3]
    }
    fn kernel(&self) -> (u32, u32) {
        (6, 1)
    }
    fn last_cap(&self) -> u32 {
        self.last_cap
    }
    fn grantable_caps(&self) -> u64 {
        self.grantable_caps
    }
    fn cgroup_v2(&self) -> bool {
        self.cgroup_v2
    }
    fn sysctl_exists(&self, name: &str) -> bool {
        name.starts_with("net.ipv4.")
    }
    fn hostname(&self) -> String {
        "thehost".into()
    }
    fn stat(&self, path: &Path) -> Option<bool> {
        match path.to_str()? {
            "/srv" | "/srv/data" | "/dev/snd" | "/dev" => Some(true),
            "/etc/hosts" | "/dev/fuse" | "/profiles/allow.json" | "/usr/bin/init" => Some(false),
            _ => None,
        }
    }
    fn device(&self, path: &Path) -> io::Result<Option<HostDevice>> {
        match path.to_str() {
            Some("/dev/fuse") => Ok(Some(dev('c', 10, 229))),
            _ if self.stat(path).is_some() => Ok(None),
            _ => Err(io::Error::from(io::ErrorKind::NotFound)),
        }
    }
    fn devices_under(&self, dir: &Path) -> Vec<(PathBuf, HostDevice)> {
        let all = [
            ("/dev/fuse", dev('c', 10, 229)),
            ("/dev/null", dev('c', 1, 3)),
            ("/dev/snd/timer", dev('c', 116, 33)),
        ];
        all.into_iter()
            .filter(|(p, _)| Path::new(p).starts_with(dir))
            .map(|(p, d)| (PathBuf::from(p), d))
            .collect()
    }
    fn read_file(&self, path: &Path) -> io::Result<String> {
        match path.to_str() {
            Some("/profiles/allow.json") => Ok(r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#.into()),
            _ => Err(io::Error::from(io::ErrorKind::NotFound)),
        }
    }
}

pub const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Builds the spec of a busybox-like image (`sh` as Cmd) with `config` and
/// `hc`.
pub fn build_with(config: ContainerConfig, hc: HostConfig) -> Result<BuiltSpec, SpecError> {
    build_full(config, hc, &Peers::default(), None)
}

pub fn build_full(
    config: ContainerConfig,
    hc: HostConfig,
    peers: &Peers,
    init: Option<&Path>,
) -> Result<BuiltSpec, SpecError> {
    let image = ImageConfigFile {
        config: ContainerConfig {
            cmd: Some(vec!["sh".into()]),
            env: Some(vec!["PATH=/usr/bin:/bin".into()]),
            ..Default::default()
        },
        ..Default::default()
    };
    let user = ResolvedUser {
        uid: 1000,
        gid: 1000,
        additional_gids: vec![10],
    };
    let files = NetworkFiles {
        resolv_conf: Some("/c/resolv.conf".into()),
        hostname: Some("/c/hostname".into()),
        hosts: Some("/c/hosts".into()),
    };
    let input = SpecInput {
        id: ID,
        config: &config,
        host_config: &hc,
        image: &image,
        user: &user,
        group_add: &[50],
        files: &files,
        peers,
        init_path: init,
    };
    build(&input, &FakeHost::default())
}

fn names(v: &Value, key: &str) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x[key].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_plain_container_gets_dockers_defaults() {
    let built = build_with(ContainerConfig::default(), HostConfig::default()).unwrap();
    assert!(built.missing_bind_sources.is_empty());
    let s = &built.spec;
    // The spec is one the runtime's own types read.
    let typed: oci_spec::runtime::Spec = serde_json::from_value(s.clone()).unwrap();
    assert_eq!(typed.hostname().as_deref(), Some("0123456789ab"));
    assert_eq!(s["root"], json!({"path": "rootfs", "readonly": false}));
    let p = &s["process"];
    assert_eq!(p["args"], json!(["sh"]));
    assert_eq!(p["cwd"], "/");
    assert_eq!(p["terminal"], false);
    assert_eq!(
        p["env"],
        json!(["PATH=/usr/bin:/bin", "HOSTNAME=0123456789ab"])
    );
    assert_eq!(
        p["user"],
        json!({"uid": 1000, "gid": 1000, "additionalGids": [1000, 10, 50]})
    );
    assert_eq!(p["capabilities"]["bounding"].as_array().unwrap().len(), 14);
    assert!(p["capabilities"].get("inheritable").is_none());
    assert!(
        p["capabilities"].get("effective").is_none(),
        "a user other than root gets the bounding set only"
    );
    assert_eq!(p["noNewPrivileges"], false);
    assert_eq!(p["oomScoreAdj"], 0);
    assert!(p.get("rlimits").is_none());
    let l = &s["linux"];
    assert_eq!(l["cgroupsPath"], format!("/berth/berth/{ID}"));
    assert_eq!(
        names(&l["namespaces"], "type"),
        ["mount", "network", "uts", "pid", "ipc", "cgroup"]
    );
    assert_eq!(l["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
    assert!(l["maskedPaths"]
        .as_array()
        .unwrap()
        .contains(&json!("/proc/kcore")));
    assert_eq!(l["resources"]["devices"], json!(devices::default_rules()));
    assert_eq!(l["sysctl"]["net.ipv4.ip_unprivileged_port_start"], "0");
    assert_eq!(
        names(&s["mounts"], "destination"),
        [
            "/proc",
            "/dev",
            "/dev/pts",
            "/sys",
            "/sys/fs/cgroup",
            "/dev/mqueue",
            "/dev/shm",
            "/etc/resolv.conf",
            "/etc/hostname",
            "/etc/hosts"
        ]
    );
    assert_eq!(
        s["mounts"][6]["options"],
        json!(["nosuid", "noexec", "nodev", "mode=1777", "size=67108864"])
    );
    assert_eq!(
        s["mounts"][9],
        json!({"destination": "/etc/hosts", "type": "bind", "source": "/c/hosts",
               "options": ["rbind", "rprivate"]})
    );
}

#[test]
fn tty_hostname_domainname_and_annotations() {
    let config = ContainerConfig {
        tty: true,
        hostname: "web".into(),
        domainname: "example.org".into(),
        working_dir: "/srv".into(),
        ..Default::default()
    };
    let hc = HostConfig {
        annotations: Some([("a".to_string(), "b".to_string())].into()),
        console_size: Some(vec![40, 120]),
        oom_score_adj: 500,
        ..Default::default()
    };
    let s = build_with(config, hc).unwrap().spec;
    assert_eq!(s["hostname"], "web");
    assert_eq!(s["linux"]["sysctl"]["kernel.domainname"], "example.org");
    assert_eq!(s["annotations"], json!({"a": "b"}));
    assert_eq!(s["process"]["terminal"], true);
    assert_eq!(
        s["process"]["consoleSize"],
        json!({"height": 40, "width": 120})
    );
    assert_eq!(s["process"]["cwd"], "/srv");
    assert_eq!(s["process"]["oomScoreAdj"], 500);
    assert_eq!(
        s["process"]["env"],
        json!(["PATH=/usr/bin:/bin", "HOSTNAME=web", "TERM=xterm"])
    );
}

#[test]
fn privileged_gets_everything_and_no_confinement() {
    let hc = HostConfig {
        privileged: true,
        ..Default::default()
    };
    let s = build_with(ContainerConfig::default(), hc).unwrap().spec;
    let caps = s["process"]["capabilities"]["bounding"].as_array().unwrap();
    assert_eq!(caps.len(), security::all_capabilities().len());
    assert!(s["linux"].get("seccomp").is_none());
    assert_eq!(s["linux"]["maskedPaths"], json!([]));
    assert_eq!(s["linux"]["readonlyPaths"], json!([]));
    assert_eq!(
        s["linux"]["resources"]["devices"],
        json!([{"allow": true, "access": "rwm"}])
    );
    assert!(!s["linux"]["devices"].as_array().unwrap().is_empty());
    let sys = s["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/sys");
    assert_eq!(
        sys.unwrap()["options"],
        json!(["nosuid", "noexec", "nodev"])
    );
}

#[test]
fn seccomp_follows_cap_add_and_security_opts() {
    let hc = HostConfig {
        cap_add: Some(vec!["SYS_ADMIN".into()]),
        security_opt: Some(vec!["no-new-privileges:true".into()]),
        ..Default::default()
    };
    let s = build_with(ContainerConfig::default(), hc).unwrap().spec;
    assert_eq!(s["process"]["noNewPrivileges"], true);
    let allowed = seccomp::allowed_syscalls(&s["linux"]["seccomp"]);
    assert!(allowed.contains_key("mount"), "CAP_SYS_ADMIN allows mount");
    let hc = HostConfig {
        security_opt: Some(vec!["seccomp=unconfined".into()]),
        ..Default::default()
    };
    let s = build_with(ContainerConfig::default(), hc).unwrap().spec;
    assert!(s["linux"].get("seccomp").is_none());
}

#[test]
fn host_and_joined_namespaces() {
    let hc = HostConfig {
        network_mode: "host".into(),
        pid_mode: "host".into(),
        ipc_mode: "host".into(),
        uts_mode: "host".into(),
        ..Default::default()
    };
    let s = build_with(ContainerConfig::default(), hc).unwrap().spec;
    assert_eq!(
        names(&s["linux"]["namespaces"], "type"),
        ["mount", "cgroup"]
    );
    assert!(s.get("hostname").is_none());
    assert_eq!(s["process"]["env"][1], "HOSTNAME=thehost");
    assert!(s["linux"]["sysctl"].as_object().unwrap().is_empty());
    let shm = s["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/dev/shm");
    assert_eq!(shm.unwrap()["source"], "/dev/shm");

    let hc = HostConfig {
        network_mode: "container:other".into(),
        pid_mode: "container:other".into(),
        ipc_mode: "container:other".into(),
        ..Default::default()
    };
    let peers = Peers {
        pid: Some(42),
        ipc: Some(42),
        net: Some(42),
    };
    let s = build_full(ContainerConfig::default(), hc.clone(), &peers, None)
        .unwrap()
        .spec;
    let ns = s["linux"]["namespaces"].as_array().unwrap();
    assert!(ns.contains(&json!({"type": "network", "path": "/proc/42/ns/net"})));
    assert!(ns.contains(&json!({"type": "pid", "path": "/proc/42/ns/pid"})));
    assert!(ns.contains(&json!({"type": "ipc", "path": "/proc/42/ns/ipc"})));
    let err = build_full(
        ContainerConfig::default(),
        hc.clone(),
        &Peers::default(),
        None,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot join network of a non running container: other"
    );
    // At create the other container need not run yet.
    let image = ImageConfigFile::default();
    let config = ContainerConfig {
        cmd: Some(vec!["sh".into()]),
        ..Default::default()
    };
    let input = SpecInput {
        id: ID,
        config: &config,
        host_config: &hc,
        image: &image,
        user: &ResolvedUser::default(),
        group_add: &[],
        files: &NetworkFiles::default(),
        peers: &Peers::default(),
        init_path: None,
    };
    check(&input, &FakeHost::default()).unwrap();
    let named = ContainerConfig {
        hostname: "h".into(),
        ..config.clone()
    };
    let err = check(
        &SpecInput {
            config: &named,
            ..input
        },
        &FakeHost::default(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "conflicting options: hostname and the network mode"
    );
}

#[test]
fn init_runs_first_and_is_mounted_read_only() {
    let hc = HostConfig {
        init: Some(true),
        ..Default::default()
    };
    let config = ContainerConfig {
        cmd: Some(vec!["sleep".into(), "1".into()]),
        ..Default::default()
    };
    let init = Path::new("/usr/bin/init");
    let s = build_full(config, hc.clone(), &Peers::default(), Some(init))
        .unwrap()
        .spec;
    assert_eq!(
        s["process"]["args"],
        json!(["/sbin/docker-init", "--", "sleep", "1"])
    );
    let m = s["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/sbin/docker-init");
    assert_eq!(
        m.unwrap(),
        &json!({"destination": "/sbin/docker-init", "type": "bind", "source": "/usr/bin/init",
                "options": ["bind", "ro"]})
    );
    let err = build_with(ContainerConfig::default(), hc.clone()).unwrap_err();
    assert_eq!(err, SpecError::NoInitBinary);
    // With the host's pid namespace there is an init already.
    let on_host = HostConfig {
        pid_mode: "host".into(),
        ..hc
    };
    let s = build_with(ContainerConfig::default(), on_host)
        .unwrap()
        .spec;
    assert_eq!(s["process"]["args"], json!(["sh"]));
}

#[test]
fn readonly_rootfs_and_limits() {
    let hc = HostConfig {
        readonly_rootfs: true,
        memory: 64 << 20,
        ulimits: Some(vec![crate::types::Ulimit {
            name: "nofile".into(),
            soft: 100,
            hard: 200,
        }]),
        ..Default::default()
    };
    let s = build_with(ContainerConfig::default(), hc).unwrap().spec;
    assert_eq!(s["root"]["readonly"], true);
    assert_eq!(s["linux"]["resources"]["memory"]["limit"], 64 << 20);
    assert_eq!(s["process"]["rlimits"][0]["type"], "RLIMIT_NOFILE");
    let hosts = s["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/etc/hosts");
    assert_eq!(
        hosts.unwrap()["options"],
        json!(["rbind", "ro", "rprivate"])
    );
    let mq = s["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/dev/mqueue");
    assert_eq!(mq.unwrap()["options"], json!(["nosuid", "noexec", "nodev"]));
}

#[test]
fn bad_input_is_refused_before_anything() {
    let table: &[Case] = &[
        (|h| h.memory = 100, "Minimum memory limit allowed is 6MB"),
        (
            |h| h.cap_add = Some(vec!["CAP_FOO".into()]),
            "unknown capability: \"CAP_FOO\"",
        ),
        (
            |h| h.sysctls = Some([("kernel.panic".to_string(), "1".to_string())].into()),
            "sysctl 'kernel.panic' is not allowed",
        ),
    ];
    for (set, want) in table {
        let mut hc = HostConfig::default();
        set(&mut hc);
        let err = build_with(ContainerConfig::default(), hc).unwrap_err();
        assert_eq!(err.to_string(), *want);
    }
}

#[test]
fn cgroups_path_takes_the_parent() {
    let hc = |p: &str| HostConfig {
        cgroup_parent: p.into(),
        ..Default::default()
    };
    assert_eq!(cgroups_path(&hc(""), "x"), "/berth/berth/x");
    assert_eq!(cgroups_path(&hc("/mine/"), "x"), "/mine/x");
    assert_eq!(cgroups_path(&hc("rel"), "x"), "rel/x");
}
