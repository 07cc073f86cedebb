//! What `docker info` and `docker system df` show: the engine's counts, the
//! host's facts (kernel, CPUs, memory, cgroup version) and the daemon's
//! settings.

use std::time::SystemTime;

use serde_json::{json, Value};

use crate::containers::record::format_time;
use crate::containers::Status;
use crate::Engine;

/// The cgroup version of the host: 2 on a unified hierarchy, else 1.
pub fn cgroup_version() -> &'static str {
    match nix::sys::statfs::statfs("/sys/fs/cgroup") {
        Ok(fs) if fs.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC => "2",
        _ => "1",
    }
}

fn kernel_version() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `PRETTY_NAME` and `VERSION_ID` of /etc/os-release.
fn os_release() -> (String, String) {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_default()
    };
    (get("PRETTY_NAME"), get("VERSION_ID"))
}

fn mem_total() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// A stable id for this daemon, kept under its data root.
fn engine_id(engine: &Engine) -> String {
    let path = engine.paths.engine_dir().join("engine-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        return id.trim().to_string();
    }
    let id = crate::names::new_id();
    let _ = std::fs::write(&path, &id);
    id
}

/// `GET /info`.
pub async fn info(engine: &Engine) -> Value {
    let all = engine.containers.all();
    let count = |f: &dyn Fn(Status) -> bool| all.iter().filter(|c| f(c.status())).count();
    let running = count(&|s| s == Status::Running || s == Status::Restarting);
    let paused = count(&|s| s == Status::Paused);
    let images = engine
        .supervisor
        .list_images()
        .await
        .map(|list| {
            // Images, not names: one image tagged twice counts once.
            let targets: std::collections::BTreeSet<String> = list
                .into_iter()
                .filter_map(|i| i.target.map(|t| t.digest))
                .collect();
            targets.len()
        })
        .unwrap_or(0);
    let (os, os_version) = os_release();
    let ncpu = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let v2 = cgroup_version() == "2";
    json!({
        "ID": engine_id(engine),
        "Containers": all.len(),
        "ContainersRunning": running,
        "ContainersPaused": paused,
        "ContainersStopped": all.len() - running - paused,
        "Images": images,
        "Driver": "overlayfs",
        "DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]],
        "Plugins": {
            "Volume": ["local"],
            "Network": ["host", "null"],
            "Authorization": null,
            "Log": ["json-file", "local", "none"],
        },
        "MemoryLimit": true,
        "SwapLimit": true,
        "KernelMemoryTCP": false,
        "CpuCfsPeriod": true,
        "CpuCfsQuota": true,
        "CPUShares": true,
        "CPUSet": true,
        "PidsLimit": true,
        "IPv4Forwarding": std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").is_ok_and(|v| v.trim() == "1"),
        "Debug": false,
        "NFd": std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0),
        "OomKillDisable": !v2,
        "NGoroutines": 0,
        "SystemTime": format_time(Some(SystemTime::now())),
        "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": cgroup_version(),
        "NEventsListener": 0,
        "KernelVersion": kernel_version(),
        "OperatingSystem": os,
        "OSVersion": os_version,
        "OSType": "linux",
        "Architecture": std::env::consts::ARCH,
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {
            "AllowNondistributableArtifactsCIDRs": null,
            "AllowNondistributableArtifactsHostnames": null,
            "InsecureRegistryCIDRs": ["127.0.0.0/8", "::1/128"],
            "IndexConfigs": {
                "docker.io": {"Name": "docker.io", "Mirrors": [], "Secure": true, "Official": true}
            },
            "Mirrors": null,
        },
        "NCPU": ncpu,
        "MemTotal": mem_total(),
        "GenericResources": null,
        "DockerRootDir": engine.paths.data_root,
        "HttpProxy": "",
        "HttpsProxy": "",
        "NoProxy": "",
        "Name": hostname(),
        "Labels": [],
        "ExperimentalBuild": false,
        "ServerVersion": env!("CARGO_PKG_VERSION"),
        "Runtimes": {"berth-runtime": {"path": "berth-runtime"}, "runc": {"path": "berth-runtime"}},
        "DefaultRuntime": "runc",
        "Swarm": {
            "NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive",
            "ControlAvailable": false, "Error": "", "RemoteManagers": null,
        },
        "LiveRestoreEnabled": true,
        "Isolation": "",
        "InitBinary": "docker-init",
        "ContainerdCommit": {"ID": "", "Expected": ""},
        "RuncCommit": {"ID": "", "Expected": ""},
        "InitCommit": {"ID": "", "Expected": ""},
        "SecurityOptions": ["name=seccomp,profile=builtin", format!("name=cgroupns")],
        "CDISpecDirs": [],
        "Containerd": {"Address": engine.paths.supervisor_socket(), "Namespaces": {"Containers": crate::NAMESPACE, "Plugins": crate::NAMESPACE}},
        "Warnings": null,
    })
}
