//! Cgroups: resource limits seen from the host's cgroup files and from
//! inside the container, cgroupsPath, removal on delete, `update`, and
//! `events --stats`. Works on v1, v2 and the v1/v2 hybrid (controllers in v1).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use integration_tests::*;
use serde_json::{json, Value};

const MIB: u64 = 1024 * 1024;

/// Starts `sleep 1000` in a container with `resources`, after the init
/// printed the container-side cgroup files `inside` (relative to
/// /sys/fs/cgroup). Returns (id, cgroupsPath, the printed values).
fn start_with(
    rt: &Runtime,
    prefix: &str,
    resources: Value,
    inside: &[&str],
) -> (String, String, Vec<String>) {
    let id = rt.new_id(prefix);
    let files: Vec<String> = inside
        .iter()
        .map(|f| format!("/sys/fs/cgroup/{f}"))
        .collect();
    let script = if files.is_empty() {
        "echo ready; exec sleep 1000".to_owned()
    } else {
        format!("cat {}; echo ready; exec sleep 1000", files.join(" "))
    };
    let bundle = rt.bundle(&id, |s| {
        s.resources(resources);
        s.sh(&script);
    });
    let out = rt.create_and_start(&bundle, &id).wait_stdout("ready\n");
    let values: Vec<String> = out.lines().map(str::to_owned).collect();
    assert_eq!(values.len(), inside.len() + 1, "container printed: {out}");
    let path = bundle
        .cgroups_path()
        .expect("cgroupsPath set by the fixture");
    (id, path, values[..inside.len()].to_vec())
}

#[test]
fn memory_limit_reservation_and_swap() {
    let rt = Runtime::new();
    let resources =
        json!({"memory": {"limit": 64 * MIB, "reservation": 32 * MIB, "swap": 128 * MIB}});
    if cgroup_v2() {
        let (_, path, inside) = start_with(
            &rt,
            "mem",
            resources,
            &["memory.max", "memory.low", "memory.swap.max"],
        );
        let expected = [64 * MIB, 32 * MIB, 64 * MIB].map(|v| v.to_string());
        assert_eq!(inside, expected);
        assert_eq!(cgroup_read("memory", &path, "memory.max"), expected[0]);
        assert_eq!(cgroup_read("memory", &path, "memory.low"), expected[1]);
        assert_eq!(cgroup_read("memory", &path, "memory.swap.max"), expected[2]);
    } else {
        let (_, path, inside) = start_with(
            &rt,
            "mem",
            resources,
            &[
                "memory/memory.limit_in_bytes",
                "memory/memory.soft_limit_in_bytes",
                "memory/memory.memsw.limit_in_bytes",
            ],
        );
        let expected = [64 * MIB, 32 * MIB, 128 * MIB].map(|v| v.to_string());
        assert_eq!(inside, expected);
        assert_eq!(
            cgroup_read("memory", &path, "memory.limit_in_bytes"),
            expected[0]
        );
        assert_eq!(
            cgroup_read("memory", &path, "memory.soft_limit_in_bytes"),
            expected[1]
        );
        assert_eq!(
            cgroup_read("memory", &path, "memory.memsw.limit_in_bytes"),
            expected[2]
        );
    }
}

#[test]
fn cpu_shares_quota_period_and_cpuset() {
    let rt = Runtime::new();
    let resources =
        json!({"cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"}});
    if cgroup_v2() {
        let (_, path, inside) = start_with(
            &rt,
            "cpu",
            resources,
            &["cpu.weight", "cpu.max", "cpuset.cpus"],
        );
        // runc's conversion: weight = 1 + (shares - 2) * 9999 / 262142
        assert_eq!(inside, ["20", "50000 100000", "0"]);
        assert_eq!(cgroup_read("cpu", &path, "cpu.weight"), "20");
        assert_eq!(cgroup_read("cpu", &path, "cpu.max"), "50000 100000");
        assert_eq!(cgroup_read("cpuset", &path, "cpuset.cpus"), "0");
        assert_eq!(cgroup_read("cpuset", &path, "cpuset.mems"), "0");
    } else {
        let (_, path, inside) = start_with(
            &rt,
            "cpu",
            resources,
            &[
                "cpu/cpu.shares",
                "cpu/cpu.cfs_quota_us",
                "cpu/cpu.cfs_period_us",
                "cpuset/cpuset.cpus",
            ],
        );
        assert_eq!(inside, ["512", "50000", "100000", "0"]);
        assert_eq!(cgroup_read("cpu", &path, "cpu.shares"), "512");
        assert_eq!(cgroup_read("cpu", &path, "cpu.cfs_quota_us"), "50000");
        assert_eq!(cgroup_read("cpu", &path, "cpu.cfs_period_us"), "100000");
        assert_eq!(cgroup_read("cpuset", &path, "cpuset.cpus"), "0");
        assert_eq!(cgroup_read("cpuset", &path, "cpuset.mems"), "0");
    }
}

#[test]
fn pids_limit_stops_forks() {
    let rt = Runtime::new();
    let id = rt.new_id("pids");
    let bundle = rt.bundle(&id, |s| {
        s.resources(json!({"pids": {"limit": 5}}));
        // sh + 4 sleeps reach the limit; the fifth fork fails (and ash exits).
        s.sh("for i in 1 2 3 4 5; do sleep 1000 & done 2>&1; echo not reached");
    });
    let created = rt.create_and_start(&bundle, &id);
    let path = bundle.cgroups_path().expect("cgroupsPath");
    assert_eq!(cgroup_read("pids", &path, "pids.max"), "5");
    let out = created.wait_stdout("can't fork");
    assert!(!out.contains("not reached"), "{out}");
}

/// major:minor of a block device on this host: the root filesystem's, or
/// else the first one the kernel lists.
fn some_block_device() -> (u64, u64) {
    let dev = std::fs::metadata("/").expect("stat /").dev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    if Path::new(&format!("/sys/dev/block/{major}:{minor}")).exists() {
        return (major, minor);
    }
    let first = std::fs::read_dir("/sys/dev/block")
        .expect("list /sys/dev/block")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .expect("this host has no block device to throttle");
    let (major, minor) = first.split_once(':').expect("major:minor");
    (major.parse().expect("major"), minor.parse().expect("minor"))
}

#[test]
fn blkio_weight_is_applied() {
    let rt = Runtime::new();
    let (_, path, _) = start_with(&rt, "blkweight", json!({"blockIO": {"weight": 500}}), &[]);
    let candidates: &[&str] = if cgroup_v2() {
        &["io.bfq.weight", "io.weight"]
    } else {
        &["blkio.bfq.weight", "blkio.weight"]
    };
    let dir = cgroup_dir(if cgroup_v2() { "io" } else { "blkio" }, &path);
    let file = candidates
        .iter()
        .map(|f| dir.join(f))
        .find(|f| f.exists())
        .unwrap_or_else(|| {
            panic!(
                "this host's kernel has no {candidates:?} in {}",
                dir.display()
            )
        });
    let value = read(&file);
    // "500" (v1) or "default 500" (v2)
    assert_eq!(
        value.split_whitespace().last(),
        Some("500"),
        "{}: {value:?}",
        file.display()
    );
}

#[test]
fn blkio_throttle_is_applied() {
    let rt = Runtime::new();
    let (major, minor) = some_block_device();
    let resources = json!({"blockIO": {
        "throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": MIB}],
        "throttleWriteIOPSDevice": [{"major": major, "minor": minor, "rate": 100}]
    }});
    let (_, path, _) = start_with(&rt, "blkio", resources, &[]);
    if cgroup_v2() {
        let io_max = cgroup_read("io", &path, "io.max");
        assert!(
            io_max.contains(&format!(
                "{major}:{minor} rbps={MIB} wbps=max riops=max wiops=100"
            )),
            "{io_max}"
        );
    } else {
        assert_eq!(
            cgroup_read("blkio", &path, "blkio.throttle.read_bps_device"),
            format!("{major}:{minor} {MIB}")
        );
        assert_eq!(
            cgroup_read("blkio", &path, "blkio.throttle.write_iops_device"),
            format!("{major}:{minor} 100")
        );
    }
}

#[test]
fn cgroups_path_is_honoured_and_removed_on_delete() {
    let rt = Runtime::new();
    let (id, path, _) = start_with(&rt, "cgpath", json!({}), &[]);
    let pid = rt.pid(&id);
    let cgroups = read(format!("/proc/{pid}/cgroup"));
    for line in cgroups.lines() {
        assert!(line.ends_with(&format!(":{path}")), "not in {path}: {line}");
    }
    let procs = cgroup_read("memory", &path, "cgroup.procs");
    assert!(procs.lines().any(|p| p == pid.to_string()), "{procs}");
    assert!(!existing_cgroup_dirs(&path).is_empty());

    rt.run(&["delete", "--force", &id]).ok();
    let left = existing_cgroup_dirs(&path);
    assert!(left.is_empty(), "left after delete: {left:?}");
}

#[test]
fn update_changes_the_limits() {
    let rt = Runtime::new();
    let (id, path, _) = start_with(
        &rt,
        "update",
        json!({"memory": {"limit": 64 * MIB}, "pids": {"limit": 20}}),
        &[],
    );
    let resources = rt.tmp().join("resources.json");
    write(
        &resources,
        json!({"memory": {"limit": 96 * MIB}, "pids": {"limit": 30}, "cpu": {"shares": 256}})
            .to_string(),
    );
    rt.run(&[
        "update",
        "--resources",
        resources.to_str().expect("utf-8"),
        &id,
    ])
    .ok();
    let (memory_file, cpu_file, cpu_value) = if cgroup_v2() {
        // 1 + (256 - 2) * 9999 / 262142 = 10
        ("memory.max", "cpu.weight", "10")
    } else {
        ("memory.limit_in_bytes", "cpu.shares", "256")
    };
    assert_eq!(
        cgroup_read("memory", &path, memory_file),
        (96 * MIB).to_string()
    );
    assert_eq!(cgroup_read("pids", &path, "pids.max"), "30");
    assert_eq!(cgroup_read("cpu", &path, cpu_file), cpu_value);

    // From stdin.
    rt.run_stdin(
        &["update", "--resources", "-", &id],
        br#"{"pids": {"limit": 40}}"#,
    )
    .ok();
    assert_eq!(cgroup_read("pids", &path, "pids.max"), "40");
    assert_eq!(
        cgroup_read("memory", &path, memory_file),
        (96 * MIB).to_string()
    );
    assert_eq!(rt.status(&id), "running");
}

#[test]
fn events_stats_report_memory_and_pids() {
    let rt = Runtime::new();
    let id = rt.new_id("stats");
    let bundle = rt.bundle(&id, |s| {
        s.resources(json!({"memory": {"limit": 64 * MIB}, "pids": {"limit": 20}}));
        s.sh("sleep 1000 & echo ready; wait");
    });
    rt.create_and_start(&bundle, &id).wait_stdout("ready");
    let out = rt.run(&["events", "--stats", &id]).ok();
    let event = out.json();
    assert_eq!(event["type"], "stats", "{event}");
    assert_eq!(event["id"], id.as_str(), "{event}");
    let data = &event["data"];
    let usage = data["memory"]["usage"]["usage"].as_u64().unwrap_or(0);
    assert!(usage > 0, "no memory usage: {event}");
    assert_eq!(data["memory"]["usage"]["limit"], 64 * MIB, "{event}");
    assert_eq!(data["pids"]["current"], 2, "{event}");
    assert_eq!(data["pids"]["limit"], 20, "{event}");
}
